"""The video tracker's identity with 3D truth: rendered clips of turning heads -> ``track_video`` -> NoW error.

Subjects: ``bench_identity``'s (the two shared real heads and sampled model heads, same seed, albedos and scoring).
Each gets one clip: ``--frames`` frames of the head turning once from side to side (yaw ``±--yaw`` as a sine, pitch
±10°, roll ±3°; sampled heads also talk: smooth expression and jaw waves), one SH light and one background for the
whole clip, rendered at 512² as a frame folder. ``flamejax.track.track_video`` tracks it in photometric mode
(``TrackConfig(photometric=PhotometricTrackConfig())``: MediaPipe, landmark tracking, then the keyframes' joint
photometric stage), which gives both identities scored here: the landmark tracking's (``landmark_mode_shape``, the
identity of landmark mode) and the keyframes' (``shape``). The unfitted mean head is scored beside them.

``--priors``: landmark mode only, with the tracker's identity prior (one photograph's per identity frame,
``SAME_PERSON``'s) and with the joint stage's weaker one it had before; the clip identity and the inner-51 NME over
the face box against the renders' true projected points and against MediaPipe's. ``--turned``: landmark mode with
and without what frames MediaPipe sees turned past about 45° get besides the tracking look, the silhouette's profile
(``TrackConfig.profile``) and FaceMesh's look at the mirror image (``TrackConfig.mirror_check``), meant for clips
that turn past 50° (``--yaw 70``): the NME also at the frames of |yaw| >= 50. Both also report how well the
tracker's per-frame confidence (``tracking.npz`` ``confidence``) ranks the frames by their NME against the truth.

    python3 -m benchmarks.bench_track_identity [--frames 36] [--yaw 40] [--sampled-heads 6] [--pictures DIR]
    python3 -m benchmarks.bench_track_identity --priors
    python3 -m benchmarks.bench_track_identity --turned --yaw 70
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _scans
from benchmarks._common import (RESULTS_DIR, rank_correlation, result, save_and_report, separation_auc, shared_photos,
                                table)
from benchmarks.bench_identity import (N_EXPRESSION, N_SHAPE, SEED, SIZE, identity_error_mm, make_subjects,
                                       mean_head_medians, nme_face_box, now_scorer, render_views)
from benchmarks.bench_track import save_overlay_frames
from flamejax.camera import yaw_pitch_roll
from flamejax.fit import AMBIENT_SH
from flamejax.flame import load_flame
from flamejax.render import load_uv_layout
from flamejax.track import JointConfig, PhotometricTrackConfig, TrackConfig, track_video
from flamejax.track._joint import JOINT_STAGE

NAME = "track_identity"
TITLE = "The video tracker's identity on rendered clips with 3D truth (track_video, NoW scan-to-mesh)"
CLIPS = Path("/tmp/flamejax_track_identity")


def clip_plan(h_index: int, head, frames: int, yaw_deg: float, rng: np.random.Generator) -> list[dict]:
    """One clip of subject ``h_index``: ``bench_identity.render_views``' view entries with one light and one
    background for all frames."""
    t = np.arange(frames) / frames
    phase = rng.uniform(0, 2 * np.pi, 3)
    light = _scans.random_light(rng, AMBIENT_SH)
    back = _scans.background(shared_photos(), rng, SIZE)
    waves = rng.uniform(0, 2 * np.pi, (2, N_EXPRESSION))
    plan = []
    for k in range(frames):
        angles = (yaw_deg * np.sin(2 * np.pi * t[k]), 10.0 * np.sin(4 * np.pi * t[k] + phase[0]),
                  3.0 * np.sin(2 * np.pi * t[k] + phase[1]))
        expression, jaw = np.zeros(N_EXPRESSION, np.float32), 0.0
        if head.kind == "flame":
            expression = (0.8 * np.sin(2 * np.pi * (1 + np.arange(N_EXPRESSION) % 3) * t[k] + waves[0])
                          ).astype(np.float32)
            jaw = float(0.1 + 0.08 * np.sin(6 * np.pi * t[k] + phase[2]))
        plan.append(dict(head=h_index, angles=angles, nominal_yaw=angles[0], expression=expression, jaw=jaw,
                         distance=1.0, light=light, background=back))
    return plan


def rendered_clips(frames: int, yaw_deg: float, sampled_heads: int):
    """The model, the subjects and their scorers (``bench_identity``'s), then per subject ``(index, head, plan,
    frame folder, true projected 51 points per frame)``."""
    rng = np.random.default_rng(SEED)  # bench_identity's subjects and albedos: the same draws
    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    heads, mean_v, mean_l51, face_ids = make_subjects(model, rng, sampled_heads)
    now_of, shape_now = now_scorer(model, heads, mean_v, face_ids)
    mean_now = mean_head_medians(now_of, mean_v, mean_l51, len(heads))
    clip_rng = np.random.default_rng(SEED + 1)
    uv = load_uv_layout()

    def clips():
        for h_index, head in enumerate(heads):
            plan = clip_plan(h_index, head, frames, yaw_deg, clip_rng)
            pictures, truths = render_views(model, heads, plan, uv, shared_photos(), clip_rng)
            folder = CLIPS / head.name / "frames"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for k, picture in enumerate(pictures):
                cv2.imwrite(str(folder / f"{k:05d}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            yield h_index, head, plan, folder, truths

    return model, heads, face_ids, shape_now, mean_now, clips()


def run(frames: int, yaw_deg: float, sampled_heads: int, pictures_dir: Path | None, keyframes: int) -> dict:
    photometric = PhotometricTrackConfig(keyframes=keyframes)
    model, heads, face_ids, shape_now, mean_now, clips = rendered_clips(frames, yaw_deg, sampled_heads)
    config = TrackConfig(n_shape=N_SHAPE, n_expression=N_EXPRESSION, photometric=photometric)
    rows, clock = [], time.perf_counter()
    for h_index, head, plan, folder, _ in clips:
        start = time.perf_counter()
        tracked = track_video(folder, CLIPS / head.name / "out", config, model, overlay=pictures_dir is not None)
        seconds = time.perf_counter() - start
        fit, extra = tracked.fit, tracked.fit.photometric
        fitted_yaw = np.asarray(jax.vmap(yaw_pitch_roll)(fit.frames.cameras(jnp.asarray(fit.fov_deg))))[:, 0]
        row = dict(subject=head.name, kind=head.kind, frames=frames, seconds=seconds,
                   status_ok=int(sum(s == "ok" for s in fit.status)),
                   keyframe_true_yaws=[float(plan[int(tracked.frame_indices[r])]["angles"][0])
                                       for r in extra.keyframes],
                   keyframe_fitted_yaws=[float(fitted_yaw[r]) for r in extra.keyframes],
                   nme_median=float(np.nanmedian(fit.nme)), mean_head=mean_now[h_index],
                   landmark=float(np.median(shape_now(h_index, extra.landmark_shape))),
                   photometric=float(np.median(shape_now(h_index, fit.shape))))
        if head.kind != "raw":
            for key, shape in (("landmark", extra.landmark_shape), ("photometric", fit.shape),
                               ("mean_head", np.zeros_like(fit.shape))):
                row[f"{key}_v2v"] = identity_error_mm(model, shape, head.vertices, face_ids)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if pictures_dir is not None:
            save_overlay_frames(tracked.out_dir / "overlay.mp4", frames, pictures_dir, head.name)
    body = [[r["subject"], r["kind"], r["status_ok"], 100 * r["nme_median"],
             " ".join(f"{y:+.0f}" for y in r["keyframe_true_yaws"]), r["mean_head"], r["landmark"],
             r["photometric"], r["landmark"] / r["mean_head"], r["photometric"] / r["mean_head"]] for r in rows]
    summary = [["median over subjects", None, None, None, None,
                *(float(np.median([r[k] for r in rows])) for k in ("mean_head", "landmark", "photometric")),
                *(float(np.median([r[k] / r["mean_head"] for r in rows])) for k in ("landmark", "photometric"))]]
    mean_med = float(np.median([r["mean_head"] for r in rows]))
    ratios = {k: float(np.median([r[k] for r in rows])) / mean_med for k in ("landmark", "photometric")}
    tables = [table(f"Identity of one tracked clip per subject ({frames} frames, yaw ±{yaw_deg:g}°): NoW median, mm "
                    f"(ratio of medians to the mean head: landmark {ratios['landmark']:.2f}x, photometric "
                    f"{ratios['photometric']:.2f}x)",
                    ["subject", "kind", "frames ok", "NME median %", "keyframes' true yaws °", "mean head (unfitted)",
                     "landmark tracking", "photometric keyframes", "landmark / mean head",
                     "photometric / mean head"], body + summary)]
    v2v = [r for r in rows if "mean_head_v2v" in r]
    if v2v:
        tables.append(table("Vertex to vertex (FLAME topology), mean mm after alignment",
                            ["subject", "mean head", "landmark tracking", "photometric keyframes"],
                            [[r["subject"], r["mean_head_v2v"], r["landmark_v2v"], r["photometric_v2v"]]
                             for r in v2v]))
    settings = {"subjects": f"{len(heads)} ({', '.join(h.name for h in heads)})", "frames per clip": frames,
                "model": f"test model, {N_SHAPE} identity / {N_EXPRESSION} expression",
                "config": f"TrackConfig(photometric=PhotometricTrackConfig(keyframes={photometric.keyframes}))",
                "image": f"{SIZE}² render, FOV 20°",
                "total s": round(time.perf_counter() - clock, 1)}
    note = ("NoW as in bench_identity (similarity on 7 landmarks, rigid ICP, truth face crop to fitted neutral "
            "surface). landmark tracking: the identity of track_landmarks (landmark mode's identity, and photometric "
            "mode's before the keyframes); photometric keyframes: the clip's identity after the keyframes' joint "
            "photometric stage (fit_photometric_same_person, one identity and one albedo).")
    return result(NAME, TITLE, "full", settings, tables, data={"rows": rows, "ratios": ratios}, note=note)


HARD_YAW = 50.0
"""Frames whose true |yaw| is at least this are the hard poses of ``--turned``'s clips."""


