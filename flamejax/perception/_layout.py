"""MediaPipe FaceMesh points to the 68-point iBUG layout and the iris points (the layout facts themselves live in
:mod:`flamejax.flame._layout`, re-exported here for perception's users)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from flamejax.flame._layout import (FACE_OVAL, HAND_MADE_IBUG68_FROM_MEDIAPIPE, IBUG68_FROM_MEDIAPIPE, IBUG68_MIRROR,
                                    IRIS, LEFT_BROW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, MEDIAPIPE_IRIS_CENTERS,
                                    MEDIAPIPE_LEFT_IRIS, MEDIAPIPE_RIGHT_IRIS, NOSE, NUM_MESH_POINTS, NUM_POINTS,
                                    RIGHT_BROW, RIGHT_EYE)

__all__ = [
    "FACE_OVAL", "HAND_MADE_IBUG68_FROM_MEDIAPIPE", "IBUG68_FROM_MEDIAPIPE", "IBUG68_MIRROR", "LEFT_BROW", "LEFT_EYE",
    "LIPS_INNER", "LIPS_OUTER", "MEDIAPIPE_IRIS_CENTERS", "MEDIAPIPE_LEFT_IRIS", "MEDIAPIPE_RIGHT_IRIS", "NOSE",
    "NUM_MESH_POINTS", "NUM_POINTS", "RIGHT_BROW", "RIGHT_EYE", "to_68", "to_iris",
]


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
    return points478[IRIS].copy()
