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

from flamejax.cli import build_parser, directory_config_from_args, fitter_from_args, main
from flamejax.fitdir import (DirectoryConfig, FolderBusyError, ImageJob, ImageRecord, SettingsMismatchError,
                             completed_record, discover_images, fit_directory, marker_path, read_jsonl)
from flamejax.fitdir._ledger import AppendLog, FolderLock, log_unlogged, write_marker
from flamejax.fitdir._runner import Prepared, batches, prefetched
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
    return build_parser().parse_args(["fit-dir", str(input_dir), "-o", str(output_dir), *ARGS, *extra])


def config_of(extra: list[str] = ()) -> DirectoryConfig:
    return directory_config_from_args(parse_args(Path("in"), Path("out"), extra))


_FITTERS: dict = {}


def fitter_of(model, extra: list[str] = ()):
    """The fitter the options describe, built once per option set (no networks, no UV layout lookups)."""
    key = (id(model), tuple(extra))
    if key not in _FITTERS:
        _FITTERS[key] = fitter_from_args(parse_args(Path("in"), Path("out"), extra), model=model)
    return _FITTERS[key]


def run_dir(photos: Path, out: Path, model, extra: list[str] = ()):
    return fit_directory(photos, out, fitter_of(model, extra), config_of(extra))


_DYING_RUN = """
import os, signal, sys
import flamejax.fitdir._runner as runner
from flamejax.cli import main

real_write, real_replace = runner.write_image_outputs, os.replace

def replace_once_then_die(src, dst):
    if replace_once_then_die.done:  # the image's second file: its staging folder is left behind
        os.kill(os.getpid(), signal.SIGKILL)
    replace_once_then_die.done = True
    real_replace(src, dst)

def write_then_die(outdir, stem, fit, *args, **kwargs):
    if fit.name == {last!r}:
        replace_once_then_die.done = False
        os.replace = replace_once_then_die
    return real_write(outdir, stem, fit, *args, **kwargs)

runner.write_image_outputs = write_then_die
sys.exit(main(["fit-dir", *sys.argv[1:]]))
"""


def output_files(folder: Path) -> dict[str, Path]:
    """The user-facing results (no markers, summaries or temporaries)."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and ".fitdir" not in p.parts and "summary" not in p.name}


def mtimes(folder: Path) -> dict[str, int]:
    """Modification times of every file but the run locks (taken by each run)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith("lock-p")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, flame_model):
    """An uninterrupted run (in this process) and a run SIGKILLed while writing its second batch (a child)."""
    root = tmp_path_factory.mktemp("fitdir")
    photos = make_photo_dir(root / "photos")
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_RUN.format(last=LAST), str(photos), "-o", str(root / "resumed"), *ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        reference = run_dir(photos, root / "reference", flame_model)
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
    again = run_dir(photos, root / "reference", flame_model)
    assert (again.records, again.skipped) == ((), len(PHOTOS) + len(FAILING))
    after = mtimes(root / "reference")
    assert {k: v for k, v in after.items() if "summary" not in k} == {k: v for k, v in before.items()
                                                                       if "summary" not in k}


def test_killed_run_resumes_to_the_uninterrupted_outputs(runs, flame_model):
    photos, root, _, returncode, output = runs
    resumed = root / "resumed"
    assert returncode == -signal.SIGKILL, output
    # Killed inside the last image's writes: its files are staged together, so none of them is in place.
    assert not list((resumed / "sub").glob("p4.*")) and list((resumed / "sub").glob(".p4.*.staging"))
    first_batch = [n for n in [*PHOTOS, *FAILING] if n != LAST]
    assert all(marker_path(resumed, ImageJob(photos / n, n, str(Path(n).with_suffix("")))).exists()
               for n in first_batch)
    committed = mtimes(resumed / ".fitdir")

    summary = run_dir(photos, resumed, flame_model)

    assert [r.image for r in summary.records] == [LAST] and summary.skipped == len(first_batch)
    assert not list(resumed.rglob("*.tmp")) and not list(resumed.rglob("*.staging"))
    assert {k: v for k, v in mtimes(resumed / ".fitdir").items() if k in committed} == committed
    logged = [row["image"] for row in read_jsonl(resumed / "summary.jsonl")]
    assert sorted(logged) == sorted([*PHOTOS, *FAILING])  # every image fitted (and logged) exactly once
    reference_files, resumed_files = output_files(root / "reference"), output_files(resumed)
    assert set(resumed_files) == set(reference_files)
    for name in (n for n in reference_files if n.endswith(".npz")):
        with np.load(reference_files[name]) as ref, np.load(resumed_files[name]) as res:
            assert set(ref.files) == set(res.files)
            for key in (k for k in ref.files if ref[k].dtype.kind == "f"):
                # Fitted in another process and beside other images: a fit depends on neither.
                np.testing.assert_array_equal(res[key], ref[key], err_msg=f"{name}: {key}")


def test_retry_failed_fits_failures_again(runs, flame_model, tmp_path):
    photos, root, _, _, _ = runs
    shutil.copytree(root / "reference", tmp_path / "out")
    summary = run_dir(photos, tmp_path / "out", flame_model, ["--retry-failed"])
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
    log = AppendLog(path)
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
    def prepared(name, ok):
        return Prepared(ImageJob(Path(name), name, name), object() if ok else None, None, "" if ok else "bad", 0.0)

    stream = [prepared("a", True), prepared("x", False), prepared("b", True), prepared("c", True), prepared("y", False)]
    grouped = [([p.job.relative for p in r], [p.job.relative for p in f]) for r, f in batches(stream, 2)]
    assert grouped == [(["a", "b"], ["x"]), (["c"], ["y"])]


