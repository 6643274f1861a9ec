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
from flamejax.flame._layout import (INNER_68, IRIS, MEDIAPIPE_BETWEEN_BROWS, MEDIAPIPE_NOSE_BASE, NUM_IBUG68,
                                    NUM_POINTS, OUTER_EYE_CORNERS, face_turn)

SILHOUETTE_SIZE = 128
"""Side of :attr:`LandmarkTargets.outside`, whatever the size of the fit image (one compiled program for all)."""
PROFILE_SAMPLES = 24
"""Levels of the face, between the brows and the nose's base, at which :func:`profile_edge` looks for the profile.
Down to the lower lip instead, the lips' outline (open, pursed, or hidden by the upper lip) pulled the fitted mouth
along the silhouette's edge: hard-pose fits above 8 % NME 8 -> 5 of 84 and 5 -> 4 of 85 on two draws of rendered
heads no setting was chosen on, 2 of 31 either way on the identity section's (benchmarks/RESULTS.md)."""
PROFILE_TURN = (1.4, 1.7)
"""How far the nose tip lies off the middle of the cheeks, in half face widths (:func:`profile_edge`), where the
profile's weight starts to rise from 0 and where it reaches 1: about 45° and 55° of yaw on MediaPipe's points.
Below it the silhouette's edge at the face's side is a cheek, an ear or hair, not the face's profile."""
PROFILE_REACH = 0.15
"""Face heights an edge may lie beyond FaceMesh's farthest point at its level: farther, it is hair, a hand or a
shoulder rather than the nose or lips FaceMesh placed too far in."""


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
    profile: Float[Array, "24 2"] | None = None
    """Points on the silhouette's edge on the side a strongly turned face turns to (its profile: nose, lips,
    brows), in NDC, from :func:`profile_edge`; the fitted face must reach them. ``None`` or all weights zero: none
    known."""
    profile_weight: Float[Array, "24"] | None = None
    """Per :attr:`profile` point: 0 (not found, or the face is not turned far enough) to 1."""

    @staticmethod
    def from_pixels(points478: np.ndarray, lmk68: np.ndarray, image_size: int, iris: np.ndarray | None = None,
                    valid: bool = True, person: np.ndarray | None = None,
                    profile: tuple[np.ndarray, np.ndarray] | None = None) -> "LandmarkTargets":
        """Targets from pixel coordinates in a square ``image_size`` crop (MediaPipe 478 + iBUG 68); ``person``:
        the person's silhouette on that crop, ``(S, S)`` in [0, 1] (``Preprocessed.person``), from which the
        profile is found; or, without it, ``profile``: points (24, 2) in crop pixels and weights (24,) found
        already (:func:`profile_edge` on another crop, as for a video frame)."""
        points478 = np.asarray(points478, np.float32)
        iris = points478[IRIS] if iris is None else np.asarray(iris, np.float32)
        ndc = lambda p: np.asarray(pixels_to_ndc(np.asarray(p, np.float32), image_size))  # noqa: E731
        arrays = dict(lmk68=ndc(lmk68), iris=ndc(iris), mediapipe=ndc(points478))
        finite = all(np.all(np.isfinite(a)) for a in arrays.values())
        arrays = {k: np.nan_to_num(v) for k, v in arrays.items()}
        outside = None if person is None else silhouette_distance(person)  # first: it checks the silhouette
        if person is None and profile is not None:
            profile = np.asarray(profile[0], np.float32), np.asarray(profile[1], np.float32)
        elif person is not None:  # the silhouette may have its own size: its pixels, then the crop's
            scale = person.shape[0] / image_size
            edges, edge_weight = profile_edge(np.asarray(person, np.float32), points478 * scale)
            profile = edges / scale, edge_weight
        return LandmarkTargets(
            **{k: jnp.asarray(v) for k, v in arrays.items()},
            lmk68_weight=jnp.ones(NUM_IBUG68, jnp.float32),
            iris_weight=jnp.ones(10, jnp.float32),
            mediapipe_weight=jnp.ones(NUM_POINTS, jnp.float32),
            valid=jnp.asarray(bool(valid and finite)),
            outside=None if outside is None else jnp.asarray(outside),
            profile=None if profile is None else jnp.asarray(pixels_to_ndc(profile[0], image_size)),
            profile_weight=None if profile is None else jnp.asarray(profile[1]),
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
                         ("outside", (SILHOUETTE_SIZE, SILHOUETTE_SIZE)), ("profile", (PROFILE_SAMPLES, 2)),
                         ("profile_weight", (PROFILE_SAMPLES,))):
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


def _face_axes(points: Float[np.ndarray, "478 2"]) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """``(up, side, height, weight)`` of MediaPipe's points: the face's upward and sideways (towards where it
    turns) unit vectors, its height (forehead top to chin) and the profile's weight from the turn over
    :data:`PROFILE_TURN`; None where the points are not finite or the face is smaller than a pixel."""
    axes = face_turn(points)
    if axes is None:
        return None
    up, across, height, turn = axes
    weight = float(np.clip((abs(turn) - PROFILE_TURN[0]) / (PROFILE_TURN[1] - PROFILE_TURN[0]), 0.0, 1.0))
    return up, np.sign(turn) * across, height, weight


def profile_turn_weight(points478: Float[np.ndarray, "478 2"]) -> float:
    """The weight :func:`profile_edge` gives a face of these MediaPipe points (0: not turned far enough for its
    profile to be the silhouette's edge): callers skip the segmentation where it is 0."""
    axes = _face_axes(np.asarray(points478, np.float32))
    return 0.0 if axes is None else axes[3]


