"""MICA's identity network through ONNX Runtime: ArcFace-aligned face -> 300 FLAME shape coefficients.

ONNX contract of ``mica.onnx`` (what ``flamejax convert mica`` writes; any graph with these names and
shapes works):

* input ``images``: float32 (N, 3, 112, 112), NCHW, RGB in [-1, 1] (:func:`~flamejax.init.mica_crop`,
  transposed);
* output ``shape``: float32 (N, 300), FLAME 2020 identity coefficients (the ``pred_shape_code`` of MICA);
* output ``identity`` (optional for the wrapper): float32 (N, 512), the L2-normalised ArcFace embedding
  MICA maps to the shape.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from jaxtyping import Float

from flamejax.files import CorruptFileError
from flamejax.onnx_session import OnnxContract, OnnxNetwork, TensorSpec

MICA_KEY = "mica"
MICA_INPUT = "images"
MICA_OUTPUT = "shape"
MICA_IDENTITY_OUTPUT = "identity"
MICA_INPUT_SHAPE = (3, 112, 112)
MICA_SHAPE_SIZE = 300
MICA_IDENTITY_SIZE = 512

MICA_CONTRACT = OnnxContract(
    key=MICA_KEY, title="MICA identity network",
    inputs=(TensorSpec(MICA_INPUT, ((None, *MICA_INPUT_SHAPE),)),),
    outputs=(TensorSpec(MICA_OUTPUT, ((None, MICA_SHAPE_SIZE),)),),
    remedy="Make it from MICA's mica.tar with `flamejax convert mica mica.tar -o mica.onnx`.")


@dataclasses.dataclass(frozen=True)
class MicaEncoder(OnnxNetwork):
    """MICA: 112x112 ArcFace crops (:func:`~flamejax.init.mica_crop`) -> FLAME shape (N, 300).

    ``MicaEncoder.load(path=None)`` opens ``mica.onnx`` (``None`` when absent); see
    :meth:`flamejax.init.DecaEncoder.load`.
    """

    contract: ClassVar[OnnxContract] = MICA_CONTRACT

    def __call__(self, crops: Float[np.ndarray, "N 112 112 3"]) -> Float[np.ndarray, "N 300"]:
        """FLAME identity coefficients 0-299 of aligned RGB crops in [-1, 1] (NHWC)."""
        return self.run_images(crops)[MICA_OUTPUT]

    def embed(self, crops: Float[np.ndarray, "N 112 112 3"]) -> Float[np.ndarray, "N 512"]:
        """The unit-length ArcFace identity embeddings (cosine similarity compares faces)."""
        if MICA_IDENTITY_OUTPUT not in self.model.output_names:
            raise ValueError(f"{self.path}: this MICA export has no {MICA_IDENTITY_OUTPUT!r} output; "
                             "re-create it with `flamejax convert mica`")
        crops = np.asarray(crops, np.float32)
        if crops.ndim == 4 and crops.shape[0] == 0:
            return np.zeros((0, MICA_IDENTITY_SIZE), np.float32)
        identity = self.run_images(crops)[MICA_IDENTITY_OUTPUT]
        if identity.shape != (len(crops), MICA_IDENTITY_SIZE):
            raise CorruptFileError(f"{self.path}: output {MICA_IDENTITY_OUTPUT!r} has shape {identity.shape}, "
                                   f"expected ({len(crops)}, {MICA_IDENTITY_SIZE})")
        return identity
