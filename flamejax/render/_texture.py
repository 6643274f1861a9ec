"""FLAME UV layout, bilinear and trilinear (mip-mapped) texture sampling and the optional albedo (texture PCA) model.

UV convention (everywhere in flamejax): ``uv = (u, v)`` in [0, 1]² with **v pointing down**, like image rows:
``uv = (0, 0)`` is the top-left corner of the texture image, texel (row i, col j) has its centre at
``((j + 0.5) / W, (i + 0.5) / H)``. OBJ files (and trimesh) store v pointing up: :func:`flip_uv_v` is the one
conversion between the two (``v_obj = 1 - v_image``, its own inverse); :func:`load_uv_layout` and every mesh
exporter use it, so a texture PNG written row by row lines up with the OBJ's ``vt`` as usual.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.files import CorruptFileError, find_file
from flamejax.render._regions import REGION_FACE, REGION_FOREHEAD, load_face_regions, texel_regions

logger = logging.getLogger(__name__)

_ALBEDO_KEYS = {("MU", "PC"): 1.0, ("mean", "tex_dir"): 1.0 / 255.0}
"""Mean / basis keys of the two albedo files and the factor that brings them to [0, 1]:
FLAME_albedo_from_BFM.npz stores [0, 1], the FLAME texture space FLAME_texture.npz stores [0, 255]."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UVLayout:
    """Texture coordinates of a mesh, per face corner (seams give a vertex several uvs)."""

    uv: Float[Array, "t 2"]
    """Texture coordinates, image convention (v down), in [0, 1]."""
    face_uv_index: Int[Array, "f 3"]
    """Row of ``uv`` for each face corner."""
    faces: Int[Array, "f 3"]
    """Vertex ids of each face as the OBJ states them (FLAME's ``f``), to check that the topology matches."""
    face_region: Int[Array, "f"] | None = None
    """Region label of each face (``flamejax.render.REGION_*``: face skin, forehead, eyeball, or not modelled),
    or ``None`` when unknown: the photometric loss then counts every face and has no separate eye albedo."""
    mirror_u: float | None = dataclasses.field(default=None, metadata=dict(static=True))
    """The u about which the layout is mirror-symmetric (a vertex and its left-right mirror have uvs ``u`` and
    ``2 * mirror_u - u`` at one v), or ``None`` when it is not or is unknown (see :func:`uv_mirror_axis`)."""

    def face_uvs(self) -> Float[Array, "f 3 2"]:
        """Per face-corner uvs, ready for :func:`flamejax.render.interpolate`."""
        return self.uv[self.face_uv_index]

    def texel_region(self, size: int) -> Int[Array, "size size"] | None:
        """The region of every texel of a ``size``² texture (:func:`texel_regions`), or ``None`` without
        ``face_region``."""
        if self.face_region is None:
            return None
        return texel_regions(self.uv, self.face_uv_index, self.face_region, size)


def flip_uv_v(uv: Float[Array, "... 2"]) -> Float[Array, "... 2"]:
    """UVs between flamejax's v-down convention and the v-up convention of OBJ files and trimesh (either way)."""
    return uv * np.array([1.0, -1.0], np.float32) + np.array([0.0, 1.0], np.float32)


def _corner_ids(token: str) -> tuple[int, int]:
    parts = token.split("/")
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"face corner {token!r} has no texture coordinate (expected v/vt or v/vt/vn)")
    return int(parts[0]), int(parts[1])


