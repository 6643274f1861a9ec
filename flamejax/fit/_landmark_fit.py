"""Landmark fitting: linear initialisation, stage 1 (rigid), stage 2 (landmark mode).

:func:`fit_landmarks` fits one image and :func:`fit_landmarks_batch` a batch, both jit-compiled; the pure
single-image function underneath (``_fit_one``) is what ``jax.vmap`` batches. Both stages run in parts
(``FitConfig.weighting.segments``); each part fits the targets re-weighted at the pose it starts from
(visibility x robust weights, :func:`flamejax.fit._visibility.pose_weights`), and the weights at the final pose
give ``FitResult.confidence``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera
from flamejax.fit._checks import check_model, check_start
from flamejax.fit._config import FitConfig, LandmarkStageConfig, RigidStageConfig
from flamejax.fit._init import linear_initialisation
from flamejax.fit._optim import FROZEN, all_finite, partitioned_adam, run_stage
from flamejax.fit._result import FitResult, FitStart, Status, StageReport, first_failure
from flamejax.fit._targets import LandmarkTargets, check_targets, nme_inner
from flamejax.fit._visibility import weighed_landmarks, weighted_targets
from flamejax.camera import project_ndc, yaw_pitch_roll
from flamejax.flame import (FlameModel, FlameParams, LandmarkPoints3D, ProjectedLandmarks, barycentric_points,
                            contour_bin, flame_forward, landmark_points, posed_landmarks, project_landmarks)
from flamejax.flame._layout import CONTOUR_68, INNER_68


def landmark_model(model: FlameModel, face: bool = True) -> FlameModel:
    """The model restricted to the vertices landmarks read: the same landmarks, ~3x less work (~10x without
    ``face``).

    ``face``: keep the face region's vertices (``LandmarkEmbedding.face_vertices``), which only the silhouette term
    reads (:func:`face_silhouette_loss`); a fit whose targets have no silhouette does not need them. Returns
    ``model`` itself (without the face vertices' term when ``face`` is false) when it is already a subset, or when
    called under a JAX transformation that traces the model's arrays (the subset needs concrete vertex ids).
    """
    if model.landmarks is None:
        raise ValueError("the model has no landmark embedding: load it with load_flame(landmarks=True)")
    if not face:
        emb = model.landmarks
        model = dataclasses.replace(model, landmarks=dataclasses.replace(emb, face_vertices=emb.face_vertices[:0]))
    if model.num_vertices != 5023 or any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(model.landmarks)):
        return model
    return model.subset(model.landmarks.all_vertex_ids())


def reads_face(targets: LandmarkTargets | None, stage: LandmarkStageConfig) -> bool:
    """Whether a fit of ``targets`` with the data term of ``stage`` needs the face region's vertices: its targets
    have a silhouette (``None``: unknown yet, assume so) and ``stage.face_silhouette_weight`` is not 0. Without
    them the fit reads about a third of the vertices (2-4x faster on a CPU)."""
    weight = stage.face_silhouette_weight
    zero = not isinstance(weight, jax.core.Tracer) and float(weight) == 0.0
    return not zero and (targets is None or targets.outside is not None)


def _weighted_mean(per_point: Float[Array, "n"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    return jnp.sum(per_point * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def mean_l2(pred: Float[Array, "n 2"], target: Float[Array, "n 2"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    """Weighted mean Euclidean distance (smooth at zero)."""
    return _weighted_mean(jnp.sqrt(jnp.sum((pred - target) ** 2, axis=-1) + 1e-12), weight)


def mean_l1(pred: Float[Array, "n 2"], target: Float[Array, "n 2"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    """Weighted mean absolute coordinate difference."""
    return _weighted_mean(jnp.mean(jnp.abs(pred - target), axis=-1), weight)


SILHOUETTE_CAP = 0.2
"""NDC distance outside the silhouette at which a point's silhouette penalty levels off (tanh): a point far out
is more likely a hole in the silhouette (an occluder, a segmentation miss) than the fit's error."""
SILHOUETTE_MARGIN = 0.015
"""NDC distance (2 pixels of a 256² crop) a point may lie outside the silhouette at no cost: a segmentation's edge
is not exact, and the face's outline lies on it. Without it, frontal fits of bald rendered heads narrowed the face
towards a slightly tight silhouette (identity section of benchmarks/RESULTS.md)."""


def _outside_cost(points: Float[Array, "n 2"], outside: Float[Array, "s s"]) -> Float[Array, "n"]:
    """How far each NDC point lies outside the person's silhouette (``outside``, bilinear), beyond
    :data:`SILHOUETTE_MARGIN` and capped softly at :data:`SILHOUETTE_CAP`."""
    cells = outside.shape[0]
    rows_cols = ((points[:, ::-1] + 1.0) * (cells / 2.0) - 0.5).T
    distance = jax.scipy.ndimage.map_coordinates(outside, list(rows_cols), order=1, mode="nearest")
    distance = jnp.maximum(distance - SILHOUETTE_MARGIN, 0.0)
    return SILHOUETTE_CAP * jnp.tanh(distance / SILHOUETTE_CAP)


def silhouette_loss(proj: ProjectedLandmarks, outside: Float[Array, "s s"] | None) -> Float[Array, ""]:
    """Mean over the projected landmarks (68, irises, embedded MediaPipe points) of how far each lies outside the
    person's silhouette (``LandmarkTargets.outside``, bilinear), beyond :data:`SILHOUETTE_MARGIN` and capped softly
    at :data:`SILHOUETTE_CAP`.

    One-sided: hair, hands or shoulders around the face are inside the silhouette too, so a point inside costs
    nothing; a fitted face reaching past the head's outline (a nose or chin beyond the profile at strong yaw)
    does. Zero when no silhouette is known (``None`` or zeros)."""
    if outside is None:
        return jnp.zeros((), proj.lmk68.dtype)
    return jnp.mean(_outside_cost(jnp.concatenate([proj.lmk68, proj.iris, proj.mediapipe]), outside))


def face_silhouette_loss(proj: ProjectedLandmarks, outside: Float[Array, "s s"] | None) -> Float[Array, ""]:
    """:func:`silhouette_loss` over the face region's vertices (``ProjectedLandmarks.face``) instead of the
    landmarks: the whole face's outline (jaw, chin, nose, lips and brows in profile) must stay inside the
    person's silhouette, not only the points a detector names. The face region leaves out the skull, ears and
    neck, whose outline on a photograph is hair, not skin. Zero without a silhouette or face vertices."""
    if outside is None or proj.face is None or proj.face.shape[0] == 0:
        return jnp.zeros((), proj.lmk68.dtype)
    return jnp.mean(_outside_cost(proj.face, outside))


PROFILE_MARGIN = 0.015
"""NDC distance (2 pixels of a 256² crop) a profile point may lie from the fitted face's nearest landmark at no
cost: the landmarks are points on the profile, not its whole line."""
PROFILE_CAP = 0.1
"""NDC distance at which a profile point's cost levels off (tanh): a mustache, glasses or a segmentation's
bulge should not drag the face."""


def profile_candidates(proj: ProjectedLandmarks) -> Float[Array, "n 2"]:
    """The fitted points a profile point pulls on (:func:`profile_loss`): the inner 51, then the embedded MediaPipe
    points (nose, lips, brows, eyes)."""
    return jnp.concatenate([proj.lmk68[INNER_68], proj.mediapipe])


def profile_loss(candidates: Float[Array, "n 2"], profile: Float[Array, "p 2"] | None,
                 weight: Float[Array, "p"] | None) -> Float[Array, ""]:
    """Weighted mean over the silhouette's profile points (``LandmarkTargets.profile``) of the distance to the
    nearest fitted point of ``candidates`` (:func:`profile_candidates`), beyond :data:`PROFILE_MARGIN` and capped
    softly at :data:`PROFILE_CAP`.

    The other side of :func:`silhouette_loss`: at strong yaw the face's profile is the silhouette's edge, so the
    fitted nose and brows must reach it (:func:`flamejax.fit.profile_edge` looks from the brows to the nose's
    base). FaceMesh often folds the far half of a turned face inwards, onto the cheek; the folded points lie inside
    the silhouette, where the one-sided term cannot see them. The jaw contour is left out: a less-turned face would
    bring it to the same edge. Zero without profile points."""
    if profile is None or weight is None:
        return jnp.zeros((), candidates.dtype)
    squared = jnp.sum((profile[:, None, :] - candidates[None, :, :]) ** 2, axis=-1)
    distance = jnp.maximum(jnp.sqrt(jnp.min(squared, axis=1) + 1e-12) - PROFILE_MARGIN, 0.0)
    return _weighted_mean(PROFILE_CAP * jnp.tanh(distance / PROFILE_CAP), weight)


def _mediapipe_targets(model: FlameModel, targets: LandmarkTargets):
    ids = model.landmarks.mediapipe_ids
    return targets.mediapipe[ids], targets.mediapipe_weight[ids]


def rigid_loss(model: FlameModel, proj: ProjectedLandmarks, targets: LandmarkTargets,
               cfg: RigidStageConfig) -> Float[Array, ""]:
    """Stage 1's data term: weighted mean L2 on the inner 51, the jaw contour and the MediaPipe points, and the
    person's silhouette (:func:`silhouette_loss`, :func:`profile_loss`)."""
    mp_target, mp_weight = _mediapipe_targets(model, targets)
    lmk, goal, weight = proj.lmk68, targets.lmk68, targets.lmk68_weight
    return (cfg.inner_weight * mean_l2(lmk[INNER_68], goal[INNER_68], weight[INNER_68])
            + cfg.contour_weight * mean_l2(lmk[CONTOUR_68], goal[CONTOUR_68], weight[CONTOUR_68])
            + cfg.mediapipe_weight * mean_l2(proj.mediapipe, mp_target, mp_weight)
            + cfg.silhouette_weight * silhouette_loss(proj, targets.outside)
            + cfg.profile_weight * profile_loss(profile_candidates(proj), targets.profile, targets.profile_weight))


def landmark_data_loss(model: FlameModel, proj: ProjectedLandmarks, targets: LandmarkTargets,
                       cfg: LandmarkStageConfig, lmk68_weight: Float[Array, "68"] | None = None,
                       profile_points: Float[Array, "n 2"] | None = None) -> Float[Array, ""]:
    """Stage 2's landmark term on projected landmarks: L1 on the inner 51, the jaw contour, the irises and the
    MediaPipe points, and the person's silhouette (:func:`silhouette_loss`, :func:`face_silhouette_loss`,
    :func:`profile_loss`). ``lmk68_weight`` re-weights the 68 points on top of the targets' own weights (the
    photometric stage's grouping). ``profile_points``: what the profile pulls on, default
    :func:`profile_candidates` of ``proj`` (the fits pass :func:`profile_identity_scaled`'s)."""
    profile_points = profile_candidates(proj) if profile_points is None else profile_points
    mp_target, mp_weight = _mediapipe_targets(model, targets)
    weight = targets.lmk68_weight if lmk68_weight is None else targets.lmk68_weight * lmk68_weight
    return (cfg.inner_weight * mean_l1(proj.lmk68[INNER_68], targets.lmk68[INNER_68], weight[INNER_68])
            + cfg.contour_weight * mean_l1(proj.lmk68[CONTOUR_68], targets.lmk68[CONTOUR_68], weight[CONTOUR_68])
            + cfg.iris_weight * mean_l1(proj.iris, targets.iris, targets.iris_weight)
            + cfg.mediapipe_weight * mean_l1(proj.mediapipe, mp_target, mp_weight)
            + cfg.silhouette_weight * silhouette_loss(proj, targets.outside)
            + cfg.face_silhouette_weight * face_silhouette_loss(proj, targets.outside)
            + cfg.profile_weight * profile_loss(profile_points, targets.profile, targets.profile_weight))


def params_labels(params: FlameParams, shape: str, expression: str, jaw: str, eyes: str) -> FlameParams:
    """An optax label tree shaped like ``params``: head pose, neck and translation are always frozen."""
    return dataclasses.replace(jax.tree.map(lambda _: FROZEN, params), shape=shape, expression=expression,
                               jaw_pose=jaw, left_eye_pose=eyes, right_eye_pose=eyes)


def camera_labels(pose: str, fov: str = FROZEN) -> Camera:
    return Camera(rotation=pose, translation=pose, fov_deg=fov)


Reweigh = Callable[[object], LandmarkTargets]
"""Targets re-weighted at a stage's current variables (see :func:`weighted_stages`)."""


def rigid_stage(model: FlameModel, camera: Camera, points: LandmarkPoints3D, targets: LandmarkTargets,
                cfg: RigidStageConfig, reweigh: Reweigh | None = None, segments: int = 1
                ) -> tuple[Camera, StageReport]:
    """Stage 1: camera pose (and optionally FOV) on the landmarks; the head itself is held fixed.

    With ``reweigh``, the stage runs in ``segments`` parts, each on ``reweigh(camera)`` at the camera it starts
    from (:func:`flamejax.fit._optim.run_stage`); otherwise on ``targets`` throughout."""
    valid = targets.valid.astype(jnp.float32)

    points = dataclasses.replace(points, face=None)  # stage 1 has no term on them

    def loss_fn(cam: Camera, weighted: LandmarkTargets):
        return valid * rigid_loss(model, project_landmarks(cam, points), weighted, cfg)

    def project(cam: Camera):
        return dataclasses.replace(cam, fov_deg=jnp.clip(cam.fov_deg, *cfg.fov_range))

    optimiser = partitioned_adam({"pose": cfg.lr.schedule(), "fov": lambda count: cfg.fov_lr},
                                 camera_labels("pose", "fov" if cfg.optimise_fov else FROZEN))
    return run_stage(loss_fn, camera, optimiser, cfg.steps, project,
                     refresh=reweigh or (lambda _: targets), segments=segments if reweigh else 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Geometry:
    """The variables of a geometry stage: the head's parameters and the camera."""

    params: FlameParams
    camera: Camera


def _points_without_identity(model: FlameModel, params: FlameParams, vertex_ids: Int[Array, "n 3"],
                             bary: Float[Array, "n 3"]) -> Float[Array, "n 3"]:
    """Points embedded in the posed head ``params`` describes (:func:`barycentric_points` of ``vertex_ids``),
    with no gradient into the identity; computed on their own vertices only."""
    ids = vertex_ids.reshape(-1)
    part = dataclasses.replace(model, v_template=model.v_template[ids], shapedirs=model.shapedirs[ids],
                               exprdirs=model.exprdirs[ids], posedirs=model.posedirs[ids],
                               lbs_weights=model.lbs_weights[ids])
    held = dataclasses.replace(params, shape=jax.lax.stop_gradient(params.shape))
    return barycentric_points(flame_forward(part, held).vertices, jnp.arange(ids.shape[0]).reshape(vertex_ids.shape),
                              bary)


def _gradient_scaled(full: Array, held: Array, scale: Float[Array, ""] | float) -> Array:
    """``full``'s values with its gradient where ``held`` (the same values computed with the identity held) has
    one, plus ``scale`` of the rest: the identity's share of it."""
    change = lambda a: a - jax.lax.stop_gradient(a)  # noqa: E731  zero, with a's gradient
    return held + scale * (change(full) - change(held))


def contour_identity_scaled(model: FlameModel, params: FlameParams, camera: Camera, proj: ProjectedLandmarks,
                            scale: Float[Array, ""] | float) -> ProjectedLandmarks:
    """``proj`` (:func:`posed_landmarks` of ``params``) whose jaw contour passes only ``scale`` of its gradient
    into the identity (:attr:`LandmarkStageConfig.contour_identity`); the same values, and the full gradient
    into pose, jaw, expression and camera. Computed on the 51 vertices the contour interpolates only."""
    emb = model.landmarks
    row = contour_bin(camera.rotation_matrix())
    held = _points_without_identity(model, params, emb.contour_vertices[row], emb.contour_bary[row])
    contour = _gradient_scaled(proj.lmk68[CONTOUR_68], project_ndc(camera, held), scale)
    return dataclasses.replace(proj, lmk68=proj.lmk68.at[CONTOUR_68].set(contour))


def profile_identity_scaled(model: FlameModel, params: FlameParams, camera: Camera, proj: ProjectedLandmarks,
                            scale: Float[Array, ""] | float) -> Float[Array, "n 2"]:
    """:func:`profile_candidates` of ``proj`` (:func:`posed_landmarks` of ``params``) passing only ``scale`` of
    their gradient into the identity (:attr:`LandmarkStageConfig.profile_identity`); the full gradient into pose,
    jaw, expression and camera."""
    emb = model.landmarks
    held = _points_without_identity(model, params, jnp.concatenate([emb.static_vertices, emb.mediapipe_vertices]),
                                    jnp.concatenate([emb.static_bary, emb.mediapipe_bary]))
    return _gradient_scaled(profile_candidates(proj), project_ndc(camera, held), scale)


def identity_scaled_landmark_loss(model: FlameModel, params: FlameParams, camera: Camera, proj: ProjectedLandmarks,
                                  targets: LandmarkTargets, cfg: LandmarkStageConfig,
                                  contour_share: Float[Array, ""] | float,
                                  lmk68_weight: Float[Array, "68"] | None = None
                                  ) -> tuple[Float[Array, ""], ProjectedLandmarks]:
    """:func:`landmark_data_loss` of ``proj`` (:func:`posed_landmarks` of ``params`` under ``camera``) whose jaw
    contour passes ``contour_share`` of its gradient into the identity (:func:`contour_identity_scaled`) and whose
    profile term :attr:`LandmarkStageConfig.profile_identity` of it (:func:`profile_identity_scaled`); and the
    projected landmarks. The two hold the identity in forward passes of their own: the profile's vertices are the
    same at every step, so XLA gathers their rows of the model once per fit; one pass over both gathered every step
    and was slower (a batch of 16 hard views, 1.0 -> 1.2 s; 2026-12-05)."""
    profile = profile_identity_scaled(model, params, camera, proj, cfg.profile_identity)
    proj = contour_identity_scaled(model, params, camera, proj, contour_share)
    return landmark_data_loss(model, proj, targets, cfg, lmk68_weight, profile), proj


def turned(camera: Camera, yaws: tuple[float, float]) -> Float[Array, ""]:
    """How far the head ``camera`` sees counts as turned: 0 up to ``yaws``' first |yaw| (degrees), rising
    linearly to 1 at its second."""
    low, high = yaws
    yaw = jnp.abs(yaw_pitch_roll(jax.lax.stop_gradient(camera))[0])
    return jnp.clip((yaw - low) / (high - low), 0.0, 1.0)


def contour_identity_share(camera: Camera, cfg: LandmarkStageConfig) -> Float[Array, ""]:
    """The share of the jaw contour's gradient that reaches the identity for a head ``camera`` sees:
    :attr:`LandmarkStageConfig.contour_identity`, rising to 1 over ``contour_identity_turned`` (:func:`turned`)."""
    return cfg.contour_identity + (1.0 - cfg.contour_identity) * turned(camera, cfg.contour_identity_turned)


def identity_prior_weight(camera: Camera, cfg: LandmarkStageConfig) -> Float[Array, ""]:
    """The identity prior's weight for a head ``camera`` sees: :attr:`LandmarkStageConfig.shape_l2`, rising to
    ``shape_l2_turned`` times that over ``shape_l2_turned_yaws`` (:func:`turned`)."""
    return cfg.shape_l2 * (1.0 + (cfg.shape_l2_turned - 1.0) * turned(camera, cfg.shape_l2_turned_yaws))


def landmark_stage(model: FlameModel, start: Geometry, targets: LandmarkTargets, cfg: LandmarkStageConfig,
                   shape_anchor: Float[Array, "n_shape"], reweigh: Reweigh | None = None, segments: int = 1
                   ) -> tuple[Geometry, StageReport]:
    """Stage 2 (landmark mode): expression, jaw and eyes (+ identity and camera) on all landmark sets.

    ``reweigh`` and ``segments`` as in :func:`rigid_stage` (``reweigh`` takes the stage's :class:`Geometry`)."""
    valid = targets.valid.astype(jnp.float32)
    contour_share = contour_identity_share(start.camera, cfg)
    shape_l2 = identity_prior_weight(start.camera, cfg)

    def loss_fn(v: Geometry, weighted: LandmarkTargets):
        p = v.params
        data, _ = identity_scaled_landmark_loss(model, p, v.camera, posed_landmarks(model, p, v.camera), weighted,
                                                cfg, contour_share)
        prior = (cfg.expression_l2 * jnp.sum(p.expression**2) + shape_l2 * jnp.sum((p.shape - shape_anchor) ** 2)
                 + cfg.jaw_l2 * jnp.sum(p.jaw_pose**2))
        return valid * data + prior

    labels = Geometry(params_labels(start.params, "shape" if cfg.fit_shape else FROZEN, "expression", "jaw", "eyes"),
                      camera_labels("camera" if cfg.fit_camera else FROZEN))
    optimiser = partitioned_adam({name: getattr(cfg, name).schedule()
                                  for name in ("expression", "jaw", "eyes", "shape", "camera")}, labels)
    return run_stage(loss_fn, start, optimiser, cfg.steps,
                     refresh=reweigh or (lambda _: targets), segments=segments if reweigh else 1)


def weighted_stages(model: FlameModel, start: Geometry, targets: LandmarkTargets, config: FitConfig,
                    shape_anchor: Float[Array, "n_shape"]) -> tuple[Geometry, StageReport, StageReport]:
    """Stages 1 and 2, each in ``config.weighting.segments`` parts, every part on the targets re-weighted at the
    pose it starts from (:func:`pose_weights`: visibility x robust IRLS, held fixed within it); without either
    weighting, on the targets as given. Returns the fitted geometry and both stages' reports."""
    weighting = config.weighting

    def reweighted(geometry: Geometry) -> LandmarkTargets:
        return weighted_targets(model, geometry.params, geometry.camera, targets, weighting)

    camera, rigid = rigid_stage(model, start.camera, landmark_points(model, start.params), targets, config.rigid,
                                (lambda cam: reweighted(Geometry(start.params, cam))) if weighting.enabled else None,
                                weighting.segments)
    fitted, landmark = landmark_stage(model, Geometry(start.params, camera), targets, config.landmark, shape_anchor,
                                      reweighted if weighting.enabled else None, weighting.segments)
    return fitted, rigid, landmark


def sanitised(targets: LandmarkTargets) -> LandmarkTargets:
    """Targets whose non-finite entries are zeroed and marked invalid, so they cannot poison the arithmetic."""
    clean = jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0) if a.dtype != jnp.bool_ else a, targets)
    return dataclasses.replace(clean, valid=targets.usable)


