exec(open('benchmarks/experiments/hardpose2/exp.py').read())
from flamejax.flame._layout import INNER_68
T=[tg(v,looks=False) for v in views]
res=run('mean',T)
n=nmes(res)
agree=np.array([np.asarray(t.lmk68_weight)[INNER_68] for t in T])  # [N,51]
vis=res.weights.visible68[:, INNER_68]
conf=res.confidence
a_all=agree.mean(1); a_vis=(agree*vis).sum(1)/vis.sum(1)
base=conf/np.maximum(a_all,1e-9)
fail=n>0.08
def stats(name,c,th=0.25):
    fl=c<th; hits=(fl&fail).sum()
    print(f"{name:10s} flagged {fl.sum():2d} hits {hits} of {fail.sum()} prec {hits/max(fl.sum(),1):.2f} rec {hits/fail.sum():.2f}  | hard only: flagged {(fl&hard).sum()} hits {(fl&fail&hard).sum()}")
stats('current',conf); stats('no-agree',base); stats('vis-agree',base*a_vis)
for k in np.argsort(conf)[:16]: print(k, f"yaw {yaw[k]:+.0f} nme {100*n[k]:.1f} conf {conf[k]:.2f} base {base[k]:.2f} a_all {a_all[k]:.2f} a_vis {a_vis[k]:.2f}")
