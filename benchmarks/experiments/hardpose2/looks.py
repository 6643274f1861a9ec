import numpy as np, cv2, json
from pathlib import Path
from benchmarks import bench_identity as bi
from flamejax.perception import to_68
pictures, truths, detected, views, timing = bi.load_views(Path('/tmp/flamejax_identity_cache')/bi.cache_key(False,6))
out=Path('/tmp/hp2/looks'); out.mkdir(exist_ok=True)
for k in (0,9,17,18,35,44,10,62):
    v=views[k]; vi=detected[k]
    img=(v.image*255).astype(np.uint8).copy()
    t=bi.to_original(truths[vi], v.original_to_fit)
    S=2; img=cv2.resize(img,None,fx=S,fy=S)
    panels=[]
    for pts,col in ((to_68(v.points478),(255,0,0)),(to_68(v.mirrored478),(0,80,255))):
        im=img.copy()
        for (x,y) in t: cv2.circle(im,(int(S*x),int(S*y)),3,(0,255,0),-1)
        for i,(x,y) in enumerate(pts[17:]): cv2.circle(im,(int(S*x),int(S*y)),3,col,-1)
        panels.append(im)
    cv2.imwrite(str(out/f"{k:02d}.png"), cv2.cvtColor(np.concatenate(panels,1),cv2.COLOR_RGB2BGR))