def uv_mirror_axis(vertices: np.ndarray, uv: np.ndarray, corners: np.ndarray, agree: float = 0.6) -> float | None:
    """The u axis of a left-right mirrored UV layout, from the mesh the layout belongs to, or ``None``.

    ``vertices`` (v, 3): the mesh, symmetric about a plane ``x = const`` (FLAME's template, or a scaled and shifted
    copy of it as in FLAME's UV OBJ); ``corners`` (f, 3, 2): vertex and uv row of each face corner. Each vertex
    is paired with the vertex nearest to its mirror image; the axis is the median of the pairs' mean u. ``None``
    unless the mesh is symmetric (pairs within 1 % of its width) and at least ``agree`` of the pairs sit on the
    axis and at one v within one texel of a 256² texture (seams make the rest).
    """
    from scipy.spatial import cKDTree

    if len(vertices) < 3 or not len(corners):
        return None
    centre = np.median(vertices[:, 0])
    distance, pair = cKDTree(vertices).query(vertices * [-1.0, 1.0, 1.0] + [2.0 * centre, 0.0, 0.0])
    vertex_uv = np.full((len(vertices), 2), np.nan)
    vertex_uv[corners[..., 0].ravel()] = uv[corners[..., 1].ravel()]
    matched = (distance < 0.01 * np.ptp(vertices[:, 0])) & np.isfinite(vertex_uv[:, 0]) & np.isfinite(
        vertex_uv[pair, 0])
    if matched.mean() < agree:
        return None
    middle = (vertex_uv[matched, 0] + vertex_uv[pair[matched], 0]) / 2.0
    axis = float(np.median(middle))
    level = np.abs(vertex_uv[matched, 1] - vertex_uv[pair[matched], 1]) < 1 / 256
    on_axis = (np.abs(middle - axis) < 1 / 256) & level
    return axis if on_axis.sum() >= agree * len(vertices) else None


def load_uv_layout(path: str | Path | None = None, masks: str | Path | None | bool = None) -> UVLayout:
    """Read ``vt`` and ``f v/vt`` lines of an OBJ with UVs (default: the ``uv_template`` file, FLAME's
    ``head_template_mesh.obj``). Nothing is merged or reordered: row i of ``uv`` is the i-th ``vt``.

    ``mirror_u`` comes from the OBJ's own vertices (:func:`uv_mirror_axis`; ``None`` without ``v`` lines).
    ``face_region`` comes from FLAME's vertex masks (:func:`flamejax.render.load_face_regions`): ``masks`` is
    that file, ``None`` to look it up in the weights folders (absent: no regions, with a warning), ``False`` for
    no regions.

    Raises:
      MissingFileError: no such file; ValueError: a face without uvs or not a triangle.
    """
    path = find_file("uv_template", path)
    vertices, uv, corners = [], [], []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "v":
                if len(fields) < 4:
                    raise ValueError(f"{path}: a vertex needs x, y and z, got {line.strip()!r}")
                vertices.append(tuple(float(x) for x in fields[1:4]))
            elif fields[0] == "vt":
                uv.append((float(fields[1]), float(fields[2])))
            elif fields[0] == "f":
                if len(fields) != 4:
                    raise ValueError(f"{path}: only triangles are supported, got {line.strip()!r}")
                corners.append([_corner_ids(t) for t in fields[1:]])
    uv_arr = flip_uv_v(np.asarray(uv, np.float32).reshape(-1, 2))
    ids = np.asarray(corners, np.int64).reshape(-1, 3, 2) - 1
    if ids.size and (ids.min() < 0 or ids[..., 1].max() >= len(uv_arr)):
        raise ValueError(f"{path}: face indices must be positive (1-based) and refer to existing vt lines")
    faces = ids[..., 0]
    regions = None if masks is False or not len(faces) else load_face_regions(faces, masks)
    points = np.asarray(vertices, np.float64).reshape(-1, 3)
    mirror_u = uv_mirror_axis(points, uv_arr, ids) if len(points) > ids[..., 0].max(initial=-1) else None
    return UVLayout(jnp.asarray(uv_arr), jnp.asarray(ids[..., 1], jnp.int32), jnp.asarray(faces, jnp.int32),
                    None if regions is None else jnp.asarray(regions, jnp.int32), mirror_u)


def sample_texture(texture: Float[Array, "th tw c"], uv: Float[Array, "... 2"]) -> Float[Array, "... c"]:
    """Bilinear lookup at ``uv`` (image convention, see module docstring), clamped at the borders.

    Differentiable with respect to the texture and to ``uv`` (inside a texel; the gradient w.r.t. ``uv`` is 0
    beyond the outer texel centres).
    """
    th, tw, channels = texture.shape
    return _bilinear_in_rows(texture.reshape(th * tw, channels), 0, jnp.float32(th), jnp.float32(tw), uv)


