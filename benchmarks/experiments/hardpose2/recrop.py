exec(open('benchmarks/experiments/hardpose2/exp.py').read())
from flamejax.perception._layout import MEDIAPIPE_MIRROR
import jax.numpy as jnp
from flamejax.perception._landmarks import _mesh_faces, _square_crop
from flamejax.perception._transform import invert_affine, transform_points, warp_image
from flamejax.flame import flame_forward, safe_load_pickle
from flamejax.files import find_file
from flamejax.camera import project
from flamejax.perception import to_68
V_=None
sel=[0,9,17,18,35,44,10,62,52,8,63,1,43,60]
tsel=[tg(views[k],looks=False) for k in sel]
res=run('mean-sel', tsel)
face_ids=np.asarray(safe_load_pickle(find_file("flame_masks"))["face"])
for j,k in enumerate(sel):
    item=views[k]; vi=detected[k]; pic=pictures[vi]; t=truths[vi]
    p=jax.tree.map(lambda a:a[j], res.params); c=jax.tree.map(lambda a:a[j], res.camera)
    v=flame_forward(model,p).vertices[face_ids]
    px=np.asarray(project(c, v, item.image.shape[0])[0])   # fit pixels
    orig=bi.to_original(px,item.fit_to_original)
    lo,hi=orig.min(0),orig.max(0); centre=(lo+hi)/2; side0=max(hi-lo)
    ext=t.max(0)-t.min(0); s=np.sqrt(ext[0]*ext[1])
    line=[f"{k:2d} yaw{yaw[k]:+4.0f} fit {100*nmes(jax.tree.map(lambda a: a, res))[0] if False else 0:.0f}"]
    old=[np.linalg.norm(to_68(P)[17:]@np.asarray(item.fit_to_original)[:, :2].T+np.asarray(item.fit_to_original)[:,2]-t,axis=1).mean()/s for P in (item.points478,item.mirrored478)]
    line.append(f"old A {100*old[0]:4.1f} B {100*old[1]:4.1f}")
    for ctx in (1.3,1.7,2.2):
        to_crop=_square_crop(centre, ctx*side0, 256)
        crop=warp_image(pic if pic.dtype==np.uint8 else (np.clip(pic,0,1)*255).astype(np.uint8), to_crop, 256, border=0)
        outs=[]
        for mirror in (False,True):
            im=np.ascontiguousarray(crop[:, ::-1]) if mirror else crop
            f=_mesh_faces(im)
            if not f: outs.append(float('nan')); continue
            pts=min(f,key=lambda q: np.linalg.norm(q[0].mean(0)-128))[0]
            if mirror:
                from flamejax.perception._landmarks import FaceLandmarks
                pts=pts[np.asarray(MEDIAPIPE_MIRROR)].copy(); pts[:,0]=256-pts[:,0]
                from flamejax.perception._layout import MEDIAPIPE_MIRROR
                pass
            back=transform_points(invert_affine(to_crop), pts)
            outs.append(np.linalg.norm(to_68(back)[17:]-t,axis=1).mean()/s)
        line.append(f"ctx{ctx} A {100*outs[0]:4.1f} B {100*outs[1]:4.1f}")
    print(" | ".join(line), flush=True)
