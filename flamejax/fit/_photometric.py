"""Photometric mode: refine a landmark fit so that the rendered, textured, SH-lit head matches the pixels.

Stage 2 of the reference's photometric mode (REFERENCE.md §6) as one optax ``partition`` over typed variables:
expression, jaw, eyes, camera, SH light, identity (L2 on its offset from the start), albedo PCA coefficients
when an albedo model is given, and from step ``texel_start`` a per-texel albedo (an offset on the PCA albedo;
without a PCA model the albedo itself, starting from the photograph's mean skin colour and held smooth by a
prior). :func:`fit_photometric_batch` refines a batch of landmark fits (:func:`fit_photometric` one image).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float
from flamejax.fit._checks import check_camera, check_params
from flamejax.fit._config import GroupSchedule, LandmarkStageConfig, _config_pytree
from flamejax.fit._landmark_fit import Geometry, camera_labels, landmark_data_loss, params_labels, sanitised
from flamejax.fit._optim import FROZEN, partitioned_adam, run_stage
from flamejax.fit._result import FitResult, PhotometricReport, Status, first_failure
from flamejax.fit._targets import LandmarkTargets, check_targets, nme_inner
from flamejax.flame import FlameModel, contour_bin, embedded_points, flame_forward, project_landmarks
from flamejax.flame._layout import CONTOUR_68, EYES_68, MOUTH_68, NUM_IBUG68
from flamejax.render import AlbedoModel, RasterConfig, UVLayout, render_mesh

AMBIENT_SH = math.sqrt(4.0 * math.pi)
"""Band-0 coefficient that makes the SH shading exactly 1 everywhere (see :mod:`flamejax.render`)."""


@_config_pytree("steps", "texel_start", "texture_size", "raster", "render_mode")
class PhotometricConfig:
    """Photometric stage; defaults are the reference's (REFERENCE.md §6) unless marked as additions."""

    steps: int = 400
    pose: GroupSchedule = GroupSchedule(0.005)
    """Expression, jaw and eyes."""
    camera: GroupSchedule = GroupSchedule(0.0025)
    light: GroupSchedule = GroupSchedule(0.005)
    shape: GroupSchedule = GroupSchedule(0.001)
    texture: GroupSchedule = GroupSchedule(0.005)
    """Albedo PCA coefficients (only with an albedo model)."""
    texel: GroupSchedule = GroupSchedule(0.005)
    texel_start: int = 200
    """Step from which the per-texel albedo moves (the reference's 200): before it, geometry and light are fitted
    under the PCA albedo, or under a uniform albedo of the photograph's mean skin colour without a PCA model."""
    photometric_weight: float = 20.0
    """Masked L1 photometric term (the reference's 2, raised with ``landmark_scale`` lowered: see below)."""
    landmark_scale: float = 0.1
    """Multiplies the landmark term: stage 2's (L1 on inner, contour, iris and MediaPipe points, with
    ``landmarks``' weights), the 68 points re-weighted by the reference's grouping below. That term is far
    heavier than the reference's L2 landmark term, so at scale 1 with the reference's photometric weight the
    noisy landmarks hold the geometry and the pixels barely move it; 20 and 0.1 let the shading refine it
    (synthetic face error 10 % lower than landmark mode, NME on photographs no worse; benchmarks/RESULTS.md)."""
    landmarks: LandmarkStageConfig = LandmarkStageConfig()
    contour_weight: float = 0.5 / 1.5
    inner_weight: float = 1.0
    eye_weight: float = 3.0 / 1.5
    mouth_weight: float = 2.0 / 1.5
    """The reference's grouping (contour 0.5, inner 1.5, eyes 3.0, mouth 2.0), relative to the inner points."""
    expression_l2: float = 1e-4
    shape_offset_l2: float = 0.1
    texel_smoothness: float = 20.0
    """flamejax addition: squared-gradient prior on the per-texel albedo (its only prior without a PCA model)."""
    texture_size: int = 256
    raster: RasterConfig = RasterConfig(image_size=256)
    """Hard mode uses one face per pixel and no blur whatever this says; soft mode uses it as is."""
    render_mode: str = "hard"
    """``"hard"`` (the reference: loss inside the silhouette) or ``"soft"`` (SoftRas: silhouette gradients)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PhotometricTargets:
    image: Float[Array, "s s 3"]
    """Aligned photograph at the fitting resolution, RGB in [0, 1]."""
    mask: Float[Array, "s s"]
    """Where the photometric loss counts (face skin, brows, eyes, nose, lips)."""
    landmarks: LandmarkTargets


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Appearance:
    """The photometric stage's variables besides the geometry: light and albedo."""

    light: Float[Array, "9 3"]
    texture_coeffs: Float[Array, "n_tex"]
    texels: Float[Array, "t t 3"]
    """Per-texel albedo: an offset on the PCA albedo, or the albedo itself without a PCA model."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PhotometricVariables:
    geometry: Geometry
    appearance: Appearance


def landmark_weights(config: PhotometricConfig) -> Float[Array, "68"]:
    """Per-point weights of the 68 landmarks: contour, inner, eyes, mouth (the reference's grouping)."""
    weights = jnp.full(NUM_IBUG68, config.inner_weight, jnp.float32)
    return (weights.at[CONTOUR_68].set(config.contour_weight).at[EYES_68].set(config.eye_weight)
            .at[MOUTH_68].set(config.mouth_weight))


def mean_skin_colour(image: Float[Array, "s s 3"], mask: Float[Array, "s s"]) -> Float[Array, "3"]:
    weight = mask[..., None]
    return jnp.sum(image * weight, axis=(0, 1)) / jnp.maximum(jnp.sum(weight), 1.0)


def _sanitised(targets: PhotometricTargets) -> PhotometricTargets:
    """Non-finite pixels leave the mask (and are zeroed); non-finite landmarks make the targets invalid."""
    finite = jnp.all(jnp.isfinite(targets.image), axis=-1) & jnp.isfinite(targets.mask)
    return PhotometricTargets(image=jnp.where(finite[..., None], targets.image, 0.0),
                              mask=jnp.where(finite, targets.mask, 0.0), landmarks=sanitised(targets.landmarks))


def _texture(albedo: AlbedoModel | None, appearance: Appearance):
    if albedo is None:
        return jnp.clip(appearance.texels, 0.0, 1.0)
    base = albedo.mean + jnp.einsum("hwcn,n->hwc", albedo.basis, appearance.texture_coeffs,
                                    precision=jax.lax.Precision.HIGHEST)
    return jnp.clip(base + appearance.texels, 0.0, 1.0)


def _smoothness(texels: Float[Array, "t t 3"]) -> Float[Array, ""]:
    return jnp.mean((texels[1:] - texels[:-1]) ** 2) + jnp.mean((texels[:, 1:] - texels[:, :-1]) ** 2)


def masked_l1(render, image, weight) -> Float[Array, ""]:
    return jnp.sum(jnp.abs(render - image).mean(-1) * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _texel_schedule(config: PhotometricConfig):
    texel = config.texel.schedule()
    return lambda count: jnp.where(count < config.texel_start, 0.0, texel(count - config.texel_start))


def _refine_one(model: FlameModel, uv_layout: UVLayout, targets: PhotometricTargets, landmark_fit: FitResult,
                config: PhotometricConfig, albedo: AlbedoModel | None) -> FitResult:
    """Pure single-image photometric refinement of ``landmark_fit`` (see :func:`fit_photometric`)."""
    targets = _sanitised(targets)
    lmk = targets.landmarks
    valid = lmk.valid.astype(jnp.float32)
    weights68 = landmark_weights(config)
    n_tex = 0 if albedo is None else albedo.basis.shape[-1]
    size = config.texture_size
    skin = mean_skin_colour(targets.image, targets.mask)
    texels0 = (jnp.zeros((size, size, 3), jnp.float32) if albedo is not None
               else jnp.broadcast_to(skin, (size, size, 3)).astype(jnp.float32))
    shape0 = landmark_fit.params.shape

    def render(v: PhotometricVariables):
        p, cam = v.geometry.params, v.geometry.camera
        vertices = flame_forward(model, p).vertices
        out = render_mesh(vertices, model.faces, cam, uv_layout, _texture(albedo, v.appearance), v.appearance.light,
                          config.raster, config.render_mode)
        points = embedded_points(model.landmarks, vertices, contour_bin(cam.rotation_matrix()))
        return out, project_landmarks(cam, points)

    def photometric_error(out):
        return masked_l1(out.image, targets.image, targets.mask * out.alpha)

    def loss_fn(v: PhotometricVariables):
        out, proj = render(v)
        p = v.geometry.params
        landmark = landmark_data_loss(model, proj, lmk, config.landmarks, weights68)
        data = config.photometric_weight * photometric_error(out) + config.landmark_scale * landmark
        prior = (config.expression_l2 * 0.5 * jnp.sum(p.expression**2)
                 + config.shape_offset_l2 * 0.5 * jnp.sum((p.shape - shape0) ** 2))
        if albedo is None:
            prior = prior + config.texel_smoothness * _smoothness(v.appearance.texels)
        return valid * data + prior

    variables = PhotometricVariables(
        Geometry(landmark_fit.params, landmark_fit.camera),
        Appearance(light=jnp.zeros((9, 3), jnp.float32).at[0].set(AMBIENT_SH),
                   texture_coeffs=jnp.zeros(n_tex, jnp.float32), texels=texels0))
    labels = PhotometricVariables(
        Geometry(params_labels(landmark_fit.params, "shape", "pose", "pose", "pose"), camera_labels("camera")),
        Appearance(light="light", texture_coeffs="texture" if n_tex else FROZEN, texels="texel"))
    optimiser = partitioned_adam({"pose": config.pose.schedule(), "camera": config.camera.schedule(),
                                  "light": config.light.schedule(), "shape": config.shape.schedule(),
                                  "texture": config.texture.schedule(), "texel": _texel_schedule(config)}, labels)
    start_error = photometric_error(render(variables)[0])
    best, stage = run_stage(loss_fn, variables, optimiser, config.steps)
    out, projected = render(best)
    failed = first_failure([(~stage.finite, Status.DIVERGED_PHOTOMETRIC)])
    status = jnp.where(landmark_fit.status != int(Status.OK), landmark_fit.status, failed)
    nme = nme_inner(projected.lmk68, lmk.lmk68)
    report = PhotometricReport(texture=_texture(albedo, best.appearance), light=best.appearance.light,
                               texture_coeffs=best.appearance.texture_coeffs, render=out.image, alpha=out.alpha,
                               photometric_start=start_error, photometric_final=photometric_error(out), stage=stage)
    return dataclasses.replace(
        landmark_fit, params=best.geometry.params, camera=best.geometry.camera, landmarks=projected,
        nme=jnp.where(jnp.isnan(landmark_fit.nme), jnp.nan, nme), status=status, photometric=report)


_refine_one_jit = jax.jit(_refine_one)
_refine_batch_jit = jax.jit(jax.vmap(_refine_one, in_axes=(None, None, 0, 0, None, None)))


def _check(model: FlameModel, targets: PhotometricTargets, landmark_fit: FitResult, batch_dims: int) -> None:
    if model.num_vertices != 5023 or model.faces.shape[0] == 0:
        raise ValueError("model: the photometric stage renders the full FLAME mesh; pass the model from load_flame, "
                         "not landmark_model(model)")
    check_targets(targets.landmarks, batch_dims, "photo_targets.landmarks")
    batch = targets.landmarks.valid.shape[0] if batch_dims else None
    lead = (batch,) if batch_dims else ()
    size = targets.image.shape[batch_dims]
    if targets.image.shape != lead + (size, size, 3) or targets.mask.shape != lead + (size, size):
        raise ValueError(f"photo_targets: image must be {lead + (size, size, 3)} and mask {lead + (size, size)}, "
                         f"got {targets.image.shape} and {targets.mask.shape}")
    check_params(landmark_fit.params, model, batch_dims, batch, "landmark_result.params")
    check_camera(landmark_fit.camera, batch_dims, batch, "landmark_result.camera")


def fit_photometric(model: FlameModel, uv_layout: UVLayout, photo_targets: PhotometricTargets,
                    landmark_result: FitResult, config: PhotometricConfig = PhotometricConfig(),
                    albedo: AlbedoModel | None = None) -> FitResult:
    """Photometric refinement of one image's landmark fit; jit-compiled (numbers of ``config`` are traced).

    ``model`` must be the full FLAME mesh (the renderer needs every face). Returns ``landmark_result`` with
    refined parameters, camera, landmarks and NME, ``photometric`` filled, and the status of the first failing
    stage: a landmark-stage failure stays, else a diverged photometric stage gives
    ``Status.DIVERGED_PHOTOMETRIC``.
    """
    _check(model, photo_targets, landmark_result, 0)
    return _refine_one_jit(model, uv_layout, photo_targets, landmark_result, config, albedo)


def fit_photometric_batch(model: FlameModel, uv_layout: UVLayout, photo_targets: PhotometricTargets,
                          landmark_result: FitResult, config: PhotometricConfig = PhotometricConfig(),
                          albedo: AlbedoModel | None = None) -> FitResult:
    """:func:`fit_photometric` over the leading batch axis of ``photo_targets`` and ``landmark_result`` (the
    output of :func:`fit_landmarks_batch`); jit-compiled once per batch size."""
    _check(model, photo_targets, landmark_result, 1)
    return _refine_batch_jit(model, uv_layout, photo_targets, landmark_result, config, albedo)
