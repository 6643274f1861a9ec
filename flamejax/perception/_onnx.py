"""Image plumbing for the user-supplied perception networks (face parsing, matting) on the one ONNX layer
(:mod:`flamejax.onnx_session`): model lookup, the NCHW image input they share, tensor layout."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.onnx_session import OnnxContract, OnnxModel, TensorSpec, open_onnx
from flamejax.perception._transform import resize

logger = logging.getLogger("flamejax.perception")

ModelSource = str | os.PathLike | OnnxModel | None
"""An ONNX model: an opened :class:`~flamejax.onnx_session.OnnxModel`, a path (file, or folder to search),
or ``None`` to look in the weights folders (see :func:`flamejax.files.find_file`)."""

IMAGE_INPUT = TensorSpec(None, ((None, 3, None, None),), description="a float32 (N, 3, H, W) image tensor")
"""The first input of every perception network: a batch of RGB images, NCHW."""


def resolve_model(contract: OnnxContract, model: ModelSource) -> OnnxModel | None:
    """Open (or check, when already open) the network of ``contract``; ``None`` with a logged note when none
    was given or found.

    An explicit path that does not exist raises :class:`~flamejax.files.MissingFileError`; a file without the
    contract :class:`~flamejax.files.CorruptFileError`. Sessions are cached per file by the ONNX layer.
    """
    if isinstance(model, OnnxModel):
        contract.check(model)
        return model if model.contract == contract else dataclasses.replace(model, contract=contract)
    opened = open_onnx(contract, model, required=model is not None)
    if opened is None:
        logger.info("no %s model found (manifest key %r); using the default path", contract.key.replace("_", " "),
                    contract.key)
    return opened


def fixed_input_size(model: OnnxModel) -> tuple[int, int] | None:
    """The (height, width) the model's first input is fixed to, or None when a side is dynamic."""
    height, width = model.input_shape(0)[2:4]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def to_nchw(image: UInt8[np.ndarray, "H W 3"], height: int, width: int, mean: tuple[float, float, float],
            std: tuple[float, float, float]) -> Float[np.ndarray, "1 3 h w"]:
    """Resize to (height, width), scale to [0, 1], normalise per channel, lay out as a batch of one."""
    resized = resize(image, height, width)
    normalised = (resized.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


def first_output(model: OnnxModel, feed: np.ndarray) -> np.ndarray:
    """Run the model on one input tensor and return its first output."""
    return model.run({model.input_names[0]: feed})[model.output_names[0]]
