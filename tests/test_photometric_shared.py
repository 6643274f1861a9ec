"""Several photographs of one person refined photometrically with one identity and one albedo."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import (AMBIENT_SH, GroupSchedule, PhotometricConfig, PhotometricTargets, aligned_vertex_error_mm,
                          fit_photometric_same_person, observed_targets, sample_problem, stack_targets)
from flamejax.flame import flame_forward
from flamejax.render import REGION_FACE, RasterConfig, load_uv_layout, render_mesh
from tests.conftest import requires_flame

pytestmark = requires_flame
SIZE = 64
VIEWS = 3


@pytest.fixture(scope="module")
def views(flame_model):
    """One head (identity and albedo) under three cameras, yaw about -30, 0, +30 degrees."""
    rng = np.random.default_rng(5)
    uv = load_uv_layout()
    u = np.linspace(0, 1, 64)
    grid = np.stack(np.meshgrid(u, u), -1)
    texture = jnp.asarray(0.5 + 0.2 * np.sin(9 * grid[..., :1]) * [1.0, 0.7, 0.5] + 0.1 * grid[..., 1:], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[3].set(0.4)
    first = sample_problem(flame_model, rng, image_size=SIZE, noise_px=0.0)
    shape = first.params.shape
    samples, pictures = [], []
    for yaw in (-30.0, 0.0, 30.0):
        sample = sample_problem(flame_model, rng, image_size=SIZE, noise_px=0.0, max_yaw_deg=1.0, max_pitch_deg=5.0,
                                max_roll_deg=3.0)
        params = dataclasses.replace(sample.params, shape=shape)
        rotation = np.asarray(sample.camera.rotation) + np.deg2rad([0.0, yaw, 0.0])
        camera = dataclasses.replace(sample.camera, rotation=jnp.asarray(rotation, jnp.float32))
        targets, vertices = observed_targets(flame_model, params, camera, rng, 0.0, SIZE)
        samples.append((params, camera, targets, vertices))
        pictures.append(render_mesh(jnp.asarray(vertices), flame_model.faces, camera, uv, texture, light,
                                    RasterConfig(image_size=SIZE)))
    photo = PhotometricTargets(jnp.stack([p.image for p in pictures]), jnp.stack([p.alpha for p in pictures]),
                               stack_targets([s[2] for s in samples]))
    params = jax.tree.map(lambda *a: jnp.stack(a), *(s[0] for s in samples))
    camera = jax.tree.map(lambda *a: jnp.stack(a), *(s[1] for s in samples))
    return uv, photo, params, camera, shape


CONFIG = PhotometricConfig(steps=60, texel_start=20, joint_pyramid=((2, 0.5), (1, 0.5)), texture_size=64,
                           raster=RasterConfig(image_size=SIZE), shape=GroupSchedule(0.05), shape_offset_l2=0.001)


def test_one_identity_and_one_albedo_move_towards_the_head_all_views_show(flame_model, views):
    uv, photo, params, camera, shape = views
    start = jnp.zeros_like(shape)
    result = jax.tree.map(np.asarray, fit_photometric_same_person(
        flame_model, uv, photo, start, jax.vmap(lambda p: dataclasses.replace(p, shape=start))(params), camera,
        CONFIG))
    photo = result.photometric
    assert photo.stage.finite.all() and photo.texture.shape == (VIEWS, 64, 64, 3) and photo.light.shape == (VIEWS, 9, 3)
    np.testing.assert_array_equal(photo.texture, np.broadcast_to(photo.texture[0], photo.texture.shape))  # one albedo
    np.testing.assert_array_equal(result.params.shape, np.broadcast_to(result.shape, result.params.shape.shape))
    assert np.all(photo.photometric_final < photo.photometric_start)
    face = (None if uv.face_region is None
            else np.unique(np.asarray(flame_model.faces)[np.asarray(uv.face_region) == REGION_FACE]))
    neutral = lambda s: np.asarray(flame_forward(flame_model, dataclasses.replace(  # noqa: E731
        jax.tree.map(lambda a: a[0], params), shape=jnp.asarray(s), expression=jnp.zeros_like(params.expression[0]),
        jaw_pose=jnp.zeros(3))).vertices)
    truth = neutral(shape)
    before = np.median(aligned_vertex_error_mm(neutral(start), truth, face))
    after = np.median(aligned_vertex_error_mm(neutral(result.shape), truth, face))
    assert after < 0.85 * before, (before, after)


def test_an_unused_photograph_does_not_shape_the_identity(flame_model, views):
    uv, photo, params, camera, shape = views
    spoiled = dataclasses.replace(photo, image=photo.image.at[2].set(jnp.flip(photo.image[2], axis=0)))
    used = jnp.asarray([True, True, False])
    one = fit_photometric_same_person(flame_model, uv, photo, shape, params, camera, CONFIG, used=used)
    other = fit_photometric_same_person(flame_model, uv, spoiled, shape, params, camera, CONFIG, used=used)
    np.testing.assert_allclose(np.asarray(one.shape), np.asarray(other.shape), atol=1e-5)
    np.testing.assert_allclose(np.asarray(one.photometric.texture), np.asarray(other.photometric.texture), atol=1e-5)
    with pytest.raises(ValueError, match="leading axis of images"):
        fit_photometric_same_person(flame_model, uv, photo, shape, jax.tree.map(lambda a: a[:2], params), camera)


def test_a_patch_over_one_view_is_not_baked_into_the_albedo_all_views_share(flame_model, views):
    """The joint stage bakes the one albedo from every used view at the end (``bake_texels``); a bright patch over
    the nose in the frontal view only, which the two other views show as skin, leaves the albedo as it was but for
    a few texels that only one or two views sample (with the views' sums added up, 54 face texels change by more
    than 0.05)."""
    uv, photo, params, camera, shape = views
    nose = np.round((np.asarray(photo.landmarks.lmk68[1, 30]) + 1.0) * SIZE / 2).astype(int)
    patch = (slice(nose[1] - 3, nose[1] + 3), slice(nose[0] - 3, nose[0] + 3))
    patched = dataclasses.replace(photo, image=photo.image.at[(1,) + patch].set(jnp.asarray([0.2, 0.9, 0.2])))
    clean, covered = (np.asarray(fit_photometric_same_person(flame_model, uv, p, shape, params, camera,
                                                             CONFIG).photometric.texture[0]) for p in (photo, patched))
    face = np.asarray(uv.texel_region(64)) == REGION_FACE
    change = np.abs(covered - clean).max(-1)[face]
    assert np.median(np.abs(np.asarray(photo.image[1][patch]) - [0.2, 0.9, 0.2])) > 0.3
    assert np.sum(change > 0.05) < 8, np.sort(change)[-10:]


def test_the_joint_stage_runs_on_its_own_levels(flame_model, views):
    uv, photo, params, camera, shape = views
    levels = ((2, 0.5), (1, 0.5))
    own = dataclasses.replace(CONFIG, steps=4, shape_start=0, texel_start=2, pyramid=((1, 1.0),), joint_pyramid=levels)
    inherited = dataclasses.replace(own, pyramid=levels, joint_pyramid=None)
    full_size = dataclasses.replace(own, joint_pyramid=None)
    fitted = [jax.tree.map(np.asarray, fit_photometric_same_person(flame_model, uv, photo, shape, params, camera, c))
              for c in (own, inherited, full_size)]
    np.testing.assert_array_equal(fitted[0].params.expression, fitted[1].params.expression)
    np.testing.assert_array_equal(fitted[0].photometric.texture, fitted[1].photometric.texture)
    assert not np.array_equal(fitted[0].params.expression, fitted[2].params.expression)
