"""`flamejax fit` end to end on real photographs: outputs, names, verdicts, exit codes, a quiet terminal."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image

from flamejax.cli import main
from tests.conftest import SHARED, requires_flame

pytestmark = [requires_flame, pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="no ../shared/images")]
FAST = ["--rigid-steps", "150", "--landmark-steps", "80", "--batch-size", "4", "--n-shape", "20", "--n-exp", "10",
        "--init", "linear"]


@contextlib.contextmanager
def terminal():
    """Capture file descriptors 1 and 2 (what a user's terminal would show, native libraries included)."""
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(mode="w+b") for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    captured = {}
    try:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        sys.stdout = open(os.dup(1), "w", buffering=1)
        sys.stderr = open(os.dup(2), "w", buffering=1)
        yield captured
    finally:
        sys.stdout.close(), sys.stderr.close()
        sys.stdout, sys.stderr = streams
        for fd, f in files.items():
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            f.seek(0)
            captured["out" if fd == 1 else "err"] = f.read().decode(errors="replace")
            f.close()


def run(argv: list[str]) -> tuple[int, str, str]:
    with terminal() as captured:
        code = main(argv)
    return code, captured["out"], captured["err"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    Image.fromarray(gradient).save(root / "no_face.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for folder, source in (("a", "ffhq_00001.png"), ("b", "ffhq_00002.png")):
        (root / folder).mkdir()
        shutil.copyfile(SHARED / "images" / source, root / folder / "photo.png")
    pair = [np.asarray(Image.open(SHARED / "images" / n).convert("RGB").resize((384, 384)))
            for n in ("ffhq_00012.png", "ffhq_00018.png")]
    Image.fromarray(np.concatenate(pair, axis=1)).save(root / "two.png")
    images = [SHARED / "images" / "ffhq_00000.png", root / "no_face.png", root / "a" / "photo.png",
              root / "b" / "photo.png", root / "broken.jpg", root / "two.png"]
    out = root / "out"
    result = run(["fit", *map(str, images), "-o", str(out), "--mesh", "obj,glb,ply", "--all-faces", *FAST])
    return result, out


def test_good_images_are_fitted_and_bad_ones_reported(fitted):
    (code, stdout, _), out = fitted
    assert code == 4, stdout  # some images failed
    for stem in ("ffhq_00000", "a_photo", "b_photo", "two_face0", "two_face1"):
        for suffix in (".json", ".npz", ".obj", ".glb", ".ply", "_overlay.png"):
            assert (out / f"{stem}{suffix}").is_file(), stem + suffix
    assert not list(out.glob("no_face*")) and not list(out.glob("broken*"))
    assert "broken.jpg: FAILED" in stdout and "no_face.png: FAILED" in stdout and "<array>" not in stdout
    assert "2 failed" in stdout and "compilation" in stdout


def test_images_of_the_same_name_keep_their_own_results(fitted):
    _, out = fitted
    a = json.loads((out / "a_photo.json").read_text())
    b = json.loads((out / "b_photo.json").read_text())
    assert a["name"].endswith("a/photo.png") and b["name"].endswith("b/photo.png")
    assert not np.allclose(a["shape"], b["shape"])


def test_the_terminal_holds_our_lines_only(fitted):
    (_, stdout, stderr), _ = fitted
    text = stdout + stderr
    for chatter in ("absl::InitializeLog", "TensorFlow Lite", "XNNPACK", "inference_feedback_manager", "W0000",
                    "I0000", "Traceback"):
        assert chatter not in text


def test_parameter_files_hold_what_users_expect(fitted):
    _, out = fitted
    record = json.loads((out / "ffhq_00000.json").read_text())
    for key in ("shape", "exp", "head_pose", "neck_pose", "jaw_pose", "eye_pose", "cam", "landmarks", "metrics",
                "provenance", "detection"):
        assert key in record
    assert len(record["shape"]) == 20 and len(record["exp"]) == 10 and len(record["eye_pose"]) == 6
    for key in ("yaw", "pitch", "roll", "x", "y", "z", "fov_deg", "K", "R_opencv", "camera_to_world_opengl"):
        assert key in record["cam"]
    assert record["status"] == "ok" and record["init"] == "linear" and record["mode"] == "landmark"
    assert record["provenance"]["n_shape"] == 20 and record["provenance"]["fit_config"]["fov_deg"] == 20.0
    assert record["metrics"]["nme_inner51"] < 0.05
    assert abs(record["cam"]["yaw"]) < 45 and abs(record["cam"]["roll"]) < 20  # upright, roughly frontal
    target = np.array(record["landmarks"]["lmk68_target_original"])
    fitted_points = np.array(record["landmarks"]["lmk68_fitted_original"])
    eye_distance = np.linalg.norm(target[36] - target[45])
    assert np.linalg.norm(fitted_points - target, axis=1).mean() / eye_distance < 0.06  # on the photograph too
    with np.load(out / "ffhq_00000.npz") as z:
        assert z["vertices"].shape == (5023, 3) and z["K"].shape == (3, 3) and str(z["status"]) == "ok"


def test_every_face_of_a_group_photo_is_fitted_apart(fitted):
    _, out = fitted
    faces = [json.loads((out / f"two_face{i}.json").read_text()) for i in range(2)]
    assert [f["detection"]["num_faces"] for f in faces] == [2, 2]
    assert [f["detection"]["face_index"] for f in faces] == [0, 1]
    left, right = (np.mean(np.array(f["landmarks"]["lmk68_target_original"])[:, 0]) for f in faces)
    assert left < 384 < right


def test_meshes_and_overlay_are_readable(fitted):
    _, out = fitted
    lines = (out / "ffhq_00000.obj").read_text().splitlines()
    vertices = np.array([[float(x) for x in line.split()[1:4]] for line in lines if line.startswith("v ")])
    assert len(vertices) == 5023 and sum(line.startswith("f ") for line in lines) == 9976  # FLAME order kept
    assert sum(line.startswith("vt ") for line in lines) > 5023  # with FLAME's UVs, seams split in vt only
    with np.load(out / "ffhq_00000.npz") as z:
        np.testing.assert_allclose(vertices, z["vertices"], atol=1e-6)
    glb = trimesh.load(out / "ffhq_00000.glb", force="mesh", process=False)
    assert glb.visual.uv.shape == (len(glb.vertices), 2)  # textured formats carry FLAME's UV layout
    assert trimesh.load(out / "ffhq_00000.ply", process=False).vertices.shape == (5023, 3)
    overlay = np.asarray(Image.open(out / "ffhq_00000_overlay.png"))
    assert overlay.shape[0] == 512 and overlay.shape[1] >= 1024


def test_a_file_as_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("a file")
    code, _, err = run(["fit", str(SHARED / "images" / "ffhq_00000.png"), "-o", str(tmp_path / "taken"), *FAST])
    assert code == 3 and "is a file" in err and "Traceback" not in err
    code, _, err = run(["fit", str(SHARED / "images" / "ffhq_00000.png"), "-o", str(tmp_path / "taken" / "x"),
                        *FAST])
    assert code == 3 and "cannot write there" in err


@pytest.mark.parametrize("option, message", [
    (["--mesh", "obj,stl"], "unknown mesh format stl"), (["--fov", "179"], "179 degrees is out of range"),
    (["--fov", "-20"], "out of range"), (["--rigid-steps", "-1"], "out of range"), (["--n-shape", "1000"], "1000"),
    (["--batch-size", "0"], "out of range")])
def test_bad_options_are_one_line_and_exit_2(option, message, tmp_path):
    code, _, err = run(["fit", "x.png", "-o", str(tmp_path / "out"), *option])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_optimised_fov_must_start_inside_its_range(tmp_path):
    code, _, err = run(["fit", str(SHARED / "images" / "ffhq_00000.png"), "-o", str(tmp_path), "--optimise-fov",
                        "--fov", "60"])
    assert code == 2 and "--fov 60" in err


def test_version_and_help(capsys):
    from flamejax import __version__

    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 20.0)" in text and ":class:" not in text and "``" not in text


def test_the_silhouette_can_be_switched_off():
    from flamejax.cli import build_parser, preprocess_config

    for command in (["fit", "a.jpg"], ["fit-dir", "in"]):
        on = build_parser().parse_args([*command, "-o", "out", "--face-index", "2"])
        off = build_parser().parse_args([*command, "-o", "out", "--no-silhouette"])
        assert preprocess_config(on).person_silhouette and preprocess_config(on).face_index == 2
        assert not preprocess_config(off).person_silhouette and preprocess_config(off, 1).face_index == 1


def test_annotations_fit_with_the_precise_configurations_in_both_stages():
    from flamejax.cli import build_parser, fit_config_from_args, photometric_from_args
    from flamejax.fit import PhotometricConfig, precise_landmarks_config, precise_photometric_config

    for command in (["fit", "a.jpg"], ["fit-dir", "in"]):
        annotated = build_parser().parse_args([*command, "-o", "out", "--mode", "photometric", "--annotations"])
        detected = build_parser().parse_args([*command, "-o", "out", "--mode", "photometric"])
        assert fit_config_from_args(annotated).landmark == precise_landmarks_config().landmark
        assert photometric_from_args(annotated).config == precise_photometric_config()
        assert photometric_from_args(detected).config == PhotometricConfig()
    precise = precise_photometric_config()
    assert (precise.shape_anchor, precise.landmarks.contour_identity) == (1.0, 1.0)
    assert (PhotometricConfig().shape_anchor, PhotometricConfig().landmarks.contour_identity) == (0.0, 0.0)
    assert precise.landmark_scale > PhotometricConfig().landmark_scale


def test_texture_filter_reaches_the_photometric_renderer():
    from flamejax.cli import build_parser, photometric_from_args

    for command in (["fit", "a.jpg"], ["fit-dir", "in"]):
        chosen = build_parser().parse_args([*command, "-o", "out", "--mode", "photometric", "--texture-filter",
                                            "trilinear"])
        assert photometric_from_args(chosen).config.raster.texture_filter == "trilinear"
        default = build_parser().parse_args([*command, "-o", "out", "--mode", "photometric"])
        assert photometric_from_args(default).config.raster.texture_filter == "bilinear"
    assert build_parser().parse_args(["track", "clip.mp4", "-o", "out", "--texture-filter", "trilinear"]
                                     ).texture_filter == "trilinear"
    code, _, err = run(["fit", "a.jpg", "-o", "out", "--texture-filter", "nearest"])
    assert code == 2 and "--texture-filter" in err


def test_several_photographs_of_one_person_share_one_identity(tmp_path):
    framed = tmp_path / "in" / "ffhq_00000.png"  # the photograph in a blue frame wider than the fit's crop
    framed.parent.mkdir()
    canvas = np.full((1600, 1600, 3), (160, 90, 30), np.uint8)
    canvas[288:1312, 288:1312] = cv2.imread(str(SHARED / "images" / "ffhq_00000.png"))
    cv2.imwrite(str(framed), canvas)
    photos = [framed, SHARED / "images" / "ffhq_00043.png"]
    code, stdout, err = run(["fit", *map(str, photos), "-o", str(tmp_path), "--same-person", "--mesh", "obj", *FAST])
    assert code in (0, 4), stdout + err  # 4 when one photograph is judged an outlier (they are two people)
    records = [json.loads((tmp_path / f"{p.stem}.json").read_text()) for p in photos]
    assert records[0]["shape"] == records[1]["shape"] and len(records[0]["shape"]) == 20
    assert records[0]["provenance"]["same_person"] == [str(p) for p in photos]
    assert all(r["detection"]["lost_on_crop"] is False and r["detection"]["searched"] is False
               and r["detection"]["lmk68_targets"] == "mediapipe"
               for r in records)
    assert records[0]["cam"] != records[1]["cam"]
    assert (tmp_path / "ffhq_00000.obj").is_file() and "one identity for 2 of 2" in stdout
    overlay = cv2.imread(str(tmp_path / "ffhq_00000_overlay.png"))  # the crop and the photograph, the mesh over both
    assert overlay.shape[0] == 512 and overlay.shape[1] > 512 and overlay[:, :512].std() > 10
    np.testing.assert_allclose(overlay[:40, 512:552].mean(axis=(0, 1)), (160, 90, 30), atol=3)  # the photograph's
    assert run(["fit", str(photos[0]), "-o", str(tmp_path), "--same-person"])[0] == 2


def test_several_photographs_of_one_person_photometric_share_one_albedo(tmp_path):
    photos = [SHARED / "images" / n for n in ("ffhq_00002.png", "ffhq_00012.png")]
    code, stdout, err = run(["fit", *map(str, photos), "-o", str(tmp_path), "--same-person", "--mode", "photometric",
                             "--photometric-steps", "8", "--mesh", "obj", "--no-overlay", *FAST])
    assert code in (0, 4), stdout + err
    records = [json.loads((tmp_path / f"{p.stem}.json").read_text()) for p in photos]
    assert all(r["mode"] == "photometric" for r in records) and records[0]["shape"] == records[1]["shape"]
    assert all(np.isfinite(r["photometric"]["l1_final"]) for r in records)
    assert (tmp_path / "same_person_texture.png").is_file() and "one identity for 2 of 2" in stdout
    shared = cv2.imread(str(tmp_path / "same_person_texture.png"))
    for photo in photos:  # each photograph's textured mesh carries the one albedo; its render beside it
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / f"{photo.stem}_texture.png")), shared)
        assert "map_Kd" in (tmp_path / f"{photo.stem}_textured.mtl").read_text()
        render = cv2.imread(str(tmp_path / f"{photo.stem}_render.png"))
        assert render.shape[1] == 3 * render.shape[0]
    assert not any(tmp_path.glob("*_overlay.png"))  # --no-overlay
