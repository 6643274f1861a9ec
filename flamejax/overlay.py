"""Overlay pictures: the shaded fitted mesh blended on the aligned crop and on the original photograph,
with target (green) and fitted (red) landmarks drawn."""

from __future__ import annotations

import functools

import cv2
import jax
import numpy as np

from flamejax import camera as cam
from flamejax.camera import Camera
from flamejax.flame import FlameModel

TARGET_COLOR = (40, 220, 40)
FITTED_COLOR = (230, 40, 40)
MESH_OPACITY = 0.6


@functools.partial(jax.jit, static_argnames=("image_size",))
def _shade(vertices, faces, camera, image_size: int):
    from flamejax.render import RasterConfig, shade_for_display

    return shade_for_display(vertices, faces, camera, RasterConfig(image_size=image_size))


def blend_mesh(photo: np.ndarray, rgba: np.ndarray, opacity: float = MESH_OPACITY) -> np.ndarray:
    """Alpha-blend an RGBA float render over an RGB uint8 photo of the same size."""
    alpha = rgba[..., 3:4] * opacity
    out = photo.astype(np.float32) / 255.0 * (1.0 - alpha) + rgba[..., :3] * alpha
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, color, radius: int) -> np.ndarray:
    out = np.ascontiguousarray(image)
    for x, y in np.asarray(points, np.float64):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x - 0.5)), int(round(y - 0.5))), radius, color, -1, lineType=cv2.LINE_AA)
    return out


def overlay_picture(vertices: np.ndarray, camera: Camera, lmk68: np.ndarray, item, model: FlameModel,
                    original: np.ndarray | None = None) -> np.ndarray:
    """(H, 2W, 3) uint8: the mesh ``vertices`` (5023, 3) seen by ``camera`` and the fitted 68 points ``lmk68`` (NDC
    of the fit's image) over ``item``'s aligned crop (left) and the original photograph (right, resized to the crop
    height), MediaPipe's points beside them."""
    from flamejax.perception import transform_points, warp_image

    crop = item.crop
    size = crop.shape[0]
    rgba = np.asarray(_shade(vertices, model.faces, camera, size))
    left = blend_mesh(crop, rgba)
    crop_scale = size / item.image.shape[0]
    fitted = np.asarray(cam.ndc_to_pixels(lmk68, size))
    left = draw_points(left, item.lmk68 * crop_scale, TARGET_COLOR, 3)
    left = draw_points(left, fitted, FITTED_COLOR, 2)

    height, width = item.original_size
    original = _original_rgb(item, height, width) if original is None else original
    warped = warp_image(rgba, item.crop_to_original, (width, height), border=0)
    right = blend_mesh(original, warped)
    right = draw_points(right, transform_points(item.crop_to_original, item.lmk68 * crop_scale), TARGET_COLOR,
                        max(2, width // 300))
    right = draw_points(right, transform_points(item.crop_to_original, fitted), FITTED_COLOR, max(1, width // 400))
    scale = size / height
    right = cv2.resize(right, (max(1, int(round(width * scale))), size), interpolation=cv2.INTER_AREA)
    return np.concatenate([left, right], axis=1)


def _original_rgb(item, height: int, width: int) -> np.ndarray:
    from flamejax.perception import warp_image

    # Without the photograph itself, paint the crop back into a white canvas of the original size.
    return warp_image(item.crop, item.crop_to_original, (width, height), border=255)
