"""Shared plumbing for the user-supplied ONNX networks (face parsing, matting): lookup, caching, tensor layout."""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.files import CorruptFileError, find_file
from flamejax.onnx_session import OnnxModel, load_onnx
from flamejax.perception._transform import resize

logger = logging.getLogger("flamejax.perception")

ModelSource = str | os.PathLike | OnnxModel | None
"""An ONNX model: an opened :class:`~flamejax.onnx_session.OnnxModel`, a path (file, or folder to search),
or ``None`` to look in the weights folders (see :func:`flamejax.files.find_file`)."""


def resolve_model(key: str, model: ModelSource) -> OnnxModel | None:
    """Open the model of manifest entry ``key``; ``None`` (with a logged note) when none was given or found.

    An explicit path that does not exist raises :class:`~flamejax.files.MissingFileError`. Sessions are
    cached per file, so repeated calls do not reload the network.
    """
    if isinstance(model, OnnxModel):
        return model
    found = find_file(key, model, required=model is not None)
    if found is None:
        logger.info("no %s model found (manifest key %r); using the default path", key.replace("_", " "), key)
        return None
    return _open(key, str(found.resolve()), found.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _open(key: str, path: str, mtime_ns: int) -> OnnxModel:
    del mtime_ns  # part of the cache key: a replaced file is opened again
    return load_onnx(key, path, required=True)


def fixed_input_size(model: OnnxModel) -> tuple[int, int] | None:
    """The (height, width) the model's first input is fixed to, or None when a side is dynamic.

    Raises :class:`~flamejax.files.CorruptFileError` unless that input is a float32 (N, 3, H, W) tensor.
    """
    spec = model.session.get_inputs()[0]
    shape = list(spec.shape)
    if spec.type != "tensor(float)" or len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise CorruptFileError(f"{model.path}: input {spec.name!r} is {spec.type} {shape}; "
                               "expected a float32 (N, 3, H, W) image tensor")
    height, width = shape[2], shape[3]
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

