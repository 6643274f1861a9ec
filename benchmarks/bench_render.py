"""Renderer throughput: FLAME head, textured and SH-lit, forward and forward+backward, against batch size.

Each configuration renders a batch of heads (``jax.vmap`` over slightly different cameras) with
:func:`flamejax.render.render_mesh` in hard mode (K = 1) and soft mode (K = 8, SoftRas); forward+backward takes
the gradient of an L1 photometric + alpha loss with respect to vertices, texture and lighting (what a
photometric fit differentiates). Reports images/s (median over repeats, compile excluded) and the compiled
temporary memory per batch.

    python3 benchmarks/bench_render.py [--quick | --full] [--batch-sizes 1 4 16] [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.camera import Camera
from flamejax.files import find_file
from flamejax.flame import read_flame_arrays
from flamejax.render import RasterConfig, load_uv_layout, render_mesh

ROOT = Path(__file__).resolve().parents[1]


def scene(batch: int):
    arrays = read_flame_arrays(find_file("flame_model"))
    verts = jnp.asarray(arrays.v_template, jnp.float32)
    faces = jnp.asarray(arrays.faces, jnp.int32)
    yaw = jnp.linspace(-0.3, 0.3, batch)
    cameras = Camera(
        rotation=jnp.stack([jnp.zeros(batch), yaw, jnp.zeros(batch)], axis=-1),
        translation=jnp.tile(jnp.array([0.0, 0.0, -1.0]), (batch, 1)),
        fov_deg=jnp.full((batch,), 20.0),
    )
    texture = jnp.asarray(np.random.default_rng(0).uniform(0.3, 0.8, (256, 256, 3)), jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(3.0).at[3].set(0.5)
    return verts, faces, cameras, load_uv_layout(), texture, light


def make_functions(faces, uv, config: RasterConfig, mode: str):
    def render(verts, camera, texture, light):
        return render_mesh(verts, faces, camera, uv, texture, light, config, mode)

    def forward(verts, cameras, texture, light):
        out = jax.vmap(render, in_axes=(None, 0, None, None))(verts, cameras, texture, light)
        return out.image, out.alpha

    def loss(verts, cameras, texture, light, target):
        image, alpha = forward(verts, cameras, texture, light)
        return jnp.mean(jnp.abs(image - target)) + jnp.mean(alpha)

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 2, 3)))


def measure(fn, args, repeats: int) -> tuple[float, float, float]:
    """(compile seconds, median run seconds, temporary MiB)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp_mib = memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan")
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times), temp_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="256² and 512², batches 1 and 4, 2 repeats")
    level.add_argument("--full", action="store_true", help="256² and 512², batches 1, 4, 16 (default)")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--modes", nargs="+", default=["hard", "soft"], choices=["hard", "soft"])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = args.sizes or [256, 512]
    batches = args.batch_sizes or ([1, 4] if args.quick else [1, 4, 16])
    repeats = args.repeats or (2 if args.quick else 3)
    device = jax.devices()[0]
    out = args.out or ROOT / "benchmarks" / "results" / f"render_{device.platform}.json"

    rows = []
    header = (f"{'size':>5} {'mode':>5} {'K':>2} {'batch':>5} | {'fwd img/s':>9} {'fwd MiB':>8} | "
              f"{'f+b img/s':>9} {'f+b MiB':>8}")
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(header + "\n" + "-" * len(header))
    for size in sizes:
        for mode in args.modes:
            config = RasterConfig(image_size=size, faces_per_pixel=8)
            for batch in batches:
                verts, faces, cameras, uv, texture, light = scene(batch)
                forward, grad = make_functions(faces, uv, config, mode)
                target = jnp.full((batch, size, size, 3), 0.5)
                fc, ft, fm = measure(forward, (verts, cameras, texture, light), repeats)
                gc, gt, gm = measure(grad, (verts, cameras, texture, light, target), repeats)
                row = dict(image_size=size, mode=mode, faces_per_pixel=1 if mode == "hard" else 8, batch=batch,
                           tile_size=config.tile, faces_per_tile=config.faces_per_tile,
                           forward_images_per_s=batch / ft, forward_s=ft, forward_compile_s=fc, forward_temp_mib=fm,
                           backward_images_per_s=batch / gt, forward_backward_s=gt, backward_compile_s=gc,
                           forward_backward_temp_mib=gm)
                rows.append(row)
                print(f"{size:>5} {mode:>5} {row['faces_per_pixel']:>2} {batch:>5} | {batch / ft:>9.2f} {fm:>8.1f} | "
                      f"{batch / gt:>9.2f} {gm:>8.1f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        benchmark="render", device=device.device_kind, platform=device.platform, jax=jax.__version__,
        host=platform.node(), cpu_count=os.cpu_count(), mesh="FLAME template, 5023 vertices, 9976 faces",
        note="images/s = batch / median seconds per call (compile excluded); MiB = XLA temporary buffers per call",
        results=rows), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
