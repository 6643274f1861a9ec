"""DECA's coarse encoder through ONNX Runtime (numpy in, numpy out) and the layout of its 236 numbers.

ONNX contract of ``deca_encoder.onnx`` (what ``flamejax convert deca`` writes; any graph with these names
and shapes works):

* input ``images``: float32 (N, 3, 224, 224), NCHW, RGB in [0, 1], no mean/std normalisation
  (:func:`~flamejax.init.deca_crop`, transposed);
* output ``codes``: float32 (N, 236) = shape 100 | tex 50 | exp 50 | pose 6 | cam 3 | light 27
  (DECA ``decompose_code`` with ``param_list`` order; see :class:`DecaCodes`).

Both networks are :class:`~flamejax.onnx_session.OnnxNetwork` s: the file must have the contract (else
:class:`~flamejax.files.CorruptFileError` naming the file), ONNX Runtime prefers CUDA, and ``.provider`` is the
provider the session really got, with a warning when CUDA was asked for and not obtained.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from jaxtyping import Float

from flamejax.onnx_session import OnnxContract, OnnxNetwork, TensorSpec

DECA_KEY = "deca_encoder"
DECA_INPUT = "images"
DECA_OUTPUT = "codes"
DECA_INPUT_SHAPE = (3, 224, 224)
DECA_CODE_LAYOUT: tuple[tuple[str, int], ...] = (
    ("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
"""DECA's ``param_list`` with ``n_shape``, ``n_tex``, ``n_exp``, ``n_pose``, ``n_cam``, ``n_light``, in order."""
DECA_CODE_SIZE = sum(n for _, n in DECA_CODE_LAYOUT)


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


DECA_CONTRACT = OnnxContract(
    key=DECA_KEY, title="DECA coarse encoder",
    inputs=(TensorSpec(DECA_INPUT, ((None, *DECA_INPUT_SHAPE),)),),
    outputs=(TensorSpec(DECA_OUTPUT, ((None, DECA_CODE_SIZE),)),),
    remedy="Make it from DECA's deca_model.tar with `flamejax convert deca deca_model.tar -o deca_encoder.onnx`.")


@dataclasses.dataclass(frozen=True)
class DecaEncoder(OnnxNetwork):
    """DECA's coarse encoder: 224x224 crops (:func:`~flamejax.init.deca_crop`) -> :class:`DecaCodes`.

    ``DecaEncoder.load(path=None)`` opens ``deca_encoder.onnx`` (``None`` when absent).
    """

    contract: ClassVar[OnnxContract] = DECA_CONTRACT

    def __call__(self, crops: Float[np.ndarray, "N 224 224 3"]) -> DecaCodes:
        """Encode RGB crops in [0, 1] (NHWC, as :func:`~flamejax.init.deca_crop` returns them)."""
        return decode_deca(self.run_images(crops)[DECA_OUTPUT])
