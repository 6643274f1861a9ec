"""Tracking a landmark sequence: one identity for the clip, then overlapping chunks fitted jointly in time.

Steps (``track_landmarks``):

1. **Warm start**: every frame gets an independent quick fit (``fit_landmarks_batch`` with
   ``TrackConfig.init``), in batches of ``chunk_frames`` so it compiles once.
2. **Identity**: ``identity_frames`` usable frames spread evenly over the clip are fitted jointly with one shared
   shape (and FOV when ``fit_fov``): :func:`flamejax.track.fit_joint` without temporal priors.
3. **Motion**: the clip is cut into chunks of ``chunk_frames`` frames (the last one shifted back to end on the
   clip's last frame); the frames of a chunk are fitted together with the shape and FOV fixed
   (:func:`flamejax.track.fit_joint`), each to its own landmarks.
4. **Temporal priors**: every per-frame variable is smoothed over the whole clip by the priors of
   :class:`TemporalPrior` (first and second differences against each fit's typical error, one linear solve per
   variable: :mod:`flamejax.track._smooth`), and the landmarks are projected again from the smoothed motion.

Frames without a face (``lost``), missing from a frame folder (``missing``) or at a pose beyond
``max_yaw_deg`` (``hard pose``) carry no data term: their warm start is interpolated from the nearest usable
frames. Frames whose landmarks no head explains (``occluded``) lose their
data term (see :mod:`flamejax.track._joint`). Each of these carries no weight in the smoothing, which
fills it from its neighbours. No frame stops the clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.track._core import (FitConfig, FlameModel, LandmarkTargets, landmark_model, nme_inner, quick_config,
                                  stack_targets, yaw_pitch_roll)
from flamejax.track._core import GroupSchedule
from flamejax.track._joint import (JOINT_STAGE, SAME_PERSON, FrameStates, JointConfig, fit_joint, initial_fits,
                                   project_frames, robust_shape)
from flamejax.track._smooth import TemporalPrior, smooth_states

if TYPE_CHECKING:
    from flamejax.track._photometric_track import PhotometricTrack, PhotometricTrackConfig

STATUS_OK = "ok"
STATUS_LOST = "lost"
STATUS_MISSING = "missing"
STATUS_HARD_POSE = "hard pose"
STATUS_OCCLUDED = "occluded"
STATUS_DIVERGED = "diverged"
STATUS_INIT_FAILED = "init failed"
STATUS_PHOTOMETRIC_DIVERGED = "photometric diverged"
STATUS_PHOTOMETRIC_REJECTED = "photometric rejected"
STATUS_REASONS = {
    STATUS_OK: "fitted to its landmarks",
    STATUS_LOST: "no face detected in this frame; filled from neighbouring frames",
    STATUS_MISSING: "frame missing from the sequence (numbering gap); filled from neighbouring frames",
    STATUS_HARD_POSE: "head turned beyond max_yaw_deg, landmarks unreliable; filled from neighbouring frames",
    STATUS_OCCLUDED: "landmarks inconsistent with any head (occlusion or detector failure); filled from neighbours",
    STATUS_DIVERGED: "the optimiser diverged on this chunk; its last finite iterate is kept",
    STATUS_INIT_FAILED: "the per-frame warm-start fit failed on these landmarks; filled from neighbouring frames",
    STATUS_PHOTOMETRIC_DIVERGED: "the photometric refinement diverged on this frame; its landmark-mode fit is kept",
    STATUS_PHOTOMETRIC_REJECTED: ("the photometric refinement moved the landmarks too far from their targets "
                                  "(max_nme_increase); the landmark-mode fit is kept"),
}


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """How a clip is tracked (see the module docstring for the steps)."""

    n_shape: int = 100
    """Identity components used when the tracker loads the model itself."""
    n_expression: int = 50
    fov_deg: float = 20.0
    """Field of view of the clip's fixed crop (the camera all frames share)."""
    fit_fov: bool = False
    """Estimate one FOV for the clip in the identity step (weakly determined by landmarks alone)."""
    chunk_frames: int = 50
    chunk_overlap: int = 0
    """Frames shared by consecutive chunks (their fits are blended linearly there)."""
    identity_frames: int = 24
    init: FitConfig = quick_config(20, 0)
    identity: JointConfig = SAME_PERSON.replace(stage=dataclasses.replace(SAME_PERSON.stage, steps=160,
                                                                          profile_weight=0.0))
    """One photograph's identity prior for every identity frame (:data:`SAME_PERSON`'s). With the joint stage's
    prior, which weakens as frames are added, MediaPipe's bias went into the clip's identity: 1.2-2.3x the mean
    head's error on rendered clips with 3D truth (benchmarks/RESULTS.md, the video tracker's identity). Without the
    silhouette's profile (:attr:`profile`): in the identity step it pulled the clip's shape away from the truth on
    clips turning to ±70° (NoW median over subjects 1.09 -> 1.17 mm); the frames' motion keeps it."""
    motion: JointConfig = JointConfig(dataclasses.replace(JOINT_STAGE, steps=100, fit_shape=False,
                                                          expression=GroupSchedule(0.03, 0.01, 50),
                                                          camera=GroupSchedule(0.003, 0.001, 50)))
    temporal: TemporalPrior = TemporalPrior()
    max_yaw_deg: float = 65.0
    profile: bool = True
    """On frames where MediaPipe's face is turned far enough for its profile to be the person's outline (past
    :data:`flamejax.fit.PROFILE_TURN`, about 45°), segment the person around the face (MediaPipe's selfie
    segmentation) and make the fitted face reach the silhouette's edge on the side it turns to
    (:attr:`LandmarkTargets.profile`). Frames turned less are not segmented."""
    mirror_check: bool = True
    """On the same frames, also run FaceMesh on the mirror image of the face (as ``PreprocessConfig.mirror_check``
    does for photographs) and fit each point at the two looks' mean, weighted by their agreement
    (:func:`flamejax.fit.two_look_targets`)."""
    crop_scale: float = 2.0
    """Side of the clip's fixed square crop in units of the median face box's longer side."""
    detect_max_side: int = 1280
    """Frames larger than this are downscaled for MediaPipe (coordinates are mapped back)."""
    face_index: int | None = None
    """Which face to track when several show, numbered left to right from 0 on the first frame with a face; None:
    the one MediaPipe's tracking takes up first (its most confident). Either is followed from there on
    (:class:`flamejax.track.VideoLandmarker`)."""
    photometric: "PhotometricTrackConfig | None" = None
    """Photometric mode: refine the landmark tracking against the pixels (None: landmark mode)."""

    def __post_init__(self) -> None:
        if not 0 <= self.chunk_overlap < self.chunk_frames // 2:
            raise ValueError(f"need 0 <= chunk_overlap < chunk_frames / 2, got {self.chunk_overlap}, "
                             f"{self.chunk_frames}")
        if self.face_index is not None and self.face_index < 0:
            raise ValueError(f"face_index must be 0 or more (left to right), got {self.face_index}")

    def replace(self, **changes) -> "TrackConfig":
        return dataclasses.replace(self, **changes)


