"""Visibility and robust landmark weights inside the fit: they help at a hard pose with corrupted far-side targets,
the confidence falls with corrupted targets, both 68-point conventions agree at a frontal pose, the outputs carry
them."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.camera import Camera, project_ndc
from flamejax.fit import (PROFILE_SAMPLES, FitConfig, LandmarkStageConfig, LandmarkTargets, WeightingConfig,
                          fit_landmarks_batch, landmark_conventions, landmark_model, observed_targets, quick_config,
                          stack_targets)
from flamejax.fit._visibility import (facing_cosine, lip_normals_from_outer, pose_weights, target_agreement,
                                      triangle_normals)
from flamejax.flame import FlameParams, barycentric_points, flame_forward
from flamejax.render import vertex_normals
from flamejax.rotation import euler_to_matrix, matrix_to_axis_angle
from tests.conftest import folded_look, requires_flame

pytestmark = requires_flame
# Exact points but for 0.5 px of noise and the corruptions made here: the identity prior stays as strong at 65° as
# frontally (it rises by default against a detector's guesses), so that the weights alone make the difference.
CONFIG = quick_config(rigid_steps=90, landmark_steps=60)
CONFIG = CONFIG.replace(landmark=dataclasses.replace(CONFIG.landmark, shape_l2_turned=1.0))
UNWEIGHTED = CONFIG.replace(weighting=WeightingConfig(visibility=False, robust=False, segments=1))
YAW = 65.0


def _camera(yaw_deg: float, pitch_deg: float = 0.0) -> Camera:
    rotation = matrix_to_axis_angle(euler_to_matrix(jnp.deg2rad(jnp.array([yaw_deg, pitch_deg, 0.0], jnp.float32))))
    return Camera(rotation, jnp.array([0.0, 0.0, -1.0], jnp.float32), jnp.float32(20.0))


def _head(model, seed: int) -> FlameParams:
    rng = np.random.default_rng(seed)
    base = FlameParams.for_model(model)
    return dataclasses.replace(base, shape=jnp.asarray(rng.normal(size=model.num_shape), jnp.float32),
                               expression=jnp.asarray(0.5 * rng.normal(size=model.num_expression), jnp.float32))


def collapsed(model, params: FlameParams, camera: Camera, targets: LandmarkTargets) -> LandmarkTargets:
    """What a detector does at profile: points on the far side (surface facing away) pulled onto the near side."""
    emb = model.landmarks
    v = flame_forward(model, params).vertices
    hidden68 = np.array(facing_cosine(camera, barycentric_points(v, emb.full_vertices, emb.full_bary),
                                       lip_normals_from_outer(triangle_normals(v, emb.full_vertices))) < 0.0)
    hidden68[:17] = False  # the jaw targets follow the visible outline already
    hidden_mp = np.zeros(478, bool)
    hidden_mp[np.asarray(emb.mediapipe_ids)] = np.asarray(facing_cosine(
        camera, barycentric_points(v, emb.mediapipe_vertices, emb.mediapipe_bary),
        triangle_normals(v, emb.mediapipe_vertices)) < 0.0)
    lmk68, mediapipe = np.array(targets.lmk68), np.array(targets.mediapipe)
    nose = lmk68[30]
    lmk68[hidden68] = nose + 0.3 * (lmk68[hidden68] - nose)
    mediapipe[hidden_mp] = nose + 0.3 * (mediapipe[hidden_mp] - nose)
    assert hidden68.sum() >= 8 and hidden_mp.sum() >= 10
    return dataclasses.replace(targets, lmk68=jnp.asarray(lmk68), mediapipe=jnp.asarray(mediapipe))


@pytest.fixture(scope="module")
def profile_problems(flame_model):
    """Two heads at yaw 65: clean targets and targets with collapsed far-side points, and the truth."""
    rng = np.random.default_rng(3)
    cases = []
    for seed, yaw in ((1, YAW), (2, -YAW)):
        params, camera = _head(flame_model, seed), _camera(yaw, 10.0)
        clean, vertices = observed_targets(flame_model, params, camera, rng, noise_px=0.5)
        cases.append(SimpleNamespace(params=params, camera=camera, clean=clean, vertices=vertices,
                                     corrupted=collapsed(flame_model, params, camera, clean),
                                     outliers=displaced(clean, rng)))
    return cases


def displaced(targets: LandmarkTargets, rng) -> LandmarkTargets:
    """Points no head pose explains: a third of the inner 68 points and of MediaPipe's moved at random by a fifth
    of the image."""
    lmk68, mediapipe = np.array(targets.lmk68), np.array(targets.mediapipe)
    moved68 = rng.choice(np.arange(17, 68), 17, replace=False)
    moved_mp = rng.choice(np.flatnonzero(np.asarray(targets.mediapipe_weight)), 35, replace=False)
    lmk68[moved68] += rng.normal(size=(17, 2)) * 0.2
    mediapipe[moved_mp] += rng.normal(size=(35, 2)) * 0.2
    return dataclasses.replace(targets, lmk68=jnp.asarray(lmk68), mediapipe=jnp.asarray(mediapipe))


def _projected_error(model, result, cases) -> np.ndarray:
    """Mean NDC distance between the fitted and the true head's 68 fixed 3D points, projected by each's camera."""
    emb = model.landmarks
    errors = []
    for i, case in enumerate(cases):
        fitted = flame_forward(model, jax.tree.map(lambda a: a[i], result.params)).vertices
        camera = jax.tree.map(lambda a: a[i], result.camera)
        points = lambda v: barycentric_points(jnp.asarray(v), emb.full_vertices, emb.full_bary)  # noqa: E731
        errors.append(np.linalg.norm(np.asarray(project_ndc(camera, points(fitted))
                                                - project_ndc(case.camera, points(case.vertices))), axis=1).mean())
    return np.asarray(errors)


@pytest.fixture(scope="module")
def profile_fits(flame_model, profile_problems):
    targets = stack_targets([c.corrupted for c in profile_problems] + [c.clean for c in profile_problems]
                            + [c.outliers for c in profile_problems])
    return {name: jax.tree.map(np.asarray, fit_landmarks_batch(flame_model, targets, config))
            for name, config in (("weighted", CONFIG), ("unweighted", UNWEIGHTED))}


def test_weights_fit_a_corrupted_profile_better(flame_model, profile_problems, profile_fits):
    n = len(profile_problems)
    weighted = _projected_error(flame_model, jax.tree.map(lambda a: a[:n], profile_fits["weighted"]),
                                profile_problems)
    unweighted = _projected_error(flame_model, jax.tree.map(lambda a: a[:n], profile_fits["unweighted"]),
                                  profile_problems)
    assert np.all(profile_fits["weighted"].ok)
    # Per head only "better": with stage 2 converged, the unweighted fit of the second head comes close.
    assert np.all(weighted < unweighted) and weighted.mean() < 0.9 * unweighted.mean(), (weighted, unweighted)
    # The far-side targets get little weight at the fitted pose; the near side keeps most.
    w68 = profile_fits["weighted"].weights.lmk68[:n]
    assert np.all(profile_fits["weighted"].confidence[:n] > profile_fits["unweighted"].confidence[:n])
    corrupted = np.stack([np.any(np.asarray(c.corrupted.lmk68) != np.asarray(c.clean.lmk68), axis=1)
                          for c in profile_problems])
    assert w68[corrupted].mean() < 0.3 < 0.7 < w68[~corrupted].mean()


def test_confidence_falls_with_corrupted_targets(profile_problems, profile_fits):
    """Points no pose explains lower it; far-side guesses that the weights set aside hardly do."""
    n = len(profile_problems)
    for name in ("weighted", "unweighted"):
        confidence = profile_fits[name].confidence
        collapsed_far_side, clean, outliers = confidence[:n], confidence[n:2 * n], confidence[2 * n:]
        assert np.all((confidence >= 0) & (confidence <= 1))
        assert np.all(clean > 0.7), confidence
        assert np.all(outliers < clean - 0.3), confidence
    assert np.all(profile_fits["unweighted"].confidence[:n] < profile_fits["unweighted"].confidence[n:2 * n] - 0.2)


def test_weights_change_little_on_a_clean_frontal_fit(flame_model, profile_problems):
    """Weights are factors in [0, 1] that keep a clean, seen face's points (all of the inner 51 at frontal pose)."""
    params = profile_problems[0].params
    targets, _ = observed_targets(flame_model, params, _camera(0.0), np.random.default_rng(0), noise_px=0.5)
    sub = landmark_model(flame_model)
    weights = pose_weights(sub, params, _camera(0.0), targets, FitConfig().weighting)
    assert np.asarray(weights.lmk68).min() > 0.5 and np.median(np.asarray(weights.lmk68)) > 0.9
    assert np.asarray(weights.iris).min() > 0.9 and float(weights.confidence) > 0.8
    off = pose_weights(sub, params, _camera(0.0), targets, WeightingConfig(visibility=False, robust=False))
    assert np.all(np.asarray(off.lmk68) == 1.0) and np.all(np.asarray(off.mediapipe) == 1.0)


