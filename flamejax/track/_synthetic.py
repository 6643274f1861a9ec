"""Synthetic problems with known truth for the tracker: several views of one head, smooth head motion.

Landmark targets are the model's own embedded landmarks projected by the true camera plus Gaussian pixel noise
(the same recipe as :func:`flamejax.fit.sample_problem`, which draws one random head per call).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Float
from flamejax.rotation import euler_to_matrix, matrix_to_axis_angle
from flamejax.fit import observed_targets
from flamejax.track._core import Camera, FlameModel, FlameParams, LandmarkTargets

@dataclasses.dataclass(frozen=True)
class SyntheticViews:
    """Frames (or photographs) of one head with known truth (leading axis: frames)."""

    shape: Float[np.ndarray, "n_shape"]
    params: FlameParams
    camera: Camera
    targets: LandmarkTargets
    vertices: Float[np.ndarray, "frames verts 3"]
    """True posed vertices, head space."""


def _views(model, shape, expressions, jaws, eyes, angles_deg, translations, rng, noise_px, fov_deg) -> SyntheticViews:
    targets, vertices, params_list, cameras = [], [], [], []
    z3 = jnp.zeros(3, jnp.float32)
    for expression, jaw, eye, angles, translation in zip(expressions, jaws, eyes, angles_deg, translations):
        params = FlameParams(jnp.asarray(shape, jnp.float32), jnp.asarray(expression, jnp.float32), z3, z3,
                             jnp.asarray(jaw, jnp.float32), jnp.asarray(eye[:3], jnp.float32),
                             jnp.asarray(eye[3:], jnp.float32), z3)
        rot = euler_to_matrix(jnp.asarray(np.deg2rad(angles), jnp.float32))
        camera = Camera(matrix_to_axis_angle(rot), jnp.asarray(translation, jnp.float32), jnp.asarray(fov_deg, jnp.float32))
        t, v = observed_targets(model, params, camera, rng, noise_px)
        targets.append(t)
        vertices.append(v)
        params_list.append(params)
        cameras.append(camera)
    stack = lambda items: jax.tree.map(lambda *x: np.stack(x), *items)  # noqa: E731
    return SyntheticViews(np.asarray(shape, np.float32), stack(params_list), stack(cameras),
                          jax.tree.map(jnp.asarray, stack(targets)), np.stack(vertices))


def synthetic_views(model: FlameModel, yaws_deg, rng: np.random.Generator, noise_px: float = 1.0,
                    fov_deg: float = 20.0) -> SyntheticViews:
    """Photographs of one random head (prior sample) at the given yaws, each with its own random expression,
    jaw, small pitch/roll and distance."""
    n = len(yaws_deg)
    shape = rng.normal(size=model.num_shape)
    expressions = rng.normal(size=(n, model.num_expression)) * 0.7
    jaws = np.stack([rng.uniform(0.0, 0.2, n), rng.normal(size=n) * 0.02, rng.normal(size=n) * 0.02], 1)
    eyes = rng.normal(size=(n, 6)) * 0.1 * np.array([1, 1, 0, 1, 1, 0])
    angles = np.stack([np.asarray(yaws_deg, float), rng.uniform(-10, 10, n), rng.uniform(-5, 5, n)], 1)
    translations = np.stack([rng.normal(size=n) * 0.01, rng.normal(size=n) * 0.01, -rng.uniform(0.9, 1.2, n)], 1)
    return _views(model, shape, expressions, jaws, eyes, angles, translations, rng, noise_px, fov_deg)


def synthetic_sequence(model: FlameModel, frames: int, rng: np.random.Generator, noise_px: float = 1.0,
                       fov_deg: float = 20.0) -> SyntheticViews:
    """A smooth head trajectory of one random head: sums of slow sinusoids for pose (yaw up to ±35°, pitch
    ±15°, roll ±8°, a few cm of translation), expression, jaw opening and gaze."""
    t = np.arange(frames, dtype=np.float64)

    def wave(amplitude, size=()):
        period = rng.uniform(40, 120, size=size)
        phase = rng.uniform(0, 2 * np.pi, size=size)
        return amplitude * np.sin(2 * np.pi * t[:, None] / np.atleast_1d(period) + np.atleast_1d(phase))

    shape = rng.normal(size=model.num_shape)
    expressions = wave(0.8, (model.num_expression,))
    jaws = np.concatenate([0.1 + wave(0.1), wave(0.02), np.zeros((frames, 1))], axis=1)
    eyes = np.concatenate([wave(0.12), wave(0.12), np.zeros((frames, 1))] * 2, axis=1)
    angles = np.concatenate([wave(35.0), wave(15.0), wave(8.0)], axis=1)
    translations = np.concatenate([wave(0.02), wave(0.015), -1.05 + wave(0.1)], axis=1)
    return _views(model, shape, expressions, jaws, eyes, angles, translations, rng, noise_px, fov_deg)
