"""Hand-annotated 68 points as a photograph's fitting targets: iBUG / 300-W ``.pts`` and AFLW2000-3D ``.mat``.

A ``.pts`` file is text: ``version: 1``, ``n_points: 68``, ``{``, one ``x y`` line per point, ``}``. An
AFLW2000-3D file is a MATLAB (v5) file whose ``pt3d_68`` holds the 68 points as rows x, y, z. Both count pixels
from 1 (the centre of the top-left pixel is ``(1, 1)``); flamejax puts pixel centres at half-integers, so a point
read is moved by -0.5.

The two datasets place the jaw line differently: 300-W's points 0-16 follow the face's visible outline, as the
fit's jaw contour does; AFLW2000-3D's are the projected 3D jaw, hidden behind the face at strong yaw. The fit has no
such contour, so an AFLW2000-3D file's jaw points are read as NaN (not fitted) and its 51 inner points are fitted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flamejax.flame._layout import CONTOUR_68, INNER_68

import numpy as np

from flamejax._typing import Float
from flamejax.perception._errors import PerceptionError
from flamejax.perception._preprocess import Preprocessed
from flamejax.perception._transform import transform_points

NUM_ANNOTATED = 68
MAX_PTS_BYTES = 64 * 1024
"""Far above any real 68-point file (about 1.5 kB); larger files are refused unread."""
MAX_MAT_BYTES = 64 * 1024
"""Far above any AFLW2000-3D file (about 3 kB); larger ones are refused unread (a compressed MATLAB variable
expands at most about a thousandfold, so this also bounds what reading one can allocate)."""
ANNOTATION_SUFFIXES = (".pts", ".mat")
"""Where :func:`annotation_beside` looks, in this order."""
MIN_BOX_OVERLAP = 0.3
"""Least intersection over union of the annotation's box and the detected face's 68-point box."""


class AnnotationError(PerceptionError):
    """An annotation file is missing, malformed, or does not belong to the face it was given for."""


def _annotation_file(path: str | Path, max_bytes: int, fix: str) -> Path:
    """``path`` if it is a file of at most ``max_bytes`` (checked before anything reads it), else one line naming
    it and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file ({fix})")
    if path.stat().st_size > max_bytes:
        raise AnnotationError(f"{path}: {path.stat().st_size} bytes is too large for a 68-point annotation ({fix})")
    return path


def read_pts(path: str | Path) -> Float[np.ndarray, "68 2"]:
    """The 68 points of an iBUG / 300-W ``.pts`` file, in flamejax's pixel convention (float32)."""
    fix = "give a text file in the iBUG .pts format: version: 1, n_points: 68, {, 68 lines 'x y', }"
    path = _annotation_file(path, MAX_PTS_BYTES, fix)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not readable as text ({err.__class__.__name__}; {fix})") from None
    header = {key.strip().lower(): value.strip() for key, _, value in
              (line.partition(":") for line in lines[:lines.index("{")] if ":" in line)} if "{" in lines else None
    if header is None or "}" not in lines or "n_points" not in header:
        raise AnnotationError(f"{path}: no 'n_points:' header with a '{{ ... }}' block ({fix})")
    if header["n_points"] != str(NUM_ANNOTATED):
        raise AnnotationError(f"{path}: n_points is {header['n_points']!r}, flamejax fits the 68-point "
                              f"iBUG layout ({fix})")
    body = lines[lines.index("{") + 1:lines.index("}")]
    try:
        points = np.array([[float(v) for v in line.split()] for line in body], np.float64)
    except ValueError:
        raise AnnotationError(f"{path}: a point line is not two numbers ({fix})") from None
    if points.shape != (NUM_ANNOTATED, 2):
        raise AnnotationError(f"{path}: {len(body)} point lines of {NUM_ANNOTATED} expected, or not two numbers "
                              f"each ({fix})")
    if not np.all(np.isfinite(points)):
        raise AnnotationError(f"{path}: a point is not a finite number ({fix})")
    return (points - 0.5).astype(np.float32)


