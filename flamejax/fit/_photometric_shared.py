"""Photometric refinement of several photographs of one person: one identity and one albedo for all of them.

One photograph's shading barely tells the shape from the albedo; several views of one face under one albedo do:
a texel must land on pixels of the same colour in every view, which only the right shape allows (multi-view
photometric consistency). Per view: expression, jaw, eyes, camera and light; shared: identity and albedo. The data
term is the single-image stage's (:func:`flamejax.fit.fit_photometric`), averaged over the views used.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Bool, Float
from flamejax.camera import Camera
from flamejax.fit._landmark_fit import Geometry, camera_labels, contour_identity_share, params_labels
from flamejax.fit._optim import FROZEN
from flamejax.fit._photometric import (Appearance, PhotometricConfig, PhotometricTargets, PhotometricVariables,
                                       _level_targets, _photometric_error, _render_view, _run_pyramid, _sanitised,
                                       _texture, _view_data_loss, agreeing_view_sums, bake_sums, baked_appearance,
                                       filled_appearance, identity_prior, mean_colour, scaled_gradient, seen_texels,
                                       start_appearance, texel_prior)
from flamejax.fit._result import PhotometricReport
from flamejax.fit._targets import nme_inner
from flamejax.fit._visibility import weighted_targets
from flamejax.flame import FlameModel, FlameParams, ProjectedLandmarks
from flamejax.render import AlbedoModel, UVLayout


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SharedPhotometricResult:
    """Several photographs of one person refined against their pixels (leading axis: images, on every field but
    ``shape``), laid out as :class:`FitResult`'s fields of the same names."""

    shape: Float[Array, "n_shape"]
    """The one identity."""
    params: FlameParams
    """``shape`` repeated."""
    camera: Camera
    landmarks: ProjectedLandmarks
    """NDC of each image's crop."""
    nme: Float[Array, "images"]
    photometric: PhotometricReport
    """Each image's light, render and errors; the one albedo (``texture``, ``texture_coeffs``) and the one stage's
    report repeated for each."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _SharedVariables:
    shape: Float[Array, "n_shape"]
    views: Geometry
    """Per image; the shape inside its parameters is not used (``shape`` is)."""
    appearance: Appearance
    """The one albedo; ``light`` has a leading axis of images."""

    def view(self, params: FlameParams, camera: Camera, light: Float[Array, "9 3"]) -> PhotometricVariables:
        """One view's variables: its own parameters, camera and light under the shared identity and albedo."""
        return PhotometricVariables(Geometry(dataclasses.replace(params, shape=self.shape), camera),
                                    dataclasses.replace(self.appearance, light=light))

    def gated(self, gate: Float[Array, ""]) -> _SharedVariables:
        """The same values; the gradient through the shared identity and albedo scaled by ``gate`` (0: a view
        that is fitted under them but does not move them)."""
        keep = lambda x: scaled_gradient(x, gate)  # noqa: E731
        albedo = dataclasses.replace(self.appearance, texture_coeffs=keep(self.appearance.texture_coeffs),
                                     texels=keep(self.appearance.texels))
        return dataclasses.replace(self, shape=keep(self.shape), appearance=albedo)


