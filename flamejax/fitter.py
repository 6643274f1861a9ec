"""The one way from preprocessed photographs to FLAME fits: a :class:`Fitter`, built once, called per batch.

    fitter = Fitter.create(load_flame(), FitConfig(), batch_size=16)
    fits = fitter([preprocess("a.jpg"), preprocess("b.jpg")])      # list[ImageFit], one per item

A Fitter holds everything that stays fixed over a run: the model and its landmark sub-model (placed on the
devices), the fit configuration, the photometric bundle (configuration, UV layout, albedo model), the networks
that start the fit, and the device mesh. Its call pads the items to fixed-size batches (one compilation per
run), runs the start, the landmark fit (twice for the images whose two MediaPipe looks disagree throughout, see
:func:`fit_with_look_choice`) and, in photometric mode, the photometric stage, and judges each result
(:class:`Verdict`). ``flamejax fit``, ``fit-dir`` and library users all go through it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax import camera as cam
from flamejax._runtime import CompileClock
from flamejax._typing import Bool, Float
from flamejax.distributed import local_mesh, replicate, round_batch_size, shard_batch
from flamejax.fit import (LOOK_DISAGREEMENT, FitConfig, FitResult, FitStart, LandmarkConventions, LandmarkTargets,
                          PhotometricConfig, PhotometricTargets, Status, fit_landmarks_batch, fit_photometric_batch,
                          landmark_conventions, landmark_model, leaning_look_targets, look_disagreement,
                          stack_targets, target_agreement, two_look_targets)
from flamejax.fit._landmark_fit import reads_face
from flamejax.flame import FlameModel, flame_forward

__all__ = ["Fitter", "ImageFit", "Networks", "PhotometricBundle", "QualityConfig", "detection_doubt",
           "detection_doubt_of", "find_uv_layout", "fit_with_look_choice", "judge", "lean_on_explained_looks",
           "look_disagreement_of", "rows_from", "targets_of"]


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """When a fit that converged is still reported as ``"suspect"`` rather than ``"ok"``."""

    max_nme: float = 0.08
    """Mean inner-51 landmark error over the target's outer-eye-corner distance (good fits: 0.01-0.03)."""
    distance_range: tuple[float, float] = (0.2, 8.0)
    """Camera-to-head distance in metres (the fit starts at 1 m with a 20 degree field of view)."""
    max_abs_pitch_roll: float = 60.0
    """Degrees: a head tipped further than this is more likely fitted upside down than photographed so."""
    max_landmark_extent: float = 1.5
    """Fitted landmarks must stay within this many half-image-widths of the centre (NDC)."""
    min_confidence: float = 0.25
    """:attr:`FitResult.confidence` below this: too many points unexplained, or explained too loosely."""
    min_detection_score: float = 0.6
    """The face detector's score (``Preprocessed.confidence``, BlazeFace) below this: it is unsure the face is one.
    At 80-90° of yaw MediaPipe finds faces on an ear or the back of a head at 0.55, and every point of theirs
    is explained; real faces score 0.75 and more, rendered ones 0.7 and more (``benchmarks/RESULTS.md``)."""
    max_look_disagreement: float = LOOK_DISAGREEMENT
    """:func:`flamejax.fit.look_disagreement` of MediaPipe's two looks at the face (the photograph and its mirror
    image) above this: one of them folded the face, and the fit leans to the look it explains, a guess. On two
    fresh draws of rendered heads at 50-75° of yaw a third of those fits (6 of 18) were above 8 % NME, against 5 of
    the other 151; the shared photographs' looks differ by 0.03 at most (``benchmarks/RESULTS.md``)."""


FIND_UV_LAYOUT = object()
"""Default of ``Fitter.create(uv_layout=...)``: look it up in the weights folders."""


