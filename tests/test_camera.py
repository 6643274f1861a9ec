"""Camera conventions, projection, intrinsics and Euler angles; rotation helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flamejax import camera as cam
from flamejax.rotation import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle, matrix_to_euler


def test_default_camera_sees_the_face_centred_and_upright():
    camera = cam.Camera.default()
    points = jnp.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.05, 0.0]])
    pixels, depth = cam.project(camera, points, 256)
    np.testing.assert_allclose(pixels[0], [128.0, 128.0], atol=1e-4)
    assert pixels[1, 0] > 128.0  # +x (subject's left) appears to the right of the image
    assert pixels[2, 1] < 128.0  # +y (up) appears higher, i.e. smaller v
    np.testing.assert_allclose(depth, 1.0, atol=1e-6)
    focal = float(cam.focal_length(camera.fov_deg, 256))
    np.testing.assert_allclose(focal, 0.5 * 256 / np.tan(np.deg2rad(10.0)), rtol=1e-6)  # ~726 px, as the reference
    np.testing.assert_allclose(pixels[1, 0] - 128.0, focal * 0.05, rtol=1e-5)


def test_intrinsics_agree_with_projection():
    rng = np.random.default_rng(0)
    camera = cam.Camera(jnp.asarray(rng.normal(size=3) * 0.3, jnp.float32), jnp.array([0.01, -0.02, -1.1]),
                        jnp.asarray(25.0))
    points = jnp.asarray(rng.normal(size=(20, 3)) * 0.08, jnp.float32)
    pixels, _ = cam.project(camera, points, 512)
    k = np.asarray(cam.intrinsics(camera, 512), np.float64)
    p_cam = np.asarray(cam.world_to_camera(camera, points), np.float64) * [1.0, -1.0, -1.0]  # to OpenCV axes
    uvw = p_cam @ k.T
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], pixels, atol=2e-3)
    np.testing.assert_allclose(cam.project_ndc(camera, points), cam.pixels_to_ndc(pixels, 512), atol=1e-5)
    np.testing.assert_allclose(cam.ndc_to_pixels(cam.pixels_to_ndc(pixels, 512), 512), pixels, atol=1e-3)


def test_yaw_pitch_roll_round_trip_and_meaning():
    rng = np.random.default_rng(1)
    angles = np.deg2rad(rng.uniform([-60, -40, -30], [60, 40, 30], size=(50, 3))).astype(np.float32)
    back = np.asarray(matrix_to_euler(euler_to_matrix(jnp.asarray(angles))))
    np.testing.assert_allclose(back, angles, atol=1e-5)
    camera = cam.Camera(matrix_to_axis_angle(euler_to_matrix(jnp.deg2rad(jnp.array([30.0, 0.0, 0.0])))),
                        jnp.array([0.0, 0.0, -1.0]), jnp.asarray(20.0))
    np.testing.assert_allclose(cam.yaw_pitch_roll(camera), [30.0, 0.0, 0.0], atol=1e-4)
    nose = cam.project(camera, jnp.array([[0.0, 0.0, 0.1]]), 256)[0][0]
    assert nose[0] > 128.0  # positive yaw turns the face towards +x: the nose tip moves right in the image


def test_rodrigues_matches_scipy_and_inverts():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(100, 3)) * rng.uniform(0, 3, size=(100, 1))
    vectors = np.concatenate([vectors, np.zeros((1, 3)), [[1e-9, 0, 0]], [[np.pi - 1e-4, 0, 0]]])
    ours = np.asarray(axis_angle_to_matrix(jnp.asarray(vectors, jnp.float32)))
    np.testing.assert_allclose(ours, Rotation.from_rotvec(vectors).as_matrix(), atol=2e-6)
    back = np.asarray(axis_angle_to_matrix(matrix_to_axis_angle(jnp.asarray(ours))))
    np.testing.assert_allclose(back, ours, atol=2e-5)
    grad = jax.grad(lambda v: jnp.sum(axis_angle_to_matrix(v) * jnp.arange(9.0).reshape(3, 3)))(jnp.zeros(3))
    assert np.all(np.isfinite(grad))


def _random_camera_and_points(seed: int):
    rng = np.random.default_rng(seed)
    camera = cam.Camera(jnp.asarray(rng.normal(size=3) * 0.4, jnp.float32),
                        jnp.asarray([0.02, -0.03, -1.2] + rng.normal(size=3) * 0.02, jnp.float32), jnp.asarray(22.0))
    return camera, jnp.asarray(rng.normal(size=(30, 3)) * 0.08, jnp.float32)


def test_opencv_projection_reproduces_flamejax_pixels():
    import cv2

    camera, points = _random_camera_and_points(3)
    pixels, depth = cam.project(camera, points, 256)
    r, t = (np.asarray(a, np.float64) for a in cam.opencv_extrinsics(camera))
    k_cv = np.asarray(cam.intrinsics_opencv(camera, 256), np.float64)
    cv_pixels, _ = cv2.projectPoints(np.asarray(points, np.float64), cv2.Rodrigues(r)[0], t, k_cv, None)
    np.testing.assert_allclose(cv_pixels[:, 0] + 0.5, pixels, atol=2e-3)  # OpenCV pixel centres sit at integers
    p_cv = np.asarray(cam.points_to_opencv_camera(camera, points), np.float64)
    np.testing.assert_allclose(p_cv, np.asarray(points, np.float64) @ r.T + t, atol=1e-5)
    np.testing.assert_allclose(p_cv[:, 2], depth, atol=1e-5)  # OpenCV z is the positive depth
    uvw = p_cv @ np.asarray(cam.intrinsics(camera, 256), np.float64).T
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], pixels, atol=2e-3)  # K: this module's pixel centres
    w2c = np.asarray(cam.world_to_camera_opencv(camera), np.float64)
    homogeneous = np.concatenate([np.asarray(points, np.float64), np.ones((len(points), 1))], axis=1)
    np.testing.assert_allclose((homogeneous @ w2c.T)[:, :3], p_cv, atol=1e-5)
    np.testing.assert_allclose(w2c[3], [0, 0, 0, 1])


@pytest.mark.parametrize("turn_deg, stretch", [(0.0, 1.0), (73.0, 1.0), (-180.0, 1.0), (25.0, 1.3)])
def test_the_photographs_camera_projects_where_the_crop_maps(turn_deg, stretch):
    """A crop turned, scaled and moved in its photograph (and one stretched unevenly): the photograph's K, R, t
    put every point where the crop's projection, mapped by fit_to_photograph, puts it."""
    import cv2

    camera, points = _random_camera_and_points(5)
    turn = np.deg2rad(turn_deg)
    affine = np.array([[2.7 * np.cos(turn), -2.7 * np.sin(turn), 130.0],
                       [2.7 * stretch * np.sin(turn), 2.7 * stretch * np.cos(turn), -40.0]])
    crop_pixels, _ = cam.project(camera, points, 512)
    want = np.asarray(crop_pixels, np.float64) @ affine[:, :2].T + affine[:, 2]
    k, r, t = (np.asarray(a, np.float64) for a in cam.photograph_camera_opencv(camera, 512, affine))
    uvw = (np.asarray(points, np.float64) @ r.T + t) @ k.T
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], want, atol=5e-3)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(r) > 0 and k[1, 0] == k[2, 0] == k[2, 1] == 0 and k[0, 0] > 0 and k[1, 1] > 0
    np.testing.assert_allclose(r[2], np.asarray(cam.opencv_extrinsics(camera)[0])[2], atol=1e-6)  # same view axis
    k_cv = np.asarray(cam.to_opencv_pixels(jnp.asarray(k)), np.float64)
    cv_pixels, _ = cv2.projectPoints(np.asarray(points, np.float64), cv2.Rodrigues(r)[0], t, k_cv, None)
    np.testing.assert_allclose(cv_pixels[:, 0] + 0.5, want, atol=5e-3)


