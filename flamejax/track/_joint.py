"""One identity, many frames: the joint landmark fit behind video tracking and ``fit_same_person``.

All frames of a batch are optimised together in one jit-compiled optax program: a shared identity (shape) and
field of view, and per frame expression, jaw, eyes and the rigid pose (camera rotation and translation, the head
itself stays at the origin as in every flamejax fit). The identity is folded into the model's template once per
step, so a frame costs only its expression blendshapes and skinning. Each frame's data term, priors and learning
rates are those of :func:`flamejax.fit.fit_landmarks`'s landmark stage (``JointConfig.stage``); a video's temporal
priors act afterwards, in :mod:`flamejax.track._smooth`.

Robustness: at every step, frames whose landmark error is far above the batch's median (an occluding hand, a
detector failure) lose their data term and are filled from their neighbours like lost frames; the frames
still excluded at the end are reported in ``JointResult.outlier``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Bool, Float
from flamejax.track._core import (FROZEN, Camera, FitConfig, FlameModel, FlameParams, GroupSchedule,
                                  LandmarkStageConfig, LandmarkTargets, fit_landmarks_batch,
                                  contour_identity_share, identity_scaled_landmark_loss, landmark_model, nme_inner,
                                  WeightingConfig, partitioned_adam, posed_landmarks, quick_config,
                                  reads_face, run_stage, weighed_landmarks)

_HI = jax.lax.Precision.HIGHEST


JOINT_STAGE = LandmarkStageConfig(steps=200, expression=GroupSchedule(0.03, 0.01, 100),
                                  shape=GroupSchedule(0.03, 0.01, 100), camera=GroupSchedule(0.003, 0.001, 100),
                                  shape_l2=0.05)
"""The landmark stage's loss with faster learning rates: joint fits start from a rigid-only warm start (zero
expression), one photograph's stage 2 from a converged stage 1. The identity prior is the weaker one a single
image used to have: here it weighs against the data of every frame or view together. As in one photograph's fit,
the jaw contour does not pull on the identity of a frame or view turned less than 40° (``contour_identity``):
MediaPipe's jaw line is the same wrong width in every frame of a face (benchmarks/RESULTS.md, the video
tracker's identity)."""


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """The joint fit's optimiser, data weights and priors (hashable: a static argument of the compiled fit)."""

    stage: LandmarkStageConfig = JOINT_STAGE
    """Data term, priors, learning rates, steps and ``fit_shape`` (``fit_camera``: optimise the per-frame pose)."""
    fov_lr: float = 0.3
    fit_fov: bool = False
    fov_range: tuple[float, float] = (10.0, 50.0)
    outlier_factor: float = 3.0
    outlier_min_nme: float = 0.1
    """A frame is an outlier when its NME exceeds both this and ``outlier_factor`` x the batch's median."""
    shape_l2_per_view: bool = False
    """Count the identity prior once per usable frame or view, so that against each view's data it weighs what
    it weighs in one photograph's landmark stage (see :data:`SAME_PERSON`)."""

    def replace(self, **changes) -> "JointConfig":
        return dataclasses.replace(self, **changes)


SAME_PERSON = JointConfig(dataclasses.replace(JOINT_STAGE, shape_l2=LandmarkStageConfig().shape_l2),
                          shape_l2_per_view=True)
