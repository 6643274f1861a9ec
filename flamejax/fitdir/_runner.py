"""The directory run: preprocess ahead on a pool, fit fixed-size batches with a :class:`Fitter` on the main
thread, write each image's outputs on a second pool while the next batch fits, commit batch by batch.

Perception (MediaPipe, on the host) runs in worker processes, one per core by default, so that a fast device is
not kept waiting; each image's targets are cached under the output folder (:mod:`~flamejax.fitdir._targets_cache`)
and a refit with other fit settings reuses them.

An image is done when its marker parses, the source has the marker's size and mtime, and every output it lists
exists with its recorded size (``verify="checksum"``: and sha256). Done images are skipped; failed ones too,
unless ``retry_failed``. A run killed at any point resumes where it stopped: outputs without a marker are fitted
again (overwriting them), leftovers of the killed run are removed, and no image with a marker is fitted twice.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flamejax.distributed import host_shard, process_info, wait_for_all_processes
from flamejax.fitdir._jobs import ImageJob, check_folders, discover_images
from flamejax.fitdir._ledger import (AppendLog, FolderLock, ImageRecord, check_settings, completed_record,
                                     log_unlogged, marker_path, remove_stale_files, write_csv, write_marker)
from flamejax.fitdir._targets_cache import TARGETS_DIR, TargetsCache
from flamejax.fitter import Fitter, ImageFit
from flamejax.onnx_session import OnnxModel
from flamejax.outputs import OutputOptions, _plain, output_names, provenance, write_image_outputs
from flamejax.perception import (PreprocessConfig, annotated, annotation_beside, load_image, preprocess,
                                 read_annotation)

log = logging.getLogger("flamejax")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


PROCESS_POOL_MIN_CORES = 4
"""Below this many cores, preprocessing runs in threads by default (benchmarks/RESULTS.md, end to end)."""


def host_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class DirectoryConfig:
    """How a directory run goes, besides the :class:`Fitter` (what a fit is)."""

    preprocess: PreprocessConfig = PreprocessConfig()
    outputs: OutputOptions = OutputOptions()
    recursive: bool = False
    workers: int = dataclasses.field(default_factory=default_workers)
    """Threads writing outputs, and preprocessing ahead of the fit when ``preprocess_processes`` is 0."""
    preprocess_processes: int | None = None
    """Worker processes preprocessing ahead of the fit (each with its own interpreter and MediaPipe graphs);
    ``None``: one per host core on hosts with at least :data:`PROCESS_POOL_MIN_CORES` cores, else threads (on
    two cores threads measured faster end to end: a spawned worker pays seconds importing jax); 0: ``workers``
    threads of this process instead. Workers are started with
    ``spawn``, which imports the calling script again: a script calling :func:`fit_directory` at top level needs
    the ``if __name__ == "__main__":`` guard."""
    cache_targets: bool = True
    """Keep each image's targets under ``.fitdir/targets`` and reuse them when image and preprocessing match."""
    prefetch_batches: int = 2
    """How many batches of images are preprocessed ahead of the fit (bounds memory)."""
    retry_failed: bool = False
    refit: bool = False
    """Fit every image again when the folder holds fits made with other settings (else such a run is refused)."""
    verify: str = "size"
    """How a done image's outputs are checked on resume: ``"size"`` or ``"checksum"`` (sha256, reads them)."""
    max_images: int | None = None
    """Process at most this many not-yet-done images on this host (the rest stay pending)."""
    progress: bool = True
    annotations: bool = False
    """Fit each image's hand-annotated 68 points from the ``.pts`` file beside it (see
    :func:`flamejax.perception.annotated`); an image without a valid one fails with the reason. Pair it with a
    :class:`Fitter` on :func:`flamejax.fit.precise_landmarks_config` (in photometric mode, with
    :func:`flamejax.fit.precise_photometric_config`)."""

    def __post_init__(self) -> None:
        if self.verify not in ("size", "checksum"):
            raise ValueError(f"verify must be 'size' or 'checksum', got {self.verify!r}")
        if self.workers < 1 or self.prefetch_batches < 1:
            raise ValueError("workers and prefetch_batches must be at least 1")
        if self.preprocess_processes is not None and self.preprocess_processes < 0:
            raise ValueError(f"preprocess_processes must be 0 or more, got {self.preprocess_processes}")
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be 0 or more, got {self.max_images}")


