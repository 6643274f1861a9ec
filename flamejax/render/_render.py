"""Whole-mesh rendering: project, rasterize, texture, SH-shade, blend."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera, project
from flamejax.render._blend import hard_blend, interpolate, soft_blend
from flamejax.render._eager import compiled_when_eager
from flamejax.render._raster import (Fragments, RasterConfig, fragments_in_rows, gather_columns, map_row_blocks,
                                     rasterize, select_faces)
from flamejax.render._shading import _unit, sh_shading, vertex_normals
from flamejax.render._texture import UVLayout, sample_texture, sample_texture_mipmapped, texel_footprint
from flamejax.render._zbuffer import fragments_from_corners, rasterize_visible, visible_faces


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RenderResult:
    """One rendered image and what it was made from."""

    image: Float[Array, "h w 3"]
    """RGB. Hard mode: the visible surface, ``config.background`` elsewhere. Soft mode: the SoftRas colour (the
    surface colour up to the blur radius around the silhouette, the background beyond), not composited."""
    alpha: Float[Array, "h w"]
    """Coverage: 0/1 in hard mode, SoftRas coverage in soft mode."""
    normals: Float[Array, "h w 3"]
    """Unit head-space normal of the visible surface, (0, 0, 0) off the mesh."""
    fragments: Fragments
    """The rasterized fragments (K = 1 in hard mode)."""


def screen_vertices(camera: Camera, verts_world: Float[Array, "v 3"], image_size: int) -> Float[Array, "v 3"]:
    """(u px, v px, depth) per vertex: the input of :func:`rasterize`."""
    pixels, depth = project(camera, verts_world, image_size)
    return jnp.concatenate([pixels, depth[:, None]], axis=-1)


def _mode_config(config: RasterConfig, mode: str) -> RasterConfig:
    """Hard mode needs one face per pixel and no blur; soft mode the blur radius the config asks for."""
    if mode == "hard":
        return dataclasses.replace(config, faces_per_pixel=1, blur_radius=config.blur_radius or 0.0)
    if mode == "soft":
        return config
    raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")


def _visible_normals(fragments: Fragments, normals: Float[Array, "v 3"]) -> Float[Array, "h w 3"]:
    n = _unit(interpolate(jax.tree.map(lambda x: x[:, :, :1], fragments), normals)[:, :, 0])
    return jnp.where(fragments.inside[..., :1], n, 0.0)


def _face_footprint(screen, faces, face_uvs, texture, config: RasterConfig) -> Float[Array, "f"] | None:
    """Per face, texels per pixel for a trilinear lookup (:func:`texel_footprint`); ``None`` for bilinear."""
    if texture is None or config.texture_filter == "bilinear":
        return None
    return texel_footprint(screen[faces][..., :2], face_uvs, texture.shape[:2])


def _albedo(texture, uv: Float[Array, "... 2"], footprint: Float[Array, "f"] | None,
            face_index: Int[Array, "..."]) -> Float[Array, "... 3"]:
    """The texture at ``uv``: bilinear, or trilinear at each pixel's face's footprint."""
    if footprint is None:
        return sample_texture(texture, uv)
    return sample_texture_mipmapped(texture, uv, footprint[jnp.maximum(face_index, 0)])


def _shade(fragments: Fragments, normals, face_uvs, texture, footprint, sh_coeffs) -> Float[Array, "h w k 3"]:
    """albedo · SH(head-space normal) per fragment."""
    colors = sh_shading(_unit(interpolate(fragments, normals)), sh_coeffs)
    if texture is not None:
        colors = colors * _albedo(texture, interpolate(fragments, face_uvs), footprint, fragments.face_index)
    return colors


@compiled_when_eager("config", "mode")
def render_mesh(
    verts_world: Float[Array, "v 3"],
    faces: Int[Array, "f 3"],
    camera: Camera,
    uv_layout: UVLayout | None,
    texture: Float[Array, "s s 3"] | None,
    sh_coeffs: Float[Array, "9 3"],
    config: RasterConfig,
    mode: Literal["hard", "soft"] = "hard",
) -> RenderResult:
    """Render a textured, SH-lit mesh like the reference photometric fit: image = albedo · SH(head-space normal).

    Args:
      verts_world: vertices in head (world) space.
      uv_layout, texture: FLAME UVs and an RGB texture in [0, 1]; ``None`` for both renders albedo 1 (shading only).
      sh_coeffs: 9 SH bands × RGB, see :func:`sh_shading`.
      config: static; in hard mode ``faces_per_pixel`` is set to 1 and an unset ``blur_radius`` to 0.
      mode: ``"hard"`` (z-buffer, the picture and the photometric loss inside the silhouette) or ``"soft"``
        (SoftRas blending, see :func:`soft_blend`: the colour is not composited, alpha carries the silhouette and
        its gradients).

    Hard mode with ``config.hard_rasterizer = "zbuffer"`` (the default) finds each pixel's face with a z-buffer
    (:func:`flamejax.render.visible_faces`) and evaluates one fragment per pixel; otherwise the per-pixel work runs
    on the tiled rasterizer's K fragments in blocks of image rows, rematerialised in the backward pass.
    """
    config = _mode_config(config, mode)
    screen = screen_vertices(camera, verts_world, config.image_size)
    normals = vertex_normals(verts_world, faces)
    face_uvs = None if texture is None else uv_layout.face_uvs()
    footprint = _face_footprint(screen, faces, face_uvs, texture, config)
    background = jnp.asarray(config.background, screen.dtype)
    if mode == "hard" and config.hard_rasterizer == "zbuffer":
        face_index = visible_faces(screen, faces, config)
        return _render_visible(screen, faces, normals, face_uvs, texture, footprint, sh_coeffs, face_index,
                               background)

    def rows(face_index, inside, row_centres):
        fragments = fragments_in_rows(screen, faces, face_index, inside, row_centres)
        colors = _shade(fragments, normals, face_uvs, texture, footprint, sh_coeffs)
        rgba = hard_blend(colors, fragments, background) if mode == "hard" else soft_blend(colors, fragments, config)
        return rgba, _visible_normals(fragments, normals), fragments

    rgba, normal_image, fragments = map_row_blocks(rows, *select_faces(screen, faces, config))
    return RenderResult(rgba[..., :3], rgba[..., 3], normal_image, fragments)


def _render_visible(screen, faces, normals, face_uvs, texture, footprint, sh_coeffs, face_index,
                    background) -> RenderResult:
    """Hard mode from a z-buffer's face ids: each pixel gathers its face's corner positions, normals and uvs from
    per-face tables (:func:`gather_columns`)."""
    n_faces = faces.shape[0]
    covered = face_index >= 0
    vertex_index = jnp.where(covered[..., None], faces[jnp.maximum(face_index, 0)], 0).astype(jnp.int32)
    fragments = fragments_from_corners(gather_columns(screen[faces].reshape(n_faces, 9), face_index), face_index,
                                       vertex_index)
    bary = [fragments.bary[:, :, 0, i] for i in range(3)]

    def mix(corner_columns: list, width: int) -> Float[Array, "h w c"]:
        """Barycentric mix of 3 corners whose ``width`` channels are stored side by side."""
        return jnp.stack([sum(bary[i] * corner_columns[i * width + c] for i in range(3)) for c in range(width)], -1)

    normal = _unit(mix(gather_columns(normals[faces].reshape(n_faces, 9), face_index), 3))
    colors = sh_shading(normal, sh_coeffs)
    if texture is not None:
        uv = mix(gather_columns(face_uvs.reshape(n_faces, 6).astype(screen.dtype), face_index), 2)
        colors = colors * _albedo(texture, uv, footprint, face_index)
    image = jnp.where(covered[..., None], colors, background)
    return RenderResult(image, covered.astype(image.dtype), jnp.where(covered[..., None], normal, 0.0), fragments)


@compiled_when_eager("config")
def shade_for_display(
    verts_world: Float[Array, "v 3"],
    faces: Int[Array, "f 3"],
    camera: Camera,
    config: RasterConfig,
    color=(0.75, 0.75, 0.75),
) -> Float[Array, "h w 4"]:
    """A gray, Lambert-shaded picture of the mesh (head light from slightly above), RGBA in [0, 1] for overlays."""
    config = _mode_config(config, "hard")
    screen = screen_vertices(camera, verts_world, config.image_size)
    fragments = (rasterize_visible if config.hard_rasterizer == "zbuffer" else rasterize)(screen, faces, config)
    normals_cam = jnp.einsum(
        "ij,vj->vi", camera.rotation_matrix(), vertex_normals(verts_world, faces), precision=jax.lax.Precision.HIGHEST
    )
    light = jnp.array([0.0, 0.3, 1.0]) / jnp.sqrt(1.09)
    lambert = jnp.abs(jnp.sum(_visible_normals(fragments, normals_cam) * light, axis=-1, keepdims=True))
    rgb = jnp.asarray(color, lambert.dtype) * (0.25 + 0.75 * lambert)
    alpha = fragments.inside[..., 0, None].astype(rgb.dtype)
    return jnp.concatenate([rgb * alpha, alpha], axis=-1)
