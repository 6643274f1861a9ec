"""Restricted, bounded unpickling of FLAME files: numpy, scipy.sparse, chumpy and torch-tensor data only, never code.

Official FLAME pickles were written by Python 2 (latin1 strings) and store some arrays as chumpy ``Ch``
objects; DECA's ``landmark_embedding.npy`` holds torch tensors pickled in torch's legacy format. Both are read
here without importing chumpy or torch.

A file is untrusted input, so loading is done in three guarded steps:

1. a scan of the opcodes (:func:`pickletools.genops`, pure Python) bounds the opcode count and the nesting of
   hashable containers (CPython hashes nested tuples recursively in C: a 300k-deep key would overflow the C
   stack, which no ``try`` catches);
2. the C unpickler runs with an allow-list: every allowed global is an inert stand-in or a checked function;
   numpy arrays, dtypes, sparse matrices and torch tensors are rebuilt here from their pickled state with every
   shape, offset, stride, index and byte count checked against the bytes actually present;
3. the result is walked once into plain Python/numpy values, with a bound on the number of objects visited
   (shared references are expanded, so a "billion laughs" graph fails fast instead of growing without limit)
   and on the depth.

Every failure is a :class:`~flamejax.files.CorruptFileError` naming the file: :class:`UnsafePickleError` for
refused globals and exceeded bounds (crafted or damaged data), plain ``CorruptFileError`` for malformed or
truncated data. No other exception type leaves :func:`safe_load_pickle`, :func:`safe_load_npy` or
:func:`safe_load_npz`.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import io
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse

from flamejax.files import CorruptFileError, MissingFileError


class UnsafePickleError(CorruptFileError, pickle.UnpicklingError):
    """The pickle references a class or function outside the allow-list (possible code execution), or its data
    break a bound (sizes, offsets, strides, nesting, object count): a crafted or damaged file."""


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """Bounds on one load. The defaults are far above what FLAME files need (hundreds of opcodes, depth < 10)."""

    max_file_bytes: int = 2 << 30
    """Largest file read (official FLAME pickles are 50-150 MB)."""
    max_opcodes: int = 1_000_000
    """Pickle opcodes per load (the FLAME test model has 417)."""
    max_depth: int = 64
    """Nesting of containers."""
    max_objects: int = 200_000
    """Objects visited while converting the result, shared references counted each time they are reached."""
    extra_bytes: int = 64 << 20
    """Bytes of arrays a load may create beyond twice the file's size (tensor views, sparse-to-dense)."""


DEFAULT_LIMITS = PickleLimits()

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_MAX_NDIM = 32
_DTYPE_SPEC = re.compile(r"^[<>|=]?([biufc][1248]|b1|f16|c32|O8?|[SUV]\d+)$")
_TORCH_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}
_SPARSE_MODULES = {"scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.coo", "scipy.sparse._coo"}
_HASHABLE_BUILDERS = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE", "FROZENSET", "REDUCE", "NEWOBJ",
                      "NEWOBJ_EX", "OBJ", "INST", "BINPERSID"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


