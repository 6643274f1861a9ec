"""One image's result files: the record (parameters, cameras, landmarks, provenance), meshes, pictures.

:func:`fit_record` turns an :class:`~flamejax.fitter.ImageFit` and its preprocessed image into the
:class:`flamejax.io.FitRecord` that ``<stem>.json`` / ``<stem>.npz`` hold (read back with
:func:`flamejax.io.load_fit`); :func:`write_image_outputs` writes every file of one image as a unit: all of them
are written into a staging folder first and moved into place only when every one succeeded, so a failure leaves
no partial set behind. :func:`unique_stems` gives the output names that keep images apart.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePath

import numpy as np

from flamejax import camera as cam
from flamejax.fitter import Fitter, ImageFit

__all__ = ["MESH_FORMATS", "OutputOptions", "fit_record", "landmark_record", "output_names", "provenance",
           "unique_stems", "write_image_outputs", "write_record_outputs"]

MESH_FORMATS = ("obj", "ply", "glb")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Which files to write besides ``<stem>.json`` and ``<stem>.npz``."""

    mesh_formats: tuple[str, ...] = ("obj", "glb")
    overlay: bool = True
    """``<stem>_overlay.png``: the shaded mesh and landmarks on the crop and on the photograph."""
    fht: bool = False
    """Also flame-head-tracker's keys in the NPZ (``cam``, ``fov``, ``lmks_68``, ``lmks_dense``, ...)."""
    save_crop: bool = False
    """``<stem>_crop.png`` (the aligned crop) and ``<stem>_fit.png`` (the image the fit ran on)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mesh_formats) - set(MESH_FORMATS))
        if unknown:
            raise ValueError(f"unknown mesh format(s) {', '.join(unknown)}: choose from {', '.join(MESH_FORMATS)}")


def output_names(stem: str, options: OutputOptions, photometric: bool) -> list[str]:
    """File names (below the output folder) one image's outputs take."""
    suffixes = ["json", "npz", *options.mesh_formats]
    names = [f"{stem}.{s}" for s in suffixes]
    if options.overlay:
        names.append(f"{stem}_overlay.png")
    if options.save_crop:
        names += [f"{stem}_crop.png", f"{stem}_fit.png"]
    if photometric:
        names += [f"{stem}_texture.png", f"{stem}_render.png"]
        names += [f"{stem}_textured.{f}" for f in options.mesh_formats if f in ("obj", "glb")]
        if "obj" in options.mesh_formats:
            names += [f"{stem}_textured.mtl", f"{stem}_textured.png"]
    return names


def unique_stems(paths: Sequence[str | PurePath], mirror_folders: bool = False) -> list[str]:
    """Output stems that keep every image apart.

    ``mirror_folders``: the stem is the path without its suffix (``sub/a.jpg`` -> ``sub/a``, for relative paths
    below one input folder); else the file's own stem, prefixed with as many parent folders as needed to tell
    apart images of the same name (``x/photo.jpg``, ``y/photo.jpg`` -> ``x_photo``, ``y_photo``). Either way,
    images that differ only by extension keep it (``a.jpg``, ``a.png`` -> ``a_jpg``, ``a_png``).
    """
    paths = [PurePath(p) for p in paths]
    if mirror_folders:
        stems = [p.with_suffix("").as_posix() for p in paths]
    else:
        depth = [0] * len(paths)
        while True:
            stems = ["_".join([*p.parent.parts[len(p.parent.parts) - d:], p.stem] if d else [p.stem])
                     for p, d in zip(paths, depth)]
            clashing = {s for s, n in collections.Counter(stems).items() if n > 1}
            grow = [i for i, s in enumerate(stems) if s in clashing and depth[i] < len(paths[i].parent.parts)
                    and len({paths[j].parent for j, t in enumerate(stems) if t == s}) > 1]
            if not grow:
                break
            for i in grow:
                depth[i] += 1
        stems = [s.lstrip("/_") or "image" for s in stems]
    clashing = {s for s, n in collections.Counter(stems).items() if n > 1}
    stems = [s if s not in clashing else f"{s}_{p.suffix[1:].lower()}" for s, p in zip(stems, paths)]
    twice = sorted(s for s, n in collections.Counter(stems).items() if n > 1)
    if twice:
        raise ValueError(f"images would share output names {twice[:5]}: the same file given twice? Rename them")
    return stems


def provenance(fitter: Fitter) -> dict:
    """What defines a fit besides its image: model file, component counts, configuration, start, versions."""
    import jax

    from flamejax import __version__

    source = getattr(fitter.model, "source", None)
    return {
        "flamejax": __version__,
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "flame": None if source is None else source.to_dict(),
        "n_shape": fitter.model.num_shape,
        "n_expression": fitter.model.num_expression,
        "mode": fitter.mode,
        "init": fitter.networks.method,
        "fit_config": _plain(dataclasses.asdict(fitter.config)),
        "photometric_config": None if fitter.photometric is None else _plain(
            dataclasses.asdict(fitter.photometric.config)),
        "quality": _plain(dataclasses.asdict(fitter.quality)),
    }


