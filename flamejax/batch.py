"""Fit every photograph in a folder: streamed, batched over all local devices, failure-isolated, resumable.

    flamejax fit-dir photos/ -o fits/ [--recursive] [--batch-size 64] [--workers 4] [--retry-failed]

How a run flows: the sorted image list (this host's share of it, see :mod:`flamejax.distributed`) minus the
images already done -> a pool of worker threads preprocesses a bounded window ahead -> the main thread fits
fixed-size batches (padded, so one compilation serves the whole run) sharded over the device mesh -> a second
pool writes each image's outputs while the next batch fits -> the batch is committed: each image's done-marker
(written last, atomically) and one block of lines appended to the summary log.

Output folder (mirrors the input folder's subfolders)::

    sub/name.json, .npz, .obj, .glb, name_overlay.png   results of sub/name.jpg (each file written atomically)
    .fitdir/sub/name.json                               done-marker: the summary record, the source's size and
                                                        mtime, every output's size and sha256
    summary.jsonl (summary-p<i>.jsonl on host i)        one line per image a run processed, appended per batch
    summary.csv                                         every image's latest record, rebuilt at the end of a run

An image is done when its marker parses, the source has the marker's size and mtime, and every output it lists
exists with its recorded size (``verify="checksum"``: and sha256). Done images are skipped; failed ones too,
unless ``retry_failed``. A run killed at any point resumes where it stopped: outputs without a marker are
fitted again (overwriting them), and no image with a marker is fitted twice.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import functools
import glob
import itertools
import json
import logging
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from flamejax import pipeline
from flamejax.distributed import (host_shard, initialize_distributed, local_mesh, process_info,
                                  replicate, round_batch_size, shard_batch, wait_for_all_processes)
from flamejax.files import sha256
from flamejax.fit import FitConfig, PhotometricConfig, landmark_model
from flamejax.flame import FlameModel
from flamejax.io import atomic_path, write_json
from flamejax.perception import PreprocessConfig, load_image, preprocess

log = logging.getLogger("flamejax")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
FIND = object()
"""Default of optional inputs that are looked up in the weights folders (``None`` means: there is none)."""
STATE_DIR = ".fitdir"
"""Done-markers, below the output folder."""
MARKER_FORMAT = 1
SUMMARY_FIELDS = ("image", "status", "stage", "reason", "nme_inner51", "rigid_loss", "landmark_loss",
                  "preprocess_s", "fit_s", "write_s", "seconds")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class DirectoryConfig:
    """Everything a directory run needs besides the folders (defaults: reference fit, all local devices)."""

    fit: FitConfig = FitConfig()
    init: str = "auto"
    """Start of the fit: ``"linear"``, ``"deca+mica"``, ``"deca"``, ``"mica"`` or ``"auto"`` (see
    :func:`flamejax.init.resolve_init_method`)."""
    photometric: PhotometricConfig | None = None
    """Photometric mode after the landmark fit when given (needs the UV template; albedo model optional)."""
    preprocess: PreprocessConfig = PreprocessConfig()
    flame_path: Path | None = None
    """FLAME pickle; ``None``: found as :func:`flamejax.files.find_file` does."""
    n_shape: int = 100
    n_expression: int = 50
    batch_size: int = 64
    """Images per fitted batch on this host, rounded up to a multiple of the device count."""
    devices: int | None = None
    """Local devices to shard each batch over; ``None``: all."""
    recursive: bool = False
    workers: int = dataclasses.field(default_factory=default_workers)
    """Threads preprocessing ahead of the fit, and threads writing outputs."""
    prefetch_batches: int = 2
    """How many batches of images are preprocessed ahead of the fit (bounds memory)."""
    mesh_formats: tuple[str, ...] = ("obj", "glb")
    overlay: bool = True
    retry_failed: bool = False
    verify: str = "size"
    """How a done image's outputs are checked on resume: ``"size"`` or ``"checksum"`` (sha256, reads them)."""
    max_images: int | None = None
    """Process at most this many not-yet-done images on this host (the rest stay pending)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.verify not in ("size", "checksum"):
            raise ValueError(f"verify must be 'size' or 'checksum', got {self.verify!r}")
        if self.workers < 1 or self.prefetch_batches < 1:
            raise ValueError("workers and prefetch_batches must be at least 1")


# ---------------------------------------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class ImageJob:
    source: Path
    relative: str
    """Path below the input folder, POSIX style: the image's name in summaries."""
    stem: str
    """Output path below the output folder without suffix; unique within the run."""