class _Load:
    """One load's file name (for messages), limits and remaining byte budget, shared by nested torch pickles."""

    def __init__(self, name: str, file_bytes: int, limits: PickleLimits):
        self.name = name
        self.limits = limits
        self.bytes_left = 2 * file_bytes + limits.extra_bytes

    def unsafe(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(f"{self.name}: {what}; the file is damaged or crafted. Use the published file.")

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.bytes_left:
            raise self.unsafe(f"{what} needs {nbytes} bytes, more than this file can hold")
        self.bytes_left -= nbytes

    def count(self, shape: Any, what: str) -> tuple[tuple[int, ...], int]:
        """``shape`` checked as a tuple of non-negative ints; returns it and its element count."""
        if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_NDIM or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise self.unsafe(f"{what} has an invalid shape")
        return tuple(shape), math.prod(shape)


# ------------------------------------------------------------------------------------------- inert stand-ins

class _Inert:
    """Base of what the unpickler may see: no instance dict, and no state unless the subclass accepts it."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"pickle tries to set the state of {type(self).__name__}")


class _Allowed(_Inert):
    """An allow-listed function as the unpickler sees it (a fresh object per lookup, attributes read-only)."""

    __slots__ = ("_function",)

    def __init__(self, function):
        object.__setattr__(self, "_function", function)

    def __setattr__(self, name, value):
        raise UnsafePickleError(f"pickle tries to set attribute {name!r} of an allowed function")

    def __call__(self, *args):
        return self._function(*args)


class _NdarrayClass(_Inert):
    """Stand-in for the class ``numpy.ndarray``: only ever an argument of ``_reconstruct``."""

    __slots__ = ()


class _DtypeStandIn(_Inert):
    """A numpy dtype as pickled (``dtype(spec, align, copy)`` then a state tuple); only plain dtypes resolve."""

    __slots__ = ("spec", "byteorder", "structured")

    def __init__(self, spec=None, align=False, copy=True):
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "byteorder", "=")
        object.__setattr__(self, "structured", False)

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 5:
            raise UnsafePickleError("numpy dtype with an invalid state")
        object.__setattr__(self, "byteorder", state[1])
        object.__setattr__(self, "structured", state[3] is not None or state[4] is not None)

    def resolve(self, load: _Load) -> np.dtype:
        if self.structured:
            raise load.unsafe("structured numpy dtypes are not allowed in FLAME files")
        if not isinstance(self.spec, str) or not _DTYPE_SPEC.match(self.spec) or self.byteorder not in "<>|=":
            raise load.unsafe(f"numpy dtype {self.spec!r} is not a plain numeric, string or object dtype")
        dtype = np.dtype(self.spec)
        if dtype.itemsize > 1 << 20:
            raise load.unsafe(f"numpy dtype {self.spec!r} has an implausible item size")
        return dtype if self.byteorder in "|=" or dtype.byteorder == "|" else dtype.newbyteorder(self.byteorder)


class _ArrayStandIn(_Inert):
    """An ndarray as pickled (``_reconstruct`` then ``(version, shape, dtype, fortran, data)``), rebuilt here."""

    __slots__ = ("load", "array")

    def __init__(self, load: _Load):
        object.__setattr__(self, "load", load)
        object.__setattr__(self, "array", None)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise self.load.unsafe("numpy array with an invalid state")
        shape, dtype, fortran, data = state
        object.__setattr__(self, "array", _array_from_data(self.load, shape, dtype, data, bool(fortran)))


def _resolve_dtype(load: _Load, dtype: Any) -> np.dtype:
    if not isinstance(dtype, _DtypeStandIn):
        raise load.unsafe("numpy array without a numpy dtype")
    return dtype.resolve(load)


def _array_from_data(load: _Load, shape: Any, dtype: Any, data: Any, fortran: bool) -> np.ndarray:
    shape, count = load.count(shape, "numpy array")
    dtype = _resolve_dtype(load, dtype)
    order = "F" if fortran else "C"
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != count:
            raise load.unsafe(f"object array of {count} elements holds {type(data).__name__} data")
        if count > load.limits.max_objects:
            raise load.unsafe(f"object array of {count} elements")
        out = np.empty(count, dtype=object)
        for i, item in enumerate(data):
            out[i] = item
        return out.reshape(shape, order=order)
    if isinstance(data, str):  # Python 2 pickles: raw bytes as a latin1-decoded str
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        size = len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__
        raise load.unsafe(f"numpy array of shape {shape} {dtype} needs {count * dtype.itemsize} bytes, "
                          f"the file gives {size}")
    load.charge(count * dtype.itemsize, "a numpy array")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order=order).copy()


class ChumpyArray(_Inert):
    """Stand-in for ``chumpy.ch.Ch``: keeps the pickled state; its value ``x`` becomes a numpy array."""

    __slots__ = ("state",)

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "state", {})

    def __setstate__(self, state):
        object.__setattr__(self, "state", state if isinstance(state, dict) else {"x": state})


class _SparseStandIn(_Inert):
    """A scipy.sparse matrix as pickled (``__new__`` then its ``__dict__``), rebuilt after validation."""

    __slots__ = ("state",)
    layout = ""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError(f"pickle calls the {self.layout} sparse matrix constructor")
        object.__setattr__(self, "state", {})

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.layout} sparse matrix with an invalid state")
        object.__setattr__(self, "state", state)


class _Csc(_SparseStandIn):
    __slots__ = ()
    layout = "csc"


class _Csr(_SparseStandIn):
    __slots__ = ()
    layout = "csr"


class _Coo(_SparseStandIn):
    __slots__ = ()
    layout = "coo"


_SPARSE = {"csc_matrix": _Csc, "csr_matrix": _Csr, "coo_matrix": _Coo}


class _TorchStorageType(_Inert):
    """Stand-in for ``torch.XStorage`` classes: only their element dtype matters."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        object.__setattr__(self, "dtype", np.dtype(dtype))


# ------------------------------------------------------------------------------------ allowed constructors

def _reconstruct(load: _Load):
    def reconstruct(subtype, shape=None, dtype_code=None):
        if not isinstance(subtype, _NdarrayClass):
            raise load.unsafe("numpy _reconstruct of something other than ndarray")
        return _ArrayStandIn(load)
    return reconstruct


def _scalar(load: _Load):
    def scalar(dtype, data=None):
        dtype = _resolve_dtype(load, dtype)
        if dtype.hasobject:
            return data
        if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
            raise load.unsafe(f"numpy {dtype} scalar without its {dtype.itemsize} bytes")
        return np.frombuffer(data, dtype=dtype, count=1)[0]
    return scalar


def _frombuffer(load: _Load):
    def frombuffer(data, dtype, shape, order="C"):
        if isinstance(data, pickle.PickleBuffer):
            data = bytes(data)
        return _array_from_data(load, shape, dtype, data, order == "F")
    return frombuffer


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode of {type(text).__name__} with encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    # Python 3 writes b"" into protocol-2 pickles as a call of bytes() without arguments.
    return b""


def _rebuild_tensor(load: _Load):
    def rebuild(storage, offset, size, stride, *_unused):
        """``torch._utils._rebuild_tensor_v2``: a strided view of a storage, every element checked in bounds."""
        if not isinstance(storage, np.ndarray) or storage.ndim != 1 or storage.dtype.hasobject:
            raise load.unsafe("torch tensor without a torch storage")
        size, numel = load.count(size, "torch tensor")
        stride, _ = load.count(stride, "torch tensor stride")
        if len(stride) != len(size) or not isinstance(offset, int) or offset < 0:
            raise load.unsafe("torch tensor with inconsistent size, stride or offset")
        if numel == 0:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise load.unsafe(f"torch tensor reads element {last} of a storage of {storage.size}")
        load.charge(numel * storage.itemsize, "a torch tensor")
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride)).copy()
    return rebuild