def test_triangle_normals_agree_with_vertex_normals(flame_model):
    emb = flame_model.landmarks
    v = flame_forward(flame_model, FlameParams.for_model(flame_model)).vertices
    from flamejax.fit._visibility import point_normals

    smooth = point_normals(vertex_normals(v, flame_model.faces), emb.full_vertices, emb.full_bary)
    flat = triangle_normals(v, emb.full_vertices)
    assert np.median(np.sum(np.asarray(smooth) * np.asarray(flat), axis=1)) > 0.95
    sub = landmark_model(flame_model)
    sub_flat = triangle_normals(flame_forward(sub, FlameParams.for_model(sub)).vertices, sub.landmarks.full_vertices)
    np.testing.assert_allclose(np.asarray(sub_flat), np.asarray(flat), atol=1e-5)


def test_conventions_agree_at_frontal_pose_and_differ_at_profile(flame_model):
    params = FlameParams.for_model(flame_model)
    frontal = landmark_conventions(landmark_model(flame_model), params, _camera(0.0))
    np.testing.assert_allclose(np.asarray(frontal.outline68[17:]), np.asarray(frontal.projected68[17:]), atol=1e-5)
    jaw_gap = np.linalg.norm(np.asarray(frontal.outline68[:17] - frontal.projected68[:17]), axis=1)
    face_width = np.ptp(np.asarray(frontal.projected68[:, 0]))
    assert np.median(jaw_gap) < 0.05 * face_width
    assert np.all(np.asarray(frontal.visible68[17:]) == 1.0)
    profile = landmark_conventions(flame_model, params, _camera(70.0))
    gap = np.linalg.norm(np.asarray(profile.outline68[:17] - profile.projected68[:17]), axis=1)
    assert gap.max() > 0.1 * face_width  # the far jaw: outline on the silhouette, 3D point behind the face
    assert 0 < np.asarray(profile.visible68).sum() < 68


