"""Fitting configuration: frozen dataclasses registered as pytrees.

Numbers (weights, learning rates, priors, the field of view) are pytree leaves, so they reach the jit-compiled
fits as traced arrays: changing one does not recompile. Step counts, switches and anything that decides an
array's shape are static (pytree metadata, hashed into the compilation cache key).

Defaults are the reference pipeline's numbers (flame-head-tracker, see REFERENCE.md §4–§5) unless marked as a
flamejax addition.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


def _config_pytree(*static: str):
    """Frozen dataclass whose fields are pytree leaves except the ``static`` ones (metadata)."""

    def register(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        return jax.tree_util.register_dataclass(cls, data_fields=[n for n in names if n not in static],
                                                meta_fields=list(static))

    return register


@_config_pytree("drop_step")
class GroupSchedule:
    """Adam learning rate of one parameter group: ``lr`` until ``drop_step``, then ``lr_after``."""

    lr: float
    lr_after: float | None = None
    drop_step: int | None = None

    def schedule(self) -> optax.Schedule:
        if self.lr_after is None or self.drop_step is None:
            return lambda count: jnp.asarray(self.lr, jnp.float32)
        return lambda count: jnp.where(count < self.drop_step, self.lr, self.lr_after).astype(jnp.float32)


@_config_pytree("iterations", "pose_refine_steps")
class InitConfig:
    """Weights-free linear initialisation (a flamejax addition): pose by PnP, then ridge regression on
    identity and expression given the pose, alternated ``iterations`` times."""

    iterations: int = 3
    pose_refine_steps: int = 8
    shape_prior: float = 2e-2
    """Ridge weight on identity coefficients, in NDC² per unit coefficient². Strong: on detected (not synthetic)
    landmarks identity beyond the mean head is mostly noise (benchmarks/RESULTS.md, identity section)."""
    expression_prior: float = 4e-4
    contour_weight: float = 0.5
    mediapipe_weight: float = 0.5


@_config_pytree("steps", "optimise_fov")
class RigidStageConfig:
    """Stage 1: camera rotation and translation (and optionally the field of view) on the landmarks."""

    steps: int = 1500
    lr: GroupSchedule = GroupSchedule(0.05, 0.005, 1000)
    inner_weight: float = 300.0
    contour_weight: float = 200.0
    mediapipe_weight: float = 150.0
    """flamejax addition: the 105 embedded MediaPipe points steady the rigid pose."""
    silhouette_weight: float = 2000.0
    """flamejax addition: the fitted landmarks must project inside the person's silhouette
    (``LandmarkTargets.outside``; nothing when none is known). At strong yaw it holds the face from reaching past
    the head's outline where FaceMesh folds it (identity section of benchmarks/RESULTS.md)."""
    profile_weight: float = 0.0
    """flamejax addition: the silhouette's profile (:attr:`LandmarkStageConfig.profile_weight`) in this stage too;
    off by default. With the pose alone free, a profile the inner landmarks cannot reach (at 50-65 degrees of yaw
    the silhouette's edge runs along the nose's side, beyond FLAME's nose landmarks) turned the head into a wrong
    pose, rolled by 35 degrees (NME 15-17 %), that stage 2 could not leave. Stage 2 refines the pose the landmarks
    give towards the profile. Rendered heads at |yaw| 50-75 (two fresh draws and the identity section's views):
    worst fits 17.3 / 17.5 / 15.7 -> 12.9 / 10.3 / 10.5 % NME, identity closer to the truth on all three
    (benchmarks/RESULTS.md, hard poses). 2000 was the default before."""
    optimise_fov: bool = False
    fov_lr: float = 0.5
    """Degrees per step scale of Adam on the field of view (only when ``optimise_fov``)."""
    fov_range: tuple[float, float] = (10.0, 50.0)


