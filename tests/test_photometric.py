"""Photometric mode on a synthetic head: the masked L1 error falls, geometry moves towards the truth, failures\nare reported by stage order."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import (AMBIENT_SH, FitResult, GroupSchedule, PhotometricConfig, PhotometricTargets, StageReport,
                          Status, aligned_vertex_error_mm, fit_photometric, fit_photometric_batch, landmark_model,
                          nme_inner, sample_problem, start_appearance)
from flamejax.fit._photometric import agreeing_view_sums, baked_texels
from flamejax.flame import flame_forward, posed_landmarks
from flamejax.render import (REGION_EYEBALL, REGION_FACE, REGION_OTHER, RasterConfig, fill_texture, load_uv_layout,
                             render_mesh)
from tests.conftest import requires_flame

pytestmark = requires_flame
SIZE = 64


@pytest.fixture(scope="module")
def synthetic(flame_model):
    rng = np.random.default_rng(3)
    problem = sample_problem(flame_model, rng, image_size=SIZE, noise_px=0.0, max_yaw_deg=20, max_pitch_deg=10)
    uv = load_uv_layout()
    u = np.linspace(0, 1, 64)
    texture = jnp.asarray(np.stack(np.meshgrid(u, u), -1).mean(-1, keepdims=True) * [0.3, 0.2, 0.1] + [0.6, 0.45, 0.35],
                          jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[3].set(0.4)
    vertices = flame_forward(flame_model, problem.params).vertices
    picture = render_mesh(vertices, flame_model.faces, problem.camera, uv, texture, light, RasterConfig(image_size=SIZE))
    return problem, uv, picture


def landmark_fit_of(model, params, camera, targets, status):
    """A landmark-stage result to start the photometric stage from (the stage reports are not read)."""
    report = StageReport(jnp.zeros(1), jnp.asarray(0.0), jnp.asarray(True), jnp.asarray(-1, jnp.int32))
    projected = posed_landmarks(model, params, camera)
    return FitResult(params=params, camera=camera, landmarks=projected, nme=nme_inner(projected.lmk68, targets.lmk68),
                     status=jnp.asarray(int(status), jnp.int32), rigid=report, landmark=report)


def held_picture(model, problem, uv, texture, light):
    """``problem``'s head rendered with ``texture`` and ``light``, and a landmark fit at its true parameters."""
    vertices = flame_forward(model, problem.params).vertices
    picture = render_mesh(vertices, model.faces, problem.camera, uv, texture, light, RasterConfig(image_size=SIZE))
    landmark = landmark_fit_of(model, problem.params, problem.camera, problem.targets, Status.OK)
    return landmark, PhotometricTargets(picture.image, picture.alpha, problem.targets)