def _bilinear_in_rows(rows: Float[Array, "n c"], offset, height, width, uv: Float[Array, "... 2"]):
    """Bilinear lookup in a ``height`` x ``width`` texture stored row by row from ``rows[offset]`` (a texture, or
    one level of a flattened pyramid: ``offset``, ``height``, ``width`` may differ per lookup)."""
    x = jnp.clip(uv[..., 0] * width - 0.5, 0.0, width - 1.0)
    y = jnp.clip(uv[..., 1] * height - 0.5, 0.0, height - 1.0)
    x0 = jnp.minimum(jnp.floor(x), jnp.maximum(width - 2.0, 0.0))
    y0 = jnp.minimum(jnp.floor(y), jnp.maximum(height - 2.0, 0.0))
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    w = width.astype(jnp.int32)
    j0, i0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    j1, i1 = jnp.minimum(j0 + 1, w - 1), jnp.minimum(i0 + 1, height.astype(jnp.int32) - 1)
    at = lambda i, j: rows[offset + i * w + j]  # noqa: E731
    return (at(i0, j0) * (1.0 - fx) + at(i0, j1) * fx) * (1.0 - fy) + (at(i1, j0) * (1.0 - fx) + at(i1, j1) * fx) * fy


MIP_LEVELS = 3
"""Levels a mip-mapped lookup uses: the texture and two halvings, so that a pixel's colour and gradient reach at
most a 4 x 4 block of texels (a grazing face's long footprint is not worth blurring its neighbours for)."""


def mip_levels(texture: Float[Array, "th tw c"], levels: int = MIP_LEVELS) -> list[Float[Array, "th2 tw2 c"]]:
    """The texture and its halvings by 2 x 2 means, while both sides are even (at most ``levels`` in all)."""
    pyramid = [texture]
    while len(pyramid) < levels and all(n % 2 == 0 for n in pyramid[-1].shape[:2]):
        t = pyramid[-1]
        pyramid.append(t.reshape(t.shape[0] // 2, 2, t.shape[1] // 2, 2, *t.shape[2:]).mean(axis=(1, 3)))
    return pyramid


def fill_texture(texture: Float[Array, "th tw c"], known: Float[Array, "th tw"]) -> Float[Array, "th tw c"]:
    """``texture`` where ``known`` is 1; elsewhere filled smoothly from the known texels around (push-pull: masked
    means over 2 x 2 halvings up to the coarsest, then down again, each level taking its own masked mean where it
    knows a share of the block and the coarser level, upsampled bilinearly, for the rest). Unchanged when no texel is
    known."""
    weight = known.astype(texture.dtype)[..., None]
    pyramid = mip_levels(jnp.concatenate([texture * weight, weight], axis=-1), levels=32)
    channels = texture.shape[-1]
    count = jnp.sum(weight)
    filled = jnp.broadcast_to(jnp.sum(texture * weight, axis=(0, 1)) / jnp.maximum(count, 1e-12),
                              pyramid[-1].shape[:2] + (channels,))
    for level in reversed(pyramid):
        share = level[..., channels:]
        own = level[..., :channels] / jnp.maximum(share, 1e-12)
        below = jax.image.resize(filled, level.shape[:2] + (channels,), "linear")
        filled = jnp.where(share > 0, share * own + (1.0 - share) * below, below)
    return jnp.where(count > 0, jnp.where(weight > 0, texture, filled), texture)


def texel_footprint(screen_corners: Float[Array, "f 3 2"], face_uvs: Float[Array, "f 3 2"],
                    texture_shape: tuple[int, int]) -> Float[Array, "f"]:
    """Texels per pixel on each face: the square root of the texel area one pixel covers, from the face's affine
    map between screen and texture (``inf`` where the face has no screen area)."""
    edges = screen_corners[:, 1:] - screen_corners[:, :1]
    texel_edges = (face_uvs[:, 1:] - face_uvs[:, :1]) * jnp.asarray(texture_shape[::-1], face_uvs.dtype)
    screen_area = jnp.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0])
    texel_area = jnp.abs(texel_edges[:, 0, 0] * texel_edges[:, 1, 1] - texel_edges[:, 0, 1] * texel_edges[:, 1, 0])
    return jnp.where(screen_area > 1e-9, jnp.sqrt(texel_area / jnp.maximum(screen_area, 1e-9)), jnp.inf)


