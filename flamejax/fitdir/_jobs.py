"""What a directory run has to do: the images below the input folder, each with the stem its outputs take."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flamejax.outputs import unique_stems

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclasses.dataclass(frozen=True)
class ImageJob:
    source: Path
    relative: str
    """Path below the input folder, POSIX style: the image's name in summaries."""
    stem: str
    """Output path below the output folder, without suffix (mirrors ``relative``)."""


class UnusableFolderError(ValueError):
    """The input or output folder cannot serve the run."""


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Refuse folder pairs that would fit nothing or mix photographs with results."""
    if not input_dir.is_dir():
        raise NotADirectoryError(f"{input_dir}: not a folder (fit-dir takes a folder of images)")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir}: -o must be a folder, not a file")
    source, target = input_dir.resolve(), output_dir.resolve()
    if source == target or source.is_relative_to(target):
        raise UnusableFolderError(f"-o {output_dir}: the output folder must not be the input folder or hold it (results "
                         f"would be mixed with the photographs); choose a separate folder, e.g. {input_dir}_fits")


def discover_images(input_dir: str | Path, recursive: bool = False,
                    exclude: str | Path | None = None) -> list[ImageJob]:
    """Images below ``input_dir`` in sorted order; hidden files and folders and ``exclude`` are left out.

    Outputs mirror the relative path; images that differ only by extension keep it in their output name.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (fit-dir takes a folder of images)")
    excluded = Path(exclude).resolve() if exclude is not None else None
    candidates = root.rglob("*") if recursive else root.iterdir()
    relatives = sorted(p.relative_to(root).as_posix() for p in candidates
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not _hidden(p.relative_to(root))
                       and not (excluded is not None and p.resolve().is_relative_to(excluded)))
    stems = unique_stems(relatives, mirror_folders=True)
    return [ImageJob(root / r, r, s) for r, s in zip(relatives, stems)]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
