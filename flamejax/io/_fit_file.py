"""Fit files: one fitted image as ``<stem>.json`` (readable) and ``<stem>.npz`` (arrays), with provenance, and
:func:`load_fit` to read either back into a :class:`FitRecord`.

Both files carry ``format = "flamejax-fit"`` and ``format_version`` (:data:`FIT_FORMAT_VERSION`). Keys of both:

* ``name`` (the image), ``status`` (``"ok"``, ``"suspect"``, ``"failed"``), ``reason``, ``mode`` (``"landmark"``,
  ``"photometric"``), ``init``, ``image_size`` (side of the square fit image, pixels), ``original_size``
  (width, height of the photograph), ``fit_to_original`` (2, 3): fit pixels -> photograph pixels.
* FLAME parameters, DECA's names: ``shape`` (n_shape), ``exp`` (n_exp), ``head_pose``, ``neck_pose``,
  ``jaw_pose`` (3 each, axis-angle), ``eye_pose`` (6: subject's left eye, then right eye), ``translation`` (3).
* ``vertices`` (5023, 3): FLAME head space, metres (the NPZ also holds ``vertices_camera_opencv``).
* the camera in every convention of :mod:`flamejax.camera` (JSON: under ``cam``; NPZ: flat keys):
  ``camera_rotation`` (axis-angle) / ``camera_translation`` / ``camera_fov_deg`` (flamejax:
  ``p_cam = R p_head + t``, looking down -z, +y up; JSON ``rotation_axis_angle``, ``x, y, z``, ``fov_deg``),
  ``yaw_pitch_roll_deg``, ``K`` (pixel (i, j) centred at (j + 0.5, i + 0.5)), ``K_opencv`` (centred at (j, i)),
  ``R_opencv`` (3, 3) and ``t_opencv`` (3) (``p_cv = R p_head + t``: x right, y down, z forward),
  ``world_to_camera_opencv`` (4, 4), ``camera_to_world_opengl`` (4, 4). All of these are the fit image's camera
  (the aligned crop, ``image_size``² pixels, eyes level); the photograph's own pinhole camera is ``K_original`` /
  ``K_opencv_original`` (its pixels) with ``R_opencv_original``, ``t_opencv_original`` (OpenCV axes, turned about
  the viewing axis as the crop is turned in the photograph): ``cv2.projectPoints(vertices, R_opencv_original,
  t_opencv_original, K_opencv_original, None)`` lands on the photograph
  (:func:`flamejax.camera.photograph_camera_opencv`).
* landmarks by name, (n, 2): in fit pixels (``lmk68_fitted``, ``lmk68_target``, ``iris_fitted``, ``iris_target``,
  ``mediapipe_target`` (478, 2), ...) and ``*_original`` in photograph pixels; the NPZ lists them in
  ``landmark_names``.
* ``metrics`` (str -> float), ``provenance`` (FLAME file name, sha256 and version, n_shape, n_expression, fit
  configuration, init method, ONNX provider, flamejax and jax versions, date), ``detection`` (confidence,
  num_faces, face_index, lost_on_crop, searched, quarter_turns, lmk68_targets); JSON strings in the NPZ.
* ``photometric`` (photometric fits): ``texture`` (H, W, 3) RGB in [0, 1], ``light`` (9, 3) SH coefficients,
  ``texture_coeffs`` (n), ``l1_start``, ``l1_final``; NPZ keys ``photometric_<key>``. The JSON leaves the
  texture out (see the NPZ and the texture PNG): :func:`load_fit` of a JSON gives ``texture = None``.

With ``fht=True`` the NPZ also holds flame-head-tracker's keys (without its leading batch axis of 1): ``cam``
(6: axis-angle and centre of the OpenGL camera-to-world pose, :func:`flamejax.camera.camera_to_world_pose6`),
``fov`` (degrees), ``lmks_68`` (68, 2), ``lmks_dense`` (478, 2), ``lmks_eyes`` (10, 2) (targets, fit pixels),
and for photometric fits ``tex`` and ``light``; ``shape``, ``exp``, ``head_pose``, ``jaw_pose``, ``eye_pose``, ``K``
are already there under the same names and meanings.

smplx equivalence (``smplx.create(model_path, model_type="flame", num_betas=n_shape,
num_expression_coeffs=n_exp)`` on the same FLAME file): ``betas = shape``, ``expression = exp``,
``global_orient = head_pose``, ``neck_pose``, ``jaw_pose``, ``leye_pose = eye_pose[:3]``,
``reye_pose = eye_pose[3:]``, ``transl = translation`` give ``vertices`` (head space) to float32 rounding. The fit
keeps the rigid pose in the camera (``head_pose`` stays zero): for the mesh in camera space, apply ``R_opencv``,
``t_opencv`` (OpenCV axes) to the vertices, or pass smplx ``global_orient = camera_rotation`` and
``transl = R translation + camera_translation + (R - I) J0`` with ``R`` the camera rotation matrix and ``J0``
the root joint (smplx ``joints[0]`` minus ``translation``), which gives the vertices in flamejax's (OpenGL-like)
camera space (tested in ``tests/test_fit_file.py``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from flamejax import camera as cam
from flamejax.camera import Camera
from flamejax.flame import FlameParams
from flamejax.io._atomic import atomic_path, write_npz

FIT_FORMAT = "flamejax-fit"
FIT_FORMAT_VERSION = 1
STATUSES = ("ok", "suspect", "failed")
MODES = ("landmark", "photometric")
PHOTOMETRIC_KEYS = ("texture", "light", "texture_coeffs", "l1_start", "l1_final")
_PARAM_KEYS = ("shape", "exp", "head_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")
_RESERVED_NPZ_KEYS = frozenset((
    "format", "format_version", "name", "status", "reason", "mode", "init", "image_size", "original_size",
    "fit_to_original", *_PARAM_KEYS, "camera_rotation", "camera_translation", "camera_fov_deg", "yaw_pitch_roll_deg",
    "K", "K_opencv", "R_opencv", "t_opencv", "world_to_camera_opencv", "camera_to_world_opengl", "K_original",
    "K_opencv_original", "R_opencv_original", "t_opencv_original", "vertices",
    "vertices_camera_opencv", "landmark_names", "metrics", "provenance", "detection",
    *(f"photometric_{k}" for k in PHOTOMETRIC_KEYS), "cam", "fov", "lmks_68", "lmks_dense", "lmks_eyes", "tex",
    "light"))
_FHT_LANDMARKS = {"lmks_68": "lmk68_target", "lmks_dense": "mediapipe_target", "lmks_eyes": "iris_target"}


def _f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


@dataclasses.dataclass(frozen=True)
class FitRecord:
    """Everything a fit file holds about one image (NumPy arrays; built by the application, read by
    :func:`load_fit`). Arrays are stored as float32 (``fit_to_original``: float64) on construction."""

    name: str
    """The image (file name or path as given)."""
    status: str
    """``"ok"``, ``"suspect"`` or ``"failed"``."""
    reason: str
    """Why the status is not ok ("" when ok)."""
    mode: str
    """``"landmark"`` or ``"photometric"``."""
    init: str
    """Initialisation method (``"linear"``, ``"deca"``, ``"mica"``, ...)."""
    params: FlameParams
    """FLAME parameters (NumPy leaves)."""
    camera: Camera
    """Fitted camera (NumPy leaves), conventions of :mod:`flamejax.camera`."""
    image_size: int
    """Side of the square fit image, pixels."""
    vertices: np.ndarray
    """(V, 3) posed vertices, head space, metres."""
    landmarks: dict[str, np.ndarray]
    """Name -> (n, 2) points: fit pixels, or photograph pixels for names ending in ``_original``."""
    fit_to_original: np.ndarray
    """(2, 3) affine map from fit pixels to photograph pixels."""
    original_size: tuple[int, int]
    """Photograph (width, height), pixels."""
    metrics: dict[str, float]
    """``nme_inner51``, ``rigid_final_loss``, ``landmark_final_loss``, ..."""
    provenance: dict[str, Any]
    """JSON-serialisable: FLAME file (name, sha256, version), n_shape, n_expression, fit config, init, ONNX
    provider, flamejax and jax versions, date."""
    detection: dict[str, Any]
    """JSON-serialisable: ``confidence``, ``num_faces``, ``face_index``."""
    photometric: dict[str, Any] | None = None
    """``None``, or :data:`PHOTOMETRIC_KEYS`: texture (H, W, 3), light (9, 3), texture_coeffs (n), l1_start,
    l1_final (texture may be ``None`` when read from a JSON file)."""

    def __post_init__(self):
        def put(field, value):
            object.__setattr__(self, field, value)

        if self.status not in STATUSES:
            raise ValueError(f"FitRecord {self.name!r}: status {self.status!r} is not one of {STATUSES}")
        if self.mode not in MODES:
            raise ValueError(f"FitRecord {self.name!r}: mode {self.mode!r} is not one of {MODES}")
        put("params", FlameParams(*(_f32(getattr(self.params, f.name)) for f in dataclasses.fields(FlameParams))))
        put("camera", Camera(_f32(self.camera.rotation), _f32(self.camera.translation), _f32(self.camera.fov_deg)))
        put("image_size", int(self.image_size))
        put("vertices", _f32(self.vertices))
        put("fit_to_original", np.asarray(self.fit_to_original, np.float64))
        put("original_size", tuple(int(s) for s in self.original_size))
        put("landmarks", {str(k): _f32(v) for k, v in self.landmarks.items()})
        put("metrics", {str(k): float(v) for k, v in self.metrics.items()})
        for field in ("provenance", "detection"):
            try:
                put(field, json.loads(_json_text(getattr(self, field))))
            except TypeError as error:
                raise ValueError(f"FitRecord {self.name!r}: {field} must be JSON-serialisable ({error}); "
                                 "turn dataclasses into dicts (dataclasses.asdict)") from None
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"FitRecord {self.name!r}: vertices must be (V, 3), got {self.vertices.shape}")
        if self.status == "ok" and not np.isfinite(self.vertices).all():
            raise ValueError(f"FitRecord {self.name!r}: status ok with non-finite vertices; mark it failed")
        if self.fit_to_original.shape != (2, 3) or len(self.original_size) != 2:
            raise ValueError(f"FitRecord {self.name!r}: fit_to_original must be (2, 3) and original_size (w, h)")
        clashes = sorted(set(self.landmarks) & _RESERVED_NPZ_KEYS)
        bad = sorted(k for k, v in self.landmarks.items() if v.ndim != 2 or v.shape[1] != 2)
        if clashes or bad:
            raise ValueError(f"FitRecord {self.name!r}: landmark names {clashes} are reserved fit-file keys; "
                             f"landmarks {bad} are not (n, 2)")
        if self.photometric is not None:
            missing = sorted(set(PHOTOMETRIC_KEYS) - set(self.photometric))
            if missing:
                raise ValueError(f"FitRecord {self.name!r}: photometric lacks {missing} (needs {PHOTOMETRIC_KEYS})")
            photo = {k: _f32(self.photometric[k]) for k in ("light", "texture_coeffs")}
            photo["texture"] = None if self.photometric["texture"] is None else _f32(self.photometric["texture"])
            put("photometric", photo | {k: float(self.photometric[k]) for k in ("l1_start", "l1_final")})


def _param_arrays(p: FlameParams) -> dict[str, np.ndarray]:
    return {"shape": p.shape, "exp": p.expression, "head_pose": p.head_pose, "neck_pose": p.neck_pose,
            "jaw_pose": p.jaw_pose, "eye_pose": np.concatenate([p.left_eye_pose, p.right_eye_pose]),
            "translation": p.translation}


def _params_from(values: dict) -> FlameParams:
    eye = _f32(values["eye_pose"])
    return FlameParams(_f32(values["shape"]), _f32(values["exp"]), _f32(values["head_pose"]),
                       _f32(values["neck_pose"]), _f32(values["jaw_pose"]), eye[:3], eye[3:],
                       _f32(values["translation"]))


def _camera_arrays(camera: Camera, image_size: int, fit_to_original: np.ndarray) -> dict[str, np.ndarray]:
    r_cv, t_cv = cam.opencv_extrinsics(camera)
    k_photo, r_photo, t_photo = cam.photograph_camera_opencv(camera, image_size, fit_to_original)
    derived = {
        "yaw_pitch_roll_deg": cam.yaw_pitch_roll(camera), "K": cam.intrinsics(camera, image_size),
        "K_opencv": cam.intrinsics_opencv(camera, image_size), "R_opencv": r_cv, "t_opencv": t_cv,
        "world_to_camera_opencv": cam.world_to_camera_opencv(camera),
        "camera_to_world_opengl": cam.camera_to_world_opengl(camera),
        "K_original": k_photo, "K_opencv_original": cam.to_opencv_pixels(k_photo), "R_opencv_original": r_photo,
        "t_opencv_original": t_photo,
    }
    return {k: np.asarray(v) for k, v in derived.items()}


_CONVENTIONS = {
    "head_space": "FLAME: +x subject's left, +y up, +z out of the face, metres",
    "flamejax": "p_cam = R(rotation_axis_angle) p_head + (x, y, z); camera looks down -z, +y up (OpenGL-like)",
    "opencv": "p_cv = R_opencv p_head + t_opencv; x right, y down, z forward",
    "opengl": "camera_to_world_opengl: x right, y up, camera looks down -z; last column = camera centre",
    "K": "pixel (row i, column j) centred at (j + 0.5, i + 0.5); principal point image_size / 2",
    "K_opencv": "pixel (row i, column j) centred at (j, i) as in cv2.projectPoints; principal point size/2 - 0.5",
    "K_original": "the photograph's camera: K_original / K_opencv_original in its pixels (conventions of K / "
                  "K_opencv) with R_opencv_original, t_opencv_original; the others are the fit image's (the crop)",
}


def _jsonable(value):
    """Plain JSON values; non-finite floats become null (strict JSON has no NaN); float32 values are written with
    the fewest digits that read back to the same float32."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.dtype.kind != "f":
            return array.tolist()
        short = str if array.dtype == np.float32 else float
        flat = [float(short(x)) if np.isfinite(x) else None for x in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _json_text(value) -> str:
    return json.dumps(_jsonable(value), allow_nan=False)


def _readable_json(document: dict) -> str:
    """Indented JSON with every innermost list on one line (an (n, 3) array: one row per line)."""
    rows: list[str] = []
    encode = json.JSONEncoder(allow_nan=False).encode

    def stash(v):
        if isinstance(v, dict):
            return {k: stash(x) for k, x in v.items()}
        if isinstance(v, list) and not any(isinstance(x, (list, dict)) for x in v):
            rows.append(encode(v))
            return f"\x01row{len(rows) - 1}"
        return [stash(x) for x in v] if isinstance(v, list) else v

    text = json.dumps(stash(_jsonable(document)), indent=1, allow_nan=False)
    return re.sub(r'"\\u0001row(\d+)"', lambda m: rows[int(m.group(1))], text)


def _json_document(record: FitRecord, cameras: dict[str, np.ndarray]) -> dict:
    camera = record.camera
    derived = dict(cameras)
    yaw, pitch, roll = derived.pop("yaw_pitch_roll_deg")
    x, y, z = camera.translation
    photometric = None
    if record.photometric is not None:
        photometric = {k: v for k, v in record.photometric.items() if k != "texture"}
    return {
        "format": FIT_FORMAT, "format_version": FIT_FORMAT_VERSION,
        "name": record.name, "status": record.status, "reason": record.reason, "mode": record.mode,
        "init": record.init, "image_size": record.image_size, "original_size": list(record.original_size),
        "fit_to_original": record.fit_to_original, **_param_arrays(record.params),
        "cam": {"yaw": yaw, "pitch": pitch, "roll": roll, "x": x, "y": y, "z": z,
                "rotation_axis_angle": camera.rotation, "fov_deg": camera.fov_deg,
                "image_size": record.image_size, **derived, "conventions": _CONVENTIONS},
        "vertices": record.vertices, "landmarks": record.landmarks, "metrics": record.metrics,
        "provenance": record.provenance, "detection": record.detection, "photometric": photometric,
    }


def _npz_arrays(record: FitRecord, cameras: dict[str, np.ndarray], fht: bool) -> dict[str, np.ndarray]:
    camera = record.camera
    arrays = {
        "format": np.array(FIT_FORMAT), "format_version": np.array(FIT_FORMAT_VERSION),
        "name": np.array(record.name), "status": np.array(record.status), "reason": np.array(record.reason),
        "mode": np.array(record.mode), "init": np.array(record.init), "image_size": np.array(record.image_size),
        "original_size": np.array(record.original_size), "fit_to_original": record.fit_to_original,
        **_param_arrays(record.params),
        "camera_rotation": camera.rotation, "camera_translation": camera.translation,
        "camera_fov_deg": camera.fov_deg, **cameras,
        "vertices": record.vertices,
        "vertices_camera_opencv": np.asarray(cam.points_to_opencv_camera(camera, record.vertices)),
        "landmark_names": np.array(sorted(record.landmarks), dtype=str), **record.landmarks,
        "metrics": np.array(_json_text(record.metrics)), "provenance": np.array(_json_text(record.provenance)),
        "detection": np.array(_json_text(record.detection)),
    }
    if record.photometric is not None:
        photo = {k: v for k, v in record.photometric.items() if v is not None}
        arrays |= {f"photometric_{k}": np.asarray(v) for k, v in photo.items()}
    if fht:
        missing = sorted(v for v in _FHT_LANDMARKS.values() if v not in record.landmarks)
        if missing:
            raise ValueError(f"{record.name}: flame-head-tracker keys need the landmarks {missing}")
        arrays |= {"cam": np.asarray(cam.camera_to_world_pose6(camera)), "fov": camera.fov_deg}
        arrays |= {key: record.landmarks[name] for key, name in _FHT_LANDMARKS.items()}
        if record.photometric is not None:
            arrays |= {"tex": record.photometric["texture_coeffs"], "light": record.photometric["light"]}
    return arrays


def save_fit(stem_path: str | Path, record: FitRecord, *, fht: bool = False) -> dict[str, Path]:
    """Write ``<stem_path>.npz`` and ``<stem_path>.json`` (each atomically); see the module docstring for keys.

    Args:
      stem_path: output path without suffix (``out/photo`` -> ``out/photo.json``, ``out/photo.npz``).
      fht: also write flame-head-tracker's keys into the NPZ.

    Returns:
      ``{"npz": path, "json": path}``.
    """
    stem = str(stem_path)
    cameras = _camera_arrays(record.camera, record.image_size, record.fit_to_original)  # once for both files
    npz = write_npz(stem + ".npz", **_npz_arrays(record, cameras, fht))
    text = _readable_json(_json_document(record, cameras))
    with atomic_path(stem + ".json") as tmp:
        Path(tmp).write_text(text)
    return {"npz": npz, "json": Path(stem + ".json")}


def _float_or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def _check_format(path: Path, fmt, version) -> None:
    if fmt != FIT_FORMAT:
        raise ValueError(f"{path}: not a flamejax fit file (no format {FIT_FORMAT!r}); "
                         "was it written by an older flamejax or another tool?")
    if int(version) > FIT_FORMAT_VERSION:
        raise ValueError(f"{path}: fit file format version {int(version)} is newer than this flamejax reads "
                         f"({FIT_FORMAT_VERSION}); update flamejax")


def _load_json(path: Path) -> FitRecord:
    doc = json.loads(path.read_text())
    _check_format(path, doc.get("format"), doc.get("format_version", 0))
    c = doc["cam"]
    photometric = doc["photometric"]
    if photometric is not None:
        photometric = {**photometric, "texture": None,
                       **{k: _float_or_nan(photometric[k]) for k in ("l1_start", "l1_final")}}
    return FitRecord(
        name=doc["name"], status=doc["status"], reason=doc["reason"], mode=doc["mode"], init=doc["init"],
        params=_params_from(doc), camera=Camera(_f32(c["rotation_axis_angle"]), _f32([c["x"], c["y"], c["z"]]),
                                                _f32(c["fov_deg"])),
        image_size=doc["image_size"], vertices=_f32(doc["vertices"]),
        landmarks={k: _f32(v) for k, v in doc["landmarks"].items()},
        fit_to_original=np.asarray(doc["fit_to_original"], np.float64), original_size=tuple(doc["original_size"]),
        metrics={k: _float_or_nan(v) for k, v in doc["metrics"].items()}, provenance=doc["provenance"],
        detection=doc["detection"], photometric=photometric)


def _load_npz(path: Path) -> FitRecord:
    with np.load(path, allow_pickle=False) as z:
        if "format" not in z.files:
            _check_format(path, None, 0)
        _check_format(path, str(z["format"]), z["format_version"])
        photometric = None
        if str(z["mode"]) == "photometric" and "photometric_light" in z.files:
            photometric = {k: z[f"photometric_{k}"] if f"photometric_{k}" in z.files else None
                           for k in PHOTOMETRIC_KEYS}
        return FitRecord(
            name=str(z["name"]), status=str(z["status"]), reason=str(z["reason"]), mode=str(z["mode"]),
            init=str(z["init"]), params=_params_from(z),
            camera=Camera(z["camera_rotation"], z["camera_translation"], z["camera_fov_deg"]),
            image_size=int(z["image_size"]), vertices=z["vertices"],
            landmarks={str(k): z[str(k)] for k in z["landmark_names"]}, fit_to_original=z["fit_to_original"],
            original_size=tuple(z["original_size"].tolist()),
            metrics={k: _float_or_nan(v) for k, v in json.loads(str(z["metrics"])).items()},
            provenance=json.loads(str(z["provenance"])), detection=json.loads(str(z["detection"])),
            photometric=photometric)


def load_fit(path: str | Path) -> FitRecord:
    """Read a fit file written by :func:`save_fit` (``.npz`` or ``.json``) back into a :class:`FitRecord`.

    Raises:
      FileNotFoundError: no such file. ValueError: another suffix, not a flamejax fit file, or a newer format.
    """
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".json"):
        raise ValueError(f"{path}: a fit file ends in .npz or .json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fit file")
    return _load_npz(path) if path.suffix.lower() == ".npz" else _load_json(path)
