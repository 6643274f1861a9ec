"""Tests of flamejax.perception: image input, landmarks, 68/iris layout, alignment, masks, ONNX, preprocess."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import flamejax.files
import flamejax.perception as fp
import flamejax.perception._landmarks as landmarks_module
import flamejax.perception._mask as mask_module
import flamejax.perception._preprocess as preprocess_module
from flamejax.files import CorruptFileError, MissingFileError

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGES = SHARED / "images"
PHOTOS = sorted(p.name for p in IMAGES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) \
    if IMAGES.is_dir() else []
FFHQ = [name for name in PHOTOS if name.startswith("ffhq")]
needs_photos = pytest.mark.skipif(not PHOTOS, reason=f"shared photographs not found in {IMAGES}")



# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    if not PHOTOS:
        pytest.skip(f"shared photographs not found in {IMAGES}")
    return {name: fp.load_image(IMAGES / name) for name in PHOTOS}


@pytest.fixture(scope="module")
def faces(photos) -> dict[str, fp.FaceLandmarks]:
    return {name: fp.detect_landmarks(image, name=name) for name, image in photos.items()}


@pytest.fixture(scope="module")
def no_models(tmp_path_factory):
    """Search folders without any weights, so that no parsing or matting model is found by default."""
    empty = tmp_path_factory.mktemp("no_weights")
    patch = pytest.MonkeyPatch()
    patch.setattr(flamejax.files, "search_dirs", lambda: [empty])
    yield
    patch.undo()


@pytest.fixture(scope="module")
def preprocessed(photos, no_models) -> dict[str, fp.Preprocessed]:
    return {name: fp.preprocess(IMAGES / name) for name in photos}


def interocular(lmk68: np.ndarray) -> float:
    return float(np.linalg.norm(lmk68[45] - lmk68[36]))


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """A deterministic colourful RGB8 test picture."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], axis=2).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- image input


