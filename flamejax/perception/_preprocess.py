"""One call from a photograph to the fitting targets: aligned image, landmarks, mask and the way back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.perception._align import ALIGN_SCALE, align_face
from flamejax.perception._image import ImageSource, load_image, source_name
from flamejax.perception._landmarks import (DETECT_MAX_SIDE, FaceLandmarks, detect_landmarks, redetect,
                                            redetect_mirrored)
from flamejax.perception._layout import to_68, to_iris
from flamejax.perception._mask import (FOREHEAD_KEPT, MIN_POINTS_INSIDE, WIDE_CONTEXT_COVERAGE, landmark_face_mask,
                                       person_in_context, points_a_silhouette_covers, points_inside)
from flamejax.perception._matting import composite_over_white, matte
from flamejax.perception._onnx import ModelSource
from flamejax.perception._parsing import parse_face
from flamejax.perception._transform import (Affine, compose_affine, inside_source, invert_affine, resize,
                                            scale_affine)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How :func:`preprocess` turns a photograph into fitting targets (defaults: the reference's numbers)."""

    crop_size: int = 512
    """Side of the aligned crop (:attr:`Preprocessed.crop`)."""
    fit_size: int = 256
    """Side of the image the fit runs on (:attr:`Preprocessed.image`)."""
    face_index: int | None = None
    """Face to use, numbered left to right from 0; ``None``: the largest."""
    redetect_on_crop: bool = True
    """Detect the landmarks again on the aligned crop (more accurate, as the reference does)."""
    mirror_check: bool = True
    """Also detect on the mirror image of the aligned crop (:attr:`Preprocessed.mirrored478`): a second look
    that the fit can choose from where FaceMesh fails at strong yaw (one more FaceMesh run)."""
    crop_scale: float = ALIGN_SCALE
    """Half side of the crop in units of max(2 |eye->eye|, 1.8 |eye->mouth|)."""
    detect_max_side: int = DETECT_MAX_SIDE
    """Detection on the photograph runs on a copy downscaled to at most this many pixels."""
    use_parsing: bool = True
    """Use a face-parsing model for the mask when one is given or found; else the landmark mask."""
    parsing_model: ModelSource = None
    """The face-parsing ONNX model (path or opened); ``None`` looks in the weights folders."""
    use_matting: bool = False
    """Composite the person over white with a matting model found in the weights folders. Matting runs on
    the aligned crop (the reference mattes the whole photograph first; at crop resolution the face keeps more
    detail and a huge photograph costs no more)."""
    matting_model: ModelSource = None
    """A matting ONNX model (path or opened); giving one turns matting on."""
    forehead: float = FOREHEAD_KEPT
    """Landmark mask: fraction of the forehead above the brows kept (see :func:`landmark_face_mask`)."""
    person_silhouette: bool = True
    """Segment the person from the background (:attr:`Preprocessed.person`, MediaPipe's selfie segmentation, or
    the matting alpha when matting ran): the landmark fit keeps the face inside that outline."""

    def __post_init__(self) -> None:
        if self.fit_size < 16 or self.crop_size < self.fit_size:
            raise ValueError(f"need 16 <= fit_size <= crop_size, got fit_size={self.fit_size}, "
                             f"crop_size={self.crop_size}")


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessed:
    """Fitting targets of one face. Pixel coordinates: x right, y down, pixel centres at half-integers.

    "fit pixels" are pixels of :attr:`image` (``fit_size`` square); :attr:`fit_to_original` maps them onto
    the photograph, so every result (landmarks, renders, camera) can be drawn on it.
    """

    image: Float[np.ndarray, "S S 3"]
    """Aligned face at fit resolution, RGB float32 in [0, 1]."""
    crop: UInt8[np.ndarray, "C C 3"]
    """Aligned face at crop resolution, RGB uint8 (matted over white when matting ran)."""
    points478: Float[np.ndarray, "478 2"]
    """MediaPipe landmarks in fit pixels (float32)."""
    mirrored478: Float[np.ndarray, "478 2"] | None
    """MediaPipe landmarks found on the mirror image of the crop, mapped back and renumbered (fit pixels,
    float32); ``None`` when ``PreprocessConfig.mirror_check`` is off or FaceMesh found no face there."""
    depth478: Float[np.ndarray, "478"]
    """MediaPipe relative depth in fit pixels (float32)."""
    lmk68: Float[np.ndarray, "68 2"]
    """iBUG-68 landmarks in fit pixels (float32)."""
    iris: Float[np.ndarray, "10 2"]
    """Iris points in fit pixels: subject's right iris (centre + 4), then left (float32)."""
    mask: Float[np.ndarray, "S S"]
    """Photometric-loss face mask at fit resolution in [0, 1] (float32); zero where the aligned crop reaches past
    the photograph (white there)."""
    mask_source: str
    """``"parsing"`` or ``"landmarks"``."""
    parsing: UInt8[np.ndarray, "S S"] | None
    """CelebAMask-HQ labels at fit resolution when a parsing model ran, else None."""
    alpha: Float[np.ndarray, "S S"] | None
    """Matting alpha at fit resolution when matting ran, else None."""
    fit_to_original: Affine
    """(2, 3) similarity: fit pixels -> photograph pixels (float64)."""
    original_to_fit: Affine
    """(2, 3) similarity: photograph pixels -> fit pixels (float64)."""
    crop_to_original: Affine
    """(2, 3) similarity: crop pixels -> photograph pixels (float64)."""
    original_size: tuple[int, int]
    """(height, width) of the photograph after EXIF orientation."""
    confidence: float
    """Face detection score in [0, 1] (see :class:`FaceLandmarks`)."""
    num_faces: int
    face_index: int
    redetected: bool
    """Whether the landmarks come from a detection on the aligned crop (else mapped from the photograph)."""
    source: str
    """The image's path, or ``"<array>"`` / ``"<bytes>"``."""
    notes: tuple[str, ...]
    """What the pipeline did differently from the default path, and why."""
    annotated68: Float[np.ndarray, "68 2"] | None = None
    """Hand-annotated 68 points in fit pixels (see :func:`flamejax.perception.annotated`); when present the fit
    takes its 68-point targets from them instead of from MediaPipe."""
    person: Float[np.ndarray, "S S"] | None = None
    """The person's silhouette at fit resolution in [0, 1] (float32): the matting alpha when matting ran, else
    MediaPipe's selfie segmentation; None when ``PreprocessConfig.person_silhouette`` is off or the silhouette
    leaves out more than 5 % of FaceMesh's points (then it is not trusted; see :attr:`notes`)."""
    lost_on_crop: bool = False
    """FaceMesh, run again on the aligned crop around the face it found on the photograph
    (``PreprocessConfig.redetect_on_crop``), found no face there with its own detector (the face found there only
    on crops around the face detector's box counts as lost; its points are used): the face it found may be
    something else (at 80-90° of yaw, an ear or an eye region). The fit is then reported as suspect
    (``flamejax.fitter.judge``)."""
    searched: bool = False
    """FaceMesh's own detector missed the face on the photograph; it was found on crops around the face detector's
    box (:attr:`flamejax.perception.FaceLandmarks.searched`: a turned head, a small face in a large picture)."""
    quarter_turns: int = 0
    """The face was found on the photograph turned by this many quarter turns counterclockwise
    (:attr:`flamejax.perception.FaceLandmarks.quarter_turns`: a face lying on its side or upside down)."""


