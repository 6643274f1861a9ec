"""Photometric tracking: a landmark-tracked clip refined frame by frame against its pixels, one identity and one
appearance.

Steps (``refine_photometric``, after :func:`flamejax.track.track_landmarks`):

1. **Identity and appearance**: ``keyframes`` frames fitted to their landmarks, their head yaws spread evenly over
   the clip's and each the most confident frame near its yaw (:func:`pick_keyframes`), are refined against their
   pixels jointly with one identity and one albedo
   (:func:`flamejax.fit.fit_photometric_same_person`: a texel must land on pixels of one colour in every
   keyframe, which only the right shape allows), from the clip's landmark identity; per keyframe expression,
   jaw, eyes, camera and light. The clip's identity becomes the keyframes' (unless that stage was not finite,
   or ``appearance.shape`` holds it), its albedo theirs (baked from their pixels at the end, ``bake_texels``), its
   start light their median light.
2. **Refinement**: every frame fitted to its landmarks is refined from its landmark-mode motion under the clip's
   identity with the clip's albedo fixed (texel and albedo-PCA learning rates 0; light, expression, jaw, eyes and
   camera move), ``batch_frames`` frames per compiled batch (the last one padded).
3. **Fallback**: a frame whose refinement diverged, or whose landmark error rose by more than
   ``max_nme_increase``, keeps its landmark-mode motion and says so in its status.
4. **Temporal priors**: the refined per-frame states are smoothed over the clip again
   (:func:`flamejax.track.smooth_states`, the clip's :class:`TemporalPrior`), frames without landmarks filled
   from their neighbours as in landmark mode.

Pictures: each frame's clip crop (the landmark tracker's fixed square crop, so its camera is the clip's camera)
resampled to ``image_size``², and a face mask drawn from the frame's MediaPipe points
(:func:`flamejax.perception.landmark_face_mask`) times the part of the crop inside the frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.track._core import (Appearance, FitResult, FlameModel, GroupSchedule, LandmarkTargets,
                                  PhotometricConfig, PhotometricTargets, SharedPhotometricResult, StageReport,
                                  fit_photometric_batch, fit_photometric_same_person, inside_source,
                                  landmark_face_mask, landmark_model, posed_landmarks, stack_targets, warp_image,
                                  write_image)
from flamejax.perception._video import VideoReadError
from flamejax.track._joint import FrameStates
from flamejax.track._sequence import (STATUS_OK, STATUS_PHOTOMETRIC_DIVERGED, STATUS_PHOTOMETRIC_REJECTED,
                                      SequenceFit, TrackConfig, _Checkpoints, _numpy, _pad_targets, _yaw_pitch_roll,
                                      project_clip)
from flamejax.track._smooth import smooth_states

_HELD = GroupSchedule(0.0)


@dataclasses.dataclass(frozen=True)
class PhotometricTrackConfig:
    """How ``track --mode photometric`` refines a landmark-tracked clip (steps in the module docstring)."""

    keyframes: int = 8
    """Frames fitted jointly for the clip's one identity and appearance (spread over the clip's yaws, each the most
    confident frame near its yaw: :func:`pick_keyframes`)."""
    appearance: PhotometricConfig = PhotometricConfig(shape_start=0)
    """The keyframes' joint stage (:func:`flamejax.fit.fit_photometric_same_person`); ``shape=GroupSchedule(0.0)``
    keeps the landmark tracking's identity. The identity moves from the first step (``shape_start`` 0): on the
    synthetic clip with 3D truth, from step 32 as for photographs gave 1.06 mm against 0.95 (benchmarks/RESULTS.md,
    photometric tracking)."""
    refine: PhotometricConfig = PhotometricConfig(steps=64, shape=_HELD, texture=_HELD, texel=_HELD)
    """Every frame's refinement under the clip's identity and albedo (both held), half the steps; run as
    :meth:`frame_stage` says (the clip's albedo is the keyframes' stage's)."""
    batch_frames: int = 16
    """Frames refined together in one compiled batch."""
    image_size: int = 256
    """Side of each frame's crop, the photometric stage's full resolution."""
    max_nme_increase: float = 0.02
    """A refined frame whose inner-51 NME exceeds its landmark-mode NME by more keeps the landmark-mode state."""

    def __post_init__(self) -> None:
        if self.keyframes < 1 or self.batch_frames < 1:
            raise ValueError(f"need keyframes >= 1 and batch_frames >= 1, got {self.keyframes}, {self.batch_frames}")
        if self.appearance.texture_size != self.refine.texture_size:
            raise ValueError(f"appearance and refine must share texture_size, got {self.appearance.texture_size} "
                             f"and {self.refine.texture_size}")

    def replace(self, **changes) -> "PhotometricTrackConfig":
        return dataclasses.replace(self, **changes)

    def frame_stage(self) -> PhotometricConfig:
        """``refine`` as every frame's stage runs: under the clip's albedo as it is (neither baked from the frame
        nor filled)."""
        return dataclasses.replace(self.refine, fill_unseen=False, bake_texels=False)


@dataclasses.dataclass(frozen=True)
class PhotometricTrack:
    """What photometric mode adds to a tracked clip (numpy; leading axis: frames)."""

    texture: np.ndarray
    """(t, t, 3) the clip's albedo in FLAME's UV layout, RGB in [0, 1] (rows top to bottom)."""
    light: np.ndarray
    """(frames, 9, 3) SH light of each refined frame (the clip's start light elsewhere)."""
    photometric_start: np.ndarray
    """Masked L1 error of the landmark-mode state under the clip's appearance (NaN where not refined)."""
    photometric_final: np.ndarray
    """Masked L1 error of the refined state, before the temporal smoothing (NaN where not refined)."""
    refined: np.ndarray
    """Frames whose refined state was kept."""
    keyframes: np.ndarray
    """Rows of the frames that gave the identity and the appearance."""
    landmark_shape: np.ndarray
    """(n_shape,) the landmark tracking's identity, which the keyframes refined into the clip's."""
    landmark_frames: FrameStates
    """The landmark-mode states the refinement started from."""
    landmark_nme: np.ndarray
    """Landmark-mode NME of every frame (NaN where the frame had no targets)."""


Pictures = Callable[[list[int]], Iterable[tuple[int, np.ndarray, np.ndarray]]]
"""Given clip rows in increasing order, yields ``(row, image, mask)`` for each: the crop (``image_size``²,
RGB float32 in [0, 1]) and its face mask."""


def frame_picture(image: np.ndarray, points478: np.ndarray, crop: tuple[float, float, float], size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The clip crop ``(x0, y0, side)`` of an upright RGB8 frame resampled to ``size``² (float32 in [0, 1]) and
    its face mask from the frame's MediaPipe ``points478`` (frame pixels, centres at half-integers), zero where
    the crop leaves the frame."""
    x0, y0, side = crop
    scale = size / side
    to_crop = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    warped = warp_image(image, to_crop, size, border=None)
    mask = landmark_face_mask((np.asarray(points478) - np.array([x0, y0])) * scale, size)
    return warped.astype(np.float32) / 255.0, (mask * inside_source(image.shape, to_crop, size)).astype(np.float32)


def _landmark_results(landmarks_only: FlameModel, frames: FrameStates, shape: np.ndarray, fov: float,
                      nme: np.ndarray) -> FitResult:
    """Landmark-mode states of a batch as the landmark fit the photometric stage starts from
    (``landmarks_only``: :func:`landmark_model` of the clip's model)."""
    params = frames.flame_params(jnp.asarray(shape, jnp.float32))
    cameras = frames.cameras(jnp.asarray(fov, jnp.float32))
    batch = len(nme)
    report = StageReport(jnp.zeros((batch, 1), jnp.float32), jnp.zeros(batch, jnp.float32), jnp.ones(batch, bool),
                         jnp.full(batch, -1, jnp.int32))
    projected = _project(landmarks_only, params, cameras)
    return FitResult(params=params, camera=cameras, landmarks=projected, nme=jnp.asarray(nme, jnp.float32),
                     status=jnp.zeros(batch, jnp.int32), rigid=report, landmark=report)


_project = jax.jit(jax.vmap(posed_landmarks, in_axes=(None, 0, 0)))


def _batch_rows(rows: list[int], size: int) -> list[int]:
    """``rows`` with the last one repeated up to ``size`` (one compiled batch shape)."""
    return rows + [rows[-1]] * (size - len(rows))


def _batch_inputs(fit: SequenceFit, targets: list[LandmarkTargets], rows: list[int],
                  pictures: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[FrameStates, PhotometricTargets]:
    """The landmark-mode states of the frames ``rows``, and their pictures and targets."""
    frames = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[rows]), fit.frames)
    photo = PhotometricTargets(jnp.asarray(np.stack([pictures[r][0] for r in rows])),
                               jnp.asarray(np.stack([pictures[r][1] for r in rows])),
                               stack_targets([targets[r] for r in rows]))
    return frames, photo


def _refine_batch(model: FlameModel, landmarks_only: FlameModel, uv_layout, fit: SequenceFit,
                  targets: list[LandmarkTargets], rows: list[int], pictures: dict[int, tuple[np.ndarray, np.ndarray]],
                  config: PhotometricConfig, size: int, albedo, appearance: Appearance) -> FitResult:
    """The photometric stage on the frames ``rows`` (padded to ``size``) from their states in ``fit`` and the
    clip's ``appearance``."""
    padded = _batch_rows(rows, size)
    frames, photo = _batch_inputs(fit, targets, padded, pictures)
    start = _landmark_results(landmarks_only, frames, fit.shape, fit.fov_deg, np.nan_to_num(fit.nme[padded]))
    return fit_photometric_batch(model, uv_layout, photo, start, config, albedo, appearance=appearance)


def _keyframe_fit(model: FlameModel, uv_layout, fit: SequenceFit, targets: list[LandmarkTargets], rows: list[int],
                  pictures: dict[int, tuple[np.ndarray, np.ndarray]], config: PhotometricConfig,
                  albedo) -> SharedPhotometricResult:
    """Step 1: the keyframes ``rows`` refined jointly with one identity and one albedo from ``fit``'s."""
    frames, photo = _batch_inputs(fit, targets, rows, pictures)
    shape = jnp.asarray(fit.shape, jnp.float32)
    return fit_photometric_same_person(model, uv_layout, photo, shape, frames.flame_params(shape),
                                       frames.cameras(jnp.asarray(fit.fov_deg, jnp.float32)), config, albedo)


def _clip_appearance(keyframes: SharedPhotometricResult, albedo) -> tuple[Appearance, np.ndarray]:
    """The keyframes' one albedo (also as a texture) and their median light. With an albedo model the texels are
    the offset from its coefficients' albedo."""
    report = jax.tree.map(np.asarray, keyframes.photometric)
    texture, coeffs = report.texture[0].astype(np.float32), report.texture_coeffs[0].astype(np.float32)
    texels = texture
    if albedo is not None:
        base = np.asarray(albedo.mean) + np.einsum("hwcn,n->hwc", np.asarray(albedo.basis), coeffs)
        texels = (texture - base).astype(np.float32)
    appearance = Appearance(light=jnp.asarray(np.median(report.light, axis=0), jnp.float32),
                            texture_coeffs=jnp.asarray(coeffs), texels=jnp.asarray(texels))
    return appearance, texture


KEYFRAME_SLACK_DEG = 4.0
"""How much further (degrees of yaw) from the yaw it stands for a keyframe may lie than the nearest free frame, when
it is the more confident one (:func:`pick_keyframes`)."""


def pick_keyframes(usable: np.ndarray, yaw_deg: np.ndarray, count: int, confidence: np.ndarray | None = None,
                   max_yaw_deg: float = 45.0, min_span_deg: float = 10.0,
                   slack_deg: float = KEYFRAME_SLACK_DEG) -> list[int]:
    """Up to ``count`` usable rows whose head yaws (degrees) spread evenly over the clip's, from the rows within
    ±``max_yaw_deg`` (beyond it MediaPipe's points, hence the keyframes' starts, are poor) when there are
    ``count`` of them: the views that tell an identity apart. A clip that turns less than ``min_span_deg``
    gets rows spread evenly in time.

    With ``confidence`` (per row, :attr:`SequenceFit.confidence`; NaN counts as 0) each keyframe is the most
    confident free row within ``slack_deg`` of yaw (or, in time, a quarter of the rows' spacing) of the nearest
    one: a frame whose landmarks the tracked head does not explain (a blink, blur, a hand) would carry its error
    into the clip's identity and albedo."""
    rows = np.flatnonzero(usable)
    if len(rows) <= count:
        return rows.tolist()
    inside = rows[np.abs(yaw_deg[rows]) <= max_yaw_deg]
    rows = inside if len(inside) >= count else rows
    yaw = yaw_deg[rows]
    if yaw.max() - yaw.min() < min_span_deg:
        position, slack = np.arange(len(rows), dtype=np.float64), 0.25 * (len(rows) - 1) / max(count - 1, 1)
        wanted_positions = np.linspace(0, len(rows) - 1, count).round()
    else:
        position, slack = yaw.astype(np.float64), slack_deg
        wanted_positions = np.linspace(yaw.min(), yaw.max(), count)
    trust = np.zeros(len(rows)) if confidence is None else np.nan_to_num(np.asarray(confidence)[rows], nan=0.0)
    free = np.ones(len(rows), bool)
    for wanted in wanted_positions:
        distance = np.where(free, np.abs(position - wanted), np.inf)
        near = np.flatnonzero(distance <= distance.min() + slack)
        free[near[np.lexsort((distance[near], -trust[near]))[0]]] = False
    return rows[~free].tolist()


def _pictures_of(pictures: Pictures, rows: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {row: (image, mask) for row, image, mask in pictures(sorted(set(rows)))}


def refine_photometric(model: FlameModel, uv_layout, fit: SequenceFit, targets: list[LandmarkTargets | None],
                       pictures: Pictures, config: TrackConfig, albedo=None,
                       checkpoint_dir: str | Path | None = None,
                       progress: Callable[[str], None] | None = None) -> SequenceFit:
    """A landmark-tracked clip (``fit``, from :func:`track_landmarks` on ``targets``) refined photometrically
    as in the module docstring with ``config.photometric`` (and ``config.temporal``).

    ``model`` must be the full FLAME mesh; ``pictures`` gives each frame's crop and mask. With
    ``checkpoint_dir`` the appearance and every refined batch are saved there and reused by a later call with
    the same inputs. Returns ``fit`` with refined frames, landmarks, NME and status, and ``photometric`` filled.
    """
    photometric = config.photometric or PhotometricTrackConfig()
    say = progress or (lambda message: None)
    n = len(fit.status)
    usable = np.array([s == STATUS_OK for s in fit.status])
    store = _Checkpoints(checkpoint_dir, targets, config, _fit_digest(fit))
    batch = photometric.batch_frames
    landmarks_only = landmark_model(model, face=False)

    saved = store.load("photometric_appearance")
    if saved is None:
        yaw = np.asarray(_yaw_pitch_roll(fit.frames.cameras(jnp.asarray(fit.fov_deg, jnp.float32))))[:, 0]
        keys = pick_keyframes(usable, yaw, photometric.keyframes, fit.confidence)
        result = _keyframe_fit(model, uv_layout, fit, targets, keys, _pictures_of(pictures, keys),
                               photometric.appearance, albedo)
        appearance, texture = _clip_appearance(result, albedo)
        shape = np.asarray(result.shape, np.float32)
        refined_identity = bool(np.asarray(result.photometric.stage.finite)[0]) and bool(np.isfinite(shape).all())
        saved = dict(light=appearance.light, texture_coeffs=appearance.texture_coeffs, texels=appearance.texels,
                     texture=texture, keyframes=np.asarray(keys),
                     shape=shape if refined_identity else np.asarray(fit.shape, np.float32))
        store.save("photometric_appearance", saved)
        say(f"photometric: clip identity and appearance from {len(keys)} keyframes"
            + ("" if refined_identity else " (not finite: the landmark identity is kept)"))
    appearance = Appearance(*(jnp.asarray(saved[k]) for k in ("light", "texture_coeffs", "texels")))
    landmark_shape = fit.shape
    fit = dataclasses.replace(fit, shape=np.asarray(saved["shape"]))

    ok_rows = np.flatnonzero(usable).tolist()
    groups = [ok_rows[start:start + batch] for start in range(0, len(ok_rows), batch)]
    parts = {number: store.load(f"photometric_{number:04d}") for number in range(len(groups))}
    todo = [number for number, part in parts.items() if part is None]
    stream = pictures(sorted(row for number in todo for row in groups[number]))
    refine = photometric.frame_stage()
    for number in todo:
        rows = groups[number]
        images = {row: (image, mask) for _, (row, image, mask) in zip(rows, stream)}
        if len(images) < len(rows):
            raise VideoReadError(f"frame rows {sorted(set(rows) - set(images))} could not be read again for the "
                                 "photometric step; the refined batches so far are saved: rerun with resume")
        result = jax.tree.map(np.asarray, _refine_batch(model, landmarks_only, uv_layout, fit, targets, rows,
                                                        images, refine, batch, albedo, appearance))
        keep = len(rows)
        report = result.photometric
        parts[number] = dict(frames=jax.tree.map(lambda a: a[:keep], FrameStates.from_fit(result.params,
                                                                                           result.camera)),
                             light=report.light[:keep], start=report.photometric_start[:keep],
                             final=report.photometric_final[:keep], nme=result.nme[:keep],
                             finite=report.stage.finite[:keep] & (result.status[:keep] == 0))
        store.save(f"photometric_{number:04d}", parts[number])
        say(f"photometric: batch {number + 1}/{len(groups)}")

    refined_frames = jax.tree.map(np.copy, fit.frames)
    light = np.broadcast_to(np.asarray(appearance.light), (n, 9, 3)).copy()
    start_error, final_error = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
    refined = np.zeros(n, bool)
    status = list(fit.status)
    for number, rows in enumerate(groups):
        part = parts[number]
        finite = part["finite"] & np.all(np.isfinite(_flat(part["frames"])), axis=1)
        drifted = part["nme"] > np.nan_to_num(fit.nme[rows], nan=np.inf) + photometric.max_nme_increase
        for i, row in enumerate(rows):
            start_error[row], final_error[row] = part["start"][i], part["final"][i]
            if not finite[i]:
                status[row] = STATUS_PHOTOMETRIC_DIVERGED
            elif drifted[i]:
                status[row] = STATUS_PHOTOMETRIC_REJECTED
            else:
                refined[row] = True
                light[row] = part["light"][i]
                for name in _FIELDS:
                    getattr(refined_frames, name)[row] = getattr(part["frames"], name)[i]
    frames = jax.tree.map(lambda a: a.astype(np.float32), smooth_states(refined_frames, usable.astype(np.float64),
                                                                         config.temporal))
    lmk68, nme, confidence = project_clip(landmarks_only, frames, fit.shape, fit.fov_deg,
                                          _numpy(_pad_targets(targets, len(targets))), batch)
    extra = PhotometricTrack(texture=np.asarray(saved["texture"]), light=light, photometric_start=start_error,
                             photometric_final=final_error, refined=refined, keyframes=np.asarray(saved["keyframes"]),
                             landmark_shape=np.asarray(landmark_shape), landmark_frames=fit.frames,
                             landmark_nme=fit.nme)
    return dataclasses.replace(fit, frames=frames, lmk68=lmk68, nme=nme, status=status, photometric=extra,
                               confidence=confidence)


_FIELDS = [f.name for f in dataclasses.fields(FrameStates)]


def _flat(frames: FrameStates) -> np.ndarray:
    return np.concatenate([np.asarray(getattr(frames, name)).reshape(len(frames.jaw), -1) for name in _FIELDS], 1)


def _fit_digest(fit: SequenceFit) -> bytes:
    """What the refinement starts from, for the checkpoints' key."""
    return hashlib.sha256(np.concatenate([_flat(fit.frames).ravel(), np.asarray(fit.shape).ravel()])
                          .astype(np.float32).round(5).tobytes() + repr(fit.status).encode()).digest()


def video_pictures(frames: Callable[[], Iterator], row_of: dict[int, int], points: list[np.ndarray | None],
                   crop: tuple[float, float, float], size: int) -> Pictures:
    """:data:`Pictures` of a clip: ``frames()`` decodes it again (``Frame`` objects), ``row_of`` maps a frame
    index to its row and ``points`` holds each row's MediaPipe points (frame pixels)."""

    def pictures(rows: list[int]):
        wanted = set(rows)
        if not wanted:
            return
        last = max(wanted)
        for frame in frames():
            row = row_of.get(frame.index)
            if row in wanted:
                yield (row, *frame_picture(frame.image, points[row], crop, size))
                if row == last:
                    return

    return pictures


def photometric_arrays(fit: SequenceFit, out_dir: Path) -> dict:
    """Photometric mode's per-frame arrays for ``tracking.npz`` (empty in landmark mode), after writing the
    clip's albedo to ``OUT/texture.png``."""
    extra = fit.photometric
    if extra is None:
        return {}
    write_image(out_dir / "texture.png", extra.texture)
    return dict(light_sh=extra.light, photometric_error_start=extra.photometric_start,
                photometric_error=extra.photometric_final, photometric_refined=extra.refined,
                keyframes=extra.keyframes, landmark_mode_nme=extra.landmark_nme, landmark_mode_shape=extra.landmark_shape,
                texture_png=np.asarray("texture.png"))
