"""What each FLAME face is, for the photometric loss: face skin, forehead skin (hair may cover it), eyeball, or a
part the model does not describe in a photograph (scalp and hair, ears, neck, the back of the head).

Regions come from FLAME's vertex masks (``FLAME_masks.pkl``): a face belongs to a region when all three of its
vertices do. They are stored per face on :class:`flamejax.render.UVLayout` (``face_region``), so that a pixel's
region is one lookup of the face the z-buffer found there, and a texel's region one lookup of the face the UV
layout puts there (:func:`texel_regions`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Int
from flamejax.flame._masks import load_vertex_masks
from flamejax.render._raster import RasterConfig
from flamejax.render._zbuffer import visible_faces

logger = logging.getLogger(__name__)

REGION_OTHER, REGION_FACE, REGION_FOREHEAD, REGION_EYEBALL = 0, 1, 2, 3
"""Face labels: not modelled in photographs (hair, ears, neck, back), face skin, forehead skin, eyeball."""


def face_regions(faces: np.ndarray, masks: Mapping[str, np.ndarray]) -> Int[np.ndarray, "f"]:
    """Per-face region label from FLAME's vertex masks (keys ``face``, ``forehead``, ``left_eyeball``,
    ``right_eyeball``); later regions win: eyeball over forehead over face."""
    faces = np.asarray(faces)
    n_vertices = int(faces.max()) + 1
    labels = np.full(len(faces), REGION_OTHER, np.int32)
    for region, keys in ((REGION_FACE, ("face",)), (REGION_FOREHEAD, ("forehead",)),
                         (REGION_EYEBALL, ("left_eyeball", "right_eyeball"))):
        member = np.zeros(n_vertices, bool)
        for key in keys:
            ids = np.asarray(masks[key], np.int64)
            member[ids[ids < n_vertices]] = True
        labels[np.all(member[faces], axis=1)] = region
    return labels


def load_face_regions(faces: np.ndarray, path: str | Path | None = None) -> Int[np.ndarray, "f"] | None:
    """:func:`face_regions` from the ``flame_masks`` file, or ``None`` (with a warning) when there is none or it
    lacks a region."""
    masks = load_vertex_masks(path)
    if masks is None:
        logger.warning("no FLAME_masks.pkl found: the photometric loss cannot leave out hair, ears and neck, "
                       "nor treat the eyeballs apart; add it to the weights folder")
        return None
    missing = [k for k in ("face", "forehead", "left_eyeball", "right_eyeball") if k not in masks]
    if missing:
        logger.warning("%s: no %s mask; photometric regions not used", masks.path, ", ".join(missing))
        return None
    return face_regions(faces, masks)


def texel_regions(uv: jax.Array, face_uv_index: jax.Array, face_region: jax.Array, size: int) -> Int[Array, "s s"]:
    """Region of every texel of a ``size``² texture: that of the face whose UV triangle covers the texel centre
    (``REGION_OTHER`` where none does). Uses the z-buffer rasterizer in UV space (no gradients)."""
    screen = jnp.concatenate([uv * size, jnp.ones((uv.shape[0], 1), uv.dtype)], axis=-1)
    config = RasterConfig(image_size=size, faces_per_pixel=1, blur_radius=0.0, cull_backfaces=False)
    face = visible_faces(jax.lax.stop_gradient(screen), face_uv_index, config)
    return jnp.where(face >= 0, face_region[jnp.maximum(face, 0)], REGION_OTHER)