def read_aflw_mat(path: str | Path) -> Float[np.ndarray, "68 2"]:
    """The 68 points of an AFLW2000-3D ``.mat`` file (``pt3d_68``), in flamejax's pixel convention (float32),
    with the jaw points 0-16 NaN (the projected 3D jaw, which the fit does not model; see the module docstring)."""
    from scipy.io import loadmat

    fix = "give an AFLW2000-3D .mat file (MATLAB v5) with a 3 x 68 variable pt3d_68"
    path = _annotation_file(path, MAX_MAT_BYTES, fix)
    try:
        content = loadmat(path, variable_names=["pt3d_68"])
    except NotImplementedError:  # scipy's answer to the HDF5-based v7.3 format
        raise AnnotationError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 ({fix})") from None
    except Exception as err:  # noqa: BLE001 -- a damaged or hostile file is one clear line, whatever scipy raises
        raise AnnotationError(f"{path}: not a readable MATLAB file ({err.__class__.__name__}; {fix})") from None
    points = content.get("pt3d_68")
    if points is None:
        raise AnnotationError(f"{path}: no variable pt3d_68 ({fix})")
    points = np.asarray(points)
    if not np.issubdtype(points.dtype, np.number) or points.ndim != 2 or NUM_ANNOTATED not in points.shape:
        raise AnnotationError(f"{path}: pt3d_68 is {points.dtype} {points.shape}, expected 68 numeric points ({fix})")
    points = (points if points.shape[0] == NUM_ANNOTATED else points.T)[:, :2].astype(np.float64)
    if points.shape != (NUM_ANNOTATED, 2) or not np.all(np.isfinite(points)):
        raise AnnotationError(f"{path}: pt3d_68 does not hold 68 finite (x, y) points ({fix})")
    points = (points - 0.5).astype(np.float32)
    points[CONTOUR_68] = np.nan
    return points


def read_annotation(path: str | Path) -> Float[np.ndarray, "68 2"]:
    """The 68 points of an annotation file by its suffix: ``.pts`` (:func:`read_pts`) or ``.mat``
    (:func:`read_aflw_mat`); NaN marks a point not to fit."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return read_aflw_mat(path)
    if path.suffix.lower() == ".pts":
        return read_pts(path)
    raise AnnotationError(f"{path}: unknown annotation format; give an iBUG .pts or an AFLW2000-3D .mat file")


def annotation_beside(image: str | Path) -> Path:
    """The annotation file of a photograph: its name with the first of :data:`ANNOTATION_SUFFIXES` that exists
    (``a.jpg`` -> ``a.pts``, else ``a.mat``)."""
    image = Path(image)
    candidates = [image.with_suffix(suffix) for suffix in ANNOTATION_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AnnotationError(f"{candidates[0]}: no such annotation file (nor {candidates[1].name}; give each "
                          f"photograph an iBUG .pts or AFLW2000-3D .mat file of the same name)")


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    return float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)  # noqa: E731
    union = area(a) + area(b) - width * height
    return width * height / union if union > 0 else 0.0


def annotated(item: Preprocessed, points68: Float[np.ndarray, "68 2"], source: str = "<array>") -> Preprocessed:
    """``item`` whose fit uses ``points68`` (pixels of the photograph, iBUG 68 order) as its 68-point targets;
    a NaN point is not fitted (the inner 51 must be given).

    The annotation must cover the face ``item`` was aligned on: its box must overlap the detected face's
    68-point box by :data:`MIN_BOX_OVERLAP` (a file for another photograph or another face is refused)."""
    points68 = np.asarray(points68, np.float32)
    if points68.shape != (NUM_ANNOTATED, 2) or not np.all(np.isfinite(points68[INNER_68])):
        raise AnnotationError(f"{source}: expected 68 (x, y) points with the inner 51 (17-67) finite, got an "
                              f"array of shape {points68.shape}")
    detected = transform_points(item.fit_to_original, item.lmk68)
    known = np.all(np.isfinite(points68), axis=1)
    overlap = _overlap(_box(points68[known]), _box(detected[known]))
    if not overlap >= MIN_BOX_OVERLAP:
        raise AnnotationError(f"{source}: the annotated points do not lie on the face found in {item.source} (box "
                              f"overlap {overlap:.2f} < {MIN_BOX_OVERLAP}); check that the file belongs to this "
                              f"photograph, or choose the face with --face-index")
    fit_points = transform_points(item.original_to_fit, points68).astype(np.float32)
    return dataclasses.replace(item, annotated68=fit_points,
                               notes=item.notes + (f"68-point targets from the annotation {source}",))


__all__ = ["ANNOTATION_SUFFIXES", "AnnotationError", "MAX_MAT_BYTES", "MAX_PTS_BYTES", "NUM_ANNOTATED", "annotated",
           "annotation_beside", "read_aflw_mat", "read_annotation", "read_pts"]