"""Several photographs of one person: one photograph's identity prior for every view. On rendered heads with 3D
truth and MediaPipe's points (benchmarks/RESULTS.md, identity section) the prior of :data:`JOINT_STAGE`, which
weakens as views are added, gave identities 1.16-1.36x the mean head's error at 2-5 views: the detector's bias
is much the same in every view of a face, so it does not average out as noise would."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FrameStates:
    """Per-frame variables of a joint fit (leading axis: frames). Pose as in :class:`flamejax.camera.Camera`."""

    expression: Float[Array, "frames n_exp"]
    jaw: Float[Array, "frames 3"]
    eyes: Float[Array, "frames 6"]
    """Left eye (FLAME joint 3) then right eye, axis-angle."""
    rotation: Float[Array, "frames 3"]
    """Camera rotation (axis-angle, head to camera)."""
    translation: Float[Array, "frames 3"]
    """Camera translation, metres."""

    @staticmethod
    def from_fit(params: FlameParams, camera: Camera) -> "FrameStates":
        """The per-frame part of a batched fit (``FitResult.params``, ``FitResult.camera``)."""
        return FrameStates(params.expression, params.jaw_pose,
                           jnp.concatenate([params.left_eye_pose, params.right_eye_pose], axis=-1),
                           camera.rotation, camera.translation)

    def flame_params(self, shape: Float[Array, "n_shape"]) -> FlameParams:
        """Batched FLAME parameters with the shared ``shape`` (head pose, neck, translation zero)."""
        zeros = jnp.zeros_like(self.jaw)
        return FlameParams(shape=jnp.broadcast_to(shape, (self.jaw.shape[0],) + shape.shape),
                           expression=self.expression, head_pose=zeros, neck_pose=zeros, jaw_pose=self.jaw,
                           left_eye_pose=self.eyes[:, :3], right_eye_pose=self.eyes[:, 3:], translation=zeros)

    def cameras(self, fov_deg: Float[Array, ""]) -> Camera:
        return Camera(self.rotation, self.translation, jnp.broadcast_to(fov_deg, self.jaw.shape[:1]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class JointResult:
    shape: Float[Array, "n_shape"]
    fov_deg: Float[Array, ""]
    frames: FrameStates
    lmk68: Float[Array, "frames 68 2"]
    """Fitted 68 points, NDC of each frame's crop."""
    nme: Float[Array, "frames"]
    """Inner-51 error over the targets' outer-eye-corner distance (meaningful for valid frames only)."""
    outlier: Bool[Array, "frames"]
    """Valid frames whose data term is dropped at the end (filled from neighbours)."""
    finite: Bool[Array, ""]
    """False when a step diverged (the last finite iterate is returned)."""


def with_identity(model: FlameModel, shape: Float[Array, "n_shape"]) -> FlameModel:
    """``model`` with ``shape`` folded into its template (and no identity components left)."""
    return dataclasses.replace(
        model,
        v_template=model.v_template + jnp.einsum("vcs,s->vc", model.shapedirs, shape, precision=_HI),
        j_template=model.j_template + jnp.einsum("jcs,s->jc", model.j_shapedirs, shape, precision=_HI),
        shapedirs=model.shapedirs[..., :0], j_shapedirs=model.j_shapedirs[..., :0])


def _frame_params(frame: FrameStates) -> FlameParams:
    """One frame's FLAME parameters for a model with its identity folded in."""
    zeros = jnp.zeros(3, frame.jaw.dtype)
    return FlameParams(shape=jnp.zeros(0, frame.jaw.dtype), expression=frame.expression, head_pose=zeros,
                       neck_pose=zeros, jaw_pose=frame.jaw, left_eye_pose=frame.eyes[:3],
                       right_eye_pose=frame.eyes[3:], translation=zeros)


def _projected(model: FlameModel, frame: FrameStates, fov: Float[Array, ""]):
    """Projected landmarks of one frame (``model`` has its identity folded in)."""
    return posed_landmarks(model, _frame_params(frame), Camera(frame.rotation, frame.translation, fov))


def _frame_fit(folded: FlameModel, model: FlameModel, shape: Float[Array, "n_shape"], frame: FrameStates,
               fov: Float[Array, ""], targets: LandmarkTargets, contour_share: Float[Array, ""],
               stage: LandmarkStageConfig):
    """Data loss and projected 68 points of one frame (``folded``: ``model`` with ``shape`` folded in). The jaw
    contour passes only ``contour_share`` of its gradient to the identity
    (:attr:`LandmarkStageConfig.contour_identity`) and the profile ``stage.profile_identity``, held on ``model``'s
    own vertices (:func:`identity_scaled_landmark_loss`)."""
    params = dataclasses.replace(_frame_params(frame), shape=shape)
    loss, proj = identity_scaled_landmark_loss(model, params, Camera(frame.rotation, frame.translation, fov),
                                               _projected(folded, frame, fov), targets, stage, contour_share)
    return loss, proj.lmk68


@jax.jit
def _project_frames(model: FlameModel, frames: FrameStates, shape, fov, targets: LandmarkTargets,
                    weighting: WeightingConfig):
    folded = with_identity(model, shape)

    def one(frame, frame_targets):
        weights, projected = weighed_landmarks(folded, _frame_params(frame),
                                               Camera(frame.rotation, frame.translation, fov), frame_targets, weighting)
        return projected.lmk68, weights.confidence

    return jax.vmap(one)(frames, targets)


