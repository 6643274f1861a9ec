"""Video tracking: speed, jitter against independent per-frame fits, synthetic truth, identity vs number of views.

    PYTHONPATH=. python3 benchmarks/bench_track.py [--frames 150] [--clips N] [--quick]

Writes ``benchmarks/results/track.json`` and a few overlay frames as PNG under ``/tmp/bench_track_png/``
(/tmp/bench_track_png, for looking at). Measures:

* real clips (``../shared/videos``, the first ``--frames`` frames): end-to-end seconds per step and frames per
  second (decode + MediaPipe + fit + writing the parameters; compilation excluded by a warm-up clip, reported
  apart; CPU time per frame and the load average beside them), the overlay video's cost (``--overlay-frames``); jitter = mean |second difference| of the fitted 68 points (frame pixels per
  frame²) and of the face-region vertices in camera space (mm per frame², the vertices the landmark embeddings
  read), tracked vs every frame fitted independently (``fit_landmarks_batch``, default ``FitConfig``) on the same
  MediaPipe targets; landmark error (inner-51 NME) of both, and of per-frame fits with a weak identity prior
  (``WEAK_PRIOR``, a stricter reference); the clip's shape against the spread of the
  independent per-frame shapes (neutral-head vertex distance, mm).
* synthetic smooth trajectories with known truth: the same plus the error against the truth (camera-space
  vertices, mm, also after removing each frame's centroid offset; the face's depth error, the jaw-opening
  error and the face-size error it follows; neutral identity after similarity alignment, mm; the mean head
  beside it).
* several views of one person (``fit_same_person``): identity error vs number of views, mean head beside it.
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
from flamejax.fit import FitConfig, WeightingConfig, fit_landmarks_batch, stack_targets
from flamejax.flame import FlameParams, flame_forward, load_flame
from flamejax.track import (TrackConfig, fit_same_person, synthetic_sequence, synthetic_views, track_landmarks,
                            track_video)
from flamejax.track import FrameSource
from flamejax.track._video_track import _ndc_to_frame, _targets, write_overlay

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
RESULTS = ROOT / "benchmarks" / "results"


def accel(x: np.ndarray, ok: np.ndarray) -> float:
    """Mean norm of the second difference over triplets of consecutive usable frames."""
    d2 = np.linalg.norm(x[2:] - 2 * x[1:-1] + x[:-2], axis=-1).mean(-1)
    keep = ok[2:] & ok[1:-1] & ok[:-2]
    return float(d2[keep].mean())


def camera_vertices(model, shapes, expression, jaw, eyes, rotation, translation, fov, rows) -> np.ndarray:
    """Face-region vertices in camera space (metres) per frame."""
    n = len(jaw)
    z = np.zeros((n, 3), np.float32)
    params = FlameParams(jnp.asarray(np.broadcast_to(shapes, (n, shapes.shape[-1]))), jnp.asarray(expression), z, z,
                         jnp.asarray(jaw), jnp.asarray(eyes[:, :3]), jnp.asarray(eyes[:, 3:]), z)
    verts = np.asarray(jax.jit(jax.vmap(lambda p: flame_forward(model, p).vertices))(params))[:, rows]
    from flamejax.rotation import axis_angle_to_matrix

    rot = np.asarray(jax.vmap(axis_angle_to_matrix)(jnp.asarray(rotation)))
    return np.einsum("nij,nvj->nvi", rot, verts) + translation[:, None]


def save_overlay_frames(overlay: Path, shown: int, folder: Path, stem: str) -> None:
    """Frames ``shown`` / 4, / 2 and 3 / 4 of an overlay video as ``folder/STEM_FRAME.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(overlay))
    for i in range(shown):
        ok, image = capture.read()
        if ok and i in (shown // 4, shown // 2, 3 * shown // 4):
            cv2.imwrite(str(folder / f"{stem}_{i:04d}.png"), image)
    capture.release()


WEAK_PRIOR = FitConfig().replace(landmark=dataclasses.replace(FitConfig().landmark, shape_l2=0.05),
                                 weighting=WeightingConfig(visibility=False, robust=False))
"""A per-frame fit that follows its landmarks more closely than the default: the identity prior of before
2026-11-30 (0.05 instead of 0.5) and no visibility/robust point weights. A stricter reference for the NME."""


def independent_fits(model, targets_list, batch=50, config=FitConfig()):
    """Every frame fitted on its own with ``config`` (numpy results; rows: the frames with targets)."""
    rows = [i for i, t in enumerate(targets_list) if t is not None]
    parts = []
    for start in range(0, len(rows), batch):
        chunk = [targets_list[i] for i in rows[start:start + batch]]
        fit = fit_landmarks_batch(model, stack_targets(chunk, batch), config)
        parts.append(jax.tree.map(lambda a, k=len(chunk): np.asarray(a)[:k], fit))
    fits = jax.tree.map(lambda *a: np.concatenate(a), *parts)
    return rows, fits


def clip_metrics(model, fit, targets, crop, face_rows, independent, ok_rows, weak_prior=None):
    """Jitter and landmark error: tracked vs independent (over frames usable in both); NME also against the
    ``WEAK_PRIOR`` per-frame fits when given."""
    n = len(targets)
    rows, ind = independent
    ok = np.zeros(n, bool)
    ok[rows] = True
    ok &= ok_rows
    lmk_track = _ndc_to_frame(fit.lmk68, crop)
    lmk_ind = np.full((n, 68, 2), np.nan)
    lmk_ind[rows] = _ndc_to_frame(ind.landmarks.lmk68, crop)
    f = fit.frames
    v_track = camera_vertices(model, fit.shape, f.expression, f.jaw, f.eyes, f.rotation, f.translation, fit.fov_deg,
                              face_rows)
    p = ind.params
    eyes = np.concatenate([p.left_eye_pose, p.right_eye_pose], 1)
    v_ind_rows = camera_vertices(model, p.shape, p.expression, p.jaw_pose, eyes, ind.camera.rotation,
                                 ind.camera.translation, 20.0, face_rows)
    v_ind = np.zeros_like(v_track)
    v_ind[rows] = v_ind_rows
    ind_nme = np.full(n, np.nan)
    ind_nme[rows] = ind.nme
    out = dict(
        frames=n, usable=int(ok.sum()),
        landmark_accel_px={"tracked": accel(lmk_track, ok), "independent": accel(lmk_ind, ok)},
        vertex_accel_mm={"tracked": 1000 * accel(v_track, ok), "independent": 1000 * accel(v_ind, ok)},
        nme={"tracked": float(np.nanmean(fit.nme[ok])), "independent": float(np.nanmean(ind_nme[ok]))},
    )
    out["landmark_jitter_ratio"] = out["landmark_accel_px"]["independent"] / out["landmark_accel_px"]["tracked"]
    out["vertex_jitter_ratio"] = out["vertex_accel_mm"]["independent"] / out["vertex_accel_mm"]["tracked"]
    out["nme_ratio"] = out["nme"]["tracked"] / out["nme"]["independent"]
    if weak_prior is not None:
        weak_nme = np.full(n, np.nan)
        weak_nme[weak_prior[0]] = weak_prior[1].nme
        out["nme"]["independent_weak_identity_prior"] = float(np.nanmean(weak_nme[ok]))
        out["nme_ratio_to_weak_identity_prior"] = out["nme"]["tracked"] / out["nme"]["independent_weak_identity_prior"]
    clip_neutral = neutral_vertices(model, fit.shape)
    spread = [np.linalg.norm(neutral_vertices(model, s) - clip_neutral, axis=-1).mean() * 1000 for s in p.shape[::5]]
    between = [np.linalg.norm(neutral_vertices(model, a) - neutral_vertices(model, b), axis=-1).mean() * 1000
               for a, b in zip(p.shape[::5], p.shape[2::5])]
    out["identity_mm"] = {"per_frame_shape_to_clip_shape_median": float(np.median(spread)),
                          "between_per_frame_shapes_median": float(np.median(between))}
    return out


def bench_real(model, config, frames, clips, png_dir, overlay_frames):
    results = {}
    videos = sorted(VIDEOS.glob("*.mp4"))[:clips]
    warm = time.perf_counter()  # the first clip once, so every step meets the measured shapes compiled
    capture = cv2.VideoCapture(str(videos[0]))
    warm_end = (frames - 0.5) / capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    track_video(videos[0], "/tmp/bench_track_warmup", config, model, end_s=warm_end, overlay=False)
    compile_s = time.perf_counter() - warm
    face_rows = np.asarray(model.landmarks.all_vertex_ids())
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        fps = capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        out = Path("/tmp/bench_track") / video.stem
        load_before = os.getloadavg()[0]
        clock, cpu = time.perf_counter(), time.process_time()
        result = track_video(video, out, config, model, end_s=(frames - 0.5) / fps, overlay=False)
        total, cpu = time.perf_counter() - clock, time.process_time() - cpu
        n = len(result.frame_indices)
        with np.load(out / "checkpoints" / "landmarks.npz") as data:
            points = [p if f else None for p, f in zip(data["points"], data["found"])]
        # The overlay on the first overlay_frames frames only (the soft rasteriser dominates on a CPU).
        shown = min(n, overlay_frames)
        clock = time.perf_counter()
        write_overlay(result, model, FrameSource(video, None, (shown - 0.5) / fps, None), points)
        overlay_s = time.perf_counter() - clock
        save_overlay_frames(out / "overlay.mp4", shown, png_dir, video.stem)
        targets = [_targets(p, result.crop) for p in points]
        independent = independent_fits(model, targets)
        ok_rows = np.array([s == "ok" for s in result.fit.status])
        metrics = clip_metrics(model, result.fit, targets, result.crop, face_rows, independent, ok_rows,
                               independent_fits(model, targets, config=WEAK_PRIOR))
        metrics.update(
            seconds=dict(result.timings_s, total_without_overlay=total),
            fps_end_to_end_without_overlay=n / total,
            cpu_seconds_all_threads_without_overlay=cpu,
            cpu_ms_per_frame_without_overlay=1000 * cpu / n,
            load_average_before=load_before,
            overlay={"frames": shown, "seconds": overlay_s, "seconds_per_frame": overlay_s / shown},
            status_counts={s: result.fit.status.count(s) for s in set(result.fit.status)},
            notes=list(result.notes))
        results[video.stem] = metrics
        print(video.stem, json.dumps(metrics), flush=True)
    return {"compile_and_warmup_s": compile_s, "clips": results}


def bench_synthetic(model, config, frames, seeds):
    face_rows = np.asarray(model.landmarks.all_vertex_ids())
    out = []
    for seed in range(seeds):
        seq = synthetic_sequence(model, frames, np.random.default_rng(100 + seed), noise_px=1.0)
        targets = [jax.tree.map(lambda a, i=i: a[i], seq.targets) for i in range(frames)]
        clock = time.perf_counter()
        cpu = time.process_time()
        fit = track_landmarks(model, targets, config)
        fit_s, cpu = time.perf_counter() - clock, time.process_time() - cpu
        crop = (0.0, 0.0, 256.0)
        independent = independent_fits(model, targets)
        metrics = clip_metrics(model, fit, targets, crop, face_rows, independent, np.ones(frames, bool),
                               independent_fits(model, targets, config=WEAK_PRIOR))
        p = seq.params
        truth = camera_vertices(model, p.shape[0], p.expression, p.jaw_pose,
                                np.concatenate([p.left_eye_pose, p.right_eye_pose], 1), seq.camera.rotation,
                                seq.camera.translation, 20.0, face_rows)
        f = fit.frames
        tracked = camera_vertices(model, fit.shape, f.expression, f.jaw, f.eyes, f.rotation, f.translation, 20.0,
                                  face_rows)
        ind = independent[1].params
        ind_v = camera_vertices(model, ind.shape, ind.expression, ind.jaw_pose,
                                np.concatenate([ind.left_eye_pose, ind.right_eye_pose], 1),
                                independent[1].camera.rotation, independent[1].camera.translation, 20.0, face_rows)
        true_neutral = neutral_vertices(model, seq.shape)
        depth_error = 1000 * (tracked.mean(1)[:, 2] - truth.mean(1)[:, 2])
        jaw_error = np.rad2deg(f.jaw[:, 0] - np.asarray(p.jaw_pose)[:, 0])
        size = lambda v: np.sqrt(((v - v.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))  # noqa: E731
        posed_size_error = size(tracked) / size(truth) - 1.0
        centred = lambda v: v - v.mean(1, keepdims=True)  # noqa: E731
        metrics.update(
            tracked_face_depth_error_mm={"mean": float(depth_error.mean()), "sd": float(depth_error.std()),
                                         "correlation_with_jaw_error": float(np.corrcoef(depth_error, jaw_error)[0, 1])},
            tracked_jaw_opening_error_deg={"mean": float(jaw_error.mean()), "sd": float(jaw_error.std())},
            scale={"clip_neutral_face_size_over_truth": float(size(neutral_vertices(model, fit.shape)[face_rows])
                                                              / size(true_neutral[face_rows])),
                   "posed_face_size_error_mean": float(posed_size_error.mean()),
                   "posed_face_size_error_correlation_with_depth_error":
                       float(np.corrcoef(posed_size_error, depth_error)[0, 1]),
                   "posed_face_size_error_correlation_with_jaw_error":
                       float(np.corrcoef(posed_size_error, jaw_error)[0, 1]),
                   "mean_distance_over_true_distance": float((tracked.mean(1)[:, 2] / truth.mean(1)[:, 2]).mean())},
            camera_space_vertex_error_after_centring_mm=float(
                1000 * np.linalg.norm(centred(tracked) - centred(truth), axis=-1).mean()),
            fit_seconds=fit_s, fit_cpu_seconds_all_threads=cpu,
            camera_space_vertex_error_mm={"tracked": float(1000 * np.linalg.norm(tracked - truth, axis=-1).mean()),
                                          "independent": float(1000 * np.linalg.norm(ind_v - truth, axis=-1).mean())},
            true_vertex_accel_mm=1000 * accel(truth, np.ones(frames, bool)),
            identity_error_mm={
                "clip_shape": identity_error_mm(model, fit.shape, true_neutral, face_rows),
                "independent_median": float(np.median([identity_error_mm(model, s, true_neutral, face_rows)
                                                       for s in ind.shape[::10]])),
                "mean_head": identity_error_mm(model, np.zeros_like(seq.shape), true_neutral, face_rows)})
        out.append(metrics)
        print("synthetic", seed, json.dumps(metrics), flush=True)
    return out


def bench_views(model, seeds):
    face_rows = np.asarray(model.landmarks.all_vertex_ids())
    table = {}
    for n in (1, 2, 3, 5, 7):
        errs, mean_head, independent = [], [], []
        for seed in range(seeds):
            yaws = np.linspace(-40, 40, n) if n > 1 else [0.0]
            views = synthetic_views(model, yaws, np.random.default_rng(seed), noise_px=1.0)
            padded = stack_targets([jax.tree.map(lambda a, i=i: a[i], views.targets) for i in range(n)], 8)
            result = fit_same_person(model, padded)  # one batch size for every n: one compilation
            truth = neutral_vertices(model, views.shape)
            error = lambda s: identity_error_mm(model, s, truth, face_rows)  # noqa: E731
            errs.append(error(result.shape))
            mean_head.append(error(np.zeros_like(views.shape)))
            independent.append(float(np.median([error(s) for s in result.independent_shapes[:n]])))
        table[n] = {"joint_mm": float(np.median(errs)), "mean_head_mm": float(np.median(mean_head)),
                    "independent_per_image_mm": float(np.median(independent)),
                    "joint_over_mean_head": float(np.median(np.array(errs) / np.array(mean_head)))}
        print("views", n, table[n], flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parts", default="synthetic,real,views")
    parser.add_argument("--overlay-frames", type=int, default=150)
    args = parser.parse_args()
    config = TrackConfig()
    model = load_flame(n_shape=config.n_shape, n_expression=config.n_expression)
    load = os.getloadavg()
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
                         f"{load[0]:.1f} at start (shared machine)", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "model": f"{config.n_shape} shape / {config.n_expression} expression components",
              "config": {"chunk_frames": config.chunk_frames, "chunk_overlap": config.chunk_overlap,
                         "identity_frames": config.identity_frames, "motion_steps": config.motion.stage.steps,
                         "identity_steps": config.identity.stage.steps, "init_rigid_steps": config.init.rigid.steps,
                         "temporal": dataclasses.asdict(config.temporal)}}
    runs = {"synthetic": lambda: bench_synthetic(model, config, args.frames, args.seeds),
            "real": lambda: bench_real(model, config, args.frames, args.clips, Path("/tmp/bench_track_png"),
                                       args.overlay_frames),
            "same_person_views": lambda: bench_views(model, args.seeds * 2)}
    for part in args.parts.split(","):  # each part is saved as soon as it is done
        name = "same_person_views" if part == "views" else part
        report[name] = runs[name]()
        report["load_average_end"] = os.getloadavg()[0]
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "track.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        previous.update(report)
        path.write_text(json.dumps(previous, indent=1))
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
