"""Landmark fitting: stages decrease their losses, vmap equals single fits, divergence is isolated, recovery."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import (
    STATUS_OK,
    fit_landmarks,
    fit_landmarks_batch,
    landmark_model,
    linear_initialisation,
    quick_config,
    rotation_error_deg,
    aligned_vertex_error_mm,
    sample_problem,
    stack_targets,
)
from flamejax.fit._landmark_fit import STATUS_DIVERGED_INIT, STATUS_DIVERGED_RIGID, STATUS_INVALID_INPUT
from flamejax.flame import flame_forward
from tests.conftest import requires_flame

pytestmark = requires_flame
BATCH = 4
CONFIG = quick_config(rigid_steps=90, landmark_steps=60)


@pytest.fixture(scope="module")
def problems(flame_model):
    rng = np.random.default_rng(7)
    return [sample_problem(flame_model, rng) for _ in range(BATCH)]


@pytest.fixture(scope="module")
def batch_result(flame_model, problems):
    return jax.tree.map(np.asarray, fit_landmarks_batch(flame_model, stack_targets([p.targets for p in problems]), CONFIG))


def test_stages_decrease_their_losses(batch_result):
    assert np.all(batch_result.status == STATUS_OK)
    assert np.all(batch_result.rigid_final_loss <= batch_result.rigid_losses[:, 0])
    assert np.all(batch_result.landmark_final_loss < 0.9 * batch_result.landmark_losses[:, 0])
    assert np.all(batch_result.landmark_losses[:, -10:].mean(1) < batch_result.landmark_losses[:, :10].mean(1))
    assert np.all(np.isfinite(batch_result.nme)) and np.all(batch_result.nme < 0.05)


def test_vmap_equals_single_fits(flame_model, problems, batch_result):
    model = landmark_model(flame_model)
    single = jax.jit(fit_landmarks, static_argnames="config")
    # Batched float32 reductions round differently from unbatched ones, and an optimiser (L1 sign gradients,
    # Adam's normalisation) carries such 1e-7 differences a little further: equal to well under a pixel.
    for i in (0, BATCH - 1):
        one = single(model, problems[i].targets, config=CONFIG)
        np.testing.assert_allclose(one.landmarks.lmk68, batch_result.landmarks.lmk68[i], atol=2e-3)  # 0.25 px
        np.testing.assert_allclose(one.camera.translation, batch_result.camera.translation[i], atol=5e-3)
        np.testing.assert_allclose(one.params.expression, batch_result.params.expression[i], atol=0.1)
        assert abs(float(one.nme) - float(batch_result.nme[i])) < 1e-3


def test_bad_images_are_isolated(flame_model, problems, batch_result):
    nan_targets = dataclasses.replace(problems[1].targets, lmk68=problems[1].targets.lmk68.at[3].set(jnp.nan),
                                      valid=jnp.asarray(False))
    exploding = dataclasses.replace(problems[2].targets, lmk68=problems[2].targets.lmk68 * 1e30)
    targets = stack_targets([problems[0].targets, nan_targets, exploding, problems[3].targets])
    result = jax.tree.map(np.asarray, fit_landmarks_batch(flame_model, targets, CONFIG))
    assert result.status[1] == STATUS_INVALID_INPUT
    assert result.status[2] in (STATUS_DIVERGED_INIT, STATUS_DIVERGED_RIGID)
    assert result.status[0] == STATUS_OK and result.status[3] == STATUS_OK
    for leaf in jax.tree.leaves(result):
        assert np.all(np.isfinite(leaf))
    for i in (0, 3):  # the healthy images are unaffected by their neighbours
        np.testing.assert_allclose(result.params.expression[i], batch_result.params.expression[i], atol=1e-5)


def test_linear_initialisation_alone_is_sensible(flame_model, problems):
    model = landmark_model(flame_model)
    init = jax.jit(lambda t: linear_initialisation(model, t, CONFIG))
    for p in problems:
        camera, params = init(p.targets)
        assert rotation_error_deg(np.asarray(camera.rotation_matrix()), np.asarray(p.camera.rotation_matrix())) < 15
        params = dataclasses.replace(params, jaw_pose=p.params.jaw_pose)
        err = aligned_vertex_error_mm(np.asarray(flame_forward(flame_model, params).vertices), p.vertices)
        assert np.median(err) < 5.0


def test_synthetic_recovery(flame_model, problems, batch_result):
    from flamejax.files import find_file
    from flamejax.flame import safe_load_pickle

    face = safe_load_pickle(find_file("flame_masks"))["face"]
    errors, pose_errors = [], []
    for i, p in enumerate(problems):
        params = jax.tree.map(lambda a: a[i], batch_result.params)
        errors.append(np.median(aligned_vertex_error_mm(np.asarray(flame_forward(flame_model, params).vertices),
                                                        p.vertices, face)))
        pose_errors.append(rotation_error_deg(np.asarray(jax.tree.map(lambda a: a[i], batch_result.camera).rotation_matrix()),
                                              np.asarray(p.camera.rotation_matrix())))
    assert np.median(errors) < 3.0
    assert np.median(pose_errors) < 6.0