def test_photometric_fit_reduces_pixel_error_and_keeps_stage_order_of_failures(flame_model, synthetic):
    problem, uv, picture = synthetic
    start = dataclasses.replace(problem.params, expression=problem.params.expression * 0.3,
                                jaw_pose=problem.params.jaw_pose * 0.5)
    # 0: a healthy image; 1: its photometric stage diverges (landmarks so far out that the loss overflows); 2: the
    # same after a failed rigid stage, which stays the reported failure (the first failing stage, not the largest
    # code). Infinite pixels in 1 and 2 only leave the mask.
    statuses = (Status.OK, Status.OK, Status.DIVERGED_RIGID)
    landmark = jax.tree.map(lambda *a: jnp.stack(a), *(landmark_fit_of(flame_model, start, problem.camera,
                                                                       problem.targets, s) for s in statuses))
    broken = picture.image.at[:8].set(jnp.inf)
    far = dataclasses.replace(problem.targets, lmk68=problem.targets.lmk68 * 1e37)
    targets = PhotometricTargets(jnp.stack([picture.image, broken, broken]), jnp.stack([picture.alpha] * 3),
                                 jax.tree.map(lambda *a: jnp.stack(a), problem.targets, far, far))
    # Two pyramid levels (32², 64²); identity held as in the reference: this head's start has the true identity.
    config = PhotometricConfig(steps=40, texel_start=20, pyramid=((2, 0.5), (1, 0.5)), texture_size=64,
                               raster=RasterConfig(image_size=SIZE), pose=GroupSchedule(0.02),
                               shape=GroupSchedule(0.001), shape_offset_l2=0.1, shape_anchor=1.0)
    result = jax.tree.map(np.asarray, fit_photometric_batch(flame_model, uv, targets, landmark, config))
    assert [Status(int(s)) for s in result.status] == [Status.OK, Status.DIVERGED_PHOTOMETRIC, Status.DIVERGED_RIGID]
    photo = result.photometric
    assert not photo.stage.finite[1] and photo.stage.failed_step[1] == 0
    assert photo.stage.losses.shape == (3, 40)  # both pyramid levels, end to end
    assert np.all(np.isfinite(photo.texture)) and photo.texture.shape == (3, 64, 64, 3)
    assert photo.photometric_final[0] < 0.6 * photo.photometric_start[0]
    assert photo.stage.final_loss[0] < 0.8 * photo.stage.losses[0, 0]
    fitted_params = jax.tree.map(lambda a: a[0], result.params)
    expression_error = lambda p: np.linalg.norm(np.asarray(p.expression - problem.params.expression))  # noqa: E731
    assert expression_error(fitted_params) < expression_error(start)
    face = (None if uv.face_region is None  # without FLAME_masks.pkl: all vertices
            else np.unique(np.asarray(flame_model.faces)[np.asarray(uv.face_region) == REGION_FACE]))
    truth = np.asarray(flame_forward(flame_model, problem.params).vertices)
    fitted = np.asarray(flame_forward(flame_model, fitted_params).vertices)
    before = np.median(aligned_vertex_error_mm(np.asarray(flame_forward(flame_model, start).vertices), truth, face))
    assert np.median(aligned_vertex_error_mm(fitted, truth, face)) < before


