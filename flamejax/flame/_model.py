"""The FLAME model as a pytree, loaded from official or test pickles through a checksum-keyed npz cache.

Every loaded model carries a :class:`FlameSource` (file, sha256, detected version, components kept) so that
outputs can say which model produced them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.files import CorruptFileError, find_file, sha256
from flamejax.flame._landmarks import LandmarkEmbedding, load_landmark_embedding
from flamejax.flame._safe_pickle import safe_load_npz, safe_load_pickle

NUM_VERTICES = 5023
NUM_FACES = 9976
NUM_JOINTS = 5
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
PARENTS = (-1, 0, 1, 1, 1)
MAX_SHAPE = 300
MAX_EXPRESSION = 100
_CACHE_VERSION = 2
_TEMPLATE_EXTENT_M = (0.05, 1.0)
"""Plausible size of the mean head in metres (FLAME's is about 0.2 x 0.3 x 0.2 m)."""
_MAX_DISPLACEMENT_M = 0.5
"""Largest plausible vertex offset of one blendshape or pose-corrective unit, in metres."""


@dataclasses.dataclass(frozen=True)
class FlameSource:
    """Where a loaded FLAME model came from; every output should record it (:meth:`to_dict`)."""

    path: str
    """Absolute path of the model file."""
    sha256: str
    version: str
    """Detected version: ``"FLAME 2020"``, ``"FLAME 2023"``, ``"FLAME 2023 Open"``, ``"FLAME 2020/2023"``
    (an official layout whose file name does not say which) or ``"test model"`` (blendshape columns all zero)."""
    n_shape: int
    """Identity components kept."""
    n_expression: int
    """Expression components kept."""
    file_shape_components: int
    file_expression_components: int
    landmark_embedding: str | None = None
    """Absolute path of the 68-point embedding, when loaded."""
    mediapipe_embedding: str | None = None

    @property
    def file_name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``file_name`` included)."""
        return {"file_name": self.file_name, **dataclasses.asdict(self)}

    def describe(self) -> str:
        """One line for logs, e.g. ``FLAME model /w/generic_model.pkl (FLAME 2020, sha256 0f1e2d3c4b5a, 100
        identity / 50 expression components)``."""
        return (f"FLAME model {self.path} ({self.version}, sha256 {self.sha256[:12]}, {self.n_shape} identity / "
                f"{self.n_expression} expression components)")


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
    source: FlameSource | None = dataclasses.field(default=None, metadata=dict(static=True))
    """The file this model was loaded from (static: not traced, part of the tree structure)."""

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
    sha256: str
    """Of the source file."""


def _array(raw: dict, key: str, path: Path) -> np.ndarray:
    if key not in raw:
        raise CorruptFileError(f"{path}: not a FLAME model (no {key!r}; keys: {sorted(map(str, raw))[:20]})")
    value = raw[key]
    if hasattr(value, "toarray"):
        value = value.toarray()
    value = np.asarray(value)
    if value.dtype.hasobject or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        raise CorruptFileError(f"{path}: FLAME array {key!r} holds {value.dtype} data, not numbers")
    return value


def _detect_version(raw: dict, path: Path, shapedirs: np.ndarray) -> str:
    if "supr_expression_metadata" in raw:
        return "FLAME 2023 Open"
    if not np.all(np.any(shapedirs != 0, axis=(0, 1))):
        return "test model"
    name = path.name.lower()
    if name.startswith("flame2023"):
        return "FLAME 2023"
    if name in ("generic_model.pkl", "male_model.pkl", "female_model.pkl"):
        return "FLAME 2020"
    return "FLAME 2020/2023"


def parse_flame_dict(raw: dict, path: Path, file_sha256: str = "") -> FlameArrays:
    """Validate a FLAME pickle's dict: FLAME 2020, 2023, 2023 Open, or a FLAME-layout test model."""
    if not isinstance(raw, dict):
        raise CorruptFileError(f"{path}: not a FLAME model (a {type(raw).__name__}, expected a dict)")
    v_template = _array(raw, "v_template", path).astype(np.float64)
    if v_template.shape != (NUM_VERTICES, 3):
        raise CorruptFileError(
            f"{path}: template has shape {v_template.shape}, FLAME has ({NUM_VERTICES}, 3); "
            "this is not a FLAME model (SMPL, MANO or an older/other head model?)"
        )
    faces = _array(raw, "f", path)
    shapedirs = _array(raw, "shapedirs", path).astype(np.float64)
    posedirs = _array(raw, "posedirs", path).astype(np.float64)
    weights = _array(raw, "weights", path).astype(np.float64)
    j_regressor = _array(raw, "J_regressor", path).astype(np.float64)
    kintree = _array(raw, "kintree_table", path).astype(np.int64)
    parents = tuple(int(p) if p < 2**31 else -1 for p in kintree[0]) if kintree.ndim == 2 else ()
    problems = []
    if faces.shape != (NUM_FACES, 3) or not np.issubdtype(faces.dtype, np.integer):
        problems.append(f"faces {faces.dtype} {faces.shape} != integer ({NUM_FACES}, 3)")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (NUM_VERTICES, 3) or shapedirs.shape[2] < MAX_SHAPE + 1:
        problems.append(f"shapedirs {shapedirs.shape}, expected ({NUM_VERTICES}, 3, 300 + n_expression) with "
                        "at least one expression component")
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
    arrays = FlameArrays(
        v_template=v_template,
        shapedirs=shapedirs[:, :, :MAX_SHAPE],
        exprdirs=shapedirs[:, :, MAX_SHAPE:],
        posedirs=posedirs,
        lbs_weights=weights,
        j_regressor=j_regressor,
        faces=faces.astype(np.int64),
        version=_detect_version(raw, path, shapedirs),
        sha256=file_sha256,
    )
    validate_flame_arrays(arrays, path)
    return arrays


