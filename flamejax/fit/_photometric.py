"""Photometric mode: refine a landmark fit so that the rendered, textured, SH-lit head matches the pixels.

Stage 2 of the reference's photometric mode (REFERENCE.md §6) as one optax ``partition`` over typed variables:
expression, jaw, eyes, camera, SH light, identity (L2 on its offset from the start), albedo PCA coefficients
when an albedo model is given (without one, a smooth albedo's coefficients), and a per-texel albedo (an offset on
the PCA albedo; without a PCA model on the smooth albedo, starting from the photograph's mean skin colour): baked
from the photograph at the end (``bake_texels``, one photograph's default), or fitted from step ``texel_start``
and held smooth and symmetric by a prior. :func:`fit_photometric_batch` refines a batch of landmark fits
(:func:`fit_photometric` one image).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from flamejax._typing import Array, Bool, Float, Int
from flamejax.camera import Camera
from flamejax.fit._checks import check_camera, check_params
from flamejax.fit._config import GroupSchedule, LandmarkStageConfig, WeightingConfig, _config_pytree
from flamejax.fit._landmark_fit import (Geometry, camera_labels, contour_identity_share, identity_scaled_landmark_loss,
                                        params_labels, sanitised, turned)
from flamejax.fit._optim import FROZEN, partitioned_adam, run_stage
from flamejax.fit._result import FitResult, PhotometricReport, StageReport, Status, first_failure
from flamejax.fit._targets import LandmarkTargets, check_targets, nme_inner
from flamejax.fit._visibility import weighted_targets
from flamejax.flame import FlameModel, contour_bin, embedded_points, flame_forward, project_landmarks
from flamejax.flame._layout import CONTOUR_68, EYES_68, MOUTH_68, NUM_IBUG68
from flamejax.render import (REGION_EYEBALL, REGION_FACE, REGION_FOREHEAD, REGION_OTHER, AlbedoModel, RasterConfig,
                             SmoothAlbedo, UVLayout, albedo_texture, fill_texture, render_mesh, smooth_albedo,
                             smooth_albedo_size, smooth_albedo_texture)

AMBIENT_SH = math.sqrt(4.0 * math.pi)
"""Band-0 coefficient that makes the SH shading exactly 1 everywhere (see :mod:`flamejax.render`)."""

HALF_SIZE = ((2, 1.0),)
"""Photometric levels (:attr:`PhotometricConfig.pyramid`) with every step at half the photograph's size."""


@_config_pytree("steps", "shape_start", "texel_start", "bake_texels", "texel_seen_margin", "albedo_cell", "pyramid",
                "joint_pyramid", "texture_size", "raster", "render_mode")