def _plain(value):
    """JSON-ready copy of a nested configuration dict."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "dtype"):
        return np.asarray(value).tolist()
    return value


def landmark_record(item, fitted68_ndc, fitted_iris_ndc=None, conventions=None,
                    weights68=None) -> dict[str, np.ndarray]:
    """Fitted and target landmarks of one image, in fit pixels and (``*_original``) in photograph pixels.

    With ``conventions`` (:class:`flamejax.fit.LandmarkConventions`) also the fitted 68 points with the jaw on the
    visible outline (``lmk68_outline``, 300-W style) and as fixed 3D points projected (``lmk68_projected3d``,
    AFLW2000-3D style), and ``lmk68_visibility`` (not points, no ``_original``): column 0 is 1 where the
    projected 3D point faces the camera, column 1 the fit's final weight of each point (``weights68``:
    visibility x robust, 1 when not given).
    """
    from flamejax.perception import transform_points

    size = item.image.shape[0]
    pixels = lambda ndc: np.asarray(cam.ndc_to_pixels(ndc, size))  # noqa: E731
    landmarks = {"lmk68_fitted": pixels(fitted68_ndc),
                 "lmk68_target": item.lmk68 if item.annotated68 is None else item.annotated68,
                 "iris_target": item.iris, "mediapipe_target": item.points478}
    if fitted_iris_ndc is not None:
        landmarks["iris_fitted"] = pixels(fitted_iris_ndc)
    if conventions is not None:
        landmarks |= {"lmk68_outline": pixels(conventions.outline68),
                      "lmk68_projected3d": pixels(conventions.projected68)}
    landmarks |= {f"{k}_original": transform_points(item.fit_to_original, v) for k, v in landmarks.items()}
    if conventions is not None:
        weights = np.ones(68, np.float32) if weights68 is None else np.asarray(weights68, np.float32)
        landmarks["lmk68_visibility"] = np.stack([np.asarray(conventions.visible68, np.float32), weights], axis=1)
    return landmarks


def photometric_record(report) -> dict:
    """A :class:`flamejax.fit.PhotometricReport` of one image as :class:`flamejax.io.FitRecord`'s ``photometric``."""
    return {"texture": np.asarray(report.texture), "light": np.asarray(report.light),
            "texture_coeffs": np.asarray(report.texture_coeffs), "l1_start": float(report.photometric_start),
            "l1_final": float(report.photometric_final)}


def detection_record(item) -> dict:
    """How the face of one :class:`flamejax.perception.Preprocessed` was found, as
    :class:`flamejax.io.FitRecord`'s ``detection``."""
    return {"confidence": float(item.confidence), "num_faces": int(item.num_faces), "face_index": int(item.face_index),
            "lost_on_crop": bool(item.lost_on_crop), "searched": bool(item.searched),
            "quarter_turns": int(item.quarter_turns),
            "lmk68_targets": "mediapipe" if item.annotated68 is None else "annotation"}


def fit_record(fit: ImageFit, item, fitter_provenance: dict):
    """The :class:`flamejax.io.FitRecord` of one fitted image."""
    from flamejax.io import FitRecord

    result = fit.result
    size = item.image.shape[0]
    landmarks = landmark_record(item, result.landmarks.lmk68, result.landmarks.iris, fit.conventions,
                                None if result.weights is None else result.weights.lmk68)
    metrics = {"nme_inner51": float(result.nme), "rigid_final_loss": float(result.rigid.final_loss),
               "landmark_final_loss": float(result.landmark.final_loss), "fit_seconds": fit.fit_seconds,
               "compile_seconds": fit.compile_seconds}
    if result.confidence is not None:
        metrics["confidence"] = float(result.confidence)
    return FitRecord(
        name=fit.name, status=fit.verdict, reason=fit.reason,
        mode="landmark" if result.photometric is None else "photometric", init=fit.init_method,
        params=result.params, camera=result.camera, image_size=size, vertices=fit.vertices, landmarks=landmarks,
        fit_to_original=np.asarray(item.fit_to_original), original_size=(item.original_size[1], item.original_size[0]),
        metrics=metrics, provenance=fitter_provenance,
        detection=detection_record(item),
        photometric=None if result.photometric is None else photometric_record(result.photometric))


