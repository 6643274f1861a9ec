"""Photometric mode: refine a landmark fit so that the rendered, textured, SH-lit head matches the pixels.

Stage 2 of the reference's photometric mode (REFERENCE.md §6) as one optax ``multi_transform``: expression, jaw,
eyes, camera, SH light, identity (L2 on its offset from the start), albedo PCA coefficients when an albedo model
is given, and from step ``texel_start`` a per-texel albedo (an offset on the PCA albedo; without a PCA model the
albedo itself, starting from the photograph's mean skin colour and held smooth by a prior). ``fit_photometric`` acts on one image;
``fit_photometric_batch`` is its jit-compiled ``vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera
from flamejax.fit._config import GroupSchedule, LandmarkStageConfig
from flamejax.fit._landmark_fit import (STATUS_DIVERGED_LANDMARK, STATUS_INVALID_INPUT, STATUS_OK,
                                        ProjectedLandmarks, landmark_data_loss, project_landmarks,
                                        vertex_landmarks)
from flamejax.fit._optim import grouped_adam, run_optimiser
from flamejax.fit._targets import CONTOUR, LandmarkTargets, nme_inner
from flamejax.flame import FlameModel, FlameParams, contour_bin, flame_forward
from flamejax.render import AlbedoModel, RasterConfig, UVLayout, render_mesh

AMBIENT_SH = math.sqrt(4.0 * math.pi)
"""Band-0 coefficient that makes the SH shading exactly 1 everywhere (see :mod:`flamejax.render`)."""


@dataclasses.dataclass(frozen=True)
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
class PhotometricResult:
    params: FlameParams
    camera: Camera
    light: Float[Array, "9 3"]
    """SH coefficients (9 bands × RGB)."""
    texture: Float[Array, "t t 3"]
    """Fitted albedo texture in FLAME's UV layout (rows top to bottom), RGB in [0, 1]."""
    texture_coeffs: Float[Array, "n_tex"]
    render: Float[Array, "s s 3"]
    """The fitted head rendered at the fitting resolution (over black)."""
    alpha: Float[Array, "s s"]
    landmarks: ProjectedLandmarks
    """Fitted landmarks in NDC."""
    losses: Float[Array, "steps"]
    photometric_start: Float[Array, ""]
    """Masked L1 photometric error at the start (landmark fit, initial light and albedo)."""
    photometric_final: Float[Array, ""]
    nme: Float[Array, ""]
    status: Int[Array, ""]


def landmark_weights(config: PhotometricConfig) -> np.ndarray:
    """Per-point weights of the 68 landmarks: contour, inner, eyes, mouth (the reference's grouping)."""
    w = np.full(68, config.inner_weight, np.float32)
    w[CONTOUR] = config.contour_weight
    w[36:48] = config.eye_weight
    w[48:68] = config.mouth_weight
    return w


def mean_skin_colour(image: Float[Array, "s s 3"], mask: Float[Array, "s s"]) -> Float[Array, "3"]:
    weight = mask[..., None]
    return jnp.sum(image * weight, axis=(0, 1)) / jnp.maximum(jnp.sum(weight), 1.0)


def _texture(albedo: AlbedoModel | None, coeffs, texels):
    if albedo is None:
        return jnp.clip(texels, 0.0, 1.0)
    base = albedo.mean + jnp.einsum("hwcn,n->hwc", albedo.basis, coeffs, precision=jax.lax.Precision.HIGHEST)
    return jnp.clip(base + texels, 0.0, 1.0)


def _smoothness(texels: Float[Array, "t t 3"]) -> Float[Array, ""]:
    return jnp.mean((texels[1:] - texels[:-1]) ** 2) + jnp.mean((texels[:, 1:] - texels[:, :-1]) ** 2)


