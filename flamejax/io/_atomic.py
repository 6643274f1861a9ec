"""Atomic file writes: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _process_umask() -> int:
    """The umask, read without changing it where Linux exposes it; otherwise set and restored once, here."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()
"""Mode of a newly written result file, as ``open`` would give it. Read once at import: ``os.umask`` changes
the process-wide mask, so calling it while a thread pool writes files races with their permissions."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> Path:
    def default(o):
        if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
            return np.asarray(o).tolist()
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, default=default))
    return Path(path)


def write_npz(path: str | Path, **arrays) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H,W,3|4) uint8 or [0,1]-float image; the format follows the suffix."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
        Image.fromarray(img).save(tmp, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return Path(path)
