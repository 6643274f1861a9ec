"""Latency of the network initialisation: crops, DECA and MICA through ONNX Runtime, per image and per batch.

By default the networks are random-weight exports of the real architectures (ResNet-50 DECA encoder,
iResNet-100 MICA), made with ``flamejax.convert`` (needs torch) in a temporary folder; ``--deca``/``--mica``
time existing ONNX files instead. Weights do not change the cost, only the architecture does.

    python3 benchmarks/bench_init.py [--batches 1 4 16] [--repeats 5] [--out benchmarks/results/bench_init.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flamejax.init import DecaEncoder, MicaEncoder, deca_crop, initialise_batch_from_networks, mica_crop

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "images" / "ffhq_00000.png"


def export_random_networks(folder: Path) -> tuple[Path, Path]:
    """Random-weight ONNX files with the converters' contracts (verification skipped: timing only)."""
    import torch

    from flamejax.convert import DecaCoarseEncoder, MicaIdentityNet, export_verified
    from flamejax.init._deca import DECA_INPUT, DECA_INPUT_SHAPE, DECA_OUTPUT
    from flamejax.init._mica import MICA_IDENTITY_OUTPUT, MICA_INPUT, MICA_INPUT_SHAPE, MICA_OUTPUT

    torch.manual_seed(0)
    deca = export_verified(DecaCoarseEncoder(), DECA_INPUT_SHAPE, DECA_INPUT, [DECA_OUTPUT],
                           folder / "deca_encoder.onnx", verify=False)
    mica = export_verified(MicaIdentityNet(), MICA_INPUT_SHAPE, MICA_INPUT, [MICA_OUTPUT, MICA_IDENTITY_OUTPUT],
                           folder / "mica.onnx", verify=False)
    return deca, mica


def photo_and_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """A shared photograph with landmarks when perception works, else a synthetic image and landmarks."""
    try:
        from PIL import Image

        from flamejax.perception import detect_landmarks, to_68

        image = np.asarray(Image.open(PHOTO).convert("RGB"))
        return image, np.asarray(to_68(detect_landmarks(image).points), np.float64)
    except Exception:  # no shared photo or perception unavailable: geometry is all the crops need
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), rng.uniform(300, 700, (68, 2))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deca", type=Path, help="existing deca_encoder.onnx (default: random-weight export)")
    parser.add_argument("--mica", type=Path, help="existing mica.onnx (default: random-weight export)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_init.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        deca_path, mica_path = args.deca, args.mica
        if deca_path is None or mica_path is None:
            made = export_random_networks(Path(tmp))
            deca_path, mica_path = deca_path or made[0], mica_path or made[1]
        deca = DecaEncoder.load(deca_path, required=True, threads=args.threads)
        mica = MicaEncoder.load(mica_path, required=True, threads=args.threads)
        image, lmk = photo_and_landmarks()
        rows = {"crop_ms": {"deca_crop": 1e3 * median_seconds(lambda: deca_crop(image, lmk), args.repeats * 4),
                            "mica_crop": 1e3 * median_seconds(lambda: mica_crop(image, lmk), args.repeats * 4)},
                "networks": []}
        deca_in, mica_in = deca_crop(image, lmk)[0], mica_crop(image, lmk)[0]
        for batch in args.batches:
            images, points = [image] * batch, np.stack([lmk] * batch)
            timings = {
                "deca": median_seconds(lambda: deca(np.stack([deca_in] * batch)), args.repeats),
                "mica": median_seconds(lambda: mica(np.stack([mica_in] * batch)), args.repeats),
                "initialise (crops + both)": median_seconds(
                    lambda: initialise_batch_from_networks(images, points, deca=deca, mica=mica), args.repeats),
            }
            for name, seconds in timings.items():
                rows["networks"].append({"what": name, "batch": batch, "ms_per_batch": 1e3 * seconds,
                                         "ms_per_image": 1e3 * seconds / batch})
    import onnxruntime

    result = {"providers": {"deca": deca.provider, "mica": mica.provider}, "onnxruntime": onnxruntime.__version__,
              "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "weights": "random" if args.deca is None else "given", **rows}
    print(f"providers {result['providers']}, onnxruntime {result['onnxruntime']}, {result['cpu_count']} CPUs")
    print(f"deca_crop {rows['crop_ms']['deca_crop']:.2f} ms, mica_crop {rows['crop_ms']['mica_crop']:.2f} ms")
    print(f"{'what':28s} {'batch':>5s} {'ms/batch':>10s} {'ms/image':>10s}")
    for row in rows["networks"]:
        print(f"{row['what']:28s} {row['batch']:5d} {row['ms_per_batch']:10.1f} {row['ms_per_image']:10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
