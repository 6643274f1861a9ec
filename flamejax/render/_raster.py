"""Tiled triangle rasterizer in pure JAX: hard (z-buffer) and soft (SoftRas) fragments with static shapes.

Two stages:

1. **Selection** (no gradients). Faces are binned into square screen tiles: each tile keeps the
   ``faces_per_tile`` best faces whose bounding box, grown by the blur radius, holds one of its pixel centres.
   Every pixel of the tile tests those candidates and keeps ``faces_per_pixel`` (K) of them: the faces covering
   the pixel centre, nearest first, then (when the blur radius is > 0) faces within the blur radius, closest
   first. Cost: pixels × ``faces_per_tile`` cheap affine tests and a top-K, in chunks of bounded memory.
2. **Fragments** (differentiable). For the K chosen faces only, barycentrics, depth and signed distance are
   recomputed from ``screen_verts`` in blocks of image rows, rematerialised in the backward pass: the backward
   pass costs pixels × K and its memory is that of one block.

Back-facing faces are rasterized like the others (the depth test hides them on a closed mesh); they only rank
after front-facing ones when a tile overflows. Faces crossing the near plane are dropped, not clipped.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Bool, Float, Int
from flamejax.render._eager import compiled_when_eager

_MIN_AREA = 1e-8
"""Faces whose doubled screen area (px²) is below this are skipped (they cover no pixel centre robustly)."""
_SQRT_EPS = 1e-12
_CHUNK_ELEMENTS = 1 << 20
"""Tile × face and pixel × candidate pairs evaluated at once during selection (bounds its memory)."""


@dataclasses.dataclass(frozen=True)
class RasterConfig:
    """Static rasterization settings (hashable: pass as a static argument to ``jax.jit``).

    Units: ``blur_radius`` is in pixels; ``sigma`` is in NDC² (NDC spans [-1, 1] over the image, so one pixel is
    ``2 / image_size``), the PyTorch3D / SoftRas convention: coverage = sigmoid(-sign · d²_ndc / sigma).
    """

    image_size: int = 256
    """Square image side H = W, pixels."""
    faces_per_pixel: int = 8
    """K: fragments kept per pixel. In soft mode, where more than K faces lie within the blur radius the farthest
    ones are left out, and the soft image jumps slightly where two of them swap places."""
    tile_size: int | None = None
    """Side of a screen tile, pixels. ``None``: ``max(2, image_size // 32)``, which keeps the number of faces per tile
    (and so the right ``faces_per_tile``) independent of the resolution for a mesh framed the same way."""
    faces_per_tile: int = 256
    """Candidate budget per tile. On overflow the tile keeps front-facing faces before back-facing ones and, within
    each group, those with the nearest vertex first; the dropped (farthest) faces are then missing in that tile.
    :func:`count_tile_faces` tells how many a mesh needs."""
    sigma: float = 1e-4
    """SoftRas sharpness of the silhouette, NDC² units (see class docstring)."""
    gamma: float = 1e-4
    """SoftRas depth-blending temperature on normalised inverse depth (zfar - z) / (zfar - znear)."""
    blur_radius: float | None = None
    """Pixels outside a face within which it still yields a (soft) fragment. ``None``: :attr:`soft_blur_radius`,
    derived from ``sigma``; ``0.0``: hard rasterization only (fewer candidates per tile, faster)."""
    znear: float = 0.01
    """Faces with any vertex at depth <= znear are dropped (no clipping), camera-space units (metres)."""
    zfar: float = 10.0
    """Faces with any vertex at depth >= zfar are dropped."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Colour behind the mesh in :func:`soft_blend` and :func:`render_mesh`."""
    cull_backfaces: bool = False
    """Drop faces seen from behind (clockwise on screen for FLAME's counter-clockwise winding). Off by default:
    a depth test resolves them, and they are needed where a mesh is open (the neck, an eyeball seen edge-on)."""
    hard_rasterizer: str = "zbuffer"
    """How :func:`flamejax.render.render_mesh` and :func:`shade_for_display` find the visible face in hard mode:
    ``"zbuffer"`` (:func:`rasterize_visible`: scatter-min z-buffer, no tiles, no candidate budget) or ``"tiled"``
    (:func:`rasterize` with K = 1, the tile binning soft mode uses). :func:`rasterize` itself is always tiled."""
    texture_filter: str = "bilinear"
    """How :func:`flamejax.render.render_mesh` looks up a texture: ``"bilinear"`` (the four texels nearest the
    pixel's centre, whatever the pixel spans) or ``"trilinear"`` (mip-mapped,
    :func:`flamejax.render.sample_texture_mipmapped`: a pixel that spans several texels takes, and passes its
    gradient to, their mean; it anti-aliases small renders of detailed textures). In the photometric stage
    trilinear lowered the landmark error on rendered heads (NME median 2.27 -> 2.17 %) at the same identity error,
    for about 1.3x the stage's time (benchmarks/RESULTS.md, photometric fit), so bilinear stays the default."""

    def __post_init__(self):
        object.__setattr__(self, "background", tuple(float(c) for c in self.background))
        if not 1 <= self.faces_per_pixel <= self.faces_per_tile:
            raise ValueError("need 1 <= faces_per_pixel <= faces_per_tile")
        if (self.tile_size is not None and self.tile_size < 1) or self.sigma <= 0 or self.gamma <= 0:
            raise ValueError("tile_size, sigma and gamma must be positive")
        if not 0 < self.znear < self.zfar:
            raise ValueError("need 0 < znear < zfar")
        if self.hard_rasterizer not in ("zbuffer", "tiled"):
            raise ValueError(f"hard_rasterizer must be 'zbuffer' or 'tiled', got {self.hard_rasterizer!r}")
        if self.texture_filter not in ("trilinear", "bilinear"):
            raise ValueError(f"texture_filter must be 'trilinear' or 'bilinear', got {self.texture_filter!r}")

    @property
    def tile(self) -> int:
        """The tile side in use, pixels."""
        return max(2, self.image_size // 32) if self.tile_size is None else self.tile_size

    @property
    def tiles(self) -> int:
        """Tiles per image side (the last row and column may reach past the image)."""
        return -(-self.image_size // self.tile)

    @property
    def soft_blur_radius(self) -> float:
        """Distance in pixels at which the soft coverage sigmoid(-d²/sigma) falls to 1e-4."""
        return math.sqrt(self.sigma * math.log(1.0 / 1e-4 - 1.0)) * self.image_size / 2.0

    @property
    def effective_blur_radius(self) -> float:
        """The blur radius in use, pixels."""
        return self.soft_blur_radius if self.blur_radius is None else float(self.blur_radius)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Fragments:
    """K fragments per pixel of one image.

    Order: faces covering the pixel centre first, nearest first (so slot 0 is the visible surface, the hard
    z-buffer result, wherever the pixel is covered), then faces within the blur radius, closest first; empty slots
    (``face_index == -1``) last. With ``blur_radius = 0`` this is plain nearest-first order.
    """

    face_index: Int[Array, "h w k"]
    """Face id, -1 where the slot is empty."""
    vertex_index: Int[Array, "h w k 3"]
    """The face's three vertex ids (0 in empty slots)."""
    bary: Float[Array, "h w k 3"]
    """Perspective-correct barycentrics (sum to 1; 0 in empty slots). Outside the face (soft fragments) they are
    the screen-space barycentrics clamped to the triangle, then perspective-corrected."""
    depth: Float[Array, "h w k"]
    """Camera depth at the pixel centre (same units as ``screen_verts[:, 2]``); -1 in empty slots."""
    signed_dist: Float[Array, "h w k"]
    """Euclidean distance in pixels from the pixel centre to the triangle's edges, negative inside; 0 in empty
    slots (mask with ``face_index >= 0``)."""

    @property
    def mask(self) -> Bool[Array, "h w k"]:
        return self.face_index >= 0

    @property
    def inside(self) -> Bool[Array, "h w k"]:
        """Fragments whose face covers the pixel centre."""
        return (self.face_index >= 0) & (self.signed_dist <= 0)


def _cross2(a: Float[Array, "... 2"], b: Float[Array, "... 2"]) -> Float[Array, "..."]:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _pixel_centres(rows: int, cols: int, dtype) -> Float[Array, "rows cols 2"]:
    v, u = jnp.meshgrid(jnp.arange(rows, dtype=dtype) + 0.5, jnp.arange(cols, dtype=dtype) + 0.5, indexing="ij")
    return jnp.stack([u, v], axis=-1)


def _face_data(screen_verts: Float[Array, "v 3"], faces: Int[Array, "f 3"], config: RasterConfig):
    tri = screen_verts[faces]
    xy, z = tri[..., :2], tri[..., 2]
    area2 = _cross2(xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0])
    front = area2 < 0
    valid = jnp.all((z > config.znear) & (z < config.zfar), axis=-1) & (jnp.abs(area2) > _MIN_AREA)
    if config.cull_backfaces:
        valid &= front
    return xy, z, area2, front, valid


def _map_in_chunks(fn, xs, chunk: int):
    """``jax.lax.map`` with ``batch_size=chunk``; a plain ``vmap`` when one chunk holds everything (compiles faster)."""
    if chunk >= jax.tree.leaves(xs)[0].shape[0]:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk)


def _span_overlap(lo, hi, first, tile: int, dilation: float) -> Bool[Array, "n f"]:
    """Whether [lo, hi] (per face, one axis), grown by ``dilation``, holds a pixel centre of the tiles that start at
    ``first`` (their first pixel centre)."""
    return (hi + dilation >= first[:, None]) & (lo - dilation <= first[:, None] + (tile - 1))


def _tile_candidates(xy, z, front, valid, config: RasterConfig) -> Int[Array, "tiles p"]:
    """Per tile, the ``faces_per_tile`` best faces whose dilated bounding box holds one of its pixel centres.

    Best = lowest tier, then nearest vertex. Tiers: front-facing faces whose own box touches the tile, front-facing
    ones within the blur radius only, then the same two for back-facing faces. One tile row at a time.
    """
    tile, n, r = config.tile, config.tiles, config.effective_blur_radius
    lo, hi = jnp.min(xy, axis=1), jnp.max(xy, axis=1)
    first = jnp.arange(n, dtype=xy.dtype) * tile + 0.5
    col_covers, col_near = (_span_overlap(lo[:, 0], hi[:, 0], first, tile, d) for d in (0.0, r))
    base = jnp.where(valid, -jnp.min(z, axis=1) - jnp.where(front, 0.0, 2.0 * config.zfar), -jnp.inf)
    budget = min(config.faces_per_tile, max(base.shape[0], config.faces_per_pixel))

    def row(row_first):
        row_covers, row_near = (_span_overlap(lo[:, 1], hi[:, 1], row_first[None], tile, d) for d in (0.0, r))
        key = jnp.where(row_near & col_near, base - jnp.where(row_covers & col_covers, 0.0, config.zfar), -jnp.inf)
        if key.shape[-1] < budget:
            key = jnp.pad(key, ((0, 0), (0, budget - key.shape[-1])), constant_values=-jnp.inf)
        best, idx = jax.lax.top_k(key, budget)
        return jnp.where(best > -jnp.inf, idx, -1).astype(jnp.int32)

    rows_per_step = max(1, min(n, _CHUNK_ELEMENTS // (n * base.shape[0])))
    return _map_in_chunks(row, first, rows_per_step).reshape(n * n, budget)


def _segment_dist2(pu, pv, au, av, bu, bv):
    eu, ev, ru, rv = bu - au, bv - av, pu - au, pv - av
    length2 = eu * eu + ev * ev
    t = jnp.clip((ru * eu + rv * ev) / jnp.where(length2 > 0, length2, 1.0), 0.0, 1.0)
    du, dv = ru - t * eu, rv - t * ev
    return du * du + dv * dv


def _affine_forms(xy: Float[Array, "p 3 2"], inv_z: Float[Array, "p 3"], area2: Float[Array, "p"]):
    """Coefficients (A, B, C), each (4, p), of value = A u + B v + C for the three screen-space barycentrics and the
    inverse depth (1/z is affine in screen space, which makes it perspective-correct)."""
    start, end = jnp.roll(xy, -1, axis=-2), jnp.roll(xy, -2, axis=-2)
    e = (end - start) / area2[:, None, None]
    a, b = -e[..., 1], e[..., 0]
    c = e[..., 1] * start[..., 0] - e[..., 0] * start[..., 1]
    coeffs = jnp.stack([a, b, c])
    depth = coeffs[..., 0] * inv_z[:, 0] + coeffs[..., 1] * inv_z[:, 1] + coeffs[..., 2] * inv_z[:, 2]
    return tuple(jnp.concatenate([coeffs, depth[..., None]], axis=-1).transpose(0, 2, 1))


def _select_in_tile(cand, origin, xy, inv_z, area2, config: RasterConfig):
    """Face ids (T², K) and inside flags for the pixels of one tile, from its candidates.

    Keys: faces covering the pixel rank by depth (key -1/z < 0), then faces passing within the blur radius rank by
    their squared distance to the pixel centre (key >= 0).
    """
    tile = config.tile
    r = config.effective_blur_radius
    ok = cand >= 0
    c = jnp.where(ok, cand, 0)
    local = xy[c] - origin
    a, b, cc = _affine_forms(local, inv_z[c], area2[c])
    centres = _pixel_centres(tile, tile, xy.dtype).reshape(-1, 2)
    pu, pv = centres[:, :1], centres[:, 1:]
    w0, w1, w2, inv_depth = (a[i] * pu + b[i] * pv + cc[i] for i in range(4))
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    if r > 0:
        (u0, u1, u2), (v0, v1, v2) = local[..., 0].T, local[..., 1].T
        dist2 = jnp.minimum(
            jnp.minimum(_segment_dist2(pu, pv, u0, v0, u1, v1), _segment_dist2(pu, pv, u1, v1, u2, v2)),
            _segment_dist2(pu, pv, u2, v2, u0, v0),
        )
        key, covered = jnp.where(inside, -inv_depth, dist2), inside | (dist2 <= r * r)
    else:
        key, covered = -inv_depth, inside
    neg_key, slot = jax.lax.top_k(jnp.where(ok & covered, -key, -jnp.inf), config.faces_per_pixel)
    found = neg_key > -jnp.inf
    return jnp.where(found, c[slot], -1), found & (neg_key > 0)


def select_faces(
    screen_verts: Float[Array, "v 3"], faces: Int[Array, "f 3"], config: RasterConfig
) -> tuple[Int[Array, "h w k"], Bool[Array, "h w k"]]:
    """Stage 1 (no gradients): the K faces each pixel keeps, in :class:`Fragments` order, and which cover it."""
    screen_verts = jax.lax.stop_gradient(screen_verts)
    xy, z, area2, front, valid = _face_data(screen_verts, faces, config)
    cand = _tile_candidates(xy, z, front, valid, config)
    tile, n, size = config.tile, config.tiles, config.image_size
    ty, tx = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij")
    origins = (jnp.stack([tx, ty], axis=-1).reshape(-1, 2) * tile).astype(xy.dtype)
    inv_z = 1.0 / jnp.where(valid[:, None], z, 1.0)
    chunk = max(1, min(n * n, _CHUNK_ELEMENTS // (tile * tile * cand.shape[-1])))
    face_idx, inside = _map_in_chunks(
        lambda a: _select_in_tile(a[0], a[1], xy, inv_z, area2, config), (cand, origins), chunk
    )

    def untile(x):
        x = x.reshape(n, n, tile, tile, -1)
        return x.transpose(0, 2, 1, 3, 4).reshape(n * tile, n * tile, -1)[:size, :size]

    return untile(face_idx), untile(inside)


def gather_columns(table: Float[Array, "f c"], face_index: Int[Array, "*pixels"]) -> list[Float[Array, "*pixels"]]:
    """Each pixel's row of a per-face table (row 0 where ``face_index`` is -1), split into its columns.

    One gather of whole rows: its transpose is one scatter-add of a row per pixel. Nine gathers of one column each
    made nine scatters whose updates of a batch all land on the same few thousand faces: the renderer's backward
    pass took 2.2x as long on a GPU (one mesh for the batch; 1.24x with one per image), as long on a CPU
    (benchmarks/RESULTS.md, accelerator check)."""
    rows = table[jnp.maximum(face_index, 0)]
    return [rows[..., i] for i in range(table.shape[1])]


def fragments_in_rows(
    screen_verts: Float[Array, "v 3"],
    faces: Int[Array, "f 3"],
    face_index: Int[Array, "rows w k"],
    inside: Bool[Array, "rows w k"],
    row_centres: Float[Array, "rows"],
) -> Fragments:
    """Stage 2 for a block of image rows (v of their pixel centres given): the differentiable fragment values."""
    valid = face_index >= 0
    safe_index = jnp.where(valid, face_index, 0)
    u0, v0, z0, u1, v1, z1, u2, v2, z2 = gather_columns(screen_verts[faces].reshape(faces.shape[0], 9), face_index)
    pu = jnp.arange(face_index.shape[1], dtype=screen_verts.dtype)[None, :, None] + 0.5
    pv = row_centres.astype(screen_verts.dtype)[:, None, None]
    e0 = (u2 - u1) * (pv - v1) - (v2 - v1) * (pu - u1)
    e1 = (u0 - u2) * (pv - v2) - (v0 - v2) * (pu - u2)
    e2 = (u1 - u0) * (pv - v0) - (v1 - v0) * (pu - u0)
    area2 = e0 + e1 + e2
    area2 = jnp.where(valid & (jnp.abs(area2) > _MIN_AREA), area2, 1.0)
    w = [e / area2 for e in (e0, e1, e2)]
    clamped = [jnp.maximum(x, 0.0) for x in w]
    total = clamped[0] + clamped[1] + clamped[2]
    total = jnp.where(total > 0, total, 1.0)
    w = [jnp.where(inside, x, c / total) for x, c in zip(w, clamped)]
    w_over_z = [x / jnp.where(valid, z, 1.0) for x, z in zip(w, (z0, z1, z2))]
    inv_depth = w_over_z[0] + w_over_z[1] + w_over_z[2]
    inv_depth = jnp.where(valid & (inv_depth > 0), inv_depth, 1.0)
    dist2 = jnp.minimum(
        jnp.minimum(_segment_dist2(pu, pv, u0, v0, u1, v1), _segment_dist2(pu, pv, u1, v1, u2, v2)),
        _segment_dist2(pu, pv, u2, v2, u0, v0),
    )
    dist = jnp.sqrt(dist2 + _SQRT_EPS)
    return Fragments(
        face_index=face_index,
        vertex_index=jnp.where(valid[..., None], faces[safe_index], 0).astype(jnp.int32),
        bary=jnp.stack([jnp.where(valid, x / inv_depth, 0.0) for x in w_over_z], axis=-1),
        depth=jnp.where(valid, 1.0 / inv_depth, -1.0),
        signed_dist=jnp.where(valid, jnp.where(inside, -dist, dist), 0.0),
    )


def map_row_blocks(fn, face_index: Int[Array, "h w k"], inside: Bool[Array, "h w k"], max_fragments: int = 1 << 17):
    """``fn(face_index, inside, row_centres)`` over blocks of image rows, one after the other, rematerialised in
    the backward pass: memory scales with the block (about ``max_fragments`` fragments), not the image."""
    h, w, k = face_index.shape
    rows = max(d for d in range(1, h + 1) if h % d == 0 and (d * w * k <= max_fragments or d == 1))
    blocks = lambda x: x.reshape(h // rows, rows, *x.shape[1:])
    centres = jnp.arange(h, dtype=jnp.float32) + 0.5
    if rows == h:
        return fn(face_index, inside, centres)
    out = jax.lax.map(lambda a: jax.checkpoint(fn)(*a), (blocks(face_index), blocks(inside), blocks(centres)))
    return jax.tree.map(lambda y: y.reshape(h, *y.shape[2:]), out)


@compiled_when_eager("config")
def rasterize(screen_verts: Float[Array, "v 3"], faces: Int[Array, "f 3"], config: RasterConfig) -> Fragments:
    """Rasterize one triangle mesh to ``config.image_size``² fragments.

    Args:
      screen_verts: (u px right, v px down, camera depth > 0) per vertex, e.g. from
        :func:`flamejax.camera.project`. Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).
      faces: vertex ids per triangle, any winding (see ``RasterConfig.cull_backfaces``).
      config: static settings.

    Returns:
      :class:`Fragments`, K per pixel: the faces covering the pixel centre nearest first (slot 0 is the visible
      face wherever the pixel is covered), then faces passing within the blur radius, closest first.
      Barycentrics, depth and signed distance are differentiable with respect to ``screen_verts``; which faces are
      chosen is not. Single image: ``jax.vmap`` for a batch.
    """
    face_index, inside = select_faces(screen_verts, faces, config)
    return map_row_blocks(
        lambda fi, ins, rows: fragments_in_rows(screen_verts, faces, fi, ins, rows), face_index, inside
    )


def count_tile_faces(
    screen_verts: Float[Array, "v 3"], faces: Int[Array, "f 3"], config: RasterConfig
) -> Int[Array, "n n"]:
    """Faces touching each tile (after culling and blur dilation): keep the maximum below ``faces_per_tile``."""
    xy, _, _, _, valid = _face_data(jax.lax.stop_gradient(screen_verts), faces, config)
    first = jnp.arange(config.tiles, dtype=xy.dtype) * config.tile + 0.5
    rows, cols = (
        _span_overlap(jnp.min(xy[..., i], axis=1), jnp.max(xy[..., i], axis=1), first, config.tile,
                      config.effective_blur_radius).astype(jnp.int32)
        for i in (1, 0)
    )
    return jnp.einsum("yf,xf->yx", rows * valid, cols)
