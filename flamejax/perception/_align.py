"""FFHQ-style face alignment: an oriented square around eyes and mouth, warped straight to the output size."""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.perception._transform import Affine, invert_affine, warp_image

ALIGN_SCALE = 1.3
"""Half side of the crop in units of max(2 |eye->eye|, 1.8 |eye->mouth|) (the reference's 1.3)."""


@dataclasses.dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned square crop and the similarity maps between it and the photograph it came from."""

    image: UInt8[np.ndarray, "S S 3"]
    """The crop, white where it extends past the photograph."""
    to_crop: Affine
    """(2, 3) similarity: original pixel coordinates -> crop pixel coordinates."""
    to_original: Affine
    """(2, 3) similarity: crop pixel coordinates -> original pixel coordinates."""

    @property
    def size(self) -> int:
        return self.image.shape[0]


def alignment_transform(lmk68: Float[np.ndarray, "68 2"], output_size: int = 512,
                        scale: float = ALIGN_SCALE) -> Affine:
    """The (2, 3) similarity from photograph pixels to an ``output_size`` FFHQ-aligned crop.

    FFHQ construction: eye centres are the means of iBUG points 36-41 and 42-47, the mouth centre the mean
    of 48 and 54; the crop centre is ``eye_avg + 0.1 (mouth - eye_avg)``; its horizontal axis points along
    ``eye_to_eye - rot90(eye_to_mouth)`` (the eye axis, steadied by the eye-mouth line) and its half side is
    ``scale * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``.
    """
    lmk68 = np.asarray(lmk68, np.float64)
    eye_image_left = lmk68[36:42].mean(axis=0)
    eye_image_right = lmk68[42:48].mean(axis=0)
    eye_avg = (eye_image_left + eye_image_right) / 2
    eye_to_eye = eye_image_right - eye_image_left
    eye_to_mouth = (lmk68[48] + lmk68[54]) / 2 - eye_avg
    x_axis = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = np.hypot(*x_axis)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("degenerate landmarks: eyes and mouth coincide, no alignment is defined")
    half_x = x_axis / norm * scale * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    half_y = np.array([-half_x[1], half_x[0]])
    top_left = eye_avg + 0.1 * eye_to_mouth - half_x - half_y
    to_original = np.column_stack([2 * half_x / output_size, 2 * half_y / output_size, top_left])
    return invert_affine(to_original)


def align_face(image: UInt8[np.ndarray, "H W 3"], lmk68: Float[np.ndarray, "68 2"], output_size: int = 512,
               *, scale: float = ALIGN_SCALE) -> AlignedFace:
    """Crop ``image`` to the FFHQ-aligned square of ``lmk68`` (see :func:`alignment_transform`), white-padded.

    The crop is sampled once, directly at ``output_size`` (area-averaged first when it shrinks by more than
    2x), so ``to_crop`` / ``to_original`` are exact.
    """
    to_crop = alignment_transform(lmk68, output_size, scale)
    return AlignedFace(image=warp_image(image, to_crop, output_size, border=255), to_crop=to_crop,
                       to_original=invert_affine(to_crop))
