"""Portrait matting with a user-supplied ONNX network (MODNet-style), and compositing over white."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.files import CorruptFileError
from flamejax.onnx_session import FLOAT, OnnxContract, TensorSpec
from flamejax.perception._image import to_rgb8
from flamejax.perception._onnx import (
    IMAGE_INPUT,
    ModelSource,
    first_output,
    fixed_input_size,
    resolve_model,
    to_nchw,
)
from flamejax.perception._transform import resize

MATTING_SHORT_SIDE = 512
_MATTING_STRIDE = 32
MATTING_CONTRACT = OnnxContract(
    key="matting", title="portrait matting", inputs=(IMAGE_INPUT,),
    outputs=(TensorSpec(None, ((None, 1, None, None), (None, None, None), (None, None, None, 1)),
                        dtypes=(*FLOAT, "float16", "float64"),
                        description="a float alpha (N, 1, h, w), (N, h, w) or (N, h, w, 1)"),),
    remedy="Use the official MODNet ONNX export, or leave the matting model out.", exact_inputs=False)


def matte(image: UInt8[np.ndarray, "H W 3"], model: ModelSource = None) -> Float[np.ndarray, "H W"] | None:
    """Foreground (person) alpha of ``image`` in [0, 1], float32.

    ONNX contract (the official MODNet ONNX export fits it):

    - input: the model's first input, float32 ``(N, 3, H, W)``, RGB scaled to [-1, 1] (``pixel / 127.5 - 1``);
      ``H, W`` as fixed in the model, else the image resized so that its shorter side is 512 and both sides
      are multiples of 32 (MODNet's convention). One image is sent (N = 1).
    - output: the model's first output, the foreground alpha in [0, 1] as ``(N, 1, h, w)``, ``(N, h, w)`` or
      ``(N, h, w, 1)``; resized bilinearly to the image and clipped to [0, 1].

    Args:
      model: the ONNX network (contract above); ``None`` looks for manifest entry ``matting``.

    Returns:
      The alpha, or ``None`` when no model was given or found (a note is logged).
    """
    onnx_model = resolve_model(MATTING_CONTRACT, model)
    if onnx_model is None:
        return None
    image = to_rgb8(image)
    in_h, in_w = fixed_input_size(onnx_model) or _dynamic_input_size(*image.shape[:2])
    output = first_output(onnx_model, to_nchw(image, in_h, in_w, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    squeezed = np.squeeze(np.asarray(output, np.float32)[:1])
    if squeezed.ndim != 2:
        raise CorruptFileError(f"{onnx_model.path}: first output has shape {output.shape}; expected an alpha "
                               "(N, 1, h, w), (N, h, w) or (N, h, w, 1)")
    return np.clip(resize(squeezed, *image.shape[:2]), 0.0, 1.0)


def _dynamic_input_size(height: int, width: int) -> tuple[int, int]:
    """Shorter side to 512, both sides rounded down to multiples of 32 (at least 32)."""
    scale = MATTING_SHORT_SIDE / min(height, width)
    return tuple(max(_MATTING_STRIDE, int(side * scale) // _MATTING_STRIDE * _MATTING_STRIDE)
                 for side in (height, width))


def composite_over_white(image: UInt8[np.ndarray, "H W 3"],
                         alpha: Float[np.ndarray, "H W"]) -> UInt8[np.ndarray, "H W 3"]:
    """``alpha * image + (1 - alpha) * white`` as uint8."""
    alpha = np.asarray(alpha, np.float32)[:, :, None]
    blended = image.astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
