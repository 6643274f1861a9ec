"""Hard-pose landmark weights (flamejax.fit._visibility): visibility, robust reweighting, confidence, conventions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.camera import Camera
from flamejax.fit._visibility import (contour_conventions, face_size, facing_cosine, fit_confidence,
                                      geman_mcclure_weights, lip_normals_from_outer, point_normals, robust_weights,
                                      silhouette_contour, tukey_weights, visibility_weights)
from flamejax.flame import FlameParams, flame_forward
from flamejax.render import vertex_normals


def _camera(yaw_deg: float, distance: float = 1.0) -> Camera:
    rotation = jnp.array([0.0, np.deg2rad(yaw_deg), 0.0], jnp.float32)
    return Camera(rotation, jnp.array([0.0, 0.0, -distance], jnp.float32), jnp.float32(20.0))


@pytest.fixture(scope="module")
def mean_head(flame_model):
    """Mean head: its 68 fixed points, their normals, and the contour candidates with normals."""
    emb = flame_model.landmarks
    v = flame_forward(flame_model, FlameParams.for_model(flame_model)).vertices
    vn = vertex_normals(v, flame_model.faces)
    points = jnp.einsum("nkc,nk->nc", v[emb.full_vertices], emb.full_bary)
    normals = lip_normals_from_outer(point_normals(vn, emb.full_vertices, emb.full_bary))
    rows = jnp.einsum("rnkc,rnk->rnc", v[emb.contour_vertices], emb.contour_bary)
    row_normals = point_normals(vn, emb.contour_vertices, emb.contour_bary)
    return points, normals, rows, row_normals


def test_frontal_face_is_visible(mean_head):
    points, normals, _, _ = mean_head
    weights = np.asarray(visibility_weights(_camera(0.0), points[17:], normals[17:]))
    assert weights.min() > 0.5 and np.median(weights) > 0.95


@pytest.mark.parametrize("yaw", [70.0, -70.0])
def test_far_side_is_down_weighted_at_70_degrees(mean_head, yaw):
    points, normals, _, _ = mean_head
    weights = np.asarray(visibility_weights(_camera(yaw), points[17:], normals[17:]))
    x = np.asarray(points[17:, 0])
    # A positive yaw turns the face to its own left (+x): that side goes away from the camera.
    far, near = (x > 0.035, x < -0.035) if yaw > 0 else (x < -0.035, x > 0.035)
    assert far.sum() >= 6 and near.sum() >= 6
    assert weights[far].mean() < 0.3 and weights[near].mean() > 0.8
    # Brow tails (iBUG 17 / 26) far side hidden, near side seen.
    far_tail, near_tail = (26, 17) if yaw > 0 else (17, 26)
    assert weights[far_tail - 17] < 0.2 < 0.8 < weights[near_tail - 17]


def test_visibility_is_vmappable(mean_head):
    points, normals, _, _ = mean_head
    yaws = [-60.0, 0.0, 45.0]
    cams = jax.tree.map(lambda *a: jnp.stack(a), *[_camera(y) for y in yaws])
    batched = jax.jit(jax.vmap(visibility_weights, in_axes=(0, None, None)))(cams, points, normals)
    for i, y in enumerate(yaws):
        np.testing.assert_allclose(batched[i], visibility_weights(_camera(y), points, normals), atol=1e-6)


def test_robust_weights_drop_outliers():
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.uniform(-0.5, 0.5, (68, 2)), jnp.float32)
    predicted = target + jnp.asarray(rng.normal(0.0, 0.005, (68, 2)), jnp.float32)
    predicted = predicted.at[5].add(jnp.array([0.3, 0.0])).at[40].add(jnp.array([0.0, -0.2]))
    ones = jnp.ones(68, jnp.float32)
    for kind in ("geman_mcclure", "tukey"):
        w = np.asarray(robust_weights(predicted, target, ones, kind=kind))
        inliers = np.delete(w, [5, 40])
        assert w[5] < 0.05 and w[40] < 0.1, kind
        assert inliers.min() > 0.9, kind
    zero_weight = ones.at[3].set(0.0)
    assert float(robust_weights(predicted, target, zero_weight)[3]) == 0.0
    with pytest.raises(ValueError, match="kind"):
        robust_weights(predicted, target, ones, kind="huber")


def test_robust_kernels():
    r = jnp.array([0.0, 0.08, 0.24, 1.0])
    np.testing.assert_allclose(geman_mcclure_weights(r, 0.08), [1.0, 0.25, 0.01, (0.0064 / 1.0064) ** 2], rtol=1e-5)
    np.testing.assert_allclose(tukey_weights(r, 0.08), [1.0, 0.0, 0.0, 0.0], atol=1e-7)
    assert 0.0 < float(tukey_weights(jnp.array([0.04]), 0.08)[0]) < 1.0


def test_face_size_ignores_zero_weight_points():
    pts = jnp.array([[0.0, 0.0], [0.2, 0.0], [0.0, 0.8], [5.0, 5.0]])
    assert float(face_size(pts, jnp.array([1.0, 1.0, 1.0, 0.0]))) == pytest.approx(0.4, rel=1e-5)


def test_confidence_falls_with_error_and_outliers():
    rng = np.random.default_rng(1)
    target = jnp.asarray(rng.uniform(-0.5, 0.5, (68, 2)), jnp.float32)
    ones = jnp.ones(68, jnp.float32)

    def confidence(predicted):
        return float(fit_confidence(predicted, target, ones, robust_weights(predicted, target, ones)))

    good = target + jnp.asarray(rng.normal(0.0, 0.004, (68, 2)), jnp.float32)
    noisy = target + jnp.asarray(rng.normal(0.0, 0.03, (68, 2)), jnp.float32)
    broken = good.at[:20].add(0.3)
    c_good, c_noisy, c_broken = confidence(good), confidence(noisy), confidence(broken)
    assert c_good > 0.8 and c_noisy < c_good and c_broken < 0.3
    assert 0.0 <= c_broken <= 1.0


def test_contour_conventions(mean_head):
    points, normals, rows, row_normals = mean_head
    outline0, _ = silhouette_contour(_camera(0.0), rows, row_normals)
    assert float(jnp.abs(outline0 - points[:17]).max()) < 0.03
    turned = _camera(60.0)
    outline, outline_normals = silhouette_contour(turned, rows, row_normals)
    drawn, projected, visible = contour_conventions(turned, jnp.concatenate([outline, points[17:]]), points, normals)
    np.testing.assert_allclose(drawn[17:], projected[17:], atol=1e-6)
    # At +60 yaw the jaw side at +x (contour points 10..16) turns away: the fixed 3D points are hidden there and
    # drawn where they are; the outline points are seen edge-on instead, so the two conventions differ there.
    assert np.asarray(visible[10:17]).sum() <= 2 and np.asarray(visible[17:36]).mean() > 0.6
    seen_outline = facing_cosine(turned, outline, outline_normals)[10:17]
    seen_fixed = facing_cosine(turned, points[10:17], normals[10:17])
    assert float(jnp.abs(seen_outline).mean()) < 0.5 * float(jnp.abs(seen_fixed).mean())
    assert float(jnp.abs(drawn[10:17] - projected[10:17]).max()) > 0.01


def test_now_metric_is_pose_and_scale_free_and_sees_a_changed_nose(flame_model):
    from benchmarks import _scans
    from benchmarks.bench_identity import face_crop, landmarks51, now_distances
    from flamejax.flame import load_vertex_masks

    v = np.asarray(flame_forward(flame_model, FlameParams.for_model(flame_model)).vertices, np.float64)
    faces = np.asarray(flame_model.faces)
    seven = np.asarray(landmarks51(flame_model, jnp.asarray(v, jnp.float32)))[[i - 17 for i in _scans.NOW_SEVEN]]
    face_ids = load_vertex_masks(required=True)["face"]
    truth = face_crop(v, v, face_ids, np.random.default_rng(0), 1500)
    angle = np.deg2rad(25.0)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    moved = 1.07 * v @ rot.T + [0.01, -0.02, 0.3]
    same = now_distances(moved, 1.07 * seven @ rot.T + [0.01, -0.02, 0.3], faces, truth, seven)
    assert np.median(same) < 0.05 and same.max() < 0.5
    nose = load_vertex_masks(required=True)["nose"]
    longer = v.copy()
    longer[nose, 2] += 0.004
    changed = now_distances(longer, seven, faces, truth, seven)
    assert changed.max() > 2.0 and np.median(changed) < 1.0


def test_oracle_targets_are_the_truth_points_alone():
    from benchmarks.bench_identity import View, truth_targets
    from flamejax.camera import pixels_to_ndc

    rng = np.random.default_rng(0)
    size = 64
    views = [View(image=np.zeros((size, size, 3), np.float32), points478=rng.uniform(0, size, (478, 2)),
                  mirrored478=np.full((478, 2), np.nan), lmk68=np.zeros((68, 2)), iris=np.zeros((10, 2)),
                  fit_to_original=np.eye(2, 3), original_to_fit=np.eye(2, 3),
                  person=np.ones((size, size), np.float32), detection_score=np.float32(0.9),
                  lost_on_crop=np.bool_(False)) for _ in range(2)]
    truths = [rng.uniform(0, size, (51, 2)).astype(np.float32) for _ in views]
    targets = truth_targets(views, truths)
    for i, truth in enumerate(truths):
        np.testing.assert_allclose(targets.lmk68[i, 17:], pixels_to_ndc(truth, size), atol=1e-6)
    assert np.all(np.asarray(targets.lmk68_weight[:, 17:]) == 1.0) and np.all(np.asarray(targets.valid))
    for unused in (targets.lmk68_weight[:, :17], targets.mediapipe_weight, targets.iris_weight):
        assert not np.any(np.asarray(unused))