def precise_track_config(base: TrackConfig = TrackConfig()) -> TrackConfig:
    """``base`` for per-frame points without a detector's shape bias (hand annotations, a calibrated capture rig,
    synthetic clips): the jaw contour shapes the clip's identity at every yaw (``contour_identity`` 1 in the
    identity step), as :func:`flamejax.fit.precise_landmarks_config` does for a photograph. The default leaves the
    contour out of the identity of frames turned less than 40°, because MediaPipe's jaw line is the wrong width in
    every frame; on exact points that leaves the head's size to the identity prior. A synthetic clip with the
    truth's points: head 3.5 % -> 0.7 % too large, identity 1.48 -> 1.40 mm (benchmarks/RESULTS.md, photometric
    tracking). Not for MediaPipe's points."""
    stage = dataclasses.replace(base.identity.stage, contour_identity=1.0)
    return base.replace(identity=base.identity.replace(stage=stage))


@dataclasses.dataclass(frozen=True)
class SequenceFit:
    """A tracked sequence (numpy; leading axis: frames)."""

    shape: np.ndarray
    fov_deg: float
    frames: FrameStates
    lmk68: np.ndarray
    """Fitted 68 points in NDC of the clip's crop."""
    nme: np.ndarray
    """Inner-51 NME against the frame's own targets (NaN where the frame had none)."""
    status: list[str]
    independent_shapes: np.ndarray
    """Shapes of the identity frames' independent warm-start fits (their spread against the clip shape)."""
    independent_nme: np.ndarray
    """NME of every frame's warm-start fit (NaN where the frame had no targets)."""
    photometric: "PhotometricTrack | None" = None
    """Photometric mode's clip appearance, per-frame light and errors (None in landmark mode)."""
    confidence: np.ndarray | None = None
    """Each frame's confidence (:func:`flamejax.track._joint.project_frames`) at its tracked pose (NaN where the
    frame had no targets): low where the tracked head explains the frame's landmarks poorly or the detector's two
    looks disagree."""