def test_opengl_camera_to_world_inverts_the_view_and_looks_down_minus_z():
    camera, points = _random_camera_and_points(4)
    pixels, _ = cam.project(camera, points, 200)
    c2w = np.asarray(cam.camera_to_world_opengl(camera), np.float64)
    homogeneous = np.concatenate([np.asarray(points, np.float64), np.ones((len(points), 1))], axis=1)
    p_gl = (homogeneous @ np.linalg.inv(c2w).T)[:, :3]
    f = float(cam.focal_length(camera.fov_deg, 200))
    gl_pixels = np.stack([100 + f * p_gl[:, 0] / -p_gl[:, 2], 100 - f * p_gl[:, 1] / -p_gl[:, 2]], axis=1)
    np.testing.assert_allclose(gl_pixels, pixels, atol=2e-3)
    np.testing.assert_allclose(np.linalg.inv(c2w), np.diag([1, -1, -1, 1]) @ np.asarray(
        cam.world_to_camera_opencv(camera), np.float64), atol=1e-5)
    default = np.asarray(cam.camera_to_world_opengl(cam.Camera.default()))
    np.testing.assert_allclose(default[:3, 3], [0, 0, 1], atol=1e-6)  # 1 m in front of the face, +z
    np.testing.assert_allclose(default[:3, :3] @ [0, 0, -1], [0, 0, -1], atol=1e-6)  # looking at it


def test_pose6_is_flame_head_tracker_cam():
    """flame-head-tracker builds its view as inv([rodrigues(cam[:3]) | cam[3:]] with y, z columns negated)."""
    camera, points = _random_camera_and_points(5)
    pixels, _ = cam.project(camera, points, 256)
    pose = np.asarray(cam.camera_to_world_pose6(camera), np.float64)
    pose_matrix = np.eye(4)
    pose_matrix[:3, :3], pose_matrix[:3, 3] = Rotation.from_rotvec(pose[:3]).as_matrix(), pose[3:]
    pose_matrix[:, [1, 2]] *= -1
    view = np.linalg.inv(pose_matrix)
    homogeneous = np.concatenate([np.asarray(points, np.float64), np.ones((len(points), 1))], axis=1)
    uvw = (homogeneous @ view.T)[:, :3] @ np.asarray(cam.intrinsics(camera, 256), np.float64).T
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], pixels, atol=2e-3)
