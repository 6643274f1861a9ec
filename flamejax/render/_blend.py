"""Per-fragment attribute interpolation and the hard (z-buffer) and soft (SoftRas) blending of fragments."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float
from flamejax.render._raster import Fragments, RasterConfig

_EPS = 1e-10


def interpolate(
    fragments: Fragments, attrs: Float[Array, "v c"] | Float[Array, "f 3 c"]
) -> Float[Array, "h w k c"]:
    """Barycentric interpolation of per-vertex ``(V, C)`` or per-face-corner ``(F, 3, C)`` attributes (e.g. UVs with
    seams: ``uv_layout.face_uvs()``). Empty fragments get 0."""
    if attrs.ndim == 2:
        corners = [attrs[fragments.vertex_index[..., i]] for i in range(3)]
    elif attrs.ndim == 3:
        face = jnp.maximum(fragments.face_index, 0)
        corners = [attrs[face, i] for i in range(3)]
    else:
        raise ValueError(f"attributes must be (V, C) or (F, 3, C), got shape {attrs.shape}")
    return sum(fragments.bary[..., i, None] * corners[i] for i in range(3))


def hard_blend(
    colors: Float[Array, "h w k c"], fragments: Fragments, background: Float[Array, "c"] | float = 0.0
) -> Float[Array, "h w c+1"]:
    """Colour of the visible face (fragment 0 where it covers the pixel centre), else ``background``; alpha is 1
    inside the silhouette and 0 outside. Gradients reach the colours (and through them barycentrics and vertex
    positions) but not the silhouette: use :func:`soft_blend` for that."""
    covered = fragments.inside[..., 0]
    rgb = jnp.where(covered[..., None], colors[..., 0, :], jnp.asarray(background, colors.dtype))
    return jnp.concatenate([rgb, covered[..., None].astype(colors.dtype)], axis=-1)


def _log_coverage(fragments: Fragments, config: RasterConfig) -> Float[Array, "h w k"]:
    d = fragments.signed_dist * (2.0 / config.image_size)
    return jnp.where(fragments.mask, jax.nn.log_sigmoid(-d * jnp.abs(d) / config.sigma), -jnp.inf)


def soft_coverage(fragments: Fragments, config: RasterConfig) -> Float[Array, "h w k"]:
    """SoftRas probability that each fragment covers the pixel: sigmoid(-sign(d) d² / sigma), d in NDC."""
    return jnp.exp(_log_coverage(fragments, config))


def soft_blend(
    colors: Float[Array, "h w k c"],
    fragments: Fragments,
    config: RasterConfig,
    background: Float[Array, "c"] | None = None,
) -> Float[Array, "h w c+1"]:
    """SoftRas aggregation (Liu et al. 2019) of K fragments per pixel.

    alpha = 1 - prod_k (1 - p_k), p_k = :func:`soft_coverage`. Colour = (sum_k w_k c_k + w_bg background) /
    (sum_k w_k + w_bg) with w_k = p_k exp(z'_k / gamma), w_bg = exp(eps / gamma), on normalised inverse depth
    z' = (zfar - z) / (zfar - znear): nearer fragments dominate within a depth range of about
    gamma · (zfar - znear). Evaluated in log space, so nothing underflows; unlike PyTorch3D's
    ``softmax_rgb_blend`` no floor is put on the background weight (that floor lets the background win inside the
    silhouette next to a nearer face). The colour is therefore the surface colour wherever a face lies within the
    blur radius and ``background`` only where none does; coverage is in alpha (composite with it if needed).
    Fragments from :func:`rasterize` with a blur radius > 0 (the default) give silhouette gradients through alpha.
    """
    bg = jnp.asarray(config.background if background is None else background, colors.dtype)
    log_p = _log_coverage(fragments, config)
    alpha = 1.0 - jnp.prod(1.0 - jnp.exp(log_p), axis=-1)
    z = (config.zfar - fragments.depth) / (config.zfar - config.znear)
    log_w = log_p + z / config.gamma
    log_bg = _EPS / config.gamma
    shift = jax.lax.stop_gradient(jnp.maximum(jnp.max(log_w, axis=-1, keepdims=True), log_bg))
    weight, bg_weight = jnp.exp(log_w - shift), jnp.exp(log_bg - shift)
    total = jnp.sum(weight, axis=-1, keepdims=True) + bg_weight
    rgb = (jnp.sum(weight[..., None] * colors, axis=-2) + bg_weight * bg) / total
    return jnp.concatenate([rgb, alpha[..., None]], axis=-1)