def sample_texture_mipmapped(texture: Float[Array, "th tw c"], uv: Float[Array, "... 2"],
                             footprint: Float[Array, "..."]) -> Float[Array, "... c"]:
    """Trilinear lookup: bilinear in the two :func:`mip_levels` whose texel size brackets ``footprint`` (texels of
    ``texture`` per pixel, e.g. from :func:`texel_footprint`), blended by log2 of it. Where a pixel spans several
    texels (a surface seen at a slant, a small render) its colour is their mean, and its gradient reaches all of
    them, not only the four nearest its centre. Not differentiated with respect to ``footprint``."""
    pyramid = mip_levels(texture)
    sizes = np.asarray([level.shape[:2] for level in pyramid], np.int32)
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(sizes[:-1, 0] * sizes[:-1, 1])]), jnp.int32)
    heights, widths = (jnp.asarray(sizes[:, i], uv.dtype) for i in (0, 1))
    atlas = jnp.concatenate([level.reshape(-1, texture.shape[-1]) for level in pyramid])
    lod = jnp.clip(jnp.log2(jnp.maximum(jax.lax.stop_gradient(footprint), 1.0)), 0.0, len(pyramid) - 1.0)
    k0 = jnp.floor(lod).astype(jnp.int32)
    k1 = jnp.minimum(k0 + 1, len(pyramid) - 1)
    blend = (lod - k0)[..., None]
    fine, coarse = (_bilinear_in_rows(atlas, offsets[k], heights[k], widths[k], uv) for k in (k0, k1))
    return fine * (1.0 - blend) + coarse * blend


def uniform_texture(color=(0.7, 0.55, 0.45), size: int = 256) -> Float[Array, "size size 3"]:
    """A constant RGB texture: the starting point of a per-texel albedo when no albedo model is available."""
    return jnp.broadcast_to(jnp.asarray(color, jnp.float32), (size, size, 3))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AlbedoModel:
    """Linear albedo model in FLAME's UV layout: ``texture = mean + basis @ coeffs``, RGB in [0, 1]."""

    mean: Float[Array, "s s 3"]
    """Mean albedo texture (rows top to bottom, image uv convention)."""
    basis: Float[Array, "s s 3 n"]
    """Principal components (not normalised by their standard deviation: coefficients are file-specific)."""


