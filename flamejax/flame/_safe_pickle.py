"""Restricted unpickling of FLAME files: numpy, scipy.sparse and chumpy data only, never code.

Official FLAME pickles were written by Python 2 (latin1 strings) and store some arrays as chumpy ``Ch``
objects; DECA's ``landmark_embedding.npy`` holds torch tensors pickled in torch's legacy format. Both are read
here without importing chumpy or torch: the referenced classes are replaced by inert stand-ins and only a fixed
allow-list of constructors can be called. Anything else raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a class or function outside the allow-list (possible code execution)."""


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: keeps the pickled state; :meth:`to_numpy` returns its value ``x``."""

    def __init__(self, *args, **kwargs):
        self.state: dict[str, Any] = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_numpy(self) -> np.ndarray:
        if "x" not in self.state:
            raise UnsafePickleError(f"chumpy object without a stored value (keys {sorted(self.state)})")
        return np.asarray(self.state["x"])


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


_NUMPY_GLOBALS = {
    "_reconstruct": _numpy_reconstruct,
    "scalar": _numpy_scalar,
}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}
_SPARSE = {
    "csc_matrix": scipy.sparse.csc_matrix,
    "csr_matrix": scipy.sparse.csr_matrix,
    "coo_matrix": scipy.sparse.coo_matrix,
}
_SPARSE_MODULES = {"scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.coo", "scipy.sparse._coo"}

_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex}
_TORCH_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


class _TorchStorageType:
    """Stand-in for ``torch.XStorage`` classes: only their element dtype matters."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_unused) -> np.ndarray:
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    ).copy()


def _load_torch_legacy_bytes(blob: bytes) -> np.ndarray:
    """Decode one tensor storage in torch's legacy (pre-zip) serialisation format."""
    f = io.BytesIO(blob)
    if _RestrictedUnpickler(f).load() != _TORCH_MAGIC:
        raise UnsafePickleError("embedded torch storage: bad magic number")
    if _RestrictedUnpickler(f).load() != _TORCH_PROTOCOL:
        raise UnsafePickleError("embedded torch storage: unsupported protocol version")
    _RestrictedUnpickler(f).load()  # sys_info
    storages: dict[str, np.ndarray] = {}
    pending: dict[str, tuple[np.dtype, int]] = {}

    def persistent_load(saved_id):
        kind, storage_type, key, _location, numel, *view = saved_id
        if kind != "storage" or not isinstance(storage_type, _TorchStorageType):
            raise UnsafePickleError(f"embedded torch storage: unsupported persistent id {kind!r}")
        if view and view[0] is not None:
            raise UnsafePickleError("embedded torch storage: storage views are not supported")
        pending[key] = (storage_type.dtype, numel)
        return key

    unpickler = _RestrictedUnpickler(f)
    unpickler.persistent_load = persistent_load
    root_key = unpickler.load()
    keys = _RestrictedUnpickler(f).load()
    for key in keys:
        dtype, numel = pending[key]
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        if count != numel:
            raise UnsafePickleError("embedded torch storage: element count mismatch")
        storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<")).copy()
    return storages[root_key]


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, **kwargs):
        super().__init__(file, encoding="latin1", **kwargs)

    def find_class(self, module: str, name: str):
        if module in _NUMPY_MODULES and name in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[name]()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in _SPARSE_MODULES and name in _SPARSE:
            return _SPARSE[name]
        if module.startswith("chumpy"):
            return ChumpyArray
        if module == "_codecs" and name == "encode":
            return _latin1_bytes
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_torch_legacy_bytes
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchStorageType(_TORCH_DTYPES[name])
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: FLAME files contain only numpy, scipy.sparse and chumpy data"
        )


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, ChumpyArray):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        if obj.shape == ():
            return _to_plain(obj.item())
        return np.array([_to_plain(v) for v in obj.ravel()], dtype=object).reshape(obj.shape)
    return obj


def safe_load_pickle(file: str | BinaryIO) -> Any:
    """Unpickle a FLAME-family pickle with the allow-list; chumpy values come back as numpy arrays."""
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        with open(file, "rb") as f:
            return _to_plain(_RestrictedUnpickler(f).load())
    return _to_plain(_RestrictedUnpickler(file).load())


def safe_load_npy(path: str) -> Any:
    """Load a ``.npy`` file; object arrays (pickled dicts) go through the restricted unpickler."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(f)
        if dtype != object:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        return _to_plain(_RestrictedUnpickler(f).load())