def project_frames(model: FlameModel, frames: FrameStates, shape: Float[Array, "n_shape"],
                   fov_deg: float | Float[Array, ""], targets: LandmarkTargets,
                   weighting: WeightingConfig = WeightingConfig()
                   ) -> tuple[Float[Array, "frames 68 2"], Float[Array, "frames"]]:
    """The 68 landmarks (NDC) of ``frames`` with identity ``shape``, and each frame's confidence as a photograph's
    fit has it (:attr:`flamejax.fit.FitResult.confidence`: the share of its seen points the tracked pose explains,
    the fall-off with their residual, and the share of the face the detector's two looks agree on), both from one
    FLAME pass; ``targets``: one row per frame. Compiles once per number of frames."""
    return _project_frames(landmark_model(model, face=False), frames, jnp.asarray(shape, jnp.float32),
                           jnp.asarray(fov_deg, jnp.float32), targets, weighting)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _JointVariables:
    """What a joint fit optimises: per-frame states, the clip's identity and field of view."""

    frames: FrameStates
    shape: Float[Array, "n_shape"]
    fov: Float[Array, ""]


def _optimiser(config: JointConfig):
    stage = config.stage
    schedules = {"expression": stage.expression.schedule(), "jaw": stage.jaw.schedule(),
                 "eyes": stage.eyes.schedule(), "camera": stage.camera.schedule(), "shape": stage.shape.schedule(),
                 "fov": lambda count: jnp.asarray(config.fov_lr, jnp.float32)}
    pose = "camera" if stage.fit_camera else FROZEN
    labels = _JointVariables(FrameStates("expression", "jaw", "eyes", pose, pose),
                             "shape" if stage.fit_shape else FROZEN, "fov" if config.fit_fov else FROZEN)
    return partitioned_adam(schedules, labels)


@functools.partial(jax.jit, static_argnames=("config",))
def _fit_joint(model: FlameModel, targets: LandmarkTargets, init: FrameStates, shape, fov, frame_weight,
               config: JointConfig) -> JointResult:
    frame_fit = jax.vmap(_frame_fit, in_axes=(None, None, None, 0, None, 0, 0, None))
    contour_share = jax.vmap(lambda camera: contour_identity_share(camera, config.stage))(init.cameras(fov))

    def unpack(v: _JointVariables):
        return v.frames, v.shape, v.fov

    def frame_losses(v):
        frames, shape_, fov_ = unpack(v)
        data, lmk68 = frame_fit(with_identity(model, shape_), model, shape_, frames, fov_, targets, contour_share,
                                config.stage)
        return data, lmk68, jax.vmap(nme_inner)(lmk68, targets.lmk68)

    def inliers(nme):
        median = jnp.nanmedian(jnp.where(valid > 0, nme, jnp.nan))
        return nme <= jnp.maximum(config.outlier_min_nme, config.outlier_factor * median)

    def loss_fn(v):
        frames, shape_, _ = unpack(v)
        data, _, nme = frame_losses(v)
        weight = valid * jax.lax.stop_gradient(inliers(nme))
        stage = config.stage
        views = jnp.sum(valid > 0) if config.shape_l2_per_view else 1.0
        return (jnp.sum(weight * data) + stage.expression_l2 * jnp.sum(frames.expression**2)
                + stage.jaw_l2 * jnp.sum(frames.jaw**2) + stage.shape_l2 * views * jnp.sum(shape_**2))

    def project(v: _JointVariables) -> _JointVariables:
        return dataclasses.replace(v, fov=jnp.clip(v.fov, *config.fov_range))

    valid = targets.valid.astype(shape.dtype) * frame_weight
    v = _JointVariables(init, shape, jnp.asarray(fov, shape.dtype))
    best, report = run_stage(loss_fn, v, _optimiser(config), config.stage.steps, project)
    _, lmk68, nme = frame_losses(best)
    frames, shape_, fov_ = unpack(best)
    return JointResult(shape_, fov_, frames, lmk68, nme, (valid > 0) & ~inliers(nme), report.finite)


