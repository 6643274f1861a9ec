"""The one ONNX Runtime layer of flamejax: DECA, MICA, face parsing and matting all open and run networks here.

A network is described by an :class:`OnnxContract` (manifest key, the input and output tensors it must have).
:func:`open_onnx` finds the file (:func:`flamejax.files.find_file`), opens a session with the preferred
execution providers (CUDA first when this onnxruntime has it), reports the provider that really runs it (with a
warning when CUDA was asked for and not obtained), and checks the graph against the contract. Sessions are cached
per file (path, size, modification time), providers and thread count.

Every problem with the file is one :class:`~flamejax.files.CorruptFileError` naming the file, what is wrong and
what to do: not an ONNX model, wrong input/output names, dtypes or shapes, a graph that fails or returns the wrong
shape when run. :class:`OnnxNetwork` is the base of the image-batch networks (DECA, MICA): NHWC crops in,
named float32 outputs out.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from flamejax.files import CorruptFileError, find_file

__all__ = ["CUDA", "FLOAT", "INTEGER", "OnnxContract", "OnnxModel", "OnnxNetwork", "TensorSpec", "open_onnx",
           "preferred_providers"]

CUDA = "CUDAExecutionProvider"
_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
                "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
                "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
FLOAT = ("float32",)
INTEGER = ("int64", "int32", "int16", "int8", "uint8")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor a contract requires: by name, or by position when ``name`` is ``None``."""

    name: str | None
    shapes: tuple[tuple[int | None, ...], ...]
    """Allowed shapes, batch first; ``None`` is a free dimension (symbolic dimensions of the graph always fit)."""
    dtypes: tuple[str, ...] = FLOAT
    """Allowed numpy dtype names."""
    position: int = 0
    """Index among the graph's inputs or outputs when ``name`` is ``None``."""
    description: str = ""
    """How a message describes the tensor, e.g. ``"float32 (N, 3, H, W) image"``; derived when empty."""

    def shape_text(self) -> str:
        """E.g. ``(N, 236)``; free dimensions after the batch are ``?``."""
        return " or ".join("(" + ", ".join("N" if i == 0 and d is None else "?" if d is None else str(d)
                                           for i, d in enumerate(shape)) + ")" for shape in self.shapes)

    def describe(self) -> str:
        """E.g. ``float32 'codes' of shape (N, 236)``, or the ``description``."""
        if self.description:
            return self.description
        return f"{'/'.join(self.dtypes)} {repr(self.name) if self.name else 'tensor'} of shape {self.shape_text()}"

    def missing(self, kind: str) -> str:
        """The problem when a graph lacks this tensor, ``kind`` being ``"input"`` or ``"output"``."""
        if self.name is None:
            return f"{('first', 'second', 'third', 'fourth')[min(self.position, 3)]} {kind}: expected {self.describe()}"
        return f"no {'/'.join(self.dtypes)} {kind} {self.name!r} of shape {self.shape_text()}"

    def fits(self, dtype: str, shape) -> bool:
        """Whether a tensor of numpy ``dtype`` name and ``shape`` (ints; ``None``/str for unknown) fits."""
        return dtype in self.dtypes and any(
            len(shape) == len(allowed) and all(not isinstance(a, int) or e is None or a == e
                                               for a, e in zip(shape, allowed))
            for allowed in self.shapes)


@dataclasses.dataclass(frozen=True)
class OnnxContract:
    """The interface a network file must offer, and what to tell the user when it does not."""

    key: str
    """Manifest entry (:mod:`flamejax.files`)."""
    title: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    """Required outputs (a graph may have more)."""
    remedy: str
    """What to do about a wrong file, e.g. how to make the right one."""
    exact_inputs: bool = True
    """The graph must have exactly ``len(inputs)`` inputs (it will only be fed those)."""

    def check(self, model: OnnxModel) -> None:
        """Raise :class:`CorruptFileError` naming the file unless ``model``'s graph has this contract."""
        session = model.session
        graph_inputs, graph_outputs = session.get_inputs(), session.get_outputs()
        problems = []
        for kind, specs, tensors in (("input", self.inputs, graph_inputs), ("output", self.outputs, graph_outputs)):
            for spec in specs:
                tensor = _find(tensors, spec)
                if tensor is None or not spec.fits(_ONNX_DTYPES.get(tensor.type, tensor.type), list(tensor.shape)):
                    problems.append(spec.missing(kind))
        if self.exact_inputs and len(graph_inputs) != len(self.inputs):
            problems.append(f"{len(graph_inputs)} inputs instead of {len(self.inputs)}")
        network = session.get_modelmeta().custom_metadata_map.get("flamejax.network")
        if network not in (None, self.key):
            problems.append(f"converted as a {network} network")
        if problems:
            found = ", ".join(f"{t.name} {t.type} {t.shape}" for t in [*graph_inputs, *graph_outputs])
            raise CorruptFileError(f"{model.path}: not a {self.title} ONNX file: {'; '.join(problems)} "
                                   f"(it has {found}). {self.remedy}")

    def check_outputs(self, model: OnnxModel, outputs: dict[str, np.ndarray], batch: int) -> None:
        """Raise :class:`CorruptFileError` unless the computed outputs have the contract's dtype and shape."""
        names = model.output_names
        for spec in self.outputs:
            name = spec.name or names[spec.position]
            value = outputs[name]
            if value.shape[:1] != (batch,) or not spec.fits(value.dtype.name, list(value.shape)):
                raise CorruptFileError(f"{model.path}: output {name!r} is {value.dtype} {value.shape} for a batch "
                                       f"of {batch}; expected {spec.describe()}. {self.remedy}")