def profile_edge(person: Float[np.ndarray, "S S"], points478: Float[np.ndarray, "478 2"]
                 ) -> tuple[Float[np.ndarray, "24 2"], Float[np.ndarray, "24"]]:
    """The person's profile at strong yaw: where the silhouette ends on the side the face turns to, at
    :data:`PROFILE_SAMPLES` levels of the face from the brows down to the nose's base (pixels of the square crop that
    ``person`` and ``points478`` are on), and a weight per point.

    Each level's ray starts at the middle of FaceMesh's points and runs across the face, in the face's own axes
    (forehead top to chin), to the first pixel outside the silhouette. A point is kept where the silhouette is sure
    on both sides of it (at least 0.75 a few pixels in, at most 0.25 a few pixels out: a segmentation unsure of a
    dark background is not an edge) and where it lies at most :data:`PROFILE_REACH` face heights beyond FaceMesh's
    farthest point at that level. The weights rise with the turn over :data:`PROFILE_TURN`: at a profile the edge
    there is the nose and the brow, which FLAME models; facing the camera it is a cheek or hair."""
    points = np.asarray(points478, np.float32)
    size = person.shape[0]
    none = np.zeros((PROFILE_SAMPLES, 2), np.float32), np.zeros(PROFILE_SAMPLES, np.float32)
    axes = _face_axes(points)
    if axes is None or axes[3] == 0.0:
        return none
    up, side, height, weight = axes
    middle = points.mean(0)
    level_of = lambda p: np.dot(p - middle, up)  # noqa: E731
    levels = np.linspace(level_of(points[MEDIAPIPE_NOSE_BASE]), level_of(points[MEDIAPIPE_BETWEEN_BROWS]),
                         PROFILE_SAMPLES)
    starts = middle + levels[:, None] * up
    steps = np.arange(0.0, height, 0.5, dtype=np.float32)
    rays = starts[:, None, :] + steps[None, :, None] * side

    def silhouette_at(xy):
        cells = np.floor(xy).astype(int)
        within = np.all((cells >= 0) & (cells < size), axis=-1)
        cells = np.clip(cells, 0, size - 1)
        return np.where(within, person[cells[..., 1], cells[..., 0]], 0.0)

    inside = silhouette_at(rays) >= 0.5
    leaves = np.argmax(~inside, axis=1)  # the first step outside
    found = inside[:, 0] & (leaves > 0)
    edges = rays[np.arange(PROFILE_SAMPLES), np.maximum(leaves - 1, 0)] + 0.25 * side  # half a step past the last in
    near_level = np.abs(level_of(points)[None, :] - levels[:, None]) < 0.08 * height
    reach = np.where(near_level, (points @ side)[None, :], -np.inf).max(axis=1) - starts @ side
    beyond = (edges - starts) @ side - reach
    sure = size / 64
    sharp = (silhouette_at(edges + sure * side) <= 0.25) & (silhouette_at(edges - sure * side) >= 0.75)
    kept = found & sharp & (beyond <= PROFILE_REACH * height)
    return (np.where(kept[:, None], edges, 0.0).astype(np.float32),
            np.where(kept, weight, 0.0).astype(np.float32))


def stack_targets(targets: list[LandmarkTargets], batch_size: int | None = None) -> LandmarkTargets:
    """Stack per-image targets into a batch, padded with :meth:`LandmarkTargets.padding` up to ``batch_size``."""
    batch_size = batch_size or len(targets)
    if len(targets) > batch_size:
        raise ValueError(f"{len(targets)} targets do not fit a batch of {batch_size}")
    padded = list(targets) + [LandmarkTargets.padding()] * (batch_size - len(targets))
    if any(t.outside is not None for t in padded):  # one program for the batch: no silhouette is all zeros
        none = jnp.zeros((SILHOUETTE_SIZE, SILHOUETTE_SIZE), jnp.float32)
        padded = [t if t.outside is not None else dataclasses.replace(t, outside=none) for t in padded]
    if any(t.profile is not None for t in padded):
        padded = [t if t.profile is not None else dataclasses.replace(
            t, profile=jnp.zeros((PROFILE_SAMPLES, 2), jnp.float32),
            profile_weight=jnp.zeros(PROFILE_SAMPLES, jnp.float32)) for t in padded]
    return jax.tree.map(_stacked, *padded)


def _stacked(*leaves: Array) -> Array:
    """``leaves`` stacked on the host: ``jnp.stack`` of n arrays is an XLA concatenate of n operands, compiled anew
    for each n, and its compile time grows faster than n (minutes at a few thousand images). Inside a caller's
    ``jit`` (tracers) ``jnp.stack`` is part of the caller's program."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return jnp.stack(leaves)
    return jax.device_put(np.stack([np.asarray(leaf) for leaf in leaves]))


def eye_corner_distance(lmk68: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Outer-eye-corner distance (points 36 and 45), the NME normaliser."""
    right, left = OUTER_EYE_CORNERS
    return jnp.linalg.norm(lmk68[right] - lmk68[left])


def nme_inner(predicted: Float[Array, "68 2"], target: Float[Array, "68 2"]) -> Float[Array, ""]:
    """Mean distance over the inner 51 points divided by the target's outer-eye-corner distance."""
    err = jnp.linalg.norm(predicted[INNER_68] - target[INNER_68], axis=-1).mean()
    return err / jnp.maximum(eye_corner_distance(target), 1e-8)
