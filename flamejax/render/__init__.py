"""Differentiable rendering of triangle meshes in pure JAX (jit, vmap, grad).

Data path: ``screen_vertices`` (camera projection) → :func:`rasterize` (K fragments per pixel, tiled, static shapes;
hard mode: :func:`rasterize_visible`, a scatter-min z-buffer :func:`visible_faces` then one fragment per pixel)
→ :func:`interpolate` (UVs, normals, colours) → shading (:func:`sh_shading`, :func:`sample_texture` or
:func:`sample_texture_mipmapped`) → :func:`hard_blend` (z-buffer picture, alpha 0/1) or :func:`soft_blend` (SoftRas:
gradients at the silhouette).
:func:`render_mesh` does all of it for a textured FLAME head; :func:`shade_for_display` draws a gray mesh.

Conventions: pixels as in :mod:`flamejax.camera` (u right, v down, pixel (i, j) centred at (j + 0.5, i + 0.5));
``Fragments.signed_dist`` in pixels (negative inside); ``RasterConfig.sigma`` in NDC² (PyTorch3D's);
UVs with v pointing down like image rows (see :mod:`flamejax.render._texture`).

Called outside ``jax.jit``, :func:`rasterize`, :func:`visible_faces`, :func:`render_mesh` and
:func:`shade_for_display` run one compiled program per config and shapes (their loops would otherwise compile
again on every call); inside a caller's ``jit``, ``vmap`` or ``grad`` they are traced into the caller's program.
"""

from flamejax.render._blend import hard_blend, interpolate, soft_blend, soft_coverage
from flamejax.render._raster import Fragments, RasterConfig, count_tile_faces, rasterize
from flamejax.render._regions import (REGION_EYEBALL, REGION_FACE, REGION_FOREHEAD, REGION_OTHER, face_regions,
                                      load_face_regions, texel_regions)
from flamejax.render._render import RenderResult, render_mesh, screen_vertices, shade_for_display
from flamejax.render._shading import SH_CONSTANTS, face_normals, sh_basis, sh_shading, vertex_normals
from flamejax.render._texture import (
    SMOOTH_ALBEDO_UNIT,
    AlbedoModel,
    SmoothAlbedo,
    UVLayout,
    albedo_texture,
    fill_texture,
    load_albedo_model,
    load_uv_layout,
    sample_texture,
    sample_texture_mipmapped,
    smooth_albedo,
    smooth_albedo_size,
    smooth_albedo_texture,
    texel_footprint,
    uniform_texture,
    uv_mirror_axis,
)
from flamejax.render._zbuffer import rasterize_visible, task_count, visible_faces, visible_fragments

__all__ = [
    "AlbedoModel", "Fragments", "REGION_EYEBALL", "REGION_FACE", "REGION_FOREHEAD", "REGION_OTHER", "RasterConfig",
    "RenderResult", "SH_CONSTANTS", "UVLayout", "albedo_texture", "count_tile_faces", "face_normals", "face_regions",
    "fill_texture", "hard_blend", "interpolate", "load_albedo_model", "load_face_regions", "load_uv_layout",
    "rasterize", "rasterize_visible", "render_mesh", "sample_texture", "sample_texture_mipmapped", "screen_vertices",
    "sh_basis", "sh_shading", "shade_for_display", "SMOOTH_ALBEDO_UNIT", "SmoothAlbedo", "smooth_albedo",
    "smooth_albedo_size", "smooth_albedo_texture", "soft_blend", "soft_coverage", "task_count", "texel_footprint",
    "texel_regions", "uniform_texture", "uv_mirror_axis", "vertex_normals", "visible_faces", "visible_fragments",
]
