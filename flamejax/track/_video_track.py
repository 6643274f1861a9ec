"""``track_video``: a video (or frame folder) to per-frame FLAME parameters, cameras and exports.

Conventions of every output:

* **World** is FLAME's head space (metres; +x the subject's left, +y up, +z out of the face). The head stays at
  the origin with zero head pose, neck and translation; all rigid motion is the camera's, per frame.
* **Crop**: the clip has one fixed square crop (centre = median face centre, side = ``crop_scale`` x the median
  face box) that defines the shared pinhole camera (``fov_deg`` across the crop side, principal point at its
  centre). Landmark targets are fitted in the NDC of this crop; every pixel output is in the upright frame.
* ``tracking.npz`` / ``tracking.json`` (per frame, leading axis = frames):
  ``R``, ``t``: world to camera in **OpenCV** convention (x right, y down, z forward): ``x_cam = R X + t``;
  ``K``: OpenCV intrinsics in frame pixels with pixel centres at integers (``cx = crop centre x - 0.5``), so
  ``u ~ K x_cam``; ``yaw_pitch_roll``: degrees, as :func:`flamejax.camera.yaw_pitch_roll` (R = Ry Rx Rz in
  flamejax's OpenGL-like camera); ``expression``, ``jaw_pose``, ``eyes_pose`` (left eye then right eye,
  axis-angle), ``shape`` (one per clip); ``landmarks_target`` / ``landmarks_fitted``: 68 points in frame
  pixels (pixel centres at half-integers, flamejax's convention; NaN where a frame had no face); ``nme``
  (inner 51 points against the frame's targets, over the outer-eye-corner distance) and ``confidence`` (in
  [0, 1], as a photograph's fit has it: low where the tracked head explains the frame's landmarks poorly or
  MediaPipe's two looks at a turned face disagree; NaN where a frame had no face);
  ``status`` and ``status_reason`` per frame (see :data:`flamejax.track.STATUS_REASONS`).
* Photometric mode (``TrackConfig.photometric``, :mod:`flamejax.track._photometric_track`) adds to both:
  ``light_sh`` (per frame, 9 x RGB SH coefficients of flamejax's renderer), ``photometric_error_start`` /
  ``photometric_error`` (masked L1 over the frame's crop before / after its refinement, NaN where not refined),
  ``photometric_refined``, ``keyframes`` (rows), ``landmark_mode_nme``, ``landmark_mode_shape`` (the landmark
  tracking's identity; ``shape`` is the keyframes' photometric one); ``mode`` is ``"photometric"`` in the json
  (else ``"landmark"``); ``OUT/texture.png``: the clip's one albedo in FLAME's UV layout.
* ``overlay.mp4``: the shaded mesh (photometric mode: the textured, lit head) and the target (green) and fitted
  (red) landmarks over the upright frames.
* ``export/vhap``: NeRF ``transforms.json`` (per frame ``transform_matrix`` = OpenGL camera-to-world, i.e.
  camera looking down -z with +y up, in the FLAME head space; ``fl_x``, ``fl_y``, ``cx``, ``cy`` in frame pixels
  with pixel centres at half-integers; ``w``, ``h``), ``images/NNNNN_00.png`` frames and
  ``flame_param/NNNNN.npz`` with ``translation``, ``rotation`` (zero: the camera moves), ``neck_pose``,
  ``jaw_pose``, ``eyes_pose`` (1, 6), ``shape`` (n_shape,), ``expr`` (1, n_exp), plus ``canonical_flame_param.npz``.
* ``export/fht``: one npz per frame with flame-head-tracker's keys: ``shape``, ``exp``, ``head_pose``,
  ``neck_pose`` (zero), ``jaw_pose``, ``eye_pose`` (6), ``cam`` (6: flamejax camera axis-angle + translation),
  ``fov`` (degrees), ``K`` (3x3 OpenCV, frame pixels).
* ``export/meshes/NNNNN.obj``: posed FLAME mesh per frame in the head space.
* ``checkpoints/``: landmarks, warm start, identity and every chunk, reused by ``resume=True``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Callable, Iterable, Iterator

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, UInt8

from flamejax.camera import camera_to_world_opengl, opencv_extrinsics
from flamejax.perception._video import Frame, FrameSource, VideoLandmarker, VideoReadError
from flamejax.track._core import (PROFILE_SAMPLES, Camera, FaceLandmarks, LandmarkTargets, RasterConfig, export_mesh,
                                  flame_forward, load_flame, person_in_context, points_box, profile_edge,
                                  profile_turn_weight, redetect_mirrored, render_mesh, shade_for_display, to_68,
                                  two_look_targets, warp_image, write_json, write_npz, yaw_pitch_roll)
from flamejax.track._joint import FrameStates
from flamejax.track._photometric_track import photometric_arrays, refine_photometric, video_pictures
from flamejax.track._sequence import STATUS_REASONS, SequenceFit, TrackConfig, track_landmarks

EXPORTS = ("vhap", "fht", "obj-sequence")
_OVERLAY_MARGIN = 1.6
TURNED_CROP = 256
"""Side in pixels of the square crop around a turned face (twice its landmarks' extent) on which a turned frame
gets its second looks (:func:`turned_look`), about as a photograph's fit crop."""


class NoFaceInVideoError(VideoReadError):
    """MediaPipe found no face in any frame."""


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """What ``track_video`` wrote and computed (arrays: leading axis = frames)."""

    out_dir: Path
    frame_indices: np.ndarray
    times_s: np.ndarray
    fps: float
    fit: SequenceFit
    crop: tuple[float, float, float]
    """x0, y0, side of the clip's square crop in frame pixels."""
    frame_size: tuple[int, int]
    """(height, width) of the upright frames."""
    notes: tuple[str, ...]
    timings_s: dict
    """Seconds spent per step: decode+landmarks, fit, writing, overlay, exports."""


def _crop_of(points: list[np.ndarray | None], scale: float) -> tuple[float, float, float]:
    boxes = np.array([np.concatenate([p.min(0), p.max(0)]) for p in points if p is not None])
    centre = np.median((boxes[:, :2] + boxes[:, 2:]) / 2, axis=0)
    side = scale * float(np.median(np.max(boxes[:, 2:] - boxes[:, :2], axis=1)))
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


@dataclasses.dataclass(frozen=True)
class TurnedLook:
    """What a frame whose face MediaPipe sees strongly turned gets beside its tracking look (frame pixels), as a
    photograph gets in preprocessing: the silhouette's profile and FaceMesh's look at the mirror image."""

    profile: np.ndarray
    """(24, 2) points of :func:`flamejax.fit.profile_edge`; zero weights where none was found."""
    profile_weight: np.ndarray | None
    """(24,); None: no profile term for this clip (no frame of it has a profile point)."""
    mirrored478: np.ndarray | None
    """(478, 2) FaceMesh's points on the mirrored crop, mapped back and renumbered; None: not looked or not found."""

    @staticmethod
    def nothing() -> "TurnedLook":
        return TurnedLook(np.zeros((PROFILE_SAMPLES, 2), np.float32), np.zeros(PROFILE_SAMPLES, np.float32), None)


def turned_look(image: UInt8[np.ndarray, "H W 3"], points478: Float[np.ndarray, "478 2"], profile: bool = True,
                mirror: bool = True) -> TurnedLook:
    """A frame's :class:`TurnedLook`: on a :data:`TURNED_CROP` square around the face (twice its points' extent),
    MediaPipe's selfie segmentation (:func:`flamejax.perception.person_in_context`: again on a crop twice as wide
    where it takes the whole crop for the person) and :func:`flamejax.fit.profile_edge` (``profile``) and FaceMesh
    on the mirror image (``mirror``; :func:`flamejax.perception.redetect_mirrored`). A face turned less than the
    profile's gate (:func:`flamejax.fit.profile_turn_weight` 0, about 45°) gets neither, so frontal frames cost
    nothing."""
    if not (profile or mirror) or profile_turn_weight(points478) == 0.0:
        return TurnedLook.nothing()
    low, high = points478.min(0), points478.max(0)
    scale = TURNED_CROP / (2.0 * float(np.max(high - low)))
    shift = TURNED_CROP / 2 - scale * (low + high) / 2  # crop = scale * frame + shift
    to_crop = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
    crop = warp_image(image, to_crop, TURNED_CROP, border=None)
    in_crop = points478 * scale + shift
    look = TurnedLook.nothing()
    if profile:
        person, _ = person_in_context(image, to_crop, TURNED_CROP, TURNED_CROP, crop)
        edges, weight = profile_edge(person, in_crop)
        look = dataclasses.replace(look, profile=((edges - shift) / scale).astype(np.float32), profile_weight=weight)
    if mirror:
        expected = FaceLandmarks(in_crop.astype(np.float32), np.zeros(len(in_crop), np.float32), 1.0, 1, 0,
                                 points_box(in_crop))
        found = redetect_mirrored(crop, expected)
        if found is not None:
            look = dataclasses.replace(look, mirrored478=((found.points - shift) / scale).astype(np.float32))
    return look


def clip_looks(looks: list[TurnedLook | None]) -> list[TurnedLook | None]:
    """``looks`` as the clip's targets take them: where no frame has a profile point, none carries a profile term,
    so a clip that never turns far runs the same compiled program as without :attr:`TrackConfig.profile`."""
    if any(look is not None and look.profile_weight.any() for look in looks):
        return looks
    return [None if look is None else dataclasses.replace(look, profile_weight=None) for look in looks]


def _targets(points: np.ndarray | None, crop, look: TurnedLook | None) -> LandmarkTargets | None:
    """A frame's targets in NDC of the clip's crop; ``look``: None (one look, no profile term) or the frame's
    :class:`TurnedLook` (two looks where it has a mirrored one)."""
    if points is None:
        return None
    x0, y0, side = crop
    corner = np.array([x0, y0], np.float32)
    profile = None if look is None or look.profile_weight is None else (look.profile - corner, look.profile_weight)
    mirrored = None if look is None or look.mirrored478 is None else look.mirrored478 - corner
    return two_look_targets(points - corner, mirrored, side, profile=profile)


def _prefetched(frames: Iterable[Frame], depth: int = 8) -> Iterator[Frame]:
    """``frames`` decoded in a background thread, ``depth`` ahead, so decoding overlaps the landmark detector
    (both release the GIL). An exception while decoding is raised here, at the frame it happened."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for frame in frames:
                if stop.is_set():
                    return
                queue.put(frame)
            queue.put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            queue.put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                worker.join(0.01)


def saved_landmarks(checkpoint: Path) -> dict[int, tuple[np.ndarray | None, TurnedLook | None]]:
    """What :func:`detect_sequence` saved to ``checkpoint``: per frame index, MediaPipe's points (None: no face)
    and the frame's :class:`TurnedLook` (None: none taken)."""
    with np.load(checkpoint) as data:
        saved = {name: data[name] for name in data.files}  # each read of an npz entry decompresses it again
    looked = saved.get("looked", np.zeros(len(saved["indices"]), bool))
    done = {}
    for k, (index, found, pts) in enumerate(zip(saved["indices"], saved["found"], saved["points"])):
        look = TurnedLook(saved["profile"][k], saved["profile_weight"][k],
                          saved["mirrored"][k] if saved["mirrored_found"][k] else None) if looked[k] else None
        done[int(index)] = (pts if found else None, look)
    return done


def detect_sequence(source: FrameSource, max_side: int, checkpoint: Path | None, progress: Callable[[str], None],
                    profile: bool = True, mirror: bool = True, face_index: int | None = None
                    ) -> tuple[list[int], list[float], list[np.ndarray | None], list[TurnedLook | None]]:
    """Frame indices, times, MediaPipe points and (with ``profile`` or ``mirror``) the :class:`TurnedLook` of
    every frame; saved to ``checkpoint`` as it goes (also on an interruption), and frames already there are not
    detected again."""
    looking = profile or mirror
    done = saved_landmarks(checkpoint) if checkpoint is not None and checkpoint.is_file() else {}
    indices, times, points, looks = [], [], [], []
    try:
        with VideoLandmarker(max_side, face_index=face_index) as landmarker:
            for frame in _prefetched(source):
                if frame.index in done:
                    pts, look = done[frame.index]
                    landmarker.follow(pts)
                else:
                    pts, look = landmarker(frame.image), None
                if looking and pts is not None and look is None:
                    look = turned_look(frame.image, pts, profile, mirror)
                elif look is not None:  # from a run with other switches: keep only what this one asks for
                    look = dataclasses.replace(look, profile_weight=look.profile_weight * profile,
                                               mirrored478=look.mirrored478 if mirror else None)
                indices.append(frame.index)
                times.append(frame.time_s)
                points.append(pts)
                looks.append(look if looking and pts is not None else None)
                if len(indices) % 100 == 0:
                    progress(f"landmarks: {len(indices)} frames")
            if landmarker.quarter_turns:
                source.notes.append(f"the face lies turned by about {90 * landmarker.quarter_turns} degrees; MediaPipe "
                                    "ran on the frames turned upright (the results are in the frames' own pixels)")
            if landmarker.jumps:
                source.notes.append(
                    f"MediaPipe's tracking took up another face than the clip's (the first one found) on "
                    f"{landmarker.jumps} frame(s); the clip's face was found again among all faces on "
                    f"{landmarker.found_again} of them, the others count as frames without it")
    finally:
        if checkpoint is not None and indices:
            found = np.array([p is not None for p in points])
            stacked = np.stack([p if p is not None else np.zeros((478, 2), np.float32) for p in points])
            filled = [look or TurnedLook.nothing() for look in looks]
            write_npz(checkpoint, indices=np.asarray(indices), found=found, points=stacked,
                      looked=np.array([look is not None for look in looks]),
                      profile=np.stack([look.profile for look in filled]),
                      profile_weight=np.stack([look.profile_weight for look in filled]),
                      mirrored_found=np.array([look.mirrored478 is not None for look in filled]),
                      mirrored=np.stack([look.mirrored478 if look.mirrored478 is not None
                                         else np.zeros((478, 2), np.float32) for look in filled]))
    return indices, times, points, looks


def _with_gaps(indices, times, points, looks, fps):
    """Insert the frames a folder's numbering skips (as missing), so time steps stay regular."""
    full = list(range(indices[0], indices[-1] + 1))
    by_index = dict(zip(indices, zip(times, points, looks)))
    missing = np.array([i not in by_index for i in full])
    times = [by_index[i][0] if i in by_index else i / fps for i in full]
    points = [by_index[i][1] if i in by_index else None for i in full]
    looks = [by_index[i][2] if i in by_index else None for i in full]
    return full, times, points, looks, missing


def cameras_opencv(frames: FrameStates, fov_deg: float, crop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame R (F,3,3), t (F,3) in OpenCV convention and the shared K (3,3) in frame pixels."""
    R, t = jax.vmap(opencv_extrinsics)(frames.cameras(jnp.asarray(fov_deg, jnp.float32)))
    x0, y0, side = crop
    f = 0.5 * side / np.tan(np.deg2rad(fov_deg) / 2)
    K = np.array([[f, 0, x0 + side / 2 - 0.5], [0, f, y0 + side / 2 - 0.5], [0, 0, 1.0]])
    return np.asarray(R, np.float64), np.asarray(t, np.float64), K


def _ndc_to_frame(ndc: np.ndarray, crop) -> np.ndarray:
    x0, y0, side = crop
    return (ndc + 1.0) * (side / 2.0) + np.array([x0, y0])


def track_video(source: str | Path, out_dir: str | Path, config: TrackConfig = TrackConfig(), model=None, *,
                start_s: float | None = None, end_s: float | None = None, fps: float | None = None,
                overlay: bool = True, exports: tuple[str, ...] = (), resume: bool = False,
                progress: Callable[[str], None] | None = None) -> TrackResult:
    """Track the face in a video or frame folder and write ``OUT/tracking.npz``, ``tracking.json``, the overlay
    video and the requested exports (conventions in this module's docstring).

    Raises:
      VideoReadError: the source cannot be read; NoFaceInVideoError: no frame shows a face;
      ValueError: an unknown export name.
    """
    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise ValueError(f"--export: unknown format(s) {', '.join(unknown)}; choose from {', '.join(EXPORTS)}")
    say = progress or (lambda message: None)
    if config.photometric is not None:
        from flamejax.fitter import find_uv_layout
        from flamejax.render import load_albedo_model

        uv_layout, albedo = find_uv_layout(required=True), load_albedo_model()
    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    if not resume and checkpoints.is_dir():
        for stale in checkpoints.glob("*.npz"):
            stale.unlink()
    timings = {}
    clock = time.perf_counter()
    frames = FrameSource(source, start_s, end_s, fps)
    indices, times, points, looks = detect_sequence(frames, config.detect_max_side, checkpoints / "landmarks.npz",
                                                    say, config.profile, config.mirror_check, config.face_index)
    if not indices:
        raise VideoReadError(f"{source}: no frame in the requested time range")
    missing = np.zeros(len(indices), bool)
    if frames.info.is_folder and fps is None:
        indices, times, points, looks, missing = _with_gaps(indices, times, points, looks, frames.info.fps)
        if missing.any():
            frames.notes.append(f"{int(missing.sum())} frame number(s) missing from the folder; filled from "
                                f"neighbouring frames")
    if all(p is None for p in points):
        raise NoFaceInVideoError(f"{source}: no face found in any of the {len(indices)} frames (MediaPipe)")
    timings["decode_landmarks"] = time.perf_counter() - clock
    crop = _crop_of(points, config.crop_scale)
    model = model if model is not None else load_flame(n_shape=config.n_shape, n_expression=config.n_expression)
    clock = time.perf_counter()
    targets = [_targets(p, crop, look) for p, look in zip(points, clip_looks(looks))]
    fit = track_landmarks(model, targets, config, missing, checkpoints, say)
    timings["fit"] = time.perf_counter() - clock
    if config.photometric is not None:
        clock = time.perf_counter()
        pictures = video_pictures(lambda: iter(FrameSource(source, start_s, end_s, fps)),
                                  {int(index): row for row, index in enumerate(indices)}, points, crop,
                                  config.photometric.image_size)
        fit = refine_photometric(model, uv_layout, fit, targets, pictures, config, albedo, checkpoints, say)
        timings["photometric"] = time.perf_counter() - clock
    result = TrackResult(out, np.asarray(indices), np.asarray(times), frames.info.fps if fps is None else fps, fit,
                         crop, (frames.info.height, frames.info.width), tuple(frames.notes), timings)
    clock = time.perf_counter()
    write_tracking(result, points)
    timings["write"] = time.perf_counter() - clock
    if overlay:
        clock = time.perf_counter()
        write_overlay(result, model, FrameSource(source, start_s, end_s, fps), points,
                      uv_layout=uv_layout if config.photometric is not None else None)
        timings["overlay"] = time.perf_counter() - clock
    if exports:
        clock = time.perf_counter()
        write_exports(result, model, exports, FrameSource(source, start_s, end_s, fps))
        timings["exports"] = time.perf_counter() - clock
    return result


def write_tracking(result: TrackResult, points: list[np.ndarray | None]) -> None:
    """``tracking.npz`` and ``tracking.json`` (see the module docstring)."""
    fit, crop = result.fit, result.crop
    R, t, K = cameras_opencv(fit.frames, fit.fov_deg, crop)
    angles = np.asarray(jax.vmap(yaw_pitch_roll)(fit.frames.cameras(jnp.asarray(fit.fov_deg, jnp.float32))))
    targets = np.stack([to_68(p) if p is not None else np.full((68, 2), np.nan, np.float32) for p in points])
    arrays = dict(
        fps=np.float64(result.fps), frame_indices=result.frame_indices, times_s=result.times_s, shape=fit.shape,
        fov_deg=np.float64(fit.fov_deg), expression=fit.frames.expression, jaw_pose=fit.frames.jaw,
        eyes_pose=fit.frames.eyes, R=R, t=t, K=np.broadcast_to(K, (len(R), 3, 3)), yaw_pitch_roll=angles,
        landmarks_target=targets, landmarks_fitted=_ndc_to_frame(fit.lmk68, crop), nme=fit.nme,
        confidence=fit.confidence, status=np.array(fit.status), crop_x0_y0_side=np.array(crop),
        frame_size_hw=np.array(result.frame_size),
        **photometric_arrays(fit, result.out_dir))
    write_npz(result.out_dir / "tracking.npz", **arrays)
    summary = {k: np.asarray(v).tolist() for k, v in arrays.items()}
    summary["status_reason"] = [STATUS_REASONS[s] for s in fit.status]
    summary["notes"] = list(result.notes)
    summary["mode"] = "landmark" if fit.photometric is None else "photometric"
    summary["conventions"] = ("world = FLAME head space (m); R, t: world->camera, OpenCV axes (x right, y down, "
                              "z forward); K: frame pixels, pixel centres at integers; landmarks: frame pixels, "
                              "pixel centres at half-integers; yaw_pitch_roll: degrees (flamejax.camera)")
    write_json(result.out_dir / "tracking.json", _finite_json(summary))


def _finite_json(value):
    """NaN is not JSON: replace it by None."""
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _posed_vertices(model, fit: SequenceFit, rows: np.ndarray) -> np.ndarray:
    params = fit.frames.flame_params(jnp.asarray(fit.shape))
    picked = jax.tree.map(lambda a: jnp.asarray(a)[rows], params)
    return np.asarray(jax.jit(jax.vmap(lambda p: flame_forward(model, p).vertices))(picked))


@jax.jit
def _shade_batch(vertices, faces, rotation, translation, fov, size_ref):
    config = RasterConfig(image_size=size_ref.shape[0], faces_per_tile=512)
    return jax.vmap(lambda v, r, t: shade_for_display(v, faces, Camera(r, t, fov), config))(vertices, rotation,
                                                                                            translation)


@jax.jit
def _texture_batch(vertices, faces, rotation, translation, fov, uv_layout, texture, light, size_ref):
    config = RasterConfig(image_size=size_ref.shape[0], faces_per_tile=512)

    def one(v, r, t, sh):
        out = render_mesh(v, faces, Camera(r, t, fov), uv_layout, texture, sh, config)
        return jnp.concatenate([out.image, out.alpha[..., None]], axis=-1)

    return jax.vmap(one)(vertices, rotation, translation, light)


def write_overlay(result: TrackResult, model, frames: FrameSource, points: list[np.ndarray | None],
                  render_size: int = 256, batch: int = 16, uv_layout=None) -> None:
    """``overlay.mp4``: mesh rendered in the crop, warped into the frame and blended, plus landmarks; with
    ``uv_layout`` and a photometric fit, the head textured with the clip's albedo and each frame's light."""
    fit, (x0, y0, side) = result.fit, result.crop
    height, width = result.frame_size
    row_of = {int(index): row for row, index in enumerate(result.frame_indices)}
    # The render covers the crop enlarged by _OVERLAY_MARGIN about its centre, so the whole head shows.
    render_side = side * _OVERLAY_MARGIN
    rx0, ry0 = x0 + side / 2 - render_side / 2, y0 + side / 2 - render_side / 2
    render_fov = np.rad2deg(2 * np.arctan(_OVERLAY_MARGIN * np.tan(np.deg2rad(fit.fov_deg) / 2)))
    to_frame = np.array([[render_side / render_size, 0, rx0], [0, render_side / render_size, ry0]], np.float64)
    fitted = _ndc_to_frame(fit.lmk68, result.crop)
    path = result.out_dir / "overlay.mp4"
    tmp = path.with_name(".overlay.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(result.fps), (width, height))
    if not writer.isOpened():
        raise VideoReadError(f"{path}: OpenCV cannot write an MP4 video here")
    faces = jnp.asarray(model.faces)
    size_ref = jnp.zeros((render_size,))
    textured = uv_layout is not None and fit.photometric is not None
    pending: list = []

    def flush():
        rows = np.array([row for row, _ in pending])
        rows_padded = np.concatenate([rows, np.repeat(rows[-1:], batch - len(rows))])
        verts = _posed_vertices(model, fit, rows_padded)
        pose = (jnp.asarray(verts), faces, jnp.asarray(fit.frames.rotation[rows_padded]),
                jnp.asarray(fit.frames.translation[rows_padded]), jnp.asarray(render_fov, jnp.float32))
        if textured:
            rgba = np.asarray(_texture_batch(*pose, uv_layout, jnp.asarray(fit.photometric.texture),
                                             jnp.asarray(fit.photometric.light[rows_padded]), size_ref))
        else:
            rgba = np.asarray(_shade_batch(*pose, size_ref))
        for (row, image), shaded in zip(pending, rgba):
            layer = warp_image(np.ascontiguousarray(shaded), to_frame, (width, height), border=0)
            alpha = 0.6 * layer[..., 3:4]
            picture = image.astype(np.float32) / 255.0 * (1 - alpha) + layer[..., :3] * alpha
            picture = cv2.cvtColor((np.clip(picture, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            for colour, pts in (((0, 255, 0), _target_68(points[row])), ((0, 0, 255), fitted[row])):
                if pts is None:
                    continue
                for x, y in pts:
                    cv2.circle(picture, (int(x), int(y)), 1, colour, -1)
            cv2.putText(picture, fit.status[row], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
            writer.write(picture)
        pending.clear()

    try:
        for frame in frames:
            row = row_of.get(frame.index)
            if row is None:
                continue
            pending.append((row, frame.image))
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    finally:
        writer.release()
    tmp.replace(path)


def _target_68(points: np.ndarray | None) -> np.ndarray | None:
    return None if points is None else to_68(points)


def write_exports(result: TrackResult, model, exports: tuple[str, ...], frames: FrameSource) -> None:
    """The requested exports under ``OUT/export`` (conventions in the module docstring)."""
    fit, crop = result.fit, result.crop
    root = result.out_dir / "export"
    n = len(fit.status)
    R, t, K = cameras_opencv(fit.frames, fit.fov_deg, crop)
    if "fht" in exports:
        for row, index in enumerate(result.frame_indices):
            write_npz(root / "fht" / f"{int(index):05d}.npz", shape=fit.shape, exp=fit.frames.expression[row],
                      head_pose=np.zeros(3, np.float32), neck_pose=np.zeros(3, np.float32),
                      jaw_pose=fit.frames.jaw[row], eye_pose=fit.frames.eyes[row],
                      cam=np.concatenate([fit.frames.rotation[row], fit.frames.translation[row]]),
                      fov=np.float32(fit.fov_deg), K=K)
    if "obj-sequence" in exports:
        for start in range(0, n, 32):
            rows = np.arange(start, min(start + 32, n))
            for row, verts in zip(rows, _posed_vertices(model, fit, rows)):
                export_mesh(root / "meshes" / f"{int(result.frame_indices[row]):05d}.obj", verts, np.asarray(model.faces))
    if "vhap" in exports:
        _write_vhap(result, root / "vhap", R, t, K, frames)


def _write_vhap(result: TrackResult, folder: Path, R, t, K, frames: FrameSource) -> None:
    fit = result.fit
    height, width = result.frame_size
    fl = float(K[0, 0])
    cx, cy = float(K[0, 2] + 0.5), float(K[1, 2] + 0.5)
    angle_x, angle_y = 2 * np.arctan(width / (2 * fl)), 2 * np.arctan(height / (2 * fl))
    shared = dict(cx=cx, cy=cy, fl_x=fl, fl_y=fl, w=width, h=height, camera_angle_x=angle_x, camera_angle_y=angle_y)
    row_of = {int(index): row for row, index in enumerate(result.frame_indices)}
    z3 = np.zeros((1, 3), np.float32)
    entries = []
    cameras = fit.frames.cameras(jnp.asarray(fit.fov_deg, jnp.float32))
    camera_to_world = np.asarray(jax.vmap(camera_to_world_opengl)(cameras))
    for frame in frames:
        row = row_of.get(frame.index)
        if row is None:
            continue
        image_path = f"images/{row:05d}_00.png"
        param_path = f"flame_param/{row:05d}.npz"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / image_path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        write_npz(folder / param_path, translation=z3, rotation=z3, neck_pose=z3, jaw_pose=fit.frames.jaw[row][None],
                  eyes_pose=fit.frames.eyes[row][None], shape=fit.shape, expr=fit.frames.expression[row][None])
        entries.append(dict(timestep_index=row, timestep_index_original=int(frame.index), timestep_id=f"{frame.index:05d}",
                            camera_index=0, camera_id="0", transform_matrix=camera_to_world[row].tolist(),
                            file_path=image_path, flame_param_path=param_path, status=fit.status[row], **shared))
    write_npz(folder / "canonical_flame_param.npz", translation=z3, rotation=z3, neck_pose=z3,
              jaw_pose=np.array([[0.3, 0, 0]], np.float32), eyes_pose=np.zeros((1, 6), np.float32), shape=fit.shape,
              expr=np.zeros((1, fit.frames.expression.shape[1]), np.float32))
    write_json(folder / "transforms.json", dict(frames=entries, timestep_indices=list(range(len(entries))),
                                                camera_indices=[0], **shared))

