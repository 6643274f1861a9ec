"""Where flamejax finds the files users supply: the FLAME model, embeddings, ONNX weights.

One lookup order for every file named in the manifest (``weights/manifest.json``):

1. an explicit path given by the caller;
2. the folders in the environment variable ``FLAMEJAX_WEIGHTS`` (``os.pathsep``-separated);
3. the project's ``weights/`` folder (beside the package in a checkout) and ``./weights``;
4. ``../shared/flame`` beside the current directory or the checkout, when present (development data).

A file that cannot be found raises :class:`MissingFileError` saying what the file is, where to get it
and where to put it. A file whose checksum is known (in the manifest, or pinned by the user in a ``SHA256SUMS``
file beside it) and does not match raises :class:`CorruptFileError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "FLAMEJAX_WEIGHTS"
_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent


class MissingFileError(FileNotFoundError):
    """A file flamejax needs is absent; the message says what to download and where to put it."""


class CorruptFileError(ValueError):
    """A file exists but is not what it should be (checksum mismatch, wrong format or version)."""


@functools.cache
def manifest() -> dict[str, dict[str, Any]]:
    """The weights manifest: one entry per kind of file, with names, sha256, source and licence."""
    for candidate in (_PACKAGE_DIR / "weights_manifest.json", _CHECKOUT_DIR / "weights" / "manifest.json"):
        if candidate.is_file():
            entries = json.loads(candidate.read_text())
            return {k: v for k, v in entries.items() if not k.startswith("_")}
    raise MissingFileError("weights manifest not found; the flamejax installation is incomplete")


def search_dirs() -> list[Path]:
    """Folders searched for user-supplied files, in order."""
    dirs = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    dirs += [_CHECKOUT_DIR / "weights", Path.cwd() / "weights"]
    dirs += [_CHECKOUT_DIR.parent / "shared" / "flame", Path.cwd().parent / "shared" / "flame"]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected_sha256: str | None) -> None:
    """Raise :class:`CorruptFileError` when ``expected_sha256`` is given and the file differs."""
    if expected_sha256 is None:
        return
    actual = sha256(path)
    if actual.lower() != expected_sha256.lower():
        raise CorruptFileError(
            f"{path}: checksum mismatch (sha256 {actual}, expected {expected_sha256}); "
            "the file is corrupted or is not the published one. Download it again."
        )


def pinned_checksum(path: Path) -> str | None:
    """The sha256 a ``SHA256SUMS`` file beside ``path`` records for it (``sha256sum`` format), if any.

    Users pin the exact files they downloaded with ``sha256sum * > SHA256SUMS`` in their weights folder; a file
    that later differs (truncated copy, bit rot, a different release) is then refused by name.
    """
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0]
    return None


def _verify(path: Path, entry: dict[str, Any]) -> Path:
    verify_checksum(path, entry.get("sha256"))
    verify_checksum(path, pinned_checksum(path))
    return path


def _how_to_get(key: str, entry: dict[str, Any]) -> str:
    return (
        f"{entry['purpose']}\n  Looked for {', '.join(entry['names'])} in: "
        f"{', '.join(str(d) for d in search_dirs()) or '(no search folder exists)'}.\n"
        f"  Get it from {entry['source']} (licence: {entry['licence']}) and put it in "
        f"{_CHECKOUT_DIR / 'weights'} or in a folder named by ${ENV_VAR}."
    )


def find_file(key: str, path: str | Path | None = None, *, required: bool = True) -> Path | None:
    """Locate the file of manifest entry ``key``.

    Args:
      key: a manifest entry, e.g. ``"flame_model"``, ``"deca_encoder"``.
      path: an explicit file (or folder to search) that takes precedence over everything else.
      required: raise :class:`MissingFileError` when absent (else return ``None``).
    """
    entries = manifest()
    if key not in entries:
        raise KeyError(f"unknown weight file kind {key!r}; known: {sorted(entries)}")
    entry = entries[key]
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return _verify(p, entry)
        if not p.is_dir():
            raise MissingFileError(f"{p}: no such file ({key}).\n  " + _how_to_get(key, entry))
        dirs = [p]
    else:
        dirs = search_dirs()
    for d in dirs:
        for name in entry["names"]:
            if (d / name).is_file():
                return _verify(d / name, entry)
    if required:
        raise MissingFileError(f"missing {key}: " + _how_to_get(key, entry))
    return None
