exec(open('benchmarks/experiments/hardpose2/exp.py').read())
from flamejax.fit import LandmarkTargets
from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE
def single(p, item): return LandmarkTargets.from_pixels(p, IBUG68_FROM_MEDIAPIPE @ p, item.image.shape[0])
res={}
res['A']=run('A',[single(v.points478,v) for v in views])
res['B']=run('B',[single(v.mirrored478 if np.all(np.isfinite(v.mirrored478)) else v.points478,v) for v in views])
ns={k:report(k,r) for k,r in res.items()}
np.savez('/tmp/hp2/exp2.npz', **{k: v for k,v in ns.items()}, confA=res['A'].confidence, confB=res['B'].confidence, nmeA=res['A'].nme, nmeB=res['B'].nme, lossA=res['A'].landmark.final_loss, lossB=res['B'].landmark.final_loss)
for k in range(len(views)):
    print(k, f"yaw {yaw[k]:+.0f}", *[f"{name} {100*ns[name][k]:5.1f} c{res[name].confidence[k]:.2f} fit-nme {100*res[name].nme[k]:.1f} loss {res[name].landmark.final_loss[k]:.2f}" for name in ns])
