"""DECA's coarse encoder through ONNX Runtime (numpy in, numpy out) and the layout of its 236 numbers.

ONNX contract of ``deca_encoder.onnx`` (what ``flamejax convert deca`` writes; any graph with these names
and shapes works):

* input ``images``: float32 (N, 3, 224, 224), NCHW, RGB in [0, 1], no mean/std normalisation
  (:func:`~flamejax.init.deca_crop`, transposed);
* output ``codes``: float32 (N, 236) = shape 100 | tex 50 | exp 50 | pose 6 | cam 3 | light 27
  (DECA ``decompose_code`` with ``param_list`` order; see :class:`DecaCodes`).

The wrappers of both networks share the checks here: the file must have that contract (else
:class:`~flamejax.files.CorruptFileError` naming the file), ONNX Runtime prefers CUDA, and ``.provider`` is the
provider the session really got, with a warning when CUDA was asked for and not obtained.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from jaxtyping import Float

from flamejax.files import CorruptFileError
from flamejax.onnx_session import OnnxModel, load_onnx, preferred_providers

DECA_KEY = "deca_encoder"
DECA_INPUT = "images"
DECA_OUTPUT = "codes"
DECA_INPUT_SHAPE = (3, 224, 224)
DECA_CODE_LAYOUT: tuple[tuple[str, int], ...] = (
    ("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
"""DECA's ``param_list`` with ``n_shape``, ``n_tex``, ``n_exp``, ``n_pose``, ``n_cam``, ``n_light``, in order."""
DECA_CODE_SIZE = sum(n for _, n in DECA_CODE_LAYOUT)
CUDA = "CUDAExecutionProvider"


@dataclasses.dataclass(frozen=True)
class DecaCodes:
    """DECA's coarse codes for N images (float32). FLAME 2020 bases; DECA's own camera and lighting."""

    shape: Float[np.ndarray, "N 100"]
    """FLAME identity coefficients 0-99."""
    tex: Float[np.ndarray, "N 50"]
    """Albedo PCA coefficients (BFM albedo mapped to FLAME, ``FLAME_albedo_from_BFM.npz``)."""
    exp: Float[np.ndarray, "N 50"]
    """FLAME expression coefficients 0-49."""
    pose: Float[np.ndarray, "N 6"]
    """Axis-angle global head rotation (0:3) and jaw rotation (3:6)."""
    cam: Float[np.ndarray, "N 3"]
    """Orthographic camera (scale, tx, ty) of the 224x224 crop."""
    light: Float[np.ndarray, "N 9 3"]
    """Second-order spherical-harmonics lighting, 9 coefficients x RGB."""

    @property
    def jaw(self) -> Float[np.ndarray, "N 3"]:
        """Axis-angle jaw rotation."""
        return self.pose[:, 3:]

    def __len__(self) -> int:
        return self.shape.shape[0]


def decode_deca(raw: Float[np.ndarray, "N 236"]) -> DecaCodes:
    """Split DECA's raw (N, 236) output into its parts, as DECA's ``decompose_code`` does."""
    raw = np.asarray(raw, np.float32)
    if raw.ndim != 2 or raw.shape[1] != DECA_CODE_SIZE:
        raise ValueError(f"decode_deca: expected (N, {DECA_CODE_SIZE}) codes, got shape {raw.shape}")
    bounds = np.cumsum([n for _, n in DECA_CODE_LAYOUT])[:-1]
    parts = dict(zip((name for name, _ in DECA_CODE_LAYOUT), np.split(raw, bounds, axis=1), strict=True))
    parts["light"] = parts["light"].reshape(-1, 9, 3)
    return DecaCodes(**{name: np.ascontiguousarray(value) for name, value in parts.items()})


