"""What a directory run has done, on disk: per-image done-markers, the summary log and table, the settings
that define the fits in the folder, and the lock that keeps two runs from writing the same folder.

    .fitdir/sub/name.json     done-marker: the summary record, the source's size and mtime, each output's size
                              and sha256; written last, atomically: the image's commit point
    .fitdir/settings.json     what defines the fits here (model file, component counts, configuration, ...)
    .fitdir/lock-p<i>         held (flock) while process <i> of a run writes here
    summary.jsonl             one line per image a run processed (summary-p<i>.jsonl on host i)
    summary.csv               every image's latest record, rebuilt at the end of a run
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from flamejax.files import sha256
from flamejax.fitdir._jobs import ImageJob
from flamejax.io import atomic_path, write_json

STATE_DIR = ".fitdir"
MARKER_FORMAT = 2
SUMMARY_FIELDS = ("image", "status", "stage", "reason", "nme_inner51", "rigid_loss", "landmark_loss",
                  "preprocess_s", "fit_s", "compile_s", "write_s", "seconds")


class FolderBusyError(RuntimeError):
    """Another run holds the output folder."""


class SettingsMismatchError(ValueError):
    """The output folder holds fits made with other settings."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image's line in the summary."""

    image: str
    status: str
    """``"ok"``, ``"suspect"`` (written, but implausible: see ``reason``), ``"failed"`` or ``"pending"``."""
    stage: str = ""
    """Where it failed: ``"perception"``, ``"fit"`` or ``"write"``."""
    reason: str = ""
    nme_inner51: float | None = None
    rigid_loss: float | None = None
    landmark_loss: float | None = None
    preprocess_s: float = 0.0
    fit_s: float = 0.0
    """This image's share of its batch's fitting time, compilation excluded."""
    compile_s: float = 0.0
    """This image's share of the compilation its batch triggered."""
    write_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.preprocess_s + self.fit_s + self.compile_s + self.write_s

    def row(self) -> dict:
        return dataclasses.asdict(self) | {"seconds": self.seconds}

    @staticmethod
    def from_row(row: dict) -> ImageRecord:
        fields = {f.name for f in dataclasses.fields(ImageRecord)}
        return ImageRecord(**{k: v for k, v in row.items() if k in fields})


# ---------------------------------------------------------------------------------------------- summary files


def read_jsonl(path: str | Path) -> list[dict]:
    """The summary log's lines; a last line torn by a kill is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class AppendLog:
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


def log_unlogged(log_path: Path, output_dir: Path, jobs: Sequence[ImageJob], done: dict[str, ImageRecord]) -> int:
    """Append the done images missing from the summary log (a run killed between an image's marker and its log
    line); returns how many were added."""
    logged = {row.get("image") for row in read_jsonl(log_path)}
    missing = [done[job.relative] for job in jobs if job.relative in done and job.relative not in logged]
    if missing:
        log = AppendLog(log_path)
        try:
            log.append(r.row() for r in missing)
        finally:
            log.close()
    return len(missing)


# ---------------------------------------------------------------------------------------------- the folder


def remove_stale_files(output_dir: Path, names: Iterable[str], stems: Iterable[str]) -> int:
    """Temporaries (``.<name>.*.tmp``) and staging folders (``.<stem>.*.staging``) a killed run left behind
    for these output names and image stems (paths below ``output_dir``); returns how many were removed."""
    import glob
    import shutil

    removed = 0
    patterns = [(output_dir / n, ".tmp") for n in names] + [(output_dir / s, ".staging") for s in stems]
    for path, ending in patterns:
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*{ending}"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed += 1
    return removed


def check_settings(output_dir: Path, settings: dict, refit: bool) -> bool:
    """Compare the run's settings with those the folder's fits were made with; record them when new.

    Returns whether existing fits may be kept. A mismatch is refused (:class:`SettingsMismatchError`) unless
    ``refit``, which refits every image with the new settings.
    """
    path = output_dir / STATE_DIR / "settings.json"
    recorded = None
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
    if recorded is not None and recorded != settings:
        if not refit:
            old, new = _flat(recorded), _flat(settings)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise SettingsMismatchError(
                f"{output_dir}: holds fits made with other settings ({', '.join(changed[:6])} differ); rerun with "
                "--refit to fit every image again with the new settings, or choose another output folder")
    if recorded != settings:
        write_json(path, settings)
    return recorded is None or recorded == settings


def _flat(tree, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: names the setting that differs, however deep."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


class FolderLock:
    """An exclusive ``flock`` on ``.fitdir/lock-p<index>``, released when the process ends, however it ends."""

    def __init__(self, output_dir: Path, process_index: int = 0):
        self.path = output_dir / STATE_DIR / f"lock-p{process_index}"
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderBusyError(f"{self.path.parent.parent}: another fit-dir run (pid {holder}) is writing "
                                  "here; wait for it to finish, or use another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