def test_run_stage_in_segments_refreshes_its_context():
    import optax

    from flamejax.fit._optim import run_stage

    def loss(v, goal):  # each part chases a goal one unit beyond where it started
        return jnp.sum((v - goal) ** 2)

    best, report = run_stage(loss, jnp.zeros(()), optax.adam(0.1), 301, refresh=lambda v: v + 1.0, segments=3)
    assert report.losses.shape == (301,)  # 3 parts of 101 steps, the 2 surplus steps dropped
    assert abs(float(best) - 3.0) < 0.05
    assert bool(report.finite) and int(report.failed_step) == -1

    def poisoned(v, goal):
        return jnp.where(goal > 2.5, jnp.nan, loss(v, goal))

    best, report = run_stage(poisoned, jnp.zeros(()), optax.adam(0.1), 300, refresh=lambda v: v + 1.0, segments=3)
    assert not bool(report.finite) and int(report.failed_step) == 200  # counted from the stage's first step
    assert abs(float(best) - 2.0) < 0.05


def test_outputs_carry_both_conventions_and_the_confidence(flame_model):
    from flamejax.outputs import landmark_record

    params = FlameParams.for_model(flame_model)
    conventions = landmark_conventions(flame_model, params, _camera(30.0))
    size = 64
    item = SimpleNamespace(image=np.zeros((size, size, 3), np.float32), lmk68=np.zeros((68, 2), np.float32),
                           iris=np.zeros((10, 2), np.float32), points478=np.zeros((478, 2), np.float32),
                           annotated68=None, fit_to_original=np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 5.0]]))
    record = landmark_record(item, conventions.outline68, None, conventions, np.full(68, 0.5))
    for name in ("lmk68_outline", "lmk68_projected3d"):
        assert record[name].shape == (68, 2) and record[f"{name}_original"].shape == (68, 2)
    np.testing.assert_allclose(record["lmk68_outline_original"], record["lmk68_outline"] * 2.0 + [10.0, 5.0],
                               rtol=1e-5)
    assert record["lmk68_visibility"].shape == (68, 2) and "lmk68_visibility_original" not in record
    assert set(np.unique(record["lmk68_visibility"][:, 0])) <= {0.0, 1.0}
    np.testing.assert_allclose(record["lmk68_visibility"][:, 1], 0.5)


