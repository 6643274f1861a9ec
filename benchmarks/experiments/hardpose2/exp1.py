exec(open('benchmarks/experiments/hardpose2/exp.py').read())
res={}
res['mean']=run('mean',[tg(v,looks=False) for v in views])
res['mixture']=run('mixture',[tg(v) for v in views])
ns={k:report(k,r) for k,r in res.items()}
for k in np.flatnonzero(hard):
    print(k, f"yaw {yaw[k]:+.0f}", *[f"{name} {100*ns[name][k]:5.1f} c{res[name].confidence[k]:.2f}" for name in ns])
np.savez('/tmp/hp2/exp1.npz', **{k: v for k,v in ns.items()})
