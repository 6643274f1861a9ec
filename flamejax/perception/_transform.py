"""2-D affine maps between pixel frames, and warping images by them.

Convention everywhere in flamejax: pixel (row i, column j) covers the square [j, j+1] x [i, i+1] and has
its centre at (j + 0.5, i + 0.5); x points right, y down. OpenCV puts pixel centres at integers, so
:func:`warp_image` shifts by half a pixel on both sides.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from jaxtyping import Bool, Float, Num

Affine = Float[np.ndarray, "2 3"]

_MIN_DIRECT_SCALE = 0.5
"""Below this scale a warp first area-averages the source, so that bilinear sampling does not alias."""


def transform_points(matrix: Affine, points: Float[np.ndarray, "*batch 2"]) -> Float[np.ndarray, "*batch 2"]:
    """Apply a (2, 3) affine map to points; float32 input stays float32, anything else becomes float64."""
    points = np.asarray(points)
    matrix = np.asarray(matrix, np.float64)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    return mapped.astype(np.float32 if points.dtype == np.float32 else np.float64)


def invert_affine(matrix: Affine) -> Affine:
    """The inverse of a (2, 3) affine map."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def compose_affine(outer: Affine, inner: Affine) -> Affine:
    """The map ``p -> outer(inner(p))``."""
    outer = np.asarray(outer, np.float64)
    inner = np.asarray(inner, np.float64)
    return np.concatenate([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], axis=1)


def scale_affine(sx: float, sy: float | None = None) -> Affine:
    """The map ``(x, y) -> (sx x, sy y)`` (``sy`` defaults to ``sx``)."""
    return np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0]])


def affine_scale(matrix: Affine) -> float:
    """Geometric-mean scale factor of the linear part (the zoom of a similarity)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W[, C]) array: area-averaging when shrinking, bilinear otherwise.

    OpenCV's resize maps pixel corners to corners, so coordinates scale exactly: x' = x * width / W.
    """
    if array.shape[:2] == (height, width):
        return array
    shrinking = height <= array.shape[0] and width <= array.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if array.ndim == 2 or array.shape[2] <= 4:
        return cv2.resize(array, (width, height), interpolation=interpolation)
    chunks = [cv2.resize(array[:, :, i:i + 4], (width, height), interpolation=interpolation).reshape(height, width, -1)
              for i in range(0, array.shape[2], 4)]  # OpenCV resizes at most 4 channels at a time
    return np.concatenate(chunks, axis=2)


def warp_image(image: Num[np.ndarray, "H W *C"], matrix: Affine, size: int | tuple[int, int],
               *, border: float | None = 255) -> Num[np.ndarray, "h w *C"]:
    """Resample ``image`` so that output pixel coordinates ``q`` equal ``matrix @ p`` of source coordinates ``p``.

    Bilinear, in ``image``'s dtype (uint8 or float32); outside the source the output is ``border`` (255: white
    for uint8), or with ``border=None`` the source's nearest edge pixel. When the map shrinks by more than 2x,
    only the needed part of the source is first area-averaged to about the output scale.

    Args:
      matrix: (2, 3) map from source pixel coordinates to output pixel coordinates (centre convention above).
      size: output side, or (width, height).
    """
    width, height = (size, size) if isinstance(size, int) else size
    matrix = np.asarray(matrix, np.float64)
    scale = affine_scale(matrix)
    if scale < _MIN_DIRECT_SCALE:
        image, to_small = _area_shrink(image, matrix, (width, height), scale)
        matrix = compose_affine(matrix, invert_affine(to_small))
    opencv_matrix = matrix.copy()
    opencv_matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    channels = 1 if image.ndim == 2 else image.shape[2]
    edge = dict(borderMode=cv2.BORDER_REPLICATE) if border is None else dict(
        borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * min(channels, 4))
    return cv2.warpAffine(image, opencv_matrix, (width, height), flags=cv2.INTER_LINEAR, **edge)


def inside_source(source_shape: tuple[int, ...], matrix: Affine, size: int | tuple[int, int]
                  ) -> Bool[np.ndarray, "h w"]:
    """Where :func:`warp_image` of an image of ``source_shape`` by ``matrix`` at ``size`` samples the image alone
    (True), not the border beyond it."""
    ones = np.full(source_shape[:2], 255, np.uint8)
    return warp_image(ones, matrix, size, border=0) == 255


def _area_shrink(image: np.ndarray, matrix: Affine, size: tuple[int, int],
                 scale: float) -> tuple[np.ndarray, Affine]:
    """Crop the part of ``image`` that the output sees and area-resize it by ``scale``.

    Returns the smaller image and the map from source pixel coordinates to its pixel coordinates.
    """
    width, height = size
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    seen = transform_points(invert_affine(matrix), corners)
    margin = 2.0 / scale
    x0, y0 = np.clip(np.floor(seen.min(axis=0) - margin), 0, np.array(image.shape[1::-1]) - 1).astype(int)
    x1 = int(min(np.ceil(seen[:, 0].max() + margin), image.shape[1]))
    y1 = int(min(np.ceil(seen[:, 1].max() + margin), image.shape[0]))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    part = image[y0:y1, x0:x1]
    small_w = max(1, round((x1 - x0) * scale))
    small_h = max(1, round((y1 - y0) * scale))
    small = cv2.resize(part, (small_w, small_h), interpolation=cv2.INTER_AREA)
    sx, sy = small_w / (x1 - x0), small_h / (y1 - y0)
    return small, np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])
