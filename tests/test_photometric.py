"""Photometric mode on a synthetic head: the masked L1 error falls, geometry moves towards the truth."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import (AMBIENT_SH, GroupSchedule, PhotometricConfig, PhotometricTargets, aligned_vertex_error_mm,
                          fit_photometric_batch, sample_problem)
from flamejax.flame import flame_forward
from flamejax.render import RasterConfig, load_uv_layout, render_mesh
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


def test_photometric_fit_reduces_pixel_error(flame_model, synthetic):
    problem, uv, picture = synthetic
    start = dataclasses.replace(problem.params, expression=problem.params.expression * 0.3,
                                jaw_pose=problem.params.jaw_pose * 0.5)
    targets = PhotometricTargets(picture.image[None], picture.alpha[None], jax.tree.map(lambda a: a[None], problem.targets))
    config = PhotometricConfig(steps=40, texel_start=20, texture_size=64, raster=RasterConfig(image_size=SIZE),
                               pose=GroupSchedule(0.02))
    batch = lambda tree: jax.tree.map(lambda a: a[None], tree)  # noqa: E731
    result = jax.tree.map(np.asarray, fit_photometric_batch(flame_model, uv, targets, batch(start),
                                                            batch(problem.camera), config))
    assert result.status[0] == 0
    assert np.all(np.isfinite(result.texture)) and result.texture.shape == (1, 64, 64, 3)
    assert result.photometric_final[0] < 0.6 * result.photometric_start[0]
    truth = np.asarray(flame_forward(flame_model, problem.params).vertices)
    fitted = flame_forward(flame_model, jax.tree.map(lambda a: a[0], result.params)).vertices
    before = np.median(aligned_vertex_error_mm(np.asarray(flame_forward(flame_model, start).vertices), truth))
    assert np.median(aligned_vertex_error_mm(np.asarray(fitted), truth)) < before
