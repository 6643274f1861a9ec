"""The input crops of the two initialisation networks, exactly as their authors' code makes them.

Pixel convention (flamejax's, see ``flamejax.perception``): pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5); x right, y down. Landmarks and the returned ``to_crop`` maps use it. The reference code
(skimage / OpenCV) puts pixel centres at integers; the formulas below are theirs, converted by half a pixel.

**DECA** (yfeng95/DECA ``decalib/datasets/datasets.py``, ``TestData`` with 68-point boxes, type ``kpt68``)::

    left, right, top, bottom = min/max of the 68 points
    old_size = (right - left + bottom - top) / 2 * 1.1          # 1.1 x mean(width, height)
    centre   = ((left + right) / 2, (top + bottom) / 2)
    size     = int(old_size * 1.25)                              # truncated to whole pixels, as DECA does
    similarity: square [centre - size/2, centre + size/2] -> its corners on output pixel centres 0 and 223

then bilinear resampling (skimage ``warp``, order 1, zero outside the photo), RGB / 255 -> [0, 1].

**MICA** (Zielon/MICA ``datasets/creation/util.py`` ``get_arcface_input`` -> insightface ``norm_crop``):
the least-squares similarity (Umeyama; scikit-image ``SimilarityTransform.estimate``) from five points -
eye centres (means of 68-points 36-41 and 42-47), nose tip 30, mouth corners 48 and 54 - to the ArcFace
112x112 template :data:`ARCFACE_TEMPLATE`, bilinear ``cv2.warpAffine`` with a black border, then
``(RGB - 127.5) / 127.5`` (``cv2.dnn.blobFromImages(..., 1/127.5, mean 127.5, swapRB=True)``) -> [-1, 1].

Deviation, both nets: the sampling here is exact bilinear in float32; OpenCV quantises sub-pixel positions
to 1/32 px and rounds MICA's uint8 crop before scaling (differences below one grey level).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, UInt8

Affine = Float[np.ndarray, "2 3"]

DECA_CROP_SIZE = 224
DECA_BOX_SCALE = 1.25
"""DECA's ``scale`` of the square crop (``TestData(scale=1.25)``)."""
DECA_KPT_ENLARGE = 1.1
"""DECA's enlargement of a 68-point box (``bbox2point(type='kpt68')``)."""

MICA_CROP_SIZE = 112
ARCFACE_TEMPLATE: Float[np.ndarray, "5 2"] = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
"""insightface ``arcface_dst`` for 112x112 crops, in insightface's convention (pixel centres at integers):
left eye, right eye (as seen in the image), nose tip, left and right mouth corners."""
ARCFACE_TEMPLATE_PX: Float[np.ndarray, "5 2"] = ARCFACE_TEMPLATE + 0.5
"""The template in flamejax's pixel convention (what ``to_crop`` maps the five points onto)."""

_LEFT_EYE_68 = slice(36, 42)
_RIGHT_EYE_68 = slice(42, 48)
_NOSE_TIP_68, _MOUTH_LEFT_68, _MOUTH_RIGHT_68 = 30, 48, 54


def five_points(lmk68: Float[np.ndarray, "68 2"]) -> Float[np.ndarray, "5 2"]:
    """ArcFace's five points from iBUG 68 landmarks: eye centres (36-41, 42-47), nose tip 30, mouth 48, 54."""
    lmk68 = _points(lmk68, 68, "lmk68")
    return np.stack([lmk68[_LEFT_EYE_68].mean(0), lmk68[_RIGHT_EYE_68].mean(0),
                     lmk68[_NOSE_TIP_68], lmk68[_MOUTH_LEFT_68], lmk68[_MOUTH_RIGHT_68]])


