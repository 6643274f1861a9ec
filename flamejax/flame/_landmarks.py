"""Landmark embeddings on the FLAME surface (68-point iBUG set, MediaPipe points, irises) and their loader; the
geometry of posed landmarks is in :mod:`flamejax.flame._landmark_geometry`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.files import CorruptFileError, find_file
from flamejax.flame._masks import load_vertex_masks
from flamejax.flame._safe_pickle import safe_load_npy, safe_load_npz, safe_load_pickle

logger = logging.getLogger(__name__)

NUM_CONTOUR_BINS = 79
MAX_CONTOUR_YAW_DEG = 39
# Iris centre then ring (towards +x, +y, -x, -y of head space) in MediaPipe order 468..477:
# 468-472 is the subject's right eye (image left on a frontal photo), 473-477 the subject's left eye.
IRIS_VERTICES = (4597, 4543, 4511, 4479, 4575, 4051, 3997, 3965, 3933, 4020)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as barycentric combinations of three mesh vertices each."""

    static_vertices: Int[Array, "51 3"]
    """iBUG points 17..67 (brows, nose, eyes, mouth)."""
    static_bary: Float[Array, "51 3"]
    contour_vertices: Int[Array, "79 17 3"]
    """iBUG jaw contour 0..16 for each yaw bin (see :func:`flamejax.flame.contour_bin`)."""
    contour_bary: Float[Array, "79 17 3"]
    full_vertices: Int[Array, "68 3"]
    """A fixed 68-point embedding (frontal contour), as DECA's ``full_lmk``."""
    full_bary: Float[Array, "68 3"]
    mediapipe_vertices: Int[Array, "n_mp 3"]
    """MediaPipe FaceMesh points (``n_mp`` = 105 with the MICA embedding, 0 when absent)."""
    mediapipe_bary: Float[Array, "n_mp 3"]
    mediapipe_ids: Int[Array, "n_mp"]
    """Index of each embedded point in MediaPipe's 478."""
    iris_vertices: Int[Array, "10"]
    """Vertices matching MediaPipe iris points 468..477."""
    face_vertices: Int[Array, "n_face"]
    """FLAME's face region (the ``flame_masks`` file's ``"face"``: cheeks, chin, nose, lips, eyes, brows), the part
    of the head that must project inside the person's silhouette; empty without a masks file."""

    @property
    def num_mediapipe(self) -> int:
        return self.mediapipe_ids.shape[0]

    def all_vertex_ids(self) -> np.ndarray:
        """Every vertex any landmark reads (to build a landmark-only model with ``FlameModel.subset``)."""
        parts = [self.static_vertices, self.contour_vertices, self.full_vertices, self.mediapipe_vertices,
                 self.iris_vertices, self.face_vertices]
        return np.unique(np.concatenate([np.asarray(p).ravel() for p in parts]))

    def remap_vertices(self, remap: np.ndarray) -> "LandmarkEmbedding":
        remap = jnp.asarray(remap)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("static_vertices", "contour_vertices", "full_vertices", "mediapipe_vertices", "iris_vertices",
                     "face_vertices"):
            fields[name] = remap[fields[name]]
        return LandmarkEmbedding(**fields)


def _face_vertices(faces: np.ndarray, face_idx, shape: tuple, what: str, source: Path) -> np.ndarray:
    face_idx = np.asarray(face_idx)
    if face_idx.size != np.prod(shape) or not np.issubdtype(face_idx.dtype, np.integer):
        raise CorruptFileError(f"{source}: {what} face indices are {face_idx.dtype} {face_idx.shape}, expected "
                               f"{int(np.prod(shape))} integers {shape}; the embedding is damaged or truncated")
    face_idx = face_idx.astype(np.int64).reshape(shape)
    if face_idx.size and (face_idx.min() < 0 or face_idx.max() >= len(faces)):
        raise CorruptFileError(f"{source}: {what} face index out of range (mesh has {len(faces)} faces)")
    return faces[face_idx].astype(np.int32)


def _bary(values, shape: tuple, what: str, source: Path) -> np.ndarray:
    values = np.asarray(values)
    if values.size != np.prod(shape) or not (np.issubdtype(values.dtype, np.floating) or
                                              np.issubdtype(values.dtype, np.integer)):
        raise CorruptFileError(f"{source}: {what} barycentric coordinates are {values.dtype} {values.shape}, "
                               f"expected {shape}; the embedding is damaged or truncated")
    bary = values.astype(np.float32).reshape(shape)
    if not np.all(np.isfinite(bary)) or bary.min(initial=0) < -0.1 or bary.max(initial=0) > 1.1:
        raise CorruptFileError(f"{source}: {what} barycentric coordinates are not finite weights in [0, 1]")
    if not np.allclose(bary.sum(-1), 1.0, atol=1e-3):
        raise CorruptFileError(f"{source}: {what} barycentric coordinates do not sum to one")
    return bary


