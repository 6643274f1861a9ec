"""Synthetic fitting problems with known answers: sample a head and a camera, project its landmarks."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from flamejax.camera import Camera, project_ndc
from flamejax.fit._targets import LandmarkTargets
from flamejax.flame import FlameModel, FlameParams, embedded_points, flame_forward
from flamejax.flame._layout import IRIS, NUM_POINTS
from flamejax.rotation import euler_to_matrix, matrix_to_axis_angle


@dataclasses.dataclass(frozen=True)
class SyntheticSample:
    """A fitting problem with a known answer (see :func:`sample_problem`)."""

    params: FlameParams
    camera: Camera
    targets: LandmarkTargets
    vertices: np.ndarray
    """True posed vertices in head space (head pose zero; the rigid pose is the camera's)."""


def observed_targets(model: FlameModel, params: FlameParams, camera: Camera, rng: np.random.Generator,
                     noise_px: float = 1.0, image_size: int = 256) -> tuple[LandmarkTargets, np.ndarray]:
    """What a detector would report for this head under this camera: the model's embedded landmarks projected,
    plus ``noise_px`` Gaussian pixel noise; and the true posed vertices (head space)."""
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    vertices = flame_forward(model, params).vertices
    emb = model.landmarks
    noise = noise_px * 2.0 / image_size
    observe = lambda pts: np.asarray(project_ndc(camera, pts)) + rng.normal(size=(len(pts), 2)) * noise  # noqa: E731
    points = embedded_points(emb, vertices)
    mediapipe = np.zeros((NUM_POINTS, 2), np.float32)
    mediapipe_weight = np.zeros(NUM_POINTS, np.float32)
    ids = np.asarray(emb.mediapipe_ids)
    mediapipe[ids] = observe(points.mediapipe)
    mediapipe_weight[ids] = 1.0
    iris = observe(points.iris)
    mediapipe[IRIS] = iris
    targets = LandmarkTargets(
        lmk68=f32(observe(points.ibug68(camera.rotation_matrix()))), iris=f32(iris), mediapipe=f32(mediapipe),
        lmk68_weight=jnp.ones(68, jnp.float32), iris_weight=jnp.ones(10, jnp.float32),
        mediapipe_weight=f32(mediapipe_weight), valid=jnp.asarray(True),
    )
    return targets, np.asarray(vertices)


def sample_problem(model: FlameModel, rng: np.random.Generator, image_size: int = 256, noise_px: float = 1.0,
                   max_yaw_deg: float = 40.0, max_pitch_deg: float = 20.0, max_roll_deg: float = 10.0,
                   coeff_std: float = 1.0) -> SyntheticSample:
    """A random head from the model's prior seen by a random camera, with ``noise_px`` Gaussian landmark noise."""
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    params = FlameParams(
        shape=f32(rng.normal(size=model.num_shape) * coeff_std),
        expression=f32(rng.normal(size=model.num_expression) * coeff_std),
        head_pose=f32(np.zeros(3)), neck_pose=f32(np.zeros(3)),
        jaw_pose=f32([rng.uniform(0.0, 0.25), rng.normal() * 0.02, rng.normal() * 0.02]),
        left_eye_pose=f32(rng.normal(size=3) * 0.1 * [1, 1, 0]),
        right_eye_pose=f32(rng.normal(size=3) * 0.1 * [1, 1, 0]),
        translation=f32(np.zeros(3)),
    )
    angles = np.deg2rad([rng.uniform(-max_yaw_deg, max_yaw_deg), rng.uniform(-max_pitch_deg, max_pitch_deg),
                         rng.uniform(-max_roll_deg, max_roll_deg)])
    rot = euler_to_matrix(f32(angles))
    camera = Camera(matrix_to_axis_angle(rot),
                    f32([rng.normal() * 0.01, rng.normal() * 0.01, -rng.uniform(0.9, 1.2)]), f32(20.0))
    targets, vertices = observed_targets(model, params, camera, rng, noise_px, image_size)
    return SyntheticSample(params=params, camera=camera, targets=targets, vertices=vertices)


def similarity_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` moved onto ``target`` by the least-squares similarity transform (Umeyama)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sig, vt = np.linalg.svd(t.T @ s)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = np.trace(np.diag(sig) @ fix) / np.sum(s**2)
    return scale * s @ rot.T + mu_t


def aligned_vertex_error_mm(fitted: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex error in mm after similarity alignment over ``region`` (vertex indices; all if None)."""
    region = np.arange(len(truth)) if region is None else np.asarray(region)
    aligned = similarity_align(np.asarray(fitted, np.float64)[region], np.asarray(truth, np.float64)[region])
    return 1000.0 * np.linalg.norm(aligned - np.asarray(truth, np.float64)[region], axis=-1)


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Geodesic angle between two rotation matrices, degrees."""
    cos = (np.trace(np.asarray(a, np.float64).T @ np.asarray(b, np.float64)) - 1.0) / 2.0
    return float(np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0))))
