"""The FLAME model as a pytree, loaded from official or test pickles through a checksum-keyed npz cache."""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.files import CorruptFileError, find_file, sha256
from flamejax.flame._landmarks import LandmarkEmbedding, load_landmark_embedding
from flamejax.flame._safe_pickle import UnsafePickleError, safe_load_pickle

NUM_VERTICES = 5023
NUM_FACES = 9976
NUM_JOINTS = 5
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
PARENTS = (-1, 0, 1, 1, 1)
MAX_SHAPE = 300
MAX_EXPRESSION = 100
_CACHE_VERSION = 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlameModel:
    """FLAME's template, blendshapes and skinning data, with the joint regressor folded into the blendshapes.

    All positions are in FLAME head space (metres, +x subject's left, +y up, +z out of the face).
    """

    v_template: Float[Array, "verts 3"]
    """Mean head vertices."""
    shapedirs: Float[Array, "verts 3 n_shape"]
    """Identity blendshapes (principal components, already scaled by their standard deviations)."""
    exprdirs: Float[Array, "verts 3 n_exp"]
    """Expression blendshapes."""
    posedirs: Float[Array, "verts 3 36"]
    """Pose correctives, driven by ``(R_j - I)`` of joints 1..4 flattened row-major, joint-major."""
    lbs_weights: Float[Array, "verts joints"]
    """Linear blend skinning weights (rows sum to one)."""
    j_template: Float[Array, "joints 3"]
    """Joints of the mean head: ``J_regressor @ v_template``."""
    j_shapedirs: Float[Array, "joints 3 n_shape"]
    """Joint offsets per identity coefficient: ``J_regressor @ shapedirs``."""
    j_exprdirs: Float[Array, "joints 3 n_exp"]
    """Joint offsets per expression coefficient."""
    faces: Int[Array, "faces 3"]
    """Triangles (vertex indices, counter-clockwise seen from outside)."""
    landmarks: LandmarkEmbedding | None
    """Landmark embeddings (68-point, MediaPipe, iris), when loaded."""
    vertex_ids: Int[Array, "verts"]
    """Index of each vertex in the full 5023-vertex FLAME mesh (identity unless this is a vertex subset)."""

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[-1]

    def subset(self, vertex_ids: np.ndarray) -> "FlameModel":
        """A model over only ``vertex_ids`` (joints unchanged), e.g. the vertices landmarks need.

        Faces are dropped (empty) and landmark embeddings are re-indexed into the subset.
        """
        vertex_ids = np.unique(np.asarray(vertex_ids, dtype=np.int64))
        if self.num_vertices != NUM_VERTICES:
            raise ValueError("subset() needs the full model")
        remap = np.full(NUM_VERTICES, -1, dtype=np.int32)
        remap[vertex_ids] = np.arange(len(vertex_ids), dtype=np.int32)
        take = lambda a: a[vertex_ids]  # noqa: E731
        return dataclasses.replace(
            self,
            v_template=take(self.v_template),
            shapedirs=take(self.shapedirs),
            exprdirs=take(self.exprdirs),
            posedirs=take(self.posedirs),
            lbs_weights=take(self.lbs_weights),
            faces=jnp.zeros((0, 3), jnp.int32),
            landmarks=None if self.landmarks is None else self.landmarks.remap_vertices(remap),
            vertex_ids=jnp.asarray(vertex_ids, jnp.int32),
        )


@dataclasses.dataclass(frozen=True)
class FlameArrays:
    """The raw float64 arrays of a FLAME file, validated (the content of the npz cache)."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    lbs_weights: np.ndarray
    j_regressor: np.ndarray
    faces: np.ndarray
    version: str


def _array(raw: dict, key: str, path: Path) -> np.ndarray:
    if key not in raw:
        raise CorruptFileError(f"{path}: not a FLAME model (no {key!r}; keys: {sorted(raw)})")
    value = raw[key]
    if hasattr(value, "toarray"):
        value = value.toarray()
    return np.asarray(value)


def parse_flame_dict(raw: dict, path: Path) -> FlameArrays:
    """Validate a FLAME pickle's dict: FLAME 2020, 2023, 2023 Open, or a FLAME-layout test model."""
    if not isinstance(raw, dict):
        raise CorruptFileError(f"{path}: not a FLAME model (a {type(raw).__name__}, expected a dict)")
    v_template = _array(raw, "v_template", path).astype(np.float64)
    if v_template.shape != (NUM_VERTICES, 3):
        raise CorruptFileError(
            f"{path}: template has shape {v_template.shape}, FLAME has ({NUM_VERTICES}, 3); "
            "this is not a FLAME model (SMPL, MANO or an older/other head model?)"
        )
    faces = _array(raw, "f", path).astype(np.int64)
    shapedirs = _array(raw, "shapedirs", path).astype(np.float64)
    posedirs = _array(raw, "posedirs", path).astype(np.float64)
    weights = _array(raw, "weights", path).astype(np.float64)
    j_regressor = _array(raw, "J_regressor", path).astype(np.float64)
    kintree = _array(raw, "kintree_table", path).astype(np.int64)
    parents = tuple(int(p) if p < 2**31 else -1 for p in kintree[0])
    problems = []
    if faces.shape != (NUM_FACES, 3):
        problems.append(f"faces {faces.shape} != ({NUM_FACES}, 3)")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (NUM_VERTICES, 3) or shapedirs.shape[2] < MAX_SHAPE + 1:
        problems.append(f"shapedirs {shapedirs.shape}, expected ({NUM_VERTICES}, 3, 300 + n_expression)")
    if posedirs.shape != (NUM_VERTICES, 3, 36):
        problems.append(f"posedirs {posedirs.shape} != ({NUM_VERTICES}, 3, 36)")
    if weights.shape != (NUM_VERTICES, NUM_JOINTS):
        problems.append(f"weights {weights.shape} != ({NUM_VERTICES}, {NUM_JOINTS})")
    if j_regressor.shape != (NUM_JOINTS, NUM_VERTICES):
        problems.append(f"J_regressor {j_regressor.shape} != ({NUM_JOINTS}, {NUM_VERTICES})")
    if parents != PARENTS:
        problems.append(f"kinematic tree parents {parents} != {PARENTS}")
    if problems:
        raise CorruptFileError(f"{path}: not a FLAME 2020/2023 model: " + "; ".join(problems))
    for name, arr in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs)):
        if not np.all(np.isfinite(arr)):
            raise CorruptFileError(f"{path}: {name} contains NaN or inf")
    version = "FLAME 2023 Open" if "supr_expression_metadata" in raw else "FLAME 2020/2023"
    return FlameArrays(
        v_template=v_template,
        shapedirs=shapedirs[:, :, :MAX_SHAPE],
        exprdirs=shapedirs[:, :, MAX_SHAPE:],
        posedirs=posedirs,
        lbs_weights=weights,
        j_regressor=j_regressor,
        faces=faces,
        version=version,
    )


