"""What a landmark fit matches: detected 2D points in NDC, with per-point weights and a validity flag."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Bool, Float
from flamejax.camera import pixels_to_ndc

NUM_MEDIAPIPE = 478
INNER = slice(17, 68)
CONTOUR = slice(0, 17)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkTargets:
    """Targets of one image in NDC of the fitting crop (see :mod:`flamejax.camera`)."""

    lmk68: Float[Array, "68 2"]
    iris: Float[Array, "10 2"]
    """MediaPipe 468..477: iris centre + ring of the subject's right eye, then left eye."""
    mediapipe: Float[Array, "478 2"]
    lmk68_weight: Float[Array, "68"]
    iris_weight: Float[Array, "10"]
    mediapipe_weight: Float[Array, "478"]
    valid: Bool[Array, ""]
    """False for padding in a batch, or for an image whose targets are not finite."""

    @staticmethod
    def from_pixels(points478: np.ndarray, lmk68: np.ndarray, image_size: int, iris: np.ndarray | None = None,
                    valid: bool = True) -> "LandmarkTargets":
        """Targets from pixel coordinates in a square ``image_size`` crop (MediaPipe 478 + iBUG 68)."""
        points478 = np.asarray(points478, np.float32)
        iris = points478[468:478] if iris is None else np.asarray(iris, np.float32)
        ndc = lambda p: np.asarray(pixels_to_ndc(np.asarray(p, np.float32), image_size))  # noqa: E731
        arrays = dict(lmk68=ndc(lmk68), iris=ndc(iris), mediapipe=ndc(points478))
        finite = all(np.all(np.isfinite(a)) for a in arrays.values())
        arrays = {k: np.nan_to_num(v) for k, v in arrays.items()}
        return LandmarkTargets(
            **{k: jnp.asarray(v) for k, v in arrays.items()},
            lmk68_weight=jnp.ones(68, jnp.float32),
            iris_weight=jnp.ones(10, jnp.float32),
            mediapipe_weight=jnp.ones(NUM_MEDIAPIPE, jnp.float32),
            valid=jnp.asarray(bool(valid and finite)),
        )

    @staticmethod
    def padding() -> "LandmarkTargets":
        """An invalid placeholder that fills a batch to its fixed size."""
        zeros = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
        return LandmarkTargets(zeros(68, 2), zeros(10, 2), zeros(NUM_MEDIAPIPE, 2), zeros(68), zeros(10),
                               zeros(NUM_MEDIAPIPE), jnp.asarray(False))


def stack_targets(targets: list[LandmarkTargets], batch_size: int | None = None) -> LandmarkTargets:
    """Stack per-image targets into a batch, padded with invalid entries up to ``batch_size``."""
    batch_size = batch_size or len(targets)
    if len(targets) > batch_size:
        raise ValueError(f"{len(targets)} targets do not fit a batch of {batch_size}")
    padded = list(targets) + [LandmarkTargets.padding()] * (batch_size - len(targets))
    return jax.tree.map(lambda *x: jnp.stack(x), *padded)


def eye_corner_distance(lmk68: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Outer-eye-corner distance (points 36 and 45), the NME normaliser."""
    return jnp.linalg.norm(lmk68[36] - lmk68[45])


def nme_inner(predicted: Float[Array, "68 2"], target: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Mean distance over the inner 51 points divided by the target's outer-eye-corner distance."""
    err = jnp.linalg.norm(predicted[INNER] - target[INNER], axis=-1).mean()
    return err / jnp.maximum(eye_corner_distance(target), 1e-8)
