import sys, time, dataclasses, json, numpy as np, jax
from pathlib import Path
from benchmarks import bench_identity as bi
from flamejax.fit import FitConfig, fit_landmarks_batch, stack_targets, two_look_targets
from flamejax.flame import load_flame
model = load_flame(n_shape=bi.N_SHAPE, n_expression=bi.N_EXPRESSION)
pictures, truths, detected, views, timing = bi.load_views(Path('/tmp/flamejax_identity_cache')/bi.cache_key(False,6))
rows=json.load(open('benchmarks/results/identity.json'))['data']['rows']
def tg(item, two=True, looks=True):
    m = item.mirrored478 if two and np.all(np.isfinite(item.mirrored478)) else None
    t = two_look_targets(item.points478, m, item.image.shape[0])
    return t if looks else dataclasses.replace(t, looks=None)
def nmes(res):
    out=[]
    for k,(vi,item) in enumerate(zip(detected,views)):
        px=(np.asarray(res.landmarks.lmk68[k])[17:]+1)*item.image.shape[0]/2
        out.append(bi.nme_face_box(bi.to_original(px,item.fit_to_original),truths[vi]))
    return np.array(out)
def run(name, targets, config=FitConfig()):
    t=time.time(); res=jax.tree.map(np.asarray, fit_landmarks_batch(model, stack_targets(targets), config)); 
    print(name, f"{time.time()-t:.0f}s", flush=True); return res
yaw=np.array([r['yaw'] for r in rows]); hard=np.abs(yaw)>45
def report(name,res):
    n=nmes(res); c=res.confidence
    fr=~hard
    print(f"{name:12s} frontal med {100*np.median(n[fr]):.2f} mean {100*n[fr].mean():.2f} max {100*n[fr].max():.2f} | hard med {100*np.median(n[hard]):.2f} max {100*n[hard].max():.2f} >8%: {int((n[hard]>0.08).sum())} idx {list(np.flatnonzero((n>0.08)))}")
    return n