def cache_dir() -> Path:
    root = os.environ.get("FLAMEJAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flamejax")
    return Path(root)


def read_flame_arrays(path: str | Path, use_cache: bool = True) -> FlameArrays:
    """Read and validate a FLAME pickle, through an npz cache keyed by the file's sha256."""
    path = Path(path)
    cached = cache_dir() / f"flame-{sha256(path)[:24]}-v{_CACHE_VERSION}.npz"
    if use_cache and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return FlameArrays(**{f.name: (str(z[f.name]) if f.name == "version" else z[f.name])
                                      for f in dataclasses.fields(FlameArrays)})
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild it below
    try:
        raw = safe_load_pickle(path)
    except UnsafePickleError:
        raise
    except (EOFError, ValueError, TypeError, IndexError, AttributeError, pickle.UnpicklingError) as err:
        raise CorruptFileError(f"{path}: unreadable FLAME pickle ({type(err).__name__}: {err})") from err
    arrays = parse_flame_dict(raw, path)
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz", delete=False) as tmp:
                np.savez(tmp, **dataclasses.asdict(arrays))
            os.replace(tmp.name, cached)
        except OSError:
            pass  # a read-only cache folder only costs speed
    return arrays


def load_flame(
    path: str | Path | None = None,
    *,
    n_shape: int = MAX_SHAPE,
    n_expression: int = MAX_EXPRESSION,
    landmarks: bool = True,
    landmark_path: str | Path | None = None,
    mediapipe_path: str | Path | None = None,
    dtype=jnp.float32,
    use_cache: bool = True,
) -> FlameModel:
    """Load a FLAME model (official 2020/2023/2023 Open pickle or the FLAME-layout test model).

    Args:
      path: the FLAME pickle; default: located by :func:`flamejax.files.find_file` (``FLAMEJAX_WEIGHTS``).
      n_shape: identity components to keep (1..300).
      n_expression: expression components to keep (1..100, at most what the file has).
      landmarks: also load the 68-point and MediaPipe embeddings (required 68-point, optional MediaPipe).
      dtype: float dtype of the arrays (float32 default; float64 needs ``jax_enable_x64``).
    """
    source = find_file("flame_model", path)
    arrays = read_flame_arrays(source, use_cache=use_cache)
    if not 1 <= n_shape <= arrays.shapedirs.shape[-1]:
        raise ValueError(f"n_shape={n_shape}: choose 1..{arrays.shapedirs.shape[-1]}")
    if not 1 <= n_expression <= arrays.exprdirs.shape[-1]:
        raise ValueError(f"n_expression={n_expression}: {source} has {arrays.exprdirs.shape[-1]} expression components")
    shapedirs = arrays.shapedirs[:, :, :n_shape]
    exprdirs = arrays.exprdirs[:, :, :n_expression]
    j_reg = arrays.j_regressor
    embedding = load_landmark_embedding(arrays.faces, landmark_path, mediapipe_path) if landmarks else None
    as_float = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return FlameModel(
        v_template=as_float(arrays.v_template),
        shapedirs=as_float(shapedirs),
        exprdirs=as_float(exprdirs),
        posedirs=as_float(arrays.posedirs),
        lbs_weights=as_float(arrays.lbs_weights),
        j_template=as_float(j_reg @ arrays.v_template),
        j_shapedirs=as_float(np.einsum("jv,vcs->jcs", j_reg, shapedirs)),
        j_exprdirs=as_float(np.einsum("jv,vcs->jcs", j_reg, exprdirs)),
        faces=jnp.asarray(arrays.faces, jnp.int32),
        landmarks=embedding,
        vertex_ids=jnp.arange(NUM_VERTICES, dtype=jnp.int32),
    )
