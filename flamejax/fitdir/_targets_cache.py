"""Each image's fitting targets (its :class:`~flamejax.perception.Preprocessed`) kept under the output folder,
so that a rerun with other fit settings (``--refit``) skips perception.

``.fitdir/targets/<stem>.npz`` holds the targets' arrays and a ``key``: the source file's size and mtime, and
a hash of the preprocessing (the :class:`~flamejax.perception.PreprocessConfig` numbers and the sha256 of the
parsing/matting model files it uses). An entry is used only when its key is the one the image and settings
give now; a changed photograph, changed settings or an entry that cannot be read is recomputed and rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from flamejax.files import find_file, sha256
from flamejax.fitdir._jobs import ImageJob
from flamejax.fitdir._ledger import STATE_DIR, _source_identity
from flamejax.io import write_npz
from flamejax.onnx_session import OnnxModel
from flamejax.perception import PreprocessConfig, Preprocessed
from flamejax.perception._matting import MATTING_CONTRACT
from flamejax.perception._parsing import PARSING_CONTRACT

log = logging.getLogger("flamejax")

TARGETS_DIR = f"{STATE_DIR}/targets"
CACHE_FORMAT = 6
"""Bumped whenever what an entry holds, or how preprocessing computes it, changes."""

_SCALARS = {"confidence": float, "num_faces": int, "face_index": int, "redetected": bool, "lost_on_crop": bool,
            "searched": bool, "quarter_turns": int, "mask_source": str, "source": str}
_TUPLES = {"original_size": int, "notes": str}
_OPTIONAL = ("parsing", "alpha", "mirrored478", "annotated68", "person")


def targets_arrays(item: Preprocessed) -> dict[str, np.ndarray]:
    """The fields of ``item`` as numpy arrays that load without pickle (absent optional fields left out)."""
    arrays = {}
    for field in dataclasses.fields(Preprocessed):
        value = getattr(item, field.name)
        if value is None:
            continue
        if field.name in _TUPLES:
            value = np.array(value, dtype=np.int64 if _TUPLES[field.name] is int else np.str_)
        arrays[field.name] = np.asarray(value)
    return arrays


def targets_from_arrays(arrays: Mapping[str, np.ndarray]) -> Preprocessed:
    """Inverse of :func:`targets_arrays`; ``KeyError`` when a field is missing."""
    values = {}
    for field in dataclasses.fields(Preprocessed):
        name = field.name
        if name in _OPTIONAL and name not in arrays:
            values[name] = None
        elif name in _SCALARS:
            values[name] = _SCALARS[name](arrays[name].item())
        elif name in _TUPLES:
            values[name] = tuple(_TUPLES[name](v) for v in arrays[name].tolist())
        else:
            values[name] = np.array(arrays[name])
    return Preprocessed(**values)


def preprocessing_identity(config: PreprocessConfig) -> str:
    """sha256 of what decides preprocessing's output: the config's numbers and the model files it runs."""
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if f.name not in ("parsing_model", "matting_model")}
    models = {
        "parsing": _model_sha256(PARSING_CONTRACT.key, config.parsing_model) if config.use_parsing else None,
        "matting": _model_sha256(MATTING_CONTRACT.key, config.matting_model)
        if config.use_matting or config.matting_model is not None else None,
    }
    text = json.dumps({"format": CACHE_FORMAT, "settings": settings, "models": models}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _model_sha256(key: str, source) -> str | None:
    path = source.path if isinstance(source, OnnxModel) else find_file(key, source, required=source is not None)
    return None if path is None else sha256(path)


@dataclasses.dataclass(frozen=True)
class TargetsCache:
    """Where an output folder keeps its images' targets, for one preprocessing (picklable: worker processes
    read and write entries themselves)."""

    output_dir: Path
    preprocessing: str
    """:func:`preprocessing_identity` of the run's config."""

    @classmethod
    def create(cls, output_dir: str | Path, config: PreprocessConfig) -> TargetsCache:
        return cls(Path(output_dir), preprocessing_identity(config))

    def path(self, job: ImageJob) -> Path:
        return self.output_dir / TARGETS_DIR / f"{job.stem}.npz"

    def key(self, job: ImageJob) -> str:
        """The entry key of the image as it is now (read before the image, so an edit during the run misses)."""
        return json.dumps({"source": _source_identity(job.source), "preprocessing": self.preprocessing},
                          sort_keys=True)

    def load(self, job: ImageJob, key: str) -> Preprocessed | None:
        """The cached targets, or None when absent, made from another file or settings, or unreadable."""
        path = self.path(job)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                if entry["key"].item() != key:
                    return None
                return targets_from_arrays({name: entry[name] for name in entry.files})
        except Exception as err:  # noqa: BLE001 -- a damaged entry is recomputed, whatever is wrong with it
            log.info("%s: unreadable targets cache entry (%s: %s); preprocessing again", path,
                     type(err).__name__, err)
            return None

    def store(self, job: ImageJob, key: str, item: Preprocessed) -> None:
        """Write the entry atomically; a failure is logged (the run goes on without it)."""
        try:
            write_npz(self.path(job), key=np.array(key), **targets_arrays(item))
        except OSError as err:
            log.warning("%s: could not write the targets cache entry (%s)", self.path(job), err)