@dataclasses.dataclass(frozen=True, eq=False)
class PhotometricBundle:
    """What photometric mode needs besides the landmark fit."""

    config: PhotometricConfig = PhotometricConfig()
    albedo: object | None = None
    """:class:`flamejax.render.AlbedoModel`, or None (a per-texel albedo from the photograph's skin colour)."""

    @staticmethod
    def load(config: PhotometricConfig = PhotometricConfig()) -> "PhotometricBundle":
        """The bundle with the albedo model found in the weights folders (none is fine)."""
        from flamejax.render import load_albedo_model

        return PhotometricBundle(config, load_albedo_model())


def find_uv_layout(required: bool):
    """FLAME's UV layout (``head_template_mesh.obj``) from the weights folders; ``None`` when absent and not
    ``required`` (meshes are then written without texture coordinates)."""
    from flamejax.files import find_file
    from flamejax.render import load_uv_layout

    path = find_file("uv_template", required=required)
    return None if path is None else load_uv_layout(path)


@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The start of the fit: ``"linear"`` (weights-free) or DECA/MICA through ONNX Runtime."""

    method: str = "linear"
    deca: object | None = None
    mica: object | None = None

    @staticmethod
    def load(method: str = "auto") -> "Networks":
        """The networks ``method`` names (see :func:`flamejax.init.resolve_init_method`), loaded once."""
        from flamejax.init import DecaEncoder, MicaEncoder, resolve_init_method

        method = resolve_init_method(method)
        return Networks(method, DecaEncoder.load(required=True) if "deca" in method else None,
                        MicaEncoder.load(required=True) if "mica" in method else None)


@dataclasses.dataclass(frozen=True)
class ImageFit:
    """One image's fit, NumPy leaves, with its verdict."""

    name: str
    result: FitResult
    """Un-batched fit result (``result.photometric`` is set in photometric mode)."""
    vertices: np.ndarray
    """(5023, 3) posed mesh in head space (metres)."""
    verdict: str
    """``"ok"``, ``"suspect"`` (converged, but implausible: see ``reason``) or ``"failed"``."""
    reason: str
    """Why the verdict is not ``"ok"`` (empty when it is)."""
    init_method: str
    """How the fit started, with the ONNX providers when networks ran."""
    fit_seconds: float
    """This image's share of its batch's fitting time, compilation excluded."""
    compile_seconds: float
    """This image's share of the compilation its batch triggered (0 once compiled)."""
    conventions: LandmarkConventions | None = None
    """The fitted 68 points in both annotation conventions (visible outline / projected 3D) and which are seen."""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def written(self) -> bool:
        """Whether the fit has results worth writing (``"ok"`` or ``"suspect"``)."""
        return self.verdict != "failed"


def _person_of(item) -> Float[np.ndarray, "S S"]:
    """The item's person silhouette, or all zeros when preprocessing has none it trusts (so that every
    photograph's targets share one compiled fit)."""
    size = item.image.shape[0]
    return item.person if item.person is not None else np.zeros((size, size), np.float32)


def targets_of(item) -> LandmarkTargets:
    """Landmark targets of a :class:`flamejax.perception.Preprocessed` image (NDC of its fit image): both of
    MediaPipe's looks (the crop and its mirror image) where there are two, see :func:`two_look_targets`, and the
    person's silhouette (:func:`_person_of`).

    An image with hand-annotated 68 points (``item.annotated68``) is fitted to those (but NaN points) and
    MediaPipe's irises alone: its other points carry the detector's bias the annotation is there to avoid."""
    size = item.image.shape[0]
    targets = two_look_targets(item.points478, item.mirrored478, size, person=_person_of(item))
    if item.annotated68 is None:
        return targets
    given = np.all(np.isfinite(item.annotated68), axis=1)
    return dataclasses.replace(targets, lmk68=jnp.asarray(cam.pixels_to_ndc(np.nan_to_num(item.annotated68), size),
                                                          jnp.float32),
                               lmk68_weight=jnp.asarray(given, jnp.float32),
                               mediapipe_weight=jnp.zeros_like(targets.mediapipe_weight))


