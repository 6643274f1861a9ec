"""The ``flamejax`` command: fit photographs (``fit``), folders (``fit-dir``), convert network checkpoints.

Every option is checked before any work starts. Exit codes:
  0  every image fitted, every fit plausible
  1  internal error (a bug: rerun with -v and report the traceback)
  2  bad usage: an unknown option or an option value out of range
  3  a file or folder is missing, corrupt, refused or busy (model, weights, input or output folder)
  4  some images failed or gave suspect fits (the others are written)
  5  no image was fitted
  130 interrupted (Ctrl-C); what was written is kept, and fit-dir resumes where it stopped
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the command starts without loading perception
    from flamejax.perception import PreprocessConfig

log = logging.getLogger("flamejax")

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_FILES, EXIT_SOME_FAILED, EXIT_NONE_FITTED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
FOV_RANGE = (5.0, 90.0)
"""Degrees a fixed field of view may take: a portrait lens to a wide phone camera."""


class UsageError(ValueError):
    """An option value the command cannot work with (exit code 2)."""


# ---------------------------------------------------------------------------------------------- option types


def _integer(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {bound}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(text: str, what: str = "number") -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None


def _fov(text: str) -> float:
    value = _number(text, "number of degrees")
    if not FOV_RANGE[0] <= value <= FOV_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{value:g} degrees is out of range: a field of view between "
                                         f"{FOV_RANGE[0]:g} and {FOV_RANGE[1]:g} degrees")
    return value


def _mesh_formats(text: str) -> tuple[str, ...]:
    from flamejax.outputs import MESH_FORMATS

    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    if formats == ("none",):
        return ()
    unknown = [f for f in formats if f not in MESH_FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mesh format {', '.join(unknown)}: use any of "
                                         f"{','.join(MESH_FORMATS)}, or none")
    return formats


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be a positive number")
    return value


def _seconds(text: str) -> float:
    value = _number(text, "number of seconds")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be 0 or more seconds")
    return value


def _track_exports(text: str) -> tuple[str, ...]:
    from flamejax.track import EXPORTS

    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in EXPORTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown export {unknown[0]!r}: choose from {', '.join(EXPORTS)}")
    return names


# ---------------------------------------------------------------------------------------------- the parser


def _add_texture_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texture-filter", choices=("bilinear", "trilinear"), default="bilinear",
                   help="photometric mode's texture lookups: bilinear, or trilinear (mip-mapped: a pixel that spans "
                        "several texels takes their mean; about 1.3x the photometric stage's time)")


def _with_texture_filter(config, texture_filter: str):
    """A photometric configuration whose renderer looks the texture up with ``texture_filter``."""
    return dataclasses.replace(config, raster=dataclasses.replace(config.raster, texture_filter=texture_filter))


def _add_fit_arguments(p: argparse.ArgumentParser, default_batch: int) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--batch-size", type=_integer(1, 65536), default=default_batch,
                   help="images fitted together (fixed, padded: one compilation)")
    p.add_argument("--mode", choices=("landmark", "photometric"), default="landmark",
                   help="landmark: fit the landmarks; photometric: then match the pixels (texture, light)")
    p.add_argument("--photometric-steps", type=_integer(1, 100000), default=None,
                   help="photometric steps over all pyramid levels (default: PhotometricConfig().steps, 128)")
    _add_texture_filter(p)
    p.add_argument("--fov", type=_fov, default=20.0, help="camera field of view in degrees")
    p.add_argument("--optimise-fov", action="store_true", help="also fit the field of view (10-50 degrees)")
    p.add_argument("--rigid-steps", type=_integer(0, 100000), default=None,
                   help="stage 1 steps (default: the reference's 1500)")
    p.add_argument("--landmark-steps", type=_integer(0, 100000), default=None,
                   help="stage 2 steps (default: the reference's 200)")
    p.add_argument("--annotations", action="store_true",
                   help="fit each photograph's hand-annotated 68 points, read from the file of the same name "
                        "beside it (iBUG / 300-W .pts, else AFLW2000-3D .mat: its inner 51 points), instead of "
                        "MediaPipe's, with the weak identity prior of precise_landmarks_config() (stage 2 twice as "
                        "long unless --landmark-steps is given; in photometric mode precise_photometric_config(): "
                        "the jaw line shapes the identity, which stays near the landmark fit's, and the points weigh "
                        "3x more)")
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--face-index", type=_integer(0), default=None,
                       help="which face when several, numbered left to right from 0 (default: the largest)")
    faces.add_argument("--all-faces", action="store_true", help="fit every face of each photograph")
    p.add_argument("--no-silhouette", action="store_true",
                   help="fit without the person's silhouette (MediaPipe's selfie segmentation keeps the fitted face "
                        "inside the person's outline, and a strongly turned face's profile on its edge); for "
                        "pictures where it takes the background for the person")
    p.add_argument("--init", default="auto", choices=("auto", "deca+mica", "deca", "mica", "linear"),
                   help="start: DECA/MICA ONNX networks from the weights folder, or the weights-free linear "
                        "solve; auto = the networks whose weights are present, else linear")
    p.add_argument("--mesh", type=_mesh_formats, default=("obj", "glb"),
                   help="mesh formats: any of obj,ply,glb, or none")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay pictures")
    p.add_argument("--fht", action="store_true",
                   help="also write flame-head-tracker's keys (cam, fov, lmks_68, lmks_dense, ...) in the .npz")
    p.add_argument("--save-crop", action="store_true",
                   help="also save the aligned crop and the image the fit ran on")
    p.add_argument("--flame", type=Path, default=None,
                   help="FLAME model pickle (default: generic_model.pkl or flame2023.pkl in $FLAMEJAX_WEIGHTS)")
    p.add_argument("--n-shape", type=_integer(1, 300), default=100, help="identity components to fit")
    p.add_argument("--n-exp", type=_integer(1, 100), default=50, help="expression components to fit")


def build_parser() -> argparse.ArgumentParser:
    from flamejax import __version__

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="flamejax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log details, show native libraries' messages and tracebacks")
    parser.add_argument("--version", action="version", version=f"flamejax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit FLAME to photographs", formatter_class=formatter,
                         description="Fit FLAME to each photograph; results go to one folder, named after the "
                                     "images (folders or extensions are added where names would clash).")
    fit.add_argument("images", nargs="+", type=Path, help="photographs (jpg, png, webp, bmp, tif)")
    _add_fit_arguments(fit, default_batch=16)
    fit.add_argument("--same-person", action="store_true",
                     help="the photographs show one person: fit one shared identity, with each photograph's own "
                          "expression, jaw, eyes and camera; with --mode photometric also one albedo, the identity "
                          "refined against every photograph's pixels")
    fit.set_defaults(func=cmd_fit)

    fit_dir = sub.add_parser("fit-dir", help="fit every photograph in a folder (batched, resumable)",
                             formatter_class=formatter,
                             description="Fit every image of a folder into a mirrored output folder; a rerun "
                                         "skips finished images, and a killed run resumes where it stopped.")
    fit_dir.add_argument("input_dir", type=Path, help="folder of images (jpg, jpeg, png, webp, bmp, tif, tiff)")
    _add_fit_arguments(fit_dir, default_batch=64)
    fit_dir.add_argument("-r", "--recursive", action="store_true", help="also fit images in subfolders")
    fit_dir.add_argument("--workers", type=_integer(1, 256), default=None,
                         help="preprocessing and writing threads (default: the CPU count, at most 8)")
    fit_dir.add_argument("--prefetch", type=_integer(1, 64), default=2, help="batches preprocessed ahead of the fit")
    fit_dir.add_argument("--preprocess-processes", type=_integer(0, 1024), default=None,
                         help="worker processes running perception (default: one per CPU core; 0: --workers threads)")
    fit_dir.add_argument("--no-targets-cache", action="store_true",
                         help="do not keep or reuse each image's targets under OUTPUT/.fitdir/targets (a refit "
                              "with other fit settings reuses them and skips perception)")
    fit_dir.add_argument("--retry-failed", action="store_true", help="fit images that failed in earlier runs again")
    fit_dir.add_argument("--refit", action="store_true",
                         help="the folder holds fits made with other settings: fit every image again")
    fit_dir.add_argument("--verify", choices=("size", "checksum"), default="size",
                         help="how earlier results are checked before an image is skipped")
    fit_dir.add_argument("--max-images", type=_integer(0), default=None,
                         help="stop after this many images (per process)")
    fit_dir.add_argument("--devices", type=_integer(1), default=None,
                         help="local devices to shard batches over (default: all)")
    fit_dir.add_argument("--no-progress", action="store_true", help="no progress bar")
    hosts = fit_dir.add_argument_group("several processes (hosts); see flamejax.distributed")
    hosts.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    hosts.add_argument("--num-processes", type=_integer(1), default=None, help="process count (or JAX_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=_integer(0), default=None, help="this process's index (or JAX_PROCESS_ID)")
    hosts.add_argument("--cluster-auto", action="store_true",
                       help="let JAX detect a TPU pod slice, SLURM, Open MPI or Kubernetes job")
    fit_dir.set_defaults(func=cmd_fit_dir)

    track = sub.add_parser("track", help="track a video: one identity, smooth per-frame motion",
                           formatter_class=formatter,
                           description="Fit FLAME to every frame of a video (or a folder of numbered frames) "
                                       "jointly: one identity and field of view for the clip, per-frame expression, "
                                       "jaw, eyes and pose with temporal priors. Conventions: flamejax.track.")
    track.add_argument("source", type=Path, metavar="VIDEO_OR_FRAME_FOLDER",
                       help="a video file, or a folder of numbered frames (frame_0001.png, ...)")
    track.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    track.add_argument("--mode", choices=("landmark", "photometric"), default="landmark",
                       help="landmark: fit the MediaPipe landmarks; photometric: then fit the clip's identity and "
                            "one albedo (OUT/texture.png) to eight keyframes' pixels and refine every frame against "
                            "its pixels (about 3 CPU s per frame)")
    _add_texture_filter(track)
    track.add_argument("--fps", type=_positive_float, default=None, help="resample the video to N frames per second")
    track.add_argument("--start", type=_seconds, default=None, metavar="S", help="first second to track")
    track.add_argument("--end", type=_seconds, default=None, metavar="E", help="second to stop at")
    track.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True,
                       help="write OUT/overlay.mp4 (mesh and landmarks over the video)")
    track.add_argument("--export", type=_track_exports, default=(), metavar="vhap,fht,obj-sequence",
                       help="extra exports, comma separated")
    track.add_argument("--resume", action="store_true",
                       help="reuse the checkpoints of an earlier, interrupted run into the same OUT")
    track.add_argument("--no-silhouette", action="store_true",
                       help="track without the silhouette's profile: by default, frames whose face MediaPipe sees "
                            "turned about 45° or more are segmented (selfie segmentation) and the fitted face must "
                            "reach the person's outline on the side it turns to")
    track.add_argument("--face-index", type=_integer(0), default=None,
                       help="which face when several show, numbered left to right from 0 on the first frame with a "
                            "face (default: the one MediaPipe takes up first); followed from there on")
    track.add_argument("--flame", type=Path, default=None, help="FLAME model pickle (default: as for fit)")
    track.set_defaults(func=cmd_track)

    weights = sub.add_parser("weights", help="where flamejax looks for the FLAME model and weights, what it finds",
                             formatter_class=formatter,
                             description="Lists each file flamejax can use, where it was found (or how to get it), "
                                         "and the folders searched.")
    weights.add_argument("--create", action="store_true",
                         help="create the per-user weights folder (~/.local/share/flamejax) to copy files into")
    weights.set_defaults(func=cmd_weights)

    convert = sub.add_parser("convert", add_help=False,
                             help="convert DECA / MICA checkpoints to ONNX: convert deca|mica CHECKPOINT -o OUT "
                                  "(needs the torch extra)")
    convert.add_argument("rest", nargs=argparse.REMAINDER)
    convert.set_defaults(func=lambda args: convert_command(args.rest))
    return parser


# ---------------------------------------------------------------------------------------------- from options


def fit_config_from_args(args):
    """The :class:`~flamejax.fit.FitConfig` the options describe (step counts keep the schedules' shape)."""
    from flamejax.fit import FitConfig, precise_landmarks_config, quick_config

    config = FitConfig()
    if args.rigid_steps is not None or args.landmark_steps is not None:
        rigid = config.rigid.steps if args.rigid_steps is None else args.rigid_steps
        landmark = config.landmark.steps if args.landmark_steps is None else args.landmark_steps
        config = quick_config(rigid, landmark)
    if args.optimise_fov and not config.rigid.fov_range[0] <= args.fov <= config.rigid.fov_range[1]:
        low, high = config.rigid.fov_range
        raise UsageError(f"--fov {args.fov:g}: with --optimise-fov the start must lie in the fitted range "
                         f"{low:g}-{high:g} degrees")
    if args.annotations:
        config = precise_landmarks_config(config, args.landmark_steps)
    rigid = dataclasses.replace(config.rigid, optimise_fov=args.optimise_fov)
    return config.replace(fov_deg=args.fov, rigid=rigid)


def photometric_from_args(args):
    """The photometric bundle for ``--mode photometric`` (None otherwise)."""
    if args.mode != "photometric":
        return None
    from flamejax.fit import PhotometricConfig, precise_photometric_config
    from flamejax.fitter import PhotometricBundle

    config = _with_texture_filter(precise_photometric_config() if args.annotations else PhotometricConfig(),
                                  args.texture_filter)
    if args.photometric_steps is not None:
        config = config.with_steps(args.photometric_steps)
    return PhotometricBundle.load(config)


def output_options_from_args(args):
    from flamejax.outputs import OutputOptions

    return OutputOptions(mesh_formats=args.mesh, overlay=not args.no_overlay, fht=args.fht,
                         save_crop=args.save_crop)


def preprocess_config(args, face_index: int | None = None) -> PreprocessConfig:
    """The preprocessing the options ask for; ``face_index`` overrides ``--face-index``."""
    from flamejax.perception import PreprocessConfig

    return PreprocessConfig(face_index=args.face_index if face_index is None else face_index,
                            person_silhouette=not args.no_silhouette)


def fitter_from_args(args, model=None):
    """The fitter the options describe. ``model``: already loaded, else loaded from ``--flame`` (saying which
    file); the networks and the photometric bundle are loaded from the weights folders."""
    from flamejax.fitter import Fitter, Networks
    from flamejax.flame import load_flame

    config = fit_config_from_args(args)
    if model is None:
        model = load_flame(args.flame, n_shape=args.n_shape, n_expression=args.n_exp)
        source = getattr(model, "source", None)
        if source is not None:
            print(source.describe(), file=sys.stderr)
    return Fitter.create(model, config, batch_size=args.batch_size, networks=Networks.load(args.init),
                         photometric=photometric_from_args(args), devices=getattr(args, "devices", None))


def directory_config_from_args(args):
    """The :class:`~flamejax.fitdir.DirectoryConfig` of ``fit-dir``'s options."""
    from flamejax.fitdir import DirectoryConfig, default_workers

    if args.all_faces:
        raise UsageError("--all-faces is for flamejax fit; fit-dir fits one face per image (--face-index)")
    return DirectoryConfig(
        preprocess=preprocess_config(args), outputs=output_options_from_args(args),
        recursive=args.recursive, workers=args.workers or default_workers(), prefetch_batches=args.prefetch,
        preprocess_processes=args.preprocess_processes, cache_targets=not args.no_targets_cache,
        retry_failed=args.retry_failed, refit=args.refit, verify=args.verify, max_images=args.max_images,
        progress=not args.no_progress, annotations=args.annotations)


def _check_output_folder(folder: Path) -> None:
    """The output folder exists (or is created) and takes files, before any work."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"-o {folder}: is a file; give a folder for the results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flamejax-write-check-"):
            pass
    except OSError as err:
        raise NotADirectoryError(f"-o {folder}: cannot write there ({err.strerror or err}); choose a folder you "
                                 "can write to") from None


# ---------------------------------------------------------------------------------------------- fit


def cmd_fit(args) -> int:
    from tqdm import tqdm

    from flamejax.outputs import provenance, unique_stems, write_image_outputs
    from flamejax.perception import (PerceptionError, annotated, annotation_beside, load_image, preprocess,
                                     read_annotation)

    options = output_options_from_args(args)
    _check_output_folder(args.output)
    paths = list(dict.fromkeys(args.images))
    if len(paths) < len(args.images):
        print(f"flamejax: {len(args.images) - len(paths)} image(s) given twice are fitted once", file=sys.stderr)
    stems = unique_stems(paths)
    if args.annotations and (args.same_person or args.all_faces):
        raise UsageError(f"--annotations: one annotated face per photograph, not with "
                         f"{'--same-person' if args.same_person else '--all-faces'}")
    if args.same_person:
        return _fit_same_person(args, paths, stems, options)
    fitter = fitter_from_args(args)
    record = provenance(fitter)

    items, originals, names, item_stems, notes = [], [], [], [], {}
    failures = 0
    for path, stem in tqdm(list(zip(paths, stems)), desc="preprocess", unit="img", disable=len(paths) < 2):
        try:
            original = load_image(path)
            first = preprocess(original, preprocess_config(args))
            faces = [first]
            if args.annotations:
                marks = annotation_beside(path)
                faces = [annotated(first, read_annotation(marks), str(marks))]
            if args.all_faces and first.num_faces > 1:
                faces = [first if i == first.face_index else preprocess(original, preprocess_config(args, i))
                         for i in range(first.num_faces)]
        except (PerceptionError, OSError) as err:
            failures += 1
            print(f"{path}: FAILED ({_message(err, path)})")
            continue
        for item in faces:
            suffix = f"_face{item.face_index}" if len(faces) > 1 else ""
            name = f"{path}" + (f" (face {item.face_index})" if len(faces) > 1 else "")
            items.append(item)
            originals.append(original)
            names.append(name)
            item_stems.append(stem + suffix)
            said = []
            if item.num_faces > 1 and not args.all_faces:
                said.append(f"{item.num_faces} faces found, fitted face {item.face_index} "
                            f"({'the largest' if args.face_index is None else '--face-index'}); "
                            "--face-index N picks another, --all-faces fits each")
            if item.quarter_turns:
                said.append(f"the face lies turned by about {90 * item.quarter_turns} degrees")
            if said:
                notes[name] = "; ".join(said)
    if not items:
        print(f"flamejax: no image could be fitted ({failures} failed)", file=sys.stderr)
        return EXIT_NONE_FITTED

    with tqdm(total=len(items), desc="fit", unit="img", disable=False, leave=False, file=sys.stderr) as bar:
        fits = []
        for start in range(0, len(items), fitter.batch_size):
            chunk = slice(start, start + fitter.batch_size)
            fits += fitter.fit_batch(items[chunk], names[chunk],
                                     on_stage=lambda stage: bar.set_postfix_str(stage, refresh=True))
            bar.update(len(items[chunk]))
    for fit, item, original, stem in zip(fits, items, originals, item_stems):
        if fit.written:
            write_image_outputs(args.output, stem, fit, item, fitter, options, record, original)
        print(summary_line(fit) + (f"  [{notes[fit.name]}]" if fit.name in notes else ""))
    ok = sum(f.verdict == "ok" for f in fits)
    suspect = sum(f.verdict == "suspect" for f in fits)
    failed = failures + sum(f.verdict == "failed" for f in fits)
    fit_seconds = sum(f.fit_seconds for f in fits)
    compile_seconds = sum(f.compile_seconds for f in fits)
    print(f"{ok} ok, {suspect} suspect, {failed} failed ({len(paths)} image(s)); fit {fit_seconds:.2f} s "
          f"({fit_seconds / len(fits):.3f} s/image), compilation {compile_seconds:.1f} s -> {args.output}")
    if ok + suspect == 0:
        return EXIT_NONE_FITTED
    return EXIT_OK if suspect + failed == 0 else EXIT_SOME_FAILED


def _fit_same_person(args, paths: list[Path], stems: list[str], options) -> int:
    """``fit --same-person``: one joint fit (:func:`flamejax.track.fit_same_person_photos`), with ``--mode
    photometric`` refined against the pixels with one identity and one albedo
    (:func:`flamejax.track.refine_same_person_photometric`, its albedo also in ``same_person_texture.png``); one
    record per photo with its overlay, in photometric mode its textured meshes and render, as for one photograph."""
    import jax
    import numpy as np

    from flamejax import camera as cam
    from flamejax.fitter import detection_doubt_of
    from flamejax.flame import flame_forward
    from flamejax.io import FitRecord, write_image
    from flamejax.outputs import (detection_record, landmark_record, photometric_record, provenance,
                                  write_record_outputs)
    from flamejax.perception import load_image
    from flamejax.track import fit_same_person_photos, refine_same_person_photometric

    if len(paths) < 2:
        raise UsageError("--same-person needs at least two photographs of the person")
    if args.all_faces:
        raise UsageError("--same-person fits one face per photograph: drop --all-faces")
    fitter = fitter_from_args(args)
    joint, items = fit_same_person_photos(fitter.model, paths, preprocess_config=preprocess_config(args),
                                          init_config=fitter.config)
    record_provenance = provenance(fitter) | {"init": "same-person joint fit",
                                              "same_person": [str(p) for p in paths]}
    params, camera, lmk68, nmes, photometric = joint.params, joint.camera, joint.lmk68, joint.nme, None
    if fitter.photometric is not None:
        shared = jax.tree.map(np.asarray, refine_same_person_photometric(
            fitter.model, fitter.uv_layout, joint, items, fitter.photometric.config, fitter.photometric.albedo))
        if shared.photometric.stage.finite.all():
            params, camera, lmk68, nmes = shared.params, shared.camera, shared.landmarks.lmk68, shared.nme
            photometric = shared.photometric
            write_image(args.output / "same_person_texture.png", photometric.texture[0])
        else:
            print("photometric stage diverged; the landmark joint fit is kept for every photograph")
    vertices = np.asarray(jax.vmap(lambda p: flame_forward(fitter.model, p).vertices)(params))
    verdicts = {"ok": ("ok", ""),
                "outlier": ("suspect", "its landmarks disagree with the identity the other photographs share")}
    failed = suspect = 0
    for i, (path, stem, item) in enumerate(zip(paths, stems, items)):
        verdict, reason = verdicts.get(joint.status[i], ("failed", joint.status[i]))
        if verdict == "ok" and (doubt := detection_doubt_of(item, fitter.quality)) is not None:
            verdict, reason = "suspect", doubt
        nme = float(nmes[i])
        if verdict == "failed":
            failed += 1
            print(f"{path}: FAILED ({reason})")
            continue
        suspect += verdict == "suspect"
        size = item.image.shape[0]
        landmarks = landmark_record(item, lmk68[i])
        row = jax.tree.map(lambda a: np.asarray(a[i]), (params, camera))
        report = None if photometric is None else jax.tree.map(lambda a: a[i], photometric)
        photo = None if report is None else photometric_record(report)
        record = FitRecord(
            name=str(path), status=verdict, reason=reason, mode="landmark" if photo is None else "photometric",
            init="same-person joint fit", photometric=photo,
            params=row[0], camera=row[1], image_size=size, vertices=vertices[i], landmarks=landmarks,
            fit_to_original=np.asarray(item.fit_to_original),
            original_size=(item.original_size[1], item.original_size[0]), metrics={"nme_inner51": nme},
            provenance=record_provenance,
            detection=detection_record(item))
        original = load_image(path) if options.overlay else None
        write_record_outputs(args.output, stem, record, fitter, options, item, report, original)
        yaw, pitch, roll = np.asarray(cam.yaw_pitch_roll(row[1])).tolist()
        shown = "ok" if verdict == "ok" else f"SUSPECT ({reason})"
        print(f"{path}: {shown}  NME(inner 51) {100 * nme:.2f}%  yaw {yaw:+.1f} pitch {pitch:+.1f} roll {roll:+.1f}")
    print(f"one identity for {len(paths) - failed} of {len(paths)} photographs ({suspect} suspect, {failed} failed) "
          f"-> {args.output}")
    if failed == len(paths):
        return EXIT_NONE_FITTED
    return EXIT_OK if failed + suspect == 0 else EXIT_SOME_FAILED


def summary_line(fit) -> str:
    """One image's result in one line."""
    import numpy as np

    from flamejax import camera as cam

    if not fit.written:
        return f"{fit.name}: FAILED ({fit.reason})"
    ypr = np.asarray(cam.yaw_pitch_roll(fit.result.camera))
    verdict = "ok" if fit.ok else f"SUSPECT ({fit.reason})"
    return (f"{fit.name}: {verdict}  NME(inner 51) {100 * float(fit.result.nme):.2f}%  "
            f"yaw {ypr[0]:+.1f} pitch {ypr[1]:+.1f} roll {ypr[2]:+.1f}  fov {float(fit.result.camera.fov_deg):.1f}")


def _message(err: Exception, path) -> str:
    text = str(err)
    for placeholder in ("<array>", "<bytes>"):
        text = text.replace(placeholder, str(path))
    return text.removeprefix(f"{path}: ")


# ---------------------------------------------------------------------------------------------- fit-dir


def cmd_fit_dir(args) -> int:
    from flamejax.distributed import initialize_distributed
    from flamejax.fitdir import check_folders, fit_directory

    config = directory_config_from_args(args)
    check_folders(args.input_dir, args.output)
    info = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                  cluster_auto=args.cluster_auto)
    if args.devices is not None:
        import jax

        available = jax.local_device_count()
        if args.devices > available:
            raise UsageError(f"--devices {args.devices}: this process has {available} device(s) "
                             f"({jax.default_backend()}); give at most {available}")
    fitter = fitter_from_args(args)
    summary = fit_directory(args.input_dir, args.output, fitter, config)
    prefix = f"process {info.index}/{info.count}: " if info.count > 1 else ""
    if summary.found == 0:
        print(f"{prefix}no images in {args.input_dir} (looked for .jpg .jpeg .png .webp .bmp .tif .tiff"
              f"{'' if args.recursive else '; -r also searches subfolders'})", file=sys.stderr)
        return EXIT_NONE_FITTED
    print(prefix + summary.report())
    if summary.summary_csv is not None:
        print(f"summary: {summary.summary_csv}")
    if summary.all_ok:
        return EXIT_OK
    nothing = summary.fitted + summary.suspect == 0 and summary.skipped == summary.failed_before
    return EXIT_NONE_FITTED if nothing else EXIT_SOME_FAILED


