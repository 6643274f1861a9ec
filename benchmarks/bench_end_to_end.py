"""End to end: a folder of photographs through ``fit_directory`` (preprocess -> fit -> write), images/s.

The folder holds copies of the shared photographs. A warm-up run on one copy of each compiles everything
(fit, mesh forward, overlay renderer) at the timed batch size, so the timed runs measure steady throughput with
the reference steps (``FitConfig()``). Preprocessing and writing run in worker threads while the main thread
fits, so their per-image times overlap the fit and add up to more than the wall time.

    python3 -m benchmarks --only end_to_end [--quick | --full]
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import result, shared_photos, table
from flamejax.batch import DirectoryConfig, DirectorySummary, fit_directory
from flamejax.flame import load_flame

NAME = "end_to_end"
TITLE = "End to end: fit-dir on a folder of photographs"
OUTPUTS = {
    "all outputs (json, npz, obj, glb, overlay)": {},
    "parameters only (json, npz)": {"mesh_formats": (), "overlay": False},
}


def copy_photos(folder: Path, copies: int) -> int:
    folder.mkdir(parents=True)
    photos = shared_photos()
    for copy in range(copies):
        for photo in photos:
            shutil.copyfile(photo, folder / f"{photo.stem}_{copy:03d}{photo.suffix}")
    return copies * len(photos)


def row(label: str, summary: DirectorySummary) -> list:
    per_image = lambda field: 1e3 * float(np.mean([getattr(r, field) for r in summary.records]))  # noqa: E731
    return [label, len(summary.records), summary.fitted, summary.seconds, summary.images_per_second,
            per_image("preprocess_s"), per_image("fit_s"), per_image("write_s")]


def run(quick: bool) -> dict:
    copies, batch = (4, 16) if quick else (32, 64)
    base = DirectoryConfig(n_shape=100, n_expression=50, batch_size=batch, progress=False)
    model = load_flame(n_shape=base.n_shape, n_expression=base.n_expression)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        count = copy_photos(root / "photos", copies)
        copy_photos(root / "warm-up", 1)
        fit_directory(root / "warm-up", root / "warm-up-out", base, model=model)
        for i, (label, changes) in enumerate(OUTPUTS.items()):
            config = dataclasses.replace(base, **changes)
            rows.append(row(label, fit_directory(root / "photos", root / f"out{i}", config, model=model)))
    settings = {"images": f"{count} ({copies} copies of each shared photograph)", "batch size": batch,
                "fit": "FitConfig() (1500 rigid + 200 landmark steps)", "dtype": "float32",
                "model": f"{base.n_shape} identity + {base.n_expression} expression components",
                "preprocess/write threads": base.workers, "prefetch": f"{base.prefetch_batches} batches"}
    spec = table("Images per second, one run over the folder (compilation excluded by a warm-up run)",
                 ["outputs", "images", "fitted", "wall s", "images/s", "preprocess ms/img", "fit ms/img",
                  "write ms/img"], rows,
                 "Per-image times are thread times: preprocessing and writing overlap the fit of other batches.")
    return result(NAME, TITLE, "quick" if quick else "full", settings, [spec])