def lean_on_explained_looks(items: Sequence, targets: Sequence[LandmarkTargets],
                            fitted68: Float[np.ndarray, "batch 68 2"]) -> tuple[list[LandmarkTargets], list[int]]:
    """Targets for a second landmark fit of the images whose two MediaPipe looks disagree throughout.

    ``targets``: each item's :func:`targets_of`; ``fitted68``: a first fit's 68 points on them, NDC (at least
    ``len(items)`` rows). Where :func:`flamejax.fit.look_disagreement` exceeds
    :data:`flamejax.fit.LOOK_DISAGREEMENT` (one look folded the far half of a turned face), the item's targets
    become :func:`flamejax.fit.leaning_look_targets`: mostly the look that fit explains. Returns the targets and
    the indices that changed (none: no second fit needed). Hand-annotated items keep their annotations, and items
    whose first fit has no finite points keep theirs."""
    targets, changed = list(targets), []
    for i, item in enumerate(items):
        if look_disagreement_of(item) <= LOOK_DISAGREEMENT:
            continue
        if not np.all(np.isfinite(fitted68[i])):  # a failed first fit cannot say which look is right
            continue
        size = item.image.shape[0]
        targets[i] = leaning_look_targets(item.points478, item.mirrored478,
                                          np.asarray(cam.ndc_to_pixels(fitted68[i], size)), size,
                                          person=_person_of(item))
        changed.append(i)
    return targets, changed