def write_image_outputs(outdir: Path, stem: str, fit: ImageFit, item, fitter: Fitter, options: OutputOptions,
                        fitter_provenance: dict, original: np.ndarray | None = None) -> dict[str, Path]:
    """Write one image's files as a unit; returns them by kind (``json``, ``npz``, ``obj``, ``overlay``, ...).

    Everything is written into a hidden staging folder beside the outputs and moved into place once all files
    exist; on any error the staging folder is removed and no file of this image is replaced.
    """
    from flamejax.io import write_image

    if not fit.written:
        raise ValueError(f"{fit.name}: a failed fit has no outputs ({fit.reason})")

    def stage(staging: Path) -> dict[str, Path]:
        staged = _stage_outputs(staging, stem, fit_record(fit, item, fitter_provenance), fitter, options, item,
                                fit.result.photometric, original)
        if options.save_crop:
            staged["crop"] = write_image(staging / f"{stem}_crop.png", item.crop)
            staged["fit_image"] = write_image(staging / f"{stem}_fit.png", item.image)
        return staged

    return _write_as_unit(Path(outdir), stem, stage)


def write_record_outputs(outdir: Path, stem: str, record, fitter: Fitter, options: OutputOptions, item=None,
                         photometric=None, original: np.ndarray | None = None) -> dict[str, Path]:
    """A :class:`flamejax.io.FitRecord`'s parameter files and meshes, written as a unit; with ``item`` (the
    :class:`flamejax.perception.Preprocessed` image it was fitted on) also its overlay (``options.overlay``; over
    ``original``, the photograph, when given), and with ``photometric`` (the image's
    :class:`flamejax.fit.PhotometricReport`) its texture, textured meshes and render beside the image."""
    return _write_as_unit(Path(outdir), stem, lambda staging: _stage_outputs(staging, stem, record, fitter, options,
                                                                             item, photometric, original))


def _stage_outputs(staging: Path, stem: str, record, fitter: Fitter, options: OutputOptions, item, photometric,
                   original: np.ndarray | None = None) -> dict[str, Path]:
    """``record``'s files; with ``item`` its overlay (over ``original`` when given), with ``photometric`` its
    photometric pictures."""
    from flamejax.io import write_image

    staged = _stage_record(staging, stem, record, fitter, options)
    if photometric is not None:
        staged |= _photometric_pictures(staging, stem, record.vertices, photometric, item.image, fitter, options)
    if item is not None and options.overlay:
        from flamejax.overlay import overlay_picture

        lmk68 = np.asarray(cam.pixels_to_ndc(record.landmarks["lmk68_fitted"], record.image_size))
        staged["overlay"] = write_image(staging / f"{stem}_overlay.png", overlay_picture(
            record.vertices, record.camera, lmk68, item, fitter.model, original))
    return staged


def _stage_record(staging: Path, stem: str, record, fitter: Fitter, options: OutputOptions) -> dict[str, Path]:
    from flamejax.io import export_mesh, save_fit

    staged = save_fit(staging / stem, record, fht=options.fht)
    faces = np.asarray(fitter.model.faces)
    for fmt in options.mesh_formats:
        staged[fmt] = export_mesh(staging / f"{stem}.{fmt}", record.vertices, faces,
                                  uv_layout=fitter.uv_layout if fmt != "ply" else None)
    return staged


def _write_as_unit(outdir: Path, stem: str, stage) -> dict[str, Path]:
    """``stage(folder)`` writes files into a fresh hidden staging folder; they are moved into ``outdir`` only when
    it returns, and the staging folder is removed whatever happens."""
    outdir.mkdir(parents=True, exist_ok=True)
    staging = outdir / f".{stem}.{uuid.uuid4().hex[:8]}.staging"
    staging.mkdir()
    try:
        written = {}
        for kind, path in stage(staging).items():
            target = outdir / path.name
            path.replace(target)
            written[kind] = target
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _photometric_pictures(folder: Path, stem: str, vertices: np.ndarray, photo, image: np.ndarray, fitter: Fitter,
                          options: OutputOptions) -> dict[str, Path]:
    """Texture PNG, textured meshes of ``vertices`` and the render (``photo``, one image's
    :class:`flamejax.fit.PhotometricReport`) beside the ``image`` it was fitted on."""
    from flamejax.io import export_mesh, write_image

    written = {"texture": write_image(folder / f"{stem}_texture.png", photo.texture)}
    for fmt in options.mesh_formats:
        if fmt in ("obj", "glb"):
            written[f"textured_{fmt}"] = export_mesh(folder / f"{stem}_textured.{fmt}", vertices,
                                                     np.asarray(fitter.model.faces), uv_layout=fitter.uv_layout,
                                                     texture=photo.texture)
            for extra in (folder / f"{stem}_textured.mtl", folder / f"{stem}_textured.png"):
                if fmt == "obj" and extra.is_file():
                    written[f"textured_obj_{extra.suffix[1:]}"] = extra
    alpha = photo.alpha[..., None]
    composite = image * (1.0 - alpha) + photo.render * alpha
    written["render"] = write_image(folder / f"{stem}_render.png",
                                    np.concatenate([image, composite, photo.render], axis=1))
    return written
