"""PyTorch definition of DECA's coarse encoder (``E_flame`` in ``deca_model.tar``), for conversion to ONNX.

Architecture and parameter names follow yfeng95/DECA ``decalib/models/encoders.py`` (``ResnetEncoder``) and
``decalib/models/resnet.py`` (a torchvision-style ResNet-50 without ``fc``), so that the checkpoint's
``E_flame`` state dict loads with ``strict=True``::

    encoder.conv1.weight, encoder.bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    encoder.layer{1..4}.{block}.conv{1,2,3}.weight, .bn{1,2,3}.*, encoder.layer{k}.0.downsample.{0.weight,1.*}
    layers.0.{weight,bias}  (Linear 2048 -> 1024), ReLU, layers.2.{weight,bias}  (Linear 1024 -> 236)

Forward: (N, 3, 224, 224) RGB in [0, 1] -> (N, 236) codes. The bottleneck puts its stride on the 3x3
convolution (``conv2``), like DECA's copy of the torchvision code; the 7x7 average pool makes the input size
224 part of the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from flamejax.convert._export import export_verified, extract_state_dict, load_checkpoint, load_strict
from flamejax.init._deca import DECA_CODE_SIZE, DECA_INPUT, DECA_INPUT_SHAPE, DECA_KEY, DECA_OUTPUT

RESNET50_BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (strided) -> 1x1 (x4 channels), identity or projected shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNetFeatures(nn.Module):
    """Torchvision-style ResNet trunk with a 7x7 average pool and no classifier: (N,3,224,224) -> (N,2048)."""

    def __init__(self, blocks: Sequence[int] = RESNET50_BLOCKS):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layer, inplanes = _make_layer(inplanes, planes, count, stride)
            self.add_module(f"layer{index + 1}", layer)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.out_features = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _make_layer(inplanes: int, planes: int, count: int, stride: int) -> tuple[nn.Sequential, int]:
    outplanes = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(outplanes))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(outplanes, planes) for _ in range(1, count)]
    return nn.Sequential(*layers), outplanes


class DecaCoarseEncoder(nn.Module):
    """DECA's ``E_flame``: ResNet-50 features -> Linear(2048, 1024) -> ReLU -> Linear(1024, 236).

    Args:
      blocks: bottleneck blocks per stage; the default is ResNet-50, the published network.
    """

    def __init__(self, blocks: Sequence[int] = RESNET50_BLOCKS, out_features: int = DECA_CODE_SIZE):
        super().__init__()
        self.encoder = ResNetFeatures(blocks)
        self.layers = nn.Sequential(nn.Linear(self.encoder.out_features, 1024), nn.ReLU(),
                                    nn.Linear(1024, out_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) RGB in [0, 1] -> (N, 236) raw codes (see :func:`flamejax.init.decode_deca`)."""
        return self.layers(self.encoder(images))


def convert_deca(checkpoint_path: str | Path, output_path: str | Path, verify: bool = True, *,
                 trust_checkpoint: bool = False, blocks: Sequence[int] = RESNET50_BLOCKS) -> Path:
    """``deca_model.tar`` -> ``deca_encoder.onnx`` with the contract of :mod:`flamejax.init` (DECA section).

    Loads ``checkpoint["E_flame"]`` strictly (a mismatch raises
    :class:`~flamejax.convert.CheckpointMismatchError` listing missing and unexpected keys), exports with a
    dynamic batch axis, checks ONNX Runtime against torch on random input (``verify``) and only then writes
    ``output_path`` (atomically). Returns ``output_path``.
    """
    checkpoint = load_checkpoint(checkpoint_path, trust_checkpoint=trust_checkpoint)
    model = DecaCoarseEncoder(blocks)
    load_strict(model, extract_state_dict(checkpoint, "E_flame", checkpoint_path), checkpoint_path,
                "DECA coarse encoder (checkpoint['E_flame'])")
    metadata = {"flamejax.network": DECA_KEY, "flamejax.source": Path(checkpoint_path).name,
                "flamejax.contract": "images (N,3,224,224) RGB [0,1] -> codes (N,236)"}
    return export_verified(model, DECA_INPUT_SHAPE, DECA_INPUT, [DECA_OUTPUT], output_path, verify=verify,
                           metadata=metadata, input_range=(0.0, 1.0))
