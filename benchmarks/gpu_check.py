"""Accelerator check in one command: landmark fits/s against batch, photometric fits/s, renderer images/s,
compile times, and whether the accelerator's fits equal the CPU's.

    python -m benchmarks.gpu_check --out benchmarks/results/gpu.json      # ≤ 6 minutes on one GPU
    python -m benchmarks.gpu_check --smoke --out /tmp/gpu_smoke.json      # tiny batches, any CPU, ~2 minutes

Writes the JSON result (the common format of :mod:`benchmarks._common`) and prints its RESULTS.md section.
Synthetic targets throughout (``sample_problem`` heads; photometric targets rendered from them), so nothing but
the FLAME assets is needed. Timings exclude compilation, which is reported on its own (first call minus a
steady call). Without an accelerator the agreement check compares the CPU with itself and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import flamejax  # noqa: F401 -- first, so that its XLA flags apply before JAX starts

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import RESULTS_DIR, render_section, result, table
from benchmarks.bench_render import make_functions, scene
from flamejax.fit import (AMBIENT_SH, FitConfig, PhotometricConfig, PhotometricTargets, fit_landmarks_batch,
                          fit_photometric_batch, quick_config, sample_problem, stack_targets)
from flamejax.flame import FlameModel, flame_forward, load_flame
from flamejax.io import write_json
from flamejax.render import RasterConfig, load_uv_layout, render_mesh

NAME = "gpu"
TITLE = "Accelerator check"
TARGETS = {"landmark fits/s": 5000.0, "photometric fits/s": 50.0, "render images/s": 25000.0,
           "landmark compile s": 8.0}
"""Issue 14's targets on one GPU (landmark: at some batch ≤ 16384; photometric: at batch ≥ 64)."""
AGREEMENT_PX = 0.5
"""Largest allowed difference of a fitted 68-point landmark between devices, pixels at 256²."""
AGREEMENT_MM = 0.5
"""Largest allowed mean vertex difference between devices' fits, millimetres."""
AGREEMENT_RENDER = 1e-3
"""Largest allowed mean absolute colour difference between devices' renders (same mesh and camera)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    landmark_batches: tuple[int, ...]
    fit: FitConfig
    photometric_batch: int
    photometric_steps: int
    image_size: int
    render_batch: int
    agreement_batch: int
    n_shape: int
    n_expression: int
    repeats: int


FULL = Plan(landmark_batches=(256, 4096, 16384), fit=FitConfig(), photometric_batch=64,
            photometric_steps=PhotometricConfig().steps, image_size=256, render_batch=64, agreement_batch=8,
            n_shape=100, n_expression=50, repeats=2)
SMOKE = Plan(landmark_batches=(2,), fit=quick_config(rigid_steps=20, landmark_steps=10), photometric_batch=2,
             photometric_steps=6, image_size=64, render_batch=2, agreement_batch=2, n_shape=20, n_expression=10,
             repeats=1)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(compile seconds ≈ first call minus a steady call, median steady seconds) of ``fn()``, which must block."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    steady = float(np.median(times))
    return max(first - steady, 0.0), steady


def problems(model: FlameModel, count: int, image_size: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [sample_problem(model, rng, image_size=image_size, max_yaw_deg=30.0) for _ in range(count)]


def batch_of(pool: list, batch: int):
    return stack_targets([pool[i % len(pool)].targets for i in range(batch)])


def landmark_speed(model: FlameModel, pool: list, plan: Plan, on_row=lambda rows: None) -> list[dict]:
    """One row per batch size; ``on_row(rows so far)`` after each."""
    rows = []
    for batch in plan.landmark_batches:
        targets = batch_of(pool, batch)
        compile_s, seconds = timed(lambda: jax.block_until_ready(fit_landmarks_batch(model, targets, plan.fit)),
                                   plan.repeats)
        rows.append({"batch": batch, "seconds": seconds, "fits_per_s": batch / seconds, "compile_s": compile_s})
        print(f"landmark fit, batch {batch}: {batch / seconds:.1f} fits/s (compile {compile_s:.1f} s)", flush=True)
        on_row(rows)
    return rows


def render_speed(plan: Plan, per_image: bool = False) -> dict:
    """The renderer at the plan's batch and size; ``per_image``: a mesh and texture per image (as a batch of fits
    renders), else one shared by the batch (:func:`benchmarks.bench_render.scene`)."""
    verts, faces, cameras, uv, texture, light = scene(plan.render_batch, per_image)
    config = RasterConfig(image_size=plan.image_size)
    forward, grad = make_functions(faces, uv, config, "hard", per_image)
    target = jnp.full((plan.render_batch, plan.image_size, plan.image_size, 3), 0.5)
    args = (verts, cameras, texture, light)
    fwd_compile, fwd = timed(lambda: jax.block_until_ready(forward(*args)), plan.repeats)
    bwd_compile, bwd = timed(lambda: jax.block_until_ready(grad(*args, target)), plan.repeats)
    row = {"batch": plan.render_batch, "image_size": plan.image_size, "per_image": per_image,
           "forward_images_per_s": plan.render_batch / fwd, "forward_backward_images_per_s": plan.render_batch / bwd,
           "forward_compile_s": fwd_compile, "forward_backward_compile_s": bwd_compile}
    print(f"render hard {plan.image_size}², batch {plan.render_batch}, {_meshes(per_image)}: "
          f"{row['forward_images_per_s']:.0f} fwd, {row['forward_backward_images_per_s']:.0f} fwd+bwd images/s",
          flush=True)
    return row


def _meshes(per_image: bool) -> str:
    return "a mesh and texture per image" if per_image else "one mesh and texture shared by the batch"


def photometric_targets(model: FlameModel, uv, pool: list, batch: int, size: int) -> PhotometricTargets:
    """Each head rendered with a smooth albedo and a frontal-top light (as ``bench_photometric``)."""
    u = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    grid = np.stack(np.meshgrid(u, u), -1)
    texture = jnp.asarray(0.55 + 0.15 * np.sin(6.0 * grid[..., :1]) * [1.0, 0.8, 0.6], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.8).at[2].set(0.3).at[3].set(0.5)
    config = RasterConfig(image_size=size)
    heads = pool[:min(batch, len(pool))]
    vertices = jnp.stack([flame_forward(model, s.params).vertices for s in heads])
    cameras = jax.tree.map(lambda *a: jnp.stack(a), *[s.camera for s in heads])
    out = jax.jit(jax.vmap(lambda v, c: render_mesh(v, model.faces, c, uv, texture, light, config)))(vertices, cameras)
    repeat = lambda a: jnp.asarray(np.resize(np.asarray(a), (batch, *a.shape[1:])))  # noqa: E731 -- cycle heads
    return PhotometricTargets(repeat(out.image), repeat(out.alpha), batch_of(pool, batch))


def photometric_speed(model: FlameModel, uv, pool: list, plan: Plan) -> dict:
    batch = plan.photometric_batch
    targets = photometric_targets(model, uv, pool, batch, plan.image_size)
    start = fit_landmarks_batch(model, targets.landmarks, plan.fit)
    config = PhotometricConfig(texture_size=min(256, 4 * plan.image_size),
                               raster=RasterConfig(image_size=plan.image_size)).with_steps(plan.photometric_steps)
    fit = lambda: jax.block_until_ready(  # noqa: E731
        fit_photometric_batch(model, uv, targets, start, config))
    compile_s, seconds = timed(fit, max(1, plan.repeats - 1))
    row = {"batch": batch, "steps": plan.photometric_steps, "image_size": plan.image_size, "seconds": seconds,
           "fits_per_s": batch / seconds, "compile_s": compile_s}
    print(f"photometric fit ({plan.photometric_steps} steps, {plan.image_size}²), batch {batch}: "
          f"{batch / seconds:.2f} fits/s (compile {compile_s:.1f} s)", flush=True)
    return row


def _on(device, tree):
    return jax.device_put(tree, device)


def agreement(model: FlameModel, uv, pool: list, plan: Plan) -> dict:
    """Landmark fits and renders of the same inputs on the CPU and on the default device."""
    cpu, accelerator = jax.devices("cpu")[0], jax.devices()[0]
    targets = batch_of(pool, plan.agreement_batch)
    fits = [jax.tree.map(np.asarray, fit_landmarks_batch(_on(d, model), _on(d, targets), plan.fit))
            for d in (cpu, accelerator)]
    lmk_px = float(np.max(np.abs(fits[0].landmarks.lmk68 - fits[1].landmarks.lmk68))) * plan.image_size / 2.0
    verts = [jax.vmap(lambda p: flame_forward(model, p).vertices)(jax.tree.map(jnp.asarray, f.params)) for f in fits]
    vertex_mm = float(np.max(np.mean(np.linalg.norm(np.asarray(verts[0] - verts[1]), axis=-1), axis=-1))) * 1e3
    rendered = [photometric_targets(_on(d, model), _on(d, uv), pool, plan.agreement_batch, plan.image_size).image
                for d in (cpu, accelerator)]
    render_diff = float(np.mean(np.abs(np.asarray(rendered[0]) - np.asarray(rendered[1]))))
    same_status = bool(np.array_equal(fits[0].status, fits[1].status))
    ok = same_status and lmk_px <= AGREEMENT_PX and vertex_mm <= AGREEMENT_MM and render_diff <= AGREEMENT_RENDER
    row = {"devices": f"{cpu.device_kind} vs {accelerator.device_kind}", "batch": plan.agreement_batch,
           "max_landmark_diff_px": lmk_px, "max_mean_vertex_diff_mm": vertex_mm, "mean_render_diff": render_diff,
           "same_status": same_status, "ok": ok, "self_comparison": accelerator.platform == "cpu"}
    print(f"agreement ({row['devices']}): landmarks {lmk_px:.3g} px, vertices {vertex_mm:.3g} mm, "
          f"render {render_diff:.3g}: {'ok' if ok else 'DIFFERENT'}", flush=True)
    return row


def verdict(value: float, target: float, larger_is_better: bool = True) -> str:
    met = value >= target if larger_is_better else value <= target
    return "met" if met else "missed"


def run(smoke: bool, progress: Path | None = None, plan: Plan | None = None) -> dict:
    """The whole check; ``progress``: a JSON file rewritten with the sections measured so far after each one (a
    device's time limit can stop the run before its end); ``plan``: instead of :data:`SMOKE` or :data:`FULL`."""
    plan = plan or (SMOKE if smoke else FULL)
    start = time.perf_counter()
    model = load_flame(n_shape=plan.n_shape, n_expression=plan.n_expression)
    uv = load_uv_layout()
    pool = problems(model, 16, plan.image_size)
    done: dict = {}

    def measured(name: str, value):
        done[name] = value
        if progress is not None:
            write_json(progress, {"partial": True, "seconds": round(time.perf_counter() - start, 1), **done})
        return value

    agree = measured("agreement", agreement(model, uv, pool, plan))
    landmark = landmark_speed(model, pool, plan, lambda rows: measured("landmark", rows))
    render = measured("render", render_speed(plan))
    render_per_image = measured("render_per_image", render_speed(plan, per_image=True))
    photometric = measured("photometric", photometric_speed(model, uv, pool, plan))
    best = max(landmark, key=lambda r: r["fits_per_s"])
    worst_compile = max(r["compile_s"] for r in landmark)
    summary = [
        ["landmark fits/s (best batch)", f"{best['fits_per_s']:.0f} at {best['batch']}",
         TARGETS["landmark fits/s"], verdict(best["fits_per_s"], TARGETS["landmark fits/s"])],
        ["photometric fits/s", f"{photometric['fits_per_s']:.2f} at {photometric['batch']}",
         TARGETS["photometric fits/s"], verdict(photometric["fits_per_s"], TARGETS["photometric fits/s"])],
        ["render fwd+bwd images/s", f"{render['forward_backward_images_per_s']:.0f} at {render['batch']}",
         TARGETS["render images/s"], verdict(render["forward_backward_images_per_s"], TARGETS["render images/s"])],
        ["landmark compile s (worst batch)", f"{worst_compile:.1f}", TARGETS["landmark compile s"],
         verdict(worst_compile, TARGETS["landmark compile s"], larger_is_better=False)],
        ["device fits equal CPU fits", "yes" if agree["ok"] else "no", "yes", "met" if agree["ok"] else "missed"],
    ]
    note = ("smoke mode: tiny batches and step counts, for testing the script; the verdicts do not apply"
            if smoke else "")
    tables = [
        table("Targets (issue 14)", ["what", "measured", "target", "verdict"], summary,
              "Verdicts apply to the full run on an accelerator only." if smoke else ""),
        table("Landmark fit against batch (compile excluded)", ["batch", "s/batch", "fits/s", "compile s"],
              [[r["batch"], r["seconds"], r["fits_per_s"], r["compile_s"]] for r in landmark]),
        table("Photometric fit and renderer", ["what", "batch", "images/s", "compile s"],
              [[f"photometric fit, {photometric['steps']} steps, {plan.image_size}²", photometric["batch"],
                photometric["fits_per_s"], photometric["compile_s"]]]
              + [[f"render_mesh hard {plan.image_size}², {_meshes(r['per_image'])}, {part}", r["batch"],
                  r[f"{key}_images_per_s"], r[f"{key}_compile_s"]]
                 for r in (render, render_per_image)
                 for part, key in (("forward", "forward"), ("forward+backward", "forward_backward"))]),
        table("Device against CPU", list(agree), [list(agree.values())],
              f"Tolerances: landmarks ≤ {AGREEMENT_PX} px, mean vertex difference ≤ {AGREEMENT_MM} mm, mean render "
              f"difference ≤ {AGREEMENT_RENDER}; "
              + ("no accelerator here: the CPU was compared with itself." if agree["self_comparison"] else "")),
    ]
    settings = {"mode": "smoke" if smoke else "full", "landmark fit": "FitConfig()" if not smoke else "20 + 10 steps",
                "model": f"{plan.n_shape} identity + {plan.n_expression} expression components",
                "total seconds": round(time.perf_counter() - start, 1)}
    data = {"landmark": landmark, "render": render, "render_per_image": render_per_image,
            "photometric": photometric, "agreement": agree}
    return result(NAME, TITLE, "smoke" if smoke else "full", settings, tables, data, note=note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu.json", help="JSON result path")
    parser.add_argument("--smoke", action="store_true", help="tiny batches and steps: checks the script on a CPU")
    parser.add_argument("--progress", type=Path, default=None,
                        help="JSON file rewritten with the sections measured so far after each one")
    args = parser.parse_args()
    payload = run(args.smoke, args.progress)
    write_json(args.out, payload)
    print(f"wrote {args.out}\n")
    print(f"<!-- BEGIN {NAME} -->\n{render_section(payload)}\n<!-- END {NAME} -->")


if __name__ == "__main__":
    main()