def discover_images(input_dir: str | Path, recursive: bool = False,
                    exclude: str | Path | None = None) -> list[ImageJob]:
    """Images below ``input_dir`` in sorted order; hidden files and folders and ``exclude`` are left out.

    Outputs mirror the relative path; when two images differ only by extension (``a.jpg``, ``a.png``) both
    keep it in their output name (``a_jpg``, ``a_png``).
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    excluded = Path(exclude).resolve() if exclude is not None else None
    candidates = root.rglob("*") if recursive else root.iterdir()
    relatives = sorted(p.relative_to(root).as_posix() for p in candidates
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not _hidden(p.relative_to(root))
                       and not (excluded is not None and p.resolve().is_relative_to(excluded)))
    plain = [str(Path(r).with_suffix("")) for r in relatives]
    clashing = {s for s, n in collections.Counter(plain).items() if n > 1}
    stems = [s if s not in clashing else f"{s}_{Path(r).suffix[1:]}" for s, r in zip(plain, relatives)]
    if len(set(stems)) != len(stems):
        twice = sorted(s for s, n in collections.Counter(stems).items() if n > 1)
        raise ValueError(f"images would share output names {twice[:5]}; rename them")
    return [ImageJob(root / r, r, s) for r, s in zip(relatives, stems)]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


# ---------------------------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image's line in the summary."""

    image: str
    status: str
    """``"ok"``, ``"failed"``, or ``"pending"`` (not processed yet)."""
    stage: str = ""
    """Where it failed: ``"perception"``, ``"fit"`` or ``"write"``."""
    reason: str = ""
    nme_inner51: float | None = None
    rigid_loss: float | None = None
    landmark_loss: float | None = None
    preprocess_s: float = 0.0
    fit_s: float = 0.0
    """This image's share of its batch's fitting time (the first batch includes compilation)."""
    write_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.preprocess_s + self.fit_s + self.write_s

    def row(self) -> dict:
        return dataclasses.asdict(self) | {"seconds": self.seconds}

    @staticmethod
    def from_row(row: dict) -> ImageRecord:
        fields = {f.name for f in dataclasses.fields(ImageRecord)}
        return ImageRecord(**{k: v for k, v in row.items() if k in fields})


def read_jsonl(path: str | Path) -> list[dict]:
    """The summary log's lines; a last line torn by a kill is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class _AppendLog:
    """An append-only JSON-lines file; each batch is one ``write`` so a kill tears at most the last line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        size = os.fstat(self.fd).st_size
        self.needs_newline = size > 0 and os.pread(self.fd, 1, size - 1) != b"\n"

    def append(self, rows: Iterable[dict]) -> None:
        data = ("\n" if self.needs_newline else "") + "".join(json.dumps(r) + "\n" for r in rows)
        self.needs_newline = False
        view = memoryview(data.encode())
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)