def _load_torch_legacy(load: _Load):
    def load_from_bytes(blob):
        """``torch.storage._load_from_bytes``: one storage in torch's legacy (pre-zip) serialisation."""
        if not isinstance(blob, (bytes, bytearray)):
            raise load.unsafe("torch storage without its bytes")
        return _torch_legacy_storage(load, io.BytesIO(blob))
    return load_from_bytes


def _torch_legacy_storage(load: _Load, f: io.BytesIO) -> np.ndarray:
    if _unpickle_one(load, f) != _TORCH_MAGIC:
        raise load.unsafe("embedded torch storage: bad magic number (not torch's legacy format)")
    if _unpickle_one(load, f) != _TORCH_PROTOCOL:
        raise load.unsafe("embedded torch storage: unsupported protocol version")
    _unpickle_one(load, f)  # sys_info
    pending: dict[str, tuple[np.dtype, int]] = {}

    def persistent_load(saved_id):
        if not isinstance(saved_id, tuple) or len(saved_id) < 5:
            raise load.unsafe("embedded torch storage: malformed persistent id")
        kind, storage_type, key, _location, numel, *view = saved_id
        if kind != "storage" or not isinstance(storage_type, _TorchStorageType) or not isinstance(key, str):
            raise load.unsafe(f"embedded torch storage: unsupported persistent id {kind!r}")
        if view and view[0] is not None:
            raise load.unsafe("embedded torch storage: storage views are not supported")
        if not isinstance(numel, int) or numel < 0 or pending.get(key, (storage_type.dtype, numel)) != (
                storage_type.dtype, numel):
            raise load.unsafe("embedded torch storage: inconsistent storage size")
        pending[key] = (storage_type.dtype, numel)
        return key

    root_key = _unpickle_one(load, f, persistent_load)
    keys = _unpickle_one(load, f)
    if not isinstance(keys, list) or len(set(map(str, keys))) != len(keys) or not set(keys) <= set(pending):
        raise load.unsafe("embedded torch storage: storage keys do not match the pickled tensors")
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        dtype, numel = pending[key]
        header = f.read(8)
        if len(header) != 8 or int.from_bytes(header, "little", signed=True) != numel:
            raise load.unsafe("embedded torch storage: element count mismatch or truncated storage")
        load.charge(numel * dtype.itemsize, "a torch storage")
        raw = f.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise load.unsafe("embedded torch storage: truncated storage data")
        storages[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if root_key not in storages:
        raise load.unsafe("embedded torch storage: the pickled storage has no data")
    return storages[root_key]


# ----------------------------------------------------------------------------------------------- unpickling

def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else repr(text[:limit]) + "..."


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, load: _Load):
        super().__init__(file, encoding="latin1")
        self._load = load

    def find_class(self, module: str, name: str):
        load = self._load
        if module in _NUMPY_MODULES:
            makers = {"_reconstruct": _reconstruct, "scalar": _scalar, "_frombuffer": _frombuffer}
            if name in makers:
                return _Allowed(makers[name](load))
        if module == "numpy" and name == "ndarray":
            return _NdarrayClass()
        if module == "numpy" and name == "dtype":
            return _DtypeStandIn
        if module in _SPARSE_MODULES and name in _SPARSE:
            return _SPARSE[name]
        if module.startswith("chumpy"):
            return ChumpyArray
        if module == "_codecs" and name == "encode":
            return _Allowed(_latin1_bytes)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "slice", "complex"):
            return _Allowed(getattr(builtins, name))
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _Allowed(_empty_bytes)
        if module == "collections" and name == "OrderedDict":
            return _Allowed(collections.OrderedDict)
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _Allowed(_rebuild_tensor(load))
        if module == "torch.storage" and name == "_load_from_bytes":
            return _Allowed(_load_torch_legacy(load))
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchStorageType(_TORCH_DTYPES[name])
        raise UnsafePickleError(
            f"{load.name}: refusing to unpickle {_short(module)}.{_short(name)}: FLAME files contain only numpy, "
            "scipy.sparse, chumpy and torch-tensor data (this file could run code when loaded with pickle; "
            "do not use it)")


