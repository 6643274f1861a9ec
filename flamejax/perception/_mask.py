"""Photometric-loss face mask drawn from MediaPipe landmarks (the default when no parsing model is given), and
the person's silhouette from MediaPipe's selfie segmentation (the landmark fit's outline constraint)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from flamejax.flame._layout import face_turn
from flamejax.perception._layout import (FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS_INNER, MEDIAPIPE_MIRROR, RIGHT_BROW,
                                         RIGHT_EYE)
from flamejax.perception._transform import Affine, compose_affine, warp_image

FOREHEAD_KEPT = 0.6
"""Fraction of the forehead (from the brows up to MediaPipe's face outline) the landmark mask keeps."""
_SUBPIXEL_BITS = 4
MIN_POINTS_INSIDE = 0.95
"""Share of FaceMesh's points a person silhouette must cover (:func:`points_inside` of
:func:`points_a_silhouette_covers`) to be trusted."""
TURNED_AWAY = 1.0
"""``turn`` of FaceMesh's points (``face_turn``: the nose tip's offset from the cheeks' middle, in half face
widths; about 40° of yaw) beyond which FaceMesh's far half of the face is a guess a silhouette need not cover."""
WIDE_CONTEXT_COVERAGE = 0.7
"""Share of a face crop the selfie segmentation marks as the person above which :func:`person_in_context` segments
again on a crop twice as wide. The segmentation is made for head and shoulders; on a tight face crop it sometimes
takes the whole background for the person (0.3-0.5 of the crop is usual). On two draws of rendered heads at 50-75°
of yaw this happened in 13 of 169 views; segmented wider, most of their fits improved (7.7 -> 3.0 %, 6.3 -> 4.0 %)
and the draws' NME median fell; one view whose MediaPipe points are wrong in both looks stayed above 8 %
(``benchmarks/RESULTS.md``)."""
_local = threading.local()


def landmark_face_mask(points478: Float[np.ndarray, "478 2"], size: int | tuple[int, int], *,
                       forehead: float = FOREHEAD_KEPT, feather: float = 0.0) -> Float[np.ndarray, "H W"]:
    """Face region of a (size, size) or (height, width) image as a float32 mask in [0, 1].

    The region is MediaPipe's face outline with the eye openings and the mouth opening removed. Landmarks
    cannot see hair, so the part of the outline above the brows is lowered toward them, keeping ``forehead``
    of its height (1.0 keeps the whole outline; hair often covers its top). Brows, lips and nostrils stay
    in, as in the reference's parsing mask. Edges are anti-aliased; ``feather`` > 0 blurs them further
    (Gaussian sigma in pixels).

    Args:
      points478: landmarks in the pixel frame of the image the mask is for.
    """
    height, width = (size, size) if isinstance(size, int) else size
    points = np.asarray(points478, np.float64)
    canvas = np.zeros((height, width), np.uint8)
    _fill(canvas, _lowered_forehead(points, forehead)[list(FACE_OVAL)], 255)
    for opening in (RIGHT_EYE, LEFT_EYE, LIPS_INNER):
        _fill(canvas, points[list(opening)], 0)
    mask = canvas.astype(np.float32) / 255.0
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    return mask


def _lowered_forehead(points: np.ndarray, kept: float) -> np.ndarray:
    """Points with everything above the brows' top moved toward it, to ``kept`` of its height there."""
    eyes = (points[list(RIGHT_EYE)].mean(axis=0) + points[list(LEFT_EYE)].mean(axis=0)) / 2
    mouth = points[list(LIPS_INNER)].mean(axis=0)
    up = eyes - mouth
    up /= max(np.linalg.norm(up), 1e-9)
    brow_top = max(float(np.max((points[list(RIGHT_BROW + LEFT_BROW)] - eyes) @ up)), 0.0)
    height = (points - eyes) @ up - brow_top
    lowered = points.copy()
    above = height > 0
    lowered[above] -= np.outer(height[above] * (1.0 - kept), up)
    return lowered


def _fill(canvas: np.ndarray, polygon: np.ndarray, value: int) -> None:
    """Fill a polygon given in half-integer-centre pixel coordinates, anti-aliased."""
    fixed = np.round((polygon - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], value, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)


def _selfie_segmenter():
    """This thread's selfie segmentation (the general 256² model bundled with mediapipe; not thread-safe)."""
    if getattr(_local, "segmenter", None) is None:
        from mediapipe.python.solutions import selfie_segmentation

        _local.segmenter = selfie_segmentation.SelfieSegmentation(model_selection=0)
    return _local.segmenter


def person_silhouette(crop: UInt8[np.ndarray, "C C 3"], size: int) -> Float[np.ndarray, "S S"]:
    """The person (face, hair, neck, shoulders) against the background in a square RGB crop, as a float32 mask in
    [0, 1] resized to ``size`` square: MediaPipe's selfie segmentation, which needs no weights of the user's."""
    mask = _selfie_segmenter().process(np.ascontiguousarray(crop)).segmentation_mask
    return cv2.resize(np.asarray(mask, np.float32), (size, size), interpolation=cv2.INTER_AREA)


def person_in_context(image: UInt8[np.ndarray, "H W 3"], to_crop: Affine, crop_size: int, size: int,
                      crop: UInt8[np.ndarray, "C C 3"] | None = None) -> tuple[Float[np.ndarray, "S S"], float]:
    """:func:`person_silhouette` of the ``crop_size`` square crop of ``image`` that ``to_crop`` maps out (``crop``:
    that crop, if already warped), at ``size``; where it marks more than :data:`WIDE_CONTEXT_COVERAGE` of the crop
    as the person, segmented again on a crop twice as wide around it (the image's edge pixels repeated beyond it)
    and cut back to the crop. Also returns the share the first segmentation marked."""
    if crop is None:
        crop = warp_image(image, to_crop, crop_size, border=None)
    person = person_silhouette(crop, size)
    covered = float(np.mean(person >= 0.5))
    if covered > WIDE_CONTEXT_COVERAGE:
        to_wide = compose_affine(np.array([[0.5, 0.0, crop_size / 4], [0.0, 0.5, crop_size / 4]]), to_crop)
        wide = person_silhouette(warp_image(image, to_wide, crop_size, border=None), 2 * size)
        person = np.ascontiguousarray(wide[size // 2:size // 2 + size, size // 2:size // 2 + size])
    return person, covered


def points_a_silhouette_covers(points478: Float[np.ndarray, "478 2"]) -> Float[np.ndarray, "N 2"]:
    """FaceMesh's points a person silhouette must cover to be trusted: all of them, but for a face turned beyond
    :data:`TURNED_AWAY` only the near half and the midline (each point that lies no farther in the turn's direction
    than its mirror image). Turned that far, FaceMesh guesses the hidden half, and its guesses stick out past the
    profile (the nose's bridge, the lips, the chin), where the silhouette rightly ends."""
    points = np.asarray(points478)
    axes = face_turn(points)
    if axes is None or abs(axes[3]) <= TURNED_AWAY:
        return points
    along = points @ (np.sign(axes[3]) * axes[1])
    return points[along <= along[MEDIAPIPE_MIRROR] + 1e-6]


def points_inside(silhouette: Float[np.ndarray, "S S"], points: Float[np.ndarray, "N 2"],
                  tolerance: float = 1 / 64) -> float:
    """Share of ``points`` (pixels of ``silhouette``) inside it (value >= 0.5) or within ``tolerance`` of the
    image side of it (points on the face's outline straddle the silhouette's edge); outside the image counts as
    outside."""
    size = silhouette.shape[0]
    reach = int(round(tolerance * size))
    inside_cells = (silhouette >= 0.5).astype(np.uint8)
    if reach > 0:
        inside_cells = cv2.dilate(inside_cells, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    cells = np.floor(np.asarray(points, np.float64)).astype(np.int64)
    within = np.all((cells >= 0) & (cells < size), axis=1)
    inside = np.zeros(len(cells), bool)
    inside[within] = inside_cells[cells[within, 1], cells[within, 0]] > 0
    return float(inside.mean()) if len(cells) else 0.0
