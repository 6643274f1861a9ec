"""The tracker's temporal priors, applied as one linear least-squares pass over a whole clip.

Each per-frame variable ``x`` (one column of a :class:`FrameStates` group) is replaced by the trajectory ``y``
minimising

    sum_t w_t ((y_t - x_t) / noise)^2 + sum_t ((y_t+1 - y_t) / step)^2 + sum_t ((y_t+1 - 2 y_t + y_t-1) / accel)^2

with ``noise``, ``step`` and ``accel`` the group's tolerances in :class:`TemporalPrior`: the priors of
:func:`flamejax.track.temporal_loss` with a quadratic data term around the per-frame fits (``x``). ``w_t`` is 1
for a frame fitted to its landmarks and 0 for every other one (lost, missing, occluded, hard pose...), which the
difference terms then fill (linearly across a gap). The normal equations are pentadiagonal: solved in O(frames)
per group.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from scipy.linalg import solveh_banded

from flamejax._typing import Array, Float
from flamejax.track._joint import FrameStates


@dataclasses.dataclass(frozen=True)
class TemporalPrior:
    """Tolerances of the temporal priors: the frame-to-frame change (``*_step``) and the change of that change
    (``*_accel``, per frame²) that cost as much as 1 unit each (smaller is smoother), and the typical error of a
    per-frame fit (``*_noise``) that they are weighed against (larger is smoother)."""

    rotation_step_deg: float = 4.0
    rotation_accel_deg: float = 0.4
    rotation_noise_deg: float = 1.0
    translation_step_mm: float = 8.0
    translation_accel_mm: float = 0.8
    translation_noise_mm: float = 2.0
    """Across the image (camera x and y)."""
    depth_noise_mm: float = 2.0
    """Along the camera axis, where distance trades with the head's scale in the image."""
    expression_step: float = 0.5
    expression_accel: float = 0.08
    expression_noise: float = 0.2
    jaw_step_deg: float = 4.0
    jaw_accel_deg: float = 0.5
    jaw_noise_deg: float = 1.25
    eyes_step_deg: float = 10.0
    eyes_accel_deg: float = 2.0
    eyes_noise_deg: float = 5.0

    def replace(self, **changes) -> "TemporalPrior":
        return dataclasses.replace(self, **changes)


def _differences(x: Float[Array, "frames d"], tolerance_step: float, tolerance_accel: float) -> Float[Array, ""]:
    step = (x[1:] - x[:-1]) / tolerance_step
    accel = (x[2:] - 2.0 * x[1:-1] + x[:-2]) / tolerance_accel
    return jnp.sum(step**2) + jnp.sum(accel**2)


def temporal_loss(frames: FrameStates, prior: TemporalPrior) -> Float[Array, ""]:
    """The difference terms of the module docstring's objective, summed over every group of ``frames``."""
    deg = np.pi / 180.0
    return (_differences(frames.rotation, prior.rotation_step_deg * deg, prior.rotation_accel_deg * deg)
            + _differences(frames.translation, prior.translation_step_mm * 1e-3, prior.translation_accel_mm * 1e-3)
            + _differences(frames.expression, prior.expression_step, prior.expression_accel)
            + _differences(frames.jaw, prior.jaw_step_deg * deg, prior.jaw_accel_deg * deg)
            + _differences(frames.eyes, prior.eyes_step_deg * deg, prior.eyes_accel_deg * deg))

_BANDS = 2
"""Upper bands of the normal matrix (second differences couple frames two apart)."""


def _gram_bands(frames: int, coefficients: tuple[float, ...], scale: float) -> np.ndarray:
    """``scale * D^T D`` in ``solveh_banded``'s upper form, ``D`` the difference operator with ``coefficients``."""
    bands = np.zeros((_BANDS + 1, frames))
    k = len(coefficients)
    rows = np.arange(max(frames - k + 1, 0))
    for a in range(k):
        for b in range(a, k):
            np.add.at(bands[_BANDS - (b - a)], rows + b, scale * coefficients[a] * coefficients[b])
    return bands


def smooth_trajectory(values: np.ndarray, weight: np.ndarray, noise: float, step: float, accel: float
                      ) -> np.ndarray:
    """The minimiser in the module docstring for every column of ``values`` (frames, ...), float64 inside;
    ``values`` unchanged when no frame has weight."""
    frames = len(values)
    data = np.asarray(weight, np.float64) / noise**2
    if not np.any(data > 0):  # nothing to anchor the trajectory to
        return values
    # With one anchored frame or more the system is definite: D1's null space (constants) is pinned by the data.
    bands = _gram_bands(frames, (-1.0, 1.0), step**-2.0) + _gram_bands(frames, (1.0, -2.0, 1.0), accel**-2.0)
    bands[_BANDS] += data
    flat = np.asarray(values, np.float64).reshape(frames, -1)
    return solveh_banded(bands, data[:, None] * flat).reshape(values.shape).astype(values.dtype)


def smooth_states(frames: FrameStates, weight: np.ndarray, prior: TemporalPrior) -> FrameStates:
    """Every group of ``frames`` (numpy, leading axis frames) smoothed with its tolerances in ``prior``."""
    deg, mm = np.pi / 180.0, 1e-3
    groups = {
        "rotation": (prior.rotation_noise_deg * deg, prior.rotation_step_deg * deg, prior.rotation_accel_deg * deg),
        "expression": (prior.expression_noise, prior.expression_step, prior.expression_accel),
        "jaw": (prior.jaw_noise_deg * deg, prior.jaw_step_deg * deg, prior.jaw_accel_deg * deg),
        "eyes": (prior.eyes_noise_deg * deg, prior.eyes_step_deg * deg, prior.eyes_accel_deg * deg),
    }
    smoothed = {name: smooth_trajectory(np.asarray(getattr(frames, name)), weight, *tolerances)
                for name, tolerances in groups.items()}
    translation = np.asarray(frames.translation)
    step, accel = prior.translation_step_mm * mm, prior.translation_accel_mm * mm
    smoothed["translation"] = np.concatenate(
        [smooth_trajectory(translation[:, :2], weight, prior.translation_noise_mm * mm, step, accel),
         smooth_trajectory(translation[:, 2:], weight, prior.depth_noise_mm * mm, step, accel)], axis=1)
    return FrameStates(**smoothed)