def test_two_look_targets_weigh_points_by_agreement():
    from flamejax.fit import two_look_targets
    from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE

    rng = np.random.default_rng(0)
    size = 256
    look = rng.uniform(60.0, 200.0, (478, 2)).astype(np.float32)
    mirrored = look + rng.normal(0.0, 0.3, look.shape).astype(np.float32)
    moved = rng.choice(468, 20, replace=False)
    mirrored[moved] += 30.0  # a fifth of the face: one of the looks folded these points
    single = two_look_targets(look, None, size)
    expected = LandmarkTargets.from_pixels(look, IBUG68_FROM_MEDIAPIPE @ look, size)
    for field in ("lmk68", "mediapipe", "iris", "lmk68_weight", "mediapipe_weight", "iris_weight"):
        np.testing.assert_allclose(getattr(single, field), getattr(expected, field), atol=1e-6)
    both = two_look_targets(look, mirrored, size)
    np.testing.assert_allclose(both.mediapipe, (look + mirrored) / size - 1.0, atol=1e-5)
    weight = np.asarray(both.mediapipe_weight)
    assert weight[moved].max() < 0.02 and np.delete(weight, moved).min() > 0.95, weight
    share_moved = np.abs(IBUG68_FROM_MEDIAPIPE[:, moved]).sum(axis=1)
    assert np.asarray(both.lmk68_weight)[share_moved == 0].min() > 0.95
    assert (share_moved > 0.5).sum() >= 3 and np.asarray(both.lmk68_weight)[share_moved > 0.5].max() < 0.1
    np.testing.assert_allclose(both.iris_weight, weight[468:])


def test_look_disagreement_is_the_mean_distance_over_the_face_size():
    from flamejax.fit import look_disagreement

    rng = np.random.default_rng(1)
    look = rng.uniform(60.0, 200.0, (478, 2)).astype(np.float32)
    assert look_disagreement(look, None) == 0.0
    assert look_disagreement(look, np.full_like(look, np.nan)) == 0.0
    assert look_disagreement(look, look) == 0.0
    # A shift of every point by d: mean distance d over the box of the inner 51 points (the shift keeps its size).
    from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE

    inner = IBUG68_FROM_MEDIAPIPE[17:] @ look
    size = np.sqrt(np.prod(inner.max(0) - inner.min(0)))
    np.testing.assert_allclose(look_disagreement(look, look + [3.0, 4.0]), 5.0 / size, rtol=1e-4)
    assert look_disagreement(look, folded_look(look, 0.6)) > 2 * look_disagreement(look, folded_look(look, 0.2))


def test_leaning_look_targets_follow_the_look_the_fit_explains():
    from flamejax.fit import LOOK_DISAGREEMENT, leaning_look_targets, look_disagreement, two_look_targets
    from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE

    rng = np.random.default_rng(2)
    size = 256
    good = rng.uniform(60.0, 200.0, (478, 2)).astype(np.float32)
    broken = folded_look(good, 0.9)
    assert look_disagreement(good, broken) > LOOK_DISAGREEMENT
    near_good = IBUG68_FROM_MEDIAPIPE @ (0.8 * good + 0.2 * broken)  # a first fit pulled a little off by the mean
    for first, second, expected in ((good, broken, good), (broken, good, good)):
        leaning = leaning_look_targets(first, second, near_good, size)
        np.testing.assert_allclose(leaning.mediapipe, expected * 2 / size - 1.0, atol=1e-4)
        for field in ("lmk68_weight", "mediapipe_weight", "iris_weight"):
            assert np.all(np.asarray(getattr(leaning, field)) == 1.0), field
    # A fit exactly between the looks explains both alike: the mean of the looks, as two_look_targets has it.
    between = leaning_look_targets(good, broken, IBUG68_FROM_MEDIAPIPE @ ((good + broken) / 2), size)
    np.testing.assert_allclose(between.mediapipe, two_look_targets(good, broken, size).mediapipe, atol=1e-5)