_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                  pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}
_OPCODES = {op.code.encode("latin1"): op for op in pickletools.opcodes}


def _opcodes(f: BinaryIO, size: int):
    """Yield ``(opcode, memo index or None)`` up to STOP, skipping arguments without decoding them.

    (:func:`pickletools.genops` decodes every argument and fails on Python 2 text pickles' raw strings.)
    """
    while True:
        code = f.read(1)
        if code not in _OPCODES:
            raise ValueError(f"unknown or missing pickle opcode {code!r} at byte {f.tell() - 1}")
        op = _OPCODES[code]
        memo_key = None
        if op.arg is not None:
            n = op.arg.n
            if n == pickletools.UP_TO_NEWLINE:
                lines = [f.readline() for _ in range(2 if op.name in ("GLOBAL", "INST") else 1)]
                if not all(line.endswith(b"\n") for line in lines):
                    raise ValueError(f"pickle truncated in {op.name}")
                if op.name in ("GET", "PUT"):
                    memo_key = int(lines[0])
            elif n in _LENGTH_PREFIX:
                prefix = f.read(_LENGTH_PREFIX[n])
                length = int.from_bytes(prefix, "little", signed=n == pickletools.TAKEN_FROM_ARGUMENT4)
                if len(prefix) != _LENGTH_PREFIX[n] or length < 0 or f.tell() + length > size:
                    raise ValueError(f"pickle truncated in {op.name}")
                f.seek(length, io.SEEK_CUR)
            else:
                raw = f.read(n)
                if len(raw) != n:
                    raise ValueError(f"pickle truncated in {op.name}")
                if op.name in ("BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT"):
                    memo_key = int.from_bytes(raw, "little")
        yield op, memo_key
        if op.name == "STOP":
            return


def _scan(load: _Load, f: BinaryIO, size: int) -> None:
    """Walk one pickle's opcodes (from ``f``'s position up to STOP) bounding their count and the nesting depth.

    The depth model follows :mod:`pickletools`' stack descriptions; containers filled in place (lists, dicts,
    sets, BUILD) keep their depth, since only immutable containers (tuples, frozensets) are hashed recursively.
    """
    stack: list[int] = []
    metastack: list[list[int]] = []
    memo: dict[int, int] = {}
    limits = load.limits
    for count, (op, memo_key) in enumerate(_opcodes(f, size), start=1):
        if count > limits.max_opcodes:
            raise load.unsafe(f"more than {limits.max_opcodes} pickle opcodes")
        name = op.name
        if name == "MARK":
            metastack.append(stack)
            stack = []
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            key = len(memo) if name == "MEMOIZE" else memo_key
            if key > count:  # picklers number memo slots in order; the C unpickler allocates up to the index
                raise load.unsafe(f"memo index {key} at opcode {count}")
            memo[key] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[memo_key])
            continue
        before = [s.name for s in op.stack_before]
        if "mark" in before:
            popped = stack
            stack = metastack.pop()
            for _ in range(before.index("mark")):
                popped = [stack.pop(), *popped]
        elif name == "POP" and not stack:
            stack = metastack.pop()
            continue
        else:
            popped = [stack.pop() for _ in before][::-1]
        if name in _MUTATORS:
            depth = popped[0]
        elif name in _HASHABLE_BUILDERS:
            depth = 1 + max(popped, default=0)
        else:
            depth = max(popped, default=0) if name == "DUP" else 0
        if depth > limits.max_depth:
            raise load.unsafe(f"containers nested deeper than {limits.max_depth}")
        stack.extend([depth] * len(op.stack_after))