def _find(tensors, spec: TensorSpec):
    if spec.name is None:
        return tensors[spec.position] if spec.position < len(tensors) else None
    return next((t for t in tensors if t.name == spec.name), None)


@dataclasses.dataclass(frozen=True, eq=False)
class OnnxModel:
    """A loaded ONNX network and the execution provider that actually runs it."""

    session: object
    """``onnxruntime.InferenceSession``."""
    path: Path
    provider: str
    """The provider ONNX Runtime selected first, e.g. ``CUDAExecutionProvider`` or ``CPUExecutionProvider``."""
    contract: OnnxContract | None = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def input_shape(self, position: int = 0) -> list[int | str | None]:
        """The graph's declared shape of an input (ints fixed; str or None symbolic)."""
        return list(self.session.get_inputs()[position].shape)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs by name; a graph that fails to run raises :class:`CorruptFileError` naming the file.

        With a contract, the required outputs are checked for dtype and shape (batch = first feed's length).
        """
        try:
            values = self.session.run(None, feeds)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeException classes
            reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise CorruptFileError(f"{self.path}: ONNX Runtime could not run this network ({reason}); the file is "
                                   "damaged or not the expected network") from err
        outputs = dict(zip(self.output_names, (np.asarray(v) for v in values)))
        if self.contract is not None and feeds:
            self.contract.check_outputs(self, outputs, len(next(iter(feeds.values()))))
        return outputs


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    order = [CUDA, "CPUExecutionProvider"]
    return [p for p in order if p in available] or available


@functools.lru_cache(maxsize=8)
def _session(path: str, size: int, mtime_ns: int, providers: tuple[str, ...], threads: int | None):
    del size, mtime_ns  # part of the cache key: a replaced file is opened again
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, sess_options=options, providers=list(providers))


def open_onnx(contract: OnnxContract, path: str | Path | None = None, *, required: bool = True,
              providers: list[str] | None = None, threads: int | None = None) -> OnnxModel | None:
    """Find, open and check the network of ``contract`` (its manifest key; see :func:`flamejax.files.find_file`).

    Args:
      path: explicit file, or folder to search; ``None`` searches the weights folders.
      required: when false, an absent file (not an explicit path) gives ``None``.
      providers: execution providers in order of preference; default :func:`preferred_providers`.

    Raises:
      MissingFileError: absent (required, or an explicit path). CorruptFileError: not an ONNX file, or one
      without the contract's inputs and outputs (named, with the contract's remedy).
    """
    found = find_file(contract.key, path, required=required or path is not None)
    if found is None:
        return None
    requested = tuple(providers) if providers else tuple(preferred_providers())
    stat = found.stat()
    try:
        session = _session(str(found.resolve()), stat.st_size, stat.st_mtime_ns, requested, threads)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf classes
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise CorruptFileError(f"{found}: not a valid ONNX model for {contract.title} ({reason}). "
                               f"{contract.remedy}") from err
    model = OnnxModel(session=session, path=found, provider=session.get_providers()[0], contract=contract)
    contract.check(model)
    if CUDA in requested and model.provider != CUDA:
        warnings.warn(f"{found.name}: CUDA was requested but ONNX Runtime runs {contract.title} on "
                      f"{model.provider} (CUDA/cuDNN libraries missing or incompatible?)", RuntimeWarning,
                      stacklevel=3)
    return model


@dataclasses.dataclass(frozen=True)
class OnnxNetwork:
    """An image-batch network (one float32 NCHW input) opened with :func:`open_onnx` and its ``contract``."""

    model: OnnxModel
    contract: ClassVar[OnnxContract]

    @classmethod
    def load(cls, path: str | Path | None = None, *, required: bool = False, providers: list[str] | None = None,
             threads: int | None = None) -> Self | None:
        """Open the network's ONNX file (explicit ``path``, else the weights folders of :mod:`flamejax.files`).

        Returns ``None`` when no file is found and ``required`` is false; an explicit path that does not exist
        raises :class:`~flamejax.files.MissingFileError`, a damaged or wrong file
        :class:`~flamejax.files.CorruptFileError` naming it. ``providers`` defaults to CUDA, then CPU.
        """
        model = open_onnx(cls.contract, path, required=required, providers=providers, threads=threads)
        return None if model is None else cls(model)

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider that runs the network, e.g. ``CPUExecutionProvider``."""
        return self.model.provider

    @property
    def path(self) -> Path:
        return self.model.path

    def run_images(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network on NHWC crops; every output as float32, the contract's outputs shape-checked."""
        crops = np.asarray(crops, np.float32)
        image = self.contract.inputs[0]
        _, channels, height, width = image.shapes[0]
        if crops.ndim != 4 or crops.shape[1:] != (height, width, channels):
            raise ValueError(f"{self.contract.title}: expected crops of shape (N, {height}, {width}, {channels}), "
                             f"got {crops.shape}")
        if crops.shape[0] == 0:
            return {spec.name: np.zeros((0, *spec.shapes[0][1:]), np.float32) for spec in self.contract.outputs}
        outputs = self.model.run({image.name: np.ascontiguousarray(crops.transpose(0, 3, 1, 2))})
        return {name: value.astype(np.float32, copy=False) for name, value in outputs.items()}