_FILE_KEYS = {"v_template": "v_template", "shapedirs": "shapedirs (identity columns)",
              "exprdirs": "shapedirs (expression columns)", "posedirs": "posedirs", "lbs_weights": "weights",
              "j_regressor": "J_regressor"}
"""FlameArrays field -> the key (and part) of the FLAME pickle it comes from, for messages."""


def validate_flame_arrays(arrays: FlameArrays, path: Path | str) -> None:
    """Raise :class:`CorruptFileError` naming ``path`` unless the arrays are finite and plausible.

    Checks: every float array finite; the template 5-100 cm across (metres, not millimetres); blendshape and
    pose-corrective offsets below 0.5 m per unit; skinning weights non-negative with rows summing to one;
    joint-regressor rows summing to one; faces indexing the 5023 vertices.
    """
    problems = []
    for name, key in _FILE_KEYS.items():
        values = getattr(arrays, name)
        if not np.all(np.isfinite(values)):
            problems.append(f"{key} contains {np.count_nonzero(~np.isfinite(values))} NaN or infinite values")
    if problems:
        raise CorruptFileError(f"{path}: damaged FLAME model: {'; '.join(problems)}. Get the file again.")
    extent = float(np.ptp(arrays.v_template, axis=0).max())
    if not _TEMPLATE_EXTENT_M[0] <= extent <= _TEMPLATE_EXTENT_M[1]:
        problems.append(f"the template is {extent:.4g} units across; FLAME is in metres (about 0.3 m): "
                        "another unit or another model?")
    for name in ("shapedirs", "exprdirs", "posedirs"):
        largest = float(np.abs(getattr(arrays, name)).max(initial=0.0))
        if largest > _MAX_DISPLACEMENT_M:
            problems.append(f"{_FILE_KEYS[name]} moves a vertex {largest:.3g} m per unit "
                            f"(at most {_MAX_DISPLACEMENT_M})")
    weights = arrays.lbs_weights
    if weights.min() < -1e-6 or np.abs(weights.sum(axis=1) - 1).max() > 1e-3:
        problems.append("skinning weights are negative or their rows do not sum to one")
    if np.abs(arrays.j_regressor.sum(axis=1) - 1).max() > 1e-3:
        problems.append("joint regressor rows do not sum to one")
    if arrays.faces.min() < 0 or arrays.faces.max() >= NUM_VERTICES:
        problems.append(f"faces index vertices {arrays.faces.min()}..{arrays.faces.max()}, "
                        f"outside 0..{NUM_VERTICES - 1}")
    if problems:
        raise CorruptFileError(f"{path}: implausible FLAME model: {'; '.join(problems)}. The file is damaged or "
                               "not a FLAME model; get it again from https://flame.is.tue.mpg.de")


def cache_dir() -> Path:
    root = os.environ.get("FLAMEJAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flamejax")
    return Path(root)


