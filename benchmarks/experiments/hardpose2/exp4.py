exec(open('benchmarks/experiments/hardpose2/exp.py').read())
from flamejax.fit import LandmarkTargets
from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE
from flamejax import camera as cam
import jax.numpy as jnp
def single(p, item): return LandmarkTargets.from_pixels(p, IBUG68_FROM_MEDIAPIPE @ p, item.image.shape[0])
res={}
res['A']=run('A',[single(v.points478,v) for v in views])
res['B']=run('B',[single(v.mirrored478 if np.all(np.isfinite(v.mirrored478)) else v.points478,v) for v in views])
ns={k:nmes(r) for k,r in res.items()}
yaws={k: np.array([float(cam.yaw_pitch_roll(jax.tree.map(lambda a: a[i], r.camera))[0]) for i in range(len(views))]) for k,r in res.items()}
np.savez('/tmp/hp2/exp4.npz', nA=ns['A'], nB=ns['B'], yA=yaws['A'], yB=yaws['B'])
for k in np.flatnonzero(hard):
    print(k, f"yaw {yaw[k]:+.0f} A {100*ns['A'][k]:5.1f} yaw {yaws['A'][k]:+5.1f} | B {100*ns['B'][k]:5.1f} yaw {yaws['B'][k]:+5.1f}")
