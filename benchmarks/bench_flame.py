"""FLAME forward and forward+backward throughput (meshes/s) against batch size, float32.

Forward: ``jax.jit(jax.vmap(flame_forward))`` from parameters to the 5023 posed vertices. Forward+backward:
the gradient of ``sum(vertices**2)`` with respect to every parameter (what a fit differentiates). The model
is an argument of the compiled function, not a constant folded into it. Compilation is timed separately.

    python3 -m benchmarks --only flame [--quick | --full]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import first_call_seconds, median_seconds, result, table
from flamejax.flame import FlameModel, FlameParams, flame_forward, load_flame

NAME = "flame"
TITLE = "FLAME forward and forward+backward"
N_SHAPE, N_EXPRESSION = 100, 50
QUICK_BATCHES = (1, 4, 16, 64, 256)
FULL_BATCHES = (1, 4, 16, 64, 256, 1024)
ACCELERATOR_BATCHES = (4096, 16384)


def random_params(model: FlameModel, batch: int, seed: int = 0) -> FlameParams:
    """A batch of plausible heads: unit-variance coefficients, poses of a few degrees."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape, scale=1.0: jnp.asarray(rng.normal(size=(batch, *shape)) * scale, jnp.float32)  # noqa: E731
    return FlameParams(shape=normal(model.num_shape), expression=normal(model.num_expression),
                       head_pose=normal(3, scale=0.1), neck_pose=normal(3, scale=0.05), jaw_pose=normal(3, scale=0.1),
                       left_eye_pose=normal(3, scale=0.1), right_eye_pose=normal(3, scale=0.1),
                       translation=normal(3, scale=0.01))


def _vertices(model: FlameModel, params: FlameParams) -> jax.Array:
    return jax.vmap(flame_forward, in_axes=(None, 0))(model, params).vertices


forward = jax.jit(_vertices)
forward_backward = jax.jit(jax.grad(lambda params, model: jnp.sum(_vertices(model, params) ** 2)))


def measure(fn, args, batch: int, quick: bool) -> dict[str, float]:
    compile_and_run = first_call_seconds(lambda: jax.block_until_ready(fn(*args)))
    seconds = median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats=3 if quick else 10,
                             min_seconds=0.3 if quick else 2.0)
    return {"meshes_per_s": batch / seconds, "ms_per_batch": 1e3 * seconds,
            "compile_s": max(compile_and_run - seconds, 0.0)}


def run(quick: bool) -> dict:
    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    batches = QUICK_BATCHES if quick else FULL_BATCHES + (ACCELERATOR_BATCHES if jax.default_backend() != "cpu" else ())
    rows, data = [], []
    for batch in batches:
        params = random_params(model, batch)
        fwd = measure(forward, (model, params), batch, quick)
        bwd = measure(forward_backward, (params, model), batch, quick)
        data.append({"batch": batch, "forward": fwd, "forward_backward": bwd})
        rows.append([batch, fwd["meshes_per_s"], fwd["ms_per_batch"], bwd["meshes_per_s"], bwd["ms_per_batch"],
                     fwd["compile_s"], bwd["compile_s"]])
    settings = {"dtype": "float32", "matmul precision": "HIGHEST (jax.lax.Precision.HIGHEST in every einsum)",
                "model": f"{model.num_vertices} vertices, {N_SHAPE} identity + {N_EXPRESSION} expression components "
                         "(shared test model: only 60 identity and 10 expression columns are non-zero; the cost "
                         "is the same)",
                "batch sizes": list(batches), "timing": "median wall time per call, compilation excluded"}
    spec = table("Meshes per second against batch size",
                 ["batch", "forward meshes/s", "forward ms/batch", "fwd+bwd meshes/s", "fwd+bwd ms/batch",
                  "forward compile s", "fwd+bwd compile s"], rows)
    return result(NAME, TITLE, "quick" if quick else "full", settings, [spec], {"rows": data})
