"""Preprocessing time per image, by step: load, detect, align, matting, re-detect, mask, whole preprocess.

    python3 benchmarks/bench_perception.py [--images ../shared/images] [--repeat 5] [--json out.json]
        [--parsing-model face_parsing.onnx] [--matting-model matting.onnx] [--huge]

Each step is timed on its own (median over repeats, milliseconds) after one warm-up pass that creates
MediaPipe's graphs. ``--huge`` adds an 8000x8000 upscale of the first photo.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import flamejax.perception as fp
from flamejax.perception._landmarks import redetect

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time in ms of ``fn()`` over ``repeat`` runs, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), result


def bench_image(source, args) -> dict[str, float]:
    steps: dict[str, float] = {}
    steps["load"], image = timed(lambda: fp.load_image(source), args.repeat)
    steps["detect"], face = timed(lambda: fp.detect_landmarks(image), args.repeat)
    lmk68 = fp.to_68(face.points)
    steps["align"], aligned = timed(lambda: fp.align_face(image, lmk68, args.crop_size), args.repeat)
    crop = aligned.image
    if args.matting_model:
        steps["matting"], alpha = timed(lambda: fp.matte(crop, args.matting_model), args.repeat)
        crop = fp.composite_over_white(crop, alpha)
    expected = face.transformed(aligned.to_crop)
    steps["redetect"], _ = timed(lambda: redetect(crop, expected), args.repeat)
    fit_points = expected.points * (args.fit_size / args.crop_size)
    steps["landmark_mask"], _ = timed(lambda: fp.landmark_face_mask(fit_points, args.fit_size), args.repeat)
    if args.parsing_model:
        steps["parsing"], _ = timed(lambda: fp.parse_face(crop, args.parsing_model, output_size=args.fit_size),
                                    args.repeat)
    config = fp.PreprocessConfig(crop_size=args.crop_size, fit_size=args.fit_size,
                                 use_parsing=bool(args.parsing_model), parsing_model=args.parsing_model,
                                 matting_model=args.matting_model)
    steps["preprocess_total"], _ = timed(lambda: fp.preprocess(source, config), args.repeat)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--fit-size", type=int, default=256)
    parser.add_argument("--parsing-model", type=Path)
    parser.add_argument("--matting-model", type=Path)
    parser.add_argument("--huge", action="store_true", help="also time an 8000x8000 image")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not paths:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1
    sources: dict[str, object] = {p.name: p for p in paths}
    if args.huge:
        sources["8000x8000 (array)"] = cv2.resize(fp.load_image(paths[0]), (8000, 8000))
    fp.preprocess(paths[0])  # warm-up: MediaPipe graph creation is not a per-image cost

    results = {name: bench_image(source, args) for name, source in sources.items()}
    steps = list(next(iter(results.values())))
    print(f"{'image':<22}" + "".join(f"{s:>17}" for s in steps))
    for name, row in results.items():
        print(f"{name[:22]:<22}" + "".join(f"{row[s]:>17.1f}" for s in steps))
    photo_rows = [row for name, row in results.items() if not name.startswith("8000")]
    means = {s: float(np.mean([row[s] for row in photo_rows])) for s in steps}
    print(f"{'mean (photos)':<22}" + "".join(f"{means[s]:>17.1f}" for s in steps) + "   [ms]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "perception", "unit": "ms (median over repeats)", "repeat": args.repeat,
            "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
            "per_image": results, "mean_over_photos": means}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