def _field(data: Any, key: str, source: Path, kind: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        keys = sorted(map(str, data))[:10] if isinstance(data, dict) else type(data).__name__
        raise CorruptFileError(f"{source}: not a {kind} (no {key!r}; found {keys})")
    return data[key]


def _stacked(values: Any, what: str, source: Path) -> np.ndarray:
    """RingNet's dynamic embedding stores one array per yaw bin in a list: stack it, clearly when ragged."""
    try:
        return np.stack([np.asarray(v) for v in values]) if isinstance(values, (list, tuple)) else np.asarray(values)
    except ValueError as err:
        raise CorruptFileError(f"{source}: {what} rows have different shapes; the embedding is damaged") from err


def _read_68(faces: np.ndarray, path: Path) -> dict:
    """DECA ``landmark_embedding.npy`` or the RingNet pair ``flame_static_embedding.pkl`` + dynamic ``.npy``."""
    if path.suffix == ".pkl":
        kind = "RingNet static landmark embedding"
        static = safe_load_pickle(path)
        dynamic_path = path.with_name("flame_dynamic_embedding.npy")
        if not dynamic_path.is_file():
            raise CorruptFileError(f"{path}: RingNet static embedding needs {dynamic_path.name} beside it")
        dynamic = safe_load_npy(dynamic_path)
        static_idx, static_b = _field(static, "lmk_face_idx", path, kind), _field(static, "lmk_b_coords", path, kind)
        dynamic_kind = "RingNet dynamic landmark embedding"
        contour_idx = _stacked(_field(dynamic, "lmk_face_idx", dynamic_path, dynamic_kind), "contour", dynamic_path)
        contour_b = _stacked(_field(dynamic, "lmk_b_coords", dynamic_path, dynamic_kind), "contour", dynamic_path)
        if contour_idx.ndim < 2 or contour_b.ndim < 2 or len(contour_idx) != NUM_CONTOUR_BINS:
            raise CorruptFileError(f"{dynamic_path}: expected {NUM_CONTOUR_BINS} contour rows of 17 landmarks")
        full_idx = np.concatenate([contour_idx[0].ravel(), np.asarray(static_idx).ravel()])
        full_b = np.concatenate([contour_b[0].reshape(-1, 3), np.asarray(static_b).reshape(-1, 3)])
        contour_source = dynamic_path
    else:
        kind = "DECA landmark embedding (a dict with static_lmk_faces_idx, ...)"
        data = safe_load_npy(path)
        static_idx, static_b = (_field(data, k, path, kind) for k in ("static_lmk_faces_idx", "static_lmk_bary_coords"))
        contour_idx, contour_b = (_field(data, k, path, kind)
                                  for k in ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords"))
        full_idx, full_b = (_field(data, k, path, kind) for k in ("full_lmk_faces_idx", "full_lmk_bary_coords"))
        contour_source = path
    contour_shape = (NUM_CONTOUR_BINS, 17)
    return dict(
        static_vertices=_face_vertices(faces, static_idx, (51,), "static", path),
        static_bary=_bary(static_b, (51, 3), "static", path),
        contour_vertices=_face_vertices(faces, contour_idx, contour_shape, "contour", contour_source),
        contour_bary=_bary(contour_b, (*contour_shape, 3), "contour", contour_source),
        full_vertices=_face_vertices(faces, full_idx, (68,), "full", path),
        full_bary=_bary(full_b, (68, 3), "full", path),
    )


def _read_mediapipe(faces: np.ndarray, path: Path | None) -> dict:
    if path is None:
        return dict(mediapipe_vertices=np.zeros((0, 3), np.int32), mediapipe_bary=np.zeros((0, 3), np.float32),
                    mediapipe_ids=np.zeros((0,), np.int32))
    kind = "MediaPipe landmark embedding (lmk_face_idx, lmk_b_coords, landmark_indices)"
    z = safe_load_npz(path)
    ids = np.asarray(_field(z, "landmark_indices", path, kind))
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
        raise CorruptFileError(f"{path}: MediaPipe landmark ids are {ids.dtype} {ids.shape}, expected integers (n,)")
    if ids.min() < 0 or ids.max() >= 478 or len(np.unique(ids)) != len(ids):
        raise CorruptFileError(f"{path}: MediaPipe landmark ids must be distinct and lie in 0..477")
    return dict(
        mediapipe_vertices=_face_vertices(faces, _field(z, "lmk_face_idx", path, kind), (len(ids),), "mediapipe",
                                          path),
        mediapipe_bary=_bary(_field(z, "lmk_b_coords", path, kind), (len(ids), 3), "mediapipe", path),
        mediapipe_ids=ids.astype(np.int32),
    )


def _ibug_problems(points: np.ndarray) -> list[str]:
    """How 68 points on the frontal mean head (x: subject's left, y: up) break the iBUG-68 layout."""
    x, y = points[:, 0], points[:, 1]
    problems = [f"points {a}-{b - 1} do not run from the subject's right to left"
                for a, b in ((0, 17), (17, 22), (22, 27), (31, 36), (48, 55)) if np.any(np.diff(x[a:b]) <= 0)]
    if np.any(np.diff(y[27:31]) >= 0):
        problems.append("the nose bridge 27-30 does not run downwards")
    if not y[17:27].mean() > y[36:48].mean() > y[30] > y[48:68].mean() > y[8]:
        problems.append("brows, eyes, nose tip, mouth and chin are not in that order from the top")
    if not x[36] < x[39] < x[42] < x[45]:
        problems.append("eye corners 36, 39, 42, 45 are not in order")
    return problems


def _contour_problems(contours: np.ndarray) -> list[int]:
    """Yaw bins whose 17 jaw points do not run right to left through a lowest chin point 8."""
    x, y = contours[..., 0], contours[..., 1]
    bad = ~((x[:, 0] < x[:, 8]) & (x[:, 8] < x[:, 16]) & (y[:, 8] <= y.min(axis=1) + 1e-6))
    return np.flatnonzero(bad).tolist()


def _check_ibug_layout(arrays: dict, template: np.ndarray, path: Path) -> None:
    """Raise :class:`CorruptFileError` unless the embedded 68 points sit in the iBUG layout on the mean head."""
    def points(vertices, bary):
        return np.einsum("...kc,...k->...c", template[np.asarray(vertices)], np.asarray(bary, np.float64))

    full = points(arrays["full_vertices"], arrays["full_bary"])
    contours = points(arrays["contour_vertices"], arrays["contour_bary"])
    dynamic = np.concatenate([contours[0], points(arrays["static_vertices"], arrays["static_bary"])])
    problems = [f"full 68: {p}" for p in _ibug_problems(full)]
    problems += [f"static 51 with the frontal contour: {p}" for p in _ibug_problems(dynamic)]
    if bad_rows := _contour_problems(contours):
        problems.append(f"contour rows {bad_rows[:8]}{'...' if len(bad_rows) > 8 else ''} are not jaw lines")
    if problems:
        raise CorruptFileError(
            f"{path}: the embedded landmarks are not in the iBUG-68 layout on the mean head ({'; '.join(problems)}); "
            "the file is damaged, for another mesh, or its rows are reordered. Use DECA's landmark_embedding.npy.")


def _read_face_vertices(masks_path: str | Path | None, num_vertices: int) -> np.ndarray:
    """The face region of the ``flame_masks`` file (vertex ids), or none, with a warning, when there is no file or
    it holds no usable face mask."""
    none = np.zeros(0, np.int32)
    masks = load_vertex_masks(masks_path)
    if masks is None:
        logger.warning("no FLAME_masks.pkl found: the fit cannot hold the whole face inside the person's silhouette, "
                       "only its landmarks; add the file to the weights folder")
        return none
    ids = masks.get("face")
    if ids is None or not ids.size or ids.min() < 0 or ids.max() >= num_vertices:
        logger.warning("%s: no face mask of vertex ids in 0..%d; the fit holds only the landmarks inside the "
                       "person's silhouette", masks.path, num_vertices - 1)
        return none
    return np.unique(ids)


def load_landmark_embedding(faces: np.ndarray, path: str | Path | None = None,
                            mediapipe_path: str | Path | None = None, *,
                            template: np.ndarray | None = None,
                            masks_path: str | Path | None = None) -> LandmarkEmbedding:
    """Read the 68-point embedding (required), the MediaPipe embedding (optional) and the face region of the
    ``flame_masks`` file (optional) for a FLAME mesh.

    Args:
      faces: the mesh's triangles.
      template: the mean head (verts, 3) in metres; when given, the 68 points must lie in the iBUG layout on it
        (catches damaged, reordered or foreign embeddings, which would otherwise fit badly and silently).

    Raises:
      MissingFileError, CorruptFileError (the file named, with what is wrong).
    """
    faces = np.asarray(faces)
    path_68 = find_file("landmark_embedding", path)
    arrays = _read_68(faces, path_68)
    if template is not None:
        _check_ibug_layout(arrays, np.asarray(template, np.float64), path_68)
    mediapipe_file = find_file("mediapipe_embedding", mediapipe_path, required=mediapipe_path is not None)
    arrays |= _read_mediapipe(faces, mediapipe_file)
    arrays["iris_vertices"] = np.asarray(IRIS_VERTICES, np.int32)
    arrays["face_vertices"] = _read_face_vertices(masks_path, int(faces.max()) + 1)
    return LandmarkEmbedding(**{k: jnp.asarray(v) for k, v in arrays.items()})