def similarity_lsq(src: Float[np.ndarray, "K 2"], dst: Float[np.ndarray, "K 2"]) -> Affine:
    """The similarity (rotation, uniform scale, translation; no reflection) minimising ``sum |M src - dst|^2``.

    In 2-D this closed form equals Umeyama's estimate (scikit-image ``SimilarityTransform.estimate``).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    s = src - src.mean(0)
    d = dst - dst.mean(0)
    norm = float((s ** 2).sum())
    if norm <= 1e-12:
        raise ValueError("similarity_lsq: the source points coincide")
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (dst.mean(0) - linear @ src.mean(0))[:, None]], axis=1)


def deca_crop_transform(lmk68: Float[np.ndarray, "68 2"]) -> Affine:
    """DECA's image -> 224x224 crop map from the 68-point box (formula in the module docstring)."""
    lmk68 = _points(lmk68, 68, "lmk68")
    (left, top), (right, bottom) = lmk68.min(0), lmk68.max(0)
    old_size = (right - left + bottom - top) / 2 * DECA_KPT_ENLARGE
    size = int(old_size * DECA_BOX_SCALE)
    if size < 1:
        raise ValueError(f"deca_crop: the landmark box is degenerate ({right - left:.3g} x {bottom - top:.3g} px)")
    corner = np.array([(left + right) / 2, (top + bottom) / 2]) - size / 2
    k = (DECA_CROP_SIZE - 1) / size
    # DECA: corner -> 0 in integer-centred pixels; in flamejax's convention x' = k (x - corner) + 0.5.
    return np.array([[k, 0.0, 0.5 - k * corner[0]], [0.0, k, 0.5 - k * corner[1]]])


def mica_crop_transform(landmarks: Float[np.ndarray, "K 2"]) -> Affine:
    """ArcFace's image -> 112x112 crop map from 68 landmarks, or from the five points in template order."""
    landmarks = np.asarray(landmarks, np.float64)
    five = _points(landmarks, 5, "landmarks") if landmarks.shape == (5, 2) else five_points(landmarks)
    return similarity_lsq(five, ARCFACE_TEMPLATE_PX)


def deca_crop(image: UInt8[np.ndarray, "H W 3"], lmk68: Float[np.ndarray, "68 2"]
              ) -> tuple[Float[np.ndarray, "224 224 3"], Affine]:
    """DECA's input: the square around the 68-point box, 224x224, RGB float32 in [0, 1].

    Returns ``(crop, to_crop)`` where ``to_crop`` maps image pixel coordinates to crop pixel coordinates.
    """
    to_crop = deca_crop_transform(lmk68)
    return warp_bilinear(image, to_crop, DECA_CROP_SIZE) / np.float32(255.0), to_crop


def mica_crop(image: UInt8[np.ndarray, "H W 3"], landmarks: Float[np.ndarray, "K 2"]
              ) -> tuple[Float[np.ndarray, "112 112 3"], Affine]:
    """MICA's (ArcFace's) input: five-point aligned 112x112 crop, RGB float32 in [-1, 1].

    Args:
      landmarks: (68, 2) iBUG points, or (5, 2) points in :data:`ARCFACE_TEMPLATE` order.

    Returns ``(crop, to_crop)``; ``to_crop`` maps image pixel coordinates to crop pixel coordinates.
    """
    to_crop = mica_crop_transform(landmarks)
    crop = warp_bilinear(image, to_crop, MICA_CROP_SIZE)
    return (crop - np.float32(127.5)) / np.float32(127.5), to_crop


def warp_bilinear(image: UInt8[np.ndarray, "H W 3"], to_crop: Affine, size: int) -> Float[np.ndarray, "size size 3"]:
    """Bilinear resampling of ``image`` into a ``size`` x ``size`` crop, in image units (float32).

    Output pixel centre ``q`` takes the image value at ``to_crop^-1 q``; taps that fall outside the image count
    as 0 (the black border of skimage's ``mode='constant'`` and OpenCV's ``BORDER_CONSTANT``). No anti-aliasing,
    like the networks' own preprocessing.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    to_crop = np.asarray(to_crop, np.float64)
    inverse = np.linalg.inv(np.vstack([to_crop, [0.0, 0.0, 1.0]]))[:2]
    centres = np.arange(size) + 0.5
    qx, qy = np.meshgrid(centres, centres)
    # source positions in integer-centred pixel units, where tap (i, j) sits at (j, i)
    sx = inverse[0, 0] * qx + inverse[0, 1] * qy + inverse[0, 2] - 0.5
    sy = inverse[1, 0] * qx + inverse[1, 1] * qy + inverse[1, 2] - 0.5
    x0, y0 = np.floor(sx).astype(np.intp), np.floor(sy).astype(np.intp)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    out = np.zeros((size, size, 3), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        rows = y0 + dy
        rows_inside = (rows >= 0) & (rows < height)
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cols = x0 + dx
            weight = wx * wy * (rows_inside & (cols >= 0) & (cols < width))
            out += weight[..., None] * image[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]
    return out


def _points(points: np.ndarray, count: int, name: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.shape != (count, 2):
        raise ValueError(f"{name}: expected ({count}, 2) pixel coordinates, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name}: landmarks contain NaN or infinity")
    return points