def fit_joint(model: FlameModel, targets: LandmarkTargets, init: FrameStates, shape: Float[Array, "n_shape"],
              fov_deg: float | Float[Array, ""], config: JointConfig = JointConfig(),
              frame_weight: Float[Array, "frames"] | None = None) -> JointResult:
    """Jointly fit a batch of frames (``targets`` batched) from ``init``.

    Compiles once per batch size, model size and config. ``frame_weight`` scales each frame's data term
    (0 drops a frame; invalid targets are dropped anyway).
    """
    frames = targets.valid.shape[0]
    weight = jnp.ones(frames, jnp.float32) if frame_weight is None else jnp.asarray(frame_weight, jnp.float32)
    fit_model = landmark_model(model, face=reads_face(targets, config.stage))
    return _fit_joint(fit_model, targets, init, jnp.asarray(shape, jnp.float32), jnp.asarray(fov_deg, jnp.float32),
                      weight, config)


def initial_fits(model: FlameModel, targets: LandmarkTargets, init_config: FitConfig):
    """Independent per-frame fits (``fit_landmarks_batch``) as a warm start: frames, shapes, the fit results."""
    fits = fit_landmarks_batch(model, targets, init_config)
    return FrameStates.from_fit(fits.params, fits.camera), fits


def robust_shape(shapes: Float[Array, "frames n_shape"], usable: Bool[Array, "frames"]) -> Float[Array, "n_shape"]:
    """Per-coefficient median of the usable frames' shapes (zeros when none is usable)."""
    picked = jnp.where(usable[:, None], shapes, jnp.nan)
    return jnp.where(jnp.any(usable), jnp.nanmedian(picked, axis=0), 0.0)


@dataclasses.dataclass(frozen=True)
class SamePersonResult:
    """A joint fit of several photographs of one person (leading axis: images)."""

    shape: Float[np.ndarray, "n_shape"]
    """The one identity shared by every image."""
    params: FlameParams
    """Per-image FLAME parameters (``shape`` repeated; head pose, neck, translation zero)."""
    camera: Camera
    """Per-image camera (the rigid pose lives here)."""
    lmk68: Float[np.ndarray, "images 68 2"]
    """Fitted 68 points in NDC of each image's crop."""
    nme: Float[np.ndarray, "images"]
    outlier: Bool[np.ndarray, "images"]
    """Images whose landmarks no shared head explained; they did not shape the identity."""
    status: list[str]
    """``"ok"``, ``"invalid input"`` (no usable landmarks), ``"outlier"`` or ``"diverged"`` per image."""
    independent_shapes: Float[np.ndarray, "images n_shape"]
    """The per-image shapes of the independent warm-start fits (their spread shows what sharing buys)."""


def fit_same_person(model: FlameModel, targets: LandmarkTargets,
                    config: JointConfig = SAME_PERSON,
                    init_config: FitConfig | None = None, fov_deg: float = 20.0) -> SamePersonResult:
    """Fit several photographs of one person: one shared shape, per-image expression, jaw, eyes and camera.

    ``targets`` is batched (``stack_targets``); each image keeps its own crop and camera, all at ``fov_deg``
    unless ``config.fit_fov``. Starts from independent fits (``init_config``, default a quick landmark fit) and
    the per-coefficient median of their shapes, then optimises everything jointly.
    """
    init_config = init_config or quick_config(60, 40).replace(fov_deg=fov_deg)
    frames, fits = initial_fits(model, targets, init_config)
    usable = np.asarray(targets.valid) & (np.asarray(fits.status) == 0)
    shape = robust_shape(fits.params.shape, jnp.asarray(usable))
    result = fit_joint(model, targets, frames, shape, fov_deg, config)
    r = jax.tree.map(np.asarray, result)
    status = ["invalid input" if not v else "diverged" if not r.finite else "outlier" if o else "ok"
              for v, o in zip(np.asarray(targets.valid), r.outlier)]
    return SamePersonResult(shape=r.shape, params=jax.tree.map(np.asarray, result.frames.flame_params(result.shape)),
                            camera=jax.tree.map(np.asarray, result.frames.cameras(result.fov_deg)),
                            lmk68=r.lmk68, nme=r.nme, outlier=r.outlier, status=status,
                            independent_shapes=np.asarray(fits.params.shape))
