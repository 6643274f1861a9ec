"""Landmark embeddings on the FLAME surface (68-point iBUG set, MediaPipe points, irises) and their loader; the
geometry of posed landmarks is in :mod:`flamejax.flame._landmark_geometry`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.files import CorruptFileError, find_file
from flamejax.flame._safe_pickle import safe_load_npy, safe_load_pickle

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

    @property
    def num_mediapipe(self) -> int:
        return self.mediapipe_ids.shape[0]

    def all_vertex_ids(self) -> np.ndarray:
        """Every vertex any landmark reads (to build a landmark-only model with ``FlameModel.subset``)."""
        parts = [self.static_vertices, self.contour_vertices, self.full_vertices, self.mediapipe_vertices,
                 self.iris_vertices]
        return np.unique(np.concatenate([np.asarray(p).ravel() for p in parts]))

    def remap_vertices(self, remap: np.ndarray) -> "LandmarkEmbedding":
        remap = jnp.asarray(remap)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("static_vertices", "contour_vertices", "full_vertices", "mediapipe_vertices", "iris_vertices"):
            fields[name] = remap[fields[name]]
        return LandmarkEmbedding(**fields)


def _face_vertices(faces: np.ndarray, face_idx: np.ndarray, what: str, source: Path) -> np.ndarray:
    face_idx = np.asarray(face_idx, dtype=np.int64)
    if face_idx.size and (face_idx.min() < 0 or face_idx.max() >= len(faces)):
        raise CorruptFileError(f"{source}: {what} face index out of range (mesh has {len(faces)} faces)")
    return faces[face_idx].astype(np.int32)


def _bary(values, shape: tuple, what: str, source: Path) -> np.ndarray:
    bary = np.asarray(values, dtype=np.float32).reshape(shape)
    if not np.allclose(bary.sum(-1), 1.0, atol=1e-3):
        raise CorruptFileError(f"{source}: {what} barycentric coordinates do not sum to one")
    return bary


def _read_68(faces: np.ndarray, path: Path) -> dict:
    """DECA ``landmark_embedding.npy`` or the RingNet pair ``flame_static_embedding.pkl`` + dynamic ``.npy``."""
    if path.suffix == ".pkl":
        static = safe_load_pickle(path)
        dynamic_path = path.with_name("flame_dynamic_embedding.npy")
        if not dynamic_path.is_file():
            raise CorruptFileError(f"{path}: RingNet static embedding needs {dynamic_path.name} beside it")
        dynamic = safe_load_npy(dynamic_path)
        static_idx, static_b = static["lmk_face_idx"], static["lmk_b_coords"]
        contour_idx, contour_b = np.stack(dynamic["lmk_face_idx"]), np.stack(dynamic["lmk_b_coords"])
        full_idx = np.concatenate([contour_idx[0], static_idx])
        full_b = np.concatenate([contour_b[0], static_b])
    else:
        data = safe_load_npy(path)
        if not isinstance(data, dict) or "static_lmk_faces_idx" not in data:
            raise CorruptFileError(f"{path}: not a DECA landmark embedding (expected a dict with static_lmk_faces_idx)")
        static_idx, static_b = data["static_lmk_faces_idx"], data["static_lmk_bary_coords"]
        contour_idx, contour_b = data["dynamic_lmk_faces_idx"], data["dynamic_lmk_bary_coords"]
        full_idx, full_b = data["full_lmk_faces_idx"], data["full_lmk_bary_coords"]
    return dict(
        static_vertices=_face_vertices(faces, np.reshape(static_idx, 51), "static", path),
        static_bary=_bary(static_b, (51, 3), "static", path),
        contour_vertices=_face_vertices(faces, np.reshape(contour_idx, (NUM_CONTOUR_BINS, 17)), "contour", path),
        contour_bary=_bary(contour_b, (NUM_CONTOUR_BINS, 17, 3), "contour", path),
        full_vertices=_face_vertices(faces, np.reshape(full_idx, 68), "full", path),
        full_bary=_bary(full_b, (68, 3), "full", path),
    )


def _read_mediapipe(faces: np.ndarray, path: Path | None) -> dict:
    if path is None:
        return dict(mediapipe_vertices=np.zeros((0, 3), np.int32), mediapipe_bary=np.zeros((0, 3), np.float32),
                    mediapipe_ids=np.zeros((0,), np.int32))
    with np.load(path, allow_pickle=False) as z:
        ids = np.asarray(z["landmark_indices"], np.int32)
        if ids.min() < 0 or ids.max() >= 478:
            raise CorruptFileError(f"{path}: MediaPipe landmark ids must lie in 0..477")
        return dict(
            mediapipe_vertices=_face_vertices(faces, z["lmk_face_idx"], "mediapipe", path),
            mediapipe_bary=_bary(z["lmk_b_coords"], (len(ids), 3), "mediapipe", path),
            mediapipe_ids=ids,
        )


def load_landmark_embedding(faces: np.ndarray, path: str | Path | None = None,
                            mediapipe_path: str | Path | None = None) -> LandmarkEmbedding:
    """Read the 68-point embedding (required) and the MediaPipe embedding (optional) for a FLAME mesh."""
    faces = np.asarray(faces)
    arrays = _read_68(faces, find_file("landmark_embedding", path))
    arrays |= _read_mediapipe(faces, find_file("mediapipe_embedding", mediapipe_path, required=mediapipe_path is not None))
    arrays["iris_vertices"] = np.asarray(IRIS_VERTICES, np.int32)
    return LandmarkEmbedding(**{k: jnp.asarray(v) for k, v in arrays.items()})
