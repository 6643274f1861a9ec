"""The accelerator check's building blocks on the CPU (the full run needs a GPU: benchmarks/gpu_check.py)."""

from __future__ import annotations

import dataclasses
import json

from benchmarks import gpu_check
from benchmarks._common import render_section
from tests.conftest import requires_flame

pytestmark = requires_flame
TINY = dataclasses.replace(gpu_check.SMOKE, image_size=32, render_batch=1)


def test_timed_and_verdict():
    calls = []
    compile_s, seconds = gpu_check.timed(lambda: calls.append(1), repeats=3)
    assert len(calls) == 4 and compile_s >= 0 and seconds >= 0
    assert gpu_check.verdict(6000, 5000) == "met" and gpu_check.verdict(9.0, 8.0, larger_is_better=False) == "missed"


def test_render_speed_rows():
    for per_image in (False, True):
        row = gpu_check.render_speed(TINY, per_image)
        assert row["batch"] == 1 and row["image_size"] == 32 and row["per_image"] == per_image
        assert row["forward_backward_images_per_s"] > 0 and row["forward_images_per_s"] > 0


def test_smoke_run_writes_a_section(tmp_path):
    """The whole script on tiny sizes: a GPU is lent rarely, and a script that broke in between wastes it."""
    progress = tmp_path / "progress.json"
    payload = gpu_check.run(smoke=True, progress=progress, plan=TINY)
    assert payload["status"] == "ok" and payload["data"]["agreement"]["ok"]
    sections = {"agreement", "landmark", "render", "render_per_image", "photometric"}
    assert set(json.loads(progress.read_text())) >= sections
    assert payload["data"]["agreement"]["self_comparison"]
    section = render_section(payload)
    assert "Targets (issue 14)" in section and "Device against CPU" in section