def chunk_starts(frames: int, chunk: int, overlap: int) -> list[int]:
    """Start frame of each chunk: ``chunk`` frames, consecutive chunks sharing ``overlap`` frames."""
    if frames <= chunk:
        return [0]
    stride = chunk - overlap
    starts = list(range(0, frames - chunk, stride))
    return starts + [frames - chunk] if starts[-1] + chunk < frames else starts


def _blend_weights(start: int, chunk: int, overlap: int, frames: int, starts: list[int]) -> np.ndarray:
    """Linear ramps where this chunk overlaps the previous and next ones."""
    w = np.ones(chunk)
    index = starts.index(start)
    if index > 0:
        shared = starts[index - 1] + chunk - start
        w[:shared] = np.linspace(0.0, 1.0, shared + 2)[1:-1]
    if index + 1 < len(starts):
        shared = start + chunk - starts[index + 1]
        w[chunk - shared:] = np.linspace(1.0, 0.0, shared + 2)[1:-1]
    return w[: max(0, min(chunk, frames - start))]


def fill_from_neighbours(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Rows of ``values`` where ``usable`` is False, linearly interpolated from the usable ones (held constant
    beyond the first and last); unchanged when no row is usable."""
    if not usable.any() or usable.all():
        return values
    index = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    filled = np.stack([np.interp(index, index[usable], column[usable]) for column in flat.T], axis=1)
    return filled.reshape(values.shape).astype(values.dtype)


def _pad_targets(targets: list[LandmarkTargets | None], size: int) -> LandmarkTargets:
    return stack_targets([t if t is not None else LandmarkTargets.padding() for t in targets], size)


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


_yaw_pitch_roll = jax.jit(jax.vmap(yaw_pitch_roll))


def track_landmarks(model: FlameModel, targets: list[LandmarkTargets | None], config: TrackConfig = TrackConfig(),
                    missing: np.ndarray | None = None, checkpoint_dir: str | Path | None = None,
                    progress: Callable[[str], None] | None = None) -> SequenceFit:
    """Fit a sequence of per-frame targets (``None`` where no face was found) as described in the module docs.

    ``missing`` marks frames absent from the source (numbering gaps). With ``checkpoint_dir`` every finished
    step is saved there and reused by a later call with the same inputs (``--resume``).
    """
    n = len(targets)
    say = progress or (lambda message: None)
    missing = np.zeros(n, bool) if missing is None else np.asarray(missing, bool)
    chunk, overlap = config.chunk_frames, config.chunk_overlap
    store = _Checkpoints(checkpoint_dir, targets, config.replace(photometric=None))
    model = landmark_model(model, face=False)  # once: every step below reads landmarks only (no silhouettes)
    # Every frame's targets stacked once, padded to whole chunks (numpy: slicing a chunk costs no dispatch).
    stacked = _numpy(_pad_targets(targets, -(-n // chunk) * chunk))
    chunk_targets = lambda start: jax.tree.map(lambda a: a[start:start + chunk], stacked)  # noqa: E731

    init = store.load("init")
    if init is None:
        init_parts = []
        for start in range(0, n, chunk):
            frames, fits = initial_fits(model, chunk_targets(start), config.init.replace(fov_deg=config.fov_deg))
            keep = min(chunk, n - start)
            init_parts.append(jax.tree.map(lambda a: np.asarray(a)[:keep],
                                           (frames, fits.params.shape, fits.nme, fits.status,
                                            _yaw_pitch_roll(fits.camera))))
            say(f"warm start: {min(start + chunk, n)}/{n} frames")
        frames = jax.tree.map(lambda *a: np.concatenate(a), *[p[0] for p in init_parts])
        init = dict(frames=frames, shapes=np.concatenate([p[1] for p in init_parts]),
                    nme=np.concatenate([p[2] for p in init_parts]), fit_status=np.concatenate([p[3] for p in init_parts]),
                    angles=np.concatenate([p[4] for p in init_parts]))
        store.save("init", init)
    has_targets = stacked.valid[:n].astype(bool)
    hard = has_targets & (np.abs(init["angles"][:, 0]) > config.max_yaw_deg)
    usable = has_targets & ~hard & (init["fit_status"] == 0)
    status = [STATUS_MISSING if missing[i] else STATUS_LOST if not has_targets[i] else
              STATUS_HARD_POSE if hard[i] else STATUS_OK if usable[i] else STATUS_INIT_FAILED for i in range(n)]
    if not usable.any():
        raise NoUsableFramesError("no frame of the clip has a usable face (every frame lost, missing or beyond "
                                  f"max_yaw_deg={config.max_yaw_deg})")
    warm = jax.tree.map(lambda a: fill_from_neighbours(np.asarray(a), usable), init["frames"])

    identity = store.load("identity")
    if identity is None:
        picks = np.flatnonzero(usable)
        picks = picks[np.unique(np.linspace(0, len(picks) - 1, min(config.identity_frames, len(picks))).round()
                                .astype(int))]
        size = config.identity_frames
        sel = lambda a: np.concatenate([a[picks], np.repeat(a[picks[:1]], size - len(picks), 0)])  # noqa: E731
        id_targets = _pad_targets([targets[i] for i in picks], size)
        shape0 = robust_shape(jnp.asarray(init["shapes"][picks]), jnp.ones(len(picks), bool))
        id_config = config.identity.replace(stage=dataclasses.replace(config.identity.stage, fit_shape=True),
                                            fit_fov=config.fit_fov)
        result = fit_joint(model, id_targets, jax.tree.map(sel, warm), shape0, config.fov_deg, id_config)
        identity = dict(shape=np.asarray(result.shape), fov=np.asarray(result.fov_deg), picks=picks,
                        independent_shapes=init["shapes"][picks])
        store.save("identity", identity)
        say(f"identity from {len(picks)} frames")
    shape, fov = identity["shape"], float(identity["fov"])

    motion_config = config.motion.replace(stage=dataclasses.replace(config.motion.stage, fit_shape=False),
                                          fit_fov=False)
    starts = chunk_starts(n, chunk, overlap)
    total = jax.tree.map(lambda a: np.zeros(a.shape, np.float64), warm)
    weight_sum = np.zeros(n)
    occluded = np.zeros(n, bool)
    diverged = np.zeros(n, bool)
    for number, start in enumerate(starts):
        part = store.load(f"chunk_{number:04d}")
        if part is None:
            stop = min(start + chunk, n)
            frame_weight = np.zeros(chunk, np.float32)
            frame_weight[: stop - start] = usable[start:stop]
            result = fit_joint(model, chunk_targets(start), _rows(warm, start, stop, chunk),
                               shape, fov, motion_config, frame_weight)
            keep = stop - start
            part = dict(frames=jax.tree.map(lambda a: np.asarray(a)[:keep], result.frames),
                        outlier=np.asarray(result.outlier)[:keep], finite=np.asarray(result.finite))
            store.save(f"chunk_{number:04d}", part)
            say(f"motion: chunk {number + 1}/{len(starts)}")
        w = _blend_weights(start, chunk, overlap, n, starts)
        span = slice(start, start + len(w))
        total = jax.tree.map(lambda acc, new: _accumulate(acc, new, span, w), total, part["frames"])
        weight_sum[span] += w
        occluded[span] |= part["outlier"]
        diverged[span] |= not bool(part["finite"])
    per_frame = jax.tree.map(lambda a: a / weight_sum.reshape((-1,) + (1,) * (a.ndim - 1)), total)
    status = [STATUS_OCCLUDED if s == STATUS_OK and occluded[i] else STATUS_DIVERGED if diverged[i] else s
              for i, s in enumerate(status)]
    fitted = np.array([s == STATUS_OK for s in status], np.float64)
    frames = jax.tree.map(lambda a: a.astype(np.float32), smooth_states(per_frame, fitted, config.temporal))
    lmk68, nme, confidence = project_clip(model, frames, shape, fov, stacked, chunk)
    independent_nme = np.where(has_targets, init["nme"], np.nan).astype(np.float32)
    return SequenceFit(shape=shape, fov_deg=fov, frames=frames, lmk68=lmk68, nme=nme, status=status,
                       independent_shapes=identity["independent_shapes"], independent_nme=independent_nme,
                       confidence=confidence)


def project_clip(model: FlameModel, frames: FrameStates, shape: np.ndarray, fov: float,
                 targets: LandmarkTargets, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 68 points (NDC) of every frame, ``batch`` frames per compiled call, their inner-51 NME against
    ``targets`` (the frames' targets stacked as NumPy arrays, at least one row per frame) and each frame's
    confidence (:func:`project_frames`); NME and confidence NaN where a frame has no targets."""
    n = frames.expression.shape[0]
    lmk68, confidence = [], []
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        points, judged = project_frames(model, _rows(frames, start, stop, batch), shape, fov,
                                        _rows(targets, start, stop, batch))
        lmk68.append(np.asarray(points)[:stop - start])
        confidence.append(np.asarray(judged)[:stop - start])
    lmk68 = np.concatenate(lmk68)
    valid = targets.valid[:n].astype(bool)
    nme = np.where(valid, np.asarray(jax.vmap(nme_inner)(lmk68, targets.lmk68[:n])), np.nan).astype(np.float32)
    return lmk68, nme, np.where(valid, np.concatenate(confidence), np.nan).astype(np.float32)


def _rows(states: FrameStates, start: int, stop: int, size: int) -> FrameStates:
    """Rows ``start:stop`` of ``states``, the last one repeated up to ``size`` rows (one compiled batch size)."""
    pad = size - (stop - start)
    return jax.tree.map(lambda a: np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, 0)]), states)


