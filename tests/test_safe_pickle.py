"""The restricted unpickler against crafted and fuzzed files: only CorruptFileError comes out, never a crash or hang.

Every hostile file is built here (no binary fixtures). Loads run in the test process on purpose: a segfault or an
unbounded allocation fails the run.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import resource
import sys
import time
import types
import zipfile

import numpy as np
import pytest
import scipy.sparse

from flamejax.files import CorruptFileError, MissingFileError
from flamejax.flame import UnsafePickleError, safe_load_npy, safe_load_pickle
from flamejax.flame._safe_pickle import safe_load_npz
from tests.conftest import shared_flame_dir

TORCH_MAGIC = 0x1950A86A20F9469CFC6C
FUZZ_SECONDS = float(os.environ.get("FLAMEJAX_FUZZ_SECONDS", "12"))


# ----------------------------------------------------------------------------- crafting torch legacy tensors

@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named like torch's so that pickle writes the globals torch's legacy format uses (torch not needed)."""
    modules = {name: types.ModuleType(name) for name in ("torch", "torch._utils", "torch.storage")}

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    def _load_from_bytes(blob):
        raise AssertionError("only pickled, never called")

    for obj, module in ((FloatStorage, "torch"), (_rebuild_tensor_v2, "torch._utils"),
                        (_load_from_bytes, "torch.storage")):
        obj.__module__, obj.__qualname__ = module, obj.__name__
        setattr(modules[module], obj.__name__, obj)
        monkeypatch.setitem(sys.modules, module, modules[module])
    return types.SimpleNamespace(FloatStorage=FloatStorage, rebuild=_rebuild_tensor_v2, from_bytes=_load_from_bytes)


def storage_blob(fake, values, *, numel=None, count=None, extra=b""):
    """One float32 storage in torch's legacy serialisation (what ``torch.storage._load_from_bytes`` reads)."""
    values = np.asarray(values, "<f4")
    marker = object()

    class Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", fake.FloatStorage, "0", "cpu", len(values) if numel is None else numel) \
                if obj is marker else None

    out = io.BytesIO()
    for header in (TORCH_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    Persistent(out, protocol=2).dump(marker)
    pickle.dump(["0"], out, protocol=2)
    out.write(np.int64(len(values) if count is None else count).tobytes() + values.tobytes() + extra)
    return out.getvalue()


def tensor_pickle(fake, values, offset, size, stride, **blob_options) -> bytes:
    class Storage:
        def __reduce__(self):
            return fake.from_bytes, (storage_blob(fake, values, **blob_options),)

    class Tensor:
        def __reduce__(self):
            return fake.rebuild, (Storage(), offset, size, stride, False, collections.OrderedDict())

    return pickle.dumps({"x": Tensor()}, protocol=2)


class Reduced:
    """Pickles as ``function(*args)`` followed by BUILD ``state``."""

    def __init__(self, function, args, state=None):
        self.reduced = (function, args) if state is None else (function, args, state)

    def __reduce__(self):
        return self.reduced


def load_bytes(data: bytes):
    return safe_load_pickle(io.BytesIO(data))


# ----------------------------------------------------------------------------------------- crafted attacks

def test_torch_tensors_round_trip_and_views_are_bounds_checked(fake_torch):
    values = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(load_bytes(tensor_pickle(fake_torch, values, 0, (2, 3), (3, 1)))["x"],
                                  values.reshape(2, 3))
    np.testing.assert_array_equal(load_bytes(tensor_pickle(fake_torch, values, 1, (2, 2), (1, 2)))["x"],
                                  [[1, 3], [2, 4]])
    attacks = {  # each one reads memory outside the 6-element storage, or expands it enormously
        "reads element": (0, (1000,), (1000,)),
        "reads element 6": (6, (), ()),
        "more than this file can hold": (0, (1 << 30,), (0,)),
        "invalid shape": (0, (2, 3), (-3, 1)),
        "inconsistent": (-1, (2,), (1,)),
    }
    for message, (offset, size, stride) in attacks.items():
        with pytest.raises(UnsafePickleError, match=f"<stream>: .*torch tensor.*{message}"):
            load_bytes(tensor_pickle(fake_torch, values, offset, size, stride))


def test_torch_storage_sizes_must_match_the_bytes(fake_torch):
    values = np.arange(4, dtype=np.float32)
    for options in (dict(numel=1 << 40, count=1 << 40), dict(count=5), dict(numel=-1, count=-1)):
        with pytest.raises(UnsafePickleError, match="torch storage"):
            load_bytes(tensor_pickle(fake_torch, values, 0, (4,), (1,), **options))
    truncated = tensor_pickle(fake_torch, values, 0, (4,), (1,))
    with pytest.raises(CorruptFileError, match="<stream>"):
        load_bytes(truncated[: len(truncated) // 2])


def test_billion_laughs_fails_fast():
    laugh: list = []
    for _ in range(30):
        laugh = [laugh] * 10  # 10**30 lists once shared references are expanded
    data = pickle.dumps(laugh, protocol=2)
    assert len(data) < 1000
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError, match="objects once shared references are expanded"):
        load_bytes(data)
    assert time.perf_counter() - start < 10


def test_deep_nesting_is_refused_not_a_crash():
    depth = 200_000
    nested_lists = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    with pytest.raises(UnsafePickleError, match="nested deeper than 64"):
        load_bytes(nested_lists)
    # A deep tuple used as a dict key is hashed recursively in C by CPython: it must be refused before loading.
    nested_tuple_key = b"\x80\x02}" + b")" + b"\x85" * depth + b"Ns."
    with pytest.raises(UnsafePickleError, match="nested deeper than 64"):
        load_bytes(nested_tuple_key)


def test_numpy_arrays_must_hold_the_bytes_their_shape_needs():
    from numpy._core.multiarray import _reconstruct

    def array(shape, dtype, data):
        return Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), False, data))

    np.testing.assert_array_equal(load_bytes(pickle.dumps(array((2,), "<f4", b"\0" * 8))), [0, 0])
    for shape, dtype, data, message in (
            ((10**12,), "f8", b"\0" * 8, "needs 8000000000000 bytes"),
            ((-1,), "f8", b"", "invalid shape"),
            ((3,), "O", [1], "object array of 3 elements"),
            ((1,), [("a", "f8")], b"\0" * 8, "dtype"),
    ):
        with pytest.raises(UnsafePickleError, match=message):
            load_bytes(pickle.dumps(array(shape, dtype, data)))