@pytest.mark.parametrize("fmt, options, exact", [
    ("PNG", {}, True), ("BMP", {}, True), ("TIFF", {}, True), ("WEBP", {"lossless": True}, True),
    ("JPEG", {"quality": 95}, False), ("WEBP", {"quality": 90}, False),
])
def test_load_image_formats(tmp_path, fmt, options, exact):
    picture = pattern()
    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(encode(picture, fmt, **options))
    for source in (path, str(path), path.read_bytes()):
        loaded = fp.load_image(source)
        assert loaded.shape == picture.shape and loaded.dtype == np.uint8
        error = np.abs(loaded.astype(int) - picture).mean()
        assert error == 0 if exact else error < 6


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_image_applies_exif_orientation(fmt):
    picture = pattern(40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displaying needs a quarter turn clockwise
    loaded = fp.load_image(encode(picture, fmt, exif=exif.tobytes()))
    expected = np.rot90(picture, k=-1)
    assert loaded.shape == expected.shape == (64, 40, 3)
    assert np.abs(loaded.astype(int) - expected).mean() < (0.01 if fmt == "PNG" else 6)


def test_load_image_converts_grayscale_palette_and_alpha():
    gray = pattern()[:, :, 0]
    loaded = fp.load_image(encode(gray, "PNG"))
    assert loaded.shape == (48, 64, 3) and all(np.array_equal(loaded[:, :, c], gray) for c in range(3))

    palette = Image.fromarray(pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, "GIF")
    assert np.array_equal(fp.load_image(buffer.getvalue()), np.asarray(palette.convert("RGB")))

    rgba = np.concatenate([pattern(), np.full((48, 64, 1), 255, np.uint8)], axis=2)
    rgba[:, :32, 3] = 0
    rgba[:, 32:48, 3] = 128
    loaded = fp.load_image(encode(rgba, "PNG"))
    assert np.all(loaded[:, :32] == 255), "transparent pixels are composited over white"
    assert np.array_equal(loaded[:, 48:], rgba[:, 48:, :3])
    half = np.rint(rgba[:, 32:48, :3] * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(loaded[:, 32:48].astype(int) - half).max() <= 1


def test_load_image_keeps_16_bit_range(tmp_path):
    gray16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    loaded = fp.load_image(encode(gray16, "PNG"))
    assert np.array_equal(loaded[:, :, 1], np.rint(gray16 / 257).astype(np.uint8))

    rgb16 = np.stack([gray16, 65535 - gray16, gray16 // 2], axis=2)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[:, :, ::-1])
    loaded = fp.load_image(tmp_path / "rgb16.png")
    assert np.abs(loaded.astype(int) - rgb16 / 257).max() <= 1


@pytest.mark.parametrize("array, expected", [
    (np.full((40, 40), 0.5, np.float32), 128),
    (np.full((40, 40, 3), 200.0), 200),
    (np.full((40, 40, 1), 65535, np.uint16), 255),
    (np.ones((40, 40), bool), 255),
    (np.full((40, 40, 3), 77, np.int64), 77),
])
def test_to_rgb8_array_dtypes(array, expected):
    converted = fp.load_image(array)
    assert converted.shape == (40, 40, 3) and converted.dtype == np.uint8
    assert np.all(converted == expected)


def test_load_image_returns_uint8_rgb_arrays_unchanged():
    picture = pattern()
    assert np.array_equal(fp.load_image(picture), picture)


def _truncated_jpeg() -> bytes:
    data = encode(pattern(256, 256), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "empty.jpg", "empty file"),
    (lambda d: d / "truncated.jpg", "truncated or corrupt JPEG"),
    (lambda d: d / "header.png", "truncated or corrupt PNG"),
    (lambda d: d / "notes.png", "not an image"),
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: d, "is a folder"),
])
def test_load_image_unreadable_files(tmp_path, make, message):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(_truncated_jpeg())
    (tmp_path / "header.png").write_bytes(encode(pattern(), "PNG")[:40])
    (tmp_path / "notes.png").write_bytes(b"these are not pixels\n" * 10)
    path = make(tmp_path)
    with pytest.raises(fp.ImageReadError, match=message) as raised:
        fp.load_image(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, fp.PerceptionError) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("array", [
    np.zeros((40, 40, 2), np.uint8), np.zeros((40, 40, 3, 1), np.uint8), np.zeros((0, 40, 3), np.uint8),
    np.full((40, 40, 3), np.nan, np.float32), np.full((40, 40, 3), -5, np.int32), np.zeros((40, 40), complex),
])
def test_load_image_rejects_unusable_arrays(array):
    with pytest.raises(fp.ImageReadError, match="<array>"):
        fp.load_image(array)


def test_tiny_images_are_too_small(tmp_path):
    (tmp_path / "dot.png").write_bytes(encode(np.zeros((1, 1, 3), np.uint8), "PNG"))
    with pytest.raises(fp.ImageTooSmallError, match=r"dot\.png: image is 1x1"):
        fp.load_image(tmp_path / "dot.png")
    with pytest.raises(fp.ImageTooSmallError):
        fp.detect_landmarks(np.zeros((20, 300, 3), np.uint8))
    with pytest.raises(fp.ImageTooSmallError):
        fp.preprocess(tmp_path / "dot.png")
    assert fp.load_image(tmp_path / "dot.png", min_side=1).shape == (1, 1, 3)


def test_load_image_rejects_other_types():
    with pytest.raises(TypeError):
        fp.load_image(12345)


# ---------------------------------------------------------------------------------------------- landmarks


def test_no_face_in_a_gradient(tmp_path):
    gradient = np.repeat(np.linspace(0, 255, 640)[None, :, None], 480, axis=0).repeat(3, axis=2).astype(np.uint8)
    with pytest.raises(fp.NoFaceError, match=r"<array>: no face found in the 640x480 image"):
        fp.detect_landmarks(gradient)
    (tmp_path / "gradient.png").write_bytes(encode(gradient, "PNG"))
    with pytest.raises(fp.NoFaceError, match="gradient.png"):
        fp.preprocess(tmp_path / "gradient.png")


@needs_photos
def test_a_face_is_found_on_every_photo(photos, faces):
    for name, face in faces.items():
        height, width = photos[name].shape[:2]
        assert face.points.shape == (478, 2) and face.points.dtype == np.float32
        assert face.depth.shape == (478,) and np.all(np.isfinite(face.depth))
        assert np.all(face.points >= 0) and np.all(face.points <= (width, height)), name
        assert face.num_faces == 1 and face.face_index == 0
        assert 0.5 < face.confidence <= 1.0, (name, face.confidence)
        np.testing.assert_allclose(face.box, [*face.points.min(axis=0), *face.points.max(axis=0)])


@needs_photos
def test_68_points_are_in_ibug_order(faces):
    for name in FFHQ:
        lmk = fp.to_68(faces[name].points)
        x, y = lmk[:, 0], lmk[:, 1]
        assert x[36] < x[39] < x[42] < x[45], name
        assert x[0] < x[8] < x[16] and y[8] > max(y[0], y[16]), f"{name}: jaw from image left via the chin"
        nose = lmk[27:36].mean(axis=0)
        around = np.unwrap(np.arctan2(y[0:17] - nose[1], x[0:17] - nose[0]))
        assert np.all(np.diff(around) < 0), f"{name}: jaw points follow the contour in order"
        assert np.all(np.diff(x[17:22]) > 0) and np.all(np.diff(x[22:27]) > 0), name
        assert np.all(np.diff(y[27:31]) > 0) and np.all(np.diff(x[31:36]) > 0), name
        assert max(y[18:26]) < min(y[36:48]) < max(y[36:48]) < min(y[31:36]) < min(y[48:68]), name
        assert y[17] < y[36] and y[26] < y[45], f"{name}: brow ends (as low as the upper lid in FLAME's layout)"
        assert y[37] < y[41] and y[38] < y[40] and y[43] < y[47] and y[44] < y[46], name
        closed = 0.02 * interocular(lmk)  # a closed mouth's inner lip points coincide
        assert x[48] < x[51] < x[54] and y[51] < y[62] < y[66] + closed and y[66] < y[57], name


@needs_photos
def test_iris_points_sit_in_the_eyes(faces):
    for name in FFHQ:
        points = faces[name].points
        lmk, iris = fp.to_68(points), fp.to_iris(points)
        np.testing.assert_array_equal(iris, points[468:478])
        assert lmk[36, 0] < iris[0, 0] < lmk[39, 0], f"{name}: 468 is the image-left (subject's right) eye"
        assert lmk[42, 0] < iris[5, 0] < lmk[45, 0], name
        for centre in (0, 5):
            ring = iris[centre + 1: centre + 5]
            np.testing.assert_allclose(ring.mean(axis=0), iris[centre], atol=0.1 * interocular(lmk))


@needs_photos
def test_68_points_of_a_mirrored_photo_are_mirrored(photos, faces):
    name = FFHQ[2]
    image = photos[name]
    mirrored = fp.to_68(fp.detect_landmarks(image[:, ::-1].copy()).points)
    mirrored[:, 0] = image.shape[1] - mirrored[:, 0]
    lmk = fp.to_68(faces[name].points)
    error = np.linalg.norm(lmk - mirrored[fp.IBUG68_MIRROR], axis=1) / interocular(lmk)
    assert error.mean() < 0.03 and error.max() < 0.08, error


def test_mediapipe_mirror_table():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    mirror = fp.MEDIAPIPE_MIRROR
    assert mirror.shape == (478,) and sorted(mirror.tolist()) == list(range(478))
    np.testing.assert_array_equal(mirror[mirror], np.arange(478))
    assert mirror[33] == 263 and mirror[61] == 291 and mirror[468] == 473 and mirror[127] == 356
    assert all(mirror[i] == i for i in (0, 1, 4, 6, 152, 168))
    edges = {frozenset(edge) for edge in FACEMESH_TESSELATION}
    kept = sum(frozenset(mirror[list(edge)].tolist()) in edges for edge in edges)
    assert kept >= len(edges) - 6, (kept, len(edges))
    # the 68 conversion, built from FLAME's symmetric head independently of this table, agrees with it
    table = fp.IBUG68_FROM_MEDIAPIPE
    np.testing.assert_allclose(table[fp.IBUG68_MIRROR][:, mirror], table, atol=2e-3)


@needs_photos
def test_mirrored_detection_is_renumbered_into_the_photo(photos, faces, preprocessed):
    name = FFHQ[2]
    face = faces[name]
    mirrored = fp.redetect_mirrored(photos[name], face)
    width = photos[name].shape[1]
    np.testing.assert_allclose(face.unmirrored(width).unmirrored(width).points, face.points, atol=1e-3)
    error = np.linalg.norm(mirrored.points - face.points, axis=1) / interocular(fp.to_68(face.points))
    assert np.median(error) < 0.02 and error.mean() < 0.03, (np.median(error), error.mean())
    item = preprocessed[name]
    error = np.linalg.norm(item.mirrored478 - item.points478, axis=1) / interocular(item.lmk68)
    assert error.mean() < 0.03, error.mean()
    unchecked = fp.preprocess(photos[name], fp.PreprocessConfig(mirror_check=False, use_parsing=False))
    assert unchecked.mirrored478 is None
    np.testing.assert_allclose(unchecked.points478, item.points478, atol=1e-4)


def test_68_conversion_table():
    weights = fp.IBUG68_FROM_MEDIAPIPE
    assert weights.shape == (68, 478)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert not weights[:, 468:].any(), "iris points are not used in the 68 layout"
    points = np.random.default_rng(0).normal(size=(478, 3))
    np.testing.assert_allclose(fp.to_68(points), weights @ points)
    np.testing.assert_allclose(fp.to_68(points[:468]), weights[:, :468] @ points[:468])
    assert fp.to_68(points.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError):
        fp.to_68(points[:68])
    with pytest.raises(ValueError):
        fp.to_iris(points[:468])


@needs_photos
def test_several_faces_largest_by_default_or_chosen(photos):
    big = cv2.resize(photos[FFHQ[2]], (420, 420), interpolation=cv2.INTER_AREA)
    small = cv2.resize(photos[FFHQ[4]], (300, 300), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 800, 3), 90, np.uint8)
    canvas[30:330, 20:320] = small
    canvas[30:450, 360:780] = big
    largest = fp.detect_landmarks(canvas)
    assert largest.num_faces == 2 and largest.face_index == 1
    assert largest.box[0] > 360
    left = fp.detect_landmarks(canvas, face_index=0)
    assert left.face_index == 0 and left.box[2] < 320
    with pytest.raises(fp.FaceIndexError, match="face index 2 asked for, but 2 face"):
        fp.detect_landmarks(canvas, face_index=2)
    with pytest.raises(IndexError):
        fp.detect_landmarks(canvas, face_index=-1)