def _read_cache(cached: Path, path: Path) -> FlameArrays | None:
    """The cached arrays when the cache and its checksum file agree and the arrays validate; else ``None``
    with a warning (the caller rebuilds it)."""
    checksum = cached.with_name(cached.name + ".sha256")
    if not cached.is_file():
        return None
    try:
        if not checksum.is_file() or checksum.read_text().strip() != sha256(cached):
            raise CorruptFileError(f"{cached}: checksum does not match {checksum.name}")
        stored = safe_load_npz(cached)
        arrays = FlameArrays(**{f.name: (str(stored[f.name]) if f.type == "str" else stored[f.name])
                                for f in dataclasses.fields(FlameArrays)})
        validate_flame_arrays(arrays, cached)
        return arrays
    except (CorruptFileError, KeyError, OSError, ValueError, IndexError) as err:
        warnings.warn(f"damaged FLAME cache {cached} ({str(err).splitlines()[0][:200]}); rebuilding it from {path}",
                      RuntimeWarning, stacklevel=3)
        return None


def _write_cache(cached: Path, arrays: FlameArrays) -> None:
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **dataclasses.asdict(arrays))
        checksum_tmp = Path(tmp.name + ".sha256")
        checksum_tmp.write_text(sha256(tmp.name) + "\n")
        os.replace(tmp.name, cached)
        os.replace(checksum_tmp, cached.with_name(cached.name + ".sha256"))
    except OSError:
        pass  # a read-only cache folder only costs speed


def read_flame_arrays(path: str | Path, use_cache: bool = True) -> FlameArrays:
    """Read and validate a FLAME pickle, through an npz cache keyed by the file's sha256.

    The cache is verified against a checksum written beside it; a damaged cache is rebuilt with a warning.

    Raises:
      MissingFileError: no such file. CorruptFileError (or its subclass UnsafePickleError): unreadable,
      refused, damaged or implausible content, with the file named.
    """
    path = Path(path)
    digest = sha256(path)
    cached = cache_dir() / f"flame-{digest[:24]}-v{_CACHE_VERSION}.npz"
    if use_cache and (arrays := _read_cache(cached, path)) is not None:
        return arrays
    arrays = parse_flame_dict(safe_load_pickle(path), path, digest)
    if use_cache:
        _write_cache(cached, arrays)
    return arrays


def _component_count(value: Any, available: int, name: str, what: str, option: str, source: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= available:
        raise ValueError(f"{name}={value!r} is out of range: {source} has {available} {what} components; "
                         f"choose 1..{available} ({option})")
    return int(value)


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
      landmarks: also load the 68-point and MediaPipe embeddings (required 68-point, optional MediaPipe); the
        68 points must be in the iBUG layout on the mean head.
      dtype: float dtype of the arrays (float32 default; float64 needs ``jax_enable_x64``).

    Returns:
      The model; ``model.source`` (:class:`FlameSource`) records the file, its sha256 and detected version.

    Raises:
      MissingFileError: a file is absent (named, with where to get it). CorruptFileError: a file is damaged,
      refused or implausible (named). ValueError: ``n_shape`` / ``n_expression`` out of range (named).
    """
    source = find_file("flame_model", path)
    arrays = read_flame_arrays(source, use_cache=use_cache)
    n_shape = _component_count(n_shape, arrays.shapedirs.shape[-1], "n_shape", "identity", "--n-shape", source)
    n_expression = _component_count(n_expression, arrays.exprdirs.shape[-1], "n_expression", "expression", "--n-exp",
                                    source)
    shapedirs = arrays.shapedirs[:, :, :n_shape]
    exprdirs = arrays.exprdirs[:, :, :n_expression]
    j_reg = arrays.j_regressor
    landmark_file = mediapipe_file = embedding = None
    if landmarks:
        landmark_file = find_file("landmark_embedding", landmark_path)
        mediapipe_file = find_file("mediapipe_embedding", mediapipe_path, required=mediapipe_path is not None)
        embedding = load_landmark_embedding(arrays.faces, landmark_file, mediapipe_file, template=arrays.v_template)
    as_float = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    absolute = lambda p: None if p is None else str(Path(p).resolve())  # noqa: E731
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
        source=FlameSource(
            path=absolute(source), sha256=arrays.sha256, version=arrays.version, n_shape=n_shape,
            n_expression=n_expression, file_shape_components=arrays.shapedirs.shape[-1],
            file_expression_components=arrays.exprdirs.shape[-1], landmark_embedding=absolute(landmark_file),
            mediapipe_embedding=absolute(mediapipe_file)),
    )
