"""Face parsing with a user-supplied BiSeNet-style ONNX network (19 CelebAMask-HQ classes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from flamejax.files import CorruptFileError
from flamejax.onnx_session import FLOAT, INTEGER, OnnxContract, OnnxModel, TensorSpec
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

CELEBAMASK_CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                      "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
"""The 19 CelebAMask-HQ classes in BiSeNet's output order (``eye_g``: glasses, ``ear_r``: earring,
``mouth``: the mouth interior, ``neck_l``: necklace)."""
FACE_CLASSES = tuple(CELEBAMASK_CLASSES.index(name) for name in
                     ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "nose", "u_lip", "l_lip"))
"""Classes of the photometric mask (the reference's): skin, brows, eyes, glasses, nose, lips."""
PARSING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PARSING_CONTRACT = OnnxContract(
    key="face_parsing", title="face parsing (19 CelebAMask-HQ classes)", inputs=(IMAGE_INPUT,),
    outputs=(TensorSpec(None, ((None, len(CELEBAMASK_CLASSES), None, None), (None, None, None)),
                        dtypes=(*FLOAT, "float16", "float64", *INTEGER),
                        description=f"float scores (N, {len(CELEBAMASK_CLASSES)}, h, w) or integer labels (N, h, w)"),),
    remedy="Export face-parsing.PyTorch's 79999_iter.pth (BiSeNet) to ONNX, or leave the parsing model out.",
    exact_inputs=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ParsingResult:
    """Per-pixel CelebAMask-HQ classes of an image."""

    labels: UInt8[np.ndarray, "H W"]
    """Class index per pixel (see :data:`CELEBAMASK_CLASSES`)."""
    model_path: Path
    provider: str
    """ONNX Runtime execution provider that ran the network."""

    @property
    def mask(self) -> Float[np.ndarray, "H W"]:
        """The photometric face mask of these labels (:func:`parsing_mask`)."""
        return parsing_mask(self.labels)


def parsing_mask(labels: np.ndarray, classes: tuple[int, ...] = FACE_CLASSES) -> Float[np.ndarray, "H W"]:
    """1.0 where ``labels`` is one of ``classes`` (default: the face classes), else 0.0 (float32)."""
    return np.isin(labels, classes).astype(np.float32)


def parse_face(image: UInt8[np.ndarray, "H W 3"], model: ModelSource = None, *,
               output_size: int | tuple[int, int] | None = None) -> ParsingResult | None:
    """Label every pixel of an (aligned) face image with a CelebAMask-HQ class.

    ONNX contract (an export of face-parsing.PyTorch's ``79999_iter.pth`` fits it):

    - input: the model's first input, float32 ``(N, 3, H, W)``, RGB, ``(pixel / 255 - mean) / std`` with the
      ImageNet ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``; ``H, W`` as fixed in the
      model, else 512 x 512 (BiSeNet's training size). One image is sent (N = 1).
    - output: the model's first output, either float scores ``(N, 19, h, w)`` (logits or probabilities;
      BiSeNet's main head) or integer labels ``(N, h, w)``. ``h, w`` may differ from ``H, W``: scores are
      resized to the requested size before the arg-max, labels by nearest neighbour.
    - classes, in order: :data:`CELEBAMASK_CLASSES`.

    Args:
      image: RGB image, best an aligned crop such as :attr:`AlignedFace.image` (BiSeNet expects one).
      model: the ONNX network (contract above); ``None`` looks for manifest entry ``face_parsing``.
      output_size: side or (height, width) of the returned labels; default the image's size.

    Returns:
      The labels, or ``None`` when no model was given or found (a note is logged): callers then use
      :func:`landmark_face_mask`.
    """
    onnx_model = resolve_model(PARSING_CONTRACT, model)
    if onnx_model is None:
        return None
    image = to_rgb8(image)
    height, width = image.shape[:2] if output_size is None else (
        (output_size, output_size) if isinstance(output_size, int) else output_size)
    in_h, in_w = fixed_input_size(onnx_model) or (PARSING_SIZE, PARSING_SIZE)
    output = first_output(onnx_model, to_nchw(image, in_h, in_w, IMAGENET_MEAN, IMAGENET_STD))
    return ParsingResult(labels=_labels(output, onnx_model, height, width), model_path=Path(onnx_model.path),
                         provider=onnx_model.provider)


def _labels(output: np.ndarray, model: OnnxModel, height: int, width: int) -> UInt8[np.ndarray, "H W"]:
    """Class labels at (height, width) from the network's scores (N, 19, h, w) or labels (N, h, w)."""
    classes = len(CELEBAMASK_CLASSES)
    if output.ndim == 4 and output.shape[1] == classes and np.issubdtype(output.dtype, np.floating):
        scores = resize(np.ascontiguousarray(output[0].transpose(1, 2, 0), np.float32), height, width)
        return np.argmax(scores, axis=2).astype(np.uint8)
    if output.ndim == 3 and np.issubdtype(output.dtype, np.integer):
        if output.min() < 0 or output.max() >= classes:
            raise CorruptFileError(f"{model.path}: labels outside 0..{classes - 1}; not a CelebAMask-HQ parser")
        return cv2.resize(output[0].astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    raise CorruptFileError(f"{model.path}: first output is {output.dtype} {output.shape}; expected float scores "
                           f"(N, {classes}, h, w) or integer labels (N, h, w)")