def run_landmark_variants(frames: int, yaw_deg: float, sampled_heads: int, configs: dict[str, TrackConfig],
                          name: str, title: str, caption: str) -> dict:
    """Landmark mode with each of ``configs`` on the same clips: the clip identity (NoW) and the inner-51 NME over
    the face box against the renders' true projected points (all frames, and frames at |yaw| >= ``HARD_YAW``)
    and against MediaPipe's."""
    model, heads, _, shape_now, mean_now, clips = rendered_clips(frames, yaw_deg, sampled_heads)
    rows = []
    for h_index, head, plan, folder, truths in clips:
        row = dict(subject=head.name, mean_head=mean_now[h_index])
        for k, (label, config) in enumerate(configs.items()):
            tracked = track_video(folder, folder.parent / f"landmark_{k}", config, model, overlay=False)
            fitted = np.load(tracked.out_dir / "tracking.npz")["landmarks_fitted"]
            rendered = [int(frame) for frame in tracked.frame_indices]
            nme = np.array([nme_face_box(fitted[i][17:], truths[frame]) for i, frame in enumerate(rendered)])
            hard = np.array([abs(plan[frame]["angles"][0]) >= HARD_YAW for frame in rendered])
            row[label] = dict(now=float(np.median(shape_now(h_index, tracked.fit.shape))),
                              nme_truth=float(np.median(nme)), nme_mediapipe=float(np.nanmedian(tracked.fit.nme)),
                              hard_frames=int(hard.sum()),
                              nme_hard=float(np.median(nme[hard])) if hard.any() else None,
                              nme_hard_max=float(nme[hard].max()) if hard.any() else None,
                              hard_over_8=int(np.sum(nme[hard] > 0.08)),
                              frame_nme=nme.tolist(), frame_confidence=tracked.fit.confidence.tolist())
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [("now", "NoW median mm", 1), ("nme_truth", "NME vs true points %", 100),
            ("nme_mediapipe", "NME vs MediaPipe %", 100)]
    if any(r[label]["hard_frames"] for r in rows for label in configs):
        keys += [("nme_hard", f"NME vs true points at |yaw| >= {HARD_YAW:g}, median %", 100),
                 ("nme_hard_max", f"NME at |yaw| >= {HARD_YAW:g}, worst %", 100),
                 ("hard_over_8", f"frames at |yaw| >= {HARD_YAW:g} over 8 %", 1)]

    def summary(label: str, key: str) -> float:
        values = [r[label][key] for r in rows if r[label][key] is not None]
        return float(np.sum(values) if key == "hard_over_8" else np.median(values))

    body = [[r["subject"], r["mean_head"], *(None if r[label][key] is None else r[label][key] * times
                                             for label in configs for key, _, times in keys)] for r in rows]
    body.append(["median over subjects (frames over 8 %: sum)", float(np.median([r["mean_head"] for r in rows])),
                 *(summary(label, key) * times for label in configs for key, _, times in keys)])
    columns = [f"{label}: {what}" for label in configs for _, what, _ in keys]
    tables = [table(f"{caption} ({frames} frames, yaw ±{yaw_deg:g}°)", ["subject", "mean head NoW mm", *columns],
                    body), _confidence_table(rows, list(configs))]
    settings = {"subjects": f"{len(heads)} ({', '.join(h.name for h in heads)})", "frames per clip": frames,
                "model": f"test model, {N_SHAPE} identity / {N_EXPRESSION} expression"}
    note = ("NME: inner 51 points over sqrt(w h) of the true points' box, median over frames; against the renders' "
            "true projected points (AFLW2000-3D convention: hidden points where they are) and against MediaPipe's "
            "(the tracker's targets). Frames the tracker fills from their neighbours (lost, hard pose) count with "
            "their filled values.")
    return result(name, title, "full", settings, tables, data={"rows": rows}, note=note)