def _refine_shared(model: FlameModel, uv_layout: UVLayout, targets: PhotometricTargets, shape: Float[Array, "n_shape"],
                   params: FlameParams, camera: Camera, used: Bool[Array, "images"], config: PhotometricConfig,
                   albedo: AlbedoModel | None) -> SharedPhotometricResult:
    config = dataclasses.replace(config, albedo_cell=None,  # fit_photometric_same_person's doc
                                 pyramid=config.joint_pyramid or config.pyramid)
    targets = jax.vmap(_sanitised)(targets)
    full_size = targets.image.shape[1]
    valid = targets.landmarks.valid.astype(jnp.float32)
    weight = valid / jnp.maximum(jnp.sum(valid), 1.0)
    gate = used.astype(jnp.float32) * valid  # views whose pixels move the shared identity and albedo
    skins = jax.vmap(mean_colour)(targets.image, targets.mask)

    def levels_at(size: int):
        return jax.vmap(lambda t, skin: _level_targets(t, skin, size, config))(targets, skins)

    full = levels_at(full_size)
    starts = jax.vmap(start_appearance, in_axes=(None, 0, None, None))(uv_layout, targets, config, albedo)
    albedo_prior = texel_prior(uv_layout, config)
    shape_prior = identity_prior(shape, config)
    landmarks = jax.vmap(lambda p, cam, lmk: weighted_targets(model, dataclasses.replace(p, shape=shape), cam, lmk,
                                                              config.weighting))(params, camera, targets.landmarks)
    n_tex = 0 if albedo is None else albedo.basis.shape[-1]
    variables = _SharedVariables(shape, Geometry(params, camera), Appearance(
        starts.light, starts.texture_coeffs[0],
        jnp.einsum("i,i...->...", gate / jnp.maximum(jnp.sum(gate), 1.0), starts.texels)))

    contour_shares = jax.vmap(lambda cam: contour_identity_share(cam, config.landmarks))(camera)
    seen = None  # the texels a used view shows
    if config.texel_seen_margin is not None:
        per_view = jax.vmap(lambda p, cam, level: seen_texels(model, uv_layout, config,
                                                              variables.view(p, cam, None).geometry, level))(
            params, camera, full)
        seen = jnp.max(per_view * gate[:, None, None], axis=0)

    def views_loss(v: _SharedVariables, levels) -> Float[Array, "images"]:
        def one(p, cam, light, level, landmarks, gated, contour_share):
            view = v.gated(gated).view(p, cam, light)
            expression = view.geometry.params.expression
            return (_view_data_loss(model, uv_layout, config, albedo, view, level, landmarks, full_size,
                                    contour_share, seen)
                    + config.expression_l2 * 0.5 * jnp.sum(expression**2))
        return jax.vmap(one)(v.views.params, v.views.camera, v.appearance.light, levels, landmarks, gate,
                             contour_shares)

    def loss_fn(v: _SharedVariables, levels) -> Float[Array, ""]:
        prior = shape_prior(v.shape) + albedo_prior(v.appearance.texels)
        views = views_loss(v, levels)
        # The views that do not shape the identity count in the gradient (their own pose, expression and light)
        # but not in the value, so that they cannot decide which iterate is the best either.
        counted = jnp.where(gate > 0, views, views - jax.lax.stop_gradient(views))
        return jnp.sum(weight * counted) + prior

    labels = _SharedVariables("shape", Geometry(params_labels(params, FROZEN, "pose", "pose", "pose"),
                                                camera_labels("camera")),
                              Appearance("light", "texture" if n_tex else FROZEN, "texel"))
    best, stage = _run_pyramid(loss_fn, variables, labels, config,
                               lambda factor: full if factor == 1 else levels_at(full_size // factor))
    if config.bake_texels:
        sums = jax.vmap(lambda p, cam, light, level: bake_sums(model, uv_layout, config, best.view(p, cam, light),
                                                               level))(best.views.params, best.views.camera,
                                                                       best.appearance.light, full)
        current = _texture(albedo, best.appearance)
        colour_sum, shading_sum = agreeing_view_sums(*sums, gate, current, uv_layout.texel_region(current.shape[0]),
                                                     config.bake_view_spread)
        appearance, seen = baked_appearance(uv_layout, albedo, best.appearance, colour_sum, shading_sum)
        best = dataclasses.replace(best, appearance=appearance)
    best = dataclasses.replace(best, appearance=filled_appearance(uv_layout, albedo, best.appearance, seen,
                                                                  config.fill_unseen))

    def scored(v: _SharedVariables):
        def one(p, cam, light, level):
            out, projected = _render_view(model, uv_layout, config, albedo, v.view(p, cam, light), full_size,
                                          full_size)
            return out, projected, _photometric_error(out, level, uv_layout.face_region, config)
        return jax.vmap(one)(v.views.params, v.views.camera, v.appearance.light, full)

    _, _, start_error = scored(variables)
    out, projected, error = scored(best)
    images = params.expression.shape[0]
    repeated = lambda a: jnp.broadcast_to(a, (images,) + jnp.shape(a))  # noqa: E731
    report = PhotometricReport(
        texture=repeated(_texture(albedo, best.appearance)), light=best.appearance.light,
        texture_coeffs=repeated(best.appearance.texture_coeffs), render=out.image, alpha=out.alpha,
        photometric_start=start_error, photometric_final=error, stage=jax.tree.map(repeated, stage))
    return SharedPhotometricResult(
        shape=best.shape, params=jax.vmap(lambda p: dataclasses.replace(p, shape=best.shape))(best.views.params),
        camera=best.views.camera, landmarks=projected.points(),
        nme=jax.vmap(nme_inner)(projected.lmk68, targets.landmarks.lmk68), photometric=report)


_refine_shared_jit = jax.jit(_refine_shared)


def fit_photometric_same_person(model: FlameModel, uv_layout: UVLayout, photo_targets: PhotometricTargets,
                                shape: Float[Array, "n_shape"], params: FlameParams, camera: Camera,
                                config: PhotometricConfig = PhotometricConfig(), albedo: AlbedoModel | None = None,
                                used: Bool[Array, "images"] | None = None) -> SharedPhotometricResult:
    """Refine a joint landmark fit of several photographs of one person (``shape``; per image ``params`` and
    ``camera``, e.g. :func:`flamejax.track.fit_same_person`'s) against their pixels with one identity and one
    albedo; jit-compiled once per number of images.

    ``photo_targets`` is batched over the images (each its own aligned crop, mask and landmarks); ``used``
    (default: all) marks the images whose pixels shape the identity and albedo (an outlier of the joint fit
    should not): the others are refined under them (their own pose, expression and light) but do not pull them,
    nor count in the stage's losses (the best iterate is the used images').
    ``config`` is the single-image stage's, its ``shape_offset_l2`` the prior on identity's offset from
    ``shape_anchor`` times ``shape``, its levels ``joint_pyramid``, without its smooth albedo (``albedo_cell``):
    views under several poses tell the albedo from the shading, and on the rendered heads with 3D truth it did not
    help them (two views 0.55x -> 0.63x the mean head's identity error, five 0.46x -> 0.47x; benchmarks/RESULTS.md).
    The per-texel albedo moves from ``texel_start``, one albedo for all views; with ``bake_texels`` it is baked at
    the end from the used views' pixels under their fitted geometry and light, each view's pixels of a texel
    weighted down where they disagree with the others' (:func:`~flamejax.fit._photometric.agreeing_view_sums`: a
    hand or a strand of hair over the face in some views, teeth behind lips the fit closed). A stage that was not
    finite says so in ``photometric.stage.finite``: keep the landmark fit then.
    """
    if model.num_vertices != 5023 or model.faces.shape[0] == 0:
        raise ValueError("model: the photometric stage renders the full FLAME mesh; pass the model from load_flame, "
                         "not landmark_model(model)")
    images = photo_targets.image.shape[0]
    if photo_targets.image.ndim != 4 or params.expression.shape[0] != images or camera.rotation.shape != (images, 3):
        raise ValueError(f"photo_targets, params and camera must share a leading axis of images; got "
                         f"{photo_targets.image.shape}, {params.expression.shape}, {camera.rotation.shape}")
    used = jnp.ones(images, bool) if used is None else jnp.asarray(used, bool)
    return _refine_shared_jit(model, uv_layout, photo_targets, jnp.asarray(shape, jnp.float32), params, camera,
                              used, config, albedo)
