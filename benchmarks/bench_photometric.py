"""Photometric fit: speed, recovery on rendered synthetic heads, and the shared photographs.

Synthetic: ``sample_problem`` heads rendered at 256² with a smooth known albedo and SH light; landmark mode
(``FitConfig()``) then photometric mode (``PhotometricConfig()``, 400 steps) from its result. Face-region vertex
error after similarity alignment for both, and the photometric error. Photographs: ``preprocess`` then both modes;
masked L1 before and after, NME of both. Speed: seconds per image of the photometric stage at the reference's
400 steps (compilation excluded and reported separately); the landmark fit before it is not counted.

    python3 -m benchmarks --only photometric [--quick | --full]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import result, shared_photos, table
from flamejax.files import find_file
from flamejax.fit import (AMBIENT_SH, FitConfig, PhotometricConfig, PhotometricTargets, aligned_vertex_error_mm,
                          fit_landmarks_batch, fit_photometric_batch, sample_problem, stack_targets)
from flamejax.flame import flame_forward, load_flame, safe_load_pickle
from flamejax.render import RasterConfig, load_uv_layout, render_mesh

NAME = "photometric"
TITLE = "Photometric fit"
N_SHAPE, N_EXPRESSION = 100, 50
SIZE = 256
TARGET_SECONDS_PER_IMAGE_CPU = 60.0


def _synthetic_pictures(model, uv, samples):
    """Render each sample with a smooth albedo (skin tones varying over the UV map) and a frontal-top light."""
    u = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    grid = np.stack(np.meshgrid(u, u), -1)
    texture = jnp.asarray(0.55 + 0.15 * np.sin(6.0 * grid[..., :1]) * [1.0, 0.8, 0.6]
                          + 0.1 * grid[..., 1:] * [0.2, 0.1, 0.05], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.8).at[2].set(0.3).at[3].set(0.5)
    render = jax.jit(lambda v, cam: render_mesh(v, model.faces, cam, uv, texture, light, RasterConfig(image_size=SIZE)))
    pictures = [render(flame_forward(model, s.params).vertices, s.camera) for s in samples]
    return np.stack([np.asarray(p.image) for p in pictures]), np.stack([np.asarray(p.alpha) for p in pictures])


def _fit_both(model, uv, landmark_targets, images, masks, config):
    landmark = fit_landmarks_batch(model, landmark_targets, FitConfig())
    targets = PhotometricTargets(jnp.asarray(images, jnp.float32), jnp.asarray(masks, jnp.float32), landmark_targets)
    start = time.perf_counter()
    photo = fit_photometric_batch(model, uv, targets, landmark, config)
    jax.block_until_ready(photo)
    return jax.tree.map(np.asarray, landmark), jax.tree.map(np.asarray, photo), time.perf_counter() - start


def _face_errors(model, samples, params, face):
    errors = []
    for i, s in enumerate(samples):
        fitted = flame_forward(model, jax.tree.map(lambda a: a[i], params)).vertices
        errors.append(float(np.mean(aligned_vertex_error_mm(np.asarray(fitted), s.vertices, face))))
    return np.asarray(errors)


def run(quick: bool) -> dict:
    from flamejax.perception import preprocess
    from flamejax.fitter import targets_of

    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    uv = load_uv_layout()
    config = PhotometricConfig()
    batch = 4 if quick else 8
    face = np.asarray(safe_load_pickle(find_file("flame_masks"))["face"])

    rng = np.random.default_rng(11)
    samples = [sample_problem(model, rng, image_size=SIZE, max_yaw_deg=30.0) for _ in range(batch)]
    images, masks = _synthetic_pictures(model, uv, samples)
    landmark, photo, first_seconds = _fit_both(model, uv, stack_targets([s.targets for s in samples]), images, masks,
                                               config)
    lmk_err, photo_err = (_face_errors(model, samples, r.params, face) for r in (landmark, photo))
    synthetic_rows = [[i, lmk_err[i], photo_err[i], photo.photometric.photometric_start[i], photo.photometric.photometric_final[i]]
                      for i in range(batch)]
    for name, reduce in (("mean", np.mean), ("median", np.median)):
        synthetic_rows.append([name, reduce(lmk_err), reduce(photo_err), reduce(photo.photometric.photometric_start),
                               reduce(photo.photometric.photometric_final)])
    better = int(np.sum(photo_err < lmk_err))
    synthetic = table("Synthetic heads (rendered with known albedo and light)",
                      ["sample", "landmark mode face error mm", "photometric face error mm",
                       "masked L1 start", "masked L1 final"], synthetic_rows,
                      f"Photometric mode has the lower face error on {better} of {batch} heads (mean "
                      f"{np.mean(photo_err):.3f} mm against {np.mean(lmk_err):.3f} mm in landmark mode). Face error: "
                      "mean over FLAME_masks 'face' vertices after similarity alignment. The albedo model is absent "
                      "here, so a per-texel albedo is fitted (from step 200).")

    photos = shared_photos()[:batch]
    items = [preprocess(p) for p in photos]
    images = np.stack([it.image for it in items])
    masks = np.stack([it.mask for it in items])
    landmark_p, photo_p, seconds = _fit_both(model, uv, stack_targets([targets_of(it) for it in items]), images,
                                             masks, config)
    photo_rows = [[p.name, landmark_p.nme[i] * 100, photo_p.nme[i] * 100, photo_p.photometric.photometric_start[i],
                   photo_p.photometric.photometric_final[i]] for i, p in enumerate(photos)]
    photographs = table("Shared photographs", ["image", "NME landmark mode %", "NME photometric %",
                                               "masked L1 start", "masked L1 final"], photo_rows,
                        "NME: inner 51 points over the outer-eye-corner distance; the masked L1 starts from the "
                        "landmark fit under ambient light and the mean skin colour.")

    per_image = seconds / batch
    speed = table("Speed (photometric stage only, reference 400 steps)",
                  ["batch", "s/batch", "s/image", "compile s (approx.)"],
                  [[batch, seconds, per_image, max(first_seconds - seconds, 0.0)]],
                  f"Target on this CPU: ≤ {TARGET_SECONDS_PER_IMAGE_CPU:.0f} s per image "
                  f"({'met' if per_image <= TARGET_SECONDS_PER_IMAGE_CPU else 'missed'}). Rendering: "
                  f"{SIZE}² hard rasterization, one face per pixel.")
    settings = {"dtype": "float32", "steps": f"{config.steps} photometric (texel albedo from step "
                f"{config.texel_start}) after FitConfig() landmark fit", "image size": SIZE, "batch": batch,
                "model": f"{N_SHAPE} identity + {N_EXPRESSION} expression components"}
    data = {"synthetic_landmark_mm": lmk_err.tolist(), "synthetic_photometric_mm": photo_err.tolist(),
            "seconds_per_image": per_image}
    return result(NAME, TITLE, "quick" if quick else "full", settings, [speed, synthetic, photographs], data)
