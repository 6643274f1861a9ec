import numpy as np, json
from pathlib import Path
from benchmarks import bench_identity as bi
from flamejax.perception import to_68
pictures, truths, detected, views, timing = bi.load_views(Path('/tmp/flamejax_identity_cache')/bi.cache_key(False,6))
rows=json.load(open('benchmarks/results/identity.json'))['data']['rows']
for k,(vi,v) in enumerate(zip(detected,views)):
    r=rows[k]
    if abs(r['yaw'])<45: continue
    t=truths[vi]
    a=to_68(v.points478)[17:]; b=to_68(v.mirrored478)[17:]
    A=bi.to_original(a,v.fit_to_original); B=bi.to_original(b,v.fit_to_original)
    ext=t.max(0)-t.min(0); s=np.sqrt(ext[0]*ext[1])
    ea=np.linalg.norm(A-t,axis=1)/s; eb=np.linalg.norm(B-t,axis=1)/s; em=np.linalg.norm((A+B)/2-t,axis=1)/s
    d=np.linalg.norm(A-B,axis=1)/s
    print(f"{k:2d} yaw{r['yaw']:+4.0f} A {100*ea.mean():5.1f} B {100*eb.mean():5.1f} mean {100*em.mean():5.1f} best-per-pt {100*np.minimum(ea,eb).mean():5.1f} | disagree med {100*np.median(d):4.1f} max {100*d.max():4.1f} | fit {100*r['library default_nme']:5.1f} one {100*r['one look_nme']:5.1f}")