def _unpickle_one(load: _Load, f: io.BytesIO, persistent_load=None) -> Any:
    """Scan then unpickle the next pickle in ``f`` (inner pickles of torch storages share the load's budget)."""
    start = f.tell()
    _scan(load, f, len(f.getbuffer()))
    f.seek(start)
    unpickler = _RestrictedUnpickler(f, load)
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # damaged text pickles: invalid escapes in STRING
        return unpickler.load()


def _plain(load: _Load, obj: Any) -> Any:
    """The loaded object with stand-ins replaced by numpy/scipy values, bounded in objects visited and depth."""
    visited = 0

    def walk(value: Any, depth: int) -> Any:
        nonlocal visited
        visited += 1
        if visited > load.limits.max_objects:
            raise load.unsafe(f"more than {load.limits.max_objects} objects once shared references are expanded")
        if depth > load.limits.max_depth:
            raise load.unsafe(f"containers nested deeper than {load.limits.max_depth}")
        if isinstance(value, _ArrayStandIn):
            if value.array is None:
                raise load.unsafe("numpy array without data")
            value = value.array
        if isinstance(value, ChumpyArray):
            if "x" not in value.state:
                raise load.unsafe(f"chumpy object without a stored value (keys {sorted(map(str, value.state))})")
            return np.asarray(walk(value.state["x"], depth + 1))
        if isinstance(value, _SparseStandIn):
            return _sparse(load, type(value).layout, {k: walk(v, depth + 1) for k, v in value.state.items()})
        if isinstance(value, _Inert):
            raise load.unsafe(f"a bare {type(value).__name__} in the data")
        if isinstance(value, dict):
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v, depth + 1) for v in value)
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            if value.shape == ():
                return walk(value.item(), depth + 1)
            out = np.empty(value.size, dtype=object)
            for i, item in enumerate(value.ravel()):
                out[i] = walk(item, depth + 1)
            return out.reshape(value.shape)
        return value

    return walk(obj, 0)


def _index_array(load: _Load, value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
        raise load.unsafe(f"sparse matrix {what} is not a 1-D integer array")
    return value


def _sparse(load: _Load, layout: str, state: dict) -> scipy.sparse.spmatrix:
    """A scipy sparse matrix from its pickled ``__dict__``, every index checked before scipy's C code sees it."""
    shape, dense = load.count(state.get("_shape", state.get("shape")), f"{layout} sparse matrix")
    if len(shape) != 2:
        raise load.unsafe(f"{layout} sparse matrix of shape {shape}")
    load.charge(dense * 8, "a sparse matrix's dense form")
    data = state.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 1 or data.dtype.hasobject:
        raise load.unsafe(f"{layout} sparse matrix without a 1-D numeric data array")
    if layout == "coo":
        row, col = (_index_array(load, state.get(k), k) for k in ("row", "col"))
        if not len(row) == len(col) == len(data) or (len(row) and (
                row.min() < 0 or row.max() >= shape[0] or col.min() < 0 or col.max() >= shape[1])):
            raise load.unsafe("coo sparse matrix indices outside its shape")
        return scipy.sparse.coo_matrix((data, (row, col)), shape=shape)
    indices, indptr = (_index_array(load, state.get(k), k) for k in ("indices", "indptr"))
    major, minor = shape if layout == "csr" else shape[::-1]
    if (len(indptr) != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices)
            or len(indices) != len(data) or (len(indices) and (indices.min() < 0 or indices.max() >= minor))):
        raise load.unsafe(f"{layout} sparse matrix index arrays are inconsistent with its shape {shape}")
    matrix = (scipy.sparse.csr_matrix if layout == "csr" else scipy.sparse.csc_matrix)(
        (data, indices, indptr), shape=shape)
    matrix.check_format(full_check=True)
    return matrix


