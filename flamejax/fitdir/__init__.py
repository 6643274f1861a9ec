"""Fit every photograph in a folder: streamed, batched over all local devices, failure-isolated, resumable.

    from flamejax.fitdir import DirectoryConfig, fit_directory
    summary = fit_directory("photos/", "fits/", Fitter.create(load_flame()), DirectoryConfig(recursive=True))

The parts: :mod:`~flamejax.fitdir._jobs` (which images, which output names), :mod:`~flamejax.fitdir._ledger`
(done-markers, summary log and table, settings, lock), :mod:`~flamejax.fitdir._runner` (the run: perception in
worker processes, fit on the main thread, writes in threads), :mod:`~flamejax.fitdir._targets_cache`.
Output folder (mirrors the input folder's subfolders)::

    sub/name.json, .npz, .obj, .glb, name_overlay.png   results of sub/name.jpg (one image's files as a unit)
    .fitdir/                                            done-markers, settings, locks (see the ledger)
    .fitdir/targets/name.npz                            the image's fitting targets, reused by a refit
    summary.jsonl, summary.csv                          one line per processed image; every image's latest record
"""

from flamejax.fitdir._jobs import IMAGE_SUFFIXES, ImageJob, UnusableFolderError, check_folders, discover_images
from flamejax.fitdir._ledger import (FolderBusyError, ImageRecord, SettingsMismatchError, completed_record,
                                     marker_path, read_jsonl)
from flamejax.fitdir._runner import (DirectoryConfig, DirectorySummary, default_workers, fit_directory,
                                     run_settings)

__all__ = [
    "IMAGE_SUFFIXES", "DirectoryConfig", "DirectorySummary", "FolderBusyError", "ImageJob", "ImageRecord",
    "SettingsMismatchError", "UnusableFolderError", "check_folders", "completed_record", "default_workers", "discover_images",
    "fit_directory", "marker_path", "read_jsonl", "run_settings",
]