def _confidence_table(rows: list[dict], labels: list[str]) -> dict:
    """How well each variant's per-frame confidence (``tracking.npz`` ``confidence``) tells its frames' NME against
    the true points, every frame of every clip pooled (frames without one left out)."""
    body = []
    for label in labels:
        nme = np.concatenate([r[label]["frame_nme"] for r in rows])
        confidence = np.concatenate([r[label]["frame_confidence"] for r in rows])
        seen = np.isfinite(confidence)
        nme, confidence = nme[seen], confidence[seen]
        body.append([label, int(seen.sum()), rank_correlation(confidence, nme),
                     *(value for limit in (0.05, 0.08)
                       for value in (int(np.sum(nme > limit)), separation_auc(confidence, nme > limit))),
                     float(np.median(confidence))])
    return table("Per-frame confidence against the frame's NME vs true points (all clips' frames pooled)",
                 ["variant", "frames", "rank correlation (confidence, NME)", "frames over 5 %",
                  "AUC: confidence lower over 5 %", "frames over 8 %", "AUC: confidence lower over 8 %",
                  "confidence median"], body)


def run_priors(frames: int, yaw_deg: float, sampled_heads: int) -> dict:
    """``--priors``: landmark mode with the tracker's identity prior and with the joint stage's (module docstring)."""
    default = TrackConfig(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    configs = {"default (SAME_PERSON's prior)": default,
               "joint stage's prior (before)": default.replace(
                   identity=JointConfig(dataclasses.replace(JOINT_STAGE, steps=default.identity.stage.steps)))}
    return run_landmark_variants(frames, yaw_deg, sampled_heads, configs, f"{NAME}_priors",
                                 "The video tracker's identity prior on rendered clips (landmark mode)",
                                 "Landmark mode, the tracker's identity prior against the joint stage's")


def run_turned(frames: int, yaw_deg: float, sampled_heads: int) -> dict:
    """``--turned``: landmark mode with and without the turned frames' second looks (profile, mirror look)."""
    default = TrackConfig(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    configs = {"default": default, "no mirror look": default.replace(mirror_check=False),
               "neither (before)": default.replace(mirror_check=False, profile=False)}
    return run_landmark_variants(frames, yaw_deg, sampled_heads, configs, f"{NAME}_turned",
                                 "The video tracker at hard poses: turned frames' profile and mirror look (landmark "
                                 "mode)", "Landmark mode with and without the turned frames' second looks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--yaw", type=float, default=40.0)
    parser.add_argument("--sampled-heads", type=int, default=6)
    parser.add_argument("--pictures", type=Path, default=None, help="folder for overlay frames (PNG)")
    parser.add_argument("--keyframes", type=int, default=PhotometricTrackConfig().keyframes)
    parser.add_argument("--priors", action="store_true", help="landmark mode with both identity priors instead")
    parser.add_argument("--turned", action="store_true",
                        help="landmark mode with and without the turned frames' profile and mirror look instead "
                             "(use with --yaw 70)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/NAME.json")
    args = parser.parse_args()
    if args.priors:
        payload = run_priors(args.frames, args.yaw, args.sampled_heads)
    elif args.turned:
        payload = run_turned(args.frames, args.yaw, args.sampled_heads)
    else:
        payload = run(args.frames, args.yaw, args.sampled_heads, args.pictures, args.keyframes)
    save_and_report(payload, args.out or RESULTS_DIR / f"{payload['benchmark']}.json")


if __name__ == "__main__":
    main()