@dataclasses.dataclass(frozen=True)
class NetworkContract:
    """The ONNX interface a network file must offer: one NCHW float32 image input, named outputs."""

    key: str
    """Manifest entry (``flamejax.files``)."""
    title: str
    input_name: str
    input_shape: tuple[int, int, int]
    """(C, H, W) of one example."""
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    """Required outputs: name and per-example shape."""
    remedy: str

    def open(self, path: str | Path | None, *, required: bool, providers: list[str] | None,
             threads: int | None) -> OnnxModel | None:
        """Load the file (see :func:`flamejax.onnx_session.load_onnx`) and check it has this contract."""
        requested = list(providers) if providers else preferred_providers()
        model = load_onnx(self.key, path, required=required, providers=requested, threads=threads)
        if model is None:
            return None
        self.check(model)
        if CUDA in requested and model.provider != CUDA:
            warnings.warn(f"{model.path.name}: CUDA was requested but ONNX Runtime runs {self.title} on "
                          f"{model.provider} (CUDA/cuDNN libraries missing or incompatible?)", RuntimeWarning,
                          stacklevel=3)
        return model

    def check(self, model: OnnxModel) -> None:
        """Raise :class:`CorruptFileError` naming the file unless ``model`` has this contract."""
        session = model.session
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        shape_text = ", ".join(map(str, self.input_shape))
        problems = []
        image = inputs.get(self.input_name)
        if image is None or image.type != "tensor(float)" or not _fits(image.shape, self.input_shape):
            problems.append(f"no float32 input {self.input_name!r} of shape (N, {shape_text})")
        if len(inputs) != 1:
            problems.append(f"{len(inputs)} inputs instead of one")
        for name, shape in self.outputs:
            if name not in outputs or outputs[name].type != "tensor(float)" or not _fits(outputs[name].shape, shape):
                problems.append(f"no float32 output {name!r} of shape (N, {', '.join(map(str, shape))})")
        network = session.get_modelmeta().custom_metadata_map.get("flamejax.network")
        if network not in (None, self.key):
            problems.append(f"converted as a {network} network")
        if problems:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in [*inputs.values(), *outputs.values()])
            raise CorruptFileError(f"{model.path}: not a {self.title} ONNX file: {'; '.join(problems)} "
                                   f"(it has {found}). {self.remedy}")

    def run(self, model: OnnxModel, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network on NHWC crops; returns every output as float32, required ones shape-checked."""
        crops = np.asarray(crops, np.float32)
        channels, height, width = self.input_shape
        if crops.ndim != 4 or crops.shape[1:] != (height, width, channels):
            raise ValueError(f"{self.title}: expected crops of shape (N, {height}, {width}, {channels}), "
                             f"got {crops.shape}")
        if crops.shape[0] == 0:
            return {name: np.zeros((0, *shape), np.float32) for name, shape in self.outputs}
        result = model.run({self.input_name: np.ascontiguousarray(crops.transpose(0, 3, 1, 2))})
        result = {name: np.asarray(value, np.float32) for name, value in result.items()}
        for name, shape in self.outputs:
            if result[name].shape != (crops.shape[0], *shape):
                raise CorruptFileError(f"{model.path}: output {name!r} has shape {result[name].shape}, "
                                       f"expected {(crops.shape[0], *shape)}")
        return result


def _fits(actual: list, per_example: tuple[int, ...]) -> bool:
    """An ONNX shape (symbolic dims are strings or None) is (batch, *per_example)."""
    if len(actual) != 1 + len(per_example):
        return False
    return all(not isinstance(a, int) or a == e for a, e in zip(actual[1:], per_example, strict=True))


DECA_CONTRACT = NetworkContract(
    key=DECA_KEY, title="DECA coarse encoder", input_name=DECA_INPUT, input_shape=DECA_INPUT_SHAPE,
    outputs=((DECA_OUTPUT, (DECA_CODE_SIZE,)),),
    remedy="Make it from DECA's deca_model.tar with `flamejax convert deca deca_model.tar -o deca_encoder.onnx`.")


@dataclasses.dataclass(frozen=True)
class OnnxNetwork:
    """A network file opened with ONNX Runtime and checked against its :class:`NetworkContract`."""

    model: OnnxModel
    contract: ClassVar[NetworkContract]

    @classmethod
    def load(cls, path: str | Path | None = None, *, required: bool = False, providers: list[str] | None = None,
             threads: int | None = None) -> Self | None:
        """Open the network's ONNX file (explicit ``path``, else the weights folders of :mod:`flamejax.files`).

        Returns ``None`` when no file is found and ``required`` is false; an explicit path that does not exist
        raises :class:`~flamejax.files.MissingFileError`, a damaged or wrong file
        :class:`~flamejax.files.CorruptFileError` naming it. ``providers`` defaults to CUDA, then CPU.
        """
        model = cls.contract.open(path, required=required, providers=providers, threads=threads)
        return None if model is None else cls(model)

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider that runs the network, e.g. ``CPUExecutionProvider``."""
        return self.model.provider

    @property
    def path(self) -> Path:
        return self.model.path


@dataclasses.dataclass(frozen=True)
class DecaEncoder(OnnxNetwork):
    """DECA's coarse encoder: 224x224 crops (:func:`~flamejax.init.deca_crop`) -> :class:`DecaCodes`.

    ``DecaEncoder.load(path=None)`` opens ``deca_encoder.onnx`` (``None`` when absent).
    """

    contract: ClassVar[NetworkContract] = DECA_CONTRACT

    def __call__(self, crops: Float[np.ndarray, "N 224 224 3"]) -> DecaCodes:
        """Encode RGB crops in [0, 1] (NHWC, as :func:`~flamejax.init.deca_crop` returns them)."""
        return decode_deca(self.contract.run(self.model, crops)[DECA_OUTPUT])