def _fit_one(model: FlameModel, targets: LandmarkTargets, config: FitConfig, start: FitStart | None) -> FitResult:
    """Pure single-image landmark fit (see :func:`fit_landmarks`)."""
    padding = targets.is_padding
    targets = sanitised(targets)
    camera, params = linear_initialisation(model, targets, config, start)
    init_ok = all_finite((camera, params))
    fallback_camera = Camera.default(config.fov_deg, config.initial_distance, model.v_template.dtype)
    camera, params = jax.tree.map(lambda a, b: jnp.where(init_ok, a, b), (camera, params),
                                  (fallback_camera, FlameParams.for_model(model)))
    shape_anchor = jnp.zeros_like(params.shape) if start is None else start.shape * start.shape_given
    fitted, rigid, landmark = weighted_stages(model, Geometry(params, camera), targets, config, shape_anchor)
    final_weights, projected = weighed_landmarks(model, fitted.params, fitted.camera, targets, config.weighting)
    status = first_failure([(padding, Status.PADDING), (~targets.valid, Status.INVALID_INPUT),
                            (~init_ok, Status.DIVERGED_INIT), (~rigid.finite, Status.DIVERGED_RIGID),
                            (~landmark.finite, Status.DIVERGED_LANDMARK)])
    nme = nme_inner(projected.lmk68, targets.lmk68)
    nme = jnp.where(targets.valid & jnp.isfinite(nme), nme, jnp.nan)
    confidence = jnp.where(status == int(Status.OK), final_weights.confidence, 0.0)
    return FitResult(params=fitted.params, camera=fitted.camera, landmarks=projected.points(), nme=nme, status=status,
                     rigid=rigid, landmark=landmark, confidence=confidence, weights=final_weights)


