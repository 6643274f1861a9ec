"""Small pure pieces of the fit, each with and without jit (chex variants): losses, projection, the closed forms
of the initialisation against the SVD / least-squares solutions they replace, the status order."""

from __future__ import annotations

import dataclasses

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized  # noqa: F401  (chex.variants needs absl's parameterized test cases)

from flamejax.camera import Camera, project_ndc
from flamejax.fit import LandmarkTargets, Status, stack_targets
from flamejax.fit._init import _orthonormal_rows, _scaled_orthographic_pose, _solve_spd3
from flamejax.fit._landmark_fit import (PROFILE_CAP, PROFILE_MARGIN, SILHOUETTE_CAP, SILHOUETTE_MARGIN,
                                        face_silhouette_loss, mean_l1, mean_l2, profile_candidates,
                                        profile_loss, silhouette_loss)
from flamejax.fit._targets import PROFILE_SAMPLES, PROFILE_TURN, SILHOUETTE_SIZE, profile_edge, silhouette_distance
from flamejax.flame import ProjectedLandmarks
from flamejax.fit._result import first_failure
from flamejax.rotation import axis_angle_to_matrix


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_weighted_means(self):
        pred = jnp.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
        target = jnp.zeros((3, 2))
        weight = jnp.array([1.0, 1.0, 0.0])
        l2 = self.variant(mean_l2)(pred, target, weight)
        l1 = self.variant(mean_l1)(pred, target, weight)
        np.testing.assert_allclose(l2, 2.5, rtol=1e-5)  # (0 + 5) / 2, the zero-weight point ignored
        np.testing.assert_allclose(l1, 1.75, rtol=1e-6)  # (0 + 3.5) / 2
        self.assertTrue(np.isfinite(jax.grad(mean_l2)(target, target, weight)).all())  # smooth at zero

    @chex.variants(with_jit=True, without_jit=True)
    def test_silhouette_loss_is_one_sided(self):
        """Points inside the person's silhouette (or within its margin) cost nothing; outside, their NDC distance
        beyond the margin (capped softly), and the gradient moves them back in."""
        person = np.zeros((256, 256), np.float32)
        person[:, :128] = 1.0  # the left half of the image: NDC x < 0
        outside = jnp.asarray(silhouette_distance(person))

        def projected(points):
            return ProjectedLandmarks(lmk68=points[:68], iris=points[68:78], mediapipe=points[78:])

        inside = jnp.full((183, 2), -0.5)
        loss = self.variant(silhouette_loss)
        np.testing.assert_allclose(loss(projected(inside), outside), 0.0, atol=1e-6)
        at_the_edge = inside.at[:, 0].set(0.5 * SILHOUETTE_MARGIN)
        np.testing.assert_allclose(loss(projected(at_the_edge), outside), 0.0, atol=1e-6)
        beyond = inside.at[:, 0].set(0.25)  # a quarter of NDC right of the edge
        np.testing.assert_allclose(loss(projected(beyond), outside),
                                   SILHOUETTE_CAP * np.tanh((0.25 - SILHOUETTE_MARGIN) / SILHOUETTE_CAP), rtol=0.03)
        grad = jax.grad(lambda p: silhouette_loss(projected(p), outside))(beyond)
        self.assertTrue(np.all(grad[:, 0] > 0) and np.allclose(grad[:, 1], 0.0, atol=1e-6))

    @chex.variants(with_jit=True, without_jit=True)
    def test_face_silhouette_loss_holds_the_face_vertices_inside(self):
        """The face region's vertices cost what the landmarks would (mean over the vertices, one-sided), with the
        landmarks themselves inside; the gradient moves only the vertices outside; no vertices or no silhouette
        cost nothing."""
        person = np.zeros((256, 256), np.float32)
        person[:, :128] = 1.0
        outside = jnp.asarray(silhouette_distance(person))
        landmarks = jnp.full((183, 2), -0.5)

        def projected(face):
            return ProjectedLandmarks(lmk68=landmarks[:68], iris=landmarks[68:78], mediapipe=landmarks[78:],
                                      face=face)

        face = jnp.full((40, 2), -0.5).at[:10, 0].set(0.25)  # a quarter of the vertices a quarter NDC outside
        loss = self.variant(face_silhouette_loss)
        np.testing.assert_allclose(silhouette_loss(projected(face), outside), 0.0, atol=1e-6)
        np.testing.assert_allclose(loss(projected(face), outside),
                                   0.25 * SILHOUETTE_CAP * np.tanh((0.25 - SILHOUETTE_MARGIN) / SILHOUETTE_CAP),
                                   rtol=0.03)
        grad = jax.grad(lambda f: face_silhouette_loss(projected(f), outside))(face)
        self.assertTrue(np.all(grad[:10, 0] > 0) and np.allclose(grad[10:], 0.0, atol=1e-7))
        np.testing.assert_allclose(loss(projected(jnp.zeros((0, 2))), outside), 0.0)
        np.testing.assert_allclose(loss(projected(None), outside), 0.0)
        np.testing.assert_allclose(face_silhouette_loss(projected(face), None), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_profile_loss_pulls_the_nearest_landmark_to_the_edge(self):
        """Profile points cost their distance to the nearest inner landmark (beyond the margin, capped softly);
        the jaw contour does not count, weightless points cost nothing, and the gradient moves the nearest
        landmark towards the edge and leaves the others."""
        def projected(points):
            return profile_candidates(ProjectedLandmarks(lmk68=points[:68], iris=points[68:78], mediapipe=points[78:]))

        points = jnp.zeros((183, 2))
        profile = jnp.stack([jnp.full(PROFILE_SAMPLES, 0.3), jnp.zeros(PROFILE_SAMPLES)], axis=-1)
        weight = jnp.ones(PROFILE_SAMPLES)
        loss = self.variant(profile_loss)
        np.testing.assert_allclose(loss(projected(points), profile, weight),
                                   PROFILE_CAP * np.tanh((0.3 - PROFILE_MARGIN) / PROFILE_CAP), rtol=1e-4)
        nose = 30  # the nose tip, an inner point
        reached = points.at[nose, 0].set(0.3 - 0.5 * PROFILE_MARGIN)
        np.testing.assert_allclose(loss(projected(reached), profile, weight), 0.0, atol=1e-6)
        jaw_reached = points.at[8, 0].set(0.3)  # a contour point at the edge explains nothing
        np.testing.assert_allclose(loss(projected(jaw_reached), profile, weight),
                                   loss(projected(points), profile, weight), rtol=1e-6)
        np.testing.assert_allclose(loss(projected(points), profile, jnp.zeros(PROFILE_SAMPLES)), 0.0, atol=1e-7)
        np.testing.assert_allclose(loss(projected(points), None, None), 0.0)
        ahead = points.at[nose, 0].set(0.1)
        grad = jax.grad(lambda p: profile_loss(projected(p), profile, weight))(ahead)
        self.assertLess(float(grad[nose, 0]), 0.0)  # moving the nose right lowers the cost
        self.assertTrue(np.allclose(np.delete(np.asarray(grad), nose, axis=0), 0.0))

    @chex.variants(with_jit=True, without_jit=True)
    def test_projection_of_a_point_on_the_axis_and_off_it(self):
        camera = Camera.default(fov_deg=90.0, distance=2.0)
        points = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
        ndc = self.variant(project_ndc)(camera, points)
        # 90° FOV: NDC focal length 1; the point (1, 1) at depth 2 lands at x = 0.5, y = -0.5 (y down).
        np.testing.assert_allclose(ndc, [[0.0, 0.0], [0.5, -0.5]], atol=1e-6)


class ClosedFormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_spd3_solve_and_orthonormal_rows(self):
        rng = np.random.default_rng(0)
        m = rng.normal(size=(3, 3))
        spd = jnp.asarray(m @ m.T + 0.5 * np.eye(3), jnp.float32)
        rhs = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
        np.testing.assert_allclose(self.variant(_solve_spd3)(spd, rhs), np.linalg.solve(spd, rhs), rtol=1e-4, atol=1e-5)
        rows = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
        u, _, vt = np.linalg.svd(np.asarray(rows, np.float64), full_matrices=False)
        np.testing.assert_allclose(self.variant(_orthonormal_rows)(rows), u @ vt, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_scaled_orthographic_pose_recovers_a_far_camera(self):
        """Far away (weak perspective holds) the closed form recovers rotation and translation."""
        rng = np.random.default_rng(1)
        points = jnp.asarray(rng.normal(size=(40, 3)) * 0.05, jnp.float32)
        rotation = jnp.asarray([0.2, -0.4, 0.1], jnp.float32)
        camera = Camera(rotation, jnp.asarray([0.01, -0.02, -20.0], jnp.float32), jnp.asarray(1.0, jnp.float32))
        target = project_ndc(camera, points)
        pose = self.variant(_scaled_orthographic_pose)(points, target, jnp.ones(40), camera.fov_deg)
        np.testing.assert_allclose(axis_angle_to_matrix(pose[:3]), axis_angle_to_matrix(rotation), atol=2e-3)
        np.testing.assert_allclose(pose[3:], camera.translation, rtol=2e-3, atol=2e-3)


def test_status_of_the_first_failing_stage():
    codes = first_failure([(jnp.asarray(False), Status.PADDING), (jnp.asarray(True), Status.DIVERGED_RIGID),
                           (jnp.asarray(True), Status.DIVERGED_LANDMARK)])
    assert codes.dtype == jnp.int32 and Status(int(codes)) is Status.DIVERGED_RIGID
    assert Status(int(first_failure([(jnp.asarray(False), Status.PADDING)]))) is Status.OK
    assert {s.reason for s in Status} and len({s.reason for s in Status}) == len(Status)


def _plain_stage(loss_fn, variables, optimiser, steps):
    """run_stage's contract as a Python loop: ``steps`` updates, the lowest-loss iterate of all ``steps + 1``."""
    import optax

    state, losses = optimiser.init(variables), []
    best, best_loss = variables, np.inf
    for _ in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(variables)
        losses.append(float(loss))
        if loss < best_loss:
            best, best_loss = variables, float(loss)
        updates, state = optimiser.update(grads, state, variables)
        variables = optax.apply_updates(variables, updates)
    last_loss = float(loss_fn(variables))
    return (variables, last_loss) if last_loss < best_loss else (best, best_loss), np.asarray(losses)


def test_run_stage_scores_every_iterate_including_the_last():
    import optax

    from flamejax.fit._optim import run_stage

    def converging(v):  # falls at every step: the last iterate is the best
        return jnp.sum((v - jnp.array([3.0, -1.0])) ** 2)

    def overshooting(v):  # a learning rate this high oscillates: the best iterate lies inside the stage
        return jnp.sum(jnp.abs(v - jnp.array([0.35, 0.1])))

    for loss_fn, lr, steps, last_is_best in ((converging, 0.1, 12, True), (overshooting, 0.5, 10, False)):
        start = jnp.zeros(2)
        (expected, expected_loss), expected_losses = _plain_stage(loss_fn, start, optax.adam(lr), steps)
        assert (expected_loss < expected_losses.min()) == last_is_best
        best, report = run_stage(loss_fn, start, optax.adam(lr), steps)
        np.testing.assert_allclose(np.asarray(report.losses), expected_losses, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(best), np.asarray(expected), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(float(report.final_loss), expected_loss, rtol=1e-5, atol=1e-7)


def test_silhouette_distance_units_and_absent_silhouettes():
    disk = np.zeros((200, 200), np.float32)
    cv2.circle(disk, (100, 100), 50, 1.0, -1)  # radius 0.5 NDC
    field = silhouette_distance(disk)
    assert field.shape == (SILHOUETTE_SIZE, SILHOUETTE_SIZE) and field.dtype == np.float32
    centre, corner = field[SILHOUETTE_SIZE // 2, SILHOUETTE_SIZE // 2], field[0, 0]
    assert centre == 0.0
    np.testing.assert_allclose(corner, np.sqrt(2) - 0.5, atol=0.03)  # from (-1, -1) to the circle, NDC
    for nothing in (None, np.zeros((64, 64), np.float32)):
        assert not silhouette_distance(nothing).any()
    with pytest.raises(ValueError, match="square"):
        silhouette_distance(np.ones((64, 32), np.float32))


def turned_face(turn: float, facing: int = 1) -> np.ndarray:
    """478 points of a face 140 px high and 80 px wide whose nose tip lies ``turn`` half-widths off the cheeks'
    middle, towards +x (``facing`` 1) or -x (-1), on a 256² crop."""
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(60, 170, 478), rng.uniform(60, 200, 478)], axis=-1).astype(np.float32)
    points[[10, 152, 234, 454, 1, 9, 2]] = [[100, 60], [100, 200], [60, 130], [140, 130], [100 + 40 * turn, 130],
                                            [150, 90], [160, 150]]
    if facing < 0:
        points[:, 0] = 256 - points[:, 0]
    return points


def silhouette_to(column: float, outside: float = 0.0, facing: int = 1) -> np.ndarray:
    person = np.full((256, 256), outside, np.float32)
    person[20:250, 20:int(column)] = 1.0
    return person if facing > 0 else person[:, ::-1].copy()


@pytest.mark.parametrize("facing", [1, -1])
def test_profile_edge_finds_the_turned_face_s_edge(facing):
    points = turned_face(1.8, facing)
    edges, weights = profile_edge(silhouette_to(180, facing=facing), points)
    assert edges.shape == (PROFILE_SAMPLES, 2) and weights.shape == (PROFILE_SAMPLES,)
    np.testing.assert_array_equal(weights, 1.0)
    np.testing.assert_allclose(edges[:, 0], 180 if facing > 0 else 76, atol=1.0)
    levels = np.sort(edges[:, 1])  # from the nose's base up to between the brows, evenly
    assert levels[0] < 95 and levels[-1] > 145 and np.all(np.diff(levels) > 0)


def test_profile_edge_gives_nothing_it_cannot_trust():
    turned = turned_face(1.8)
    for points, person, why in ((turned_face(0.0), silhouette_to(180), "a face that looks at the camera"),
                                (turned, silhouette_to(180, outside=0.5), "a segmentation unsure of the background"),
                                (turned, silhouette_to(230), "an edge far beyond every point: hair, a shoulder"),
                                (turned, np.zeros((256, 256), np.float32), "no silhouette"),
                                (np.full((478, 2), np.nan, np.float32), silhouette_to(180), "no points")):
        assert not profile_edge(person, points)[1].any(), why
    half_way = float(np.mean(PROFILE_TURN))
    np.testing.assert_allclose(profile_edge(silhouette_to(180), turned_face(half_way))[1], 0.5, atol=1e-5)


def test_targets_find_the_profile_on_a_silhouette_of_another_size():
    points = turned_face(1.8)
    same = LandmarkTargets.from_pixels(points, points[:68], 256, person=silhouette_to(180))
    larger = cv2.resize(silhouette_to(180), (512, 512), interpolation=cv2.INTER_NEAREST)
    other = LandmarkTargets.from_pixels(points, points[:68], 256, person=larger)
    np.testing.assert_allclose(other.profile, same.profile, atol=2e-3)  # NDC: a quarter of a 256² pixel
    np.testing.assert_array_equal(other.profile_weight, same.profile_weight)
    np.testing.assert_allclose(same.profile[:, 0], 180 * 2 / 256 - 1, atol=2 / 256)


def test_targets_with_and_without_a_silhouette_stack_into_one_batch():
    points = np.full((478, 2), 100.0, np.float32)
    person = np.zeros((256, 256), np.float32)
    person[50:200, 50:200] = 1.0
    seen = LandmarkTargets.from_pixels(points, points[:68], 256, person=person)
    unseen = LandmarkTargets.from_pixels(points, points[:68], 256)
    assert unseen.outside is None and seen.outside.shape == (SILHOUETTE_SIZE, SILHOUETTE_SIZE)
    batch = stack_targets([seen, unseen], batch_size=3)
    assert batch.outside.shape == (3, SILHOUETTE_SIZE, SILHOUETTE_SIZE)
    np.testing.assert_array_equal(batch.outside[0], seen.outside)
    assert not np.asarray(batch.outside[1:]).any()
    assert batch.profile.shape == (3, PROFILE_SAMPLES, 2) and not np.asarray(batch.profile_weight[1:]).any()
    unseen_batch = stack_targets([unseen], batch_size=2)
    assert unseen_batch.outside is None and unseen_batch.profile is None  # video frames: no field, no cost


def test_stacking_targets_compiles_no_program_per_batch_size():
    """A batch is stacked on the host: ``jnp.stack`` compiled an XLA concatenate of n operands for each new n, which
    took minutes at a few thousand images (benchmarks/RESULTS.md, accelerator check)."""
    from jax import monitoring

    points = np.arange(956, dtype=np.float32).reshape(478, 2)
    one = LandmarkTargets.from_pixels(points, points[:68], 256)
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    stack_targets([one, one], batch_size=3)  # the padding's own arrays are made once
    monitoring.register_event_duration_secs_listener(listen)
    try:
        batches = [stack_targets([one] * n) for n in (37, 38, 39)]
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert not compiles
    assert batches[1].lmk68.shape == (38, 68, 2) and batches[1].lmk68.dtype == jnp.float32
    np.testing.assert_array_equal(batches[2].mediapipe[38], one.mediapipe)
    traced = jax.jit(lambda t: stack_targets([t, t], batch_size=3))(one)  # inside a caller's program too
    np.testing.assert_array_equal(traced.lmk68[1], one.lmk68)


def test_the_face_vertices_are_read_only_where_their_term_can_act():
    """A fit reads the face region's vertices when its targets have a silhouette (or are not known yet) and the
    term's weight is not 0; otherwise it leaves them out (a third of the vertices)."""
    import types

    from flamejax.fit import FitConfig
    from flamejax.fit._landmark_fit import reads_face

    from flamejax.track import JointConfig

    on = FitConfig().landmark
    off = dataclasses.replace(on, face_silhouette_weight=0.0)
    with_silhouette, without = types.SimpleNamespace(outside=jnp.zeros((4, 4))), types.SimpleNamespace(outside=None)
    assert reads_face(with_silhouette, on) and reads_face(None, on)
    assert not reads_face(without, on) and not reads_face(with_silhouette, off) and not reads_face(None, off)
    assert reads_face(with_silhouette, JointConfig().stage) == (JointConfig().stage.face_silhouette_weight != 0)