def test_texels_no_weighted_pixel_shows_are_left_to_the_priors(flame_model, synthetic):
    """The coarse level's downsampled texture passes gradients to texels beyond those the full-size picture shows
    (they came out as dots); with ``texel_seen_margin`` only the texels it shows (and their neighbours) move with the
    pixels. Priors off and geometry held, the others keep their start."""
    from flamejax.fit._photometric import (Appearance, PhotometricVariables, _level_targets, _photometric_error,
                                           _render_view, mean_colour, seen_texels)
    from flamejax.fit._landmark_fit import Geometry

    problem, uv, picture = synthetic
    landmark = landmark_fit_of(flame_model, problem.params, problem.camera, problem.targets, Status.OK)
    targets = PhotometricTargets(picture.image, picture.alpha, problem.targets)
    frozen = GroupSchedule(0.0)
    config = PhotometricConfig(steps=12, shape_start=0, texel_start=0, pyramid=((2, 0.5), (1, 0.5)),
                               texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                               light=frozen, shape=frozen, texture=frozen, texel=GroupSchedule(0.05),
                               texel_smoothness=0.0, texel_symmetry=0.0, bake_texels=False)
    assert config.texel_seen_margin == 1
    start = start_appearance(uv, targets, config)
    geometry = Geometry(problem.params, problem.camera)
    skin = mean_colour(targets.image, targets.mask)
    seen = np.asarray(seen_texels(flame_model, uv, config, geometry, _level_targets(targets, skin, SIZE, config))) > 0
    assert 0.02 < seen.mean() < 0.6

    def coarse_error(texels):
        out, _ = _render_view(flame_model, uv, config, None, PhotometricVariables(geometry, Appearance(
            start.light, start.texture_coeffs, texels)), SIZE // 2, SIZE)
        return _photometric_error(out, _level_targets(targets, skin, SIZE // 2, config), uv.face_region, config)

    reached = np.any(np.asarray(jax.grad(coarse_error)(start.texels)) != 0, axis=-1)
    assert np.sum(reached & ~seen) > 10  # the coarse level's tails

    kept = fit_photometric(flame_model, uv, targets, landmark, dataclasses.replace(config, fill_unseen=False))
    texture = np.asarray(kept.photometric.texture)
    moved = np.any(texture != np.clip(np.asarray(start.texels), 0, 1), axis=-1)
    assert moved[seen].mean() > 0.5 and not np.any(moved & ~seen), (moved[seen].mean(), np.sum(moved & ~seen))

    # By default the texels no pixel showed are filled at the end from the seen ones; eyeballs keep theirs, and
    # the fit, its render and the seen texels are the same.
    filled = fit_photometric(flame_model, uv, targets, landmark, config)
    assert config.fill_unseen
    filled_texture = np.asarray(filled.photometric.texture)
    np.testing.assert_array_equal(filled_texture[seen], texture[seen])
    np.testing.assert_allclose(np.asarray(filled.params.expression), np.asarray(kept.params.expression))
    eyeball = np.asarray(uv.texel_region(64)) == REGION_EYEBALL
    np.testing.assert_array_equal(filled_texture[eyeball & ~seen], texture[eyeball & ~seen])
    expected = np.asarray(fill_texture(jnp.asarray(texture), jnp.asarray(seen & ~eyeball, jnp.float32)))
    np.testing.assert_allclose(filled_texture[~seen & ~eyeball], expected[~seen & ~eyeball], atol=1e-5)
    assert not np.allclose(filled_texture[~seen & ~eyeball], texture[~seen & ~eyeball], atol=1e-3)


def test_one_photographs_per_texel_albedo_is_baked_from_the_picture_under_the_fitted_light(flame_model, synthetic):
    """By default (``bake_texels``) one photograph's stage holds the per-texel albedo still and bakes it at the end
    from the picture under the fitted head and light: with both at the truth, the baked albedo is the picture's on
    the texels it shows. A texel no pixel shows takes its mirror texel's where that one is shown (this head is
    turned, and its albedo symmetric); without a mirror axis it keeps its start."""
    problem, uv, _ = synthetic
    t = (np.arange(64, dtype=np.float32) + 0.5) / 64
    stripes = np.sin(40.0 * np.abs(t - uv.mirror_u))[None, :, None] * np.array([0.15, 0.12, 0.09], np.float32)
    albedo = jnp.asarray(0.5 + stripes + 0.1 * np.sin(25.0 * t)[:, None, None], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[1].set(0.4).at[3].set(0.3)
    landmark, targets = held_picture(flame_model, problem, uv, albedo, light)
    frozen = GroupSchedule(0.0)
    config = PhotometricConfig(steps=6, shape_start=0, pyramid=((1, 1.0),), texture_size=64,
                               raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen, light=frozen,
                               shape=frozen, texture=frozen, fill_unseen=False, albedo_cell=None)
    assert config.bake_texels
    start = dataclasses.replace(start_appearance(uv, targets, config), light=light)
    start_texture = np.clip(np.asarray(start.texels), 0.0, 1.0)
    truth = np.asarray(albedo)
    baked = {}
    for name, layout in (("mirror", uv), ("no mirror", dataclasses.replace(uv, mirror_u=None))):
        photo = fit_photometric(flame_model, layout, targets, landmark, config, appearance=start).photometric
        assert np.all(np.asarray(photo.stage.losses) == photo.stage.losses[0])  # nothing moved in the stage
        texture = np.asarray(photo.texture)
        baked[name] = np.any(np.abs(texture - start_texture) > 1e-6, axis=-1)
        if name == "mirror":
            error = np.abs(texture - truth).max(-1)
            assert np.median(error[baked[name]]) < 0.02 < 0.08 < np.median(np.abs(start_texture - truth).max(-1))
            assert photo.photometric_final < 0.3 * photo.photometric_start
    from_mirror = baked["mirror"] & ~baked["no mirror"]
    assert not np.any(baked["no mirror"] & ~baked["mirror"]) and from_mirror.sum() > 20, from_mirror.sum()
    assert np.median(error[from_mirror]) < 0.05


def test_a_sparsely_sampled_texel_is_baked_from_the_photograph_around_it_not_the_smooth_albedo():
    """Every other column of skin is sampled fully, the columns between by a twentieth as many pixels or none (a
    slanted surface: one pixel spans several texels). Those take the picture's albedo (0.3) from their sampled
    neighbours, not the smooth albedo's (0.8), so the texture shows no stripes; an eyeball beside the skin pools
    only eyeball texels, and texels of what FLAME does not model keep the smooth albedo and are not baked."""
    size = 24
    region = np.full((size, size), REGION_FACE, np.int32)
    region[:, 16:] = REGION_EYEBALL
    region[:, 20:] = REGION_OTHER
    shading = np.zeros((size, size, 3), np.float32)
    shading[:, 0:12:2] = 1.0
    shading[:, 1:12:4] = 0.05
    shading[:, 12:14] = 1.0
    shading[:, 14:16] = 0.05
    shading[:, 16:20] = 1.0
    albedo = np.where(region == REGION_EYEBALL, 0.9, 0.3)[..., None] * np.ones(3, np.float32)
    current = jnp.full((size, size, 3), 0.8, jnp.float32)
    baked, known = (np.asarray(a) for a in baked_texels(jnp.asarray(albedo * shading), jnp.asarray(shading), current,
                                                       jnp.asarray(region)))
    np.testing.assert_allclose(baked[:, :16], 0.3, atol=1e-5)  # skin beside the eyeball too: no eyeball colour
    np.testing.assert_allclose(baked[:, 16:20], 0.9, atol=1e-5)
    np.testing.assert_allclose(baked[:, 20:], 0.8, atol=1e-5)
    assert known[:, :20].all() and not known[:, 20:].any()


def test_what_covers_a_texel_in_two_of_five_views_is_not_baked_into_the_albedo():
    """Five views of one albedo, each sampling the texels with its own shading (some not at all); in two of them a
    hand covers a band of texels, and a sixth view that is not used shows black everywhere. The views' joint bake
    is the albedo's on every texel, the band included, where the views' sums added up would be tinted by the hand
    (by about half the difference)."""
    size, views = 16, 6
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.3, 0.6, size, dtype=np.float32)
    albedo = np.broadcast_to(ramp[None, :, None] * np.array([1.0, 0.8, 0.7], np.float32), (size, size, 3))
    shading = rng.uniform(0.5, 1.5, (views, size, size, 1)).astype(np.float32) * np.ones(3, np.float32)
    shading[2, :, :3] = 0.0
    colour = albedo * shading
    colour[:2, 5:9] = 0.95 * shading[:2, 5:9]
    colour[5] = 0.0
    use = jnp.asarray([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    current = jnp.full((size, size, 3), 0.5, jnp.float32)
    spread = PhotometricConfig().bake_view_spread
    fused = jax.jit(agreeing_view_sums)(jnp.asarray(colour), jnp.asarray(shading), use, current, None, spread)
    baked = np.asarray(baked_texels(*fused, current, None)[0])
    np.testing.assert_allclose(baked, albedo, atol=0.01)
    added = agreeing_view_sums(jnp.asarray(colour), jnp.asarray(shading), use, current, None, spread=None)
    assert np.median(np.abs(np.asarray(baked_texels(*added, current, None)[0]) - albedo)[5:9]) > 0.2
    with pytest.raises(ValueError, match="bake_view_spread"):
        PhotometricConfig(bake_view_spread=0.0)


def test_photometric_stage_needs_the_full_mesh(flame_model, synthetic):
    problem, uv, picture = synthetic
    landmark = landmark_fit_of(flame_model, problem.params, problem.camera, problem.targets, Status.OK)
    targets = PhotometricTargets(picture.image, picture.alpha, problem.targets)
    with pytest.raises(ValueError, match="full FLAME mesh"):
        fit_photometric(landmark_model(flame_model), uv, targets, landmark)


def test_result_render_and_errors_belong_to_the_start_and_the_fitted_head(flame_model, synthetic):
    """The start and the result are rendered together at full size (one render in the program): the returned
    picture is the fitted head's, the start error the start's. Learning rates are traced, so both configs share
    one compilation."""
    problem, uv, picture = synthetic
    start = dataclasses.replace(problem.params, expression=problem.params.expression * 0.3)
    landmark = landmark_fit_of(flame_model, start, problem.camera, problem.targets, Status.OK)
    targets = PhotometricTargets(picture.image, picture.alpha, problem.targets)
    frozen = GroupSchedule(0.0)
    still = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                              texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                              light=frozen, shape=frozen, texture=frozen, texel=frozen)
    moving = dataclasses.replace(still, pose=GroupSchedule(0.05), light=GroupSchedule(0.05))
    results = {}
    for name, config in (("still", still), ("moving", moving)):
        result = jax.tree.map(np.asarray, fit_photometric(flame_model, uv, targets, landmark, config))
        photo = result.photometric
        expected = render_mesh(flame_forward(flame_model, result.params).vertices, flame_model.faces, result.camera,
                               uv, jnp.asarray(photo.texture), jnp.asarray(photo.light), RasterConfig(image_size=SIZE))
        same = np.all(np.abs(np.asarray(expected.image) - photo.render) < 1e-4, axis=-1)
        assert same.mean() > 0.995  # up to pixel centres on an edge
        np.testing.assert_array_equal(np.asarray(expected.alpha) > 0, photo.alpha > 0)
        results[name] = photo
    np.testing.assert_allclose(results["still"].photometric_final, results["still"].photometric_start, rtol=1e-6)
    np.testing.assert_allclose(results["moving"].photometric_start, results["still"].photometric_start, rtol=1e-6)
    assert results["moving"].photometric_final < 0.9 * results["moving"].photometric_start


def test_identity_prior_pulls_towards_its_anchor(flame_model, synthetic):
    """``shape_anchor`` 0 pulls the identity towards the mean head, 1 holds it at the landmark fit's. Pixels and
    landmarks switched off, everything but identity frozen; same static settings as the test above: one
    compilation for all."""
    problem, uv, picture = synthetic
    landmark = landmark_fit_of(flame_model, problem.params, problem.camera, problem.targets, Status.OK)
    targets = PhotometricTargets(picture.image, picture.alpha, problem.targets)
    frozen = GroupSchedule(0.0)
    config = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                               texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                               light=frozen, shape=GroupSchedule(0.05), texture=frozen, texel=frozen,
                               photometric_weight=0.0, landmark_scale=0.0, shape_offset_l2=1.0, texel_smoothness=0.0,
                               texel_symmetry=0.0)
    start = np.asarray(problem.params.shape)
    fitted = {anchor: np.asarray(fit_photometric(flame_model, uv, targets, landmark,
                                                 dataclasses.replace(config, shape_anchor=anchor)).params.shape)
              for anchor in (0.0, 1.0)}
    np.testing.assert_allclose(fitted[1.0], start, atol=1e-6)
    far = np.abs(start) > 0.3  # Adam moves each coefficient about its rate per step: 6 x 0.05
    assert far.sum() > 10 and np.all(np.abs(fitted[0.0][far]) < np.abs(start[far]) - 0.2)
    # A photograph turned further than identity_max_yaw leaves the identity where the landmark fit put it.
    turned_away = dataclasses.replace(config, shape_anchor=0.0, identity_max_yaw=-10.0)
    held = np.asarray(fit_photometric(flame_model, uv, targets, landmark, turned_away).params.shape)
    np.testing.assert_array_equal(held, start)
    # The identity moves from shape_start on: a stage that ends before it leaves the identity where it started.
    late = dataclasses.replace(config, shape_anchor=0.0, shape_start=6)
    np.testing.assert_array_equal(np.asarray(fit_photometric(flame_model, uv, targets, landmark, late).params.shape),
                                  start)


def test_a_group_moves_from_its_start_step_over_the_pyramid_levels():
    from flamejax.fit._photometric import _from_step

    # A level that begins at the stage's step 8, a group that starts at step 10 and drops its rate 4 steps later.
    late = _from_step(GroupSchedule(0.05, 0.01, 4), start=10, first_step=8)
    assert [round(float(late(count)), 6) for count in (0, 1, 2, 5, 6)] == [0.0, 0.0, 0.05, 0.05, 0.01]
    with pytest.raises(ValueError, match="shape_start"):
        PhotometricConfig(shape_start=-1)
    for bad in ((), ((0, 1.0),), ((2, 0.0),), ((1.5, 1.0),), (2, 1.0)):
        with pytest.raises(ValueError, match="pyramid must be levels"):
            PhotometricConfig(pyramid=bad)
    with pytest.raises(ValueError, match="joint_pyramid must be levels"):
        PhotometricConfig(joint_pyramid=((2, -1.0),))
    assert PhotometricConfig(joint_pyramid=None).joint_pyramid is None
    short = PhotometricConfig().with_steps(6)
    assert (short.steps, short.shape_start, short.texel_start) == (6, 1, 3)
    assert PhotometricConfig().with_steps(400).texel_start == PhotometricConfig().texel_start


def test_identity_share_falls_off_around_the_yaw_limit():
    from flamejax.camera import Camera
    from flamejax.fit._photometric import identity_share

    def share(yaw_deg):
        camera = Camera(rotation=jnp.array([0.0, np.deg2rad(yaw_deg), 0.0], jnp.float32),
                        translation=jnp.array([0.0, 0.0, -1.0]), fov_deg=jnp.asarray(20.0))
        return float(identity_share(camera, PhotometricConfig(identity_max_yaw=45.0)))

    assert share(0.0) == 1.0 and share(-40.0) == 1.0
    assert abs(share(45.0) - 0.5) < 1e-3 and abs(share(-45.0) - 0.5) < 1e-3
    assert share(50.5) == 0.0 and share(-75.0) == 0.0


def test_symmetric_albedo_leaves_a_side_light_to_the_shading(flame_model, synthetic):
    """Under a side light the shading differs between the face's halves. With the light held at the start's
    ambient, a free per-texel albedo takes that difference up; the symmetry prior keeps the two halves' albedo
    alike. Same static settings as the test above: one compilation for both."""
    from flamejax.fit._photometric import _asymmetry, _mirror_pairs

    problem, uv, _ = synthetic
    assert uv.mirror_u is not None
    side = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[1].set(0.5)
    landmark, targets = held_picture(flame_model, problem, uv, jnp.full((64, 64, 3), 0.6, jnp.float32), side)
    frozen = GroupSchedule(0.0)
    texels_only = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                                    texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                                    light=frozen, shape=frozen, texture=frozen, texel=GroupSchedule(0.05))
    pairs = (None if uv.face_region is None
             else _mirror_pairs(uv.texel_region(64), uv.mirror_u))
    asymmetry = {}
    for weight in (0.0, 100.0):
        config = dataclasses.replace(texels_only, texel_symmetry=weight)
        photo = fit_photometric(flame_model, uv, targets, landmark, config).photometric
        assert photo.stage.final_loss < photo.stage.losses[0]  # the texels moved
        asymmetry[weight] = float(_asymmetry(photo.texture, uv.mirror_u, pairs))
    assert asymmetry[100.0] < 0.3 * asymmetry[0.0], asymmetry


def test_without_an_albedo_model_the_smooth_albedo_moves_from_the_first_step(flame_model, synthetic):
    """Before the per-texel albedo is free, the smooth albedo's coefficients take up a face whose albedo is not
    uniform (here a darker lower face), so that the geometry need not. Everything else held; same static settings
    as the test above."""
    problem, uv, _ = synthetic
    v = np.linspace(0.0, 1.0, 64, dtype=np.float32)[:, None, None]
    albedo = jnp.asarray(np.broadcast_to(0.7 - 0.3 * v * np.array([1.0, 1.2, 1.4], np.float32), (64, 64, 3)))
    ambient = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH)
    landmark, targets = held_picture(flame_model, problem, uv, albedo, ambient)
    frozen = GroupSchedule(0.0)
    smooth_only = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                                    texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                                    light=frozen, shape=frozen, texture=GroupSchedule(0.5), texel=frozen)
    photo = fit_photometric(flame_model, uv, targets, landmark, smooth_only).photometric
    assert photo.texture_coeffs.shape == (0,)  # the model's coefficients only; the smooth albedo is in the texture
    moved = np.asarray(photo.texture) - np.asarray(start_appearance(uv, targets, smooth_only).texels)
    assert np.abs(moved).max() > 0.05 and np.all(np.std(moved, axis=(0, 1)) > 0.01)  # not just a uniform shift
    assert photo.photometric_final < 0.7 * photo.photometric_start, (photo.photometric_start, photo.photometric_final)