def write_csv(path: Path, records: Sequence[ImageRecord]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(r.row() for r in records)
    return path


# ---------------------------------------------------------------------------------------------- done-markers


def marker_path(output_dir: Path, job: ImageJob) -> Path:
    return output_dir / STATE_DIR / f"{job.stem}.json"


def _source_identity(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_marker(output_dir: Path, job: ImageJob, record: ImageRecord, outputs: Iterable[Path]) -> Path:
    """The image's commit point: written after all its outputs, atomically."""
    entries = [{"file": p.relative_to(output_dir).as_posix(), "size": p.stat().st_size, "sha256": sha256(p)}
               for p in outputs]
    return write_json(marker_path(output_dir, job), {
        "format": MARKER_FORMAT, "image": job.relative, "source": _source_identity(job.source),
        "record": record.row(), "outputs": entries})


def completed_record(output_dir: Path, job: ImageJob, verify: str = "size") -> ImageRecord | None:
    """The record of a done image whose marker and outputs verify, else None (the image must be processed)."""
    try:
        marker = json.loads(marker_path(output_dir, job).read_text())
        if marker.get("format") != MARKER_FORMAT or marker["source"] != _source_identity(job.source):
            return None
        for entry in marker["outputs"]:
            path = output_dir / entry["file"]
            if path.stat().st_size != entry["size"] or (verify == "checksum" and sha256(path) != entry["sha256"]):
                return None
        return ImageRecord.from_row(marker["record"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _output_names(stem: str, mesh_formats: Sequence[str], overlay: bool) -> list[str]:
    name = Path(stem).name
    return [f"{name}.{suffix}" for suffix in ("json", "npz", *mesh_formats)] + ([f"{name}_overlay.png"] * overlay)


def _remove_stale_temporaries(output_dir: Path, job: ImageJob, names: Sequence[str]) -> None:
    """Temporary files a killed run left beside this image's outputs (each image belongs to one process)."""
    folders = [(output_dir / job.stem).parent, marker_path(output_dir, job).parent]
    for folder, name in itertools.product(folders, [*names, Path(job.stem).name + ".json"]):
        for stale in folder.glob(f".{glob.escape(name)}.*.tmp"):
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- stages


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


def prepare(job: ImageJob, config: PreprocessConfig, keep_original: bool) -> Prepared:
    """Load and preprocess one image; any failure becomes a reason, never an exception."""
    start = time.perf_counter()
    try:
        original = load_image(job.source)
        item = preprocess(original, config)
    except Exception as err:  # noqa: BLE001 -- one bad image must not end a run over thousands
        log.debug("preprocessing %s failed", job.relative, exc_info=True)
        return Prepared(job, None, None, _reason(err, job), time.perf_counter() - start)
    return Prepared(job, item, original if keep_original else None, "", time.perf_counter() - start)


def _reason(err: Exception, job: ImageJob) -> str:
    message = str(err)
    for prefix in (f"{job.source}: ", "<array>: "):
        message = message.removeprefix(prefix)
    return f"{type(err).__name__}: {message}"


def prefetched(pool: ThreadPoolExecutor, items: Iterable, fn: Callable, window: int) -> Iterator:
    """``fn(item)`` for each item, computed on ``pool`` at most ``window`` items ahead, yielded in order."""
    items = iter(items)
    queue: collections.deque[Future] = collections.deque(pool.submit(fn, x) for x in itertools.islice(items, window))
    end = object()
    while queue:
        result = queue.popleft().result()
        following = next(items, end)
        if following is not end:
            queue.append(pool.submit(fn, following))
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


class BatchFitter:
    """Fits lists of preprocessed images as fixed-size padded batches sharded over a device mesh.

    Per batch, as :func:`pipeline.fit_preprocessed`: the network start (if any), the landmark fit, the
    photometric fit (if configured), the posed meshes; every batch-shaped input is split over the devices.
    """

    def __init__(self, model: FlameModel, config: FitConfig, batch_size: int, devices: int | None = None, *,
                 init_method: str = "linear", networks: tuple = (None, None),
                 photometric: PhotometricConfig | None = None, uv_layout=None, albedo=None):
        self.mesh = local_mesh(devices)
        self.batch_size = round_batch_size(batch_size, self.mesh)
        self.config = config
        self.init_method = init_method
        self.deca, self.mica = networks
        self.photometric, self.uv_layout, self.albedo = photometric, uv_layout, albedo
        # One device: plain arrays on the default device, i.e. exactly the unsharded program.
        sharded = self.mesh.size > 1
        self._place_batch = functools.partial(shard_batch, mesh=self.mesh) if sharded else pipeline.unchanged
        place_model = functools.partial(replicate, mesh=self.mesh) if sharded else pipeline.unchanged
        self.fit_model = place_model(landmark_model(model))
        self.model = place_model(model)

    def __call__(self, items: Sequence, names: Sequence[str]) -> list[pipeline.ImageFit]:
        return pipeline.fit_batch(
            self.model, list(items), list(names), self.config, self.batch_size, init_method=self.init_method,
            deca=self.deca, mica=self.mica, photometric=self.photometric, uv_layout=self.uv_layout,
            albedo=self.albedo, place_batch=self._place_batch, fit_model=self.fit_model)


@dataclasses.dataclass(frozen=True, eq=False)
class OutputWriter:
    """Writes one image's outputs, then its done-marker; returns its summary record."""

    output_dir: Path
    model: FlameModel
    uv_layout: object | None
    mesh_formats: tuple[str, ...]
    overlay: bool

    def __call__(self, prepared: Prepared, fit: pipeline.ImageFit) -> ImageRecord:
        start = time.perf_counter()
        job = prepared.job
        _remove_stale_temporaries(self.output_dir, job, _output_names(job.stem, self.mesh_formats, self.overlay))
        record = ImageRecord(job.relative, "ok" if fit.ok else "failed", "" if fit.ok else "fit",
                             "" if fit.ok else fit.status, float(fit.result.nme), float(fit.result.rigid_final_loss),
                             float(fit.result.landmark_final_loss), prepared.seconds, fit.seconds)
        written: dict[str, Path] = {}
        if fit.ok:
            try:
                written = pipeline.write_outputs((self.output_dir / job.stem).parent, fit, prepared.item, self.model,
                                                 self.uv_layout, self.mesh_formats, self.overlay, prepared.original,
                                                 stem=Path(job.stem).name)
            except Exception as err:  # noqa: BLE001 -- recorded; no marker, so the next run retries it
                log.warning("writing %s failed: %s", job.relative, err)
                return dataclasses.replace(record, status="failed", stage="write", reason=_reason(err, job),
                                           write_s=time.perf_counter() - start)
        record = dataclasses.replace(record, write_s=time.perf_counter() - start)
        write_marker(self.output_dir, job, record, written.values())
        return record

    def failed(self, prepared: Prepared) -> ImageRecord:
        record = ImageRecord(prepared.job.relative, "failed", "perception", prepared.error,
                             preprocess_s=prepared.seconds)
        write_marker(self.output_dir, prepared.job, record, ())
        return record


# ---------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class DirectorySummary:
    """What one run did on this host."""

    records: tuple[ImageRecord, ...]
    """Images processed by this run, in commit order."""
    skipped: int
    """Images already done (verified) before this run."""
    pending: int
    """Images left for a later run (``max_images``)."""
    seconds: float
    batch_size: int
    devices: int
    summary_csv: Path | None
    """Written by process 0 only."""
    summary_jsonl: Path

    @property
    def fitted(self) -> int:
        return sum(r.status == "ok" for r in self.records)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.records)

    @property
    def images_per_second(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else 0.0

    def report(self) -> str:
        return (f"fitted {self.fitted}, failed {self.failed}, skipped {self.skipped} (done before), "
                f"pending {self.pending}; {len(self.records)} images in {self.seconds:.1f} s "
                f"({self.images_per_second:.2f} images/s, batch {self.batch_size} on {self.devices} device(s))")


def fit_directory(input_dir: str | Path, output_dir: str | Path, config: DirectoryConfig = DirectoryConfig(), *,
                  model: FlameModel | None = None, uv_layout=FIND, albedo=FIND) -> DirectorySummary:
    """Fit every image below ``input_dir`` (this host's share of them) into ``output_dir``; see the module doc.

    ``model`` defaults to ``load_flame(config.flame_path, n_shape=config.n_shape, ...)``. ``uv_layout`` and
    ``albedo`` (photometric mode) are looked up in the weights folders unless given (``None``: there is none).
    """
    start = time.perf_counter()
    output_dir = Path(output_dir)
    info = process_info()
    all_jobs = discover_images(input_dir, config.recursive, exclude=output_dir)
    jobs = host_shard(all_jobs, info)
    todo = [job for job in jobs if not _is_done(output_dir, job, config)]
    skipped = len(jobs) - len(todo)
    pending = todo[config.max_images:] if config.max_images is not None else []
    todo = todo[:config.max_images]
    model = model if model is not None else _load_model(config)
    uv_layout = _find_uv_layout(config) if uv_layout is FIND else uv_layout
    fitter = _fitter(model, config, uv_layout, albedo)
    writer = OutputWriter(output_dir, model, uv_layout, tuple(config.mesh_formats), config.overlay)
    jsonl = output_dir / ("summary.jsonl" if info.count == 1 else f"summary-p{info.index}.jsonl")
    records = _run(todo, config, fitter, writer, jsonl)
    wait_for_all_processes("flamejax fit-dir: all processes finished")
    csv_path = None
    if info.is_main:
        csv_path = write_csv(output_dir / "summary.csv", _final_records(output_dir, all_jobs, records))
    return DirectorySummary(tuple(records), skipped, len(pending), time.perf_counter() - start, fitter.batch_size,
                            fitter.mesh.size, csv_path, jsonl)


def _is_done(output_dir: Path, job: ImageJob, config: DirectoryConfig) -> bool:
    record = completed_record(output_dir, job, config.verify)
    return record is not None and not (config.retry_failed and record.status == "failed")


def _run(todo: list[ImageJob], config: DirectoryConfig, fitter: BatchFitter, writer: OutputWriter,
         jsonl: Path) -> list[ImageRecord]:
    """Preprocess ahead on one pool, fit on the main thread, write on another pool; commit batch by batch."""
    from tqdm import tqdm

    records: list[ImageRecord] = []
    counts: collections.Counter[str] = collections.Counter()
    summary_log = _AppendLog(jsonl)

    def commit(failed: list[Prepared], writes: list[Future]) -> None:
        batch = [writer.failed(p) for p in failed] + [w.result() for w in writes]
        summary_log.append(r.row() for r in batch)
        records.extend(batch)
        counts.update(r.status for r in batch)
        bar.update(len(batch))
        bar.set_postfix(ok=counts["ok"], failed=counts["failed"])

    with (ThreadPoolExecutor(config.workers, "flamejax-preprocess") as pre_pool,
          ThreadPoolExecutor(config.workers, "flamejax-write") as write_pool,
          tqdm(total=len(todo), unit="img", desc="fit-dir", disable=not config.progress, smoothing=0.1) as bar):
        stream = prefetched(pre_pool, todo, lambda job: prepare(job, config.preprocess, config.overlay),
                            config.prefetch_batches * fitter.batch_size)
        previous: tuple[list[Prepared], list[Future]] | None = None
        try:
            for ready, failed in batches(stream, fitter.batch_size):
                fits = fitter([p.item for p in ready], [p.job.relative for p in ready]) if ready else []
                if previous is not None:  # the previous batch's writes overlapped this fit
                    commit(*previous)
                previous = failed, [write_pool.submit(writer, p, f) for p, f in zip(ready, fits)]
            if previous is not None:
                commit(*previous)
        except BaseException:  # Ctrl-C or a device error: drop the queued preprocessing, keep what is written
            pre_pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            summary_log.close()
    return records


def _final_records(output_dir: Path, jobs: list[ImageJob], records: list[ImageRecord]) -> list[ImageRecord]:
    """Every image's latest record: this run's, else its marker's, else pending."""
    latest = {r.image: r for r in records}
    return [latest.get(job.relative) or completed_record(output_dir, job, "size")
            or ImageRecord(job.relative, "pending") for job in jobs]


def _load_model(config: DirectoryConfig) -> FlameModel:
    from flamejax.flame import load_flame

    return load_flame(config.flame_path, n_shape=config.n_shape, n_expression=config.n_expression)


def _find_uv_layout(config: DirectoryConfig):
    if not config.mesh_formats and config.photometric is None:
        return None
    from flamejax.cli import uv_layout_if_present

    return uv_layout_if_present()


def _fitter(model: FlameModel, config: DirectoryConfig, uv_layout, albedo) -> BatchFitter:
    """The batch fitter with the networks (loaded once) and the photometric inputs the config asks for."""
    from flamejax.init import DecaEncoder, MicaEncoder, resolve_init_method

    method = resolve_init_method(config.init)
    networks = (DecaEncoder.load(required=True) if "deca" in method else None,
                MicaEncoder.load(required=True) if "mica" in method else None)
    if config.photometric is None:
        albedo = None
    else:
        if uv_layout is None:
            from flamejax.files import MissingFileError

            raise MissingFileError("photometric mode needs the FLAME UV template (head_template_mesh.obj); "
                                   "see weights/README.md")
        if albedo is FIND:
            from flamejax.render import load_albedo_model

            albedo = load_albedo_model()
    return BatchFitter(model, config.fit, config.batch_size, config.devices, init_method=method, networks=networks,
                       photometric=config.photometric, uv_layout=uv_layout, albedo=albedo)


# ---------------------------------------------------------------------------------------------- command line


def add_fit_dir_command(subparsers) -> argparse.ArgumentParser:
    """Add ``fit-dir`` to the ``flamejax`` command's subparsers."""
    from flamejax.cli import add_fit_args

    p = subparsers.add_parser("fit-dir", help="fit every photograph in a folder (batched, resumable)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input_dir", type=Path, help="folder of images (jpg, jpeg, png, webp, bmp, tif, tiff)")
    add_fit_args(p)
    p.set_defaults(batch_size=DirectoryConfig.batch_size, func=cmd_fit_dir)
    p.add_argument("-r", "--recursive", action="store_true", help="also fit images in subfolders")
    p.add_argument("--workers", type=int, default=default_workers(), help="preprocessing and writing threads")
    p.add_argument("--prefetch", type=int, default=DirectoryConfig.prefetch_batches,
                   help="batches preprocessed ahead of the fit")
    p.add_argument("--retry-failed", action="store_true", help="fit images that failed in an earlier run again")
    p.add_argument("--verify", choices=("size", "checksum"), default="size",
                   help="how earlier results are checked before an image is skipped")
    p.add_argument("--max-images", type=int, default=None, help="stop after this many images (per process)")
    p.add_argument("--devices", type=int, default=None, help="local devices to shard batches over (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    hosts = p.add_argument_group("several processes (hosts); see flamejax.distributed")
    hosts.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    hosts.add_argument("--num-processes", type=int, default=None, help="process count (or JAX_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int, default=None, help="this process's index (or JAX_PROCESS_ID)")
    hosts.add_argument("--cluster-auto", action="store_true",
                       help="let JAX detect a TPU pod slice, SLURM, Open MPI or Kubernetes job")
    return p


def config_from_args(args, photometric: PhotometricConfig | None = None) -> DirectoryConfig:
    """The run's configuration from ``fit-dir`` options (``photometric``: from ``photometric_from_args``)."""
    from flamejax.cli import fit_config_from_args

    return DirectoryConfig(
        fit=fit_config_from_args(args), init=args.init, photometric=photometric,
        preprocess=PreprocessConfig(face_index=args.face_index),
        flame_path=args.flame, n_shape=args.n_shape, n_expression=args.n_exp, batch_size=args.batch_size,
        devices=args.devices, recursive=args.recursive, workers=args.workers, prefetch_batches=args.prefetch,
        mesh_formats=tuple(f for f in args.mesh.split(",") if f and f != "none"), overlay=not args.no_overlay,
        retry_failed=args.retry_failed, verify=args.verify, max_images=args.max_images,
        progress=not args.no_progress)


def cmd_fit_dir(args) -> int:
    from flamejax.cli import photometric_from_args, uv_layout_if_present

    info = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                  cluster_auto=args.cluster_auto)
    uv_layout = uv_layout_if_present()
    photometric, albedo = photometric_from_args(args, uv_layout)
    summary = fit_directory(args.input_dir, args.output, config_from_args(args, photometric), uv_layout=uv_layout,
                            albedo=albedo)
    prefix = f"process {info.index}/{info.count}: " if info.count > 1 else ""
    print(prefix + summary.report())
    if summary.summary_csv is not None:
        print(f"summary: {summary.summary_csv}")
    return 0 if summary.failed == 0 else 2


def main(argv: list[str] | None = None) -> int:
    """``python -m flamejax.batch INPUT_DIR -o OUTDIR ...`` (the same as ``flamejax fit-dir``)."""
    from flamejax.cli import main as cli_main

    return cli_main(["fit-dir", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