def rows_from(take: Bool[np.ndarray, "batch"], new, old):
    """The batched pytree ``new`` in the rows where ``take`` is true, ``old`` elsewhere (same structure)."""
    take = jnp.asarray(take)
    return jax.tree.map(lambda a, b: jnp.where(take.reshape(take.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def fit_with_look_choice(items: Sequence, targets: Sequence[LandmarkTargets],
                         fit: Callable[[list[LandmarkTargets]], FitResult],
                         on_second_fit: Callable[[], None] | None = None) -> tuple[list[LandmarkTargets], FitResult]:
    """The landmark fit of ``items`` and, where an item's two looks disagree throughout, a second fit leaning to
    the look the first explains (:func:`lean_on_explained_looks`); only those rows are taken from the second.

    ``targets``: each item's; ``fit``: stacks (and pads) a list of per-item targets and fits them as one batch (the
    same compiled program both times). ``on_second_fit`` is called before a second fit. Returns the per-item
    targets of the result and the result.

    A second fit's confidence keeps the first targets' :func:`flamejax.fit.target_agreement` as a factor: its
    own targets weigh every point fully, but the detector's looks still disagreed. At 50-75° of yaw the fits'
    confidence told the fits above 8 % NME no better than chance before (AUC 0.46 / 0.58 on two draws of rendered
    heads) and 0.81 / 0.85 with it (``benchmarks/RESULTS.md``)."""
    result = fit(list(targets))
    fitted68 = np.asarray(result.landmarks.lmk68)
    leaning, changed = lean_on_explained_looks(items, targets, fitted68)
    if not changed:
        return list(targets), result
    if on_second_fit is not None:
        on_second_fit()
    second = fit(leaning)
    if second.confidence is not None:
        agreement = np.ones(fitted68.shape[0], np.float32)
        agreement[changed] = [float(target_agreement(targets[i].lmk68_weight)) for i in changed]
        second = dataclasses.replace(second, confidence=second.confidence * jnp.asarray(agreement))
    return leaning, rows_from(np.isin(np.arange(fitted68.shape[0]), changed), second, result)


def look_disagreement_of(item) -> float:
    """:func:`flamejax.fit.look_disagreement` of an item's two MediaPipe looks; 0 for hand-annotated items (their
    targets are the annotation) and for items without MediaPipe's points (targets built elsewhere)."""
    if getattr(item, "annotated68", None) is not None or getattr(item, "points478", None) is None:
        return 0.0
    return look_disagreement(item.points478, getattr(item, "mirrored478", None))


def detection_doubt(detection_score: float | None, quality: QualityConfig = QualityConfig(),
                    lost_on_crop: bool = False, look_disagreement: float = 0.0) -> str | None:
    """Why a fit is suspect for its face detection, or None: the face detector's score
    (``Preprocessed.confidence``) below ``quality.min_detection_score``, FaceMesh finding no face again on the
    aligned crop (``Preprocessed.lost_on_crop``), or MediaPipe's two looks at the face disagreeing by more than
    ``quality.max_look_disagreement`` (:func:`look_disagreement_of`)."""
    doubts = []
    if detection_score is not None and detection_score < quality.min_detection_score:
        doubts.append(f"face detector's score {detection_score:.2f} (less than {quality.min_detection_score})")
    if lost_on_crop:
        doubts.append("FaceMesh's own detector found no face again on the aligned crop around the one it found")
    if doubts:
        doubts = [" and ".join(doubts) + ": it may have taken something else for a face (an ear or the back of a "
                  "head seen in profile)"]
    if look_disagreement > quality.max_look_disagreement:
        doubts.append(f"MediaPipe's looks at the photograph and its mirror image disagree by {look_disagreement:.2f} "
                      f"of the face size (more than {quality.max_look_disagreement}): one of them folded the face, "
                      "and the fit leans to the one it explains")
    return "; ".join(doubts) if doubts else None


def detection_doubt_of(item, quality: QualityConfig = QualityConfig()) -> str | None:
    """:func:`detection_doubt` of a preprocessed item (``Preprocessed`` or one of its kind): its face detector's
    score (``confidence``; not judged where the item has none), ``lost_on_crop`` and :func:`look_disagreement_of`."""
    return detection_doubt(getattr(item, "confidence", None), quality, bool(getattr(item, "lost_on_crop", False)),
                           look_disagreement_of(item))


def judge(result: FitResult, vertices: np.ndarray, quality: QualityConfig = QualityConfig(),
          doubt: str | None = None) -> tuple[str, str]:
    """(verdict, reason) of one un-batched result: failed stages, then plausibility checks; ``doubt``: why the
    face's detection is doubted (:func:`detection_doubt_of` the item), or None."""
    status = Status(int(result.status))
    if status != Status.OK:
        return "failed", status.reason
    if not np.all(np.isfinite(vertices)):
        return "failed", "the fitted mesh has non-finite vertices"
    reasons = []
    nme = float(result.nme)
    if not np.isfinite(nme) or nme > quality.max_nme:
        reasons.append(f"landmark error {100 * nme:.1f}% of the eye-corner distance "
                       f"(more than {100 * quality.max_nme:.0f}%)")
    in_camera = np.asarray(cam.world_to_camera(result.camera, jnp.asarray(vertices)))
    distance = -float(np.mean(in_camera[:, 2]))
    if np.any(in_camera[:, 2] >= 0):
        reasons.append("part of the head is behind the camera")
    elif not quality.distance_range[0] <= distance <= quality.distance_range[1]:
        reasons.append(f"camera {distance:.2f} m from the head (plausible: {quality.distance_range[0]}-"
                       f"{quality.distance_range[1]} m)")
    _, pitch, roll = np.asarray(cam.yaw_pitch_roll(result.camera)).tolist()
    if max(abs(pitch), abs(roll)) > quality.max_abs_pitch_roll:
        reasons.append(f"head tipped by pitch {pitch:+.0f} / roll {roll:+.0f} degrees (upside down?)")
    if np.max(np.abs(np.asarray(result.landmarks.lmk68))) > quality.max_landmark_extent:
        reasons.append("fitted landmarks fall outside the image")
    if doubt is not None:
        reasons.append(doubt)
    if result.confidence is not None and float(result.confidence) < quality.min_confidence:
        reasons.append(f"confidence {float(result.confidence):.2f} (less than {quality.min_confidence}): the "
                       "landmarks disagree with every head pose near the fit, or the detector's two looks at the "
                       "face disagree")
    return ("suspect", "; ".join(reasons)) if reasons else ("ok", "")


def _start_from_networks(networks: Networks, model: FlameModel, items: Sequence, batch_size: int
                         ) -> tuple[FitStart | None, str]:
    """DECA/MICA starts for a batch (``None`` and ``"linear"`` when no network runs), cut to the model's sizes."""
    if networks.method == "linear":
        return None, "linear"
    from flamejax.init import initialise_batch_from_networks

    crops = [it.crop for it in items]
    lmk68 = np.stack([it.lmk68 * (it.crop.shape[0] / it.image.shape[0]) for it in items])
    inits = initialise_batch_from_networks(crops, lmk68, networks.method, networks.deca, networks.mica)
    if inits is None:
        return None, "linear"
    n_shape, n_exp = model.num_shape, model.num_expression

    def cut(values, n):
        return np.zeros(n, np.float32) if values is None else np.asarray(values, np.float32)[:n]

    rows = [(cut(i.shape, n_shape), cut(i.expression, n_exp), cut(i.jaw, 3), np.float32(i.shape is not None),
             np.float32(i.expression is not None)) for i in inits]
    rows += [(np.zeros(n_shape, np.float32), np.zeros(n_exp, np.float32), np.zeros(3, np.float32),
              np.float32(0), np.float32(0))] * (batch_size - len(rows))
    columns = [jnp.asarray(np.stack(c)) for c in zip(*rows)]
    start = FitStart(shape=columns[0], expression=columns[1], jaw_pose=columns[2], shape_given=columns[3],
                     expression_given=columns[4])
    providers = ", ".join(f"{k}: {v}" for k, v in inits[0].providers.items())
    return start, f"{inits[0].method} ({providers})"


@jax.jit
def _meshes_and_conventions(model: FlameModel, params, camera) -> tuple[jax.Array, LandmarkConventions]:
    """Posed vertices of the full ``model`` and the 68 points in both conventions, per image of a batch: one
    program, in which XLA shares the FLAME forward pass of the two (no second pass on the landmark sub-model)."""
    return jax.vmap(lambda p, c: (flame_forward(model, p).vertices, landmark_conventions(model, p, c)))(params, camera)


@dataclasses.dataclass(frozen=True, eq=False)
class Fitter:
    """Fits lists of preprocessed images; build it with :meth:`create`."""

    model: FlameModel
    """The full model (placed on the devices)."""
    fit_model: FlameModel
    """The model restricted to the landmark vertices (placed), what the landmark stages evaluate."""
    config: FitConfig
    batch_size: int
    """Images per compiled batch (a multiple of the device count); shorter batches are padded."""
    mesh: jax.sharding.Mesh
    networks: Networks = Networks()
    photometric: PhotometricBundle | None = None
    """Photometric mode after the landmark fit when given."""
    uv_layout: object | None = None
    """:class:`flamejax.render.UVLayout` of the model: texture coordinates of exported meshes, and what photometric
    mode renders with."""
    quality: QualityConfig = QualityConfig()

    @staticmethod
    def create(model: FlameModel, config: FitConfig = FitConfig(), *, batch_size: int = 16,
               networks: Networks = Networks(), photometric: PhotometricBundle | None = None,
               uv_layout=FIND_UV_LAYOUT, devices: int | None = None,
               quality: QualityConfig = QualityConfig()) -> "Fitter":
        """A fitter over the first ``devices`` local devices (default all; one device: plain unsharded arrays).

        ``uv_layout`` is looked up in the weights folders unless given (``None``: meshes without UVs); photometric
        mode requires it.
        """
        if uv_layout is FIND_UV_LAYOUT:
            uv_layout = find_uv_layout(required=photometric is not None)
        if photometric is not None and uv_layout is None:
            raise ValueError("photometric mode needs the FLAME UV layout (uv_template: head_template_mesh.obj)")
        mesh = local_mesh(devices)
        place = functools.partial(replicate, mesh=mesh) if mesh.size > 1 else _unchanged
        fit_model = landmark_model(model, face=reads_face(None, config.landmark))
        return Fitter(model=place(model), fit_model=place(fit_model), config=config,
                      batch_size=round_batch_size(batch_size, mesh), mesh=mesh, networks=networks,
                      photometric=photometric, uv_layout=uv_layout, quality=quality)

    @property
    def mode(self) -> str:
        return "landmark" if self.photometric is None else "photometric"

    def _place_batch(self, tree):
        return shard_batch(tree, self.mesh) if self.mesh.size > 1 else tree

    def __call__(self, items: Sequence, names: Sequence[str] | None = None,
                 on_stage: Callable[[str], None] | None = None) -> list[ImageFit]:
        """Fit any number of preprocessed images, ``batch_size`` at a time, in order."""
        items = list(items)
        names = list(names) if names is not None else [getattr(it, "source", f"image{i}")
                                                        for i, it in enumerate(items)]
        if len(names) != len(items):
            raise ValueError(f"{len(items)} images but {len(names)} names")
        fits: list[ImageFit] = []
        for start in range(0, len(items), self.batch_size):
            fits += self.fit_batch(items[start:start + self.batch_size], names[start:start + self.batch_size],
                                   on_stage)
        return fits

    def fit_batch(self, items: Sequence, names: Sequence[str],
                  on_stage: Callable[[str], None] | None = None) -> list[ImageFit]:
        """At most ``batch_size`` images as one padded batch: start, landmark fit (a second one where an image's
        two looks disagree, :func:`fit_with_look_choice`), photometric fit, meshes.

        ``on_stage`` is called with each stage's name as it begins (progress display).
        """
        report = on_stage or (lambda stage: None)
        if not 0 < len(items) <= self.batch_size:
            raise ValueError(f"fit_batch takes 1 to {self.batch_size} images, got {len(items)}")
        started = time.perf_counter()
        with CompileClock() as clock:
            report(f"start ({self.networks.method})")
            start, method = _start_from_networks(self.networks, self.model, items, self.batch_size)
            start = None if start is None else self._place_batch(start)
            report("landmark fit")
            per_item, result = fit_with_look_choice(
                items, [targets_of(it) for it in items],
                lambda targets: jax.block_until_ready(fit_landmarks_batch(
                    self.fit_model, self._place_batch(stack_targets(targets, self.batch_size)), self.config, start)),
                lambda: report("landmark fit, leaning to the look it explains"))
            if self.photometric is not None:
                report("photometric fit")
                result = self._photometric(items, self._place_batch(stack_targets(per_item, self.batch_size)), result)
            report("meshes")
            result, (vertices, conventions) = jax.tree.map(np.asarray, (
                result, _meshes_and_conventions(self.model, result.params, result.camera)))
        count = len(items)
        compile_share = clock.seconds / count
        fit_share = max(time.perf_counter() - started - clock.seconds, 0.0) / count
        fits = []
        for i, name in enumerate(names):
            row = jax.tree.map(lambda a: a[i], result)
            verdict, reason = judge(row, vertices[i], self.quality, detection_doubt_of(items[i], self.quality))
            fits.append(ImageFit(name=name, result=row, vertices=vertices[i], verdict=verdict, reason=reason,
                                 init_method=method, fit_seconds=fit_share, compile_seconds=compile_share,
                                 conventions=jax.tree.map(lambda a: a[i], conventions)))
        return fits

    def _photometric(self, items: Sequence, targets: LandmarkTargets, landmark_result: FitResult) -> FitResult:
        bundle = self.photometric
        size = items[0].image.shape[0]
        pad = self.batch_size - len(items)
        images = np.stack([it.image for it in items] + [np.zeros((size, size, 3), np.float32)] * pad)
        masks = np.stack([it.mask for it in items] + [np.zeros((size, size), np.float32)] * pad)
        photo_targets = PhotometricTargets(self._place_batch(jnp.asarray(images)),
                                           self._place_batch(jnp.asarray(masks)), targets)
        return fit_photometric_batch(self.model, self.uv_layout, photo_targets, landmark_result, bundle.config,
                                     bundle.albedo)


def _unchanged(tree):
    return tree