def test_an_albedo_model_takes_the_albedo_and_its_offset_keeps_the_prior(flame_model, synthetic):
    """With a PCA albedo model the coefficients move to the picture's albedo, and the per-texel offset on the
    model's albedo has the per-texel albedo's prior (the reference left it free: it took up shading). Geometry
    and light held at the truth."""
    from flamejax.fit._photometric import Appearance, texel_prior
    from flamejax.render import AlbedoModel, albedo_texture

    problem, uv, _ = synthetic
    u = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    across, down = np.meshgrid(u, u)
    basis = np.stack([0.15 * np.cos(6.0 * (across - 0.5))[..., None] * [1.0, 0.8, 0.6],
                      0.2 * (down - 0.5)[..., None] * [1.0, 1.0, 1.0]], -1)
    albedo = AlbedoModel(jnp.full((64, 64, 3), 0.5, jnp.float32), jnp.asarray(basis, jnp.float32))
    truth = np.array([0.6, -0.5], np.float32)
    ambient = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH)  # the stage's start light
    landmark, targets = held_picture(flame_model, problem, uv, albedo_texture(albedo, jnp.asarray(truth)), ambient)
    frozen = GroupSchedule(0.0)
    held = PhotometricConfig(steps=20, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                             texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                             light=frozen, shape=frozen, texture=frozen, texel=frozen, texel_symmetry=0.0)
    coeffs = fit_photometric(flame_model, uv, targets, landmark, dataclasses.replace(held, texture=GroupSchedule(0.05)),
                             albedo).photometric.texture_coeffs
    assert np.linalg.norm(np.asarray(coeffs) - truth) < 0.3 * np.linalg.norm(truth), coeffs
    # Everything held, from a rough offset: the loss is the data term plus the offset's prior.
    rough = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.02, (64, 64, 3)), jnp.float32)
    start = Appearance(ambient, jnp.asarray(truth), rough)
    smooth = dataclasses.replace(held, texel_smoothness=20.0)
    losses = [float(fit_photometric(flame_model, uv, targets, landmark, c, albedo, appearance=start)
                    .photometric.stage.losses[0]) for c in (dataclasses.replace(held, texel_smoothness=0.0), smooth)]
    np.testing.assert_allclose(losses[1] - losses[0], float(texel_prior(uv, smooth)(rough)), rtol=0.05)


