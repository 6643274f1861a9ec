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
    "LIPS_INNER", "LIPS_OUTER", "MEDIAPIPE_IRIS_CENTERS", "MEDIAPIPE_LEFT_IRIS", "MEDIAPIPE_MIRROR",
    "MEDIAPIPE_RIGHT_IRIS", "NOSE", "NUM_MESH_POINTS", "NUM_POINTS", "RIGHT_BROW", "RIGHT_EYE", "to_68", "to_iris",
]


MEDIAPIPE_MIRROR = np.array([
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 250, 251, 252, 253, 254, 255, 256,
    257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278,
    279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300,
    301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343,
    344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365,
    366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385,
    386, 387, 388, 389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197, 420, 199, 200, 421, 422,
    423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444,
    445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466,
    467, 3, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72,
    73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,
    123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
    145, 146, 147, 148, 149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193,
    194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219,
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247, 473, 476, 475, 474, 477, 468, 471, 470, 469, 472
])
"""MediaPipe index (478 points, iris included) of each point's mirror image (subject's left and right swapped).

Measured on MediaPipe itself: FaceMesh on 24 near-frontal renders and on their mirror images, the mirrored points
matched one to one (Hungarian assignment on pixel distance), the majority match of each point kept (at least 17
of 24 agreed on every point). It maps 1316 of the 1322 edges of MediaPipe's tessellation onto edges; the other 6
are quad diagonals the tessellation draws differently on the two sides (tested)."""


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
