"""End to end: a folder of photographs through ``fit-dir`` (perception -> fit -> write), images/s.

Two measurements on copies of the shared photographs:

1. Perception alone (MediaPipe landmarks, alignment, mask; no targets cache) through fit-dir's own pool and
   prefetch, in 1 or more threads of one process or worker processes (``spawn``). The pool's start (worker
   processes import flamejax and build their MediaPipe graphs) is timed apart from the steady stream.
2. ``fit-dir --no-overlay --mesh none`` over the folder: cold (perception runs for every image), then a refit
   with other fit settings (``--fov 25 --refit``) that takes every image's targets from the targets cache.
   A warm-up run on one copy of each photograph compiles the fit first.

The speed-up of perception is bounded by the host's cores: the numbers below are from whatever machine ran it
(``environment`` in the JSON); on a shared 2-core machine, two workers cannot be more than twice as fast.

    python3 -m benchmarks --only end_to_end [--quick | --full]
    python3 benchmarks/bench_end_to_end.py [--full]      (writes benchmarks/results/end_to_end.json)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import result, shared_photos, table  # noqa: E402

NAME = "end_to_end"
TITLE = "End to end: fit-dir on a folder of photographs (perception in parallel, targets cache)"
FIT_ARGS = ["--batch-size", "16", "--devices", "1", "--n-shape", "100", "--n-exp", "50", "--init", "linear",
            "--mesh", "none", "--no-overlay", "--no-progress"]


def copy_photos(folder: Path, copies: int) -> int:
    folder.mkdir(parents=True)
    photos = shared_photos()
    for copy in range(copies):
        for photo in photos:
            shutil.copyfile(photo, folder / f"{photo.stem}_{copy:03d}{photo.suffix}")
    return copies * len(photos)


def perception_row(folder: Path, out: Path, kind: str, workers: int) -> list:
    from flamejax.fitdir import DirectoryConfig, discover_images
    from flamejax.fitdir._runner import perception_pool, prefetched, unprepared

    jobs = discover_images(folder)
    config = DirectoryConfig(workers=workers, preprocess_processes=workers if kind == "processes" else 0,
                             cache_targets=False, progress=False)
    start = time.perf_counter()
    with perception_pool(config, out) as (pool, work):
        warm = list(prefetched(pool, jobs[:workers], work, workers, failed=unprepared))
        started = time.perf_counter()
        done = list(prefetched(pool, jobs, work, 2 * workers, failed=unprepared))
        seconds = time.perf_counter() - started
    ok = sum(p.item is not None for p in done + warm) - len(warm)
    return [kind, workers, len(done), ok, started - start, seconds, len(done) / seconds,
            1e3 * float(np.mean([p.seconds for p in done]))]


def fit_dir_row(label: str, folder: Path, out: Path, model, fitters: dict, extra: list[str]) -> list:
    from flamejax.cli import build_parser, directory_config_from_args, fitter_from_args
    from flamejax.fitdir import fit_directory

    args = build_parser().parse_args(["fit-dir", str(folder), "-o", str(out), *FIT_ARGS, *extra])
    key = tuple(a for a in extra if a != "--refit")
    if key not in fitters:
        fitters[key] = fitter_from_args(args, model=model)
    summary = fit_directory(folder, out, fitters[key], directory_config_from_args(args))
    mean_ms = lambda field: 1e3 * float(np.mean([getattr(r, field) for r in summary.records]))  # noqa: E731
    cached = len(list((out / ".fitdir" / "targets").glob("*.npz")))
    return [label, len(summary.records), summary.fitted, summary.seconds, summary.images_per_second,
            mean_ms("preprocess_s"), mean_ms("fit_s"), mean_ms("write_s"), cached]


def run(quick: bool) -> dict:
    from flamejax.fitdir._runner import host_cores
    from flamejax.flame import load_flame

    copies = 2 if quick else 8
    cores = host_cores()
    worker_counts = sorted({1, 2, cores} if quick else {1, 2, 4, cores})
    model = load_flame(n_shape=100, n_expression=50)
    perception_rows, fit_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        count = copy_photos(root / "photos", copies)
        copy_photos(root / "warm-up", 1)
        for kind in ("threads", "processes"):
            for workers in worker_counts:
                perception_rows.append(perception_row(root / "photos", root / "unused", kind, workers))
        fitters: dict = {}
        fit_dir_row("warm-up", root / "warm-up", root / "warm-up-out", model, fitters, [])
        fit_dir_row("warm-up", root / "warm-up", root / "warm-up-out", model, fitters, ["--fov", "25", "--refit"])
        fit_rows.append(fit_dir_row("cold: perception in worker processes (one per core)", root / "photos",
                                    root / "out", model, fitters, []))
        fit_rows.append(fit_dir_row("refit --fov 25: targets from the cache", root / "photos", root / "out",
                                    model, fitters, ["--fov", "25", "--refit"]))
        fit_rows.append(fit_dir_row("cold: perception in threads (--preprocess-processes 0)", root / "photos",
                                    root / "out-threads", model, fitters, ["--preprocess-processes", "0"]))
    settings = {"images": f"{count} ({copies} copies of each shared photograph)", "host cores": cores,
                "perception": "PreprocessConfig() (parsing/matting models when present in the weights folders)",
                "fit-dir": " ".join(FIT_ARGS) + " (FitConfig(): 1500 rigid + 200 landmark steps)"}
    tables = [
        table("Perception alone: images/s by worker kind and count (no cache)",
              ["kind", "workers", "images", "ok", "pool start s", "wall s", "images/s", "ms/img in a worker"],
              perception_rows,
              f"{cores} host core(s): the speed-up from workers is bounded by them (and by other load on the "
              "machine). Pool start: worker processes import flamejax and build MediaPipe once."),
        table("fit-dir end to end (fit compiled by a warm-up run)",
              ["run", "images", "fitted", "wall s", "images/s", "preprocess ms/img", "fit ms/img", "write ms/img",
               "cache entries"], fit_rows,
              "preprocess ms/img: per image in its worker (a cache hit reads one .npz). Wall time includes "
              "starting the worker processes."),
    ]
    return result(NAME, TITLE, "quick" if quick else "full", settings, tables)


if __name__ == "__main__":
    from benchmarks._common import write_result

    print(write_result(run(quick="--full" not in sys.argv)))