_fit_one_jit = jax.jit(_fit_one)
_fit_batch_jit = jax.jit(jax.vmap(_fit_one, in_axes=(None, 0, None, 0)))


def fit_landmarks(model: FlameModel, targets: LandmarkTargets, config: FitConfig = FitConfig(),
                  start: FitStart | None = None) -> FitResult:
    """Fit FLAME to one image's landmarks: linear initialisation, stage 1 (rigid), stage 2 (landmarks).

    jit-compiled: once per model size, step counts and switches of ``config`` (its numbers are traced, so a new
    weight, learning rate or FOV reuses the compilation). ``model`` is restricted to its landmark vertices
    automatically. Never returns NaN parameters: a diverging stage keeps its last finite iterate and ``status``
    says which stage failed.
    """
    check_model(model)
    check_targets(targets, 0)
    check_start(start, model, 0)
    return _fit_one_jit(landmark_model(model, face=reads_face(targets, config.landmark)), targets, config, start)


def fit_landmarks_batch(model: FlameModel, targets: LandmarkTargets, config: FitConfig = FitConfig(),
                        start: FitStart | None = None) -> FitResult:
    """:func:`fit_landmarks` over a leading batch axis of ``targets`` (and ``start``), jit-compiled once per batch
    size. Build ``targets`` with :func:`stack_targets`, which pads to a fixed batch size; padding entries come
    back with ``Status.PADDING`` and a NaN ``nme``."""
    check_model(model)
    check_targets(targets, 1)
    check_start(start, model, 1, batch=targets.valid.shape[0])
    return _fit_batch_jit(landmark_model(model, face=reads_face(targets, config.landmark)), targets, config, start)