def test_a_second_fit_only_for_the_images_whose_looks_disagree():
    from flamejax.fitter import lean_on_explained_looks, rows_from, targets_of
    from flamejax.flame._layout import IBUG68_FROM_MEDIAPIPE

    rng = np.random.default_rng(3)
    size = 128
    good = rng.uniform(30.0, 100.0, (478, 2)).astype(np.float32)

    def item(mirrored, annotated68=None):
        return SimpleNamespace(image=np.zeros((size, size, 3), np.float32), points478=good, mirrored478=mirrored,
                               person=None, annotated68=annotated68)

    items = [item(good + rng.normal(0.0, 0.3, good.shape).astype(np.float32)), item(None), item(folded_look(good, 0.9)),
             item(folded_look(good, 0.9), annotated68=IBUG68_FROM_MEDIAPIPE @ good)]
    targets = [targets_of(it) for it in items]
    fitted = np.stack([np.asarray(t.lmk68) for t in targets])
    fitted[2] = IBUG68_FROM_MEDIAPIPE @ good / size * 2 - 1  # the first fit of image 2 found the good look
    leaning, changed = lean_on_explained_looks(items, targets, fitted)
    assert changed == [2]
    assert lean_on_explained_looks(items, targets, np.full_like(fitted, np.nan))[1] == []
    assert all(leaning[i] is targets[i] for i in (0, 1, 3))
    np.testing.assert_allclose(leaning[2].mediapipe, good * 2 / size - 1.0, atol=1e-4)
    first, second = stack_targets(targets), stack_targets(leaning)
    merged = rows_from(np.array([False, False, True, False]), second, first)
    np.testing.assert_array_equal(merged.mediapipe[2], second.mediapipe[2])
    np.testing.assert_array_equal(merged.mediapipe[np.array([0, 1, 3])], first.mediapipe[np.array([0, 1, 3])])

    # fit_with_look_choice: a stand-in fit that "finds" the good look and marks each call's rows.
    from typing import NamedTuple

    from flamejax.fitter import fit_with_look_choice

    class Landmarks(NamedTuple):
        lmk68: np.ndarray

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class Result:
        landmarks: Landmarks
        call: np.ndarray
        confidence: np.ndarray

    calls = []

    def fit(batch):
        calls.append(batch)
        rows = len(batch) + 1  # one padding row, as a Fitter's batch may have
        return Result(Landmarks(np.stack([np.asarray(t.lmk68) for t in batch] + [np.zeros((68, 2))])),
                      np.full(rows, len(calls)), np.full(rows, 0.9, np.float32))

    fitted_good = dataclasses.replace(targets[2], lmk68=jnp.asarray(fitted[2]))
    chosen, result = fit_with_look_choice(items, targets[:2] + [targets[2]] + targets[3:], lambda b: fit(
        [fitted_good if t is targets[2] else t for t in b]))
    assert len(calls) == 2 and chosen[2] is not targets[2] and all(chosen[i] is targets[i] for i in (0, 1, 3))
    np.testing.assert_array_equal(result.call, [1, 1, 2, 1, 1])
    # The second fit keeps the share of the face the two looks agreed on in its confidence.
    agreed = float(target_agreement(targets[2].lmk68_weight))
    assert agreed < 0.9
    np.testing.assert_allclose(result.confidence, [0.9, 0.9, 0.9 * agreed, 0.9, 0.9], rtol=1e-6)
    calls.clear()
    chosen, result = fit_with_look_choice(items[:2], targets[:2], fit)
    assert len(calls) == 1 and chosen == targets[:2]



def test_the_outline_follows_the_turning_head_without_jumps(flame_model):
    """Turned in 4-degree steps from -80 to +80 (pitched 10), each outline jaw point moves a little at every step,
    as the head's outline does. The candidate seen most edge-on (the rule before) jumped across the face, to folds
    inside the cheek and back, by 0.7-1.8 face widths on these heads."""
    yaws = jnp.arange(-80.0, 81.0, 4.0)
    for seed in (2, 3):
        params = _head(flame_model, seed)
        outline = np.asarray(jax.vmap(lambda yaw: landmark_conventions(flame_model, params, _camera(yaw, 10.0))
                                      .outline68[:17])(yaws))
        face_width = np.ptp(outline[:, :, 0], axis=1)[1:, None]
        step = np.linalg.norm(np.diff(outline, axis=0), axis=-1) / face_width
        assert step.max() < 0.12, (seed, np.unravel_index(step.argmax(), step.shape))