def test_landmarks_no_pose_explains_hold_little_weight(flame_model, synthetic):
    """The landmark term carries the landmark fit's per-point weights (``PhotometricConfig.weighting``): mouth
    targets dragged far below the mouth of a head at its true pose are outliers the robust weights turn down, so
    the stage's loss hardly counts them; with a robust scale so large that every weight is 1 (the targets' own
    weights; a traced number, so the same compilation) it counts them in full. On clean targets both agree.
    Pixels off, everything frozen; same static settings as the tests above: one compilation for all."""
    from flamejax.fit._visibility import weighted_targets

    problem, uv, picture = synthetic
    dragged = dataclasses.replace(problem.targets, lmk68=problem.targets.lmk68.at[48:68, 1].add(-0.4))
    frozen = GroupSchedule(0.0)
    weighted = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                                 texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                                 light=frozen, shape=frozen, texture=frozen, texel=frozen, photometric_weight=0.0)
    configs = {"weighted": weighted, "unweighted": dataclasses.replace(
        weighted, weighting=dataclasses.replace(weighted.weighting, robust_scale=1e6))}
    weights = {name: np.asarray(weighted_targets(flame_model, problem.params, problem.camera, dragged,
                                                 config.weighting).lmk68_weight / dragged.lmk68_weight)
               for name, config in configs.items()}
    assert np.all(weights["weighted"][48:68] < 0.2) and np.all(weights["weighted"][17:48] > 0.8)
    np.testing.assert_allclose(weights["unweighted"][17:], 1.0, atol=0.02)  # every point seen at this pose

    def start_loss(landmark_targets, config):
        landmark = landmark_fit_of(flame_model, problem.params, problem.camera, landmark_targets, Status.OK)
        targets = PhotometricTargets(picture.image, picture.alpha, landmark_targets)
        return float(fit_photometric(flame_model, uv, targets, landmark, config).photometric.stage.losses[0])

    outliers = {name: start_loss(dragged, config) for name, config in configs.items()}
    assert outliers["weighted"] < 0.2 * outliers["unweighted"], outliers
    clean = {name: start_loss(problem.targets, config) for name, config in configs.items()}
    np.testing.assert_allclose(clean["weighted"], clean["unweighted"], rtol=0.05)


