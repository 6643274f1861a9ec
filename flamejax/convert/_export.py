"""Checkpoint reading, strict state-dict loading and verified ONNX export shared by the converters.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, no code
runs. Training checkpoints sometimes also pickle numpy arrays or scalars (validation state); those few
numpy reconstruction functions are allowed by name. Anything else is refused unless the caller says the
file is trusted (``trust_checkpoint=True``, CLI ``--trust-checkpoint``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flamejax.files import CorruptFileError

OPSET = 17
VERIFY_ATOL = 1e-4
VERIFY_RTOL = 1e-4
VERIFY_BATCH = 2

_NUMPY_GLOBALS = re.compile(
    r"^numpy(\._core|\.core)?\.(multiarray\.(_reconstruct|scalar)|ndarray|dtype|dtypes\.\w+DType)$")
"""Globals that only rebuild numpy arrays and scalars; allowed in weights-only loading."""


class CheckpointMismatchError(CorruptFileError):
    """A checkpoint's parameter names do not match the network definition.

    Attributes ``missing`` (names the network needs and the file lacks) and ``unexpected`` (names in the file
    the network does not have), both sorted lists.
    """

    def __init__(self, message: str, missing: Sequence[str], unexpected: Sequence[str]):
        super().__init__(message)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)


class ExportVerificationError(RuntimeError):
    """The exported ONNX graph does not reproduce the torch network; nothing was written."""


def load_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> object:
    """Read a torch checkpoint without executing code from it (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if trust_checkpoint:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            raise _unreadable(path, err) from err
    allowed = {name: _import_global(name) for name in _listed_globals(path) if _NUMPY_GLOBALS.match(name)}
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(list(allowed.values())), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core aliases
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            names = [n for n in _refused_globals(str(err)) if n not in allowed]
            if not names:
                raise _unreadable(path, err) from err
            refused = [n for n in names if not _NUMPY_GLOBALS.match(n)]
            if refused:
                raise CorruptFileError(
                    f"{path}: the checkpoint holds objects other than weights ({', '.join(refused)}). If the "
                    "file is the published one and you trust it, pass trust_checkpoint=True (CLI: "
                    "--trust-checkpoint), which lets the file run code while loading.") from err
            allowed.update({name: _import_global(name) for name in names})
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise _unreadable(path, err) from err
    raise CorruptFileError(f"{path}: too many kinds of numpy objects in the checkpoint")


def _listed_globals(path: Path) -> list[str]:
    """Globals a zip-format checkpoint names (empty for legacy files and unreadable ones)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy format or damaged file: torch.load reports it below
        return []


def _refused_globals(message: str) -> list[str]:
    """Names in a weights-only refusal: ``GLOBAL a.b.c`` or ``got <class 'a.b.C'>``."""
    return re.findall(r"GLOBAL ([\w.]+)", message) + re.findall(r"got <class '([\w.]+)'>", message)


def _import_global(name: str) -> object:
    module, _, attribute = name.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(importlib.import_module(module), attribute)


def _unreadable(path: Path, err: BaseException) -> CorruptFileError:
    return CorruptFileError(f"{path}: not a readable torch checkpoint ({_reason(err)}); "
                            "the file is truncated, corrupted or of another kind")


def _reason(err: BaseException) -> str:
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(checkpoint: object, entry: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored under ``entry`` in ``checkpoint``, however it is nested.

    Accepts ``{entry: state_dict, ...}`` (the published layout), one level of ``state_dict``/``model`` wrapping,
    a flat dict whose keys start with ``entry + "."``, or the bare state dict itself. A ``module.`` prefix
    (DataParallel) on every key is removed.
    """
    found: Mapping | None = None
    if isinstance(checkpoint, Mapping):
        if isinstance(checkpoint.get(entry), torch.nn.Module):  # a pickled module (trusted files only)
            found = checkpoint[entry].state_dict()
        elif isinstance(checkpoint.get(entry), Mapping):
            found = checkpoint[entry]
        elif any(isinstance(k, str) and k.startswith(entry + ".") for k in checkpoint):
            found = {k[len(entry) + 1:]: v for k, v in checkpoint.items() if k.startswith(entry + ".")}
        else:
            for wrapper in ("state_dict", "model", "model_state_dict"):
                if isinstance(checkpoint.get(wrapper), Mapping):
                    return extract_state_dict(checkpoint[wrapper], entry, path)
            if _is_state_dict(checkpoint):
                found = checkpoint
    if found is None:
        top = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CorruptFileError(f"{path}: no {entry!r} state dict in this checkpoint (top level: {top})")
    state = {str(k): v for k, v in found.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error naming every missing and unexpected key.

    Checkpoints written before torch 0.4.1 have no BatchNorm ``num_batches_tracked`` counters; when *all* of
    them are absent they are filled in (the counters do not affect inference). Shape mismatches raise too.
    """
    expected = module.state_dict()
    state = dict(state)
    counters = {k for k in expected if k.endswith(".num_batches_tracked")}
    if counters and not counters & state.keys():
        state.update({k: expected[k] for k in counters})
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{path}: the {what} parameters do not match the network definition "
            f"({len(missing)} missing, {len(unexpected)} unexpected).\n"
            f"  missing: {_key_list(missing)}\n  unexpected: {_key_list(unexpected)}\n"
            "  Is this the published checkpoint of that network?", missing, unexpected)
    wrong_shape = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                   if tuple(state[k].shape) != tuple(v.shape)]
    if wrong_shape:
        raise CorruptFileError(f"{path}: {len(wrong_shape)} {what} parameters have the wrong shape: "
                               + _key_list(wrong_shape))
    module.load_state_dict(state, strict=True)


def _key_list(keys: Sequence[str], limit: int = 25) -> str:
    if not keys:
        return "(none)"
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def export_verified(module: torch.nn.Module, input_shape: Sequence[int], input_name: str,
                    output_names: Sequence[str], output_path: str | Path, *, verify: bool = True,
                    metadata: Mapping[str, str] | None = None, input_range: tuple[float, float] = (0.0, 1.0),
                    seed: int = 0) -> Path:
    """Export ``module`` to ONNX with a dynamic batch axis and write it atomically to ``output_path``.

    With ``verify``, ONNX Runtime (CPU) runs the exported graph on a random batch of ``VERIFY_BATCH`` inputs
    (uniform in ``input_range``, a batch size other than the one exported) and every output must equal the
    torch output within ``|ort - torch| <= VERIFY_ATOL + VERIFY_RTOL * |torch|``; otherwise
    :class:`ExportVerificationError` is raised and no file is written.

    Args:
      input_shape: one example's shape without the batch axis, e.g. ``(3, 224, 224)``.
      metadata: string pairs stored in the ONNX model's ``metadata_props``.
    """
    output_path = Path(output_path).expanduser()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    dynamic = {name: {0: "batch"} for name in (input_name, *output_names)}
    tmp = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation notices
            torch.onnx.export(module, (torch.zeros(1, *input_shape),), str(tmp), dynamo=False,
                              input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True)
        if metadata:
            _add_metadata(tmp, metadata)
        if verify:
            _verify(module, tmp, input_shape, input_name, output_names, input_range, seed)
        os.replace(tmp, output_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return output_path


def _add_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Append ``metadata_props`` without re-serialising the weights: protobuf parses concatenated messages as
    one merged message, and the appended part sets nothing but these repeated entries."""
    import onnx

    extra = onnx.ModelProto()
    for key, value in metadata.items():
        extra.metadata_props.add(key=str(key), value=str(value))
    with open(path, "ab") as f:
        f.write(extra.SerializeToString())


def _verify(module: torch.nn.Module, path: Path, input_shape: Sequence[int], input_name: str,
            output_names: Sequence[str], input_range: tuple[float, float], seed: int) -> None:
    import onnxruntime as ort

    low, high = input_range
    rng = np.random.default_rng(seed)
    x = (low + (high - low) * rng.random((VERIFY_BATCH, *input_shape))).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(list(output_names), {input_name: x})
    for name, want, got in zip(output_names, expected, actual, strict=True):
        want = want.numpy()
        if got.shape != want.shape:
            raise ExportVerificationError(f"ONNX output {name!r} has shape {got.shape}, torch gives {want.shape}")
        excess = np.abs(got - want) - (VERIFY_ATOL + VERIFY_RTOL * np.abs(want))
        if not np.all(excess <= 0):
            raise ExportVerificationError(
                f"ONNX Runtime output {name!r} differs from torch by up to {np.abs(got - want).max():.3g} "
                f"(tolerance {VERIFY_ATOL} + {VERIFY_RTOL}·|torch|); the export is wrong, nothing was written")
