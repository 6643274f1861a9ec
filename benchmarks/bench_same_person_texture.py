"""Several photographs of one person: how their one albedo explains each of them (``fit --same-person --mode
photometric``).

    PYTHONPATH=. python3 benchmarks/bench_same_person_texture.py [--quick] [--views 5] [--clips 6]

Takes ``--views`` frames (default 5; 3 with ``--quick``) spread evenly over each of the first ``--clips`` shared
videos (default 6; 2 with ``--quick``; ``../shared/videos``; one person each, looking, talking, laughing, a hand over
the mouth), fits them as photographs of one person
(:func:`flamejax.track.fit_same_person_photos`) and refines the joint fit against their pixels with one identity and
one albedo (:func:`flamejax.track.refine_same_person_photometric`) three ways: the albedo as the stage fits it
(``bake_texels=False``), baked at the end from every view's pixels added up (``bake_view_spread=None``), and baked
with each view's pixels of a texel weighted down where they disagree with the others' (the default). Per view: the
masked L1 of the textured render against the photograph (the photometric stage's pixel weights, RGB in [0, 1];
geometry and light are the same for the three, only the albedo differs) and the stage's seconds. Writes
``benchmarks/results/same_person_texture.json``, its RESULTS.md section, and
``benchmarks/results/photometric/same_person_texture.jpg``: per clip the frames, then each way's renders and its UV
albedo.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import jax
import numpy as np

from benchmarks._common import RESULTS_DIR, ROOT, result, result_path, save_and_report, table
from flamejax.fit import PhotometricConfig
from flamejax.flame import load_flame
from flamejax.fitter import find_uv_layout
from flamejax.track import fit_same_person_photos, refine_same_person_photometric

NAME = "same_person_texture"
TITLE = "Several photographs' albedo: fitted, baked from all of them, baked from what they agree on"
VIDEOS = ROOT.parent / "shared" / "videos"
PICTURE = RESULTS_DIR / "photometric" / "same_person_texture.jpg"
WAYS = {"fitted (bake_texels=False)": PhotometricConfig(bake_texels=False),
        "baked, views added up (bake_view_spread=None)": PhotometricConfig(bake_view_spread=None),
        "baked, views that agree (default)": PhotometricConfig()}
NOTE = ("Masked L1 of each view's textured render against its photograph (lower: the albedo explains the pictures "
        "better), mean over the views; every way refines the same joint landmark fit with the same stage, so the "
        "geometry, light and NME are the same and only the albedo differs. A view whose pixels the others outvote "
        "(a hand over the mouth in it only) is explained less well by an albedo that leaves its occluder out: "
        "that view's error rises while the others' fall.")


def clip_frames(video: Path, views: int, folder: Path) -> list[Path]:
    """``views`` frames spread evenly over ``video`` (neither the first nor the last), written as PNG."""
    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    paths = []
    for index in np.linspace(0, count - 1, views + 2)[1:-1].astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if not ok:
            raise RuntimeError(f"{video}: frame {index} could not be read")
        paths.append(folder / f"{video.stem}_{index:05d}.png")
        cv2.imwrite(str(paths[-1]), frame)
    capture.release()
    return paths


def _montage(rows: list[np.ndarray]) -> np.ndarray:
    return (np.clip(np.concatenate(rows, 0), 0.0, 1.0) * 255).astype(np.uint8)[..., ::-1]


def run(quick: bool = True, views: int | None = None, clips: int | None = None) -> dict:
    views, clips = views or (3 if quick else 5), clips or (2 if quick else 6)
    model = load_flame(n_shape=100, n_expression=50)
    uv = find_uv_layout(required=True)
    videos = sorted(VIDEOS.glob("*.mp4"))[:clips]
    rows, per_view, seconds, picture = [], {}, {}, []
    with tempfile.TemporaryDirectory() as folder:
        for video in videos:
            joint, items = fit_same_person_photos(model, clip_frames(video, views, Path(folder)))
            images = np.stack([item.image for item in items])
            size = images.shape[1]
            picture.append(np.concatenate(list(images) + [np.zeros_like(images[0])], 1))
            errors = {}
            for way, config in WAYS.items():
                clock = time.perf_counter()
                refined = jax.tree.map(np.asarray, refine_same_person_photometric(model, uv, joint, items, config))
                seconds.setdefault(way, []).append(time.perf_counter() - clock)
                errors[way] = refined.photometric.photometric_final
                texture = cv2.resize(refined.photometric.texture[0], (size, size), interpolation=cv2.INTER_AREA)
                picture.append(np.concatenate(list(refined.photometric.render) + [texture], 1))
            fitted = errors[next(iter(WAYS))]
            for way, error in errors.items():
                rows.append([video.stem, way, float(error.mean()), float(np.mean(error / fitted)),
                             " / ".join(f"{e:.4f}" for e in error)])
            per_view[video.stem] = {way: error.tolist() for way, error in errors.items()}
            per_view[video.stem]["status"] = list(joint.status)
    PICTURE.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(PICTURE), cv2.resize(_montage(picture), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    speed = [[way, float(np.median(s[1:] if len(s) > 1 else s))] for way, s in seconds.items()]
    tables = [table("Masked L1 of each view's render (frames of one clip as photographs of one person)",
                    ["clip", "albedo", "mean over views", "mean ratio to fitted", "per view"], rows, NOTE),
              table("Stage seconds (median over the clips after the first; wall, compile excluded)",
                    ["albedo", "s"], speed)]
    settings = {"views per clip": views, "clips": ", ".join(v.stem for v in videos),
                "model": "100 identity + 50 expression components", "stage": "PhotometricConfig() (joint_pyramid)",
                "picture": str(PICTURE.relative_to(ROOT))}
    return result(NAME, TITLE, "quick" if quick else "full", settings, tables, {"per_view": per_view})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 frames of 2 clips (default: 5 frames of 6 clips)")
    parser.add_argument("--views", type=int, default=None, help="frames per clip")
    parser.add_argument("--clips", type=int, default=None, help="how many of the shared videos")
    args = parser.parse_args()
    save_and_report(run(args.quick, args.views, args.clips), result_path(NAME))


if __name__ == "__main__":
    main()
