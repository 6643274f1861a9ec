"""The MediaPipe → iBUG-68 conversion, calibrated so that it lands on FLAME's own 68-point embedding.

A fit compares the 68 points FLAME's embedding (DECA's) puts on the mesh with 68 points converted from the
MediaPipe detections. A hand-made conversion table and FLAME's embedding disagree by up to 13 % of the
outer-eye-corner distance (the brow ends) on the mean head itself, so the fit would be pulled two ways and its
residual would measure that disagreement rather than the fit. Here each of the inner 51 points becomes the
affine combination of the embedded MediaPipe points of its own facial part that best reproduces FLAME's point
over heads sampled from the model, shrunk towards the hand-made table and made mirror-symmetric. The result is
stored in :mod:`flamejax.flame._layout`; ``python tools/calibrate_mediapipe68.py`` prints it anew (a development
tool, not part of the package: the tests import it to check the stored table).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FlameModel, FlameParams, landmark_points
from flamejax.flame import _layout as layout

CALIBRATED_ROWS = range(layout.INNER_68.start, layout.INNER_68.stop)
"""The inner 51 points; the jaw contour follows the silhouette and has no fixed place on the mesh."""


def _parts() -> list[tuple[range, tuple[int, ...]]]:
    return [(range(17, 22), layout.RIGHT_BROW), (range(22, 27), layout.LEFT_BROW), (range(27, 36), layout.NOSE),
            (range(36, 42), layout.RIGHT_EYE), (range(42, 48), layout.LEFT_EYE),
            (range(48, 68), layout.LIPS_OUTER + layout.LIPS_INNER)]


def _landmark_sets(model: FlameModel, params: FlameParams):
    """The embedded MediaPipe points (n_mp, 3) and FLAME's inner 51 points (51, 3) of one head."""
    points = landmark_points(model, params)
    return points.mediapipe, points.inner


def _sample_heads(model: FlameModel, count: int, seed: int, expression_std: float, max_jaw: float):
    """Embedded MediaPipe points (count, n_mp, 3) and FLAME's inner 51 points (count, 51, 3) of random heads."""
    rng = np.random.default_rng(seed)
    zeros = FlameParams.for_model(model)
    params = dataclasses.replace(
        jax.tree.map(lambda a: jnp.broadcast_to(a, (count, *a.shape)), zeros),
        shape=jnp.asarray(rng.normal(size=(count, model.num_shape)), jnp.float32),
        expression=jnp.asarray(rng.normal(size=(count, model.num_expression)) * expression_std, jnp.float32),
        jaw_pose=jnp.asarray(np.stack([rng.uniform(0.0, max_jaw, count), np.zeros(count), np.zeros(count)], 1),
                             jnp.float32),
    )
    mediapipe, inner = jax.jit(jax.vmap(_landmark_sets, in_axes=(None, 0)))(model, params)
    return np.asarray(mediapipe, np.float64), np.asarray(inner, np.float64)


def _mirror_of_embedded(template_points: np.ndarray, ids: list[int]) -> dict[int, int]:
    """MediaPipe id → id of its mirror image among the embedded points (FLAME's head is symmetric in x)."""
    flipped = template_points * np.array([-1.0, 1.0, 1.0])
    nearest = np.argmin(np.linalg.norm(flipped[:, None] - template_points[None], axis=-1), axis=1)
    mirror = {ids[i]: ids[j] for i, j in enumerate(nearest)}
    if any(mirror[mirror[i]] != i for i in ids):
        raise ValueError("the MediaPipe embedding is not left/right symmetric enough to pair its points")
    return mirror


