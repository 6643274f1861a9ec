"""MediaPipe FaceMesh point layout: contours, iris points and the conversion to the 68-point iBUG layout.

"Right" and "left" are the subject's: on a frontal, unmirrored photograph the subject's right eye is on the
image's left. MediaPipe follows the same naming (its ``FACEMESH_RIGHT_EYE`` is the subject's right eye).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

NUM_MESH_POINTS = 468
NUM_POINTS = 478

MEDIAPIPE_IRIS_CENTERS = (468, 473)
"""Iris centres: 468 the subject's right eye (image left on a frontal photo), 473 the subject's left eye."""
MEDIAPIPE_RIGHT_IRIS = (468, 469, 470, 471, 472)
"""Subject's right iris: centre, then four ring points."""
MEDIAPIPE_LEFT_IRIS = (473, 474, 475, 476, 477)
"""Subject's left iris: centre, then four ring points."""

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
"""Face silhouette, clockwise on the image from the top of the forehead (10) through the chin (152)."""
RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
"""Subject's right eye opening: outer corner 33, upper lid, inner corner 133, lower lid."""
LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
"""Subject's left eye opening: outer corner 263, upper lid, inner corner 362, lower lid."""
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
"""Outer lip contour from the subject's right mouth corner 61, upper lip first."""
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
"""Inner lip contour (the mouth opening) from the subject's right inner corner 78, upper lip first."""
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
"""Subject's right eyebrow outline: upper edge outer to inner, lower edge back."""
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
"""Subject's left eyebrow outline: upper edge outer to inner, lower edge back."""

# Each iBUG point is the mean of the listed MediaPipe points (a point listed three times weighs three).
# Jaw points are spaced evenly along the silhouette from eye level (127, 356) to the chin (152), as the iBUG
# jaw is; brow points lie midway between MediaPipe's upper and lower brow edge; lid points sit at a third and
# two thirds of each lid. The table is mirror-symmetric under MediaPipe's left/right point pairs.
_IBUG68_FROM_MEDIAPIPE: tuple[tuple[int, ...], ...] = (
    # 0-16 jaw, subject's right (image left) to subject's left
    (127,), (234, 234, 234, 93), (93, 132), (132, 58), (172,), (136,), (149,), (176, 148), (152,),
    (377, 400), (378,), (365,), (397,), (288, 361), (361, 323), (454, 454, 454, 323), (356,),
    # 17-21 right brow outer to inner, 22-26 left brow inner to outer
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55),
    (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # 27-30 nose bridge root to tip, 31-35 nostril base right to left
    (168,), (197,), (5,), (4, 1),
    (98, 240), (97,), (2,), (326,), (327, 460),
    # 36-41 right eye: outer corner, upper lid, inner corner, lower lid; 42-47 left eye: inner corner first
    (33,), (160, 159), (158, 157), (133,), (153,), (144,),
    (362,), (385, 384), (387, 386), (263,), (373,), (380,),
    # 48-59 outer lips from the right corner, upper lip first; 60-67 inner lips likewise
    (61,), (40, 39), (37,), (0,), (267,), (270, 269), (291,), (321, 405), (314,), (17,), (84,), (91, 181),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)


def _conversion_matrix() -> np.ndarray:
    matrix = np.zeros((68, NUM_POINTS))
    for row, sources in enumerate(_IBUG68_FROM_MEDIAPIPE):
        np.add.at(matrix[row], list(sources), 1.0 / len(sources))
    matrix.setflags(write=False)
    return matrix


IBUG68_FROM_MEDIAPIPE = _conversion_matrix()
"""(68, 478) row-stochastic weights: ``ibug68 = IBUG68_FROM_MEDIAPIPE @ mediapipe478``."""


def to_68(points478: Float[np.ndarray, "478 D"]) -> Float[np.ndarray, "68 D"]:
    """MediaPipe 478 (or 468) points to the 68-point iBUG layout; works for 2-D and 3-D points.

    Order: 0-16 jaw from the subject's right to left (image left to right on a frontal photo), 17-21 right
    brow, 22-26 left brow, 27-30 nose bridge, 31-35 nostrils, 36-41 right eye, 42-47 left eye, 48-59 outer
    lips, 60-67 inner lips. Result dtype: float32 for float32 input, else float64.
    """
    points478 = np.asarray(points478)
    if points478.ndim != 2 or points478.shape[0] not in (NUM_MESH_POINTS, NUM_POINTS):
        raise ValueError(f"expected (478, D) or (468, D) MediaPipe points, got shape {points478.shape}")
    converted = IBUG68_FROM_MEDIAPIPE[:, : points478.shape[0]] @ points478
    return converted.astype(np.float32 if points478.dtype == np.float32 else np.float64)


def to_iris(points478: Float[np.ndarray, "478 D"]) -> Float[np.ndarray, "10 D"]:
    """The 10 iris points, MediaPipe 468-477 in order: subject's right iris (centre, 4 ring), then left.

    On a frontal, unmirrored photo the first five lie on the image's left.
    """
    points478 = np.asarray(points478)
    if points478.ndim != 2 or points478.shape[0] != NUM_POINTS:
        raise ValueError(f"expected (478, D) MediaPipe points with iris (refine_landmarks), got {points478.shape}")
    return points478[NUM_MESH_POINTS:NUM_POINTS].copy()
