"""Run the benchmarks, store their JSON under ``benchmarks/results/`` and rebuild ``benchmarks/RESULTS.md``.

    python -m benchmarks [--quick | --full] [--only NAME ...] [--list]

``--quick`` (default) suits a CPU in minutes; ``--full`` adds large batches (and accelerator-sized ones on a
GPU or TPU) and more repeats. A benchmark whose module is missing or fails to import is recorded as skipped
with the reason, one that fails as failed; the others still run. Benchmarks written as ``run(quick) -> dict``
run in this process; the stand-alone scripts (perception, render, init) run as subprocesses and their JSON is
wrapped into the common format.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

from benchmarks._common import (BENCH_DIR, ROOT, render_section, result, result_path, table, update_results_md,
                                write_result)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    module: str
    """Module name below ``benchmarks``."""
    script_args: Callable[[bool, Path], list[str]] | None = None
    """For a stand-alone script: its arguments given quick mode and the JSON path to write."""
    tables: Callable[[dict], list[dict]] | None = None
    """For a stand-alone script: tables from its JSON (default: its list of result rows)."""
    settings: tuple[tuple[str, str], ...] = ()
    """For a stand-alone script: what its JSON does not say about how it measured."""

    @property
    def path(self) -> Path:
        return BENCH_DIR / f"{self.module}.py"


def _mode_flag(quick: bool, out: Path) -> list[str]:
    return ["--quick" if quick else "--full", "--out", str(out)]


def _perception_tables(data: dict) -> list[dict]:
    steps = list(data["mean_over_photos"])
    rows = [[name, *(values[s] for s in steps)] for name, values in data["per_image"].items()]
    rows.append(["mean (photos)", *(data["mean_over_photos"][s] for s in steps)])
    return [table(f"Preprocessing time per image and step, ms (median of {data['repeat']} repeats)",
                  ["image", *steps], rows)]


def _init_tables(data: dict) -> list[dict]:
    crops = table("Crops, ms", ["crop", "ms"], [[k, v] for k, v in data["crop_ms"].items()])
    networks = table(f"Networks through ONNX Runtime ({data['weights']} weights, providers {data['providers']})",
                     ["what", "batch", "ms/batch", "ms/image"],
                     [[r["what"], r["batch"], r["ms_per_batch"], r["ms_per_image"]] for r in data["networks"]])
    return [crops, networks]


def rows_tables(data: dict) -> list[dict]:
    """A script's list of row dicts (under ``results`` or ``rows``) as one table; else its scalar fields."""
    rows = data.get("results") or data.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        columns = list(rows[0])
        return [table("Results", columns, [[r.get(c) for c in columns] for r in rows], data.get("note", ""))]
    scalars = [[k, v] for k, v in data.items() if isinstance(v, (int, float, str))]
    return [table("Results", ["quantity", "value"], scalars)]


BENCHMARKS = (
    Benchmark("flame", "FLAME forward and forward+backward", "bench_flame"),
    Benchmark("perception", "Perception (preprocessing)", "bench_perception",
              lambda quick, out: ["--repeat", "2" if quick else "5", "--json", str(out)], _perception_tables,
              (("images", "the shared photographs, one at a time"), ("dtype", "uint8 images, float32 landmarks"))),
    Benchmark("render", "Renderer", "bench_render", _mode_flag, settings=(("dtype", "float32"),)),
    Benchmark("init", "Network initialisation (DECA, MICA)", "bench_init",
              lambda quick, out: ["--batches", *(["1", "4"] if quick else ["1", "4", "16", "64"]),
                                  "--repeats", "2" if quick else "5", "--out", str(out)], _init_tables,
              (("dtype", "float32 (ONNX Runtime)"),)),
    Benchmark("fit", "Landmark fit", "bench_fit"),
    Benchmark("photometric", "Photometric fit", "bench_photometric", _mode_flag),
    Benchmark("end_to_end", "End to end: fit-dir on a folder of photographs", "bench_end_to_end"),
    Benchmark("identity", "Identity on heads with 3D truth (scans and sampled heads, NoW protocol)", "bench_identity"),
    Benchmark("same_person_texture", "Several photographs' albedo", "bench_same_person_texture"),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def run_benchmark(bench: Benchmark, quick: bool) -> dict[str, Any]:
    """Run one benchmark; never raises: a missing module is skipped, a failure recorded with its reason."""
    mode = "quick" if quick else "full"
    if not bench.path.exists():
        return result(bench.name, bench.title, mode, {}, [], status="skipped",
                      note=f"`benchmarks/{bench.path.name}` does not exist yet")
    try:
        module = importlib.import_module(f"benchmarks.{bench.module}")
    except Exception as err:  # noqa: BLE001 -- recorded in the table
        return result(bench.name, bench.title, mode, {}, [], status="skipped",
                      note=f"`benchmarks/{bench.path.name}` does not import: {type(err).__name__}: {err}")
    try:
        if hasattr(module, "run"):
            return module.run(quick)
        return _run_script(bench, quick)
    except Exception as err:  # noqa: BLE001 -- recorded in the table
        traceback.print_exc()
        return result(bench.name, bench.title, mode, {}, [], status="failed", note=f"{type(err).__name__}: {err}")


def _run_script(bench: Benchmark, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        args = (bench.script_args or _mode_flag)(quick, out)
        command = [sys.executable, str(bench.path.relative_to(ROOT)), *args]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        print(done.stdout, end="")
        if done.returncode != 0 or not out.exists():
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"`{' '.join(command[1:])}` exited with {done.returncode}: {tail}")
        data = json.loads(out.read_text())
    shown = " ".join(a for a in args if a != str(out))
    return result(bench.name, bench.title, "quick" if quick else "full",
                  {"command": f"python3 benchmarks/{bench.path.name} {shown}".strip(), **dict(bench.settings)},
                  (bench.tables or rows_tables)(data), data)


def rebuild_results_md() -> Path:
    """Every benchmark's section from its stored JSON (those never run say so)."""
    sections = []
    for bench in BENCHMARKS:
        path = result_path(bench.name)
        if path.exists():
            sections.append((bench.name, render_section(json.loads(path.read_text()))))
        else:
            never = f"## {bench.title}\n\n*not run yet*: `python -m benchmarks --only {bench.name}`"
            sections.append((bench.name, never))
    return update_results_md(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="CPU-sized: small batches, few repeats (default)")
    level.add_argument("--full", action="store_true", help="accelerator-sized: large batches, more repeats")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="NAME",
                        help=f"run only these: {', '.join(BY_NAME)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for bench in BENCHMARKS:
            state = "present" if bench.path.exists() else "missing"
            print(f"{bench.name:12s} {bench.title}  ({state}: {bench.path.name})")
        return 0
    statuses = {}
    for name in args.only or list(BY_NAME):
        print(f"== {name}", flush=True)
        payload = run_benchmark(BY_NAME[name], quick=not args.full)
        print(f"   {payload['status']}{': ' + payload['note'] if payload['note'] else ''} -> {write_result(payload)}",
              flush=True)
        statuses[name] = payload["status"]
    print(f"tables: {rebuild_results_md()}")
    return 1 if "failed" in statuses.values() else 0


if __name__ == "__main__":
    sys.exit(main())