def test_sparse_indices_are_checked_before_scipy_sees_them():
    good = scipy.sparse.csc_matrix(np.eye(3))
    assert (load_bytes(pickle.dumps(good, protocol=2)) != good).nnz == 0
    bad = scipy.sparse.csc_matrix(np.eye(3))
    bad.indices = np.array([0, 1, 1 << 30], np.int32)  # scipy's C code would write far outside the array
    with pytest.raises(UnsafePickleError, match="csc sparse matrix index arrays"):
        load_bytes(pickle.dumps(bad, protocol=2))
    huge = scipy.sparse.csc_matrix((1 << 20, 1 << 20))
    with pytest.raises(UnsafePickleError, match="dense form"):
        load_bytes(pickle.dumps(huge, protocol=2))
    with pytest.raises(UnsafePickleError, match="constructor"):
        load_bytes(pickle.dumps(Reduced(scipy.sparse.csc_matrix, ((1 << 30, 1 << 30),))))


def test_code_and_state_tampering_are_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle posix\.system|refusing to unpickle os\.system"):
        load_bytes(pickle.dumps(Reduced(os.system, ("true",))))
    # BUILD on an allowed function must not change it for later loads.
    tamper = b"\x80\x02c_codecs\nencode\n}(X\x0b\x00\x00\x00__defaults__)u\x8c\x05utf-8\x85bN."
    with pytest.raises(CorruptFileError):
        load_bytes(tamper)
    assert load_bytes(pickle.dumps(b"\xff", protocol=2)) == b"\xff"
    with pytest.raises(MissingFileError):
        safe_load_pickle(tmp_path / "absent.pkl")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": 1}))
    with pytest.raises(CorruptFileError, match="zip archive"):
        load_bytes(zipped.getvalue())


def test_npy_and_npz_sizes_are_checked_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    (tmp_path / "huge.npy").write_bytes(header.getvalue() + b"\0" * 64)
    with pytest.raises(CorruptFileError, match="huge.npy: array of shape"):
        safe_load_npy(tmp_path / "huge.npy")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("a.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(CorruptFileError, match="huge.npz: a.npy claims more data"):
        safe_load_npz(tmp_path / "huge.npz")
    np.savez(tmp_path / "ok.npz", a=np.arange(3.0))
    np.testing.assert_array_equal(safe_load_npz(tmp_path / "ok.npz")["a"], np.arange(3.0))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:-40])
    with pytest.raises(CorruptFileError, match="cut.npz"):
        safe_load_npz(tmp_path / "cut.npz")


