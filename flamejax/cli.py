"""``flamejax`` command line: fit photographs, convert network checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("flamejax")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flame", type=Path, default=None,
                   help="FLAME pickle (default: found in $FLAMEJAX_WEIGHTS, ./weights or ../shared/flame)")
    p.add_argument("--n-shape", type=int, default=100, help="identity components to fit (<= 300)")
    p.add_argument("--n-exp", type=int, default=50, help="expression components to fit (<= 100)")


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=16, help="images fitted together (fixed, padded)")
    p.add_argument("--mode", choices=("landmark", "photometric"), default="landmark",
                   help="landmark: fit the landmarks; photometric: then match the pixels (texture, light)")
    p.add_argument("--photometric-steps", type=int, default=None, help="photometric steps (default: reference 400)")
    p.add_argument("--fov", type=float, default=20.0, help="camera field of view in degrees")
    p.add_argument("--optimise-fov", action="store_true", help="also fit the field of view (10-50 degrees)")
    p.add_argument("--rigid-steps", type=int, default=None, help="stage 1 steps (default: reference 1500)")
    p.add_argument("--landmark-steps", type=int, default=None, help="stage 2 steps (default: reference 200)")
    p.add_argument("--face-index", type=int, default=None, help="which face when several (default: largest)")
    p.add_argument("--init", default="auto", choices=("auto", "deca+mica", "deca", "mica", "linear"),
                   help="initialisation: networks from weights/ (DECA, MICA ONNX) or the weights-free linear "
                        "solve; auto = the networks whose weights are present, else linear")
    p.add_argument("--mesh", default="obj,glb", help="mesh formats to write: any of obj,ply,glb, or none")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay pictures")
    _add_model_args(p)


def fit_config_from_args(args):
    from flamejax.fit import FitConfig, quick_config

    config = FitConfig()
    if args.rigid_steps is not None or args.landmark_steps is not None:
        config = quick_config(args.rigid_steps or config.rigid.steps, args.landmark_steps or config.landmark.steps)
    rigid = dataclasses.replace(config.rigid, optimise_fov=args.optimise_fov)
    return config.replace(fov_deg=args.fov, rigid=rigid)


def photometric_from_args(args, uv_layout):
    """The photometric configuration and albedo model for ``--mode photometric`` (None, None otherwise)."""
    if args.mode != "photometric":
        return None, None
    from flamejax.files import MissingFileError
    from flamejax.fit import PhotometricConfig
    from flamejax.render import load_albedo_model

    if uv_layout is None:
        raise MissingFileError("photometric mode needs the FLAME UV template (head_template_mesh.obj); "
                               "see weights/README.md")
    config = PhotometricConfig()
    if args.photometric_steps is not None:
        config = dataclasses.replace(config, steps=args.photometric_steps,
                                     texel_start=min(config.texel_start, args.photometric_steps // 2))
    return config, load_albedo_model()


def cmd_fit(args) -> int:
    from tqdm import tqdm

    from flamejax.flame import load_flame
    from flamejax.perception import PerceptionError, PreprocessConfig, load_image, preprocess
    from flamejax.pipeline import fit_preprocessed, summary_line, write_outputs

    from flamejax.init import resolve_init_method

    model = load_flame(args.flame, n_shape=args.n_shape, n_expression=args.n_exp)
    init_method = resolve_init_method(args.init)
    uv_layout = uv_layout_if_present()
    config = fit_config_from_args(args)
    pre_config = PreprocessConfig(face_index=args.face_index)
    formats = tuple(f for f in args.mesh.split(",") if f and f != "none")
    items, originals, names, failures = [], [], [], 0
    for path in tqdm(args.images, desc="preprocess", unit="img", disable=len(args.images) < 2):
        try:
            original = load_image(path)
            items.append(preprocess(original, pre_config))
            originals.append(original)
            names.append(str(path))
        except (PerceptionError, OSError) as err:
            failures += 1
            print(f"{path}: FAILED ({err})", file=sys.stderr)
    if not items:
        return 1
    t0 = time.perf_counter()
    photometric, albedo = photometric_from_args(args, uv_layout)
    fits = fit_preprocessed(model, items, config, min(args.batch_size, len(items)), names, init_method,
                            photometric=photometric, uv_layout=uv_layout, albedo=albedo)
    fit_seconds = time.perf_counter() - t0
    for fit, item, original in tqdm(list(zip(fits, items, originals)), desc="write", unit="img",
                                    disable=len(items) < 2):
        if fit.ok:
            write_outputs(args.output, fit, item, model, uv_layout, formats, overlay=not args.no_overlay,
                          original=original)
        else:
            failures += 1
        print(summary_line(fit))
    print(f"fitted {sum(f.ok for f in fits)}/{len(args.images)} images in {fit_seconds:.2f} s "
          f"(compilation included) -> {args.output}")
    return 0 if failures == 0 else 2


def uv_layout_if_present():
    from flamejax.files import find_file

    path = find_file("uv_template", required=False)
    if path is None:
        log.info("no UV template found: meshes are written without texture coordinates")
        return None
    from flamejax.render import load_uv_layout

    return load_uv_layout(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamejax", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit FLAME to photographs")
    fit.add_argument("images", nargs="+", type=Path)
    add_fit_args(fit)
    fit.set_defaults(func=cmd_fit)
    from flamejax.batch import add_fit_dir_command

    add_fit_dir_command(sub)
    bench = sub.add_parser("bench", help="run the benchmarks (from a checkout): same as python -m benchmarks",
                           add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    convert = sub.add_parser("convert", add_help=False,
                             help="convert DECA / MICA checkpoints to ONNX: convert deca|mica CHECKPOINT -o OUT "
                                  "(needs the torch extra)")
    convert.add_argument("rest", nargs=argparse.REMAINDER)
    convert.set_defaults(func=cmd_convert)
    return parser


def cmd_bench(args) -> int:
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError:
        print("flamejax bench runs the benchmarks/ folder of a source checkout: run it from the checkout's root",
              file=sys.stderr)
        return 3
    return bench_main(args.rest) or 0


def cmd_convert(args) -> int:
    return convert(args.rest)


def convert(argv: list[str]) -> int:
    """Hands the arguments to :mod:`flamejax.convert`, imported only here (it needs torch)."""
    try:
        from flamejax.convert import main as convert_main
    except ImportError as err:
        print(f"flamejax convert needs PyTorch: pip install 'flamejax[convert]' ({err})", file=sys.stderr)
        return 3
    return convert_main(argv)


def _enable_compilation_cache() -> None:
    """With ``FLAMEJAX_COMPILE_CACHE=1``, keep compiled fits between runs (``FLAMEJAX_CACHE``/jax, default
    ~/.cache/flamejax/jax): a repeated ``flamejax fit`` skips the ~10 s compilation. Off by default: executables
    loaded from the cache can round differently (1e-4 in coefficients) from freshly compiled ones, which would
    break fit-dir's guarantee that a resumed run reproduces an uninterrupted one."""
    import os

    if os.environ.get("FLAMEJAX_COMPILE_CACHE") != "1":
        return
    import jax

    from flamejax.flame._model import cache_dir

    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception as err:  # noqa: BLE001 -- an unsupported option only costs speed
        log.info("no persistent compilation cache: %s", err)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # its own parser, which needs torch
        return convert(argv[1:])
    if argv[:1] == ["bench"]:
        return cmd_bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    _enable_compilation_cache()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from flamejax.files import CorruptFileError, MissingFileError

    try:
        return args.func(args)
    except (MissingFileError, CorruptFileError, NotADirectoryError) as err:
        print(f"flamejax: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
