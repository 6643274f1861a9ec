"""What a landmark fit matches: detected 2D points in NDC, with per-point weights and a validity flag."""

from __future__ import annotations

import dataclasses

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Bool, Float
from flamejax.camera import pixels_to_ndc
from flamejax.flame._layout import INNER_68, IRIS, NUM_IBUG68, NUM_POINTS, OUTER_EYE_CORNERS

SILHOUETTE_SIZE = 128
"""Side of :attr:`LandmarkTargets.outside`, whatever the size of the fit image (one compiled program for all)."""


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
    outside: Float[Array, "128 128"] | None = None
    """How far each cell of the fit image lies outside the person's silhouette, in NDC units (0 inside it): the
    face's landmarks must project inside (see :func:`silhouette_distance`). Rows are y, columns x, cells of
    ``2 / SILHOUETTE_SIZE`` NDC. ``None`` (no silhouette term at all; video frames, synthetic targets) or all
    zeros (a photograph whose silhouette is not known: same program as those with one)."""

    @staticmethod
    def from_pixels(points478: np.ndarray, lmk68: np.ndarray, image_size: int, iris: np.ndarray | None = None,
                    valid: bool = True, person: np.ndarray | None = None) -> "LandmarkTargets":
        """Targets from pixel coordinates in a square ``image_size`` crop (MediaPipe 478 + iBUG 68); ``person``:
        the person's silhouette on that crop, ``(image_size, image_size)`` in [0, 1] (``Preprocessed.person``)."""
        points478 = np.asarray(points478, np.float32)
        iris = points478[IRIS] if iris is None else np.asarray(iris, np.float32)
        ndc = lambda p: np.asarray(pixels_to_ndc(np.asarray(p, np.float32), image_size))  # noqa: E731
        arrays = dict(lmk68=ndc(lmk68), iris=ndc(iris), mediapipe=ndc(points478))
        finite = all(np.all(np.isfinite(a)) for a in arrays.values())
        arrays = {k: np.nan_to_num(v) for k, v in arrays.items()}
        return LandmarkTargets(
            **{k: jnp.asarray(v) for k, v in arrays.items()},
            lmk68_weight=jnp.ones(NUM_IBUG68, jnp.float32),
            iris_weight=jnp.ones(10, jnp.float32),
            mediapipe_weight=jnp.ones(NUM_POINTS, jnp.float32),
            valid=jnp.asarray(bool(valid and finite)),
            outside=None if person is None else jnp.asarray(silhouette_distance(person)),
        )

    @staticmethod
    def padding() -> "LandmarkTargets":
        """An invalid, weightless placeholder that fills a batch to its fixed size (see :attr:`is_padding`)."""
        zeros = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
        return LandmarkTargets(zeros(NUM_IBUG68, 2), zeros(10, 2), zeros(NUM_POINTS, 2), zeros(NUM_IBUG68), zeros(10),
                               zeros(NUM_POINTS), jnp.asarray(False))

    @property
    def is_padding(self) -> Bool[Array, "*batch"]:
        """True for entries built by :meth:`padding`: invalid and with every weight zero."""
        weights = (self.lmk68_weight, self.iris_weight, self.mediapipe_weight)
        return ~self.valid & jnp.all(jnp.stack([jnp.all(w == 0, axis=-1) for w in weights]), axis=0)

    @property
    def usable(self) -> Bool[Array, "*batch"]:
        """Valid and finite: what the fit treats as an image to fit."""
        points = (self.lmk68, self.iris, self.mediapipe, self.lmk68_weight, self.iris_weight, self.mediapipe_weight)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p.reshape(*self.valid.shape, -1)), axis=-1)
                                    for p in points]), axis=0)
        return self.valid & finite


def check_targets(targets: LandmarkTargets, batch_dims: int, name: str = "targets") -> None:
    """Shapes and ranks of user-given targets (``batch_dims`` leading axes), with a message that says which."""
    if not isinstance(targets, LandmarkTargets):
        raise TypeError(f"{name}: expected LandmarkTargets, got {type(targets).__name__}")
    batch = tuple(np.shape(targets.valid))
    if len(batch) != batch_dims:
        raise ValueError(f"{name}: expected {batch_dims} leading batch axes, got valid of shape {batch}"
                         + (" (stack per-image targets with stack_targets)" if batch_dims else ""))
    for field, shape in (("lmk68", (NUM_IBUG68, 2)), ("iris", (10, 2)), ("mediapipe", (NUM_POINTS, 2)),
                         ("lmk68_weight", (NUM_IBUG68,)), ("iris_weight", (10,)), ("mediapipe_weight", (NUM_POINTS,)),
                         ("outside", (SILHOUETTE_SIZE, SILHOUETTE_SIZE))):
        if getattr(targets, field) is not None:
            chex.assert_shape(getattr(targets, field), batch + shape,
                              custom_message=f"{name}.{field} must have shape {batch + shape}")


def silhouette_distance(person: Float[np.ndarray, "S S"] | None) -> Float[np.ndarray, "128 128"]:
    """:attr:`LandmarkTargets.outside` of a square silhouette in [0, 1] (a person mask or matting alpha of the fit
    image): each cell's distance to the edge of the cells inside (value >= 0.5), in NDC units; zeros for ``None``
    or a silhouette with nothing inside."""
    empty = np.zeros((SILHOUETTE_SIZE, SILHOUETTE_SIZE), np.float32)
    if person is None:
        return empty
    person = np.asarray(person, np.float32)
    if person.ndim != 2 or person.shape[0] != person.shape[1]:
        raise ValueError(f"person silhouette must be a square (S, S) array, got shape {person.shape}")
    cells = cv2.resize(person, (SILHOUETTE_SIZE, SILHOUETTE_SIZE), interpolation=cv2.INTER_AREA)
    outside = (~(cells >= 0.5)).astype(np.uint8)
    if outside.all():
        return empty
    to_centres = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_edge = np.maximum(to_centres - 0.5, 0.0)  # an outside cell's centre is half a cell past the edge
    return (to_edge * (2.0 / SILHOUETTE_SIZE)).astype(np.float32)


def stack_targets(targets: list[LandmarkTargets], batch_size: int | None = None) -> LandmarkTargets:
    """Stack per-image targets into a batch, padded with :meth:`LandmarkTargets.padding` up to ``batch_size``."""
    batch_size = batch_size or len(targets)
    if len(targets) > batch_size:
        raise ValueError(f"{len(targets)} targets do not fit a batch of {batch_size}")
    padded = list(targets) + [LandmarkTargets.padding()] * (batch_size - len(targets))
    if any(t.outside is not None for t in padded):  # one program for the batch: no silhouette is all zeros
        none = jnp.zeros((SILHOUETTE_SIZE, SILHOUETTE_SIZE), jnp.float32)
        padded = [t if t.outside is not None else dataclasses.replace(t, outside=none) for t in padded]
    return jax.tree.map(lambda *x: jnp.stack(x), *padded)


def eye_corner_distance(lmk68: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Outer-eye-corner distance (points 36 and 45), the NME normaliser."""
    right, left = OUTER_EYE_CORNERS
    return jnp.linalg.norm(lmk68[right] - lmk68[left])


def nme_inner(predicted: Float[Array, "68 2"], target: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Mean distance over the inner 51 points divided by the target's outer-eye-corner distance."""
    err = jnp.linalg.norm(predicted[INNER_68] - target[INNER_68], axis=-1).mean()
    return err / jnp.maximum(eye_corner_distance(target), 1e-8)