# --------------------------------------------------------------------------------------------- public API

def _name_of(file: Any) -> str:
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        return str(Path(file))
    return str(getattr(file, "name", "<stream>"))


def _read_bounded(file: Any, limits: PickleLimits) -> bytes:
    name = _name_of(file)
    try:
        if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
            with open(file, "rb") as f:
                data = f.read(limits.max_file_bytes + 1)
        else:
            data = file.read(limits.max_file_bytes + 1)
    except FileNotFoundError as err:
        raise MissingFileError(f"{name}: no such file") from err
    except OSError as err:
        raise CorruptFileError(f"{name}: cannot be read ({err.strerror or err})") from err
    if len(data) > limits.max_file_bytes:
        raise UnsafePickleError(f"{name}: larger than {limits.max_file_bytes} bytes; not a FLAME file")
    return data


def _guarded(name: str, data: bytes, limits: PickleLimits, read) -> Any:
    """Run ``read(load, stream)``; any failure of the untrusted data becomes one CorruptFileError naming the file."""
    load = _Load(name, len(data), limits)
    if data[:4] == b"PK\x03\x04":
        raise CorruptFileError(f"{name}: a zip archive (a torch zip checkpoint or npz?), not a pickle; "
                               "FLAME files are Python pickles")
    try:
        return _plain(load, read(load, io.BytesIO(data)))
    except CorruptFileError:
        raise
    except RecursionError as err:
        raise load.unsafe("nesting too deep") from err
    except MemoryError as err:
        raise load.unsafe("data too large for memory") from err
    except Exception as err:  # noqa: BLE001 - the unpickler and numpy raise many types on damaged input
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        raise CorruptFileError(f"{name}: unreadable or truncated pickle ({type(err).__name__}: {reason}); "
                               "get the file again") from err


def safe_load_pickle(file: str | Path | BinaryIO, *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """Unpickle a FLAME-family pickle with the allow-list and bounds; chumpy values come back as numpy arrays.

    Raises:
      MissingFileError: the path does not exist.
      UnsafePickleError: a refused global or a broken bound (crafted or damaged file); a CorruptFileError.
      CorruptFileError: malformed, truncated or unreadable data.
    """
    return _guarded(_name_of(file), _read_bounded(file, limits), limits, _unpickle_one)


def safe_load_npy(path: str | Path, *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """Load a ``.npy`` file; object arrays (pickled dicts) go through the restricted unpickler.

    Raises the errors of :func:`safe_load_pickle`.
    """
    name = str(path)
    data = _read_bounded(path, limits)
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in header:
            raise ValueError(f"npy format version {version}")
        shape, fortran, dtype = header[version](f)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, EOFError... on bad headers
        raise CorruptFileError(f"{name}: not a readable .npy file ({type(err).__name__}); get the file again") from err
    if not dtype.hasobject:
        return _npy_payload(name, f, shape, fortran, dtype)
    return _guarded(name, data[f.tell():], limits, _unpickle_one)


def _npy_payload(name: str, f: BinaryIO, shape: tuple, fortran: bool, dtype: np.dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    raw = f.read(nbytes + 1)
    if len(raw) != nbytes:
        raise CorruptFileError(f"{name}: array of shape {shape} {dtype} needs {nbytes} bytes, the file has "
                               f"{len(raw)}; the file is truncated or damaged. Get it again.")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def safe_load_npz(path: str | Path, *, limits: PickleLimits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no object arrays), each size checked before anything is allocated.

    Raises:
      MissingFileError: the path does not exist. CorruptFileError: not a zip of .npy files, truncated, damaged,
      a member larger than its stored size, or an object array.
    """
    name = str(path)
    if not Path(path).is_file():
        raise MissingFileError(f"{name}: no such file")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = header(member)
                    if dtype.hasobject:
                        raise CorruptFileError(f"{name}: {info.filename} is an object array; npz files here hold "
                                               "plain numeric arrays only")
                    if math.prod(shape) * dtype.itemsize > min(info.file_size, limits.max_file_bytes):
                        raise CorruptFileError(f"{name}: {info.filename} claims more data than it stores")
                    arrays[info.filename[:-4]] = _npy_payload(f"{name}:{info.filename}", member, shape, fortran,
                                                              dtype)
    except CorruptFileError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile, zlib and numpy raise many types on damaged input
        raise CorruptFileError(f"{name}: not a readable .npz file ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:200] if str(err) else ''}); get the file again") from err
    return arrays