@_config_pytree("steps", "fit_shape", "fit_camera")
class LandmarkStageConfig:
    """Stage 2, landmark mode: expression, jaw, eyes (reference) plus identity, camera and dense points."""

    steps: int = 200
    expression: GroupSchedule = GroupSchedule(0.03, 0.015, 100)
    """The reference's 0.01 / 0.005 leaves expression short of its optimum in 200 steps (synthetic recovery,
    benchmarks/RESULTS.md, landmark fit)."""
    jaw: GroupSchedule = GroupSchedule(0.025, 0.01, 100)
    eyes: GroupSchedule = GroupSchedule(0.03, 0.01, 100)
    shape: GroupSchedule = GroupSchedule(0.05, 0.025, 100)
    """flamejax addition: identity is fitted when no network shape is given (``fit_shape``). Adam moves each
    coefficient by at most about the rate per step, and coefficients of one standard deviation are common."""
    camera: GroupSchedule = GroupSchedule(0.005, 0.0025, 100)
    """flamejax addition: the rigid pose keeps adapting while the shape changes."""
    inner_weight: float = 500.0
    iris_weight: float = 500.0
    contour_weight: float = 200.0
    """flamejax addition (the reference drops the contour in stage 2; it constrains face width)."""
    contour_identity: float = 0.0
    """flamejax: the share of the jaw contour's gradient that reaches the identity in a face seen from the front
    (1: all of it, as before; pose, jaw, expression and camera always get all of it). A detector's jaw line is its
    least reliable part (MediaPipe's 68 conversion: 7.5 % of the face box from the truth's frontally, against
    2.5 % for the inner points), and what it gets wrong is a face width or a chin FLAME can make; the face's
    outline comes from the person's silhouette instead (:attr:`face_silhouette_weight`). Rendered heads with 3D
    truth: NoW error 1.12 -> 1.06 mm at |yaw| <= 40, below the mean head's 1.08 (benchmarks/RESULTS.md, identity
    section). :func:`precise_landmarks_config` sets 1 (hand-annotated jaws). Read by the landmark fit's stage 2 and
    the joint fit (``flamejax.track.JOINT_STAGE`` sets 1); the photometric stages' landmark term ignores it."""
    contour_identity_turned: tuple[float, float] = (40.0, 55.0)
    """|yaw| (degrees, at the stage's start) over which that share rises linearly to 1. At |yaw| 50-75 the share
    0 left the identity where it was (within the spread of the views) and raised the landmark error (mean NME
    4.34 -> 4.43 %, one view 6.3 -> 9.6 %): there the jaw line, the near side's down to the chin, holds the turned
    face's identity and pose together."""
    mediapipe_weight: float = 400.0
    """flamejax addition: the 105 MediaPipe points embedded on FLAME."""
    silhouette_weight: float = 2000.0
    """flamejax addition: as :attr:`RigidStageConfig.silhouette_weight`."""
    face_silhouette_weight: float = 30000.0
    """flamejax addition: the same for every vertex of FLAME's face region (``face_silhouette_loss``), a mean over
    about 1800 vertices of which few reach the outline. It gives the jaw's, chin's and a profile's outline to the
    identity (rendered heads with 3D truth: NoW error a mean 0.03 mm lower at |yaw| 50-75 and 0.01 mm frontally;
    benchmarks/RESULTS.md). Needs the ``flame_masks`` file; nothing without it or without a silhouette. It costs
    2-4x the landmark fit's CPU time on photographs (the fit reads ~1800 more vertices); 0 turns it off and leaves
    those vertices out."""
    profile_weight: float = 2000.0
    """flamejax addition: at strong yaw the fitted face's profile must reach the silhouette's edge on the side the
    face turns to (``LandmarkTargets.profile``; nothing when none is known). The other side of
    :attr:`silhouette_weight`: it catches a face FaceMesh folded inwards."""
    profile_identity: float = 0.0
    """flamejax: the share of the profile's gradient (:attr:`profile_weight`) that reaches the identity (1: all of
    it; pose, jaw, expression and camera always get all of it). A detector's points on a turned face are turned
    less than the head, so a fit reaches the profile partly by turning the head further and partly by a longer
    nose and a flatter face, the identity taking the pose's error. Rendered heads with 3D truth at |yaw| 50-75,
    two fresh draws: NoW error 1.03 -> 0.93x and 1.00 -> 0.92x the mean head's (median of the views), NME about
    the same (benchmarks/RESULTS.md, hard poses). Read by every stage with this landmark term.
    :func:`precise_landmarks_config` sets 1, as before: points without a detector's bias leave the pose no error
    for the identity to take (the same views fitted to their true points: 0 was worse by a mean 0.07 mm)."""
    expression_l2: float = 0.025
    shape_l2: float = 0.5
    """flamejax: ten times the earlier 0.05, which fitted detector noise into the identity (identity section of
    benchmarks/RESULTS.md)."""
    shape_l2_turned: float = 4.0
    """flamejax: the factor on :attr:`shape_l2` for a turned head, reached linearly over :attr:`shape_l2_turned_yaws`.
    A detector's points on a face turned 50-75° are guesses on the far side and folds on the near one, and the
    fitted identity carried more of their error than of the face: rendered heads with 3D truth at |yaw| 50-75, NoW
    error 1.10 -> 1.06 mm (mean of the views' medians; the mean head 1.09), better in 61 % of the views
    (benchmarks/RESULTS.md, identity section). Read by the landmark fit's stage 2 (the joint fits share one
    identity over their views instead). :func:`precise_landmarks_config` sets 1."""
    shape_l2_turned_yaws: tuple[float, float] = (45.0, 60.0)
    """|yaw| (degrees, at the stage's start) over which the identity prior rises from :attr:`shape_l2` to
    :attr:`shape_l2_turned` times it. From 40° instead, the views at 40-43° lost a little (NoW median 0.979 ->
    0.993x the mean head's) and the turned ones gained no more."""
    jaw_l2: float = 0.0
    fit_shape: bool = True
    fit_camera: bool = True


