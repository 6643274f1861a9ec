"""Rotations: axis-angle (Rodrigues) and Euler conversions, safe to differentiate at zero."""

from __future__ import annotations

import jax.numpy as jnp

from flamejax._typing import Array, Float

_SMALL_ANGLE_SQ = 1e-12


def axis_angle_to_matrix(axis_angle: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """Rodrigues' formula, with a Taylor expansion near zero so gradients stay finite there."""
    x, y, z = axis_angle[..., 0], axis_angle[..., 1], axis_angle[..., 2]
    # Sums of three written out: XLA's vectorised reductions round differently in different batch slots, which
    # would make a fit depend on its place in a batch.
    theta_sq = (x * x + y * y + z * z)[..., None, None]
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_theta_sq = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe_theta_sq)
    sin_over_theta = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(theta) / theta)
    one_minus_cos_over_theta_sq = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(theta)) / safe_theta_sq)
    zeros = jnp.zeros_like(x)
    skew = jnp.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(axis_angle.shape[:-1] + (3, 3))
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    # skew² = r rᵀ - |r|² I, elementwise for the same reason
    skew_sq = axis_angle[..., :, None] * axis_angle[..., None, :] - theta_sq * eye
    return eye + sin_over_theta * skew + one_minus_cos_over_theta_sq * skew_sq


def matrix_to_axis_angle(matrix: Float[Array, "... 3 3"]) -> Float[Array, "... 3"]:
    """Inverse of :func:`axis_angle_to_matrix` (angle in [0, pi]), via a quaternion for stability."""
    m = matrix
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = jnp.stack(
        [
            jnp.stack([1.0 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            jnp.stack([m[..., 2, 1] - m[..., 1, 2], 1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            jnp.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            jnp.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        axis=-2,
    )
    diag = jnp.stack([1.0 + trace, 1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                      1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = jnp.argmax(diag, axis=-1)
    quat = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    quat = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
    quat = jnp.where(quat[..., :1] < 0, -quat, quat)
    w, xyz = quat[..., 0], quat[..., 1:]
    sin_half = jnp.linalg.norm(xyz, axis=-1)
    angle = 2.0 * jnp.arctan2(sin_half, w)
    scale = jnp.where(sin_half < 1e-7, 2.0, angle / jnp.where(sin_half < 1e-7, 1.0, sin_half))
    return xyz * scale[..., None]


def euler_to_matrix(yaw_pitch_roll: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """R = Ry(yaw) @ Rx(pitch) @ Rz(roll), angles in radians (yaw about +y, pitch about +x, roll about +z)."""
    yaw, pitch, roll = yaw_pitch_roll[..., 0], yaw_pitch_roll[..., 1], yaw_pitch_roll[..., 2]
    zeros, ones = jnp.zeros_like(yaw), jnp.ones_like(yaw)

    def mat(rows):
        return jnp.stack([jnp.stack(r, -1) for r in rows], -2)

    cy, sy, cp, sp, cr, sr = jnp.cos(yaw), jnp.sin(yaw), jnp.cos(pitch), jnp.sin(pitch), jnp.cos(roll), jnp.sin(roll)
    ry = mat([[cy, zeros, sy], [zeros, ones, zeros], [-sy, zeros, cy]])
    rx = mat([[ones, zeros, zeros], [zeros, cp, -sp], [zeros, sp, cp]])
    rz = mat([[cr, -sr, zeros], [sr, cr, zeros], [zeros, zeros, ones]])
    return ry @ rx @ rz


def matrix_to_euler(matrix: Float[Array, "... 3 3"]) -> Float[Array, "... 3"]:
    """Inverse of :func:`euler_to_matrix`: (yaw, pitch, roll) in radians, pitch in [-pi/2, pi/2]."""
    m = matrix
    pitch = jnp.arcsin(jnp.clip(-m[..., 1, 2], -1.0, 1.0))
    yaw = jnp.arctan2(m[..., 0, 2], m[..., 2, 2])
    roll = jnp.arctan2(m[..., 1, 0], m[..., 1, 1])
    return jnp.stack([yaw, pitch, roll], axis=-1)