class PhotometricConfig:
    """Photometric stage; defaults are the reference's (REFERENCE.md §6) unless marked as additions."""

    steps: int = 128
    """Adam steps over all pyramid levels (the reference: 400 at full size, see ``pyramid``)."""
    pose: GroupSchedule = GroupSchedule(0.01)
    """Expression, jaw and eyes (the reference's 0.005, doubled for the fewer steps)."""
    camera: GroupSchedule = GroupSchedule(0.0025)
    light: GroupSchedule = GroupSchedule(0.005)
    shape: GroupSchedule = GroupSchedule(0.02)
    """Identity (the reference's 0.001 with its 0.1 offset prior barely moves it in the steps it has; 0.02 with
    ``shape_offset_l2`` 0.01 lets shading refine it: lower synthetic face error, benchmarks/RESULTS.md)."""
    shape_start: int = 32
    """flamejax addition: step from which the identity moves (expression, jaw, eyes, camera and light move from the
    first). Until the per-texel albedo is free the albedo is uniform (or the PCA's), and an identity moving from the
    start takes up the photograph's albedo pattern as shape while the light settles: started from the truth, the
    synthetic heads drifted to 0.83 mm. From step 32, one photograph's identity on the rendered heads with 3D truth
    0.829x -> 0.818x the mean head's error (better on 30 of 40 views), five photographs 0.491x -> 0.472x (one or two
    photographs of a person somewhat worse); synthetic heads with a smooth albedo about the same (1.29 -> 1.31 mm on
    four, 1.39 -> 1.37 on eight; benchmarks/RESULTS.md). 0: from the first step (before; the reference). As
    ``texel``'s from ``texel_start``, ``shape``'s schedule counts its steps from here over the whole stage."""
    texture: GroupSchedule = GroupSchedule(0.02)
    """Albedo PCA coefficients (only with an albedo model). ``FLAME_albedo_from_BFM.npz``'s components are BFM's
    scaled by its standard deviations, so Adam moves a coefficient about ``lr`` standard deviations per step: the
    reference's 0.005 over its 400 steps reaches 2, over these 128 steps 0.64. No prior holds the coefficients
    (as in the reference). Synthetic heads rendered from an albedo model that holds their albedo, with the
    offset's priors below: 1.58 -> 1.27 mm median face error (benchmarks/RESULTS.md)."""
    texel: GroupSchedule = GroupSchedule(0.005)
    texel_start: int = 64
    """Step from which the per-texel albedo moves where it is fitted (several photographs; one with ``bake_texels``
    False; the reference: 200 of 400): before it, geometry and light are fitted under the PCA albedo, or without a
    PCA model under the photograph's mean skin colour and the smooth albedo (``albedo_cell``)."""
    bake_texels: bool = True
    """flamejax addition, one photograph's stage: the per-texel albedo (or its offset on an albedo model) does not
    move during the stage (geometry and light are fitted under the smooth albedo, ``albedo_cell``, or the model's);
    at the end it is baked from the full-size picture under the fitted geometry and light (:func:`baked_appearance`:
    per texel, the pixels' colour over their shading). A per-texel albedo that moves with the geometry takes up shading
    that tells the shape. One photograph's identity on the rendered heads with 3D truth, |yaw| <= 40: 0.686x ->
    0.643x the mean head's error on the views the stage's settings were chosen on, 0.908x -> 0.821x and 0.812x ->
    0.770x on two fresh draws; synthetic heads 1.29 -> 1.16 mm (benchmarks/RESULTS.md). ``False``: the per-texel
    albedo moves from ``texel_start`` under its priors (before). The joint stage of several photographs
    (:func:`~flamejax.fit.fit_photometric_same_person`, the video tracker's keyframes) fits its one per-texel albedo
    from ``texel_start`` whatever this says (one albedo seen in several views is what ties them) and, with it,
    bakes that albedo at the end from every view it used, what only some views show left out
    (:func:`agreeing_view_sums`)."""
    bake_view_spread: float | None = 0.1
    """flamejax addition, several photographs with ``bake_texels``: the difference of albedo (mean over the colours,
    0-1) between one view's bake of a texel and the views' joint one at which that view's pixels of the texel count
    a quarter (:func:`agreeing_view_sums`). ``None``: every view's pixels count as they are. Five frames of each
    shared video as photographs of one person: each view's render error 0.61-0.71x the fitted albedo's on the
    talking heads (0.63-0.73x with ``None``); where a hand covers the mouth in two frames of five, the three clean
    frames' 0.64-0.69x (0.86-0.95x with ``None``, which bakes fingers and teeth into the lips; benchmarks/RESULTS.md,
    several photographs' albedo)."""
    albedo_cell: float | None = 0.1
    """flamejax addition, without an albedo model: a smooth albedo moves from the first step, on top of the per-texel
    one (:func:`flamejax.render.smooth_albedo`: bilinear hats this far apart on the UV map, a tenth of its width,
    mirror-symmetric, over the face and forehead; its coefficients at ``texture``'s rate, 0.004 of albedo per step at
    a hat's peak). A face's albedo is not uniform (cheeks, lips, brows, forehead), and under a uniform albedo the
    geometry takes up its changes as shading until ``texel_start``. Scratch runs: one photograph's identity on the
    rendered heads with 3D truth 0.81x -> 0.69x the mean head's error, synthetic heads 1.35 -> 1.29 mm
    (benchmarks/RESULTS.md). ``None``: uniform until ``texel_start`` (before). One photograph's stage only: the joint
    stage of several (:func:`~flamejax.fit.fit_photometric_same_person`, the video tracker's keyframes) leaves it
    out."""
    pyramid: tuple[tuple[int, float], ...] = ((4, 0.8), (2, 0.2))
    """flamejax addition: coarse to fine. Levels (downsampling factor of the photograph, share of ``steps``), run
    in order, each a fresh Adam from where the last stopped; the texture is downsampled (tent filter) to match the
    level. ``((1, 1.0),)`` is the reference (every step at full size). The default runs 102 steps at a quarter of
    the size and 26 at half: over 10x less CPU time than the reference's 400 at 256², and a lower synthetic face
    error (benchmarks/RESULTS.md); the result is rendered and scored at full size. Every step at half the size
    (``((2, 1.0),)``, about 1.8x the CPU time) fits heads the model holds better (synthetic 1.16 -> 1.05 mm; sampled
    heads better on 80 of 114 rendered views) and the two real scans worse (better on 8 of 37 views): one photograph
    keeps coarse to fine on MediaPipe's points, not after trusted ones (:func:`precise_photometric_config`). Several
    photographs use ``joint_pyramid``."""
    joint_pyramid: tuple[tuple[int, float], ...] | None = HALF_SIZE
    """flamejax addition: the levels of the joint stage of several photographs
    (:func:`~flamejax.fit.fit_photometric_same_person`, the video tracker's keyframes); ``None``: ``pyramid``'s. Every
    step at half the size: on the rendered heads with 3D truth, five photographs 0.456x -> 0.428x the mean head's
    identity error, three 0.517x -> 0.460x, a tracked clip's eight keyframes 0.65x -> 0.54x, the real scans among
    them about as before or better (benchmarks/RESULTS.md)."""
    photometric_weight: float = 100.0
    """Masked L1 photometric term (the reference's 2, raised, with ``landmark_scale`` lowered: see below)."""
    gradient_weight: float = 1.0
    """flamejax addition: the photometric term also compares the render's and the photograph's differences between
    neighbouring pixels (masked L1 of both finite differences, this times the colour term's weight). A difference
    carries the shading's edges (nose sides, cheekbones, jaw) and not the albedo's and light's slow drift, which the
    per-texel albedo takes up anyway: one photograph's identity on the rendered heads with 3D truth 0.890x ->
    0.809x the mean head's error, five photographs 0.61x -> 0.51x; synthetic heads with a smooth albedo 1.26 ->
    1.29 mm (benchmarks/RESULTS.md). 0 turns it off (the reference)."""
    landmark_scale: float = 0.1
    """Multiplies the landmark term: stage 2's (L1 on inner, contour, iris and MediaPipe points, with
    ``landmarks``' weights), the 68 points re-weighted by the reference's grouping below. That term is far
    heavier than the reference's L2 landmark term, so at scale 1 with the reference's photometric weight the
    noisy landmarks hold the geometry and the pixels barely move it; 100 and 0.1 let the shading refine it
    (synthetic face error lower than landmark mode's; benchmarks/RESULTS.md)."""
    landmarks: LandmarkStageConfig = LandmarkStageConfig()
    """The landmark term's groups and weights, and how much of the jaw contour's gradient reaches the identity
    (``contour_identity``, per view from its start pose, as in the landmark fit): MediaPipe's jaw line does not
    shape the identity of a view turned less than 40°. On the rendered heads with 3D truth, one photograph at
    |yaw| <= 40: 0.924x -> 0.882x the mean head's error (benchmarks/RESULTS.md, photometric identity)."""
    weighting: WeightingConfig = WeightingConfig()
    """flamejax addition: the landmark term's per-point weights (visibility x robust, as the landmark fit's at its
    final pose), worked out at the stage's start and held. A point on the far side of the face, or one no pose
    near the start explains, is the detector's guess; at full weight it pulls the identity at hard poses (rendered
    heads with 3D truth, |yaw| 50-75: 1.25x -> 1.18x the mean head's error, NME max 10.2 -> 9.2 %; |yaw| <= 40
    unchanged; synthetic heads with unbiased landmarks 1.57 -> 1.62 mm; benchmarks/RESULTS.md).
    ``WeightingConfig(visibility=False, robust=False)`` is the reference (every point at the targets' own
    weight)."""
    contour_weight: float = 0.5 / 1.5
    inner_weight: float = 1.0
    eye_weight: float = 3.0 / 1.5
    mouth_weight: float = 2.0 / 1.5
    """The reference's grouping (contour 0.5, inner 1.5, eyes 3.0, mouth 2.0), relative to the inner points."""
    expression_l2: float = 1e-4
    shape_offset_l2: float = 0.01
    """L2 prior on identity's offset from ``shape_anchor`` times the landmark fit's. At 0.001 the shading of
    realistic albedo (skin regions, brows, lips) pulled identity away from the truth on the rendered heads with 3D
    truth (NoW 1.18 against 1.04 mm for the landmark fit); 0.01 holds it and still refines synthetic heads
    (benchmarks/RESULTS.md)."""
    shape_anchor: float = 0.0
    """flamejax addition: where the identity prior pulls, as a multiple of the landmark fit's identity: 0 the mean
    head (FLAME's own prior), 1 the landmark fit's identity (the reference). The landmark fit's identity carries the
    detector's bias; on the rendered heads with 3D truth 0 gave one photograph 0.952x -> 0.921x the mean head's
    error, five photographs 0.592x -> 0.580x, synthetic heads 1.58 -> 1.57 mm (benchmarks/RESULTS.md)."""
    identity_max_yaw: float = 45.0
    """flamejax addition (single-image stage): a photograph whose landmark fit is turned further than this
    (|yaw|, degrees) leaves the identity to the landmark fit; the pixels' pull on it falls off linearly from 5
    degrees below to 5 above. On the rendered heads with 3D truth at |yaw| 50-75 the pixels, which show one cheek
    and the nose only in profile, moved the identity away from the truth with every setting tried (1.25x the mean
    head's error with the landmark fit's 1.04x; benchmarks/RESULTS.md). With the albedo baked (``bake_texels``) the
    pixels helped on those views (1.01x -> 0.94x) but not on two fresh draws (0.89x -> 0.90x, 1.08x -> 1.18x). 180
    turns it off."""
    texel_smoothness: float = 20.0
    """flamejax addition: squared-gradient prior on the per-texel albedo (with a PCA model, on its per-texel
    offset: the reference leaves the offset free, and it took up shading that tells the shape), where it is fitted
    (several photographs; one with ``bake_texels`` False)."""
    texel_symmetry: float = 1000.0
    """flamejax addition: squared difference between each per-texel albedo (or offset on a PCA model) and its
    mirror texel across the face (on a UV layout with ``mirror_u``). A face's albedo is nearly symmetric and its shading
    under a side light is not, so the albedo cannot take up the shading that tells the shape: one photograph's
    identity 1.09x -> 0.95x the mean head's error on the rendered heads with 3D truth, five photographs 0.63x ->
    0.59x (benchmarks/RESULTS.md). 0 turns it off (an albedo that is not symmetric, e.g. make-up on one side)."""
    eyeball_weight: float = 1.0
    """flamejax addition: weight of eyeball pixels inside the eye openings (the photograph's mask leaves the
    openings out; with face regions on the UV layout the eyeballs get their own albedo from these pixels)."""
    hair_darkness: float = 0.55
    hair_chroma: float = 0.06
    """flamejax addition: forehead pixels count only where the photograph is skin-coloured: luminance above
    ``hair_darkness`` times the mean skin colour's and rgb chromaticity within ``hair_chroma`` of it, so that hair
    over the forehead is not baked into the texture."""
    hair_spread: float | None = 2.5
    """flamejax addition: forehead pixels count only where the photograph's tint is also as close to this person's
    skin as most of the face's is: rgb chromaticity off the mean skin colour by less than this many times its median
    inside the photograph's face mask (``hair_chroma`` stays the bound). Hair about as light as skin and close to
    its tint (blond hair, a brown fringe's highlights) passes the fixed test and fails this one. Decided on the
    full-size picture and averaged down to the pyramid's coarser levels. ``None``: the fixed colour test alone."""
    texel_seen_margin: int | None = 1
    """flamejax addition: the pixels move only the texels that a weighted pixel of the full-size picture samples at
    the stage's start, and those within this many texels of them (:func:`seen_texels`); the others follow the
    albedo's priors alone. The coarse pyramid levels' downsampling passes tiny gradients to texels no pixel shows,
    and Adam moves each texel as fast whatever its gradient's size: they came out as dots along the jaw below the
    part the photograph shows, and as blotches along the forehead's edge. With the margin: no dots; identity on the
    rendered heads with 3D truth the same (one photograph 0.809x -> 0.822x the mean head's error, mean 0.966 ->
    0.967 mm; five photographs 0.508x -> 0.489x), synthetic heads 1.33 -> 1.31 mm (benchmarks/RESULTS.md). ``None``:
    every texel moves with the pixels (before)."""
    fill_unseen: bool = True
    """flamejax addition, without an albedo model: at the end, the albedo of the texels no weighted pixel showed
    (``texel_seen_margin``; scalp, hair-covered forehead, ears, neck, the far side of a turned face) is filled from
    the fitted texels around it (:func:`flamejax.render.fill_texture`); eyeballs keep theirs. Before, those texels
    kept the photograph's mean colour, and the texture and the textured render showed a step of colour where the
    fitted albedo ended. The fit itself is unchanged (those texels carry no weight). ``False``, or
    ``texel_seen_margin`` None: keep them."""
    texture_size: int = 256
    raster: RasterConfig = RasterConfig(image_size=256)
    """Hard mode uses one face per pixel and no blur whatever this says; soft mode uses it as is."""
    render_mode: str = "hard"
    """``"hard"`` (the reference: loss inside the silhouette) or ``"soft"`` (SoftRas: silhouette gradients)."""

    def with_steps(self, steps: int) -> "PhotometricConfig":
        """This stage over ``steps`` steps, the identity starting no later than a quarter of them and the per-texel
        albedo no later than half."""
        return dataclasses.replace(self, steps=steps, shape_start=min(self.shape_start, steps // 4),
                                   texel_start=min(self.texel_start, steps // 2))

    def __post_init__(self) -> None:
        if isinstance(self.shape_start, int) and self.shape_start < 0:
            raise ValueError(f"shape_start must be a step >= 0, got {self.shape_start!r}")
        margin = self.texel_seen_margin
        if margin is not None and (not isinstance(margin, int) or margin < 0):
            raise ValueError(f"texel_seen_margin must be None or a whole number of texels >= 0, got {margin!r}")
        if self.albedo_cell is not None and not 0.0 < self.albedo_cell <= 1.0:
            raise ValueError(f"albedo_cell must be None or a spacing in (0, 1] of the UV map, got {self.albedo_cell!r}")
        for name in ("hair_spread", "bake_view_spread"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not value > 0:  # not when traced (a pytree)
                raise ValueError(f"{name} must be None or > 0, got {value!r}")
        for name in ("pyramid", "joint_pyramid"):
            levels = getattr(self, name)
            if levels is None and name == "joint_pyramid":
                continue
            if not _valid_levels(levels):
                raise ValueError(f"{name} must be levels (downsampling factor, a whole number >= 1; share of the steps "
                                 f"> 0), e.g. ((2, 1.0),); got {levels!r}")
            object.__setattr__(self, name, tuple((int(factor), float(share)) for factor, share in levels))  # hashable


def _valid_levels(levels) -> bool:
    try:
        return len(levels) > 0 and all(int(factor) == factor >= 1 and share > 0 for factor, share in levels)
    except (TypeError, ValueError):
        return False


def precise_photometric_config(base: PhotometricConfig = PhotometricConfig()) -> PhotometricConfig:
    """``base`` after a landmark fit on :func:`~flamejax.fit.precise_landmarks_config` (hand annotations, a
    calibrated rig, synthetic heads): the jaw contour and the profile shape the identity at every yaw (as the
    precise landmark fit's), the identity prior pulls towards the landmark fit's identity, not the mean head's, and
    the landmark term weighs 3x more. ``base``'s defaults guard against MediaPipe's bias (its jaw line, the identity
    fitted to it, its points against the pixels); points without that bias are worth following. After the precise
    landmark fit, synthetic heads 1.53 -> 1.37 mm median face error, rendered heads with realistic albedo 0.69x ->
    0.56x the mean head's identity error (benchmarks/RESULTS.md). Every step at half the size (``pyramid``):
    synthetic heads 1.16 -> 1.05 mm (8 heads), the rendered heads fitted to their true points 0.457x -> 0.419x (the
    two real scans among them as before: better on 5 of 10 views)."""
    return dataclasses.replace(base, shape_anchor=1.0, landmark_scale=3.0 * base.landmark_scale, pyramid=HALF_SIZE,
                               landmarks=dataclasses.replace(base.landmarks, contour_identity=1.0,
                                                             profile_identity=1.0))


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


def mean_colour(image: Float[Array, "s s 3"], weight: Float[Array, "s s"], fallback=0.0) -> Float[Array, "3"]:
    """Mean colour of ``image`` under the pixel weights ``weight``; ``fallback`` where every weight is 0."""
    total = jnp.sum(weight)
    mean = jnp.sum(image * weight[..., None], axis=(0, 1)) / jnp.maximum(total, 1.0)
    return jnp.where(total > 0, mean, fallback)


def _sanitised(targets: PhotometricTargets) -> PhotometricTargets:
    """Non-finite pixels leave the mask (and are zeroed); non-finite landmarks make the targets invalid."""
    finite = jnp.all(jnp.isfinite(targets.image), axis=-1) & jnp.isfinite(targets.mask)
    return PhotometricTargets(image=jnp.where(finite[..., None], targets.image, 0.0),
                              mask=jnp.where(finite, targets.mask, 0.0), landmarks=sanitised(targets.landmarks))


def albedo_basis(uv_layout: UVLayout, config: PhotometricConfig,
                 albedo: AlbedoModel | None) -> AlbedoModel | SmoothAlbedo | None:
    """The linear albedo the stage's ``texture_coeffs`` drive: the user's albedo model, else the smooth albedo of
    ``config.albedo_cell``, else none."""
    if albedo is not None or config.albedo_cell is None:
        return albedo
    return smooth_albedo(uv_layout, config.albedo_cell, config.texture_size)


def reported_coefficients(basis: AlbedoModel | SmoothAlbedo | None, coeffs: Float[Array, "n"]) -> Float[Array, "m"]:
    """What a fit reports as ``texture_coeffs``: the albedo model's coefficients; none for the smooth albedo, whose
    part is in the reported texture."""
    return coeffs if isinstance(basis, AlbedoModel) else jnp.zeros(0, jnp.float32)


def _texture(basis: AlbedoModel | SmoothAlbedo | None, appearance: Appearance):
    """The albedo: ``basis``'s (:func:`albedo_basis`) plus the per-texel one. An appearance without coefficients
    (a texture given whole) leaves the smooth albedo out."""
    texture = appearance.texels
    if isinstance(basis, AlbedoModel):
        texture = texture + albedo_texture(basis, appearance.texture_coeffs)
    elif basis is not None and appearance.texture_coeffs.shape[-1]:
        texture = texture + smooth_albedo_texture(basis, appearance.texture_coeffs)
    return jnp.clip(texture, 0.0, 1.0)


BAKE_RIDGE = 0.1
"""How far :func:`baked_appearance` pulls a texel towards the colour of its neighbourhood: a texel that this share of
a typical texel's pixels sample is baked halfway."""
BAKE_NEIGHBOURHOOD = 2
"""Passes of a [1, 2, 1] / 4 tent (5 x 5 texels) over which :func:`baked_appearance` pools the pixels of a texel's
neighbours in its own region (skin or eyeball)."""


def _tent_blurred(x: Float[Array, "t t c"], passes: int) -> Float[Array, "t t c"]:
    for _ in range(passes):
        for _rows_then_columns in range(2):
            padded = jnp.pad(x, ((1, 1), (0, 0), (0, 0)), mode="edge")
            x = jnp.swapaxes(0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:], 0, 1)
    return x


def _pooled_in_regions(sums: Float[Array, "t t c"], texel_region: Int[Array, "t t"] | None) -> Float[Array, "t t c"]:
    """``sums`` blurred over :data:`BAKE_NEIGHBOURHOOD`, each texel pooling only texels of its own kind: skin (face
    and forehead), eyeball, or the rest (one blur of the kinds side by side)."""
    if texel_region is None:
        return _tent_blurred(sums, BAKE_NEIGHBOURHOOD)
    kind = jnp.where(texel_region == REGION_FOREHEAD, REGION_FACE, texel_region)
    member = jnp.stack([kind == region for region in (REGION_OTHER, REGION_FACE, REGION_EYEBALL)], -1)
    member = member.astype(sums.dtype)[..., None, :]
    size, channels = sums.shape[0], sums.shape[-1]
    pooled = _tent_blurred((sums[..., None] * member).reshape(size, size, -1), BAKE_NEIGHBOURHOOD)
    return jnp.sum(pooled.reshape(size, size, channels, -1) * member, axis=-1)


def baked_texels(colour_sum: Float[Array, "t t 3"], shading_sum: Float[Array, "t t 3"], current: Float[Array, "t t 3"],
                 texel_region: Int[Array, "t t"] | None) -> tuple[Float[Array, "t t 3"], Bool[Array, "t t"]]:
    """Per texel and colour, the albedo that the pixels sampling it give (their weighted colour ``colour_sum`` over
    their weighted shading ``shading_sum``), pulled by :data:`BAKE_RIDGE` towards the same ratio over the texel's
    neighbourhood in its region (:func:`_pooled_in_regions`), or towards ``current`` where no neighbour is sampled
    either; and whether the texel is baked (sampled, or a modelled texel with a sampled neighbour)."""
    sampled = shading_sum > 1e-6
    typical = jnp.nanmedian(jnp.where(sampled, shading_sum, jnp.nan))
    typical = jnp.where(jnp.isnan(typical), 1.0, typical)
    local_colour, local_shading = jnp.split(_pooled_in_regions(jnp.concatenate([colour_sum, shading_sum], -1),
                                                               texel_region), 2, axis=-1)
    near = local_shading > 1e-3 * typical
    local = jnp.where(near, local_colour / jnp.where(near, local_shading, 1.0), current)
    ridge = BAKE_RIDGE * typical
    baked = jnp.clip((colour_sum + ridge * local) / (shading_sum + ridge), 0.0, 1.0)
    modelled = True if texel_region is None else texel_region != REGION_OTHER
    return baked, jnp.all(sampled, axis=-1) | (jnp.all(near, axis=-1) & modelled)


BAKE_VIEW_ROUNDS = 3
"""Reweighting rounds of :func:`agreeing_view_sums`."""


def agreeing_view_sums(colour_sums: Float[Array, "views t t 3"], shading_sums: Float[Array, "views t t 3"],
                       view_weight: Float[Array, "views"], current: Float[Array, "t t 3"],
                       texel_region: Int[Array, "t t"] | None, spread: float | Float[Array, ""] | None
                       ) -> tuple[Float[Array, "t t 3"], Float[Array, "t t 3"]]:
    """Several views' :func:`bake_sums` of one albedo added up per texel, each view's weighted down where its own
    bake of the texel (:func:`baked_texels`) is far from the views' joint one: what covers the face in some views
    only (a hand, hair that moves, teeth behind lips the fit has closed, a highlight on glasses) is not the albedo.
    The joint bake starts from the median of the views' and is refined by :data:`BAKE_VIEW_ROUNDS` rounds of
    Geman-McClure weights at ``spread`` (:attr:`PhotometricConfig.bake_view_spread`; iteratively reweighted least
    squares: a view 5 spreads off counts 1/676); ``view_weight`` scales each view (0: not used). ``spread`` None:
    the views' sums times ``view_weight``, added up."""
    if spread is None:
        return tuple(jnp.einsum("v,v...->...", view_weight, sums) for sums in (colour_sums, shading_sums))
    per_view, known = jax.vmap(lambda c, s: baked_texels(c, s, current, texel_region))(colour_sums, shading_sums)
    known = known & (view_weight[:, None, None] > 0)
    joint = jnp.nanmedian(jnp.where(known[..., None], per_view, jnp.nan), axis=0)
    joint = jnp.where(jnp.isnan(joint), current, joint)
    for _ in range(BAKE_VIEW_ROUNDS):
        distance = jnp.mean(jnp.abs(per_view - joint), axis=-1)
        weight = view_weight[:, None, None] / (1.0 + (distance / spread) ** 2) ** 2
        colour_sum = jnp.einsum("vij,vijc->ijc", weight, colour_sums)
        shading_sum = jnp.einsum("vij,vijc->ijc", weight, shading_sums)
        joint = baked_texels(colour_sum, shading_sum, current, texel_region)[0]
    return colour_sum, shading_sum


def bake_sums(model: FlameModel, uv_layout: UVLayout, config: PhotometricConfig, v: PhotometricVariables,
              level: _LevelTargets) -> tuple[Float[Array, "t t 3"], Float[Array, "t t 3"]]:
    """Per texel and colour, the sums over the pixels of the full-size picture ``level`` that sample it, the head
    posed and lit by ``v`` and the pixels weighted as in the photometric term: of their colour, and of their
    shading (:func:`baked_texels`' inputs; one diagonal step of the linear problem). Sums of several views of one
    albedo add up."""
    full = level.image.shape[0]

    def render(texture):
        whole = PhotometricVariables(v.geometry, Appearance(v.appearance.light, jnp.zeros(0, jnp.float32), texture))
        out, _ = _render_view(model, uv_layout, config, None, whole, full, full)
        return out.image, out

    size = config.texture_size
    shading, pull_back, out = jax.vjp(render, jnp.ones((size, size, 3), jnp.float32), has_aux=True)
    weight = _pixel_weights(level, out.fragments.face_index[..., 0], out.alpha, uv_layout.face_region, config)
    colour_sum, = pull_back(weight[..., None] * level.image)
    shading_sum, = pull_back(weight[..., None] * shading)
    return colour_sum, shading_sum


def baked_appearance(uv_layout: UVLayout, basis: AlbedoModel | SmoothAlbedo | None, appearance: Appearance,
                     colour_sum: Float[Array, "t t 3"], shading_sum: Float[Array, "t t 3"]
                     ) -> tuple[Appearance, Float[Array, "t t"]]:
    """``appearance`` with the per-texel albedo baked from the pixels' sums (:func:`bake_sums`, of one view or
    added over several; :attr:`PhotometricConfig.bake_texels`), and 1 on the texels baked (0 elsewhere):
    :func:`baked_texels`. So a texel few pixels sample (a slanted surface, where a pixel spans several texels) takes
    the pictures' colour around it rather than the smooth albedo's, and one that none samples but its neighbours do
    takes theirs. A texel with no sampled neighbour takes its mirror texel's where that one is baked and in the same
    region; the others keep their albedo."""
    current = _texture(basis, appearance)
    texel_region = uv_layout.texel_region(current.shape[0])
    baked, known = baked_texels(colour_sum, shading_sum, current, texel_region)
    if uv_layout.mirror_u is not None and texel_region is not None:
        paired = _mirror_pairs(texel_region, uv_layout.mirror_u)
        mirror_known = _mirrored_columns(known[..., None].astype(jnp.float32), uv_layout.mirror_u)[..., 0] > 0.999
        from_mirror = ~known & mirror_known & paired
        baked = jnp.where(from_mirror[..., None], _mirrored_columns(baked, uv_layout.mirror_u), baked)
        known = known | from_mirror
    texels = jnp.where(known[..., None], appearance.texels + (baked - current), appearance.texels)
    return dataclasses.replace(appearance, texels=texels), known.astype(jnp.float32)


def filled_appearance(uv_layout: UVLayout, basis: AlbedoModel | SmoothAlbedo | None, appearance: Appearance,
                      seen: Float[Array, "t t"] | None, fill: bool | Bool[Array, ""] = True) -> Appearance:
    """``appearance`` with the albedo of every texel not ``seen`` (:func:`seen_texels`) filled from the seen ones
    around it (:attr:`PhotometricConfig.fill_unseen`, ``fill``); the eyeballs' texels are kept and are not a
    source. With an albedo model, whose albedo covers the whole head, or without ``seen``, unchanged."""
    if isinstance(basis, AlbedoModel) or seen is None:
        return appearance
    texture = _texture(basis, appearance)
    known = seen > 0
    texel_region = uv_layout.texel_region(texture.shape[0])
    if texel_region is not None:
        eyeball = texel_region == REGION_EYEBALL
        source, keep = known & ~eyeball, known | eyeball
    else:
        source = keep = known
    filled = fill_texture(texture, source.astype(jnp.float32))
    smooth_part = (smooth_albedo_texture(basis, appearance.texture_coeffs)
                   if basis is not None and appearance.texture_coeffs.shape[-1] else 0.0)
    texels = jnp.where(keep[..., None] | ~jnp.asarray(fill), appearance.texels, filled - smooth_part)
    return dataclasses.replace(appearance, texels=texels)


def masked_l1(render, image, weight) -> Float[Array, ""]:
    return jnp.sum(jnp.abs(render - image).mean(-1) * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def masked_gradient_l1(render: Float[Array, "h w 3"], image: Float[Array, "h w 3"],
                       weight: Float[Array, "h w"]) -> Float[Array, ""]:
    """:func:`masked_l1` of the differences between horizontally and between vertically neighbouring pixels (a
    difference counts with the product of its two pixels' weights), summed over both directions."""
    total = jnp.zeros((), render.dtype)
    for axis in (0, 1):
        size = weight.shape[axis]
        pair = (jax.lax.slice_in_dim(weight, 1, size, axis=axis)
                * jax.lax.slice_in_dim(weight, 0, size - 1, axis=axis))
        total = total + masked_l1(jnp.diff(render, axis=axis), jnp.diff(image, axis=axis), pair)
    return total


def _from_step(group: GroupSchedule, start: int, first_step: int) -> optax.Schedule:
    """``group``'s learning rate from the stage's step ``start`` on (0 before it, its own count from there), in a
    pyramid level whose first step is ``first_step`` of the whole stage."""
    schedule = group.schedule()
    return lambda count: jnp.where(count + first_step < start, 0.0, schedule(count + first_step - start))


def level_steps(config: PhotometricConfig) -> list[int]:
    """Steps of each pyramid level: its share of ``config.steps`` (the last level takes what rounding leaves)."""
    shares = [share for _, share in config.pyramid]
    steps = [int(round(config.steps * s / sum(shares))) for s in shares[:-1]]
    return steps + [max(config.steps - sum(steps), 0)]


def _downsample(image: Float[Array, "s s ..."], factor: int) -> Float[Array, "t t ..."]:
    """Side divided by ``factor`` with an antialiasing tent filter (its transpose spreads a coarse texel's
    gradient over overlapping fine texels, so a texture fitted through it shows no block edges)."""
    if factor == 1:
        return image
    side = image.shape[0] // factor
    return jax.image.resize(image, (side, side, *image.shape[2:]), "linear", antialias=True)


def _inside_polygon(points: Float[Array, "n 2"], size: int) -> Float[Array, "s s"]:
    """1 at the pixel centres of a ``size``² image inside the closed polygon ``points`` (pixels), else 0
    (even-odd rule)."""
    centre = jnp.arange(size, dtype=jnp.float32) + 0.5
    x, y = centre[None, :, None], centre[:, None, None]
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = jnp.roll(x0, -1), jnp.roll(y0, -1)
    straddles = (y0 > y) != (y1 > y)
    crossing = x0 + (y - y0) * (x1 - x0) / jnp.where(y1 == y0, 1.0, y1 - y0)
    return (jnp.sum(straddles & (x < crossing), axis=-1) % 2).astype(jnp.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _LevelTargets:
    """One pyramid level's pictures and the pixel weights that depend on the photograph only."""

    image: Float[Array, "s s 3"]
    mask: Float[Array, "s s"]
    """The photograph's face mask without the mouth opening."""
    eyes: Float[Array, "s s"]
    """Inside the eye openings (68-point eye contours): where eyeball pixels count."""
    hair_free: Float[Array, "s s"]
    """The share of each pixel that may be skin by its colour (0 on hair over the forehead)."""


def _level_targets(targets: PhotometricTargets, skin: Float[Array, "3"], size: int,
                   config: PhotometricConfig) -> _LevelTargets:
    image = _downsample(targets.image, targets.image.shape[0] // size)
    mask = _downsample(targets.mask, targets.mask.shape[0] // size)
    mouth = _inside_polygon(_landmark_pixels(targets, size)[60:68], size)
    hair_free = _downsample(_hair_free(targets.image, targets.mask, skin, config), targets.image.shape[0] // size)
    return _LevelTargets(image, mask * (1.0 - mouth), _eye_openings(targets, size), hair_free)


def _landmark_pixels(targets: PhotometricTargets, size: int) -> Float[Array, "68 2"]:
    return (targets.landmarks.lmk68 + 1.0) * (size / 2.0)


def _eye_openings(targets: PhotometricTargets, size: int) -> Float[Array, "s s"]:
    """Inside either eye's 68-point contour, at ``size``."""
    points = _landmark_pixels(targets, size)
    return jnp.maximum(_inside_polygon(points[36:42], size), _inside_polygon(points[42:48], size))


_CHROMA_FLOOR = 0.01
"""Least reference chromaticity offset for :attr:`PhotometricConfig.hair_spread`: a face of one flat colour has
none."""


def _hair_free(image: Float[Array, "s s 3"], mask: Float[Array, "s s"], skin: Float[Array, "3"],
               config: PhotometricConfig) -> Float[Array, "s s"]:
    """1 where a pixel of the full-size picture may be forehead skin (:attr:`PhotometricConfig.hair_darkness`,
    ``hair_chroma``, ``hair_spread``), else 0."""
    weights = jnp.array([0.299, 0.587, 0.114], jnp.float32)
    darkness = jnp.sum(image * weights, -1) / jnp.maximum(jnp.sum(skin * weights), 1e-3)
    chroma = image / jnp.maximum(jnp.sum(image, -1, keepdims=True), 1e-3)
    skin_chroma = skin / jnp.maximum(jnp.sum(skin), 1e-3)
    chroma_off = jnp.max(jnp.abs(chroma - skin_chroma), axis=-1)
    bound = config.hair_chroma
    if config.hair_spread is not None:
        typical = jnp.nanmedian(jnp.where(mask > 0.5, chroma_off, jnp.nan))
        typical = jnp.maximum(jnp.where(jnp.isnan(typical), 0.0, typical), _CHROMA_FLOOR)
        bound = jnp.minimum(bound, config.hair_spread * typical)
    return ((darkness > config.hair_darkness) & (chroma_off < bound)).astype(jnp.float32)


def _pixel_weights(level: _LevelTargets, face_index: Int[Array, "s s"], alpha: Float[Array, "s s"],
                   face_region: Int[Array, "f"] | None, config: PhotometricConfig) -> Float[Array, "s s"]:
    """Where the photometric loss counts. With regions: face skin inside the photograph's mask, forehead skin
    only where the photograph is not hair-coloured, eyeballs inside the eye openings; nothing on hair, ears, neck,
    the back of the head or the mouth opening. Without: the photograph's mask on the whole rendered head."""
    if face_region is None:
        return level.mask * alpha
    region = jnp.where(face_index >= 0, face_region[jnp.maximum(face_index, 0)], REGION_OTHER)
    skin = (region == REGION_FACE) + (region == REGION_FOREHEAD) * level.hair_free
    eyeball = (region == REGION_EYEBALL).astype(jnp.float32) * level.eyes * config.eyeball_weight
    return (skin * level.mask + eyeball) * alpha


def _smoothness(texels: Float[Array, "t t 3"], texel_region: Int[Array, "t t"] | None) -> Float[Array, ""]:
    """Mean squared difference of neighbouring texels, except across an eyeball's border (eyes and skin do not
    blur into each other; skin texels the loss does not see, e.g. under hair, take their neighbours' colour)."""
    dy, dx = texels[1:] - texels[:-1], texels[:, 1:] - texels[:, :-1]
    if texel_region is not None:
        eye = texel_region == REGION_EYEBALL
        dy = dy * (eye[1:] == eye[:-1])[..., None]
        dx = dx * (eye[:, 1:] == eye[:, :-1])[..., None]
    return jnp.mean(dy**2) + jnp.mean(dx**2)


def _mirrored_columns(texels: Float[Array, "t t c"], mirror_u: float) -> Float[Array, "t t c"]:
    """Each texel's mirror image about the layout's axis ``u = mirror_u`` (linear between columns)."""
    size = texels.shape[1]
    source = 2.0 * mirror_u * size - 1.0 - jnp.arange(size, dtype=jnp.float32)
    left = jnp.clip(jnp.floor(source), 0, size - 2).astype(jnp.int32)
    right_share = jnp.clip(source - left, 0.0, 1.0)[None, :, None]
    return texels[:, left] * (1.0 - right_share) + texels[:, left + 1] * right_share


def _mirror_pairs(texel_region: Int[Array, "t t"], mirror_u: float) -> Bool[Array, "t t"]:
    """Texels of a modelled region whose mirror texel lies in the same region."""
    region = texel_region.astype(jnp.float32)[..., None]
    return (texel_region != REGION_OTHER) & (_mirrored_columns(region, mirror_u)[..., 0] == texel_region)


def _asymmetry(texels: Float[Array, "t t 3"], mirror_u: float, paired: Bool[Array, "t t"] | None) -> Float[Array, ""]:
    """Mean squared difference between texels and their mirror texels over the ``paired`` ones (all texels when
    ``None``: no regions)."""
    difference = jnp.sum((texels - _mirrored_columns(texels, mirror_u)) ** 2, axis=-1)
    if paired is None:
        return jnp.mean(difference)
    return jnp.sum(jnp.where(paired, difference, 0.0)) / jnp.maximum(jnp.sum(paired), 1)


def texel_prior(uv_layout: UVLayout, config: PhotometricConfig) -> Callable[[Float[Array, "t t 3"]], Float[Array, ""]]:
    """The per-texel albedo's prior (or its offset's on a PCA albedo model), as a function of the texels:
    smoothness, and symmetry where the layout has an axis. The texels' regions and mirror pairs are worked out here,
    once, not in every step of the loss."""
    texel_region = uv_layout.texel_region(config.texture_size)
    mirror_u = uv_layout.mirror_u
    paired = None if texel_region is None or mirror_u is None else _mirror_pairs(texel_region, mirror_u)

    def prior(texels: Float[Array, "t t 3"]) -> Float[Array, ""]:
        value = config.texel_smoothness * _smoothness(texels, texel_region)
        if mirror_u is not None:
            value = value + config.texel_symmetry * _asymmetry(texels, mirror_u, paired)
        return value

    return prior


def scaled_gradient(x: Array, scale: Float[Array, "..."]) -> Array:
    """``x`` itself, with the gradient through it multiplied by ``scale`` (0: a constant to the optimiser;
    an array scales each element it broadcasts to)."""
    return jax.lax.stop_gradient(x) + scale * (x - jax.lax.stop_gradient(x))


def identity_share(camera: Camera, config: PhotometricConfig) -> Float[Array, ""]:
    """How much of the pixels' and priors' gradient reaches the identity of a photograph seen by ``camera``
    (:attr:`PhotometricConfig.identity_max_yaw`): 1 up to 5 degrees below the limit, 0 from 5 above."""
    return 1.0 - turned(camera, (config.identity_max_yaw - 5.0, config.identity_max_yaw + 5.0))


def identity_prior(start_shape: Float[Array, "n_shape"], config: PhotometricConfig
                   ) -> Callable[[Float[Array, "n_shape"]], Float[Array, ""]]:
    """The identity's prior as a function of the identity: L2 (``shape_offset_l2``) on its offset from
    ``shape_anchor`` times ``start_shape`` (the landmark fit's identity), the anchor worked out once per fit."""
    anchor = config.shape_anchor * start_shape

    def prior(shape: Float[Array, "n_shape"]) -> Float[Array, ""]:
        return config.shape_offset_l2 * 0.5 * jnp.sum((shape - anchor) ** 2)

    return prior


def _ambient_light() -> Float[Array, "9 3"]:
    """SH coefficients of a light that shades every normal 1."""
    return jnp.zeros((9, 3), jnp.float32).at[0].set(AMBIENT_SH)


def start_appearance(uv_layout: UVLayout, targets: PhotometricTargets, config: PhotometricConfig,
                     albedo: AlbedoModel | None = None) -> Appearance:
    """The photometric stage's default start for one picture: ambient light and the mean PCA albedo; without an
    albedo model a uniform albedo of the picture's mean skin colour (inside its mask, the smooth albedo's
    coefficients 0), and with face regions on ``uv_layout`` the eyeballs the mean colour inside the 68-point eye
    openings."""
    targets = _sanitised(targets)
    size = config.texture_size
    skin = mean_colour(targets.image, targets.mask)
    if albedo is not None:
        n_tex = albedo.basis.shape[-1]
        texels = jnp.zeros((size, size, 3), jnp.float32)
    else:
        n_tex = 0 if config.albedo_cell is None else smooth_albedo_size(uv_layout, config.albedo_cell)
        texels = jnp.broadcast_to(skin, (size, size, 3)).astype(jnp.float32)
        texel_region = uv_layout.texel_region(size)
        if texel_region is not None:
            eyes = _eye_openings(targets, targets.image.shape[0])
            texels = jnp.where((texel_region == REGION_EYEBALL)[..., None], mean_colour(targets.image, eyes, skin),
                               texels)
    return Appearance(light=_ambient_light(),
                      texture_coeffs=jnp.zeros(n_tex, jnp.float32), texels=texels)


def _render_view(model: FlameModel, uv_layout: UVLayout, config: PhotometricConfig,
                 albedo: AlbedoModel | SmoothAlbedo | None,
                 v: PhotometricVariables, image_size: int, full_size: int):
    """One view rendered at ``image_size`` (the texture downsampled from ``full_size`` to match) and its
    projected landmarks."""
    p, cam = v.geometry.params, v.geometry.camera
    vertices = flame_forward(model, p).vertices
    texture = _texture(albedo, v.appearance)
    out = render_mesh(vertices, model.faces, cam, uv_layout, _downsample(texture, max(full_size // image_size, 1)),
                      v.appearance.light, dataclasses.replace(config.raster, image_size=image_size),
                      config.render_mode)
    points = embedded_points(model.landmarks, vertices, contour_bin(cam.rotation_matrix()))
    return out, project_landmarks(cam, points)


def seen_texels(model: FlameModel, uv_layout: UVLayout, config: PhotometricConfig, geometry: Geometry,
                level: _LevelTargets) -> Float[Array, "t t"]:
    """1 on the ``config.texture_size``² texels that a pixel of ``level`` (the full-size picture) with a weight in
    the photometric term samples, the head posed by ``geometry``, and on those within ``config.texel_seen_margin``
    texels of them; 0 elsewhere."""
    size, full_size = config.texture_size, level.image.shape[0]

    def weighted_sum(texels):
        view = PhotometricVariables(geometry, Appearance(_ambient_light(), jnp.zeros(0, jnp.float32), texels))
        out, _ = _render_view(model, uv_layout, config, None, view, full_size, full_size)
        weight = _pixel_weights(level, out.fragments.face_index[..., 0], out.alpha, uv_layout.face_region, config)
        return jnp.sum(out.image.mean(-1) * weight)

    coverage = jnp.sum(jax.grad(weighted_sum)(jnp.full((size, size, 3), 0.5, jnp.float32)), -1)
    width = 2 * (config.texel_seen_margin or 0) + 1
    seen = jax.lax.reduce_window((coverage > 0).astype(jnp.float32), 0.0, jax.lax.max, (width, width), (1, 1), "SAME")
    return jax.lax.stop_gradient(seen)


def _photometric_error(out, level: _LevelTargets, face_region: Int[Array, "f"] | None, config: PhotometricConfig,
                       gradient_weight: float | Float[Array, ""] | None = None) -> Float[Array, ""]:
    """Masked L1 of the pixels (``gradient_weight`` None: what the stage reports), plus ``gradient_weight`` times
    the same of the neighbouring pixels' differences (what it minimises: ``config.gradient_weight``)."""
    weight = _pixel_weights(level, out.fragments.face_index[..., 0], out.alpha, face_region, config)
    error = masked_l1(out.image, level.image, weight)
    if gradient_weight is None:
        return error
    return error + gradient_weight * masked_gradient_l1(out.image, level.image, weight)


def _view_data_loss(model: FlameModel, uv_layout: UVLayout, config: PhotometricConfig,
                    albedo: AlbedoModel | SmoothAlbedo | None,
                    v: PhotometricVariables, level: _LevelTargets, landmarks: LandmarkTargets, full_size: int,
                    contour_share: Float[Array, ""], seen: Float[Array, "t t"] | None) -> Float[Array, ""]:
    """The stage's data term on one view: weighted :func:`_photometric_error` with its gradient term, plus the scaled
    landmark term, whose jaw contour passes ``contour_share`` of its gradient into the identity
    (:func:`contour_identity_share` of the view's start camera). Only the ``seen`` texels (:func:`seen_texels`;
    None: all) get its gradient."""
    if seen is not None:
        texels = scaled_gradient(v.appearance.texels, seen[..., None])
        v = dataclasses.replace(v, appearance=dataclasses.replace(v.appearance, texels=texels))
    out, projected = _render_view(model, uv_layout, config, albedo, v, level.image.shape[0], full_size)
    landmark, _ = identity_scaled_landmark_loss(model, v.geometry.params, v.geometry.camera, projected, landmarks,
                                                config.landmarks, contour_share, landmark_weights(config))
    return (config.photometric_weight
            * _photometric_error(out, level, uv_layout.face_region, config, config.gradient_weight)
            + config.landmark_scale * landmark)


def _run_pyramid(loss_fn: Callable[[object, _LevelTargets], Float[Array, ""]], variables, labels,
                 config: PhotometricConfig, level_at: Callable[[int], _LevelTargets]) -> tuple[object, StageReport]:
    """The stage's coarse-to-fine optimisation: per pyramid level (``level_at(factor)`` gives its targets) a
    fresh partitioned Adam from where the last level stopped; the best variables and one report of all levels."""
    best, reports, first_step = variables, [], 0
    for (factor, _), steps in zip(config.pyramid, level_steps(config)):
        if steps == 0:
            continue
        level = level_at(factor)
        optimiser = partitioned_adam({"pose": config.pose.schedule(), "camera": config.camera.schedule(),
                                      "light": config.light.schedule(),
                                      "shape": _from_step(config.shape, config.shape_start, first_step),
                                      "texture": config.texture.schedule(),
                                      "texel": _from_step(config.texel, config.texel_start, first_step)}, labels)
        best, report = run_stage(lambda v, level=level: loss_fn(v, level), best, optimiser, steps)
        reports.append((first_step, report))
        first_step += steps
    return best, _joined(reports)


def _refine_one(model: FlameModel, uv_layout: UVLayout, targets: PhotometricTargets, landmark_fit: FitResult,
                config: PhotometricConfig, albedo: AlbedoModel | None, *,
                appearance: Appearance | None = None) -> FitResult:
    """Pure single-image photometric refinement of ``landmark_fit`` (see :func:`fit_photometric`); ``appearance``
    replaces the start's light and albedo when given."""
    targets = _sanitised(targets)
    lmk = weighted_targets(model, landmark_fit.params, landmark_fit.camera, targets.landmarks, config.weighting)
    valid = lmk.valid.astype(jnp.float32)
    full_size = targets.image.shape[0]
    regions = uv_layout.face_region
    bake = config.bake_texels
    albedo_prior = None if bake else texel_prior(uv_layout, config)  # baked texels do not move: no prior to hold them
    skin = mean_colour(targets.image, targets.mask)
    full = _level_targets(targets, skin, full_size, config)
    shape_prior = identity_prior(landmark_fit.params.shape, config)
    share = identity_share(landmark_fit.camera, config)
    contour_share = contour_identity_share(landmark_fit.camera, config.landmarks)

    variables = PhotometricVariables(
        Geometry(landmark_fit.params, landmark_fit.camera),
        appearance if appearance is not None else start_appearance(uv_layout, targets, config, albedo))
    albedo = albedo_basis(uv_layout, config, albedo)
    n_tex = variables.appearance.texture_coeffs.shape[-1]

    def render(v: PhotometricVariables, image_size: int):
        return _render_view(model, uv_layout, config, albedo, v, image_size, full_size)

    def photometric_error(out, level: _LevelTargets):
        return _photometric_error(out, level, regions, config)

    seen = None if bake or config.texel_seen_margin is None else seen_texels(model, uv_layout, config,
                                                                             variables.geometry, full)

    def loss_fn(v: PhotometricVariables, level: _LevelTargets):
        p = dataclasses.replace(v.geometry.params, shape=scaled_gradient(v.geometry.params.shape, share))
        v = dataclasses.replace(v, geometry=dataclasses.replace(v.geometry, params=p))
        data = _view_data_loss(model, uv_layout, config, albedo, v, level, lmk, full_size, contour_share, seen)
        prior = config.expression_l2 * 0.5 * jnp.sum(p.expression**2) + shape_prior(p.shape)
        return valid * data + prior + (0.0 if albedo_prior is None else albedo_prior(v.appearance.texels))
    labels = PhotometricVariables(
        Geometry(params_labels(landmark_fit.params, "shape", "pose", "pose", "pose"), camera_labels("camera")),
        Appearance(light="light", texture_coeffs="texture" if n_tex else FROZEN, texels=FROZEN if bake else "texel"))
    best, stage = _run_pyramid(loss_fn, variables, labels, config,
                               lambda factor: full if factor == 1 else _level_targets(targets, skin,
                                                                                        full_size // factor, config))
    if bake:
        appearance, seen = baked_appearance(uv_layout, albedo, best.appearance,
                                            *bake_sums(model, uv_layout, config, best, full))
        best = dataclasses.replace(best, appearance=appearance)
    best = dataclasses.replace(best, appearance=filled_appearance(uv_layout, albedo, best.appearance, seen,
                                                                  config.fill_unseen))

    def scored(v: PhotometricVariables):
        out, projected = render(v, full_size)
        return out, projected, photometric_error(out, full)

    # The start and the result share one full-size render in the program (a batch of two).
    start_and_result = jax.vmap(scored)(jax.tree.map(lambda a, b: jnp.stack([a, b]), variables, best))
    out, projected, error = jax.tree.map(lambda x: x[1], start_and_result)
    start_error = start_and_result[2][0]
    failed = first_failure([(~stage.finite, Status.DIVERGED_PHOTOMETRIC)])
    status = jnp.where(landmark_fit.status != int(Status.OK), landmark_fit.status, failed)
    nme = nme_inner(projected.lmk68, lmk.lmk68)
    report = PhotometricReport(texture=_texture(albedo, best.appearance), light=best.appearance.light,
                               texture_coeffs=reported_coefficients(albedo, best.appearance.texture_coeffs),
                               render=out.image, alpha=out.alpha,
                               photometric_start=start_error, photometric_final=error,
                               stage=stage)
    return dataclasses.replace(
        landmark_fit, params=best.geometry.params, camera=best.geometry.camera, landmarks=projected.points(),
        nme=jnp.where(jnp.isnan(landmark_fit.nme), jnp.nan, nme), status=status, photometric=report)


def _joined(reports: list[tuple[int, StageReport]]) -> StageReport:
    """One report for the pyramid's levels: their losses end to end (the loss of a coarser level is measured on
    its own picture), the last level's final loss, and the first failure in stage steps."""
    failed = jnp.asarray(-1, jnp.int32)
    for first_step, report in reversed(reports):
        failed = jnp.where(report.failed_step >= 0, report.failed_step + first_step, failed)
    return StageReport(jnp.concatenate([r.losses for _, r in reports]), reports[-1][1].final_loss,
                       jnp.all(jnp.stack([r.finite for _, r in reports])), failed)


_refine_one_jit = jax.jit(_refine_one)
_refine_batch_jit = jax.jit(jax.vmap(lambda *args, appearance: _refine_one(*args, appearance=appearance),
                                     in_axes=(None, None, 0, 0, None, None)))


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
                    albedo: AlbedoModel | None = None, *, appearance: Appearance | None = None) -> FitResult:
    """Photometric refinement of one image's landmark fit; jit-compiled (numbers of ``config`` are traced).
    ``appearance``: start from this light and albedo (e.g. a video's shared one) instead of the default.

    ``model`` must be the full FLAME mesh (the renderer needs every face). Returns ``landmark_result`` with
    refined parameters, camera, landmarks and NME, ``photometric`` filled, and the status of the first failing
    stage: a landmark-stage failure stays, else a diverged photometric stage gives
    ``Status.DIVERGED_PHOTOMETRIC``.
    """
    _check(model, photo_targets, landmark_result, 0)
    return _refine_one_jit(model, uv_layout, photo_targets, landmark_result, config, albedo, appearance=appearance)


def fit_photometric_batch(model: FlameModel, uv_layout: UVLayout, photo_targets: PhotometricTargets,
                          landmark_result: FitResult, config: PhotometricConfig = PhotometricConfig(),
                          albedo: AlbedoModel | None = None, *,
                          appearance: Appearance | None = None) -> FitResult:
    """:func:`fit_photometric` over the leading batch axis of ``photo_targets`` and ``landmark_result`` (the
    output of :func:`fit_landmarks_batch`); jit-compiled once per batch size. ``appearance``: one start shared
    by every image, or one per image (a leading batch axis on each field)."""
    _check(model, photo_targets, landmark_result, 1)
    if appearance is not None and appearance.light.ndim == 2:
        batch = photo_targets.image.shape[0]
        appearance = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), appearance)
    return _refine_batch_jit(model, uv_layout, photo_targets, landmark_result, config, albedo,
                             appearance=appearance)
