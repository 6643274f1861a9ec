"""Where flamejax finds the files users supply: the FLAME model, embeddings, ONNX weights.

One lookup order for every file named in the manifest (``weights/manifest.json``):

1. an explicit path given by the caller (a file, or a folder to search);
2. when the environment variable ``FLAMEJAX_WEIGHTS`` is set: only its folders (``os.pathsep``-separated).
   A folder there that does not exist, or that lacks a required file, is an error: a mistyped setting never
   falls back to another model;
3. otherwise the default folders: ``weights/`` of a source checkout, ``./weights``, the user folder
   :func:`user_weights_dir` (``$XDG_DATA_HOME/flamejax`` or ``~/.local/share/flamejax``), and
   ``../shared/flame`` beside the checkout or the current directory (development data).

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


def user_weights_dir(create: bool = False) -> Path:
    """The per-user weights folder: ``$XDG_DATA_HOME/flamejax``, else ``~/.local/share/flamejax``.

    Args:
      create: make the folder (and its parents) if absent; :class:`MissingFileError` when that is not possible.
    """
    folder = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser() / "flamejax"
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MissingFileError(f"cannot create the weights folder {folder} ({err.strerror or err}); "
                                   f"set {ENV_VAR} to a folder you can write") from err
    return folder


def _in_checkout() -> bool:
    return (_CHECKOUT_DIR / "pyproject.toml").is_file() and "site-packages" not in _PACKAGE_DIR.parts


def _unique_existing(dirs: list[Path]) -> list[Path]:
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def env_dirs() -> list[Path] | None:
    """The folders named by ``FLAMEJAX_WEIGHTS``, or ``None`` when it is unset or empty.

    Raises :class:`MissingFileError` naming the setting when one of them is not an existing folder.
    """
    named = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    if not named:
        return None
    for folder in named:
        if not folder.is_dir():
            raise MissingFileError(
                f"{ENV_VAR} names {folder}, which is not an existing folder; correct the setting (folders "
                f"separated by {os.pathsep!r}) or unset it to use the default folders")
    return _unique_existing(named)


def default_dirs() -> list[Path]:
    """The folders searched when ``FLAMEJAX_WEIGHTS`` is not set (existing ones only)."""
    dirs = [_CHECKOUT_DIR / "weights"] if _in_checkout() else []
    dirs += [Path.cwd() / "weights", user_weights_dir()]
    dirs += [_CHECKOUT_DIR.parent / "shared" / "flame"] if _in_checkout() else []
    dirs += [Path.cwd().parent / "shared" / "flame"]
    return _unique_existing(dirs)


def search_dirs() -> list[Path]:
    """Folders searched for user-supplied files, in order: ``FLAMEJAX_WEIGHTS``'s alone when set, else the defaults."""
    named = env_dirs()
    return default_dirs() if named is None else named


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


def _how_to_get(key: str, entry: dict[str, Any], searched: list[Path] | None) -> str:
    if os.environ.get(ENV_VAR, "").strip():
        where = f"a folder named by {ENV_VAR} (now {os.environ[ENV_VAR]})"
    else:
        where = (f"{user_weights_dir()} (create it with `python -c \"import flamejax.files as f; "
                 f"f.user_weights_dir(create=True)\"`) or a folder named by {ENV_VAR}")
    looked = "" if searched is None else (f"  Looked for {', '.join(entry['names'])} in: "
                                          f"{', '.join(str(d) for d in searched) or '(no search folder exists)'}.\n")
    return (
        f"{entry['purpose']}\n{looked}"
        f"  Get it from {entry['source']} (licence: {entry['licence']}) and put it in {where}."
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
            raise MissingFileError(f"{p}: no such file ({key}).\n  " + _how_to_get(key, entry, None))
        dirs = [p]
    else:
        dirs = search_dirs()
    for d in dirs:
        for name in entry["names"]:
            if (d / name).is_file():
                return _verify(d / name, entry)
    if required:
        raise MissingFileError(f"missing {key}: " + _how_to_get(key, entry, dirs))
    return None
