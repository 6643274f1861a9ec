"""Landmarks on the FLAME surface: barycentric embeddings of the 68-point iBUG set, MediaPipe points, irises."""

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
    """iBUG jaw contour 0..16 for each yaw bin (see :func:`contour_bin`)."""
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


def barycentric_points(vertices: Float[Array, "verts 3"], vertex_ids: Int[Array, "*n 3"],
                       bary: Float[Array, "*n 3"]) -> Float[Array, "*n 3"]:
    return jnp.einsum("...kc,...k->...c", vertices[vertex_ids], bary, precision=jax.lax.Precision.HIGHEST)


def contour_bin(head_to_camera: Float[Array, "3 3"]) -> Int[Array, ""]:
    """Row of the dynamic contour embedding for a head rotation relative to the camera.

    Rows 0..39 hold yaw 0..+39 degrees (face turned towards its own left, +x), rows 40..78 yaw -1..-39. This is
    DECA's binning with the sign of the yaw as this camera convention sees it; checked by the normals of the
    chosen contour vertices (they face sideways, not away from the camera) in the tests.
    """
    r = head_to_camera
    yaw = jnp.arctan2(-r[2, 0], jnp.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2))
    angle = jnp.round(jnp.minimum(jnp.rad2deg(yaw), MAX_CONTOUR_YAW_DEG)).astype(jnp.int32)
    negative = jnp.where(angle < -MAX_CONTOUR_YAW_DEG, 2 * MAX_CONTOUR_YAW_DEG, MAX_CONTOUR_YAW_DEG - angle)
    return jnp.where(angle < 0, negative, angle)


def landmarks_68(embedding: LandmarkEmbedding, vertices: Float[Array, "verts 3"],
                 head_to_camera: Float[Array, "3 3"] | None = None) -> Float[Array, "68 3"]:
    """iBUG-68 points; the jaw contour follows the yaw of ``head_to_camera`` (static frontal one if None)."""
    if head_to_camera is None:
        return barycentric_points(vertices, embedding.full_vertices, embedding.full_bary)
    row = contour_bin(head_to_camera)
    contour = barycentric_points(vertices, embedding.contour_vertices[row], embedding.contour_bary[row])
    inner = barycentric_points(vertices, embedding.static_vertices, embedding.static_bary)
    return jnp.concatenate([contour, inner], axis=0)


def mediapipe_landmarks(embedding: LandmarkEmbedding, vertices: Float[Array, "verts 3"]) -> Float[Array, "n_mp 3"]:
    """The embedded MediaPipe points, in the order of ``embedding.mediapipe_ids``."""
    return barycentric_points(vertices, embedding.mediapipe_vertices, embedding.mediapipe_bary)


def iris_landmarks(embedding: LandmarkEmbedding, vertices: Float[Array, "verts 3"]) -> Float[Array, "10 3"]:
    """Iris centres and rings in MediaPipe order 468..477."""
    return vertices[embedding.iris_vertices]