def masked_l1(render, image, weight) -> Float[Array, ""]:
    return jnp.sum(jnp.abs(render - image).mean(-1) * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def fit_photometric(model: FlameModel, uv_layout: UVLayout, targets: PhotometricTargets, params: FlameParams,
                    camera: Camera, config: PhotometricConfig = PhotometricConfig(),
                    albedo: AlbedoModel | None = None) -> PhotometricResult:
    """Photometric refinement of one image, starting from a landmark fit (``params``, ``camera``).

    ``model`` must be the full FLAME mesh (the renderer needs every face). Pure: vmap over targets, params, camera.
    """
    lmk = targets.landmarks
    valid = lmk.valid.astype(jnp.float32)
    weights68 = jnp.asarray(landmark_weights(config))
    n_tex = 0 if albedo is None else albedo.basis.shape[-1]
    size = config.texture_size
    skin = mean_skin_colour(targets.image, targets.mask)
    texels0 = (jnp.zeros((size, size, 3)) if albedo is not None
               else jnp.broadcast_to(skin, (size, size, 3)).astype(jnp.float32))
    light0 = jnp.zeros((9, 3), jnp.float32).at[0].set(AMBIENT_SH)
    shape0 = params.shape

    def unpack(v):
        p = dataclasses.replace(params, shape=v["shape"], expression=v["pose"]["expression"], jaw_pose=v["pose"]["jaw"],
                                left_eye_pose=v["pose"]["eyes"][:3], right_eye_pose=v["pose"]["eyes"][3:])
        return p, Camera(v["camera"][:3], v["camera"][3:], camera.fov_deg)

    def render(v):
        p, cam = unpack(v)
        vertices = flame_forward(model, p).vertices
        texture = _texture(albedo, v["texture"], v["texel"])
        out = render_mesh(vertices, model.faces, cam, uv_layout, texture, v["light"], config.raster, config.render_mode)
        row = contour_bin(cam.rotation_matrix())
        return out, p, project_landmarks(cam, vertex_landmarks(model.landmarks, vertices, row))

    def photometric_error(out):
        return masked_l1(out.image, targets.image, targets.mask * out.alpha)

    def loss_fn(v):
        out, p, proj = render(v)
        landmark = landmark_data_loss(model, proj, lmk, config.landmarks, weights68)
        data = config.photometric_weight * photometric_error(out) + config.landmark_scale * landmark
        prior = (config.expression_l2 * 0.5 * jnp.sum(p.expression**2)
                 + config.shape_offset_l2 * 0.5 * jnp.sum((p.shape - shape0) ** 2))
        if albedo is None:
            prior = prior + config.texel_smoothness * _smoothness(v["texel"])
        return valid * data + prior

    texel_schedule = optax.join_schedules([optax.constant_schedule(0.0), config.texel.schedule()], [config.texel_start])
    optimiser = grouped_adam({
        "pose": config.pose.schedule(), "camera": config.camera.schedule(), "light": config.light.schedule(),
        "shape": config.shape.schedule(), "texture": config.texture.schedule() if n_tex else None,
        "texel": texel_schedule,
    })
    variables = {
        "pose": {"expression": params.expression, "jaw": params.jaw_pose,
                 "eyes": jnp.concatenate([params.left_eye_pose, params.right_eye_pose])},
        "camera": jnp.concatenate([camera.rotation, camera.translation]),
        "light": light0, "shape": params.shape, "texture": jnp.zeros(n_tex, jnp.float32), "texel": texels0,
    }
    start_error = photometric_error(render(variables)[0])
    outcome = run_optimiser(loss_fn, variables, optimiser, config.steps)
    out, p, proj = render(outcome.variables)
    cam = unpack(outcome.variables)[1]
    status = jnp.select([~lmk.valid, ~outcome.finite], [STATUS_INVALID_INPUT, STATUS_DIVERGED_LANDMARK], STATUS_OK)
    return PhotometricResult(
        params=p, camera=cam, light=outcome.variables["light"],
        texture=_texture(albedo, outcome.variables["texture"], outcome.variables["texel"]),
        texture_coeffs=outcome.variables["texture"], render=out.image, alpha=out.alpha, landmarks=proj,
        losses=jnp.where(jnp.isfinite(outcome.losses), outcome.losses, -1.0),
        photometric_start=start_error, photometric_final=photometric_error(out),
        nme=nme_inner(proj.lmk68, lmk.lmk68), status=status.astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("config",))
def fit_photometric_batch(model: FlameModel, uv_layout: UVLayout, targets: PhotometricTargets, params: FlameParams,
                          camera: Camera, config: PhotometricConfig = PhotometricConfig(),
                          albedo: AlbedoModel | None = None) -> PhotometricResult:
    """:func:`fit_photometric` over a leading batch axis of ``targets``, ``params`` and ``camera``; jit-compiled."""
    return jax.vmap(fit_photometric, in_axes=(None, None, 0, 0, 0, None, None))(
        model, uv_layout, targets, params, camera, config, albedo)
