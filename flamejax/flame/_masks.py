"""FLAME's vertex masks (``FLAME_masks.pkl``): named vertex-id sets such as ``face``, ``forehead``, ``nose``,
``left_eyeball``. The landmark fit reads the face region from them, the photometric loss its regions, the
benchmarks their error regions; this is the one reader, and it reads a file once per process."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from flamejax.files import find_file
from flamejax.flame._safe_pickle import safe_load_pickle


class VertexMasks(Mapping[str, np.ndarray]):
    """FLAME's vertex masks as read from :attr:`path`: each name to its vertex ids (int32, 1-D, read-only)."""

    def __init__(self, path: Path, masks: dict[str, np.ndarray]):
        self.path = path
        self._masks = masks

    def __getitem__(self, name: str) -> np.ndarray:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)


def load_vertex_masks(path: str | Path | None = None, *, required: bool = False) -> VertexMasks | None:
    """The :class:`VertexMasks` of the ``flame_masks`` file at ``path`` (or found in the weights folders). Entries
    that are not 1-D integer arrays are left out; a file that is not a dict of them gives no masks. ``None`` when
    there is no file and it is not ``required``.

    Raises:
      MissingFileError (``required`` or an explicit ``path`` that does not exist), CorruptFileError,
      UnsafePickleError (the file named).
    """
    found = find_file("flame_masks", path, required=required or path is not None)
    if found is None:
        return None
    stat = found.stat()
    return _read_masks(str(found.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_masks(path: str, mtime_ns: int, size: int) -> VertexMasks:
    del mtime_ns, size  # cache key only: a changed file is read again
    raw = safe_load_pickle(path)
    masks = {}
    for name, value in (raw.items() if isinstance(raw, dict) else ()):
        try:
            ids = np.asarray(value)
        except ValueError:  # ragged
            continue
        if isinstance(name, str) and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer):
            ids = ids.astype(np.int32)
            ids.flags.writeable = False
            masks[name] = ids
    return VertexMasks(Path(path), masks)
