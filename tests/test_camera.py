"""Camera conventions, projection, intrinsics and Euler angles; rotation helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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
