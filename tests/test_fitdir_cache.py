"""``fit-dir``'s targets cache and its perception worker processes: a refit with other fit settings skips
perception and fits the same; a changed photograph or preprocessing is recomputed; damaged entries too."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import flamejax.fitdir._runner as runner
from flamejax.cli import build_parser, directory_config_from_args, fitter_from_args
from flamejax.fitdir import fit_directory
from flamejax.fitdir._jobs import discover_images
from flamejax.fitdir._targets_cache import TARGETS_DIR, TargetsCache, targets_arrays, targets_from_arrays
from flamejax.perception import PreprocessConfig, load_image, preprocess
from tests.conftest import SHARED, requires_flame

PHOTOS = ("ffhq_00000.png", "ffhq_00001.png")
ARGS = ["--batch-size", "4", "--devices", "1", "--workers", "2", "--rigid-steps", "30", "--landmark-steps", "20",
        "--n-shape", "20", "--n-exp", "10", "--mesh", "none", "--no-overlay", "--init", "linear", "--no-progress"]
OTHER_FIT = ["--fov", "25"]
"""Other fit settings (a traced number: no new compilation)."""


def photo_dir(folder: Path, photos=PHOTOS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in photos:
        shutil.copyfile(SHARED / "images" / name, folder / name)
    return folder


_FITTERS: dict = {}


def run(photos: Path, out: Path, model, extra: list[str] = ()):
    args = build_parser().parse_args(["fit-dir", str(photos), "-o", str(out), *ARGS, *extra])
    key = (id(model), tuple(extra))
    if key not in _FITTERS:
        _FITTERS[key] = fitter_from_args(args, model=model)
    return fit_directory(photos, out, _FITTERS[key], directory_config_from_args(args))


@pytest.fixture
def counted(monkeypatch):
    """How often perception ran in this process (runs with ``--preprocess-processes 0``)."""
    calls = []

    def counting(image, config):
        calls.append(config)
        return preprocess(image, config)

    monkeypatch.setattr(runner, "preprocess", counting)
    return calls


def fit_arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    fits = {}
    for path in sorted(out.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            fits[path.stem] = {k: data[k] for k in data.files}
    return fits


def without_timings(value):
    """A fit file's entry without what differs between equal fits: wall times and dates (in JSON strings)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 0:
        try:
            value = json.loads(value.item())
        except ValueError:
            return value.item()
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k != "date"}
    return value


def assert_same_fits(a: Path, b: Path) -> None:
    fits_a, fits_b = fit_arrays(a), fit_arrays(b)
    assert fits_a.keys() == fits_b.keys() and fits_a
    for stem in fits_a:
        assert fits_a[stem].keys() == fits_b[stem].keys()
        for key in fits_a[stem]:
            value_a, value_b = without_timings(fits_a[stem][key]), without_timings(fits_b[stem][key])
            if isinstance(value_a, np.ndarray):
                np.testing.assert_array_equal(value_a, value_b, err_msg=f"{stem}: {key}")
            else:
                assert value_a == value_b, f"{stem}: {key}"


def assert_same_targets(a, b) -> None:
    arrays_a, arrays_b = targets_arrays(a), targets_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)


@pytest.fixture(scope="module")
def targets():
    return preprocess(SHARED / "images" / PHOTOS[0], PreprocessConfig())


def test_targets_round_trip_without_pickle(targets, tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, **targets_arrays(targets))
    with np.load(path, allow_pickle=False) as data:
        loaded = targets_from_arrays({k: data[k] for k in data.files})
    assert_same_targets(loaded, targets)
    for field in dataclasses.fields(targets):
        value, back = getattr(targets, field.name), getattr(loaded, field.name)
        assert type(value) is type(back), field.name
        if not isinstance(value, np.ndarray):
            assert value == back, field.name
        else:
            assert value.dtype == back.dtype, field.name


