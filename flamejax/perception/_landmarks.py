"""MediaPipe FaceMesh landmarks (478 points: 468 mesh + 10 iris) with the models bundled in mediapipe 0.10.21.

Detection runs on a copy of the image no larger than ``max_side`` pixels; MediaPipe returns coordinates
normalised to the image extent, so they are scaled back to the full-resolution frame exactly. When FaceMesh's
own detector finds nothing (small faces in a large picture, a turned head), BlazeFace's full-range and then its
short-range detector propose boxes, and FaceMesh runs again on square crops around each box taken from the
full-resolution image, and on their mirror images, until it finds a face there that overlaps the box; where that
finds none, the short-range detector runs over overlapping tiles and FaceMesh on one crop around each of its boxes.

Confidence: FaceMesh reports no score per face. :attr:`FaceLandmarks.confidence` is the score of MediaPipe's
short-range BlazeFace detector (the detector FaceMesh itself uses, same model) run on a square crop of twice
the face's landmark box around that face, taking the best detection whose centre lies inside the box; 0.0
when it finds none there. It is a detection probability in [0, 1], not a landmark-accuracy measure.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from flamejax.perception._errors import FaceIndexError, NoFaceError
from flamejax.perception._image import ARRAY_NAME, check_image_size, to_rgb8
from flamejax.perception._layout import MEDIAPIPE_MIRROR
from flamejax.perception._transform import (Affine, affine_scale, compose_affine, invert_affine, scale_affine,
                                            transform_points, warp_image)

MAX_FACES = 10
"""Most faces FaceMesh looks for in one image."""
DETECT_MAX_SIDE = 2048
"""Images larger than this (longest side, pixels) are area-downscaled for detection."""
_CONFIDENCE_CONTEXT = 2.0
"""Side of the square crop scored by BlazeFace, in units of the landmark box's longer side."""
_CROP_TRIES = ((2.2, False), (2.2, True), (1.6, False), (1.6, True), (2.8, False), (2.8, True))
"""Square crops around a detection box FaceMesh is tried on in turn until it finds the face there: (side in units of
the box's longer side, mirrored). At a turned head its own detector finds the face in some framings only."""
_TILE_TRIES = ((2.2, False),)
"""The crop FaceMesh is tried on around a box the short-range detector finds in a tile: one, unmirrored (more tries
there found wrong meshes on turned heads, at 70-90 degrees of yaw, and no more real faces)."""
_MIN_BOX_OVERLAP = 0.3
"""Least intersection over union of a detector's box and the box of the points FaceMesh finds in a crop around it:
below it FaceMesh's face is not the one detected (a mesh folded onto part of a turned head)."""
_SAME_FACE_IOU = 0.3
"""Boxes overlapping by more than this (intersection over union) are taken to hold the same face."""
_CROP_MAX_SIDE = 768
UPRIGHT_SCORE = 0.85
"""Detector's score (:attr:`FaceLandmarks.confidence`) below which :func:`detect_landmarks` also looks at the face
turned by quarter turns. FaceMesh follows a face rolled by up to about 90 degrees, but it lays an upright mesh over a
face upside down (its eyes on the mouth); BlazeFace scores such a mesh's box 0.54-0.76, the upright faces of the
shared photographs 0.91-0.94 (``benchmarks/RESULTS.md``, photographs turned by quarter turns)."""
LOOKS_AGREE = 0.12
"""Mean distance of two looks' 478 points, over the square root of their box's area, below which they agree
(:func:`_agreed_look`): FaceMesh's right looks at one face by different quarter turns differ by 0.01-0.10, a look
that took an upside-down face for an upright one by 0.3-0.75."""
UPRIGHT_MARGIN = 0.1
"""How much higher than the face as found the detector must score a look at it turned by quarter turns to take its
place (:func:`_agreed_look`). Turned the right way, the shared photographs' faces scored 0.16-0.78 higher; wrong
looks at rendered faces turned 50-75 degrees away, which agree with each other there, up to 0.09 higher."""
_UPRIGHT_CONTEXT = 3.0
"""Side of the square crop around a face turned by quarter turns, in units of its landmark box's longer side."""
_TILE_PARTS = (2, 4)
"""Tilings tried when no detector finds a face in the whole image: tiles of 1/2 and 1/4 of the longer side."""


