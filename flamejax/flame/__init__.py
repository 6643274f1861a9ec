"""The FLAME head model: loading, the staged forward pass, landmark embeddings."""

from flamejax.flame._forward import FlameMesh, FlameParams, FlamePosed, FlameShaped, flame_forward, shape_model
from flamejax.flame._landmarks import (
    IRIS_VERTICES,
    LandmarkEmbedding,
    barycentric_points,
    contour_bin,
    iris_landmarks,
    landmarks_68,
    load_landmark_embedding,
    mediapipe_landmarks,
)
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
    "JOINT_NAMES", "LandmarkEmbedding", "MAX_EXPRESSION", "MAX_SHAPE", "NUM_FACES", "NUM_VERTICES",
    "UnsafePickleError", "barycentric_points", "contour_bin", "flame_forward", "iris_landmarks", "landmarks_68",
    "load_flame", "load_landmark_embedding", "mediapipe_landmarks", "read_flame_arrays", "safe_load_npy",
    "safe_load_npz", "safe_load_pickle", "shape_model",
]