def _read_npz_columns(path: Path, key: str, n: int) -> np.ndarray:
    """The first ``n`` entries of the last axis of array ``key`` as (rows, n) float32, read in chunks so that a
    full basis (e.g. 786432 × 199) is never in memory at once."""
    with zipfile.ZipFile(path) as archive, archive.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject:
            return np.load(path)[key].reshape(-1, shape[-1])[:, :n].astype(np.float32)
        cols = shape[-1]
        rows = int(np.prod(shape[:-1]))
        out = np.empty((rows, min(n, cols)), np.float32)
        chunk = max(1, (1 << 24) // (cols * dtype.itemsize))
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            block = np.frombuffer(f.read(count * cols * dtype.itemsize), dtype=dtype).reshape(count, cols)
            out[start : start + count] = block[:, : out.shape[1]]
        return out


def _downsample(texels: np.ndarray, side: int, size: int | None) -> np.ndarray:
    """(side, side, 3, ...) to (size, size, 3, ...) by block averaging (or bilinear when not an integer factor)."""
    if size is None or size == side:
        return texels
    if side % size == 0:
        f = side // size
        return texels.reshape(size, f, size, f, *texels.shape[2:]).mean(axis=(1, 3))
    return np.asarray(jax.image.resize(texels, (size, size, *texels.shape[2:]), "linear"))


def load_albedo_model(
    path: str | Path | None = None, n_components: int = 50, texture_size: int | None = 256
) -> AlbedoModel | None:
    """Load the user's albedo model, or return ``None`` (and log a note) when there is none.

    Accepted files: ``FLAME_albedo_from_BFM.npz`` (keys ``MU``/``PC``, values in [0, 1]) and the FLAME texture
    space ``FLAME_texture.npz`` (``mean``/``tex_dir``, values in [0, 255], divided by 255 here). Both store a
    512² texture with channels in BGR order, rows top to bottom; it is returned in RGB, resampled to
    ``texture_size``² (block average; ``None`` keeps the file's size).

    Args:
      path: explicit file (an error if it does not exist); default: search as :func:`flamejax.files.find_file`.
      n_components: leading principal components kept (fewer if the file has fewer).
    """
    found = find_file("albedo_model", path, required=False)
    if found is None:
        logger.warning("no albedo model (FLAME_albedo_from_BFM.npz or FLAME_texture.npz) found: "
                       "fit a per-texel albedo instead")
        return None
    with np.load(found) as npz:
        keys = next(((m, b) for m, b in _ALBEDO_KEYS if m in npz.files and b in npz.files), None)
        if keys is None:
            raise CorruptFileError(f"{found}: expected arrays MU/PC or mean/tex_dir, found {npz.files}")
        mean = np.asarray(npz[keys[0]], np.float32).reshape(-1)
    scale = _ALBEDO_KEYS[keys]
    basis = _read_npz_columns(found, keys[1], n_components)
    side = int(round(np.sqrt(mean.size / 3)))
    if side * side * 3 != mean.size or basis.shape[0] != mean.size:
        raise CorruptFileError(
            f"{found}: mean of {mean.size} values and basis of {basis.shape} are not a square RGB texture")
    mean = _downsample(mean.reshape(side, side, 3)[..., ::-1] * scale, side, texture_size)
    basis = _downsample(basis.reshape(side, side, 3, -1)[:, :, ::-1] * scale, side, texture_size)
    return AlbedoModel(jnp.asarray(mean, jnp.float32), jnp.asarray(basis, jnp.float32))


def albedo_texture(model: AlbedoModel, coeffs: Float[Array, "n"]) -> Float[Array, "s s 3"]:
    """Albedo texture ``mean + basis @ coeffs`` (not clipped, so gradients stay linear)."""
    return model.mean + jnp.einsum("hwcn,n->hwc", model.basis, coeffs, precision=jax.lax.Precision.HIGHEST)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SmoothAlbedo:
    """A smooth albedo over the face for fits without an albedo model: one coefficient per field and colour,
    ``texture = fields @ coeffs.reshape(k, 3)`` (see :func:`smooth_albedo`)."""

    fields: Float[Array, "s s k"]
    """Bilinear hat functions on a grid over the UV map, mirror-symmetric about the layout's axis, 0 outside the
    face and forehead; peak ``SMOOTH_ALBEDO_UNIT``."""


SMOOTH_ALBEDO_UNIT = 0.2
"""Albedo change at a smooth field's peak per unit coefficient (Adam moves a coefficient about its rate per step)."""


def _hat_counts(uv_layout: UVLayout, cell: float) -> tuple[int, int]:
    """How many hats :func:`smooth_albedo` places along v and along u (from the mirror axis, if any)."""
    mirror = uv_layout.mirror_u
    extent = 1.0 if mirror is None else max(mirror, 1.0 - mirror)
    return int(np.floor(1.0 / cell + 1e-6)) + 1, int(np.floor(extent / cell + 1e-6)) + 1


def smooth_albedo_size(uv_layout: UVLayout, cell: float) -> int:
    """The number of :func:`smooth_albedo` coefficients (fields x 3 colours), without building the fields."""
    v_count, u_count = _hat_counts(uv_layout, cell)
    return 3 * v_count * u_count


def smooth_albedo(uv_layout: UVLayout, cell: float, size: int) -> SmoothAlbedo:
    """Fields of a ``size``² texture: bilinear hats ``cell`` apart in v, and in u counted from the layout's mirror
    axis (one field covers a texel and its mirror texel; without ``mirror_u``, plain hats in u), cut to the face
    and forehead when ``uv_layout`` has face regions."""
    t = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    mirror = uv_layout.mirror_u
    u = t if mirror is None else jnp.abs(t - mirror)
    v_count, u_count = _hat_counts(uv_layout, cell)
    hat = lambda x, n: jnp.clip(1.0 - jnp.abs(x[:, None] - cell * jnp.arange(n)) / cell, 0.0, None)  # noqa: E731
    fields = jnp.einsum("ik,jl->ijkl", hat(t, v_count), hat(u, u_count)).reshape(size, size, -1)
    region = uv_layout.texel_region(size)
    if region is not None:
        fields = fields * ((region == REGION_FACE) | (region == REGION_FOREHEAD))[..., None]
    return SmoothAlbedo(SMOOTH_ALBEDO_UNIT * fields)


def smooth_albedo_texture(model: SmoothAlbedo, coeffs: Float[Array, "n"]) -> Float[Array, "s s 3"]:
    """The smooth albedo ``fields @ coeffs`` (``coeffs``: k fields x 3 colours, flattened)."""
    return jnp.einsum("hwk,kc->hwc", model.fields, coeffs.reshape(model.fields.shape[-1], 3),
                      precision=jax.lax.Precision.HIGHEST)
