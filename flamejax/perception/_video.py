"""Video frames and per-frame MediaPipe landmarks for tracking.

Sources: a video file (decoded with OpenCV ``cv2.VideoCapture``) or a folder of numbered frames.

* Rotation: phone videos store their orientation as metadata. OpenCV's own auto-rotation is switched off and
  the frames are turned here by ``CAP_PROP_ORIENTATION_META`` (90: clockwise, 180, 270: counter-clockwise, as
  OpenCV's FFmpeg backend does), so every frame comes out upright whatever the backend.
* Timing: each frame carries its index in the source and its time in seconds (the container's timestamps for
  a video; ``index / fps`` for a folder). A variable frame rate is detected from the timestamps and noted;
  with ``fps`` given, frames are picked nearest to a regular ``1/fps`` grid of those timestamps.
* Frame folders: files with an image extension, ordered by the last number in their names, which is their
  frame index. Numbering gaps are reported (:attr:`VideoInfo.missing`) so a tracker can fill them.
* Truncated or partly corrupt videos yield the frames that decode, with a note; a file that opens but yields no
  frame, or does not open, raises :class:`VideoReadError` with one line saying so.

Landmarks (:class:`VideoLandmarker`): MediaPipe FaceMesh with ``static_image_mode=False`` (its tracking mode:
detection on the first frame, then landmarks tracked from the previous frame's face region), 478 points with
irises, one face, in the frame's pixel coordinates (x right, y down, pixel centres at half-integers).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from flamejax.perception._errors import FaceIndexError, PerceptionError
from flamejax.perception._landmarks import (UPRIGHT_SCORE, _detection_copy, _left_to_right, _mapped, _mesh_faces,
                                            _turned, _upright_face, face_confidence, points_box)
from flamejax.perception._transform import invert_affine, transform_points

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FOLDER_FPS = 25.0
"""Frame rate assumed for a folder of frames when none is given."""
VARIABLE_RATE_TOLERANCE = 0.2
"""Frame intervals differing from their median by more than this fraction mark a variable frame rate."""
FOLLOW_STEP = 0.5
"""How far a face may move from one frame to the next, in face sizes (its landmark box's longer side), to be the
same face: faces side by side lie a face size or more apart. Having lost the face (an occlusion, a turn away),
MediaPipe's tracking takes up the most confident face it detects again, which may be another person's
(:class:`VideoLandmarker`)."""
FOLLOW_REACH = 1.5
"""The farthest, in face sizes, the clip's face may be found from where it was last seen, however many frames ago
(:data:`FOLLOW_STEP` a frame until then)."""
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class VideoReadError(PerceptionError):
    """A video or frame folder that cannot be read."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    source: str
    fps: float
    """Frames per second of the source (the median rate for a variable frame rate)."""
    frame_count: int
    """Frames the container announces (folder: highest index + 1); may exceed what decodes."""
    width: int
    """Upright frame width (after rotation)."""
    height: int
    rotation_deg: int
    """Rotation applied to decoded frames (0, 90, 180, 270, clockwise)."""
    is_folder: bool


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    index: int
    """Frame number in the source."""
    time_s: float
    image: UInt8[np.ndarray, "H W 3"]
    """Upright RGB."""


def _frame_number(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def folder_frames(folder: Path) -> list[tuple[int, Path]]:
    """(index, path) of the numbered image files in ``folder``, by index."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    numbered = [(_frame_number(p), p) for p in files]
    unnumbered = [p.name for n, p in numbered if n is None]
    if unnumbered:
        raise VideoReadError(f"{folder}: frame files must carry a frame number in their names "
                             f"(e.g. frame_0001.png); {unnumbered[0]!r} has none")
    numbered.sort(key=lambda item: item[0])
    for (a, pa), (b, pb) in zip(numbered, numbered[1:]):
        if a == b:
            raise VideoReadError(f"{folder}: {pa.name} and {pb.name} have the same frame number {a}")
    return numbered


class FrameSource:
    """Frames of a video file or a frame folder between ``start_s`` and ``end_s``, optionally resampled to ``fps``.

    Iterate for :class:`Frame` objects; :attr:`info` describes the source and :attr:`notes` collects what was
    unusual about it (filled while iterating: truncation, variable frame rate).
    """

    def __init__(self, source: str | Path, start_s: float | None = None, end_s: float | None = None,
                 fps: float | None = None):
        self.path = Path(source)
        if fps is not None and fps <= 0:
            raise VideoReadError(f"--fps must be positive, got {fps}")
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise VideoReadError(f"--end ({end_s} s) must come after --start ({start_s} s)")
        self.start_s, self.end_s, self.target_fps = start_s or 0.0, end_s, fps
        self.notes: list[str] = []
        if self.path.is_dir():
            self._files = folder_frames(self.path)
            if not self._files:
                raise VideoReadError(f"{self.path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            first = self._read_image(self._files[0][1])
            rate = fps or FOLDER_FPS
            self.info = VideoInfo(str(self.path), rate, self._files[-1][0] + 1, first.shape[1], first.shape[0], 0, True)
        elif self.path.is_file():
            self.info = self._probe()
        else:
            raise VideoReadError(f"{self.path}: no such video file or frame folder")

    def _read_image(self, path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoReadError(f"{path}: not a readable image (corrupt or unsupported format)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _open(self) -> tuple[cv2.VideoCapture, int]:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise VideoReadError(f"{self.path}: OpenCV cannot open this file as a video (corrupt, empty or an "
                                 f"unsupported codec); convert it to H.264 MP4 or pass a folder of frames")
        manual = capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        rotation = int(round(capture.get(cv2.CAP_PROP_ORIENTATION_META))) % 360 if manual else 0
        return capture, rotation if rotation in _ROTATIONS else 0

    def _probe(self) -> VideoInfo:
        capture, rotation = self._open()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            ok, frame = capture.read()
            if not ok or frame is None:
                raise VideoReadError(f"{self.path}: the video opens but no frame decodes (truncated or corrupt)")
        finally:
            capture.release()
        if not np.isfinite(fps) or fps <= 0:
            fps = FOLDER_FPS
            self.notes.append(f"the video declares no frame rate; {FOLDER_FPS:g} fps assumed for timing")
        height, width = frame.shape[:2]
        if rotation in (90, 270):
            width, height = height, width
        if rotation:
            self.notes.append(f"rotation metadata {rotation} degrees applied (frames turned upright)")
        return VideoInfo(str(self.path), float(fps), count, width, height, rotation, False)

    def __iter__(self) -> Iterator[Frame]:
        frames = self._folder_frames() if self.info.is_folder else self._video_frames()
        if self.target_fps is None:
            yield from frames
            return
        step = 1.0 / self.target_fps
        next_time = self.start_s
        for frame in frames:  # keep the first frame at or after each tick of the 1/fps grid
            if frame.time_s + 0.5 / max(self.info.fps, self.target_fps) >= next_time:
                yield frame
                next_time += step * max(1, int(np.floor((frame.time_s - next_time) / step)) + 1)

    def _in_range(self, time_s: float) -> bool:
        return time_s >= self.start_s - 1e-9 and (self.end_s is None or time_s < self.end_s)

    def _folder_frames(self) -> Iterator[Frame]:
        for index, path in self._files:
            time_s = index / self.info.fps
            if self._in_range(time_s):
                yield Frame(index, time_s, self._read_image(path))

    def _video_frames(self) -> Iterator[Frame]:
        capture, rotation = self._open()
        intervals: list[float] = []
        previous = None
        index = -1
        try:
            if self.start_s > 0:
                capture.set(cv2.CAP_PROP_POS_MSEC, self.start_s * 1000.0)
                index = int(capture.get(cv2.CAP_PROP_POS_FRAMES)) - 1
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                index += 1
                stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                time_s = stamp if np.isfinite(stamp) and (stamp > 0 or index == 0) else index / self.info.fps
                if previous is not None:
                    intervals.append(time_s - previous)
                previous = time_s
                if self.end_s is not None and time_s >= self.end_s:
                    break
                if not self._in_range(time_s):
                    continue
                if rotation:
                    bgr = cv2.rotate(bgr, _ROTATIONS[rotation])
                yield Frame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()
            self._note_timing(index, intervals)

    def _note_timing(self, last_index: int, intervals: list[float]) -> None:
        if self.end_s is None and self.info.frame_count > 0 and last_index + 1 < self.info.frame_count - 1:
            self.notes.append(f"the video ends after {last_index + 1} of the {self.info.frame_count} frames its "
                              f"header announces (truncated?); the frames that decoded are used")
        if len(intervals) >= 2:
            gaps = np.asarray(intervals)
            median = float(np.median(gaps))
            if median > 0 and np.any(np.abs(gaps - median) > VARIABLE_RATE_TOLERANCE * median):
                self.notes.append(f"variable frame rate (frame intervals {gaps.min() * 1000:.1f}-"
                                  f"{gaps.max() * 1000:.1f} ms); frame times come from the container's "
                                  f"timestamps, pass --fps to resample to a regular rate")


class VideoLandmarker:
    """MediaPipe FaceMesh in tracking mode (``static_image_mode=False``): one face, 478 points per frame.

    The clip's face is the first one found (``face_index``: the one of that number, left to right from 0, on the
    first frame with a face). Where the tracking returns a face out of reach of where the clip's face was last seen
    (:data:`FOLLOW_STEP` a frame, at most :data:`FOLLOW_REACH`), it has taken up another face: the frame's faces
    are then all detected, and the nearest within reach is taken, or none (:attr:`jumps`, :attr:`found_again`).
    So are they where the tracking finds no face, and on the frames after the clip's face was not found, where
    another face may be nearer than the tracking's.

    A face on its side or upside down (no rotation metadata) is found as
    :func:`flamejax.perception.detect_landmarks` finds it in a photograph, on the first frame with a face; from there
    on the frames are turned upright by :attr:`quarter_turns` for MediaPipe, and the points mapped back.

    Use one instance per clip, frames in order; frames larger than ``max_side`` are downscaled for detection.
    """

    def __init__(self, max_side: int = 1280, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, face_index: int | None = None):
        from mediapipe.python.solutions import face_mesh

        self.max_side = max_side
        self.face_index = face_index
        self._mesh = face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1,
                                        min_detection_confidence=min_detection_confidence,
                                        min_tracking_confidence=min_tracking_confidence)
        self._last_box: np.ndarray | None = None
        """Where the clip's face was last seen, in the frame turned by :attr:`quarter_turns`."""
        self._missed = 0
        self._oriented = False
        self.quarter_turns = 0
        """Quarter turns counterclockwise that turn the clip's face upright (decided on its first frame)."""
        self.jumps = 0
        """Frames on which the tracking had taken up another face than the clip's."""
        self.found_again = 0
        """Of those, frames on which the clip's face was found among all the frame's faces."""

    def __call__(self, image: UInt8[np.ndarray, "H W 3"]) -> Float[np.ndarray, "478 2"] | None:
        """The clip's face's 478 points on this frame (frame pixels), or None where it is not found."""
        if self._oriented:
            return self._clip_face(image)
        points = self._clip_face(image, choose=False)
        if points is None:
            return None
        self._oriented = True
        confidence = face_confidence(image, points_box(points))
        look = _upright_face(image, points, confidence) if confidence < UPRIGHT_SCORE else None
        if look is None and self.face_index is None:
            return points
        self.quarter_turns = 0 if look is None else look[3]
        self._last_box, self._missed = None, 0
        return self._clip_face(image)

    def _clip_face(self, image: np.ndarray, choose: bool = True) -> np.ndarray | None:
        """The clip's face on ``image`` turned by :attr:`quarter_turns`, in ``image``'s pixels; ``choose``: the
        ``face_index`` one on the first frame with a face (else the tracking's)."""
        turned, to_turned = _turned(image, self.quarter_turns) if self.quarter_turns else (image, None)
        small, to_turned_image = _detection_copy(turned, self.max_side)
        result = self._mesh.process(np.ascontiguousarray(small))
        points = None
        if result.multi_face_landmarks:
            xy = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], np.float32)
            points = xy * np.array([turned.shape[1], turned.shape[0]], np.float32)

        def all_faces() -> list[np.ndarray]:  # static FaceMesh: every face of the frame, left to right
            return [p.astype(np.float32) for p, _ in _left_to_right([_mapped(to_turned_image, p, d)
                                                                     for p, d in _mesh_faces(small)])]

        if points is not None and self._last_box is None and choose and self.face_index is not None:
            faces = all_faces()
            if self.face_index >= len(faces):
                raise FaceIndexError(f"face index {self.face_index} asked for, but the first frame with a face "
                                     f"shows {len(faces)} (numbered left to right from 0)")
            points = faces[self.face_index]
        elif self._last_box is not None and (points is None or self._missed or not self._within_reach(points)):
            jumped = points is not None and not self._within_reach(points)
            faces = all_faces() or ([] if points is None else [points])
            points = min((p for p in faces if self._within_reach(p)), key=self._distance, default=None)
            self.jumps += jumped
            self.found_again += jumped and points is not None
        self._seen(points)
        if points is None or to_turned is None:
            return points
        return transform_points(invert_affine(to_turned), points).astype(np.float32)

    def follow(self, points: Float[np.ndarray, "478 2"] | None) -> None:
        """Where the clip's face is on a frame known otherwise (a saved detection of the frames before any this
        instance looked at; frame pixels); None: not found there. Whether it lies turned is decided again on the
        next frame it looks at."""
        self._seen(points)

    def _seen(self, points: np.ndarray | None) -> None:
        if points is None:
            self._missed += 1
        else:
            self._last_box, self._missed = points_box(points), 0

    def _distance(self, points: np.ndarray) -> float:
        box = points_box(points)
        return float(np.linalg.norm((box[:2] + box[2:]) / 2 - (self._last_box[:2] + self._last_box[2:]) / 2))

    def _within_reach(self, points: np.ndarray) -> bool:
        if self._last_box is None:
            return True
        size = float(max(self._last_box[2:] - self._last_box[:2]))
        return self._distance(points) <= min(FOLLOW_STEP * (1 + self._missed), FOLLOW_REACH) * size

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "VideoLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