@dataclasses.dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """One face's MediaPipe landmarks in the pixel frame of the image they were detected in."""

    points: Float[np.ndarray, "478 2"]
    """x right, y down, pixel centres at half-integers (float32)."""
    depth: Float[np.ndarray, "478"]
    """MediaPipe z (smaller = nearer the camera), in the same pixel units as x (float32)."""
    confidence: float
    """Detection score in [0, 1]: FaceMesh gives none, so this is the score of MediaPipe's short-range
    BlazeFace detector (the model FaceMesh detects with) on a square crop of twice this face's landmark box,
    0.0 if BlazeFace does not find the face there. A detection probability, not a landmark-accuracy measure."""
    num_faces: int
    """How many faces were found in the image."""
    face_index: int
    """Index of this face among them, numbered left to right by box centre."""
    box: Float[np.ndarray, "4"]
    """x0, y0, x1, y1 of the 478 points (float32)."""
    searched: bool = False
    """FaceMesh's own detector missed the face on the whole picture; it was found on crops around a face detector's
    box (a turned head, a small face in a large picture)."""
    quarter_turns: int = 0
    """The face was found on the picture turned by this many quarter turns counterclockwise (0-3): it lies rolled by
    about that many times 90 degrees, and FaceMesh's look at it upright scored higher (:data:`UPRIGHT_SCORE`).
    The points are in the picture's own frame either way."""

    def transformed(self, matrix: Affine) -> FaceLandmarks:
        """The same landmarks mapped into another frame by a similarity ``matrix`` (depth scaled with it)."""
        points = transform_points(matrix, self.points)
        return dataclasses.replace(self, points=points, depth=(self.depth * affine_scale(matrix)).astype(np.float32),
                                   box=points_box(points))

    def unmirrored(self, width: int) -> FaceLandmarks:
        """Landmarks found in the mirror image (``image[:, ::-1]``, ``width`` pixels wide) of a picture, in that
        picture's frame: x reflected back and the points renumbered, so that each index names the same part of
        the face as in a detection on the picture itself (see :data:`MEDIAPIPE_MIRROR`)."""
        points, depth = _unmirrored(self.points, self.depth, width)
        return dataclasses.replace(self, points=points, depth=depth, box=points_box(points))


def _unmirrored(points: Float[np.ndarray, "478 2"], depth: Float[np.ndarray, "478"],
                width: float) -> tuple[Float[np.ndarray, "478 2"], Float[np.ndarray, "478"]]:
    """Points and depth found in the mirror image of a picture ``width`` pixels wide, in that picture's frame and
    numbering (x reflected back, points renumbered by :data:`MEDIAPIPE_MIRROR`); dtypes kept."""
    flip, shift = np.array([-1.0, 1.0], points.dtype), np.array([width, 0.0], points.dtype)
    return points[MEDIAPIPE_MIRROR] * flip + shift, depth[MEDIAPIPE_MIRROR]


def points_box(points: Float[np.ndarray, "N 2"]) -> Float[np.ndarray, "4"]:
    """x0, y0, x1, y1 bounding box of points (float32)."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


_local = threading.local()


def _face_mesh():
    """This thread's FaceMesh (creating one loads its graph; instances are not thread-safe)."""
    if getattr(_local, "face_mesh", None) is None:
        from mediapipe.python.solutions import face_mesh

        _local.face_mesh = face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                              max_num_faces=MAX_FACES, min_detection_confidence=0.5)
    return _local.face_mesh


def _face_detector(full_range: bool):
    """This thread's BlazeFace detector: short range (faces within ~2 m) or full range (small faces)."""
    attribute = "full_range_detector" if full_range else "short_range_detector"
    if getattr(_local, attribute, None) is None:
        from mediapipe.python.solutions import face_detection

        detector = face_detection.FaceDetection(model_selection=int(full_range), min_detection_confidence=0.2)
        setattr(_local, attribute, detector)
    return getattr(_local, attribute)


