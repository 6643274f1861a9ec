"""``fit-dir``: failures isolated and recorded, done images skipped, a killed run resumes to the same outputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flamejax.batch import (
    DirectoryConfig,
    ImageJob,
    ImageRecord,
    _AppendLog,
    add_fit_dir_command,
    batches,
    completed_record,
    config_from_args,
    discover_images,
    fit_directory,
    main,
    marker_path,
    prefetched,
    read_jsonl,
    write_marker,
)
from flamejax.fit import quick_config
from tests.conftest import SHARED, requires_flame

IMAGES = SHARED / "images"
PHOTOS = {"p0.png": "ffhq_00000.png", "p1.png": "ffhq_00001.png", "p2.png": "ffhq_00002.png",
          "p3.png": "ffhq_00012.png", "sub/p4.png": "ffhq_00018.png"}
FAILING = {"corrupt.png": "ImageReadError", "noface.png": "NoFaceError"}
LAST = "sub/p4.png"
"""Sorted order puts the two failures and p0..p3 in the first batch of 4, p4 alone in the second."""
ARGS = ["--recursive", "--batch-size", "4", "--devices", "1", "--workers", "2", "--rigid-steps", "30",
        "--landmark-steps", "20", "--n-shape", "20", "--n-exp", "10", "--mesh", "obj", "--no-overlay", "--no-progress"]
"""Shared with tests/test_distributed.py: the same compiled fit serves both modules."""


def make_photo_dir(folder: Path, photos: dict[str, str] = PHOTOS, failing: bool = True) -> Path:
    """Copies of the shared photographs, plus a truncated PNG and a picture without a face."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, source in photos.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(IMAGES / source, folder / name)
    if failing:
        (folder / "corrupt.png").write_bytes((IMAGES / "ffhq_00030.png").read_bytes()[:4000])
        ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
        Image.fromarray(np.stack([ramp, ramp.T, ramp], axis=-1)).save(folder / "noface.png")
    return folder


def parse_args(input_dir: Path, output_dir: Path, extra: list[str] = ()):
    import argparse

    parser = argparse.ArgumentParser()
    add_fit_dir_command(parser.add_subparsers())
    return parser.parse_args(["fit-dir", str(input_dir), "-o", str(output_dir), *ARGS, *extra])


def config_of(extra: list[str] = ()) -> DirectoryConfig:
    return config_from_args(parse_args(Path("in"), Path("out"), extra))


_DYING_RUN = """
import os, signal, sys
import flamejax.pipeline as pipeline
from flamejax.batch import main

real_write, real_replace = pipeline.write_outputs, os.replace

def replace_once_then_die(src, dst):
    if replace_once_then_die.done:  # the image's second file: its temporary is complete, never renamed
        os.kill(os.getpid(), signal.SIGKILL)
    replace_once_then_die.done = True
    real_replace(src, dst)

def write_then_die(outdir, fit, *args, **kwargs):
    if fit.name == {last!r}:
        replace_once_then_die.done = False
        os.replace = replace_once_then_die
    return real_write(outdir, fit, *args, **kwargs)

pipeline.write_outputs = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def output_files(folder: Path) -> dict[str, Path]:
    """The user-facing results (no markers, summaries or temporaries)."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and ".fitdir" not in p.parts and "summary" not in p.name}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, flame_model):
    """An uninterrupted run (in this process) and a run SIGKILLed while writing its second batch (a child)."""
    root = tmp_path_factory.mktemp("fitdir")
    photos = make_photo_dir(root / "photos")
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_RUN.format(last=LAST), str(photos), "-o", str(root / "resumed"), *ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        reference = fit_directory(photos, root / "reference", config_of(), model=flame_model)
    finally:
        output, _ = dying.communicate(timeout=300)
    return photos, root, reference, dying.returncode, output


pytestmark = requires_flame


