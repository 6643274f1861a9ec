"""Photometric tracking against landmark tracking on the same clips (``track --mode photometric``).

    PYTHONPATH=. python3 benchmarks/bench_track_photometric.py [--frames 60] [--clips 2] [--parts real,synthetic]

Writes ``benchmarks/results/track_photometric.json`` and overlay frames as PNG under
``/tmp/bench_track_photometric_png/``. Measures, per mode, on the first ``--frames`` frames of real clips
(``../shared/videos``; compilation excluded by a warm-up clip, reported apart):

* landmark error: inner-51 NME against the MediaPipe targets, over the frames both modes fitted;
* jitter as ``benchmarks/bench_track.py`` measures it: mean |second difference| of the fitted 68 points (frame
  pixels per frame²) and of the face-region vertices in camera space (mm per frame²);
* photometric error: masked L1 over each frame's crop (the photometric stage's pixel weights) of the mode's
  final (smoothed) geometry, under the photometric run's clip albedo with each frame's light fitted alone
  (geometry held): the same measure for both modes, lower is better;
* CPU seconds per frame (all threads) of the whole run, and of the photometric step alone.

Synthetic (``--parts synthetic``): a smooth FLAME trajectory (:func:`flamejax.track.synthetic_sequence`) rendered
with a known albedo and SH light over grey, its true landmarks plus noise as targets; error of the tracked
camera-space face vertices against the truth (mm) and of the neutral identity (face vertices after a similarity
alignment, mm; the mean head beside it) in landmark mode, photometric mode, and photometric mode with the keyframes'
identity held at the landmark tracking's (the default before the keyframes fitted it); and the camera-space error
split into the scale-depth ambiguity (how much larger and farther the fitted head is) and what is left after the
best scaling about the camera centre (:func:`scale_depth_split`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_identity import identity_error_mm, neutral_vertices
from benchmarks.bench_track import accel, camera_vertices, save_overlay_frames
from flamejax.fit import AMBIENT_SH, GroupSchedule, landmark_model
from flamejax.fitter import find_uv_layout
from flamejax.flame import flame_forward, load_flame
from flamejax.render import RasterConfig, render_mesh
from flamejax.track import (FrameSource, PhotometricTrackConfig, TrackConfig, refine_photometric,
                            synthetic_sequence, track_landmarks, track_video)
from flamejax.track._photometric_track import _refine_batch, video_pictures
from flamejax.track._video_track import _ndc_to_frame, _targets, clip_looks, saved_landmarks, write_overlay

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
RESULTS = ROOT / "benchmarks" / "results"
PNG = Path("/tmp/bench_track_photometric_png")
HELD = GroupSchedule(0.0)


def light_only_error(model, uv, fit, targets, pictures, config: PhotometricTrackConfig, texture, light
                     ) -> np.ndarray:
    """Per usable frame, the photometric stage's masked L1 of ``fit``'s geometry under ``texture`` with only the
    light fitted from ``light`` (NaN elsewhere). Same static settings as the refinement: no new compilation."""
    light_only = dataclasses.replace(config.frame_stage(), pose=HELD, camera=HELD)
    from flamejax.fit._photometric import Appearance

    appearance = Appearance(jnp.asarray(light, jnp.float32), jnp.zeros(0), jnp.asarray(texture))
    rows = [i for i, s in enumerate(fit.status) if s in ("ok", "photometric diverged", "photometric rejected")]
    errors = np.full(len(fit.status), np.nan)
    batch, landmarks_only = config.batch_frames, landmark_model(model)
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        pics = {row: (image, mask) for row, image, mask in pictures(part)}
        result = _refine_batch(model, landmarks_only, uv, fit, targets, part, pics, light_only, batch, None,
                               appearance)
        errors[part] = np.asarray(result.photometric.photometric_final)[:len(part)]
    return errors


def mode_metrics(model, fit, crop, face_rows, ok, errors) -> dict:
    f = fit.frames
    vertices = camera_vertices(model, fit.shape, f.expression, f.jaw, f.eyes, f.rotation, f.translation,
                               fit.fov_deg, face_rows)
    return dict(nme=float(np.nanmean(fit.nme[ok])),
                landmark_accel_px=accel(_ndc_to_frame(fit.lmk68, crop), ok),
                vertex_accel_mm=1000 * accel(vertices, ok),
                photometric_error_light_only=float(np.nanmean(errors[ok])))


def bench_real(model, frames: int, clips: int) -> dict:
    uv = find_uv_layout(required=True)
    landmark_config, photometric_config = TrackConfig(), TrackConfig(photometric=PhotometricTrackConfig())
    videos = sorted(VIDEOS.glob("*.mp4"))[:clips]
    clock = time.perf_counter()  # warm-up: 20 frames compile every program the measured runs meet
    track_video(videos[0], "/tmp/bench_tp_warmup", photometric_config, model, end_s=19.5 / _fps(videos[0]),
                overlay=False)
    results = {"compile_and_warmup_s": time.perf_counter() - clock, "clips": {}}
    face_rows = np.asarray(model.landmarks.all_vertex_ids())
    for video in videos:
        end = (frames - 0.5) / _fps(video)
        runs = {}
        for name, config in (("landmark", landmark_config), ("photometric", photometric_config)):
            out = Path("/tmp/bench_track_photometric") / video.stem / name
            load = os.getloadavg()[0]
            clock, cpu = time.perf_counter(), time.process_time()
            result = track_video(video, out, config, model, end_s=end, overlay=False)
            runs[name] = (result, time.perf_counter() - clock, time.process_time() - cpu, load)
        photo = runs["photometric"][0]
        saved = saved_landmarks(photo.out_dir / "checkpoints" / "landmarks.npz")  # the tracker's own targets
        points, looks = map(list, zip(*(saved[int(i)] for i in photo.frame_indices)))
        targets = [_targets(p, photo.crop, look) for p, look in zip(points, clip_looks(looks))]
        pictures = video_pictures(lambda: iter(FrameSource(video, None, end, None)),
                                  {int(i): row for row, i in enumerate(photo.frame_indices)}, points, photo.crop,
                                  photometric_config.photometric.image_size)
        n = len(photo.frame_indices)
        ok = np.array([s == "ok" for s in runs["landmark"][0].fit.status]) & np.array(
            [s == "ok" for s in photo.fit.status])
        texture, light = photo.fit.photometric.texture, np.median(photo.fit.photometric.light, axis=0)
        metrics = {"frames": n, "both_ok": int(ok.sum())}
        for name, (result, wall, cpu, load) in runs.items():
            errors = light_only_error(model, uv, result.fit, targets, pictures, photometric_config.photometric,
                                      texture, light)
            metrics[name] = mode_metrics(model, result.fit, result.crop, face_rows, ok, errors)
            metrics[name].update(wall_s=wall, cpu_s_per_frame=cpu / n, load_average_before=load,
                                 timings_s=result.timings_s,
                                 status_counts={s: result.fit.status.count(s) for s in set(result.fit.status)})
        extra = photo.fit.photometric
        metrics["photometric"].update(
            photometric_step_wall_s_per_frame=photo.timings_s["photometric"] / n,
            photometric_error_before_refinement=float(np.nanmean(extra.photometric_start[ok])),
            photometric_error_after_refinement_before_smoothing=float(np.nanmean(extra.photometric_final[ok])))
        results["clips"][video.stem] = metrics
        print(video.stem, json.dumps(metrics), flush=True)
        _overlay_pngs(photo, model, video, points, min(n, 40), uv)
    return results


def _fps(video: Path) -> float:
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps


def _overlay_pngs(result, model, video, points, shown, uv) -> None:
    """The textured overlay of the first ``shown`` frames; three of them and the clip texture as PNG."""
    write_overlay(result, model, FrameSource(video, None, (shown - 0.5) / _fps(video), None), points, uv_layout=uv)
    save_overlay_frames(result.out_dir / "overlay.mp4", shown, PNG, video.stem)
    cv2.imwrite(str(PNG / f"{video.stem}_texture.png"), cv2.imread(str(result.out_dir / "texture.png")))


def scale_depth_split(fitted: np.ndarray, truth: np.ndarray) -> dict:
    """How much of a camera-space error (``(frames, vertices, 3)``, metres) is the scale-depth ambiguity.

    A head ``s`` times larger and ``s`` times farther away projects to the same picture, so one picture fixes the
    face only up to a scaling about the camera centre. Returns the mean error in mm, the error left after the best
    such scaling per frame, that scaling's median in per cent, and the signed mean depth error in mm."""
    s = np.einsum("fvi,fvi->f", fitted, truth) / np.einsum("fvi,fvi->f", fitted, fitted)
    scaled = fitted * s[:, None, None]
    return {"error_mm": float(1000 * np.linalg.norm(fitted - truth, axis=-1).mean()),
            "after_best_scaling_mm": float(1000 * np.linalg.norm(scaled - truth, axis=-1).mean()),
            "fit_too_large_percent_median": float(100 * np.median(1 / s - 1)),
            "depth_error_mm_signed": float(1000 * (fitted[..., 2] - truth[..., 2]).mean())}