def test_the_jaw_contour_does_not_shape_a_frontal_face_s_identity(flame_model, synthetic):
    """The photometric stage's landmark term follows ``landmarks.contour_identity`` as the landmark fit does: with
    the contour the only data (moved outwards) and only the identity free, share 0 leaves a frontal face's identity
    where it was, share 1 lets the contour widen it."""
    from flamejax.fit import LandmarkStageConfig

    problem, uv, picture = synthetic
    wider = problem.targets.lmk68.at[:17, 0].multiply(1.15)
    targets = PhotometricTargets(picture.image, picture.alpha, dataclasses.replace(problem.targets, lmk68=wider))
    landmark = landmark_fit_of(flame_model, problem.params, problem.camera, problem.targets, Status.OK)
    frozen = GroupSchedule(0.0)
    contour_only = LandmarkStageConfig(inner_weight=0.0, iris_weight=0.0, mediapipe_weight=0.0, silhouette_weight=0.0,
                                       face_silhouette_weight=0.0, profile_weight=0.0)
    config = PhotometricConfig(steps=6, shape_start=0, texel_start=0, bake_texels=False, pyramid=((1, 1.0),),
                               texture_size=64, raster=RasterConfig(image_size=SIZE), pose=frozen, camera=frozen,
                               light=frozen, shape=GroupSchedule(0.05), texture=frozen, texel=frozen,
                               photometric_weight=0.0, landmark_scale=1.0, shape_offset_l2=0.0, texel_smoothness=0.0,
                               texel_symmetry=0.0,
                               landmarks=contour_only)
    start = np.asarray(problem.params.shape)
    fitted = {share: np.asarray(fit_photometric(flame_model, uv, targets, landmark, dataclasses.replace(
        config, landmarks=dataclasses.replace(contour_only, contour_identity=share))).params.shape)
        for share in (0.0, 1.0)}
    np.testing.assert_array_equal(fitted[0.0], start)
    assert np.max(np.abs(fitted[1.0] - start)) > 0.1


def test_the_gradient_term_sees_edges_not_a_smooth_offset():
    from flamejax.fit._photometric import masked_gradient_l1, masked_l1

    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.uniform(0.2, 0.8, (16, 16, 3)), jnp.float32)
    weight = jnp.ones((16, 16), jnp.float32)
    brighter = image + 0.1  # an albedo or light off by a constant: the colours differ, their differences do not
    assert float(masked_l1(brighter, image, weight)) == pytest.approx(0.1, abs=1e-6)
    assert float(masked_gradient_l1(brighter, image, weight)) == pytest.approx(0.0, abs=1e-6)
    edge = image.at[:, 8:].add(0.2)  # a shading edge between columns 7 and 8: one difference per row changes
    assert float(masked_gradient_l1(edge, image, weight)) == pytest.approx(0.2 * 16 / (16 * 15), rel=1e-5)
    # A pair counts only where both its pixels count: without column 8 the edge is not seen.
    assert float(masked_gradient_l1(edge, image, weight.at[:, 8].set(0.0))) == pytest.approx(0.0, abs=1e-6)