def test_failures_are_isolated_and_recorded(runs):
    photos, root, reference, _, _ = runs
    assert (reference.fitted, reference.failed, reference.skipped) == (len(PHOTOS), len(FAILING), 0)
    rows = {row["image"]: row for row in csv.DictReader(open(root / "reference" / "summary.csv"))}
    assert set(rows) == set(PHOTOS) | set(FAILING)
    for name, error in FAILING.items():
        assert (rows[name]["status"], rows[name]["stage"]) == ("failed", "perception")
        assert rows[name]["reason"].startswith(error + ": ")
    for name in PHOTOS:
        assert rows[name]["status"] == "ok" and 0 < float(rows[name]["nme_inner51"]) < 0.06
        stem = Path(name).with_suffix("")
        assert json.loads((root / "reference" / f"{stem}.json").read_text())["status"] == "ok"
    expected = {f"{Path(n).with_suffix('')}.{s}" for n in PHOTOS for s in ("json", "npz", "obj")}
    assert set(output_files(root / "reference")) == expected


def test_a_second_run_skips_done_images_and_rewrites_nothing(runs, flame_model):
    photos, root, _, _, _ = runs
    before = mtimes(root / "reference")
    again = fit_directory(photos, root / "reference", config_of(), model=flame_model)
    assert (again.records, again.skipped) == ((), len(PHOTOS) + len(FAILING))
    after = mtimes(root / "reference")
    assert {k: v for k, v in after.items() if "summary" not in k} == {k: v for k, v in before.items()
                                                                       if "summary" not in k}