def test_command_line_options_reach_the_config(flame_model):
    config = config_of(["--retry-failed", "--verify", "checksum", "--max-images", "7", "--prefetch", "3",
                        "--refit", "--fht"])
    assert (config.outputs.mesh_formats, config.outputs.overlay, config.outputs.fht) == (("obj",), False, True)
    assert (config.recursive, config.progress, config.workers) == (True, False, 2)
    assert (config.retry_failed, config.verify, config.max_images, config.prefetch_batches) == (True, "checksum", 7, 3)
    assert config.refit
    fitter = fitter_of(flame_model)
    assert (fitter.config.rigid.steps, fitter.config.landmark.steps, fitter.batch_size) == (30, 20, 4)
    assert (fitter.networks.method, fitter.photometric, fitter.mesh.size) == ("linear", None, 1)
    assert parse_args(Path("i"), Path("o")).func.__name__ == "cmd_fit_dir"


@pytest.mark.parametrize("option", ["--batch-size 0", "--batch-size -1", "--workers 0", "--max-images -1",
                                    "--n-shape 1000", "--fov 179", "--fov -20", "--mesh obj,stl", "--devices 0"])
def test_out_of_range_options_are_refused_before_any_work(option, tmp_path, capsys):
    code = main(["fit-dir", str(tmp_path), "-o", str(tmp_path / "out"), *option.split()])
    assert code == 2
    err = capsys.readouterr().err
    assert option.split()[0] in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_more_devices_than_present_is_refused(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["fit-dir", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS[:-1], "--devices", "5"]) == 2
    assert "--devices 5" in capsys.readouterr().err


def test_output_folder_that_is_or_holds_the_input_is_refused(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for out in (photos, tmp_path):
        assert main(["fit-dir", str(photos), "-o", str(out), *ARGS]) == 3
        assert "must not be the input folder" in capsys.readouterr().err


def test_an_empty_folder_says_so(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no pictures here")
    assert main(["fit-dir", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), *ARGS]) == 5
    assert "no images in" in capsys.readouterr().err


def test_other_settings_are_refused_then_refitted_with_refit(runs, flame_model, tmp_path):
    photos, root, _, _, _ = runs
    shutil.copytree(root / "reference", tmp_path / "out")
    with pytest.raises(SettingsMismatchError, match="fov"):
        run_dir(photos, tmp_path / "out", flame_model, ["--fov", "25"])
    summary = run_dir(photos, tmp_path / "out", flame_model, ["--fov", "25", "--refit", "--max-images", "1"])
    assert len(summary.records) == 1 and summary.skipped == 0


def test_earlier_failures_keep_the_run_from_looking_clean(runs, tmp_path, capsys):
    photos, root, _, _, _ = runs
    shutil.copytree(root / "reference", tmp_path / "out")
    assert main(["fit-dir", str(photos), "-o", str(tmp_path / "out"), *ARGS]) == 4
    assert f"+{len(FAILING)} failed in earlier runs" in capsys.readouterr().out


def test_a_second_concurrent_run_is_refused(runs, flame_model, tmp_path):
    photos, _, _, _, _ = runs
    with FolderLock(tmp_path / "out"):
        with pytest.raises(FolderBusyError, match="another fit-dir run"):
            run_dir(photos, tmp_path / "out", flame_model)


def test_leftovers_of_a_killed_run_are_removed(runs, flame_model, tmp_path):
    photos, root, _, _, _ = runs
    shutil.copytree(root / "reference", tmp_path / "out")
    (tmp_path / "out" / ".p0.npz.1a2b3c.tmp").write_bytes(b"")
    (tmp_path / "out" / ".fitdir" / ".p1.json.9f9f.tmp").write_bytes(b"")
    (tmp_path / "out" / ".p2.abcd1234.staging").mkdir()
    run_dir(photos, tmp_path / "out", flame_model)
    assert not list((tmp_path / "out").rglob("*.tmp")) and not list((tmp_path / "out").rglob("*.staging"))


def test_images_committed_but_not_logged_are_logged_on_resume(tmp_path):
    job, out, _ = _done_image(tmp_path)
    log_path = out / "summary.jsonl"
    done = {job.relative: completed_record(out, job)}
    assert log_unlogged(log_path, out, [job], done) == 1
    assert log_unlogged(log_path, out, [job], done) == 0
    assert [r["image"] for r in read_jsonl(log_path)] == ["face.png"]


def test_ctrl_c_is_one_line_and_keeps_the_written_results(runs, monkeypatch, tmp_path, capsys):
    photos, _, _, _, _ = runs
    from flamejax.fitter import Fitter

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Fitter, "fit_batch", interrupted)
    assert main(["fit-dir", str(photos), "-o", str(tmp_path / "out"), *ARGS]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_missing_input_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["fit-dir", str(tmp_path / "absent"), "-o", str(tmp_path / "out"), *ARGS]) == 3
    assert "not a folder" in capsys.readouterr().err