def preprocess(image: ImageSource, config: PreprocessConfig = PreprocessConfig()) -> Preprocessed:
    """Photograph (path, bytes or array) -> aligned image, landmarks and mask for fitting.

    Steps: load (EXIF, RGB8) -> detect landmarks on the photograph -> FFHQ-align to ``crop_size`` ->
    optional matting over white -> detect again on the crop (falling back to the mapped photograph landmarks)
    -> downsize to ``fit_size`` -> mask from a parsing model if available, else from landmarks -> the person's
    silhouette (matting alpha, else selfie segmentation).

    Raises:
      ImageReadError, ImageTooSmallError, NoFaceError, FaceIndexError; MissingFileError for an explicit
      model path that does not exist.
    """
    name = source_name(image)
    original = load_image(image)
    notes: list[str] = []
    found = detect_landmarks(original, config.face_index, name=name, max_side=config.detect_max_side)
    if found.num_faces > 1:
        notes.append(f"{found.num_faces} faces found; using face {found.face_index} (numbered left to right)")
    if found.quarter_turns:
        notes.append(f"the face lies turned by about {90 * found.quarter_turns} degrees; its landmarks are FaceMesh's "
                     "on the photograph turned the other way (it scored higher there)")
    if found.searched:
        notes.append("FaceMesh's own detector found no face on the photograph; found on crops around the face "
                     "detector's box (a turned head or a small face)")
    aligned = align_face(original, to_68(found.points), config.crop_size, scale=config.crop_scale)
    crop, crop_alpha = _matted(aligned.image, config, notes)
    landmarks = found.transformed(aligned.to_crop)
    redetected = None
    if config.redetect_on_crop:
        redetected = redetect(crop, landmarks)
        if redetected is None:
            notes.append("no face found again on the aligned crop; using the photograph's landmarks")
        elif redetected.searched:
            notes.append("FaceMesh's own detector found no face again on the aligned crop; found on crops around "
                         "the face detector's box")
    to_fit = scale_affine(config.fit_size / config.crop_size)
    fit_landmarks = (landmarks if redetected is None else redetected).transformed(to_fit)
    mirrored = redetect_mirrored(crop, landmarks) if config.mirror_check else None
    if config.mirror_check and mirrored is None:
        notes.append("no face found on the mirrored crop; no second set of landmarks to choose from")
    fit_image = resize(crop, config.fit_size, config.fit_size)
    mask, mask_source, parsing = _face_mask(crop, fit_landmarks, config, notes)
    original_to_fit = compose_affine(to_fit, aligned.to_crop)
    mask = _photographed(mask, original.shape, original_to_fit, notes)
    alpha = None if crop_alpha is None else resize(crop_alpha, config.fit_size, config.fit_size)
    person = _person(alpha, fit_landmarks.points, config, notes,
                     lambda: person_in_context(original, aligned.to_crop, config.crop_size, config.fit_size, crop))
    return Preprocessed(
        image=fit_image.astype(np.float32) / 255.0, crop=crop, points478=fit_landmarks.points,
        mirrored478=None if mirrored is None else mirrored.transformed(to_fit).points,
        depth478=fit_landmarks.depth, lmk68=to_68(fit_landmarks.points), iris=to_iris(fit_landmarks.points),
        mask=mask, mask_source=mask_source, parsing=parsing, alpha=alpha,
        person=person,
        fit_to_original=invert_affine(original_to_fit), original_to_fit=original_to_fit,
        crop_to_original=aligned.to_original, original_size=original.shape[:2], confidence=found.confidence,
        num_faces=found.num_faces, face_index=found.face_index, redetected=redetected is not None,
        lost_on_crop=config.redetect_on_crop and (redetected is None or redetected.searched),
        searched=found.searched, quarter_turns=found.quarter_turns, source=name,
        notes=tuple(notes))