@_config_pytree("visibility", "robust", "segments")
class WeightingConfig:
    """flamejax addition: per-point landmark weights at the current pose, for hard poses (see
    :mod:`flamejax.fit._visibility`). Computed at the start of each of ``segments`` equal parts of stages 1
    and 2, held constant within a part: a point whose surface faces away from the camera is a detector's guess
    (``visibility``), a point far from where any nearby pose puts it is an outlier (``robust``, Geman-McClure IRLS)."""

    visibility: bool = True
    robust: bool = True
    segments: int = 2
    """Equal parts of each stage; the weights are recomputed at the start of each (one compiled body for all)."""
    visibility_floor: float = 0.05
    """Weight of a point on a surface facing away from the camera."""
    visibility_threshold: float = 0.05
    """Facing cosine (normal vs. direction to the camera) at which the weight is half-way to 1."""
    visibility_softness: float = 0.05
    robust_scale: float = 0.15
    """Residual, over the face size (sqrt of the targets' box area), at which a point's weight falls to 1/4."""
    confidence_scale: float = 0.05
    """Mean residual over the face size at which :attr:`FitResult.confidence` falls to 1/e (all points kept)."""

    @property
    def enabled(self) -> bool:
        """Whether either weighting is on (otherwise the targets keep their own weights)."""
        return self.visibility or self.robust


@_config_pytree()
class FitConfig:
    """Everything a landmark fit needs besides the model and the targets."""

    init: InitConfig = InitConfig()
    rigid: RigidStageConfig = RigidStageConfig()
    landmark: LandmarkStageConfig = LandmarkStageConfig()
    weighting: WeightingConfig = WeightingConfig()
    fov_deg: float = 20.0
    initial_distance: float = 1.0

    def replace(self, **changes) -> "FitConfig":
        return dataclasses.replace(self, **changes)


def _landmark_stage_of(stage: LandmarkStageConfig, steps: int, **changes) -> LandmarkStageConfig:
    """``stage`` run for ``steps`` steps, every group's learning rate dropping half-way as in the default."""
    return dataclasses.replace(
        stage, steps=steps, **changes,
        **{g: dataclasses.replace(getattr(stage, g), drop_step=steps // 2)
           for g in ("expression", "jaw", "eyes", "shape", "camera")})


def quick_config(rigid_steps: int = 150, landmark_steps: int = 60) -> FitConfig:
    """Fewer steps with the same schedules' shape (lr drop at 2/3 of stage 1 and 1/2 of stage 2), for tests."""
    base = FitConfig()
    rigid = dataclasses.replace(base.rigid, steps=rigid_steps, lr=GroupSchedule(0.05, 0.005, rigid_steps * 2 // 3))
    return base.replace(rigid=rigid, landmark=_landmark_stage_of(base.landmark, landmark_steps))


def precise_landmarks_config(base: FitConfig = FitConfig(), landmark_steps: int | None = None) -> FitConfig:
    """``base`` for landmarks without a detector's shape bias (hand annotations, a calibrated capture rig, synthetic
    heads): identity priors about 10x weaker (and not stronger for a turned head) and stage 2 ``landmark_steps`` long
    (default: twice ``base``'s), so that identity follows the points. In photometric mode pair it with
    :func:`~flamejax.fit.precise_photometric_config`.

    Not for MediaPipe's points: their errors are shapes FLAME can make (a fit explains them with a residual
    smaller than one pixel of noise leaves), and a weak prior fits them into the identity — 1.4x the mean head's
    error on the rendered heads with 3D truth, against 1.05x with ``FitConfig()`` (benchmarks/RESULTS.md)."""
    steps = 2 * base.landmark.steps if landmark_steps is None else landmark_steps
    landmark = _landmark_stage_of(base.landmark, steps, shape_l2=base.landmark.shape_l2 / 16, contour_identity=1.0,
                                  profile_identity=1.0, shape_l2_turned=1.0)
    return base.replace(init=dataclasses.replace(base.init, shape_prior=base.init.shape_prior / 10), landmark=landmark)