@needs_photos
def test_small_face_in_a_large_picture(photos, faces):
    name = FFHQ[2]
    canvas = np.full((2400, 2400, 3), 120, np.uint8)
    canvas[1500:1700, 300:500] = cv2.resize(photos[name], (200, 200), interpolation=cv2.INTER_AREA)
    face = fp.detect_landmarks(canvas)
    expected = faces[name].points * (200 / 1024) + (300, 1500)
    assert np.abs(face.points - expected).mean() < 1.5


@needs_photos
def test_a_face_found_in_a_mirrored_crop_only_is_mapped_back_with_its_numbering(photos, faces):
    name = FFHQ[2]
    face = faces[name]
    (points, depth), = landmarks_module._faces_in_boxes(photos[name], [(0.9, face.box.astype(np.float64))],
                                                         ((1.6, True),))
    error = np.linalg.norm(points - face.points, axis=1) / interocular(fp.to_68(face.points))
    assert np.median(error) < 0.02 and error.mean() < 0.03, (np.median(error), error.mean())
    assert np.corrcoef(depth, face.depth)[0, 1] > 0.95


def test_when_facemesh_misses_a_face_it_is_tried_on_crops_around_each_detector_box(monkeypatch):
    """FaceMesh's own detector misses the face on the whole picture (a turned head) while BlazeFace's short-range
    model finds a box: FaceMesh runs on crops around it, and on their mirror images, until it finds a face that
    overlaps the box."""
    image = np.zeros((400, 600, 3), np.uint8)
    image[:, 300:] = 255
    box = np.array([320.0, 100.0, 420.0, 220.0])  # the crops' sides: 2.2 x 120 = 264 pixels, scale 1
    spread = np.random.default_rng(0).uniform((-50.0, -60.0), (50.0, 60.0), (478, 2))
    tried = []

    def mesh_faces(picture):
        tried.append(bool(picture[picture.shape[0] // 2, 0, 0] == 255))
        centre = picture.shape[1] / 2.0
        if len(tried) == 2:  # the first crop: a face beside the box
            return [(centre + 0.1 * spread + (110.0, 0.0), np.zeros(478))]
        return [] if len(tried) < 3 else [(centre + spread, np.arange(478.0))]

    def detect_boxes(picture, full_range):
        return [] if full_range or picture.shape[:2] != image.shape[:2] else [(0.8, box)]

    monkeypatch.setattr(landmarks_module, "_mesh_faces", mesh_faces)
    monkeypatch.setattr(landmarks_module, "_detect_boxes", detect_boxes)
    (points, depth), = landmarks_module.find_faces(image)[0]
    assert tried == [False, False, True]  # the mirrored crop has the picture's white right half on its left
    in_crop = 132.0 + spread
    expected = np.stack([264.0 - in_crop[:, 0], in_crop[:, 1]], 1)[fp.MEDIAPIPE_MIRROR] + (238.0, 28.0)
    np.testing.assert_allclose(points, expected, atol=1e-6)
    np.testing.assert_array_equal(depth, fp.MEDIAPIPE_MIRROR)
    tried.clear()
    assert landmarks_module.detect_landmarks(image).searched  # FaceMesh's own detector missed it


def test_a_quarter_turn_maps_each_pixel_centre_where_rot90_puts_the_pixel():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    ys, xs = np.mgrid[0:5, 0:7]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    for turns in range(4):
        turned, to_turned = landmarks_module._turned(image, turns)
        np.testing.assert_array_equal(turned, np.rot90(image, turns))
        cols, rows = np.floor(fp.transform_points(to_turned, centres)).astype(int).T
        np.testing.assert_array_equal(turned[rows, cols], image[ys.ravel(), xs.ravel()])


def test_a_turned_look_takes_the_face_s_place_only_where_turned_looks_agree_and_it_scores_higher():
    """_agreed_look: FaceMesh lays a wrong upright mesh over a face upside down; the looks at the face turned the
    right ways agree with each other, the wrong one with none."""
    rng = np.random.default_rng(0)
    face, other, stray = (rng.uniform(0.0, 100.0, (478, 2)) for _ in range(3))
    look = lambda score, points, turns: (score, points, np.zeros(478), turns)  # noqa: E731
    agreed = landmarks_module._agreed_look
    turned_right = [look(0.7, other, 1), look(0.9, other + 2.0, 2), look(0.99, stray, 3)]
    assert agreed(face, 0.5, turned_right)[3] == 2  # the best scored of the two that agree
    assert agreed(face, 0.5, [*turned_right[:2], look(0.99, face + 2.0, 3)]) is None  # a look agrees with the face
    assert agreed(face, 0.85, turned_right) is None  # not UPRIGHT_MARGIN above the face's score
    assert agreed(face, 0.5, [look(0.9, other, 1), look(0.9, stray, 2)]) is None  # no two looks agree
    assert agreed(None, 0.0, turned_right)[3] == 2  # no face found as it was
    wrong_pair = [look(0.7, face + 2.0, 1), look(0.9, other, 2), look(0.95, other + 2.0, 3)]
    assert agreed(face, 0.6, wrong_pair)[3] == 3  # the face stands with one look, two others score higher
    assert agreed(face, 0.6, [look(0.88, face + 2.0, 1), *wrong_pair[1:]]) is None  # ... or not


@needs_photos
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_face_on_its_side_or_upside_down_is_found_as_it_is(photos, faces, turns):
    """The first FFHQ photograph upside down: FaceMesh alone lays an upright mesh over it, its eyes on the mouth, and
    BlazeFace scores that 0.75 (a fit of it was reported ok)."""
    name = FFHQ[0]
    turned, to_turned = landmarks_module._turned(photos[name], turns)
    face = fp.detect_landmarks(turned, name=name)
    expected = fp.transform_points(to_turned, faces[name].points)
    error = np.linalg.norm(face.points - expected, axis=1).mean() / interocular(fp.to_68(faces[name].points))
    assert error < 0.08, error
    if turns == 2:
        assert face.quarter_turns == 2 and face.confidence > 0.85
    assert faces[name].quarter_turns == 0


@needs_photos
def test_preprocessing_an_upside_down_photograph_gives_an_upright_crop(photos, no_models):
    turned, _ = landmarks_module._turned(photos[FFHQ[0]], 2)
    item = fp.preprocess(turned)
    assert item.quarter_turns == 2 and any("turned by about 180 degrees" in note for note in item.notes)
    eyes, mouth = item.lmk68[36:48, 1].mean(), item.lmk68[48:68, 1].mean()
    assert eyes < mouth - 0.1 * item.image.shape[0]
    redetected = fp.detect_landmarks((item.image * 255).astype(np.uint8) if item.image.dtype != np.uint8
                                     else item.image)
    assert redetected.quarter_turns == 0


@needs_photos
def test_the_face_mask_leaves_out_what_lies_beyond_the_photograph(photos, preprocessed, no_models):
    """A photograph cut below the nose: the aligned crop is white past its edge, which a photometric fit would take
    for the face's colour."""
    name = FFHQ[1]
    cut = photos[name][: int(0.62 * photos[name].shape[0])]
    item = fp.preprocess(cut)
    beyond = ~fp.inside_source(cut.shape, item.original_to_fit, item.image.shape[0])
    assert beyond.mean() > 0.1 and np.mean(item.image[beyond] > 0.99) > 0.95  # white
    assert item.mask[beyond].max() == 0.0 and item.mask.sum() > 0.4 * preprocessed[name].mask.sum()
    assert any("lies outside the photograph" in note for note in item.notes)
    assert not any("outside the photograph" in note for note in preprocessed[name].notes)


@needs_photos
def test_huge_image(photos, faces, tmp_path, no_models):
    name = FFHQ[2]
    huge = cv2.resize(photos[name], (8000, 8000), interpolation=cv2.INTER_LINEAR)
    face = fp.detect_landmarks(huge)
    lmk = fp.to_68(faces[name].points)
    error = np.linalg.norm(face.points / (8000 / 1024) - faces[name].points, axis=1) / interocular(lmk)
    assert error.mean() < 0.01
    path = tmp_path / "huge.jpg"
    assert cv2.imwrite(str(path), huge[:, :, ::-1])
    del huge
    result = fp.preprocess(path)
    assert result.original_size == (8000, 8000)
    back = fp.transform_points(result.fit_to_original, result.lmk68) / (8000 / 1024)
    assert np.linalg.norm(back - lmk, axis=1).mean() < 0.03 * interocular(lmk)


@needs_photos
def test_one_face_mesh_per_thread(photos, faces):
    names = FFHQ[:2]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda n: fp.detect_landmarks(photos[n]), names))
    for name, face in zip(names, found):
        np.testing.assert_allclose(face.points, faces[name].points, atol=1e-3)


# ---------------------------------------------------------------------------------------------- transforms


def _blob(height: int, width: int, centre: tuple[float, float], sigma: float) -> np.ndarray:
    y, x = np.mgrid[:height, :width] + 0.5
    value = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((value * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weight = image[:, :, 0].astype(np.float64)
    y, x = np.mgrid[: image.shape[0], : image.shape[1]] + 0.5
    return np.array([(x * weight).sum(), (y * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("zoom", [1.7, 0.12])
def test_warp_follows_the_pixel_centre_convention(zoom):
    centre = (180.5, 140.25)
    source = _blob(300, 400, centre, sigma=4 / min(zoom, 1))
    angle = math.radians(23)
    linear = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = np.column_stack([linear, [60.0, -80.0 * zoom + 20]])
    warped = fp.warp_image(source, matrix, (int(400 * zoom) + 80, int(300 * zoom) + 80), border=0)
    np.testing.assert_allclose(_centroid(warped), fp.transform_points(matrix, np.array(centre)), atol=0.05)


@pytest.mark.parametrize("zoom", [1.5, 0.25])
def test_warp_without_a_border_value_repeats_the_edge(zoom):
    source = np.zeros((40, 60, 3), np.uint8)
    source[:, :30] = 90
    source[:, 30:] = 200  # left half dark, right half bright, every row alike
    matrix = np.array([[zoom, 0.0, 10.0], [0.0, zoom, 15.0]])  # the output reaches past the source all round
    side = int(80 * zoom) + 30
    repeated = fp.warp_image(source, matrix, side, border=None)
    white = fp.warp_image(source, matrix, side)
    assert repeated.max() <= 200 and white.max() == 255
    np.testing.assert_array_equal(repeated[0], repeated[-1])  # rows outside the source repeat its first / last
    assert repeated[5, 0, 0] == 90 and repeated[5, -1, 0] == 200  # columns beyond it its left / right edge


def test_affine_helpers_round_trip():
    rng = np.random.default_rng(1)
    matrix = np.column_stack([rng.normal(size=(2, 2)) + 2 * np.eye(2), rng.normal(size=2) * 50])
    points = rng.uniform(0, 500, size=(100, 2))
    back = fp.transform_points(fp.invert_affine(matrix), fp.transform_points(matrix, points))
    np.testing.assert_allclose(back, points, atol=1e-9)
    np.testing.assert_allclose(fp.compose_affine(fp.invert_affine(matrix), matrix), np.eye(2, 3), atol=1e-12)
    assert fp.transform_points(matrix, points.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(fp.pixels_to_ndc(np.array([[0.0, 256.0], [128.0, 64.0]]), 256),
                               [[-1.0, 1.0], [0.0, -0.5]])
    np.testing.assert_allclose(fp.ndc_to_pixels(fp.pixels_to_ndc(points, 256), 256), points)


# ---------------------------------------------------------------------------------------------- alignment


@needs_photos
def test_alignment_construction(photos, faces):
    name = FFHQ[0]
    lmk = fp.to_68(faces[name].points).astype(np.float64)
    aligned = fp.align_face(photos[name], lmk, 512)
    assert aligned.image.shape == (512, 512, 3) and aligned.image.dtype == np.uint8 and aligned.size == 512
    eye_a, eye_b = lmk[36:42].mean(axis=0), lmk[42:48].mean(axis=0)
    eye_avg, mouth = (eye_a + eye_b) / 2, (lmk[48] + lmk[54]) / 2
    centre = eye_avg + 0.1 * (mouth - eye_avg)
    np.testing.assert_allclose(fp.transform_points(aligned.to_crop, centre), [256, 256], atol=1e-9)
    half_side = 1.3 * max(2 * np.linalg.norm(eye_b - eye_a), 1.8 * np.linalg.norm(mouth - eye_avg))
    zoom = math.sqrt(np.linalg.det(aligned.to_crop[:, :2]))
    assert zoom == pytest.approx(512 / (2 * half_side))
    assert np.allclose(aligned.to_crop[:, :2] @ aligned.to_crop[:, :2].T, zoom**2 * np.eye(2)), "a similarity"
    eyes_in_crop = fp.transform_points(aligned.to_crop, np.stack([eye_a, eye_b]))
    assert abs(eyes_in_crop[1, 1] - eyes_in_crop[0, 1]) < 0.05 * (eyes_in_crop[1, 0] - eyes_in_crop[0, 0])


@needs_photos
def test_crop_round_trip(photos, faces):
    for name in PHOTOS[:3]:
        face = faces[name]
        aligned = fp.align_face(photos[name], fp.to_68(face.points), 512)
        there_and_back = fp.transform_points(aligned.to_original, fp.transform_points(aligned.to_crop, face.points))
        assert np.abs(there_and_back - face.points).max() < 1e-3
        np.testing.assert_allclose(aligned.to_original, fp.invert_affine(aligned.to_crop))
        in_crop = fp.detect_landmarks(aligned.image)
        back = fp.transform_points(aligned.to_original, in_crop.points)
        residual = np.linalg.norm(fp.to_68(back) - fp.to_68(face.points), axis=1)
        assert np.median(residual) < 0.02 * interocular(fp.to_68(face.points)), name


def test_alignment_pads_with_white():
    lmk = np.zeros((68, 2))
    lmk[36:42], lmk[42:48] = (40.0, 40.0), (60.0, 40.0)
    lmk[48], lmk[54] = (42.0, 65.0), (58.0, 65.0)
    aligned = fp.align_face(np.zeros((100, 100, 3), np.uint8), lmk, 128)
    assert np.all(aligned.image[:3, :3] == 255) and np.all(aligned.image[-3:, -3:] == 255)
    assert np.all(aligned.image[64, 64] == 0)
    with pytest.raises(ValueError, match="degenerate"):
        fp.align_face(np.zeros((100, 100, 3), np.uint8), np.zeros((68, 2)), 128)


# ---------------------------------------------------------------------------------------------- masks


def _inside(polygon: np.ndarray, point: np.ndarray) -> bool:
    return cv2.pointPolygonTest(polygon.astype(np.float32), tuple(map(float, point)), False) > 0


@needs_photos
def test_landmark_mask_covers_the_face_not_the_background(preprocessed):
    for name, result in preprocessed.items():
        mask, points = result.mask, result.points478
        assert mask.shape == (256, 256) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        at = lambda p: mask[int(p[1]), int(p[0])]  # noqa: E731
        lmk = result.lmk68
        for cheek_or_nose in (lmk[30], (lmk[1] + lmk[31]) / 2, (lmk[15] + lmk[35]) / 2, (lmk[27] + lmk[21]) / 2):
            assert at(cheek_or_nose) == 1.0, name
        for eye_centre in result.iris[[0, 5]]:
            assert at(eye_centre) == 0.0, f"{name}: eye interior is excluded"
        hull = cv2.convexHull(points[list(fp.FACE_OVAL)].astype(np.float32))[:, 0]
        outside = np.ones_like(mask, bool)
        cv2.fillPoly(outside.view(np.uint8), [np.round(hull - 0.5).astype(np.int32)], 0)
        outside = cv2.erode(outside.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # anti-aliased edge
        assert mask[outside].max() == 0.0, f"{name}: nothing outside the face outline"
        assert 0.08 < mask.mean() < 0.4, name
        assert np.all(mask[:8] == 0) and np.all(mask[-8:] == 0), name


@needs_photos
def test_landmark_mask_excludes_the_open_mouth(preprocessed):
    result = preprocessed["ffhq_00018.png"] if "ffhq_00018.png" in preprocessed else None
    if result is None:
        pytest.skip("ffhq_00018.png (open mouth) not in the shared photographs")
    lmk = result.lmk68
    assert lmk[66, 1] - lmk[62, 1] > 3, "the test photo shows an open mouth"
    assert result.mask[int((lmk[62, 1] + lmk[66, 1]) / 2), int(lmk[62, 0])] == 0.0


@needs_photos
def test_landmark_mask_options(preprocessed):
    points = next(iter(preprocessed.values())).points478
    default = fp.landmark_face_mask(points, 256)
    whole = fp.landmark_face_mask(points, 256, forehead=1.0)
    soft = fp.landmark_face_mask(points, 256, feather=3.0)
    none = fp.landmark_face_mask(points, 256, forehead=0.0)
    assert whole.sum() > default.sum() > none.sum()
    assert np.all(whole >= default - 0.05) and np.all(default >= none - 0.05)  # up to anti-aliasing
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 3 * ((default > 0.05) & (default < 0.95)).sum()
    assert fp.landmark_face_mask(points, (200, 300)).shape == (200, 300)


# ---------------------------------------------------------------------------------------------- ONNX models


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _parser_graph(kind: str):
    """A stand-in for BiSeNet: class 1 (skin) scores the normalised red channel, background 0, others -10.

    kind: "scores" ((1, 19, 64, 64) logits), "labels" ((1, 512, 512) int64), "wrong" (5 classes).
    """
    from onnx import TensorProto, helper, numpy_helper

    classes = 5 if kind == "wrong" else 19
    weight = np.zeros((classes, 3, 1, 1), np.float32)
    weight[1, 0] = 1.0
    bias = np.full(classes, -10.0, np.float32)
    bias[:2] = 0.0
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["logits"])]
    if kind == "labels":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["out"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("out", TensorProto.INT64, [1, 512, 512])
    else:
        nodes.append(helper.make_node("AveragePool", ["logits"], ["out"], kernel_shape=[8, 8], strides=[8, 8]))
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, classes, 64, 64])
    return helper.make_graph(
        nodes, "parser", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])], [out],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])


def _matting_graph():
    """A stand-in for MODNet with dynamic size: alpha = (normalised red + 1) / 2, i.e. red / 255."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((1, 3, 1, 1), np.float32)
    weight[0, 0] = 0.5
    return helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["alpha"])], "matting",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [1, 1, "height", "width"])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([0.5], np.float32), "b")])


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    models = {kind: _save(_parser_graph(kind), folder / f"parser_{kind}.onnx")
              for kind in ("scores", "labels", "wrong")}
    models["matting"] = _save(_matting_graph(), folder / "matting.onnx")
    (folder / "garbage.onnx").write_bytes(b"not a protobuf")
    models["garbage"] = folder / "garbage.onnx"
    return models


def _stripes() -> np.ndarray:
    """Three vertical stripes: red (skin for the stand-in), gray 100 (below the ImageNet mean), blue."""
    image = np.zeros((120, 90, 3), np.uint8)
    image[:, :30] = (255, 0, 0)
    image[:, 30:60] = 100
    image[:, 60:] = (0, 0, 255)
    return image


@pytest.mark.parametrize("kind", ["scores", "labels"])
def test_parse_face_contract(onnx_models, kind):
    result = fp.parse_face(_stripes(), onnx_models[kind])
    assert isinstance(result, fp.ParsingResult)
    assert result.labels.shape == (120, 90) and result.labels.dtype == np.uint8
    assert result.provider == "CPUExecutionProvider" and result.model_path.name == f"parser_{kind}.onnx"
    assert np.all(result.labels[:, 2:26] == fp.CELEBAMASK_CLASSES.index("skin")), "red in RGB order is skin"
    assert np.all(result.labels[:, 34:88] == 0), "gray below the ImageNet mean and blue are background"
    np.testing.assert_array_equal(result.mask, fp.parsing_mask(result.labels))
    assert fp.parse_face(_stripes(), onnx_models[kind], output_size=(60, 45)).labels.shape == (60, 45)


def test_parsing_mask_classes():
    labels = np.arange(19, dtype=np.uint8).reshape(1, 19)
    kept = {fp.CELEBAMASK_CLASSES[i] for i in np.flatnonzero(fp.parsing_mask(labels)[0])}
    assert kept == {"skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "nose", "u_lip", "l_lip"}


def test_onnx_models_that_break_the_contract(onnx_models):
    with pytest.raises(CorruptFileError, match="expected float scores"):
        fp.parse_face(_stripes(), onnx_models["wrong"])
    with pytest.raises(CorruptFileError, match="garbage.onnx"):
        fp.parse_face(_stripes(), onnx_models["garbage"])
    with pytest.raises(MissingFileError):
        fp.parse_face(_stripes(), onnx_models["scores"].parent / "absent.onnx")


def test_absent_models_mean_the_default_path(no_models, caplog):
    with caplog.at_level(logging.INFO, logger="flamejax.perception"):
        assert fp.parse_face(_stripes()) is None
        assert fp.matte(_stripes()) is None
    assert "no face parsing model found" in caplog.text and "no matting model found" in caplog.text


def test_matte_contract(onnx_models):
    image = np.zeros((150, 100, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, 100).round().astype(np.uint8)[None, :]
    alpha = fp.matte(image, onnx_models["matting"])
    assert alpha.shape == (150, 100) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha[:, 3:-3], image[:, 3:-3, 0] / 255.0, atol=0.02)
    composite = fp.composite_over_white(image, alpha)
    assert np.all(composite[:, 0] == 255) and np.array_equal(composite[:, -1], image[:, -1])


@needs_photos
def test_preprocess_with_parsing_and_matting(onnx_models, no_models):
    name = FFHQ[0]
    config = fp.PreprocessConfig(parsing_model=onnx_models["scores"], matting_model=onnx_models["matting"])
    result = fp.preprocess(IMAGES / name, config)
    assert result.mask_source == "parsing" and result.parsing.shape == (256, 256)
    inside = fp.inside_source(result.original_size, result.original_to_fit, 256)  # not past the photograph
    np.testing.assert_array_equal(result.mask, fp.parsing_mask(result.parsing) * inside)
    assert result.alpha.shape == (256, 256)
    assert not any("model found" in note for note in result.notes)
    skip_parsing = fp.preprocess(IMAGES / name, fp.PreprocessConfig(use_parsing=False, use_matting=True))
    assert skip_parsing.mask_source == "landmarks" and skip_parsing.alpha is None
    assert any("no matting model" in note for note in skip_parsing.notes)


@needs_photos
def test_person_silhouette_covers_the_face_and_not_the_whole_picture(preprocessed):
    for name, result in preprocessed.items():
        person = result.person
        assert person is not None, name
        assert person.shape == (256, 256) and person.dtype == np.float32, name
        assert 0 <= person.min() and person.max() <= 1
        assert fp.points_inside(person, result.points478) >= 0.95, name
        assert 0.15 < (person >= 0.5).mean() < 0.97, f"{name}: some background is left out"
        assert fp.points_inside(person, result.points478, tolerance=0.0) >= 0.9, name


def test_an_untrusted_or_switched_off_silhouette_is_not_used():
    from flamejax.perception._preprocess import _person

    points = np.full((478, 2), 20.0, np.float32)
    notes: list[str] = []
    nobody = np.zeros((32, 32), np.float32)
    nobody[:, :5] = 1.0  # within the 1/64 tolerance of none of the points
    assert _person(None, points, fp.PreprocessConfig(), notes, lambda: (nobody, 0.16)) is None
    assert notes == ["the person segmentation covers only 0% of the face's landmarks; fitting without the "
                     "silhouette"]
    matted = np.ones((32, 32), np.float32)
    np.testing.assert_array_equal(_person(matted, points, fp.PreprocessConfig(), notes, _not_segmented), matted)
    assert _person(matted, points, fp.PreprocessConfig(person_silhouette=False), notes, _not_segmented) is None
    assert len(notes) == 1


def _not_segmented():
    raise AssertionError("segmented although the matting's alpha is there or the silhouette is switched off")


def symmetric_face(turn: float) -> np.ndarray:
    """478 points of an upright face whose mirror pairs (MEDIAPIPE_MIRROR) lie symmetric about x = 128, the
    midline's points on it, and whose nose tip lies ``turn`` half face widths off the cheeks' middle towards +x."""
    rng = np.random.default_rng(0)
    mirror = fp.MEDIAPIPE_MIRROR
    points = np.stack([128 + rng.uniform(-50, 50, 478), rng.uniform(40, 200, 478)], axis=-1)
    for i, j in enumerate(mirror):
        if i < j:
            points[j] = [256 - points[i, 0], points[i, 1]]
        elif i == j:
            points[i, 0] = 128.0
    points[[10, 152]] = [[128, 40], [128, 200]]
    points[234], points[454] = [78, 120], [178, 120]
    points[1] = [128 + 50 * turn, 130]
    return points.astype(np.float32)


def test_a_turned_face_s_silhouette_need_not_cover_the_hidden_half():
    from flamejax.perception._mask import TURNED_AWAY, points_a_silhouette_covers
    from flamejax.perception._preprocess import _person

    near_half = np.zeros((256, 256), np.float32)
    near_half[:, :131] = 1.0  # the profile: no point beyond the midline in the turn's direction (+x) is inside
    for turn, trusted in ((0.5, False), (TURNED_AWAY - 0.05, False), (TURNED_AWAY + 0.05, True), (2.5, True)):
        points = symmetric_face(turn)
        covered = points_a_silhouette_covers(points)
        assert fp.points_inside(near_half, points) < 0.6
        if trusted:  # the near half, the midline and the nose tip, which lies beyond it but is a midline point
            assert 250 <= len(covered) < 260 and np.all((covered[:, 0] <= 128.01) | (covered[:, 0] == points[1, 0]))
        else:
            np.testing.assert_array_equal(covered, points)
        notes: list[str] = []
        person = _person(None, points, fp.PreprocessConfig(), notes, lambda: (near_half, 0.5))
        assert (person is not None) == trusted, turn
        mirrored = points.copy()
        mirrored[:, 0] = 256 - mirrored[:, 0]  # turned the other way: the near half is then on the right
        np.testing.assert_array_equal(np.sort(points_a_silhouette_covers(mirrored)[:, 0]),
                                      np.sort(256 - covered[:, 0]))
    assert len(points_a_silhouette_covers(np.full((478, 2), np.nan, np.float32))) == 478


# ---------------------------------------------------------------------------------------------- preprocess


@needs_photos
def test_preprocess_result(preprocessed, faces, photos):
    for name, result in preprocessed.items():
        assert result.image.shape == (256, 256, 3) and result.image.dtype == np.float32
        assert 0 <= result.image.min() and result.image.max() <= 1
        assert result.crop.shape == (512, 512, 3) and result.crop.dtype == np.uint8
        np.testing.assert_allclose(result.image, cv2.resize(result.crop, (256, 256),
                                                            interpolation=cv2.INTER_AREA) / 255.0, atol=1e-6)
        for array, shape in ((result.points478, (478, 2)), (result.depth478, (478,)), (result.lmk68, (68, 2)),
                             (result.iris, (10, 2))):
            assert array.shape == shape and array.dtype == np.float32
        assert np.all(result.points478 > 0) and np.all(result.points478 < 256)
        np.testing.assert_allclose(result.lmk68, fp.to_68(result.points478), atol=1e-4)
        np.testing.assert_array_equal(result.iris, result.points478[468:])
        assert result.mask_source == "landmarks" and result.parsing is None and result.alpha is None
        assert any("no face-parsing model" in note for note in result.notes)
        assert result.redetected and not result.lost_on_crop and not result.searched
        assert result.source == str(IMAGES / name)
        assert result.original_size == photos[name].shape[:2]
        assert result.confidence == faces[name].confidence and result.num_faces == 1
        np.testing.assert_allclose(fp.compose_affine(result.fit_to_original, result.original_to_fit), np.eye(2, 3),
                                   atol=1e-9)
        fit_to_crop = np.array([[2.0, 0, 0], [0, 2.0, 0]])
        np.testing.assert_allclose(fp.compose_affine(result.crop_to_original, fit_to_crop), result.fit_to_original,
                                   atol=1e-9)
        original = fp.to_68(faces[name].points)
        back = fp.transform_points(result.fit_to_original, result.lmk68)
        assert np.median(np.linalg.norm(back - original, axis=1)) < 0.02 * interocular(original), name


@needs_photos
def test_preprocess_sources_and_options(photos, faces, no_models):
    name = FFHQ[1]
    from_bytes = fp.preprocess((IMAGES / name).read_bytes())
    from_array = fp.preprocess(photos[name], fp.PreprocessConfig(redetect_on_crop=False, crop_size=384,
                                                                 fit_size=128))
    assert from_bytes.source == "<bytes>" and from_array.source == "<array>"
    assert from_array.image.shape == (128, 128, 3) and from_array.crop.shape == (384, 384, 3)
    assert not from_array.redetected and not from_array.lost_on_crop  # not looked for, so not lost
    expected = fp.transform_points(from_array.original_to_fit, faces[name].points)
    np.testing.assert_allclose(from_array.points478, expected, atol=1e-3)
    with pytest.raises(ValueError, match="fit_size"):
        fp.PreprocessConfig(crop_size=128, fit_size=256)


@needs_photos
def test_preprocess_reports_a_face_facemesh_loses_on_its_aligned_crop(photos, monkeypatch, no_models):
    # At 80-90 degrees of yaw FaceMesh finds "faces" on an ear or an eye region that it cannot find again on the
    # crop aligned to them; the photograph's landmarks are used, and the item says the face was lost.
    monkeypatch.setattr(preprocess_module, "redetect", lambda crop, expected: None)
    lost = fp.preprocess(photos[FFHQ[1]])
    assert lost.lost_on_crop and not lost.redetected
    assert any("no face found again on the aligned crop" in note for note in lost.notes)
    # found there only on crops around the face detector's box: its points are used, and it counts as lost
    monkeypatch.setattr(preprocess_module, "redetect",
                        lambda crop, expected: dataclasses.replace(expected, points=expected.points + 1.0,
                                                                   searched=True))
    searched = fp.preprocess(photos[FFHQ[1]])
    assert searched.lost_on_crop and searched.redetected
    np.testing.assert_allclose(searched.points478, lost.points478 + 1.0 / 2, atol=1e-4)  # crop 512 -> fit 256
    assert any("FaceMesh's own detector found no face again" in note for note in searched.notes)


def test_a_segmentation_that_takes_the_whole_crop_is_done_again_on_a_wider_crop(photos, monkeypatch, no_models):
    photo = photos[FFHQ[0]]
    plain = fp.preprocess(photo)
    covered = float(np.mean(plain.person >= 0.5))
    assert covered < fp.WIDE_CONTEXT_COVERAGE  # a real photograph: not segmented twice
    assert not any("twice as wide" in note for note in plain.notes)
    # A segmentation that marks the whole crop as the person is replaced by the wider crop's.
    calls = []
    real = mask_module.person_silhouette

    def whole_crop_first(image, size):
        calls.append(size)
        return np.ones((size, size), np.float32) if len(calls) == 1 else real(image, size)

    monkeypatch.setattr(mask_module, "person_silhouette", whole_crop_first)
    again = fp.preprocess(photo)
    assert len(calls) == 2 and any("covered 100% of the aligned crop" in note for note in again.notes)
    # The wider crop's silhouette lies where the crop's does: the same person, at the same place.
    wide = again.person
    assert wide.shape == plain.person.shape and wide.dtype == np.float32
    both, either = np.sum((wide >= 0.5) & (plain.person >= 0.5)), np.sum((wide >= 0.5) | (plain.person >= 0.5))
    assert both / either > 0.8
