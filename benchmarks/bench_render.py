"""Renderer throughput: FLAME head, textured and SH-lit, forward and forward+backward, against batch size.

Each configuration renders a batch of heads (``jax.vmap`` over slightly different cameras) with
:func:`flamejax.render.render_mesh` in hard mode (K = 1; z-buffer and tiled rasterizers) and soft mode (K = 8,
SoftRas); forward+backward takes the gradient of an L1 photometric + alpha loss with respect to vertices, texture
and lighting (what a photometric fit differentiates). Reports images/s (median over repeats, compile excluded),
the process CPU seconds per call (a fairer measure than wall time on a shared machine), the compiled temporary
memory per batch, and XLA's own cost analysis of the forward+backward call (flops, bytes accessed).

    python3 benchmarks/bench_render.py [--quick | --full] [--batch-sizes 1 4 16] [--sizes 256 512]
        [--modes hard soft] [--rasterizers zbuffer tiled] [--texture-filters bilinear trilinear]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import flamejax  # noqa: F401 -- first, so that its XLA flags apply before JAX starts

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.camera import Camera
from flamejax.files import find_file
from flamejax.flame import read_flame_arrays
from flamejax.render import RasterConfig, load_uv_layout, render_mesh

ROOT = Path(__file__).resolve().parents[1]


def scene(batch: int, per_image: bool = False):
    """Mean head, cameras turning from -17 to 17 degrees, a random texture, a frontal light. ``per_image``: every
    image gets its own copy of the vertices and the texture (a batch of fits), else one is shared by the batch
    (several views of one textured head)."""
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
    if per_image:
        verts, texture = (jnp.broadcast_to(x, (batch, *x.shape)) for x in (verts, texture))
    return verts, faces, cameras, load_uv_layout(), texture, light


def make_functions(faces, uv, config: RasterConfig, mode: str, per_image: bool = False):
    """Jitted forward and forward+backward over a batch of :func:`scene` (the same ``per_image``)."""
    def render(verts, camera, texture, light):
        return render_mesh(verts, faces, camera, uv, texture, light, config, mode)

    image_axis = 0 if per_image else None

    def forward(verts, cameras, texture, light):
        out = jax.vmap(render, in_axes=(image_axis, 0, image_axis, None))(verts, cameras, texture, light)
        return out.image, out.alpha

    def loss(verts, cameras, texture, light, target):
        image, alpha = forward(verts, cameras, texture, light)
        return jnp.mean(jnp.abs(image - target)) + jnp.mean(alpha)

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 2, 3)))


def measure(fn, args, repeats: int) -> dict:
    """Compile seconds, median run seconds (wall and process CPU), temporary MiB, XLA's flops and bytes accessed."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    jax.block_until_ready(compiled(*args))
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return dict(compile_s=compile_s, seconds=statistics.median(times), cpu_seconds=statistics.median(cpu),
                temp_mib=memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan"),
                gflops=cost.get("flops", float("nan")) / 1e9, gbytes=cost.get("bytes accessed", float("nan")) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="256² and 512², batches 1 and 4, 2 repeats")
    level.add_argument("--full", action="store_true", help="256² and 512², batches 1, 4, 16 (default)")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--modes", nargs="+", default=["hard", "soft"], choices=["hard", "soft"])
    parser.add_argument("--rasterizers", nargs="+", default=["zbuffer", "tiled"], choices=["zbuffer", "tiled"],
                        help="hard-mode rasterizers to measure (soft mode is always tiled)")
    parser.add_argument("--texture-filters", nargs="+", default=["bilinear"], choices=["bilinear", "trilinear"],
                        help="texture lookups to measure (RasterConfig.texture_filter)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = args.sizes or [256, 512]
    batches = args.batch_sizes or ([1, 4] if args.quick else [1, 4, 16])
    repeats = args.repeats or (2 if args.quick else 3)
    device = jax.devices()[0]
    out = args.out or ROOT / "benchmarks" / "results" / f"render_{device.platform}.json"

    rows = []
    header = (f"{'size':>5} {'mode':>5} {'raster':>7} {'texture':>9} {'batch':>5} | {'fwd img/s':>9} "
              f"{'fwd MiB':>8} | {'f+b img/s':>9} {'f+b cpu s':>9} {'f+b MiB':>8} {'GFLOP':>7} {'GB':>6}")
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(header + "\n" + "-" * len(header))
    scenes = {batch: scene(batch) for batch in batches}
    for size in sizes:
        for mode in args.modes:
            for rasterizer, texture_filter, batch in itertools.product(
                    args.rasterizers if mode == "hard" else ["tiled"], args.texture_filters, batches):
                config = RasterConfig(image_size=size, faces_per_pixel=8, hard_rasterizer=rasterizer,
                                      texture_filter=texture_filter)
                verts, faces, cameras, uv, texture, light = scenes[batch]
                forward, grad = make_functions(faces, uv, config, mode)
                target = jnp.full((batch, size, size, 3), 0.5)
                f = measure(forward, (verts, cameras, texture, light), repeats)
                g = measure(grad, (verts, cameras, texture, light, target), repeats)
                row = dict(image_size=size, mode=mode, rasterizer=rasterizer, texture_filter=texture_filter,
                           faces_per_pixel=1 if mode == "hard" else 8, batch=batch,
                           forward_images_per_s=batch / f["seconds"], forward_s=f["seconds"],
                           forward_cpu_s=f["cpu_seconds"], forward_compile_s=f["compile_s"],
                           forward_temp_mib=f["temp_mib"], backward_images_per_s=batch / g["seconds"],
                           forward_backward_s=g["seconds"], forward_backward_cpu_s=g["cpu_seconds"],
                           backward_compile_s=g["compile_s"], forward_backward_temp_mib=g["temp_mib"],
                           forward_backward_gflops=g["gflops"], forward_backward_gbytes=g["gbytes"],
                           load_average=round(os.getloadavg()[0], 2))
                rows.append(row)
                print(f"{size:>5} {mode:>5} {rasterizer:>7} {texture_filter:>9} {batch:>5} | "
                      f"{batch / f['seconds']:>9.2f} {f['temp_mib']:>8.1f} | {batch / g['seconds']:>9.2f} "
                      f"{g['cpu_seconds']:>9.3f} {g['temp_mib']:>8.1f} {g['gflops']:>7.2f} {g['gbytes']:>6.2f}",
                      flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        benchmark="render", device=device.device_kind, platform=device.platform, jax=jax.__version__,
        host=platform.node(), cpu_count=os.cpu_count(), mesh="FLAME template, 5023 vertices, 9976 faces",
        note="images/s = batch / median seconds per call (compile excluded); cpu s = process CPU seconds per call "
             "(all threads); MiB = XLA temporary buffers per call; GFLOP, GB = XLA cost analysis of the compiled "
             "forward+backward call",
        results=rows), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