def _mesh_faces(image: UInt8[np.ndarray, "H W 3"]) -> list[tuple[np.ndarray, np.ndarray]]:
    """FaceMesh on ``image``: (points (478, 2), depth (478,)) per face, float64, in its pixel frame."""
    result = _face_mesh().process(image)
    height, width = image.shape[:2]
    faces = []
    for face in result.multi_face_landmarks or ():
        xyz = np.array([(p.x, p.y, p.z) for p in face.landmark], np.float64)
        faces.append((xyz[:, :2] * (width, height), xyz[:, 2] * width))
    return faces


def _detect_boxes(image: UInt8[np.ndarray, "H W 3"], full_range: bool) -> list[tuple[float, np.ndarray]]:
    """BlazeFace on ``image``: (score, box x0 y0 x1 y1 in pixels) per detection."""
    height, width = image.shape[:2]
    boxes = []
    for detection in _face_detector(full_range).process(image).detections or ():
        rel = detection.location_data.relative_bounding_box
        corners = np.array([rel.xmin, rel.ymin, rel.xmin + rel.width, rel.ymin + rel.height])
        box = corners * np.tile([width, height], 2)
        boxes.append((float(detection.score[0]), box))
    return boxes


def _square_crop(center: np.ndarray, side: float, out_side: int) -> Affine:
    """The map from source pixels to an ``out_side``-pixel square of source side ``side`` centred at ``center``."""
    scale = out_side / side
    return np.array([[scale, 0.0, out_side / 2 - scale * center[0]], [0.0, scale, out_side / 2 - scale * center[1]]])


def _box_crop(image: np.ndarray, box: np.ndarray, context: float) -> tuple[np.ndarray, Affine]:
    """A square crop of ``context`` times the box's longer side around its centre, at most _CROP_MAX_SIDE px."""
    side = context * float(max(box[2] - box[0], box[3] - box[1], 1.0))
    out_side = int(min(_CROP_MAX_SIDE, max(64, round(side))))
    to_crop = _square_crop((box[:2] + box[2:]) / 2, side, out_side)
    return warp_image(image, to_crop, out_side, border=0), to_crop