def _solve_row(mediapipe: np.ndarray, target: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    """Affine weights (summing to one) with ``mediapipe @ w ≈ target`` over samples, shrunk towards ``prior``.

    ``mediapipe``: (samples, 3, k) candidate points, ``target``: (samples, 3); lengths in units of the
    outer-eye-corner distance so that ``ridge`` is scale-free.
    """
    k = prior.shape[0]
    a = mediapipe.reshape(-1, k)
    hessian = a.T @ a / len(mediapipe) + ridge * np.eye(k)
    gradient = a.T @ target.reshape(-1) / len(mediapipe) + ridge * prior
    kkt = np.block([[hessian, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
    return np.linalg.solve(kkt, np.concatenate([gradient, [1.0]]))[:k]


def calibrate_ibug68_from_mediapipe(model: FlameModel, samples: int = 200, ridge: float = 0.01, seed: int = 0,
                                    expression_std: float = 1.5, max_jaw: float = 0.3) -> np.ndarray:
    """(68, 478) conversion weights: the hand-made table's jaw rows, calibrated inner rows (see module doc).

    Heads are drawn with identity ~ N(0, 1), expression ~ N(0, ``expression_std``²) and the jaw opened up to
    ``max_jaw`` radians. Needs the model's MediaPipe embedding.
    """
    emb = model.landmarks
    if emb is None or emb.num_mediapipe == 0:
        raise ValueError("calibration needs a model loaded with its MediaPipe landmark embedding")
    ids = [int(i) for i in np.asarray(emb.mediapipe_ids)]
    template_mp, template_inner = (np.asarray(a, np.float64)
                                   for a in _landmark_sets(model, FlameParams.for_model(model)))
    unit = np.linalg.norm(template_inner[36 - 17] - template_inner[45 - 17])
    mediapipe, inner = _sample_heads(model, samples, seed, expression_std, max_jaw)
    mediapipe, inner = mediapipe / unit, inner / unit

    solved = np.zeros((68, layout.NUM_POINTS))
    for rows, part in _parts():
        embedded = [p for p in part if p in ids]
        points = mediapipe[:, [ids.index(p) for p in embedded], :].transpose(0, 2, 1)
        for row in rows:
            prior = layout.HAND_MADE_IBUG68_FROM_MEDIAPIPE[row, embedded]
            if prior.sum() == 0:
                raise ValueError(f"none of the MediaPipe points of the hand-made row {row} is embedded on FLAME")
            solved[row, embedded] = _solve_row(points, inner[:, row - 17], prior / prior.sum(), ridge)

    mirror = _mirror_of_embedded(template_mp, ids)
    permute = np.arange(layout.NUM_POINTS)
    permute[list(mirror)] = list(mirror.values())
    symmetric = 0.5 * (solved + solved[layout.IBUG68_MIRROR][:, permute])
    table = layout.HAND_MADE_IBUG68_FROM_MEDIAPIPE.copy()
    table[CALIBRATED_ROWS] = symmetric[CALIBRATED_ROWS]
    return table


def stored_rows(table: np.ndarray, decimals: int = 3) -> dict[int, tuple[tuple[int, float], ...]]:
    """The calibrated rows as ``{row: ((mediapipe id, weight), ...)}``, rounded, each summing to one exactly."""
    rows = {}
    for row in CALIBRATED_ROWS:
        ids = np.flatnonzero(np.round(table[row], decimals))
        weights = np.round(table[row, ids], decimals)
        weights[np.argmax(np.abs(weights))] += round(1.0 - weights.sum(), decimals)
        rows[row] = tuple((int(i), float(round(w, decimals))) for i, w in zip(ids, weights))
    return rows


if __name__ == "__main__":
    from flamejax.flame import load_flame

    calibrated = stored_rows(calibrate_ibug68_from_mediapipe(load_flame(n_shape=100, n_expression=50)))
    for r, entries in calibrated.items():
        line = f"    {r}: ("
        for k, (point, weight) in enumerate(entries):
            item = f"({point}, {weight})" + (")," if k == len(entries) - 1 else ", ")
            if len(line) + len(item.rstrip()) > 118:
                print(line.rstrip())
                line = " " * 9
            line += item
        print(line)