def test_entry_is_keyed_by_source_and_preprocessing(targets, tmp_path):
    photos = photo_dir(tmp_path / "in", PHOTOS[:1])
    job = discover_images(photos, False)[0]
    cache = TargetsCache.create(tmp_path / "out", PreprocessConfig())
    key = cache.key(job)
    cache.store(job, key, targets)
    assert_same_targets(cache.load(job, key), targets)
    other = TargetsCache.create(tmp_path / "out", PreprocessConfig(forehead=0.5))
    assert other.preprocessing != cache.preprocessing and other.load(job, other.key(job)) is None
    os.utime(job.source, ns=(0, 0))
    assert cache.key(job) != key and cache.load(job, cache.key(job)) is None
    cache.path(job).write_bytes(cache.path(job).read_bytes()[:5000])
    assert cache.load(job, key) is None
    cache.path(job).write_bytes(b"not a zip file")
    assert cache.load(job, key) is None


@requires_flame
def test_refit_with_other_settings_skips_perception_and_fits_the_same(flame_model, counted, tmp_path):
    photos = photo_dir(tmp_path / "in")
    threads = ["--preprocess-processes", "0"]
    first = run(photos, tmp_path / "out", flame_model, threads)
    assert first.fitted == len(PHOTOS) and len(counted) == len(PHOTOS)
    assert len(list((tmp_path / "out" / TARGETS_DIR).glob("*.npz"))) == len(PHOTOS)

    refit = run(photos, tmp_path / "out", flame_model, threads + OTHER_FIT + ["--refit"])
    assert refit.fitted == len(PHOTOS) and len(counted) == len(PHOTOS), "a cached image was preprocessed again"
    cold = run(photos, tmp_path / "cold", flame_model, threads + OTHER_FIT + ["--no-targets-cache"])
    assert len(counted) == 2 * len(PHOTOS) and not (tmp_path / "cold" / TARGETS_DIR).exists()
    assert_same_fits(tmp_path / "out", tmp_path / "cold")

    # a changed photograph and a damaged entry are preprocessed again; the other image is not
    shutil.copyfile(SHARED / "images" / "ffhq_00002.png", photos / PHOTOS[0])
    (tmp_path / "out" / TARGETS_DIR / f"{Path(PHOTOS[1]).stem}.npz").write_bytes(b"PK\x03\x04 truncated")
    before = len(counted)
    again = run(photos, tmp_path / "out", flame_model, threads + ["--refit"])
    assert again.fitted == len(PHOTOS) and len(counted) == before + 2
    cached = TargetsCache.create(tmp_path / "out", PreprocessConfig())
    job = discover_images(photos, False)[0]
    assert_same_targets(cached.load(job, cached.key(job)), preprocess(load_image(photos / PHOTOS[0]), PreprocessConfig()))


@requires_flame
def test_worker_processes_give_the_targets_and_fits_of_threads(flame_model, tmp_path):
    photos = photo_dir(tmp_path / "in")
    processes = run(photos, tmp_path / "processes", flame_model, ["--preprocess-processes", "2"])
    threads = run(photos, tmp_path / "threads", flame_model, ["--preprocess-processes", "0"])
    assert processes.fitted == threads.fitted == len(PHOTOS)
    for job in discover_images(photos, False):
        by_process, by_thread = (TargetsCache.create(tmp_path / name, PreprocessConfig())
                                 for name in ("processes", "threads"))
        assert_same_targets(by_process.load(job, by_process.key(job)), by_thread.load(job, by_thread.key(job)))
    assert_same_fits(tmp_path / "processes", tmp_path / "threads")


def test_a_dead_worker_becomes_the_image_failure_reason(tmp_path):
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor

    job = discover_images(photo_dir(tmp_path / "in", PHOTOS[:1]), False)[0]
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        results = list(runner.prefetched(pool, [signal.SIGKILL] * 3, signal.raise_signal, 2,
                                         failed=lambda _, err: runner.unprepared(job, err)))
    assert [r.item for r in results] == [None] * 3
    assert all(r.error.startswith("BrokenProcessPool") for r in results)
