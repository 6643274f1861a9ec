"""Convert the published DECA and MICA checkpoints to the ONNX files :mod:`flamejax.init` runs.

Needs PyTorch (``pip install 'flamejax[convert]'``); nothing else in flamejax does. The network definitions
here are written for flamejax with the checkpoints' parameter names, so the files load with
``strict=True``; checkpoints are read without executing code from them.

    flamejax convert deca deca_model.tar -o weights/deca_encoder.onnx
    flamejax convert mica mica.tar -o weights/mica.onnx

Python: :func:`convert_deca`, :func:`convert_mica`; the CLI entry is :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

try:
    import torch  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("flamejax.convert needs PyTorch: pip install 'flamejax[convert]' (or torch>=2.2 and onnx)"
                      ) from err

from flamejax.convert._deca_torch import Bottleneck, DecaCoarseEncoder, ResNetFeatures, convert_deca
from flamejax.convert._export import (
    CheckpointMismatchError,
    ExportVerificationError,
    export_verified,
    extract_state_dict,
    load_checkpoint,
    load_strict,
)
from flamejax.convert._mica_torch import IBasicBlock, IResNet, MappingNetwork, MicaIdentityNet, convert_mica
from flamejax.files import manifest

__all__ = [
    "Bottleneck", "CheckpointMismatchError", "DecaCoarseEncoder", "ExportVerificationError", "IBasicBlock",
    "IResNet", "MappingNetwork", "MicaIdentityNet", "ResNetFeatures", "convert_deca", "convert_mica",
    "export_verified", "extract_state_dict", "load_checkpoint", "load_strict", "main",
]

CONVERTERS = {"deca": (convert_deca, "deca_encoder"), "mica": (convert_mica, "mica")}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``flamejax convert`` (fills ``parser`` when the CLI passes its sub-parser)."""
    parser = parser or argparse.ArgumentParser(prog="flamejax convert", description=__doc__.splitlines()[0])
    parser.add_argument("network", choices=sorted(CONVERTERS), help="which checkpoint this is")
    parser.add_argument("checkpoint", help="deca_model.tar or mica.tar, as published")
    parser.add_argument("-o", "--output", help="ONNX file to write (default: weights/<manifest name>)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow the checkpoint to run code while loading (only for files you trust)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``flamejax convert deca|mica CHECKPOINT [-o OUT]``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``flamejax convert`` arguments (see :func:`build_parser`)."""
    convert, key = CONVERTERS[args.network]
    output = args.output or f"weights/{manifest()[key]['names'][0]}"
    try:
        path = convert(args.checkpoint, output, verify=not args.no_verify, trust_checkpoint=args.trust_checkpoint)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"flamejax convert {args.network}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}" + ("" if args.no_verify else " (ONNX Runtime output checked against torch)"))
    return 0
