"""Vertex normals and 9-coefficient spherical-harmonics (SH) shading, as in DECA and flame-head-tracker.

``image = albedo * sh_shading(normal, coeffs)``, with head-space unit normals and coefficients (9, 3): one set of
nine real SH bands (l <= 2) per colour channel. The basis functions, in order, are
``1, x, y, z, xy, xz, yz, x² - y², 3z² - 1`` times the irradiance normalisation factors of
:data:`SH_CONSTANTS` (Ramamoorthi & Hanrahan 2001, the numbers DECA's coefficients are fitted with).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int

SH_CONSTANTS = np.array(
    [
        1.0 / math.sqrt(4.0 * math.pi),
        *[2.0 * math.pi / 3.0 * math.sqrt(3.0 / (4.0 * math.pi))] * 3,
        *[math.pi / 4.0 * 3.0 * math.sqrt(5.0 / (12.0 * math.pi))] * 3,
        math.pi / 4.0 * 1.5 * math.sqrt(5.0 / (12.0 * math.pi)),
        math.pi / 4.0 * 0.5 * math.sqrt(5.0 / (4.0 * math.pi)),
    ]
)
"""Normalisation of the nine SH basis functions (band 0, band 1 ×3, band 2 ×5)."""


def _unit(v: Float[Array, "... 3"], eps: float = 1e-12) -> Float[Array, "... 3"]:
    norm2 = v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2]  # not a reduction: faster on CPU
    return v / jnp.sqrt(norm2 + eps)[..., None]


def face_normals(verts: Float[Array, "v 3"], faces: Int[Array, "f 3"]) -> Float[Array, "f 3"]:
    """Unnormalised face normals, length = twice the area; outward for counter-clockwise faces (FLAME's)."""
    tri = verts[faces]
    return jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(verts: Float[Array, "v 3"], faces: Int[Array, "f 3"]) -> Float[Array, "v 3"]:
    """Area-weighted unit vertex normals (a vertex in no face gets (0, 0, 0))."""
    n = face_normals(verts, faces)
    summed = jax.ops.segment_sum(jnp.repeat(n, 3, axis=0), faces.reshape(-1), num_segments=verts.shape[0])
    return _unit(summed)


def _sh_terms(normals: Float[Array, "... 3"]) -> list[Float[Array, "..."]]:
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    terms = [jnp.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0]
    return [float(c) * t for c, t in zip(SH_CONSTANTS, terms)]


def sh_basis(normals: Float[Array, "... 3"]) -> Float[Array, "... 9"]:
    """The nine normalised SH basis functions at unit ``normals``."""
    return jnp.stack(_sh_terms(normals), axis=-1)


def sh_shading(normals: Float[Array, "... 3"], sh_coeffs: Float[Array, "9 3"]) -> Float[Array, "... 3"]:
    """RGB irradiance (multiply with albedo) at unit ``normals`` under lighting ``sh_coeffs`` (9 bands × RGB)."""
    return sum(t[..., None] * c for t, c in zip(_sh_terms(normals), sh_coeffs))
