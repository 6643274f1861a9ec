"""Hand-annotated 68 points (.pts) as fitting targets: reading, checking, targets, `flamejax fit --annotations`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flamejax.fitter import targets_of
from flamejax.perception import (AnnotationError, annotated, load_image, preprocess, read_pts, to_68,
                                 transform_points)
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
def test_annotation_of_another_face_is_refused(item):
    elsewhere = transform_points(item.fit_to_original, to_68(item.points478))
    elsewhere = elsewhere + np.float32(np.ptp(elsewhere[:, 0]) * 1.5)
    with pytest.raises(AnnotationError, match="do not lie on the face"):
        annotated(item, elsewhere, "other.pts")
    with pytest.raises(AnnotationError, match="68 finite"):
        annotated(item, np.zeros((5, 2)), "short.pts")


@requires_flame
@needs_photo
def test_fit_with_annotations_end_to_end(tmp_path, item):
    from flamejax.cli import EXIT_SOME_FAILED, EXIT_USAGE
    from tests.test_cli import FAST, run

    truth = transform_points(item.fit_to_original, to_68(item.points478))
    shutil.copyfile(PHOTO, tmp_path / "annotated.png")
    write_pts(tmp_path / "annotated.pts", truth)
    shutil.copyfile(PHOTO, tmp_path / "unannotated.png")
    out = tmp_path / "out"
    code, stdout, stderr = run(["fit", str(tmp_path / "annotated.png"), str(tmp_path / "unannotated.png"),
                                "-o", str(out), "--annotations", "--mesh", "none", "--no-overlay", *FAST])
    assert code == EXIT_SOME_FAILED, (stdout, stderr)
    assert f"{tmp_path / 'unannotated.pts'}: no such annotation file" in stdout
    record = json.loads((out / "annotated.json").read_text())
    assert record["status"] == "ok" and record["detection"]["lmk68_targets"] == "annotation"
    np.testing.assert_allclose(np.asarray(record["landmarks"]["lmk68_target_original"]), truth, atol=0.05)
    assert record["metrics"]["nme_inner51"] < 0.05
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