@dataclasses.dataclass(frozen=True)
class DirectorySummary:
    """What one run did on this host."""

    records: tuple[ImageRecord, ...]
    """Images processed by this run, in commit order."""
    skipped: int
    """Images done (verified) before this run."""
    failed_before: int
    """Of the skipped images, those whose recorded outcome is a failure (``retry_failed`` fits them again)."""
    pending: int
    """Images left for a later run (``max_images``)."""
    found: int
    """Images found for this host."""
    seconds: float
    batch_size: int
    devices: int
    summary_csv: Path | None
    """Written by process 0 only."""
    summary_jsonl: Path

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def fitted(self) -> int:
        return self.count("ok")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def suspect(self) -> int:
        return self.count("suspect")

    @property
    def images_per_second(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_ok(self) -> bool:
        return self.failed == self.suspect == self.failed_before == 0

    def report(self) -> str:
        before = f" (+{self.failed_before} failed in earlier runs: --retry-failed fits them again)" \
            if self.failed_before else ""
        return (f"fitted {self.fitted}, suspect {self.suspect}, failed {self.failed}{before}, "
                f"skipped {self.skipped} (done before), pending {self.pending}; {len(self.records)} images in "
                f"{self.seconds:.1f} s ({self.images_per_second:.2f} images/s, batch {self.batch_size} on "
                f"{self.devices} device(s))")


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """One image after preprocessing: its targets, or why there are none."""

    job: ImageJob
    item: object | None
    """:class:`~flamejax.perception.Preprocessed`, or None when preprocessing failed."""
    original: np.ndarray | None
    """The photograph (kept for the overlay picture only)."""
    error: str
    seconds: float
    cached: bool = False
    """The targets came from the targets cache (perception did not run)."""


def prepare(job: ImageJob, config: PreprocessConfig, keep_original: bool,
            cache: TargetsCache | None = None, annotations: bool = False) -> Prepared:
    """Load and preprocess one image (or take its targets from ``cache``), with its ``.pts`` annotation when
    ``annotations``; any failure becomes a reason, never an exception."""
    start = time.perf_counter()
    try:
        key = cache.key(job) if cache is not None else ""
        item = cache.load(job, key) if cache is not None else None
        cached = item is not None
        original = load_image(job.source) if not cached or keep_original else None
        if not cached:
            item = preprocess(original, config)
            if cache is not None:
                cache.store(job, key, item)
        if annotations:
            marks = annotation_beside(job.source)
            item = annotated(item, read_annotation(marks), str(marks))
    except Exception as err:  # noqa: BLE001 -- one bad image must not end a run over thousands
        log.debug("preprocessing %s failed", job.relative, exc_info=True)
        return Prepared(job, None, None, failure_reason(err, job.source), time.perf_counter() - start)
    return Prepared(job, item, original if keep_original else None, "", time.perf_counter() - start, cached)


def unprepared(job: ImageJob, err: BaseException) -> Prepared:
    """The failure of an image whose preprocessing never returned (its worker process died)."""
    return Prepared(job, None, None, failure_reason(err, job.source), 0.0)


def _start_worker() -> None:
    """A perception worker leaves Ctrl-C to the main process, which stops the pool, and ends when the main
    process dies (killed, its pool cannot tell the workers; they would wait for work forever)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="flamejax-parent-watch",
                         daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


@contextlib.contextmanager
def perception_pool(config: DirectoryConfig, output_dir: Path) -> Iterator[tuple[Executor, Callable]]:
    """(pool, function of one job giving its :class:`Prepared`) as ``config`` asks: worker processes started
    with ``spawn`` (JAX is not fork-safe; each builds its MediaPipe graphs once), or threads."""
    preprocess_config = config.preprocess
    processes = perception_processes(config)
    if processes:
        preprocess_config = _by_path(preprocess_config)
    cache = TargetsCache.create(output_dir, preprocess_config) if config.cache_targets else None
    work = functools.partial(prepare, config=preprocess_config, keep_original=config.outputs.overlay, cache=cache,
                             annotations=config.annotations)
    pool = (ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"), initializer=_start_worker)
            if processes else ThreadPoolExecutor(config.workers, "flamejax-preprocess"))
    with pool:
        yield pool, work


def perception_processes(config: DirectoryConfig) -> int:
    """Worker processes the run preprocesses in (0: threads)."""
    if config.preprocess_processes is not None:
        return config.preprocess_processes
    cores = host_cores()
    return cores if cores >= PROCESS_POOL_MIN_CORES else 0


def _by_path(config: PreprocessConfig) -> PreprocessConfig:
    """``config`` with opened ONNX models replaced by their files (sessions do not cross processes)."""
    return dataclasses.replace(config, **{name: model.path for name in ("parsing_model", "matting_model")
                                          if isinstance(model := getattr(config, name), OnnxModel)})


def failure_reason(err: Exception, source: Path | str) -> str:
    """``"ErrorType: message"`` without the source's name (which the summary line already gives)."""
    message = str(err)
    for prefix in (f"{source}: ", "<array>: ", "<bytes>: "):
        message = message.removeprefix(prefix)
    return f"{type(err).__name__}: {message}"


def prefetched(pool: Executor, items: Iterable, fn: Callable, window: int,
               failed: Callable[[object, Exception], object] | None = None) -> Iterator:
    """``fn(item)`` for each item, computed on ``pool`` at most ``window`` items ahead, yielded in order.

    ``failed(item, error)`` stands in for the result of an item whose computation raised, or could not be
    submitted (a broken process pool); without it, the error propagates.
    """
    items = iter(items)
    queue: collections.deque[tuple[object, Future]] = collections.deque()

    def submit(item) -> None:
        try:
            future = pool.submit(fn, item)
        except Exception as err:
            if failed is None:
                raise
            future = Future()
            future.set_exception(err)
        queue.append((item, future))

    for item in itertools.islice(items, window):
        submit(item)
    end = object()
    while queue:
        item, future = queue.popleft()
        try:
            result = future.result()
        except Exception as err:
            if failed is None:
                raise
            log.warning("preprocessing %s did not return: %s: %s", getattr(item, "relative", item),
                        type(err).__name__, err)
            result = failed(item, err)
        following = next(items, end)
        if following is not end:
            submit(following)
        yield result


def batches(stream: Iterable[Prepared], batch_size: int) -> Iterator[tuple[list[Prepared], list[Prepared]]]:
    """(up to ``batch_size`` preprocessed images, the failures met since the previous batch)."""
    ready: list[Prepared] = []
    failed: list[Prepared] = []
    for prepared in stream:
        (ready if prepared.item is not None else failed).append(prepared)
        if len(ready) == batch_size:
            yield ready, failed
            ready, failed = [], []
    if ready or failed:
        yield ready, failed


@dataclasses.dataclass(frozen=True, eq=False)
class OutputWriter:
    """Writes one image's outputs, then its done-marker; returns its summary record."""

    output_dir: Path
    fitter: Fitter
    options: OutputOptions
    fitter_provenance: dict

    def __call__(self, prepared: Prepared, fit: ImageFit) -> ImageRecord:
        start = time.perf_counter()
        job = prepared.job
        result = fit.result
        record = ImageRecord(job.relative, fit.verdict, "" if fit.written else "fit", fit.reason,
                             float(result.nme), float(result.rigid.final_loss), float(result.landmark.final_loss),
                             prepared.seconds, fit.fit_seconds, fit.compile_seconds)
        written: dict[str, Path] = {}
        if fit.written:
            try:
                written = write_image_outputs((self.output_dir / job.stem).parent, Path(job.stem).name, fit,
                                              prepared.item, self.fitter, self.options, self.fitter_provenance,
                                              prepared.original)
            except Exception as err:  # noqa: BLE001 -- recorded; no marker, so the next run retries it
                log.warning("writing %s failed: %s", job.relative, err)
                return dataclasses.replace(record, status="failed", stage="write",
                                           reason=failure_reason(err, job.source),
                                           write_s=time.perf_counter() - start)
        record = dataclasses.replace(record, write_s=time.perf_counter() - start)
        write_marker(self.output_dir, job, record, written.values())
        return record

    def failed(self, prepared: Prepared) -> ImageRecord:
        record = ImageRecord(prepared.job.relative, "failed", "perception", prepared.error,
                             preprocess_s=prepared.seconds)
        write_marker(self.output_dir, prepared.job, record, ())
        return record


def run_settings(fitter: Fitter, config: DirectoryConfig) -> dict:
    """What defines the fits in a folder: the fitter's provenance without dates and versions, preprocessing and
    the files written."""
    settings = {k: v for k, v in provenance(fitter).items() if k not in ("date", "flamejax", "jax")}
    if settings.get("flame"):  # the file's content, not where it lies
        settings["flame"] = {k: v for k, v in settings["flame"].items()
                             if k not in ("path", "landmark_embedding", "mediapipe_embedding")}
    preprocess_settings = {k: v for k, v in dataclasses.asdict(config.preprocess).items()
                           if k not in ("parsing_model", "matting_model")}
    return _plain(settings | {"preprocess": preprocess_settings, "outputs": dataclasses.asdict(config.outputs)})


def fit_directory(input_dir: str | Path, output_dir: str | Path, fitter: Fitter,
                  config: DirectoryConfig = DirectoryConfig()) -> DirectorySummary:
    """Fit every image below ``input_dir`` (this host's share of them) into ``output_dir``; see the module doc.

    Raises ``NotADirectoryError``/``ValueError`` for unusable folders, :class:`FolderBusyError` when another run
    writes the folder, :class:`SettingsMismatchError` when it holds fits made with other settings (unless
    ``config.refit``).
    """
    start = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_folders(input_dir, output_dir)
    info = process_info()
    all_jobs = discover_images(input_dir, config.recursive, exclude=output_dir)
    jobs = host_shard(all_jobs, info)
    output_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(output_dir, info.index):
        keep = check_settings(output_dir, run_settings(fitter, config), config.refit) if info.is_main else True
        photometric = fitter.photometric is not None
        names = [n for job in jobs for n in output_names(job.stem, config.outputs, photometric)]
        remove_stale_files(output_dir, names + [marker_path(output_dir, job).relative_to(output_dir).as_posix()
                                                for job in jobs] + [f"{TARGETS_DIR}/{job.stem}.npz" for job in jobs],
                           [job.stem for job in jobs])
        done = {job.relative: r for job in jobs if keep and (r := completed_record(output_dir, job, config.verify))}
        jsonl = output_dir / ("summary.jsonl" if info.count == 1 else f"summary-p{info.index}.jsonl")
        log_unlogged(jsonl, output_dir, jobs, done)
        failed_before = sum(r.status == "failed" for r in done.values())
        if config.retry_failed:
            done = {k: r for k, r in done.items() if r.status != "failed"}
            failed_before = 0
        todo = [job for job in jobs if job.relative not in done]
        pending = todo[config.max_images:] if config.max_images is not None else []
        todo = todo[:config.max_images] if config.max_images is not None else todo
        writer = OutputWriter(output_dir, fitter, config.outputs, provenance(fitter))
        records = _run(todo, config, fitter, writer, jsonl, output_dir)
    wait_for_all_processes("flamejax fit-dir: all processes finished")
    csv_path = None
    if info.is_main:
        csv_path = write_csv(output_dir / "summary.csv", _final_records(output_dir, all_jobs, records))
    return DirectorySummary(tuple(records), len(done), failed_before, len(pending), len(jobs),
                            time.perf_counter() - start, fitter.batch_size, fitter.mesh.size, csv_path, jsonl)


def _run(todo: list[ImageJob], config: DirectoryConfig, fitter: Fitter, writer: OutputWriter,
         jsonl: Path, output_dir: Path) -> list[ImageRecord]:
    """Preprocess ahead on one pool, fit on the main thread, write on another pool; commit batch by batch."""
    from tqdm import tqdm

    records: list[ImageRecord] = []
    counts: collections.Counter[str] = collections.Counter()
    summary_log = AppendLog(jsonl)

    def commit(failed: list[Prepared], writes: list[Future]) -> None:
        batch = [writer.failed(p) for p in failed] + [w.result() for w in writes]
        summary_log.append(r.row() for r in batch)
        records.extend(batch)
        counts.update(r.status for r in batch)
        bar.update(len(batch))
        bar.set_postfix(ok=counts["ok"], suspect=counts["suspect"], failed=counts["failed"])

    with (perception_pool(config, output_dir) as (pre_pool, work),
          ThreadPoolExecutor(config.workers, "flamejax-write") as write_pool,
          tqdm(total=len(todo), unit="img", desc="fit-dir", disable=not config.progress, smoothing=0.1) as bar):
        window = max(config.prefetch_batches * fitter.batch_size, perception_processes(config))
        stream = prefetched(pre_pool, todo, work, window, failed=unprepared)
        previous: tuple[list[Prepared], list[Future]] | None = None
        try:
            for ready, failed in batches(stream, fitter.batch_size):
                fits = fitter.fit_batch([p.item for p in ready], [p.job.relative for p in ready]) if ready else []
                if previous is not None:  # the previous batch's writes overlapped this fit
                    committing, previous = previous, None
                    commit(*committing)
                previous = failed, [write_pool.submit(writer, p, f) for p, f in zip(ready, fits)]
            if previous is not None:
                committing, previous = previous, None
                commit(*committing)
        except BaseException:  # Ctrl-C or a device error: drop queued preprocessing, finish and keep the writes
            pre_pool.shutdown(wait=False, cancel_futures=True)
            if previous is not None:
                try:
                    commit(*previous)
                except BaseException:  # noqa: BLE001 -- the original error is what the user must see
                    log.debug("committing the last batch failed", exc_info=True)
            raise
        finally:
            summary_log.close()
    return records


def _final_records(output_dir: Path, jobs: Sequence[ImageJob], records: Sequence[ImageRecord]
                   ) -> list[ImageRecord]:
    """Every image's latest record: this run's, else its marker's, else pending."""
    latest = {r.image: r for r in records}
    return [latest.get(job.relative) or completed_record(output_dir, job, "size")
            or ImageRecord(job.relative, "pending") for job in jobs]