def _photographed(mask: np.ndarray, original_shape: tuple[int, ...], original_to_fit: np.ndarray,
                  notes: list[str]) -> np.ndarray:
    """``mask`` without the fit pixels the photograph does not reach: the aligned crop is white there (a face at
    the photograph's edge), and a photometric fit would take that white for the face's colour."""
    inside = inside_source(original_shape, original_to_fit, mask.shape[0])
    total = float(mask.sum())
    outside = float(mask[~inside].sum()) / total if total > 0 else 0.0
    if outside >= 0.01:
        notes.append(f"{100 * outside:.0f}% of the face mask lies outside the photograph; left out of the "
                     "photometric fit (FaceMesh's points there are guesses)")
    return np.where(inside, mask, 0.0).astype(np.float32)


def _matted(crop: np.ndarray, config: PreprocessConfig, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    if not (config.use_matting or config.matting_model is not None):
        return crop, None
    alpha = matte(crop, config.matting_model)
    if alpha is None:
        notes.append("no matting model found (manifest key 'matting'); the background is kept")
        return crop, None
    return composite_over_white(crop, alpha), alpha


def _person(alpha: np.ndarray | None, points478: np.ndarray, config: PreprocessConfig, notes: list[str],
            segment: Callable[[], tuple[np.ndarray, float]]) -> np.ndarray | None:
    if not config.person_silhouette:
        return None
    if alpha is not None:
        person = alpha
    else:
        person, covered = segment()
        if covered > WIDE_CONTEXT_COVERAGE:
            notes.append(f"the person segmentation covered {100 * covered:.0f}% of the aligned crop; segmented again "
                         "on a crop twice as wide")
    inside = points_inside(person, points_a_silhouette_covers(points478))
    if inside < MIN_POINTS_INSIDE:
        notes.append(f"the person segmentation covers only {100 * inside:.0f}% of the face's landmarks; fitting "
                     "without the silhouette")
        return None
    return np.asarray(person, np.float32)


def _face_mask(crop: np.ndarray, fit_landmarks: FaceLandmarks, config: PreprocessConfig,
               notes: list[str]) -> tuple[np.ndarray, str, np.ndarray | None]:
    if config.use_parsing:
        parsed = parse_face(crop, config.parsing_model, output_size=config.fit_size)
        if parsed is not None:
            return parsed.mask, "parsing", parsed.labels
        notes.append("no face-parsing model found (manifest key 'face_parsing'); mask from landmarks")
    return landmark_face_mask(fit_landmarks.points, config.fit_size, forehead=config.forehead), "landmarks", None

