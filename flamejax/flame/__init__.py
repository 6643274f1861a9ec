"""The FLAME head model: loading, the staged forward pass, landmark embeddings, layouts and geometry."""

from flamejax.flame._forward import FlameMesh, FlameParams, FlamePosed, FlameShaped, flame_forward, shape_model
from flamejax.flame._landmark_geometry import (
    LandmarkPoints3D,
    ProjectedLandmarks,
    barycentric_points,
    contour_bin,
    embedded_points,
    landmark_points,
    posed_landmarks,
    project_landmarks,
)
from flamejax.flame._landmarks import IRIS_VERTICES, LandmarkEmbedding, load_landmark_embedding
from flamejax.flame._masks import VertexMasks, load_vertex_masks
from flamejax.flame._model import (
    JOINT_NAMES,
    MAX_EXPRESSION,
    MAX_SHAPE,
    NUM_FACES,
    NUM_VERTICES,
    FlameModel,
    FlameSource,
    load_flame,
    read_flame_arrays,
)
from flamejax.flame._safe_pickle import UnsafePickleError, safe_load_npy, safe_load_npz, safe_load_pickle

__all__ = [
    "FlameMesh", "FlameModel", "FlameParams", "FlamePosed", "FlameShaped", "FlameSource", "IRIS_VERTICES",
    "JOINT_NAMES", "LandmarkEmbedding", "LandmarkPoints3D", "MAX_EXPRESSION", "MAX_SHAPE", "NUM_FACES",
    "NUM_VERTICES", "ProjectedLandmarks", "UnsafePickleError", "VertexMasks", "barycentric_points", "contour_bin",
    "embedded_points", "flame_forward", "landmark_points", "load_flame", "load_landmark_embedding",
    "load_vertex_masks", "posed_landmarks", "project_landmarks", "read_flame_arrays", "safe_load_npy",
    "safe_load_npz", "safe_load_pickle", "shape_model",
]