def test_killed_run_resumes_to_the_uninterrupted_outputs(runs, flame_model):
    photos, root, _, returncode, output = runs
    resumed = root / "resumed"
    assert returncode == -signal.SIGKILL, output
    # Killed inside the last image's writes: one file renamed into place, the next one's temporary left behind.
    assert (resumed / "sub" / "p4.json").exists() and not (resumed / "sub" / "p4.npz").exists()
    assert list((resumed / "sub").glob(".p4.npz.*.tmp"))
    first_batch = [n for n in [*PHOTOS, *FAILING] if n != LAST]
    assert all(marker_path(resumed, ImageJob(photos / n, n, str(Path(n).with_suffix("")))).exists()
               for n in first_batch)
    committed = mtimes(resumed / ".fitdir")

    summary = fit_directory(photos, resumed, config_of(), model=flame_model)

    assert [r.image for r in summary.records] == [LAST] and summary.skipped == len(first_batch)
    assert not list(resumed.rglob("*.tmp"))
    assert {k: v for k, v in mtimes(resumed / ".fitdir").items() if k in committed} == committed
    logged = [row["image"] for row in read_jsonl(resumed / "summary.jsonl")]
    assert sorted(logged) == sorted([*PHOTOS, *FAILING])  # every image fitted (and logged) exactly once
    reference_files, resumed_files = output_files(root / "reference"), output_files(resumed)
    assert set(resumed_files) == set(reference_files)
    for name in (n for n in reference_files if n.endswith(".npz")):
        with np.load(reference_files[name]) as ref, np.load(resumed_files[name]) as res:
            assert set(ref.files) == set(res.files)
            for key in ref.files:
                # The first batch was fitted in another process: equal up to float32 rounding.
                np.testing.assert_allclose(res[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=f"{name}: {key}")


def test_retry_failed_fits_failures_again(runs, flame_model, tmp_path):
    photos, root, _, _, _ = runs
    shutil.copytree(root / "reference", tmp_path / "out")
    summary = fit_directory(photos, tmp_path / "out", config_of(["--retry-failed"]), model=flame_model)
    assert sorted(r.image for r in summary.records) == sorted(FAILING)
    assert all(r.status == "failed" for r in summary.records)


# ---------------------------------------------------------------------------------------------- the parts


def test_discovery_is_sorted_filtered_and_mirrors_names(tmp_path):
    for name in ("b.jpg", "a.PNG", "d.v2.png", "notes.txt", ".hidden.png", "x/c.webp", "x/c.tif", "out/o.png",
                 ".fitdir/m.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    flat = discover_images(tmp_path)
    assert [(j.relative, j.stem) for j in flat] == [("a.PNG", "a"), ("b.jpg", "b"), ("d.v2.png", "d.v2")]
    deep = discover_images(tmp_path, recursive=True, exclude=tmp_path / "out")
    assert [(j.relative, j.stem) for j in deep] == [("a.PNG", "a"), ("b.jpg", "b"), ("d.v2.png", "d.v2"),
                                                     ("x/c.tif", "x/c_tif"), ("x/c.webp", "x/c_webp")]
    assert [Path(j.stem).name for j in deep] == ["a", "b", "d.v2", "c_tif", "c_webp"]
    with pytest.raises(NotADirectoryError):
        discover_images(tmp_path / "b.jpg")


def _done_image(tmp_path: Path) -> tuple[ImageJob, Path, Path]:
    source, out = tmp_path / "face.png", tmp_path / "out"
    source.write_bytes(b"image bytes")
    result = out / "face.npz"
    out.mkdir()
    result.write_bytes(b"0123456789")
    job = ImageJob(source, "face.png", "face")
    write_marker(out, job, ImageRecord("face.png", "ok", nme_inner51=0.01), [result])
    return job, out, result


def test_a_done_image_verifies_until_its_outputs_or_source_change(tmp_path):
    job, out, result = _done_image(tmp_path)
    assert completed_record(out, job) == ImageRecord("face.png", "ok", nme_inner51=0.01)
    result.write_bytes(b"0123456780")  # same size, other content: only the checksum notices
    assert completed_record(out, job, "size") is not None and completed_record(out, job, "checksum") is None
    result.write_bytes(b"012")
    assert completed_record(out, job) is None
    result.write_bytes(b"0123456789")
    os.utime(job.source, ns=(0, 0))
    assert completed_record(out, job) is None
    marker_path(out, job).write_text("{ torn")
    assert completed_record(out, job) is None


def test_summary_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "summary.jsonl"
    path.write_text('{"image": "a.png"}\n{"image": "b.p')
    log = _AppendLog(path)
    log.append([{"image": "c.png"}, {"image": "d.png"}])
    log.close()
    assert [r["image"] for r in read_jsonl(path)] == ["a.png", "c.png", "d.png"]


def test_prefetch_keeps_order_and_a_bounded_window():
    from concurrent.futures import ThreadPoolExecutor

    started = []

    def work(x):
        started.append(x)
        return x * x

    with ThreadPoolExecutor(3) as pool:
        stream = prefetched(pool, range(10), work, window=4)
        assert next(stream) == 0
        pool.submit(lambda: None).result()  # let queued work start
        assert len(started) <= 5  # the window, plus the one submitted when the first was taken
        assert list(stream) == [x * x for x in range(1, 10)]


def test_batches_group_successes_and_carry_failures():
    from flamejax.batch import Prepared

    def prepared(name, ok):
        return Prepared(ImageJob(Path(name), name, name), object() if ok else None, None, "" if ok else "bad", 0.0)

    stream = [prepared("a", True), prepared("x", False), prepared("b", True), prepared("c", True), prepared("y", False)]
    grouped = [([p.job.relative for p in r], [p.job.relative for p in f]) for r, f in batches(stream, 2)]
    assert grouped == [(["a", "b"], ["x"]), (["c"], ["y"])]


def test_command_line_options_reach_the_config():
    config = config_of(["--retry-failed", "--verify", "checksum", "--max-images", "7", "--prefetch", "3",
                        "--init", "linear"])
    assert (config.fit, config.init, config.photometric) == (quick_config(30, 20), "linear", None)
    assert (config.batch_size, config.devices, config.n_shape, config.n_expression) == (4, 1, 20, 10)
    assert (config.mesh_formats, config.overlay, config.recursive, config.progress) == (("obj",), False, True, False)
    assert (config.retry_failed, config.verify, config.max_images, config.prefetch_batches) == (True, "checksum", 7, 3)
    assert parse_args(Path("i"), Path("o")).func.__name__ == "cmd_fit_dir"


def test_missing_input_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "absent"), "-o", str(tmp_path / "out"), *ARGS]) == 3
    assert "not a folder" in capsys.readouterr().err
