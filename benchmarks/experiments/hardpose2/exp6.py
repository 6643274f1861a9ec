exec(open('benchmarks/experiments/hardpose2/exp.py').read())
import flamejax.fit._landmark_fit as LF
import flamejax.fit._visibility as V
from flamejax.fit._landmark_fit import Geometry, rigid_stage, landmark_stage, landmark_points, pose_weights
V.MODE="point"
def weighted_stages(model, start, targets, config, shape_anchor):
    weighting = config.weighting
    ids = model.landmarks.mediapipe_ids
    plain = dataclasses.replace(targets, looks=None)
    def reweighted_plain(g):
        return pose_weights(model, g.params, g.camera, plain, weighting).applied_to(plain, ids)
    def reweighted(g):
        return pose_weights(model, g.params, g.camera, targets, weighting).applied_to(targets, ids)
    camera, rigid = rigid_stage(model, start.camera, landmark_points(model, start.params), plain, config.rigid,
                                lambda cam: reweighted_plain(Geometry(start.params, cam)), weighting.segments)
    fitted, landmark = landmark_stage(model, Geometry(start.params, camera), targets, config.landmark, shape_anchor,
                                      reweighted, weighting.segments)
    return fitted, rigid, landmark
LF.weighted_stages = weighted_stages
res={}
for keep in (False, True):
    V.KEEP_AGREEMENT = keep; jax.clear_caches()
    name = 'stage2-mix' + ('-agree' if keep else '')
    res[name]=run(name,[tg(v) for v in views])
old=np.load('/tmp/hp2/exp1.npz')
ns={k:report(k,r) for k,r in res.items()}
for k in np.flatnonzero(hard):
    print(k, f"yaw {yaw[k]:+.0f} mean {100*old['mean'][k]:5.1f} mixture {100*old['mixture'][k]:5.1f}", *[f"{name} {100*ns[name][k]:5.1f} c{res[name].confidence[k]:.2f}" for name in ns])
np.savez('/tmp/hp2/exp6.npz', **{k: v for k,v in ns.items()})