# ---------------------------------------------------------------------------------------------- track


def cmd_track(args) -> int:
    from flamejax.flame import load_flame
    from flamejax.perception import FaceIndexError
    from flamejax.track import (NoFaceInVideoError, NoUsableFramesError, PhotometricTrackConfig, TrackConfig,
                                VideoReadError, track_video)

    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UsageError(f"--end {args.end:g} must come after --start {args.start:g}")
    if args.output.exists() and not args.output.is_dir():
        raise NotADirectoryError(f"-o {args.output}: is a file; give a folder for the results")
    model = load_flame(args.flame)
    print(model.source.describe(), file=sys.stderr)
    try:
        photometric = None
        if args.mode == "photometric":
            default = PhotometricTrackConfig()
            photometric = dataclasses.replace(
                default, appearance=_with_texture_filter(default.appearance, args.texture_filter),
                refine=_with_texture_filter(default.refine, args.texture_filter))
        config = TrackConfig(photometric=photometric, profile=not args.no_silhouette, face_index=args.face_index)
        result = track_video(args.source, args.output, config, model=model, start_s=args.start,
                             end_s=args.end, fps=args.fps, overlay=args.overlay, exports=tuple(args.export),
                             resume=args.resume, progress=lambda message: print(message, file=sys.stderr))
    except VideoReadError as err:
        raise NotADirectoryError(str(err)) from None
    except FaceIndexError as err:
        raise UsageError(f"--face-index: {args.source}: {err}") from None
    except (NoFaceInVideoError, NoUsableFramesError) as err:
        print(f"flamejax: {err}", file=sys.stderr)
        return EXIT_NONE_FITTED
    except KeyboardInterrupt:
        print(f"\nflamejax: interrupted; finished steps are saved in {args.output}/checkpoints: run the same "
              "command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    counts = {s: result.fit.status.count(s) for s in sorted(set(result.fit.status))}
    print(f"tracked {len(result.fit.status)} frames ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
          f"into {args.output}")
    return EXIT_OK if set(counts) == {"ok"} else EXIT_SOME_FAILED


# ---------------------------------------------------------------------------------------------- weights


def cmd_weights(args) -> int:
    from flamejax import files

    if args.create:
        print(f"weights folder: {files.user_weights_dir(create=True)} (copy your FLAME files here)")
    named = files.env_dirs()
    print(f"searched ({'FLAMEJAX_WEIGHTS' if named is not None else 'default folders'}): "
          + (", ".join(str(d) for d in files.search_dirs()) or "no folder exists yet (flamejax weights --create)"))
    missing_required = False
    for key, entry in files.manifest().items():
        found = files.find_file(key, required=False)
        needed = entry.get("required", key == "flame_model")
        missing_required |= found is None and needed
        state = str(found) if found is not None else ("MISSING (required)" if needed else "absent (optional)")
        print(f"  {key:20s} {state}")
    if missing_required:
        print(f"get the FLAME model from {files.manifest()['flame_model']['source']} and put it in one of the "
              "folders above (see weights/README.md)")
        return EXIT_FILES
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- convert


def convert_command(argv: list[str]) -> int:
    """Hands the arguments to :mod:`flamejax.convert`, imported only here (it needs torch)."""
    try:
        from flamejax.convert import main as convert_main
    except ImportError as err:
        print(f"flamejax convert needs PyTorch: pip install 'flamejax[convert]' ({err})", file=sys.stderr)
        return EXIT_FILES
    return convert_main(argv)


# ---------------------------------------------------------------------------------------------- main


def _quiet_python_loggers() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    import contextlib

    from flamejax._runtime import enable_compilation_cache, native_stderr_to

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # its own parser, which needs torch
        return convert_command(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help, --version (0) or bad usage (2)
        return int(stop.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if os.environ.get("FLAMEJAX_COMPILE_CACHE", "1") != "0":
        enable_compilation_cache()
    if not args.verbose:
        _quiet_python_loggers()
    quiet = contextlib.nullcontext() if args.verbose else native_stderr_to(None)
    with quiet:
        return _run(args)


def _run(args) -> int:
    from flamejax.files import CorruptFileError, MissingFileError
    from flamejax.fitdir import FolderBusyError, SettingsMismatchError, UnusableFolderError

    file_errors = (MissingFileError, CorruptFileError, NotADirectoryError, FolderBusyError, SettingsMismatchError,
                   UnusableFolderError, PermissionError)
    try:
        from flamejax.flame import UnsafePickleError

        file_errors += (UnsafePickleError,)
    except ImportError:
        pass
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nflamejax: interrupted; results written so far are kept (fit-dir: rerun the same command to "
              "resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except file_errors as err:
        _explain(err, args.verbose)
        return EXIT_FILES
    except (UsageError, ValueError) as err:
        _explain(err, args.verbose)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 -- a bug: one line, the traceback with -v
        _explain(err, args.verbose, internal=True)
        return EXIT_INTERNAL


def _explain(err: Exception, verbose: bool, internal: bool = False) -> None:
    if verbose:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    text = str(err) or type(err).__name__
    if internal:
        text = f"internal error: {type(err).__name__}: {text} (rerun with -v for the traceback, and report it)"
    print(f"flamejax: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