def _accumulate(acc: np.ndarray, new: np.ndarray, span: slice, w: np.ndarray) -> np.ndarray:
    acc[span] += w.reshape((-1,) + (1,) * (new.ndim - 1)) * new
    return acc


class NoUsableFramesError(ValueError):
    """Raised when no frame of a clip has a face to fit."""


class _Checkpoints:
    """Per-step results saved as npz under a folder, keyed by the targets they were computed from."""

    def __init__(self, folder: str | Path | None, targets: list[LandmarkTargets | None], config: TrackConfig,
                 start: bytes = b""):
        """``start``: digest of what the steps start from besides ``targets`` and ``config``."""
        self.folder = None if folder is None else Path(folder)
        digest = np.array([len(targets)] + [x for t in targets for x in _summary(t)], np.float64)
        self.key = hashlib.sha256(digest.round(5).tobytes() + repr(config).encode() + start).hexdigest()[:16]

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def load(self, name: str):
        if self.folder is None or not self._path(name).is_file():
            return None
        with np.load(self._path(name), allow_pickle=False) as data:
            if str(data["__key__"]) != self.key:
                return None
            flat = {k: data[k] for k in data.files if k != "__key__"}
        return _unflatten(flat)

    def save(self, name: str, values: dict) -> None:
        if self.folder is None:
            return
        from flamejax.track._core import write_npz

        write_npz(self._path(name), __key__=np.asarray(self.key), **_flatten(values))


def _summary(targets: LandmarkTargets | None) -> tuple[float, float]:
    """Two numbers that change with a frame's landmarks and with its weighted profile points."""
    if targets is None:
        return -1.0, -1.0
    profile = 0.0 if targets.profile is None else float(np.sum(np.asarray(targets.profile)
                                                                * np.asarray(targets.profile_weight)[:, None]))
    return float(np.sum(np.asarray(targets.lmk68))), profile


def _flatten(values: dict) -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, FrameStates):
            flat.update({f"{key}.{f.name}": np.asarray(getattr(value, f.name)) for f in dataclasses.fields(value)})
        else:
            flat[key] = np.asarray(value)
    return flat


def _unflatten(flat: dict) -> dict:
    values: dict = {}
    groups: dict = {}
    for key, value in flat.items():
        if "." in key:
            group, field = key.split(".", 1)
            groups.setdefault(group, {})[field] = value
        else:
            values[key] = value
    values.update({group: FrameStates(**fields) for group, fields in groups.items()})
    return values