def _faces_in_boxes(image: np.ndarray, boxes: list[tuple[float, np.ndarray]],
                    tries: tuple[tuple[float, bool], ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """FaceMesh's face in each box (:func:`_face_in_box`) where no face was found before, each face once."""
    faces: list[tuple[np.ndarray, np.ndarray]] = []

    def found_before(box: np.ndarray) -> bool:
        return any(_box_iou(points_box(points), box) > _SAME_FACE_IOU for points, _ in faces)

    for _, box in boxes:
        if len(faces) == MAX_FACES:
            break
        if not found_before(box) and (face := _face_in_box(image, box, tries)) is not None \
                and not found_before(points_box(face[0])):
            faces.append(face)
    return faces


def _face_in_box(image: np.ndarray, box: np.ndarray,
                 tries: tuple[tuple[float, bool], ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """FaceMesh on the crops ``tries`` (see :data:`_CROP_TRIES`) around a detector's ``box`` in turn: the first face
    it finds nearest a crop's centre that overlaps the box (:data:`_MIN_BOX_OVERLAP`), mapped back to ``image``."""
    for context, mirrored in tries:
        crop, to_crop = _box_crop(image, box, context)
        found = _middle_face(_mesh_faces(np.ascontiguousarray(crop[:, ::-1]) if mirrored else crop), crop)
        if not found:
            continue
        (points, depth), = found
        if mirrored:
            points, depth = _unmirrored(points, depth, crop.shape[1])
        back = invert_affine(to_crop)
        points = transform_points(back, points)
        if _box_iou(points_box(points), box) >= _MIN_BOX_OVERLAP:
            return points, depth * affine_scale(back)
    return None


def _middle_face(faces: list[tuple[np.ndarray, np.ndarray]], image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Of FaceMesh's ``faces`` on a crop ``image`` around one face, the one whose points' mean lies nearest the
    crop's centre (none where there are none)."""
    centre = np.array(image.shape[1::-1]) / 2
    return [min(faces, key=lambda face: np.linalg.norm(face[0].mean(axis=0) - centre))] if faces else []


def _detector_boxes(image: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """BlazeFace's boxes on ``image``: the full-range model's, then the short-range one's, each by decreasing score."""
    return [*_by_score_non_overlapping(_detect_boxes(image, full_range=True)),
            *_by_score_non_overlapping(_detect_boxes(image, full_range=False))]


def _tiled_boxes(image: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """Short-range BlazeFace over overlapping tiles of 1/2 and 1/4 the longer side (finds small faces)."""
    height, width = image.shape[:2]
    boxes = []
    for parts in _TILE_PARTS:
        tile = int(np.ceil(max(height, width) / parts))
        for y0 in _tile_starts(height, tile):
            for x0 in _tile_starts(width, tile):
                part = np.ascontiguousarray(image[y0:y0 + tile, x0:x0 + tile])
                boxes += [(score, box + (x0, y0, x0, y0)) for score, box in _detect_boxes(part, full_range=False)]
    return _by_score_non_overlapping(boxes)


def _tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis: half-tile steps, the last tile flush with the end."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile, tile // 2))
    return starts + [length - tile]


def _by_score_non_overlapping(boxes: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """Boxes by decreasing score, without those overlapping a better one."""
    boxes = sorted(boxes, key=lambda b: -b[0])
    return [boxes[i] for i in _non_overlapping([box for _, box in boxes])]


def _non_overlapping(boxes: list[np.ndarray], max_iou: float = _SAME_FACE_IOU) -> list[int]:
    """Indices of the boxes that overlap no earlier kept box by more than ``max_iou``."""
    kept: list[int] = []
    for i, box in enumerate(boxes):
        if all(_box_iou(box, boxes[j]) <= max_iou for j in kept):
            kept.append(i)
    return kept


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def face_confidence(image: UInt8[np.ndarray, "H W 3"], box: Float[np.ndarray, "4"]) -> float:
    """Short-range BlazeFace score of the face in ``box`` (pixels), scored on a square crop around it."""
    crop, to_crop = _box_crop(image, np.asarray(box, np.float64), _CONFIDENCE_CONTEXT)
    x0, y0, x1, y1 = transform_points(to_crop, np.reshape(box, (2, 2))).ravel()
    scores = [score for score, found in _detect_boxes(crop, full_range=False)
              if x0 <= (found[0] + found[2]) / 2 <= x1 and y0 <= (found[1] + found[3]) / 2 <= y1]
    return max(scores, default=0.0)


def find_faces(image: UInt8[np.ndarray, "H W 3"],
               max_side: int = DETECT_MAX_SIDE) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """All faces in ``image`` as (points (478, 2), depth (478,)) in its pixel frame, numbered left to right, and
    whether they were searched for on crops (FaceMesh's own detector missed them on the whole picture)."""
    small, to_image = _detection_copy(image, max_side)
    faces = _mesh_faces(small)
    own = bool(faces)
    if own:
        faces = [_mapped(to_image, p, d) for p, d in faces]
    else:
        def faces_in(boxes: list[tuple[float, np.ndarray]], tries: tuple[tuple[float, bool], ...]) -> list:
            return _faces_in_boxes(image, [(score, transform_points(to_image, box.reshape(2, 2)).ravel())
                                           for score, box in boxes], tries)

        faces = faces_in(_detector_boxes(small), _CROP_TRIES) or faces_in(_tiled_boxes(small), _TILE_TRIES)
    return _left_to_right(faces), not own


def _detection_copy(image: np.ndarray, max_side: int) -> tuple[np.ndarray, Affine]:
    """``image`` area-downscaled to at most ``max_side`` pixels on its longer side, and the map back to it."""
    height, width = image.shape[:2]
    shrink = min(1.0, max_side / max(height, width))
    small = image
    if shrink < 1.0:
        small = cv2.resize(image, (max(1, round(width * shrink)), max(1, round(height * shrink))),
                           interpolation=cv2.INTER_AREA)
    return small, scale_affine(width / small.shape[1], height / small.shape[0])


def _mapped(matrix: Affine, points: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A face's points and depth carried into another frame by the similarity ``matrix``."""
    return transform_points(matrix, points), depth * affine_scale(matrix)


def _left_to_right(faces: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return sorted(faces, key=lambda face: float(np.mean(points_box(face[0])[::2])))


def _turned(image: np.ndarray, turns: int) -> tuple[np.ndarray, Affine]:
    """``np.rot90(image, turns)`` (quarter turns counterclockwise) and the pixel map from ``image`` into it."""
    to_turned = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    height, width = image.shape[:2]
    for _ in range(turns % 4):
        to_turned = compose_affine(np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, float(width)]]), to_turned)
        height, width = width, height
    return np.ascontiguousarray(np.rot90(image, turns)), to_turned


def _turned_looks(image: np.ndarray, faces_in: Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]
                  ) -> list[tuple[float, np.ndarray, np.ndarray, int]]:
    """``(score, points, depth, turns)`` of each face ``faces_in`` finds on ``image`` turned by 1, 2 and 3 quarter
    turns, scored there (:func:`face_confidence`, upright where the turn was right) and mapped back to ``image``."""
    looks = []
    for turns in (1, 2, 3):
        turned, to_turned = _turned(image, turns)
        back = invert_affine(to_turned)
        for points, depth in faces_in(turned):
            looks.append((face_confidence(turned, points_box(points)), *_mapped(back, points, depth), turns))
    return looks


def _agreed_look(points: np.ndarray | None, confidence: float, looks: list[tuple[float, np.ndarray, np.ndarray, int]]
                 ) -> tuple[float, np.ndarray, np.ndarray, int] | None:
    """The look ``(score, points, depth, turns)`` to take instead of the face ``points`` as found, scored
    ``confidence`` (None, 0.0 where none was found); None to keep it.

    Looks agree where their points do (:data:`LOOKS_AGREE`). The face as found stands with the looks that agree
    with it, scored by the best of them. It is replaced by the best scored of the other looks that agree with one
    turned differently, where that scores :data:`UPRIGHT_MARGIN` higher. A face upside down gets wrong meshes from
    one or two turns; the right looks agree with each other."""
    def agree(a: np.ndarray, b: np.ndarray) -> bool:
        size = np.sqrt(max(0.5 * (_box_area(a) + _box_area(b)), 1e-9))
        return float(np.linalg.norm(a - b, axis=1).mean()) / size < LOOKS_AGREE

    standing = [look for look in looks if points is not None and agree(points, look[1])]
    others = [look for look in looks if not any(look is kept for kept in standing)]
    agreed = [look for look in others if any(other[3] != look[3] and agree(look[1], other[1]) for other in others)]
    best = max(agreed, key=lambda look: look[0], default=None)
    held = max([confidence, *(look[0] for look in standing)])
    return best if best is not None and best[0] > held + UPRIGHT_MARGIN else None


def _upright_face(image: np.ndarray, points: np.ndarray, confidence: float
                  ) -> tuple[float, np.ndarray, np.ndarray, int] | None:
    """FaceMesh's look at the face ``points`` shows on a crop around it turned by the quarter turns
    :func:`_agreed_look` takes instead of it, in ``image``'s frame; None to keep it."""
    crop, to_crop = _box_crop(image, points_box(points), _UPRIGHT_CONTEXT)
    back = invert_affine(to_crop)
    looks = _turned_looks(crop, lambda turned: _middle_face(_mesh_faces(turned), turned))
    return _agreed_look(points, confidence, [(score, *_mapped(back, p, d), turns) for score, p, d, turns in looks])


def detect_landmarks(image: np.ndarray, face_index: int | None = None, *, name: str = ARRAY_NAME,
                     max_side: int = DETECT_MAX_SIDE) -> FaceLandmarks:
    """Find a face with MediaPipe FaceMesh and return its 478 landmarks in ``image``'s pixel frame.

    A face the detector scores below :data:`UPRIGHT_SCORE` is looked at again turned by quarter turns
    (:attr:`FaceLandmarks.quarter_turns`, :func:`_agreed_look`): on a crop around it, and where FaceMesh's own
    detector found no face on the picture (or none at all) and ``face_index`` is None, on the whole picture.

    Args:
      image: RGB photograph (any layout :func:`flamejax.perception.to_rgb8` accepts; uint8 (H, W, 3) best).
      face_index: which face, numbered left to right from 0; ``None``: the largest.
      name: how error messages name the image (e.g. its path).
      max_side: detection runs on a copy downscaled to at most this many pixels on the longer side.

    Raises:
      ImageTooSmallError, NoFaceError, FaceIndexError.
    """
    image = to_rgb8(image, name=name)
    check_image_size(image, name)
    faces, searched = find_faces(image, max_side)
    points = depth = None
    if faces:
        index = int(np.argmax([_box_area(p) for p, _ in faces])) if face_index is None else face_index
        if not 0 <= index < len(faces):
            raise FaceIndexError(f"{name}: face index {face_index} asked for, but {len(faces)} face(s) found "
                                 f"(numbered left to right from 0)")
        points, depth = faces[index]
        confidence, turns = face_confidence(image, points_box(points)), 0
        if confidence < UPRIGHT_SCORE and (look := _upright_face(image, points, confidence)) is not None:
            confidence, points, depth, turns = look
    if face_index is None and (not faces or (searched and turns == 0 and confidence < UPRIGHT_SCORE)):
        small, to_image = _detection_copy(image, max_side)
        looks = [(score, *_mapped(to_image, p, d), t) for score, p, d, t in _turned_looks(small, _mesh_faces)]
        if (look := _agreed_look(points, confidence if faces else 0.0, looks)) is not None:
            confidence, points, depth, turns = look
            faces, searched = _left_to_right([found[1:3] for found in looks if found[3] == turns]), False
            index = next(i for i, (p, _) in enumerate(faces) if p is points)
    if not faces:
        height, width = image.shape[:2]
        raise NoFaceError(f"{name}: no face found in the {width}x{height} image (MediaPipe face detection)")
    return FaceLandmarks(points=points.astype(np.float32), depth=depth.astype(np.float32), confidence=confidence,
                         num_faces=len(faces), face_index=index, box=points_box(points), searched=searched,
                         quarter_turns=turns)


def _box_area(points: np.ndarray) -> float:
    return float(np.prod(np.diff(points_box(points).reshape(2, 2), axis=0)))


def redetect(image: UInt8[np.ndarray, "H W 3"], expected: FaceLandmarks,
             min_iou: float = 0.5) -> FaceLandmarks | None:
    """Detect again in ``image`` the face ``expected`` shows (already mapped into this image's frame).

    Picks the face whose landmark box overlaps ``expected.box`` most; ``None`` when none overlaps by
    ``min_iou`` (intersection over union). Confidence and face counts are kept from ``expected``;
    :attr:`FaceLandmarks.searched` says how it was found here.
    """
    faces, searched = find_faces(to_rgb8(image))
    overlaps = [_box_iou(points_box(points), expected.box) for points, _ in faces]
    if not overlaps or max(overlaps) < min_iou:
        return None
    points, depth = faces[int(np.argmax(overlaps))]
    return dataclasses.replace(expected, points=points.astype(np.float32), depth=depth.astype(np.float32),
                               box=points_box(points), searched=searched)


def redetect_mirrored(image: UInt8[np.ndarray, "H W 3"], expected: FaceLandmarks,
                      min_iou: float = 0.5) -> FaceLandmarks | None:
    """:func:`redetect` on the mirror image of ``image``, returned in ``image``'s frame and numbering.

    A second, independent look at the same face: FaceMesh's errors at strong yaw are not mirror-symmetric, so
    where the two detections disagree at least one of them is wrong (see ``Preprocessed.mirrored478``).
    """
    image = to_rgb8(image)
    width = image.shape[1]
    mirror_expected = expected.unmirrored(width)
    found = redetect(np.ascontiguousarray(image[:, ::-1]), mirror_expected, min_iou)
    return None if found is None else found.unmirrored(width)
