exec(open('benchmarks/experiments/hardpose2/exp.py').read())
import flamejax.fit._visibility as V
V.KEEP_AGREEMENT = True
res={}
res['mix-agree']=run('mix-agree',[tg(v) for v in views])
old=np.load('/tmp/hp2/exp1.npz')
ns={k:report(k,r) for k,r in res.items()}
for k in np.flatnonzero(hard):
    print(k, f"yaw {yaw[k]:+.0f} mean {100*old['mean'][k]:5.1f} mixture {100*old['mixture'][k]:5.1f}", *[f"{name} {100*ns[name][k]:5.1f} c{res[name].confidence[k]:.2f}" for name in ns])
np.savez('/tmp/hp2/exp3.npz', **{k: v for k,v in ns.items()})
