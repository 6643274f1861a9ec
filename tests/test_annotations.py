"""Hand-annotated 68 points (.pts, AFLW2000-3D .mat) as fitting targets: reading, checking, targets,
`flamejax fit --annotations`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flamejax.fitter import targets_of
from flamejax.perception import (AnnotationError, annotated, annotation_beside, load_image, preprocess,
                                 read_aflw_mat, read_annotation, read_pts, to_68, transform_points)
from tests.conftest import SHARED, requires_flame

PHOTO = SHARED / "images" / "ffhq_00002.png"
needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason="no ../shared/images")


def write_pts(path, points, n_points: int | None = None) -> None:
    """``points`` (flamejax pixels) as an iBUG .pts file (1-based coordinates)."""
    body = "\n".join(f"{x + 0.5:.3f} {y + 0.5:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {n_points or len(points)}\n{{\n{body}\n}}\n")


def test_read_pts_moves_one_based_points_to_pixel_centres(tmp_path):
    points = np.random.default_rng(0).uniform(0, 500, (68, 2)).astype(np.float32)
    write_pts(tmp_path / "a.pts", points)
    read = read_pts(tmp_path / "a.pts")
    assert read.shape == (68, 2) and read.dtype == np.float32
    np.testing.assert_allclose(read, points, atol=1e-3)


@pytest.mark.parametrize("content, message", [
    (None, "no such annotation file"),
    ("version: 1\nn_points: 5\n{\n1 2\n3 4\n5 6\n7 8\n9 10\n}\n", "n_points is '5'"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", "67 point lines"),
    ("version: 1\nn_points: 68\n{\n" + "1 two\n" * 68 + "}\n", "not two numbers"),
    ("version: 1\nn_points: 68\n{\n" + "1 nan\n" * 68 + "}\n", "not a finite number"),
    ("68 points without a header\n" + "1 2\n" * 68, "no 'n_points:' header"),
    (b"\x80\x81\xfe\xff" * 10, "not readable as text"),
    ("x" * 70000, "too large"),
])
def test_bad_annotation_files_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.pts"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(AnnotationError) as err:
        read_pts(path)
    text = str(err.value)
    assert message in text and str(path) in text and "iBUG" in text and "\n" not in text


def write_mat(path, points) -> None:
    """``points`` (flamejax pixels) as an AFLW2000-3D .mat file (``pt3d_68``: rows x, y, z, 1-based)."""
    from scipy.io import savemat

    xyz = np.concatenate([np.asarray(points, np.float64) + 0.5, np.zeros((68, 1))], axis=1)
    savemat(path, {"pt3d_68": xyz.T, "Pose_Para": np.zeros((1, 7))}, do_compression=True)


def test_read_aflw_mat_gives_the_inner_51_at_pixel_centres(tmp_path):
    from scipy.io import savemat

    points = np.random.default_rng(1).uniform(0, 450, (68, 2)).astype(np.float32)
    write_mat(tmp_path / "a.mat", points)
    read = read_annotation(tmp_path / "a.mat")
    assert read.shape == (68, 2) and read.dtype == np.float32
    assert np.all(np.isnan(read[:17])) and np.all(np.isfinite(read[17:]))  # the projected 3D jaw is not fitted
    np.testing.assert_allclose(read[17:], points[17:], atol=1e-4)
    savemat(tmp_path / "rows.mat", {"pt3d_68": np.concatenate([points + 0.5, np.ones((68, 1))], axis=1)})
    np.testing.assert_allclose(read_aflw_mat(tmp_path / "rows.mat")[17:], points[17:], atol=1e-4)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such annotation file"),
    ("no_points", "no variable pt3d_68"),
    ("short", "expected 68 numeric points"),
    ("nan", "68 finite (x, y) points"),
    ("text", "pt3d_68 is <U"),
    ("garbage", "not a readable MATLAB file"),
    ("v73", "v7.3"),
    ("huge", "too large"),
])
def test_bad_mat_files_are_one_clear_line(tmp_path, case, message):
    from scipy.io import savemat

    path = tmp_path / "bad.mat"
    if case == "no_points":
        savemat(path, {"pt2d": np.zeros((2, 21))})
    elif case == "short":
        savemat(path, {"pt3d_68": np.zeros((3, 21))})
    elif case == "nan":
        savemat(path, {"pt3d_68": np.full((3, 68), np.nan)})
    elif case == "text":
        savemat(path, {"pt3d_68": np.array(["x" * 68] * 68)})
    elif case == "garbage":
        path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 4)
    elif case == "v73":  # a v7.3 header: HDF5 inside, which scipy does not read
        path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM" + b"\x00" * 512)
    elif case == "huge":
        path.write_bytes(b"\x00" * 70000)
    with pytest.raises(AnnotationError) as err:
        read_annotation(path)
    text = str(err.value)
    assert message in text and str(path) in text and "AFLW2000-3D" in text and "\n" not in text


def test_annotation_beside_prefers_pts_then_mat(tmp_path):
    image = tmp_path / "face.jpg"
    with pytest.raises(AnnotationError, match="face.pts: no such annotation file .nor face.mat"):
        annotation_beside(image)
    write_mat(tmp_path / "face.mat", np.zeros((68, 2)))
    assert annotation_beside(image) == tmp_path / "face.mat"
    write_pts(tmp_path / "face.pts", np.zeros((68, 2)))
    assert annotation_beside(image) == tmp_path / "face.pts"
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotation(tmp_path / "face.txt")


@pytest.fixture(scope="module")
def item():
    if not PHOTO.is_file():
        pytest.skip("no ../shared/images")
    return preprocess(load_image(PHOTO))


@needs_photo
def test_annotation_becomes_the_68_point_targets(item):
    truth = transform_points(item.fit_to_original, to_68(item.points478)) + np.float32(1.5)
    marked = annotated(item, truth, "photo.pts")
    np.testing.assert_allclose(marked.annotated68, transform_points(item.original_to_fit, truth), atol=1e-3)
    assert any("photo.pts" in note for note in marked.notes)
    targets, plain = targets_of(marked), targets_of(item)
    size = item.image.shape[0]
    np.testing.assert_allclose(np.asarray(targets.lmk68), (marked.annotated68 / size) * 2 - 1, atol=1e-5)
    assert np.all(np.asarray(targets.mediapipe_weight) == 0) and np.all(np.asarray(targets.lmk68_weight) == 1)
    np.testing.assert_allclose(np.asarray(targets.iris), np.asarray(plain.iris))


@needs_photo
def test_points_left_out_of_an_annotation_get_no_weight(item):
    truth = transform_points(item.fit_to_original, to_68(item.points478))
    truth[:17] = np.nan
    targets = targets_of(annotated(item, truth, "photo.mat"))
    weight = np.asarray(targets.lmk68_weight)
    assert np.all(weight[:17] == 0) and np.all(weight[17:] == 1) and np.all(np.isfinite(np.asarray(targets.lmk68)))
    truth[30] = np.nan
    with pytest.raises(AnnotationError, match="inner 51"):
        annotated(item, truth, "photo.mat")


@needs_photo
def test_annotation_of_another_face_is_refused(item):
    elsewhere = transform_points(item.fit_to_original, to_68(item.points478))
    elsewhere = elsewhere + np.float32(np.ptp(elsewhere[:, 0]) * 1.5)
    with pytest.raises(AnnotationError, match="do not lie on the face"):
        annotated(item, elsewhere, "other.pts")
    with pytest.raises(AnnotationError, match="68 .x, y. points"):
        annotated(item, np.zeros((5, 2)), "short.pts")


@requires_flame
@needs_photo
def test_fit_with_annotations_end_to_end(tmp_path, item):
    from flamejax.cli import EXIT_SOME_FAILED, EXIT_USAGE
    from tests.test_cli import FAST, run

    truth = transform_points(item.fit_to_original, to_68(item.points478))
    shutil.copyfile(PHOTO, tmp_path / "annotated.png")
    write_pts(tmp_path / "annotated.pts", truth)
    shutil.copyfile(PHOTO, tmp_path / "aflw.png")
    write_mat(tmp_path / "aflw.mat", truth)
    shutil.copyfile(PHOTO, tmp_path / "unannotated.png")
    out = tmp_path / "out"
    code, stdout, stderr = run(["fit", str(tmp_path / "annotated.png"), str(tmp_path / "aflw.png"),
                                str(tmp_path / "unannotated.png"), "-o", str(out), "--annotations", "--mesh", "none",
                                "--no-overlay", *FAST])
    assert code == EXIT_SOME_FAILED, (stdout, stderr)
    assert f"{tmp_path / 'unannotated.pts'}: no such annotation file (nor unannotated.mat" in stdout
    record = json.loads((out / "annotated.json").read_text())
    assert record["status"] == "ok" and record["detection"]["lmk68_targets"] == "annotation"
    np.testing.assert_allclose(np.asarray(record["landmarks"]["lmk68_target_original"]), truth, atol=0.05)
    assert record["metrics"]["nme_inner51"] < 0.05
    aflw = json.loads((out / "aflw.json").read_text())
    assert aflw["status"] == "ok" and aflw["detection"]["lmk68_targets"] == "annotation"
    target = aflw["landmarks"]["lmk68_target_original"]
    assert all(point == [None, None] for point in target[:17])  # the jaw of an AFLW2000-3D file is not fitted
    np.testing.assert_allclose(np.asarray(target[17:], np.float64), truth[17:], atol=0.05)
    assert aflw["metrics"]["nme_inner51"] < 0.05
    assert not (out / "unannotated.json").exists()
    code, _, stderr = run(["fit", str(tmp_path / "annotated.png"), "-o", str(out), "--annotations", "--same-person"])
    assert code == EXIT_USAGE and "--annotations" in stderr


@requires_flame
@needs_photo
def test_fit_dir_with_annotations_fails_only_the_unannotated(tmp_path, item):
    import csv

    from flamejax.cli import EXIT_SOME_FAILED, main
    from tests.test_fitdir import ARGS

    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("annotated.png", "unannotated.png"):
        shutil.copyfile(PHOTO, photos / name)
    truth = transform_points(item.fit_to_original, to_68(item.points478))
    write_pts(photos / "annotated.pts", truth)
    out = tmp_path / "out"
    assert main(["fit-dir", str(photos), "-o", str(out), *ARGS, "--annotations"]) == EXIT_SOME_FAILED
    rows = {row["image"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    assert rows["annotated.png"]["status"] == "ok" and float(rows["annotated.png"]["nme_inner51"]) < 0.05
    assert rows["unannotated.png"]["status"] == "failed"
    assert "unannotated.pts: no such annotation file" in rows["unannotated.png"]["reason"]
    record = json.loads((out / "annotated.json").read_text())
    assert record["detection"]["lmk68_targets"] == "annotation"