# --------------------------------------------------------------------------------------------------- fuzz

def _seeds(fake) -> list[tuple[str, bytes]]:
    """Real FLAME-family files (small ones, and the model's head and tail) and crafted pickles of every kind."""
    seeds = []
    flame = shared_flame_dir()
    for name in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy", "landmark_embedding.npy",
                 "FLAME_masks.pkl"):
        if (flame / name).is_file():
            seeds.append((name[-3:], (flame / name).read_bytes()))
    model = flame / "flame_test_model.pkl"
    if model.is_file():
        with open(model, "rb") as f:
            head = f.read(200_000)
            f.seek(-1200, os.SEEK_END)
            seeds.append(("pkl", head + f.read()))  # template array, then J_regressor/kintree/J and the end
    from numpy._core.multiarray import _reconstruct
    ch = Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, (2, 2), np.dtype("<f8"), True, b"\1" * 32))
    seeds.append(("pkl", pickle.dumps({"v": np.arange(12.0).reshape(4, 3), "f": np.arange(6, dtype=np.uint32),
                                       "J": scipy.sparse.csc_matrix(np.eye(4)), "o": ch,
                                       "s": [frozenset({1, 2}), (1.5, "x", None), {"k": b"\0\1"}]}, protocol=2)))
    seeds.append(("pkl", tensor_pickle(fake, np.arange(6, dtype=np.float32), 0, (2, 3), (3, 1))))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", tensor_pickle(fake, np.arange(4, dtype=np.float32), 0, (4,), (1,)))
        archive.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    seeds.append(("pkl", zipped.getvalue()))
    return seeds


def _mutate(rng: np.random.Generator, data: bytes, other: bytes) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # bit flips
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(len(buf))
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # random bytes overwritten
        i = rng.integers(len(buf))
        buf[i:i + 8] = rng.bytes(8)
    elif kind == 2:  # truncation
        del buf[rng.integers(len(buf)):]
    elif kind == 3:  # splice with another seed
        buf = buf[:rng.integers(len(buf) + 1)] + bytearray(other[rng.integers(len(other) + 1):])
    elif kind == 4:  # a chunk duplicated
        i = rng.integers(len(buf))
        buf[i:i] = buf[i:i + int(rng.integers(1, 64))]
    else:  # small integers set to extremes (sizes, lengths, memo indices)
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(max(1, len(buf) - 8))
            buf[i:i + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\0\0\0\x80", b"\xff\xff\xff\xff", b"\0\0\0\0"])
    return bytes(buf)


def test_fuzzed_files_give_only_corrupt_file_errors(fake_torch, tmp_path):
    rng = np.random.default_rng(12)
    seeds = _seeds(fake_torch)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    deadline = time.perf_counter() + FUZZ_SECONDS
    loads = slowest = 0
    outcomes = collections.Counter()
    while time.perf_counter() < deadline:
        kind, data = seeds[rng.integers(len(seeds))]
        candidate = _mutate(rng, data, seeds[rng.integers(len(seeds))][1]) if rng.random() < 0.9 else rng.bytes(
            int(rng.integers(1, 512)))
        start = time.perf_counter()
        try:
            if kind == "npy":
                path = tmp_path / "fuzz.npy"
                path.write_bytes(candidate)
                safe_load_npy(path)
            else:
                load_bytes(candidate)
            outcomes["loaded"] += 1
        except CorruptFileError as err:
            outcomes[type(err).__name__] += 1
            assert str(err).splitlines()[0] and len(str(err)) < 1000
        except BaseException as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {kind}: {type(err).__name__}: {err} (input {candidate[:80]!r}...)")
        slowest = max(slowest, time.perf_counter() - start)
        loads += 1
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"fuzz: {loads} loads in {FUZZ_SECONDS} s, {dict(outcomes)}, slowest {slowest:.2f} s, "
          f"peak RSS growth {rss_growth_mb:.0f} MB")
    assert loads > 50 and outcomes["CorruptFileError"] + outcomes["UnsafePickleError"] > 10
    assert slowest < 5.0
    assert rss_growth_mb < 400
