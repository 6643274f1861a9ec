"""Landmark fitting: weights-free linear initialisation, stage 1 (rigid), stage 2 (landmark mode).

``fit_landmarks`` fits one image and is pure, so ``jax.vmap`` fits a batch; ``fit_landmarks_batch`` is the
jit-compiled batched entry point (fixed batch shapes: pad with ``LandmarkTargets.padding()``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera, focal_length, project_ndc
from flamejax.fit._config import FitConfig, LandmarkStageConfig, RigidStageConfig
from flamejax.fit._optim import all_finite, grouped_adam, run_optimiser
from flamejax.fit._targets import CONTOUR, INNER, LandmarkTargets, nme_inner
from flamejax.flame import (FlameModel, FlameParams, LandmarkEmbedding, barycentric_points, contour_bin,
                            flame_forward)
from flamejax.rotation import matrix_to_axis_angle

_HI = jax.lax.Precision.HIGHEST

STATUS_OK = 0
STATUS_INVALID_INPUT = 1
STATUS_DIVERGED_RIGID = 2
STATUS_DIVERGED_LANDMARK = 3
STATUS_DIVERGED_INIT = 4
STATUS_NAMES = {STATUS_OK: "ok", STATUS_INVALID_INPUT: "invalid input (non-finite or missing landmarks)",
                STATUS_DIVERGED_INIT: "initialisation failed (non-finite pose or coefficients)",
                STATUS_DIVERGED_RIGID: "diverged in stage 1 (rigid)",
                STATUS_DIVERGED_LANDMARK: "diverged in stage 2 (landmarks)"}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class InitialGuess:
    """A start for the fit from networks (DECA/MICA); ``shape_given`` switches the linear identity solve off."""

    shape: Float[Array, "n_shape"]
    expression: Float[Array, "n_exp"]
    jaw_pose: Float[Array, "3"]
    shape_given: jax.Array
    expression_given: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkPoints3D:
    """Landmarks of a posed head, head space."""

    inner: Float[Array, "51 3"]
    contour: Float[Array, "rows 17 3"]
    """Jaw contour for every yaw bin (79 rows), or for the one bin it was built for; the projection picks the
    bin of the current pose."""
    mediapipe: Float[Array, "n_mp 3"]
    iris: Float[Array, "10 3"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectedLandmarks:
    lmk68: Float[Array, "68 2"]
    mediapipe: Float[Array, "n_mp 2"]
    iris: Float[Array, "10 2"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FitResult:
    """Everything one fit produced (a leading batch axis on every field after a batched fit)."""

    params: FlameParams
    """FLAME parameters; head pose and translation stay zero (the rigid pose lives in the camera)."""
    camera: Camera
    landmarks: ProjectedLandmarks
    """Fitted landmarks in NDC of the fitting crop."""
    rigid_losses: Float[Array, "rigid_steps"]
    """Stage 1 loss before each step (-1 where it was not finite)."""
    landmark_losses: Float[Array, "landmark_steps"]
    rigid_final_loss: Float[Array, ""]
    """Stage 1 loss of the returned (best) iterate."""
    landmark_final_loss: Float[Array, ""]
    nme: Float[Array, ""]
    """Inner-51 error over the outer-eye-corner distance of the targets."""
    status: Int[Array, ""]
    """One of ``STATUS_NAMES``."""
    failed_step: Int[Array, ""]
    """Step at which the failing stage diverged, -1 if none."""


def landmark_model(model: FlameModel) -> FlameModel:
    """The model restricted to the vertices landmarks read: the same landmarks, ~10x less work."""
    if model.landmarks is None:
        raise ValueError("the model has no landmark embedding: load it with load_flame(landmarks=True)")
    if model.num_vertices != 5023:
        return model
    return model.subset(model.landmarks.all_vertex_ids())


def landmark_points(model: FlameModel, params: FlameParams, contour_row: Int[Array, ""] | None = None
                    ) -> LandmarkPoints3D:
    """Landmarks of a posed head. With ``contour_row`` only that yaw row of the jaw contour is interpolated (the
    cheap path when the head changes every step); without it every row is kept (a fixed head, many poses)."""
    return vertex_landmarks(model.landmarks, flame_forward(model, params).vertices, contour_row)


def vertex_landmarks(emb: LandmarkEmbedding, v: Float[Array, "verts 3"], contour_row: Int[Array, ""] | None = None
                     ) -> LandmarkPoints3D:
    """:func:`landmark_points` from vertices already computed (e.g. by a renderer's forward pass)."""
    contour_vertices, contour_bary = emb.contour_vertices, emb.contour_bary
    if contour_row is not None:
        contour_vertices, contour_bary = contour_vertices[contour_row][None], contour_bary[contour_row][None]
    return LandmarkPoints3D(
        inner=barycentric_points(v, emb.static_vertices, emb.static_bary),
        contour=barycentric_points(v, contour_vertices, contour_bary),
        mediapipe=barycentric_points(v, emb.mediapipe_vertices, emb.mediapipe_bary),
        iris=v[emb.iris_vertices],
    )


def project_landmarks(camera: Camera, points: LandmarkPoints3D) -> ProjectedLandmarks:
    """Project to NDC, with the jaw-contour row of the camera's yaw (the only row if ``points`` holds one)."""
    row = contour_bin(camera.rotation_matrix()) if points.contour.shape[0] > 1 else 0
    return ProjectedLandmarks(
        lmk68=project_ndc(camera, jnp.concatenate([points.contour[row], points.inner])),
        mediapipe=project_ndc(camera, points.mediapipe),
        iris=project_ndc(camera, points.iris),
    )


def posed_landmarks(model: FlameModel, params: FlameParams, camera: Camera) -> ProjectedLandmarks:
    """Projected landmarks of a head under ``camera``, interpolating only the contour row that camera needs."""
    return project_landmarks(camera, landmark_points(model, params, contour_bin(camera.rotation_matrix())))


def _weighted_mean(per_point: Float[Array, "n"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    return jnp.sum(per_point * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def mean_l2(pred: Float[Array, "n 2"], target: Float[Array, "n 2"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    """Weighted mean Euclidean distance (smooth at zero)."""
    return _weighted_mean(jnp.sqrt(jnp.sum((pred - target) ** 2, axis=-1) + 1e-12), weight)


def mean_l1(pred: Float[Array, "n 2"], target: Float[Array, "n 2"], weight: Float[Array, "n"]) -> Float[Array, ""]:
    """Weighted mean absolute coordinate difference."""
    return _weighted_mean(jnp.mean(jnp.abs(pred - target), axis=-1), weight)


def _mediapipe_targets(model: FlameModel, targets: LandmarkTargets):
    ids = model.landmarks.mediapipe_ids
    return targets.mediapipe[ids], targets.mediapipe_weight[ids]


# ---------------------------------------------------------------------------------------------- initialisation


def _solve_pose(camera: Camera, points: Float[Array, "n 3"], target: Float[Array, "n 2"], weight: Float[Array, "n"],
                steps: int) -> Camera:
    """Rigid pose from 3D-2D correspondences: scaled orthography in closed form, then damped Gauss-Newton."""
    w = weight[:, None]
    centroid = jnp.sum(points * w, 0) / jnp.sum(w)
    design = jnp.concatenate([points - centroid, jnp.ones_like(points[:, :1])], axis=1) * jnp.sqrt(w)
    affine = jnp.linalg.lstsq(design, target * jnp.sqrt(w))[0]  # (4, 2): NDC = [X - c, 1] @ affine
    row_x, row_y = affine[:3, 0], -affine[:3, 1]  # NDC y points down, camera y up
    scale = 0.5 * (jnp.linalg.norm(row_x) + jnp.linalg.norm(row_y))
    u, _, vt = jnp.linalg.svd(jnp.stack([row_x, row_y]), full_matrices=False)
    r01 = u @ vt  # nearest matrix with orthonormal rows
    rot = jnp.concatenate([r01, jnp.cross(r01[0], r01[1])[None]], axis=0)
    f = focal_length(camera.fov_deg, 2)  # NDC focal length (image spans 2 units)
    depth = f / scale
    centre_cam = jnp.array([affine[3, 0] * depth / f, -affine[3, 1] * depth / f, -depth])
    pose = jnp.concatenate([matrix_to_axis_angle(rot), centre_cam - rot @ centroid])

    def residual(p):
        cam = Camera(p[:3], p[3:], camera.fov_deg)
        return ((project_ndc(cam, points) - target) * jnp.sqrt(w)).ravel()

    def gauss_newton(p, _):
        r = residual(p)
        jac = jax.jacfwd(residual)(p)
        normal = jac.T @ jac
        damped = normal + 1e-3 * jnp.diag(jnp.diag(normal)) + 1e-9 * jnp.eye(6)
        step = jnp.linalg.solve(damped, -jac.T @ r)
        candidate = p + step
        better = jnp.sum(residual(candidate) ** 2) < jnp.sum(r**2)
        return jnp.where(better & jnp.all(jnp.isfinite(candidate)), candidate, p), None

    pose, _ = jax.lax.scan(gauss_newton, pose, None, length=steps)
    return Camera(pose[:3], pose[3:], camera.fov_deg)


def _linear_basis(model: FlameModel, vertex_ids: Int[Array, "n 3"], bary: Float[Array, "n 3"]):
    """Rest-pose landmark positions as ``mean + basis @ [shape, expression]``."""
    dirs = jnp.concatenate([model.shapedirs, model.exprdirs], axis=-1)
    mean = barycentric_points(model.v_template, vertex_ids, bary)
    basis = jnp.einsum("nkcb,nk->ncb", dirs[vertex_ids], bary, precision=_HI)
    return mean, basis


def _solve_coefficients(camera: Camera, mean, basis, target, weight, prior: Float[Array, "k"], fixed_coeffs):
    """Ridge regression of blendshape coefficients given the pose (projection linearised at the current depth)."""
    rot = camera.rotation_matrix()
    t = camera.translation
    f = focal_length(camera.fov_deg, 2)
    current = mean + jnp.einsum("ncb,b->nc", basis, fixed_coeffs, precision=_HI)
    depth = -(current @ rot[2] + t[2])
    u, v = target[:, 0], target[:, 1]
    row_u = -(u[:, None] * rot[2] + f * rot[0]) / depth[:, None]  # (n, 3)
    row_v = (-v[:, None] * rot[2] + f * rot[1]) / depth[:, None]
    a_u = jnp.einsum("nc,ncb->nb", row_u, basis, precision=_HI)
    a_v = jnp.einsum("nc,ncb->nb", row_v, basis, precision=_HI)
    b_u = -jnp.sum(row_u * mean, -1) + (u * t[2] + f * t[0]) / depth
    b_v = -jnp.sum(row_v * mean, -1) + (v * t[2] - f * t[1]) / depth
    a = jnp.concatenate([a_u, a_v]) * jnp.sqrt(jnp.concatenate([weight, weight]))[:, None]
    b = jnp.concatenate([b_u, b_v]) * jnp.sqrt(jnp.concatenate([weight, weight]))
    normal = a.T @ a + jnp.diag(prior)
    return jnp.linalg.solve(normal, a.T @ b)


def linear_initialisation(model: FlameModel, targets: LandmarkTargets, config: FitConfig,
                          guess: InitialGuess | None = None) -> tuple[Camera, FlameParams]:
    """Weights-free start: pose from the mean head, then identity/expression by ridge regression, alternated."""
    cfg = config.init
    emb = model.landmarks
    params = FlameParams.for_model(model)
    if guess is not None:
        params = dataclasses.replace(params, shape=guess.shape, expression=guess.expression, jaw_pose=guess.jaw_pose)
    mp_target, mp_weight = _mediapipe_targets(model, targets)
    valid = targets.valid.astype(jnp.float32)
    camera = Camera.default(config.fov_deg, config.initial_distance, model.v_template.dtype)
    n_shape, n_exp = model.num_shape, model.num_expression
    prior = jnp.concatenate([jnp.full(n_shape, cfg.shape_prior), jnp.full(n_exp, cfg.expression_prior)])
    if guess is not None:  # coefficients given by networks are held (a huge prior pins them to their value)
        prior = prior + jnp.concatenate([jnp.full(n_shape, 1e6 * guess.shape_given),
                                         jnp.full(n_exp, 1e6 * guess.expression_given)])
    inner_mean, inner_basis = _linear_basis(model, emb.static_vertices, emb.static_bary)
    mp_mean, mp_basis = _linear_basis(model, emb.mediapipe_vertices, emb.mediapipe_bary)
    coeffs = jnp.concatenate([params.shape, params.expression])

    def points_at(coeffs, mean, basis):
        return mean + jnp.einsum("ncb,b->nc", basis, coeffs, precision=_HI)

    for _ in range(cfg.iterations):  # a handful of alternations, unrolled
        pts = jnp.concatenate([points_at(coeffs, inner_mean, inner_basis), points_at(coeffs, mp_mean, mp_basis)])
        tgt = jnp.concatenate([targets.lmk68[INNER], mp_target])
        wgt = jnp.concatenate([targets.lmk68_weight[INNER], cfg.mediapipe_weight * mp_weight]) * valid + 1e-6
        camera = _solve_pose(camera, pts, tgt, wgt, cfg.pose_refine_steps)
        row = contour_bin(camera.rotation_matrix())
        contour_mean, contour_basis = _linear_basis(model, emb.contour_vertices[row], emb.contour_bary[row])
        means = jnp.concatenate([inner_mean, contour_mean, mp_mean])
        bases = jnp.concatenate([inner_basis, contour_basis, mp_basis])
        tgt = jnp.concatenate([targets.lmk68[INNER], targets.lmk68[CONTOUR], mp_target])
        wgt = jnp.concatenate([targets.lmk68_weight[INNER], cfg.contour_weight * targets.lmk68_weight[CONTOUR],
                               cfg.mediapipe_weight * mp_weight]) * valid + 1e-6
        solved = _solve_coefficients(camera, means, bases, tgt, wgt, prior, coeffs)
        if guess is not None:
            given = jnp.concatenate([jnp.full(n_shape, guess.shape_given), jnp.full(n_exp, guess.expression_given)])
            solved = jnp.where(given > 0, coeffs, solved)
        coeffs = solved
    params = dataclasses.replace(params, shape=coeffs[:n_shape], expression=coeffs[n_shape:])
    return camera, params


# ---------------------------------------------------------------------------------------------- stages


def rigid_stage(model: FlameModel, camera: Camera, points: LandmarkPoints3D, targets: LandmarkTargets,
                cfg: RigidStageConfig):
    """Stage 1: camera pose (and optionally FOV) on the landmarks; the head itself is held fixed."""
    valid = targets.valid.astype(jnp.float32)
    mp_target, mp_weight = _mediapipe_targets(model, targets)

    def loss_fn(v):
        cam = Camera(v["pose"][:3], v["pose"][3:], v["fov"])
        proj = project_landmarks(cam, points)
        lmk = proj.lmk68
        inner = mean_l2(lmk[INNER], targets.lmk68[INNER], targets.lmk68_weight[INNER])
        contour = mean_l2(lmk[CONTOUR], targets.lmk68[CONTOUR], targets.lmk68_weight[CONTOUR])
        dense = mean_l2(proj.mediapipe, mp_target, mp_weight)
        return valid * (cfg.inner_weight * inner + cfg.contour_weight * contour + cfg.mediapipe_weight * dense)

    def project(v):
        return {"pose": v["pose"], "fov": jnp.clip(v["fov"], *cfg.fov_range)}

    optimiser = grouped_adam({"pose": cfg.lr.schedule(), "fov": cfg.fov_lr if cfg.optimise_fov else None})
    variables = {"pose": jnp.concatenate([camera.rotation, camera.translation]), "fov": camera.fov_deg}
    outcome = run_optimiser(loss_fn, variables, optimiser, cfg.steps, project)
    v = outcome.variables
    return Camera(v["pose"][:3], v["pose"][3:], v["fov"]), outcome


def landmark_data_loss(model: FlameModel, proj: ProjectedLandmarks, targets: LandmarkTargets,
                       cfg: LandmarkStageConfig, lmk68_weight: Float[Array, "68"] | None = None) -> Float[Array, ""]:
    """Stage 2's landmark term on projected landmarks: L1 on the inner 51, the jaw contour, the irises and the
    MediaPipe points. ``lmk68_weight`` re-weights the 68 points on top of the targets' own weights (the
    photometric stage's grouping)."""
    mp_target, mp_weight = _mediapipe_targets(model, targets)
    weight = targets.lmk68_weight if lmk68_weight is None else targets.lmk68_weight * lmk68_weight
    return (cfg.inner_weight * mean_l1(proj.lmk68[INNER], targets.lmk68[INNER], weight[INNER])
            + cfg.contour_weight * mean_l1(proj.lmk68[CONTOUR], targets.lmk68[CONTOUR], weight[CONTOUR])
            + cfg.iris_weight * mean_l1(proj.iris, targets.iris, targets.iris_weight)
            + cfg.mediapipe_weight * mean_l1(proj.mediapipe, mp_target, mp_weight))


def landmark_stage(model: FlameModel, camera: Camera, params: FlameParams, targets: LandmarkTargets,
                   cfg: LandmarkStageConfig, shape_anchor: Float[Array, "n_shape"]):
    """Stage 2 (landmark mode): expression, jaw and eyes (+ identity and camera) on all landmark sets."""
    valid = targets.valid.astype(jnp.float32)

    def unpack(v):
        p = dataclasses.replace(params, shape=v["shape"], expression=v["expression"], jaw_pose=v["jaw"],
                                left_eye_pose=v["eyes"][:3], right_eye_pose=v["eyes"][3:])
        return p, Camera(v["camera"][:3], v["camera"][3:], camera.fov_deg)

    def loss_fn(v):
        p, cam = unpack(v)
        data = landmark_data_loss(model, posed_landmarks(model, p, cam), targets, cfg)
        prior = (cfg.expression_l2 * jnp.sum(p.expression**2) + cfg.shape_l2 * jnp.sum((p.shape - shape_anchor) ** 2)
                 + cfg.jaw_l2 * jnp.sum(p.jaw_pose**2))
        return valid * data + prior

    optimiser = grouped_adam({
        "expression": cfg.expression.schedule(),
        "jaw": cfg.jaw.schedule(),
        "eyes": cfg.eyes.schedule(),
        "shape": cfg.shape.schedule() if cfg.fit_shape else None,
        "camera": cfg.camera.schedule() if cfg.fit_camera else None,
    })
    variables = {
        "expression": params.expression, "jaw": params.jaw_pose,
        "eyes": jnp.concatenate([params.left_eye_pose, params.right_eye_pose]), "shape": params.shape,
        "camera": jnp.concatenate([camera.rotation, camera.translation]),
    }
    outcome = run_optimiser(loss_fn, variables, optimiser, cfg.steps)
    p, cam = unpack(outcome.variables)
    return p, cam, outcome


def fit_landmarks(model: FlameModel, targets: LandmarkTargets, config: FitConfig = FitConfig(),
                  guess: InitialGuess | None = None) -> FitResult:
    """Fit FLAME to one image's landmarks: linear initialisation, stage 1 (rigid), stage 2 (landmarks).

    ``model`` may be the full model or ``landmark_model(model)`` (same result, faster). Pure: ``jax.vmap`` it over
    ``targets`` (and ``guess``) for a batch. Never returns NaN: a diverging stage keeps its last finite iterate
    and ``status`` says which stage failed.
    """
    camera, params = linear_initialisation(model, targets, config, guess)
    init_ok = all_finite((camera, params))
    fallback_camera = Camera.default(config.fov_deg, config.initial_distance, model.v_template.dtype)
    camera, params = jax.tree.map(lambda a, b: jnp.where(init_ok, a, b), (camera, params),
                                  (fallback_camera, FlameParams.for_model(model)))
    fixed_points = landmark_points(model, params)
    camera, rigid = rigid_stage(model, camera, fixed_points, targets, config.rigid)
    shape_anchor = jnp.zeros_like(params.shape) if guess is None else guess.shape * guess.shape_given
    params, camera, stage2 = landmark_stage(model, camera, params, targets, config.landmark, shape_anchor)
    projected = posed_landmarks(model, params, camera)
    status = jnp.select(
        [~targets.valid, ~init_ok, ~rigid.finite, ~stage2.finite],
        [STATUS_INVALID_INPUT, STATUS_DIVERGED_INIT, STATUS_DIVERGED_RIGID, STATUS_DIVERGED_LANDMARK], STATUS_OK)
    failed = jnp.where(~rigid.finite, rigid.failed_step, stage2.failed_step)
    return FitResult(params=params, camera=camera, landmarks=projected,
                     rigid_losses=_finite_or_marker(rigid.losses), landmark_losses=_finite_or_marker(stage2.losses),
                     rigid_final_loss=_finite_or_marker(rigid.final_loss),
                     landmark_final_loss=_finite_or_marker(stage2.final_loss),
                     nme=_finite_or_marker(nme_inner(projected.lmk68, targets.lmk68)),
                     status=status.astype(jnp.int32), failed_step=failed)


def _finite_or_marker(losses):
    """Losses (and NME) with -1 where they were not finite (the status says which stage failed)."""
    return jnp.where(jnp.isfinite(losses), losses, -1.0)


@functools.partial(jax.jit, static_argnames=("config",))
def _fit_batch(model, targets, config, guess):
    return jax.vmap(fit_landmarks, in_axes=(None, 0, None, 0 if guess is not None else None))(model, targets, config, guess)


def fit_landmarks_batch(model: FlameModel, targets: LandmarkTargets, config: FitConfig = FitConfig(),
                        guess: InitialGuess | None = None) -> FitResult:
    """Batched, jit-compiled :func:`fit_landmarks` (compiles once per batch size and config).

    ``targets`` carries a leading batch axis (see ``stack_targets``); ``model`` is restricted to its landmark
    vertices automatically.
    """
    return _fit_batch(landmark_model(model), targets, config, guess)


def result_to_numpy(result: FitResult) -> FitResult:
    return jax.tree.map(np.asarray, result)
