"""Preprocessing time per image, by step: load, detect, align, matting, re-detect, mask, whole preprocess.

    python3 benchmarks/bench_perception.py [--images ../shared/images] [--repeat 5] [--json out.json]
        [--parsing-model face_parsing.onnx] [--matting-model matting.onnx] [--huge]

Each step is timed on its own (median over repeats, milliseconds) after one warm-up pass that creates
MediaPipe's graphs. ``--huge`` adds an 8000x8000 upscale of the first photo.

``--turned`` instead measures the photographs turned by 0-3 quarter turns and by oblique angles (on a grey canvas
holding the whole photograph): how often the face's 478 points are
wrong (mean distance to the upright detection, mapped into the turned picture, above 0.1 of the outer-eye-corner
distance), with FaceMesh's largest face as found and with :func:`flamejax.perception.detect_landmarks` (which looks
at a face scored below ``UPRIGHT_SCORE`` turned by quarter turns), and the detection's time.
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
from flamejax.perception._landmarks import _box_area, _turned, find_faces, redetect

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


def bench_turned(paths: list[Path]) -> dict:
    """Per quarter turn: wrong faces and detection time, FaceMesh as found against :func:`fp.detect_landmarks`."""
    def as_found(image):
        faces, _ = find_faces(image)
        return max((p for p, _ in faces), key=_box_area, default=None)

    def detected(image):
        try:
            return fp.detect_landmarks(image)
        except fp.PerceptionError:
            return None

    rows = {degrees: {"photos": 0, "wrong as found": 0, "wrong now": 0, "turned now": 0, "ms as found": [],
                      "ms now": [], "worst error now": 0.0} for degrees in TURNED_DEGREES}
    for path in paths:
        image = fp.load_image(path)
        upright = fp.detect_landmarks(image).points
        scale = float(np.linalg.norm(np.subtract(*fp.to_68(upright)[[45, 36]])))
        for degrees, row in rows.items():
            turned, to_turned = _turned_by(image, degrees)
            expected = fp.transform_points(to_turned, upright)
            def error(points):  # no face found: wrong
                return np.inf if points is None else float(np.linalg.norm(points - expected, axis=1).mean()) / scale

            ms_found, found = timed(lambda: as_found(turned), 1)
            ms_now, face = timed(lambda: detected(turned), 1)
            now = error(None if face is None else face.points)
            row["photos"] += 1
            row["wrong as found"] += error(found) > 0.1
            row["wrong now"] += now > 0.1
            row["turned now"] += face is not None and face.quarter_turns != 0
            row["worst error now"] = max(row["worst error now"], now)
            row["ms as found"].append(ms_found)
            row["ms now"].append(ms_now)
    for degrees, row in rows.items():
        row["ms as found"], row["ms now"] = (float(np.median(row[k])) for k in ("ms as found", "ms now"))
        print(f"{degrees:>3} degrees: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))
    return {str(degrees): row for degrees, row in rows.items()}


TURNED_DEGREES = (0, 90, 180, 270, 45, 120, 135, 150, 210, 225)
"""Counterclockwise turns of the photographs in ``--turned``."""


def _turned_by(image: np.ndarray, degrees: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned counterclockwise (quarter turns exactly, other angles on a grey canvas holding all of it)
    and the pixel map into it."""
    if degrees % 90 == 0:
        return _turned(image, degrees // 90)
    height, width = image.shape[:2]
    side = int(np.ceil(np.hypot(height, width)))
    to_canvas = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)  # OpenCV: pixel centres at integers
    to_canvas[:, 2] += ((side - width) / 2, (side - height) / 2)
    turned = cv2.warpAffine(image, to_canvas, (side, side), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    to_turned = to_canvas.copy()
    to_turned[:, 2] += 0.5 - to_canvas[:, :2] @ (0.5, 0.5)  # flamejax's points: pixel centres at half-integers
    return turned, to_turned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--fit-size", type=int, default=256)
    parser.add_argument("--parsing-model", type=Path)
    parser.add_argument("--matting-model", type=Path)
    parser.add_argument("--huge", action="store_true", help="also time an 8000x8000 image")
    parser.add_argument("--turned", action="store_true", help="the photographs turned by quarter turns instead")
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
    if args.turned:
        turned = bench_turned(paths)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"benchmark": "perception_turned", "images": [p.name for p in paths],
                                             "by_turn_counterclockwise_degrees": turned}, indent=2))
        return 0

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