@pytest.mark.parametrize("term", ["contour", "profile"])
@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_the_jaw_contour_and_the_profile_pass_only_their_share_of_gradient_to_the_identity(flame_model, term, scale):
    """LandmarkStageConfig.contour_identity and profile_identity: the jaw contour's points and the points the
    profile pulls on keep their values, the identity gets ``scale`` of their gradient, jaw, expression and camera
    all of it (the forward pass on their own vertices agrees with the model's)."""
    from flamejax.fit import landmark_model
    from flamejax.fit._landmark_fit import contour_identity_scaled, profile_identity_scaled
    from flamejax.flame import posed_landmarks

    model = landmark_model(flame_model, face=False)
    params = dataclasses.replace(_head(model, 4), jaw_pose=jnp.array([0.12, 0.0, 0.0], jnp.float32))
    camera = _camera(35.0, 8.0)

    def points(p, cam, share):
        proj = posed_landmarks(model, p, cam)
        if term == "contour":
            return contour_identity_scaled(model, p, cam, proj, share).lmk68[:17]
        return profile_identity_scaled(model, p, cam, proj, share)

    np.testing.assert_allclose(points(params, camera, scale), points(params, camera, 1.0), atol=1e-6)
    loss = lambda p, cam, share: jnp.sum(jnp.sin(7.0 * points(p, cam, share)))  # noqa: E731
    (full_params, full_camera), (params_grad, camera_grad) = (
        jax.grad(loss, argnums=(0, 1))(params, camera, 1.0), jax.grad(loss, argnums=(0, 1))(params, camera, scale))
    assert float(jnp.abs(full_params.shape).max()) > 1e-3
    np.testing.assert_allclose(params_grad.shape, scale * full_params.shape, atol=1e-5)
    for name in ("jaw_pose", "expression"):
        np.testing.assert_allclose(getattr(params_grad, name), getattr(full_params, name), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(camera_grad.rotation, full_camera.rotation, rtol=1e-4, atol=1e-6)


def test_the_landmark_term_keeps_the_profile_s_pull_off_the_identity(flame_model):
    """LandmarkStageConfig.profile_identity 0 (the default): the profile's gradient moves the camera but not the
    identity, whose gradient is the landmark term's without the profile; 1 lets it reach the identity too."""
    from flamejax.fit._landmark_fit import identity_scaled_landmark_loss
    from flamejax.flame import posed_landmarks

    model = landmark_model(flame_model, face=False)
    params, camera = _head(model, 5), _camera(60.0)
    targets, _ = observed_targets(model, params, camera, np.random.default_rng(0), noise_px=0.0)
    nose = np.asarray(posed_landmarks(model, params, camera).lmk68[30])
    profile = jnp.asarray(np.tile(nose + [0.08, 0.0], (PROFILE_SAMPLES, 1)), jnp.float32)
    targets = dataclasses.replace(targets, profile=profile, profile_weight=jnp.ones(PROFILE_SAMPLES, jnp.float32))

    def gradient(stage):
        def loss(p, cam):
            return identity_scaled_landmark_loss(model, p, cam, posed_landmarks(model, p, cam), targets, stage, 1.0)[0]
        return jax.grad(loss, argnums=(0, 1))(params, camera)

    held, without, full = (gradient(LandmarkStageConfig(**changes))
                           for changes in ({}, {"profile_weight": 0.0}, {"profile_identity": 1.0}))
    np.testing.assert_allclose(held[0].shape, without[0].shape, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(full[0].shape - without[0].shape).max()) > 1e-3
    np.testing.assert_allclose(held[1].rotation, full[1].rotation, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(held[1].rotation - without[1].rotation).max()) > 1e-3


def test_the_contour_s_share_of_the_identity_rises_with_the_turn():
    from flamejax.fit._landmark_fit import contour_identity_share

    stage = LandmarkStageConfig()
    shares = [float(contour_identity_share(_camera(yaw), stage)) for yaw in (0.0, -30.0, 47.5, -60.0)]
    np.testing.assert_allclose(shares, [0.0, 0.0, 0.5, 1.0], atol=1e-4)
    half = dataclasses.replace(stage, contour_identity=0.5)
    assert abs(float(contour_identity_share(_camera(10.0), half)) - 0.5) < 1e-6


def test_the_identity_prior_strengthens_with_the_turn_except_for_precise_points():
    from flamejax.fit import precise_landmarks_config
    from flamejax.fit._landmark_fit import identity_prior_weight

    stage = LandmarkStageConfig(shape_l2=0.5, shape_l2_turned=4.0)
    weights = [float(identity_prior_weight(_camera(yaw), stage)) for yaw in (0.0, -42.0, 52.5, -65.0)]
    np.testing.assert_allclose(weights, [0.5, 0.5, 1.25, 2.0], rtol=1e-4)
    precise = precise_landmarks_config().landmark
    assert float(identity_prior_weight(_camera(70.0), precise)) == pytest.approx(precise.shape_l2)
    assert precise.profile_identity == 1.0 and LandmarkStageConfig().profile_identity == 0.0
