"""PyTorch definition of MICA's identity network (``mica.tar``), for conversion to ONNX.

Two parts, with the parameter names of Zielon/MICA so that the checkpoint loads with ``strict=True``:

* ``arcface``: insightface's ArcFace iResNet-100 (``models/arcface.py``, from insightface
  ``recognition/arcface_torch/backbones/iresnet.py``), checkpoint entry ``checkpoint["arcface"]``::

      conv1.weight, bn1.*, prelu.weight,
      layer{1..4}.{block}.{bn1.*, conv1.weight, bn2.*, prelu.weight, conv2.weight, bn3.*},
      layer{k}.0.downsample.{0.weight, 1.*}, bn2.*, fc.{weight,bias} (25088 -> 512), features.* (BatchNorm1d)

* ``regressor``: the mapping network of ``models/generator.py`` (``MappingNetwork(512, 300, 300, hidden=3)``),
  stored under ``checkpoint["flameModel"]`` as ``regressor.network.{0..3}.{weight,bias}`` and
  ``regressor.output.{weight,bias}``; the same state dict also holds the FLAME model's buffers under
  ``generator.`` (template, blendshapes, ...), which the converter does not need.

Forward: (N, 3, 112, 112) ArcFace-aligned RGB in [-1, 1] -> (shape (N, 300), identity (N, 512)), where
``identity`` is the L2-normalised ArcFace embedding that MICA feeds to the mapping network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flamejax.convert._export import export_verified, extract_state_dict, load_checkpoint, load_strict
from flamejax.init._mica import (
    MICA_IDENTITY_OUTPUT,
    MICA_IDENTITY_SIZE,
    MICA_INPUT,
    MICA_INPUT_SHAPE,
    MICA_KEY,
    MICA_OUTPUT,
    MICA_SHAPE_SIZE,
)

IRESNET100_BLOCKS = (3, 13, 30, 3)
IRESNET_WIDTHS = (64, 128, 256, 512)
ARCFACE_FEATURES = MICA_IDENTITY_SIZE
MAPPING_HIDDEN = 300
MAPPING_LAYERS = 3


def _conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style iResNet block: BN -> 3x3 -> BN -> PReLU -> 3x3 (strided) -> BN, plus shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """ArcFace iResNet: (N, 3, 112, 112) -> (N, 512) embedding (not normalised).

    Args:
      blocks: blocks per stage; the default (3, 13, 30, 3) is iResNet-100, the network MICA uses.
      widths: channels per stage; the default is the published one. Smaller widths only serve tests.
    """

    fc_scale = 7 * 7

    def __init__(self, blocks: Sequence[int] = IRESNET100_BLOCKS, widths: Sequence[int] = IRESNET_WIDTHS,
                 num_features: int = ARCFACE_FEATURES):
        super().__init__()
        inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.prelu = nn.PReLU(inplanes)
        for index, (planes, count) in enumerate(zip(widths, blocks, strict=True)):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
                                       nn.BatchNorm2d(planes, eps=1e-5))
            layer = [IBasicBlock(inplanes, planes, 2, downsample)]
            layer += [IBasicBlock(planes, planes) for _ in range(1, count)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0, inplace=True)
        self.fc = nn.Linear(inplanes * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class MappingNetwork(nn.Module):
    """MICA's identity -> FLAME shape MLP: Linear(512, 300), ``hidden`` x Linear(300, 300), each followed by
    LeakyReLU(0.2), then Linear(300, 300). With more than 5 hidden layers the middle one also sees the input
    (a skip); MICA's 3 layers have none."""

    def __init__(self, z_dim: int = ARCFACE_FEATURES, hidden_dim: int = MAPPING_HIDDEN,
                 out_dim: int = MICA_SHAPE_SIZE, hidden: int = MAPPING_LAYERS):
        super().__init__()
        self.skips = [hidden // 2] if hidden > 5 else []
        self.network = nn.ModuleList(
            [nn.Linear(z_dim, hidden_dim)]
            + [nn.Linear(hidden_dim + (z_dim if i in self.skips else 0), hidden_dim) for i in range(hidden)])
        self.output = nn.Linear(hidden_dim, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.network):
            h = F.leaky_relu(layer(h), negative_slope=0.2)
            if i in self.skips:
                h = torch.cat([z, h], 1)
        return self.output(h)


class MicaIdentityNet(nn.Module):
    """ArcFace iResNet -> L2 normalisation -> mapping MLP: MICA from aligned face to 300 FLAME shape coefficients.

    ``forward`` returns ``(shape (N, 300), identity (N, 512))``.
    """

    def __init__(self, blocks: Sequence[int] = IRESNET100_BLOCKS, widths: Sequence[int] = IRESNET_WIDTHS):
        super().__init__()
        self.arcface = IResNet(blocks, widths)
        self.regressor = MappingNetwork()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = F.normalize(self.arcface(images), dim=1)
        return self.regressor(identity), identity


def convert_mica(checkpoint_path: str | Path, output_path: str | Path, verify: bool = True, *,
                 trust_checkpoint: bool = False, blocks: Sequence[int] = IRESNET100_BLOCKS,
                 widths: Sequence[int] = IRESNET_WIDTHS) -> Path:
    """``mica.tar`` -> ``mica.onnx`` with the contract of :mod:`flamejax.init` (MICA section).

    Loads ``checkpoint["arcface"]`` and the ``regressor.*`` entries of ``checkpoint["flameModel"]`` strictly
    (its ``generator.*`` FLAME buffers are not part of the network and are skipped); a mismatch raises
    :class:`~flamejax.convert.CheckpointMismatchError` listing missing and unexpected keys, ArcFace keys
    prefixed ``arcface.``. Then exports, verifies and writes like :func:`convert_deca`.
    """
    checkpoint = load_checkpoint(checkpoint_path, trust_checkpoint=trust_checkpoint)
    state = {f"arcface.{k}": v for k, v in extract_state_dict(checkpoint, "arcface", checkpoint_path).items()}
    flame_model = extract_state_dict(checkpoint, "flameModel", checkpoint_path)
    state.update({k: v for k, v in flame_model.items() if not k.startswith("generator.")})
    model = MicaIdentityNet(blocks, widths)
    load_strict(model, state, checkpoint_path,
                "MICA network (checkpoint['arcface'] and checkpoint['flameModel'] regressor)")
    metadata = {"flamejax.network": MICA_KEY, "flamejax.source": Path(checkpoint_path).name,
                "flamejax.contract": "images (N,3,112,112) RGB [-1,1] -> shape (N,300), identity (N,512)"}
    return export_verified(model, MICA_INPUT_SHAPE, MICA_INPUT, [MICA_OUTPUT, MICA_IDENTITY_OUTPUT], output_path,
                           verify=verify, metadata=metadata, input_range=(-1.0, 1.0))
