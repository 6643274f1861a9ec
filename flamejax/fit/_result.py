"""What a fit starts from and what it returns: ``FitStart``, ``Status``, per-stage reports, ``FitResult``."""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Bool, Float, Int
from flamejax.camera import Camera
from flamejax.flame import FlameParams, ProjectedLandmarks

if TYPE_CHECKING:
    from flamejax.fit._visibility import LandmarkWeights


class Status(enum.IntEnum):
    """Outcome of one image's fit, in stage order; results store it as an int32 array of these values."""

    OK = 0
    INVALID_INPUT = 1
    DIVERGED_INIT = 2
    DIVERGED_RIGID = 3
    DIVERGED_LANDMARK = 4
    DIVERGED_PHOTOMETRIC = 5
    PADDING = 6

    @property
    def reason(self) -> str:
        """One sentence for people: what went wrong (or "ok")."""
        return _REASONS[self]


_REASONS = {
    Status.OK: "ok",
    Status.INVALID_INPUT: "invalid input (non-finite or missing landmarks)",
    Status.DIVERGED_INIT: "initialisation failed (non-finite pose or coefficients)",
    Status.DIVERGED_RIGID: "diverged in stage 1 (rigid)",
    Status.DIVERGED_LANDMARK: "diverged in stage 2 (landmarks)",
    Status.DIVERGED_PHOTOMETRIC: "diverged in the photometric stage",
    Status.PADDING: "padding entry of a batch (no image)",
}


def first_failure(conditions: list[tuple[Bool[Array, ""], Status]]) -> Int[Array, ""]:
    """The status of the first true condition in stage order, ``Status.OK`` if none holds."""
    return jnp.select([c for c, _ in conditions], [int(s) for _, s in conditions], int(Status.OK)).astype(jnp.int32)


class StageReport(NamedTuple):
    """How one optimisation stage went (a leading batch axis on every field after a batched fit)."""

    losses: Float[Array, "steps"]
    """Loss before each step; -1 where it was not finite (``finite`` then says the stage failed)."""
    final_loss: Float[Array, ""]
    """Loss of the returned iterate: the lowest seen, never a non-finite one (-1 if none was finite)."""
    finite: Bool[Array, ""]
    """False when a step produced a non-finite loss or variable; the stage then stopped at its last finite
    iterate."""
    failed_step: Int[Array, ""]
    """The step that diverged, -1 if none."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FitStart:
    """A start for the landmark fit, e.g. from networks (DECA/MICA). A coefficient set marked as given is held
    at its value by the linear initialisation, which solves the others with it fixed; identity marked as given
    is also the anchor of the landmark stage's identity prior."""

    shape: Float[Array, "n_shape"]
    expression: Float[Array, "n_exp"]
    jaw_pose: Float[Array, "3"]
    """Axis-angle jaw rotation (always used as the start)."""
    shape_given: Bool[Array, ""]
    expression_given: Bool[Array, ""]

    @staticmethod
    def neutral(n_shape: int, n_expression: int) -> "FitStart":
        """Nothing given: the linear initialisation solves identity and expression itself."""
        return FitStart(jnp.zeros(n_shape, jnp.float32), jnp.zeros(n_expression, jnp.float32),
                        jnp.zeros(3, jnp.float32), jnp.asarray(False), jnp.asarray(False))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PhotometricReport:
    """What the photometric stage adds to a landmark fit."""

    texture: Float[Array, "t t 3"]
    """Fitted albedo texture in FLAME's UV layout (rows top to bottom), RGB in [0, 1]."""
    light: Float[Array, "9 3"]
    """SH coefficients (9 bands × RGB)."""
    texture_coeffs: Float[Array, "n_tex"]
    """Albedo PCA coefficients (empty without an albedo model)."""
    render: Float[Array, "s s 3"]
    """The fitted head rendered at the fitting resolution (over black)."""
    alpha: Float[Array, "s s"]
    photometric_start: Float[Array, ""]
    """Masked L1 photometric error at the start (landmark fit, initial light and albedo)."""
    photometric_final: Float[Array, ""]
    stage: StageReport


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FitResult:
    """Everything one fit produced (a leading batch axis on every field after a batched fit).

    Entries of a batch that hold no image (``LandmarkTargets.padding()``) have ``status == Status.PADDING`` and a
    NaN ``nme``, and so do images with invalid targets (``Status.INVALID_INPUT``): ``result.nme.mean()`` is then
    NaN rather than silently wrong. Average over ``result.nme[result.ok]``, or use ``jnp.nanmean``.
    """

    params: FlameParams
    """FLAME parameters; head pose and translation stay zero (the rigid pose lives in the camera)."""
    camera: Camera
    landmarks: ProjectedLandmarks
    """Fitted landmarks in NDC of the fitting crop (``landmarks.to_pixels(size)`` for pixels)."""
    nme: Float[Array, ""]
    """Inner-51 error over the outer-eye-corner distance of the targets; NaN for padding and invalid input."""
    status: Int[Array, ""]
    """A :class:`Status` value (int32)."""
    rigid: StageReport
    landmark: StageReport
    photometric: PhotometricReport | None = None
    """Filled by :func:`fit_photometric_batch`."""
    confidence: Float[Array, ""] | None = None
    """How far to trust this fit, in [0, 1]: the share of the seen 68 points the fitted pose explains, times a
    fall-off with their mean residual over the face size (:func:`flamejax.fit._visibility.fit_confidence`), times
    the share of the face the detector's two looks agree on (:func:`flamejax.fit.target_agreement`; for a fit
    leaning to one of them, :func:`flamejax.fitter.fit_with_look_choice`, that of the two looks); 0 when
    ``status`` is not OK. Not a calibrated probability: compare images with it, flag the low ones."""
    weights: "LandmarkWeights | None" = None
    """Per-point weights at the fitted pose (visibility x robust) and the visibility of the 68 points."""

    @property
    def ok(self) -> Bool[Array, "*batch"]:
        return self.status == int(Status.OK)
