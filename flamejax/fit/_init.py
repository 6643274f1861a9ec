"""Weights-free linear initialisation: rigid pose from the mean head, then identity and expression by ridge
regression given the pose, alternated.

Built for batches on accelerators: no SVD or least-squares solver per image (XLA runs those as a loop over the
batch on GPU). The scaled-orthographic pose uses closed forms for its 3×3 and 2×2 parts, and every other solve
is a Cholesky factorisation of a small normal matrix, which XLA batches.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera, focal_length, project_ndc
from flamejax.fit._config import FitConfig
from flamejax.fit._result import FitStart
from flamejax.fit._targets import LandmarkTargets
from flamejax.flame import FlameModel, FlameParams, barycentric_points, contour_bin
from flamejax.flame._layout import CONTOUR_68, INNER_68
from flamejax.rotation import matrix_to_axis_angle

_HI = jax.lax.Precision.HIGHEST


def _solve_spd3(matrix: Float[Array, "3 3"], rhs: Float[Array, "3 k"]) -> Float[Array, "3 k"]:
    """``matrix⁻¹ @ rhs`` for a symmetric positive definite 3×3 matrix, by its adjugate."""
    (a, b, c), (_, d, e), (_, _, f) = matrix
    adjugate = jnp.array([[d * f - e * e, c * e - b * f, b * e - c * d],
                          [c * e - b * f, a * f - c * c, b * c - a * e],
                          [b * e - c * d, b * c - a * e, a * d - b * b]])
    determinant = a * adjugate[0, 0] + b * adjugate[0, 1] + c * adjugate[0, 2]
    return adjugate @ rhs / determinant


def _orthonormal_rows(rows: Float[Array, "2 3"]) -> Float[Array, "2 3"]:
    """The nearest 2×3 matrix with orthonormal rows, ``(M Mᵀ)^(-1/2) M``, with the 2×2 inverse square root in
    closed form: for SPD ``A`` with ``s = √det A`` and ``t = √(tr A + 2s)``, ``√A = (A + s I) / t``."""
    gram = rows @ rows.T
    p, q, r = gram[0, 0], gram[0, 1], gram[1, 1]
    s = jnp.sqrt(jnp.maximum(p * r - q * q, 1e-30))
    t = jnp.sqrt(p + r + 2.0 * s)
    inverse_sqrt = jnp.array([[r + s, -q], [-q, p + s]]) / (s * t)
    return inverse_sqrt @ rows


def _cholesky_solve(normal: Float[Array, "k k"], rhs: Float[Array, "k"]) -> Float[Array, "k"]:
    return cho_solve((jnp.linalg.cholesky(normal), True), rhs)


def _scaled_orthographic_pose(points: Float[Array, "n 3"], target: Float[Array, "n 2"], weight: Float[Array, "n"],
                              fov_deg: Float[Array, ""]) -> Float[Array, "6"]:
    """Camera rotation (axis-angle) and translation from 3D-2D correspondences under scaled orthography.

    The affine map ``NDC = A (X - c) + a0`` is a weighted least-squares fit; with the weighted centroid ``c`` its
    normal equations split into a 3×3 system for ``A`` and the weighted mean target for ``a0``.
    """
    w = weight[:, None]
    total = jnp.sum(w)
    centroid = jnp.sum(points * w, 0) / total
    centred = points - centroid
    scatter = jnp.einsum("ni,nj->ij", centred * w, centred, precision=_HI)
    scatter = scatter + 1e-9 * jnp.trace(scatter) * jnp.eye(3, dtype=scatter.dtype)
    linear = _solve_spd3(scatter, jnp.einsum("ni,nj->ij", centred * w, target, precision=_HI))  # (3, 2)
    offset = jnp.sum(target * w, 0) / total
    row_x, row_y = linear[:, 0], -linear[:, 1]  # NDC y points down, camera y up
    scale = 0.5 * (jnp.linalg.norm(row_x) + jnp.linalg.norm(row_y))
    r01 = _orthonormal_rows(jnp.stack([row_x, row_y]))
    rot = jnp.concatenate([r01, jnp.cross(r01[0], r01[1])[None]], axis=0)
    f = focal_length(fov_deg, 2)  # NDC focal length (the image spans 2 units)
    depth = f / scale
    centre_cam = jnp.stack([offset[0] * depth / f, -offset[1] * depth / f, -depth])
    return jnp.concatenate([matrix_to_axis_angle(rot), centre_cam - rot @ centroid])


def _solve_pose(fov_deg: Float[Array, ""], points: Float[Array, "n 3"], target: Float[Array, "n 2"],
                weight: Float[Array, "n"], steps: int) -> Camera:
    """Rigid pose from 3D-2D correspondences: scaled orthography in closed form, then damped Gauss-Newton."""
    sqrt_w = jnp.sqrt(weight)[:, None]
    pose = _scaled_orthographic_pose(points, target, weight, fov_deg)

    def residual(p):
        return ((project_ndc(Camera(p[:3], p[3:], fov_deg), points) - target) * sqrt_w).ravel()

    def gauss_newton(p, _):
        r = residual(p)
        jac = jax.jacfwd(residual)(p)
        normal = jac.T @ jac
        damped = normal + 1e-3 * jnp.diag(jnp.diag(normal)) + 1e-9 * jnp.eye(6, dtype=normal.dtype)
        candidate = p + _cholesky_solve(damped, -jac.T @ r)
        better = jnp.sum(residual(candidate) ** 2) < jnp.sum(r**2)
        return jnp.where(better & jnp.all(jnp.isfinite(candidate)), candidate, p), None

    pose, _ = jax.lax.scan(gauss_newton, pose, None, length=steps)
    return Camera(pose[:3], pose[3:], fov_deg)


def _linear_basis(model: FlameModel, vertex_ids: Int[Array, "n 3"], bary: Float[Array, "n 3"]):
    """Rest-pose landmark positions as ``mean + basis @ [shape, expression]``."""
    dirs = jnp.concatenate([model.shapedirs, model.exprdirs], axis=-1)
    mean = barycentric_points(model.v_template, vertex_ids, bary)
    basis = jnp.einsum("nkcb,nk->ncb", dirs[vertex_ids], bary, precision=_HI)
    return mean, basis


def _solve_coefficients(camera: Camera, mean, basis, target, weight, prior: Float[Array, "k"],
                        coeffs: Float[Array, "k"], given: Float[Array, "k"]) -> Float[Array, "k"]:
    """Ridge regression of blendshape coefficients given the pose (projection linearised at the current depth).

    Coefficients with ``given == 1`` stay at their value in ``coeffs``; the others are solved with them fixed
    there: ``x = g∘c + (1 - g)∘y``, normal equations for ``y`` whose given rows and columns are the identity.
    """
    rot = camera.rotation_matrix()
    t = camera.translation
    f = focal_length(camera.fov_deg, 2)
    current = mean + jnp.einsum("ncb,b->nc", basis, coeffs, precision=_HI)
    depth = -(jnp.sum(current * rot[2], -1) + t[2])
    u, v = target[:, 0], target[:, 1]
    row_u = -(u[:, None] * rot[2] + f * rot[0]) / depth[:, None]  # (n, 3)
    row_v = (-v[:, None] * rot[2] + f * rot[1]) / depth[:, None]
    a_u = jnp.sum(row_u[:, :, None] * basis, axis=1)
    a_v = jnp.sum(row_v[:, :, None] * basis, axis=1)
    b_u = -jnp.sum(row_u * mean, -1) + (u * t[2] + f * t[0]) / depth
    b_v = -jnp.sum(row_v * mean, -1) + (v * t[2] - f * t[1]) / depth
    sqrt_w = jnp.sqrt(jnp.concatenate([weight, weight]))
    a = jnp.concatenate([a_u, a_v]) * sqrt_w[:, None]
    b = jnp.concatenate([b_u, b_v]) * sqrt_w
    free = 1.0 - given
    held = given * coeffs
    a_free = a * free
    normal = jnp.matmul(a_free.T, a_free, precision=_HI) + jnp.diag(prior * free + given)
    rhs = a_free.T @ (b - a @ held)
    return held + free * _cholesky_solve(normal, rhs)


def linear_initialisation(model: FlameModel, targets: LandmarkTargets, config: FitConfig = FitConfig(),
                          start: FitStart | None = None) -> tuple[Camera, FlameParams]:
    """Weights-free start for one image: pose from the mean head, then identity/expression by ridge regression,
    alternated ``config.init.iterations`` times. Coefficients ``start`` marks as given are held at their value.
    Pure, single image (``jax.vmap`` for a batch); ``model`` needs its landmark embedding."""
    cfg = config.init
    emb = model.landmarks
    params = FlameParams.for_model(model)
    n_shape, n_exp = model.num_shape, model.num_expression
    given = jnp.zeros(n_shape + n_exp, params.shape.dtype)
    if start is not None:
        params = dataclasses.replace(params, shape=start.shape, expression=start.expression, jaw_pose=start.jaw_pose)
        given = jnp.concatenate([jnp.full(n_shape, start.shape_given), jnp.full(n_exp, start.expression_given)])
        given = given.astype(params.shape.dtype)
    mp_target = targets.mediapipe[emb.mediapipe_ids]
    mp_weight = targets.mediapipe_weight[emb.mediapipe_ids]
    valid = targets.valid.astype(params.shape.dtype)
    camera = Camera.default(config.fov_deg, config.initial_distance, model.v_template.dtype)
    prior = jnp.concatenate([jnp.full(n_shape, cfg.shape_prior), jnp.full(n_exp, cfg.expression_prior)])
    inner_mean, inner_basis = _linear_basis(model, emb.static_vertices, emb.static_bary)
    mp_mean, mp_basis = _linear_basis(model, emb.mediapipe_vertices, emb.mediapipe_bary)
    coeffs = jnp.concatenate([params.shape, params.expression])

    def points_at(coeffs, mean, basis):
        return mean + jnp.einsum("ncb,b->nc", basis, coeffs, precision=_HI)

    def alternation(state: tuple[Camera, Float[Array, "k"]], _) -> tuple[tuple[Camera, Float[Array, "k"]], None]:
        camera, coeffs = state
        pts = jnp.concatenate([points_at(coeffs, inner_mean, inner_basis), points_at(coeffs, mp_mean, mp_basis)])
        tgt = jnp.concatenate([targets.lmk68[INNER_68], mp_target])
        wgt = jnp.concatenate([targets.lmk68_weight[INNER_68], cfg.mediapipe_weight * mp_weight]) * valid + 1e-6
        camera = _solve_pose(camera.fov_deg, pts, tgt, wgt, cfg.pose_refine_steps)
        row = contour_bin(camera.rotation_matrix())
        contour_mean, contour_basis = _linear_basis(model, emb.contour_vertices[row], emb.contour_bary[row])
        means = jnp.concatenate([inner_mean, contour_mean, mp_mean])
        bases = jnp.concatenate([inner_basis, contour_basis, mp_basis])
        tgt = jnp.concatenate([targets.lmk68[INNER_68], targets.lmk68[CONTOUR_68], mp_target])
        wgt = jnp.concatenate([targets.lmk68_weight[INNER_68], cfg.contour_weight * targets.lmk68_weight[CONTOUR_68],
                               cfg.mediapipe_weight * mp_weight]) * valid + 1e-6
        return (camera, _solve_coefficients(camera, means, bases, tgt, wgt, prior, coeffs, given)), None

    # One compiled alternation in a loop: unrolled, the alternations made a third of the landmark fit's program.
    (camera, coeffs), _ = jax.lax.scan(alternation, (camera, coeffs), None, length=cfg.iterations)
    params = dataclasses.replace(params, shape=coeffs[:n_shape], expression=coeffs[n_shape:])
    return camera, params