def bench_synthetic(model, frames: int, seed: int = 7) -> dict:
    """Rendered synthetic clip: camera-space face vertex error against the truth, landmark vs photometric."""
    uv = find_uv_layout(required=True)
    config = TrackConfig(photometric=PhotometricTrackConfig())
    size = config.photometric.image_size
    seq = synthetic_sequence(model, frames, np.random.default_rng(seed), noise_px=1.0)
    u = np.linspace(0, 1, 256)
    texture = jnp.asarray(np.stack(np.meshgrid(u, u), -1).mean(-1, keepdims=True) * [0.25, 0.18, 0.1]
                          + [0.62, 0.46, 0.36], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[3].set(0.35).at[1].set(0.15)
    render = jax.jit(lambda p, c: render_mesh(flame_forward(model, p).vertices, model.faces, c, uv, texture, light,
                                              RasterConfig(image_size=size)))
    pictures_list = []
    for i in range(frames):
        out = render(jax.tree.map(lambda a: jnp.asarray(a[i]), seq.params),
                     jax.tree.map(lambda a: jnp.asarray(a[i]), seq.camera))
        alpha = np.asarray(out.alpha)
        pictures_list.append((np.asarray(out.image) + 0.5 * (1 - alpha[..., None]), alpha))  # grey background
    targets = [jax.tree.map(lambda a, i=i: a[i], seq.targets) for i in range(frames)]
    clock, cpu = time.perf_counter(), time.process_time()
    fit = track_landmarks(model, targets, config)
    landmark_s = (time.perf_counter() - clock, time.process_time() - cpu)
    clock, cpu = time.perf_counter(), time.process_time()
    pictures = lambda rows: ((r, *pictures_list[r]) for r in rows)  # noqa: E731
    refined = refine_photometric(model, uv, fit, targets, pictures, config)
    photometric_s = (time.perf_counter() - clock, time.process_time() - cpu)
    held = config.photometric.replace(appearance=dataclasses.replace(config.photometric.appearance, shape=HELD))
    held_identity = refine_photometric(model, uv, fit, targets, pictures, config.replace(photometric=held))
    face_rows = np.asarray(model.landmarks.all_vertex_ids())
    p = seq.params
    truth = camera_vertices(model, p.shape[0], p.expression, p.jaw_pose,
                            np.concatenate([p.left_eye_pose, p.right_eye_pose], 1), seq.camera.rotation,
                            seq.camera.translation, 20.0, face_rows)

    modes = {"landmark": fit, "photometric": refined, "photometric, identity held": held_identity}
    vertices = {name: camera_vertices(model, r.shape, r.frames.expression, r.frames.jaw, r.frames.eyes,
                                      r.frames.rotation, r.frames.translation, 20.0, face_rows)
                for name, r in modes.items()}
    split = {name: scale_depth_split(v, truth) for name, v in vertices.items()}
    true_neutral = neutral_vertices(model, p.shape[0])
    identity_error = lambda shape: identity_error_mm(model, shape, true_neutral, face_rows)  # noqa: E731

    ok = np.ones(frames, bool)
    out = dict(frames=frames, image_size=size,
               camera_space_face_vertex_error_mm={name: s["error_mm"] for name, s in split.items()},
               scale_depth_split=split,
               identity_face_error_mm={"mean head": identity_error(np.zeros_like(fit.shape)),
                                       "landmark": identity_error(fit.shape),
                                       "photometric": identity_error(refined.shape)},
               nme={"landmark": float(np.mean(fit.nme)), "photometric": float(np.mean(refined.nme))},
               vertex_accel_mm={"truth": 1000 * accel(truth, ok),
                                **{name: 1000 * accel(vertices[name], ok) for name in ("landmark", "photometric")}},
               landmark_seconds=landmark_s, photometric_seconds_wall_cpu=photometric_s,
               status_counts={s: refined.status.count(s) for s in set(refined.status)},
               photometric_error={"start": float(np.nanmean(refined.photometric.photometric_start)),
                                  "final": float(np.nanmean(refined.photometric.photometric_final))})
    print("synthetic", json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--synthetic-frames", type=int, default=48)
    parser.add_argument("--parts", default="real,synthetic")
    args = parser.parse_args()
    model = load_flame(n_shape=100, n_expression=50)
    path = RESULTS / "track_photometric.json"
    results = json.loads(path.read_text()) if path.is_file() else {}  # parts not run now are kept
    RESULTS.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        results[part] = (bench_real(model, args.frames, args.clips) if part == "real"
                         else bench_synthetic(model, args.synthetic_frames))
        results[f"{part}_measured"] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                       "jax": jax.__version__, "frames": args.frames,
                                       "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
