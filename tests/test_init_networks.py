"""flamejax.init: network crops against the authors' own preprocessing, DECA's code layout, the ONNX wrappers
(on tiny graphs with the real input/output contract), the reference merge, and weight discovery."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import flamejax.files as files
from flamejax.files import CorruptFileError, MissingFileError
from flamejax.init import (
    ARCFACE_TEMPLATE,
    ARCFACE_TEMPLATE_PX,
    DECA_CODE_SIZE,
    DecaCodes,
    DecaEncoder,
    MicaEncoder,
    NetworkInit,
    available_init_methods,
    deca_crop,
    deca_crop_transform,
    decode_deca,
    five_points,
    initialise_batch_from_networks,
    initialise_from_networks,
    merge_network_codes,
    mica_crop,
    mica_crop_transform,
    resolve_init_method,
    similarity_lsq,
)
from flamejax.init._crops import warp_bilinear

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTOS = sorted(p for p in (SHARED / "images").glob("*") if p.suffix.lower() in (".png", ".jpg"))
CPU = "CPUExecutionProvider"

# MediaPipe -> iBUG-68 indices, only used when flamejax.perception cannot be imported (it was being written
# alongside this module). Eyes, nose tip and mouth corners - what the crops use - are the standard picks.
_MEDIAPIPE_68 = [127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356, 70, 63, 105,
                 66, 107, 336, 296, 334, 293, 300, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133, 153, 144,
                 362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312,
                 308, 317, 14, 87]


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points) @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


@pytest.fixture(scope="module")
def landmarks68():
    """image -> (68, 2) landmarks in flamejax's pixel convention, or None when no face is found."""
    try:
        from flamejax.perception import detect_landmarks, to_68

        def detect(image):
            try:
                return to_68(detect_landmarks(image).points)
            except ValueError:
                return None
        return detect
    except Exception:  # perception not importable: MediaPipe directly
        mediapipe = pytest.importorskip("mediapipe")
        mesh = mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True)

        def detect(image):
            found = mesh.process(image).multi_face_landmarks
            if not found:
                return None
            height, width = image.shape[:2]
            points = np.array([[p.x * width, p.y * height] for p in found[0].landmark])
            return points[_MEDIAPIPE_68]
        return detect


@pytest.fixture(scope="module")
def photos(landmarks68):
    """(name, RGB uint8 image, 68 landmarks) of the shared photographs."""
    if not PHOTOS:
        pytest.skip("no shared photographs (../shared/images)")
    from PIL import Image

    found = []
    for path in PHOTOS:
        image = np.asarray(Image.open(path).convert("RGB"))
        points = landmarks68(image)
        assert points is not None, f"no face found in {path.name}"
        found.append((path.name, image, np.asarray(points, np.float64)))
    return found


def smooth_image(height: int = 300, width: int = 400, seed: int = 0) -> np.ndarray:
    """A band-limited random RGB image (so bilinear sampling errors stay far below one grey level)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 40.0
    channels = [sum(np.sin(a * x + b * y + c) for a, b, c in rng.uniform(-1, 1, (4, 3)) * [1, 1, 3])
                for _ in range(3)]
    return np.clip(127.5 + 30 * np.stack(channels, -1), 0, 255).astype(np.uint8)


def synthetic_landmarks(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([120, 80], [280, 240], (68, 2))


# ---------------------------------------------------------------------------------------------- crop geometry

def test_five_points_are_eye_centres_nose_tip_and_mouth_corners():
    lmk = synthetic_landmarks()
    five = five_points(lmk)
    np.testing.assert_allclose(five[0], lmk[36:42].mean(0))
    np.testing.assert_allclose(five[1], lmk[42:48].mean(0))
    np.testing.assert_array_equal(five[2:], lmk[[30, 48, 54]])


def test_similarity_lsq_is_the_least_squares_similarity():
    rng = np.random.default_rng(1)
    for _ in range(20):
        src, dst = rng.normal(size=(5, 2)) * 50, rng.normal(size=(5, 2)) * 20 + 56
        # independent solution: linear least squares in (a, b, tx, ty) of x' = a x - b y + tx, y' = b x + a y + ty
        rows = np.concatenate([np.stack([src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)], 1),
                               np.stack([src[:, 1], src[:, 0], np.zeros(5), np.ones(5)], 1)])
        (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
        np.testing.assert_allclose(similarity_lsq(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-9)
    # an exact similarity (rotation 170 degrees, scale 0.3) is recovered; mirrored points get no reflection
    angle = math.radians(170)
    exact = 0.3 * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = rng.normal(size=(5, 2)) * 100
    np.testing.assert_allclose(similarity_lsq(src, src @ exact.T + [7, -3]), np.c_[exact, [7, -3]], atol=1e-12)
    assert np.linalg.det(similarity_lsq(src, src * [-1, 1])[:, :2]) >= 0
    with pytest.raises(ValueError):
        similarity_lsq(np.ones((5, 2)), src)


def test_deca_crop_transform_follows_decas_formula():
    # box x 100..300, y 150..400: mean side 225 -> 1.1 * 225 = 247.5 -> int(1.25 * 247.5) = 309 px square
    # around (200, 275); DECA maps its edges to pixel centres 0 and 223, i.e. 0.5 and 223.5 here.
    lmk = synthetic_landmarks()
    lmk[0], lmk[1] = (100, 150), (300, 400)
    lmk = np.clip(lmk, [100, 150], [300, 400])
    to_crop = deca_crop_transform(lmk)
    corners = np.array([[200 - 154.5, 275 - 154.5], [200 + 154.5, 275 + 154.5]])
    np.testing.assert_allclose(transform(to_crop, corners), [[0.5, 0.5], [223.5, 223.5]], atol=1e-9)
    assert to_crop[0, 1] == to_crop[1, 0] == 0 and to_crop[0, 0] == to_crop[1, 1] == pytest.approx(223 / 309)


def test_mica_crop_transform_accepts_68_or_5_points():
    lmk = synthetic_landmarks()
    np.testing.assert_allclose(mica_crop_transform(lmk), mica_crop_transform(five_points(lmk)))
    with pytest.raises(ValueError, match="68"):
        mica_crop_transform(lmk[:60])


def test_warp_is_exact_bilinear_with_a_black_border():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    image = smooth_image()
    # a rotated, scaled map whose crop hangs over the image's top-left border
    c, s = 0.8 * math.cos(0.3), 0.8 * math.sin(0.3)
    to_crop = np.array([[c, -s, 40.0], [s, c, 30.0]])
    crop = warp_bilinear(image, to_crop, 150)
    inverse = np.linalg.inv(np.vstack([to_crop, [0, 0, 1]]))
    q = np.stack(np.meshgrid(np.arange(150) + 0.5, np.arange(150) + 0.5), -1)
    source = transform(inverse[:2], q) - 0.5  # scipy: pixel centres at integers, (row, col) order
    rows_cols = [source[..., 1], source[..., 0]]
    expected = np.stack([scipy_ndimage.map_coordinates(image[..., channel].astype(np.float64), rows_cols, order=1,
                                                       mode="grid-constant", cval=0.0) for channel in range(3)], -1)
    assert (crop == 0).all(-1).sum() > 100, "the test map should reach outside the image"
    np.testing.assert_allclose(crop, expected, atol=1e-3)


def test_crops_reject_bad_inputs():
    image = smooth_image()
    with pytest.raises(ValueError, match="uint8"):
        deca_crop(image.astype(np.float32), synthetic_landmarks())
    with pytest.raises(ValueError, match="RGB"):
        mica_crop(image[..., 0], synthetic_landmarks())
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        deca_crop(image, synthetic_landmarks()[:, :1])
    bad = synthetic_landmarks()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        deca_crop(image, bad)
    with pytest.raises(ValueError, match="degenerate"):
        deca_crop(image, np.full((68, 2), 50.0))


def test_mica_crop_puts_a_face_built_on_the_template_exactly_on_it():
    """Five dots placed by a known similarity of the ArcFace template come back onto the template (< 1 px)."""
    angle, scale, offset = math.radians(25), 4.3, np.array([150.0, 90.0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dots = ARCFACE_TEMPLATE_PX @ rotation.T + offset
    yy, xx = np.mgrid[0:700, 0:700] + 0.5
    image = np.zeros((700, 700, 3), np.uint8)
    for x, y in dots:
        image[..., :] = np.maximum(image, (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 9.0 ** 2)))[..., None]
                                   .astype(np.uint8))
    crop, to_crop = mica_crop(image, dots)
    np.testing.assert_allclose(transform(to_crop, dots), ARCFACE_TEMPLATE_PX, atol=1e-9)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.float32 and crop.min() >= -1 and crop.max() <= 1
    weight = (crop[..., 0] + 1) / 2
    yy, xx = np.mgrid[0:112, 0:112] + 0.5
    for x, y in ARCFACE_TEMPLATE_PX:
        near = weight * ((xx - x) ** 2 + (yy - y) ** 2 < 4 ** 2)
        centroid = np.array([(near * xx).sum(), (near * yy).sum()]) / near.sum()
        assert np.linalg.norm(centroid - (x, y)) < 1.0


def test_deca_crop_equals_decas_own_preprocessing(photos):
    """DECA's TestData code path (skimage estimate_transform + warp, pixel centres at integers)."""
    skimage_transform = pytest.importorskip("skimage.transform")
    for name, image, lmk in photos:
        crop, to_crop = deca_crop(image, lmk)
        assert crop.shape == (224, 224, 3) and crop.dtype == np.float32, name
        kpt = lmk - 0.5
        left, top = kpt.min(0)
        right, bottom = kpt.max(0)
        old_size = (right - left + bottom - top) / 2 * 1.1
        center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
        size = int(old_size * 1.25)
        src = np.array([[center[0] - size / 2, center[1] - size / 2], [center[0] - size / 2, center[1] + size / 2],
                        [center[0] + size / 2, center[1] - size / 2]])
        tform = skimage_transform.estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]]))
        expected = skimage_transform.warp(image / 255.0, tform.inverse, output_shape=(224, 224))
        np.testing.assert_allclose(crop, expected, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(transform(to_crop, lmk) - 0.5, tform(kpt), atol=1e-6, err_msg=name)


def test_mica_crop_equals_insightface_norm_crop(photos):
    """insightface norm_crop (skimage similarity, cv2.warpAffine) + MICA's blobFromImages scaling."""
    cv2 = pytest.importorskip("cv2")
    skimage_transform = pytest.importorskip("skimage.transform")
    for name, image, lmk in photos:
        crop, _ = mica_crop(image, lmk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # estimate() deprecation in newer scikit-image
            tform = skimage_transform.SimilarityTransform()
            tform.estimate(five_points(lmk) - 0.5, ARCFACE_TEMPLATE)
        aligned = cv2.warpAffine(np.ascontiguousarray(image[..., ::-1]), tform.params[:2], (112, 112), borderValue=0.0)
        blob = cv2.dnn.blobFromImages([aligned], 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)[0]
        # OpenCV rounds its crop to uint8 and quantises positions to 1/32 px: at most about one grey level
        np.testing.assert_allclose(crop, blob.transpose(1, 2, 0), atol=1.01 / 127.5, err_msg=name)


def test_mica_crop_of_a_photograph_has_the_eyes_where_the_alignment_puts_them(photos, landmarks68):
    """Landmarks detected again on the aligned 112x112 crop (viewed 4x larger): eye centres within 1 px of
    the aligned positions. (They differ from the template itself by the five-point fit's residual, which
    depends on the face: least squares over eyes, nose and mouth.)"""
    cv2 = pytest.importorskip("cv2")
    checked = 0
    for name, image, lmk in photos:
        crop, to_crop = mica_crop(image, lmk)
        np.testing.assert_allclose(to_crop, similarity_lsq(five_points(lmk), ARCFACE_TEMPLATE_PX), err_msg=name)
        pixels = np.clip((crop + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        found = landmarks68(cv2.resize(pixels, (448, 448), interpolation=cv2.INTER_CUBIC))
        if found is None:  # a tight 112 px crop is not always detectable
            continue
        eyes_found = five_points(np.asarray(found) / 4.0)[:2]
        eyes_aligned = transform(to_crop, five_points(lmk)[:2])
        assert np.linalg.norm(eyes_found - eyes_aligned, axis=1).max() < 1.0, name
        checked += 1
    assert checked >= min(5, len(photos))


# ----------------------------------------------------------------------------------------------- DECA codes

def test_decode_deca_follows_the_param_list_order():
    raw = np.arange(2 * DECA_CODE_SIZE, dtype=np.float32).reshape(2, DECA_CODE_SIZE)
    codes = decode_deca(raw)
    np.testing.assert_array_equal(codes.shape[1], np.arange(100) + 236)
    np.testing.assert_array_equal(codes.tex[0], np.arange(100, 150))
    np.testing.assert_array_equal(codes.exp[0], np.arange(150, 200))
    np.testing.assert_array_equal(codes.pose[0], np.arange(200, 206))
    np.testing.assert_array_equal(codes.jaw[0], np.arange(203, 206))
    np.testing.assert_array_equal(codes.cam[0], np.arange(206, 209))
    assert codes.light.shape == (2, 9, 3)
    np.testing.assert_array_equal(codes.light[0, 1], [212, 213, 214])  # row-major (9, 3), as DECA reshapes
    assert len(codes) == 2 and all(a.dtype == np.float32 for a in vars(codes).values())
    with pytest.raises(ValueError, match="236"):
        decode_deca(raw[:, :200])


# ------------------------------------------------------------------------------- tiny graphs with the contract

def tiny_network(path: Path, size: int, outputs: dict[str, int], *, seed: int = 0, normalise: tuple[str, ...] = (),
                 metadata: dict[str, str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An ONNX graph ``images (N,3,size,size) -> each output = rgb @ W + b`` (L2-normalised if listed), where
    ``rgb`` is the per-channel mean weighted by :func:`row_ramp` (so channel order and orientation matter).

    Returns the weights so tests can compute the expected outputs in numpy.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Mul", ["images", "ramp"], ["weighted"]),
             helper.make_node("GlobalAveragePool", ["weighted"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["rgb"], axis=1)]
    initializers = [numpy_helper.from_array(row_ramp(size)[None, None], "ramp")]
    graph_outputs, weights = [], {}
    for name, width in outputs.items():
        w, b = rng.normal(size=(3, width)).astype(np.float32), rng.normal(size=width).astype(np.float32)
        weights[name] = (w, b)
        initializers += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        result = f"{name}_raw" if name in normalise else name
        nodes += [helper.make_node("MatMul", ["rgb", f"{name}_w"], [f"{name}_mm"]),
                  helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [result])]
        if name in normalise:
            nodes.append(helper.make_node("LpNormalization", [result], [name], axis=1, p=2))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            ["N", 3, size, size])],
                              graph_outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return weights


def row_ramp(size: int) -> np.ndarray:
    """(size, size) weights growing down the rows: an image transposed or flipped gives other numbers."""
    return np.repeat((1 + np.arange(size, dtype=np.float32) / size)[:, None], size, axis=1)


def expected_outputs(weights, crops):
    crops = np.asarray(crops, np.float64)
    rgb = (crops * row_ramp(crops.shape[1])[None, :, :, None]).mean(axis=(1, 2))
    return {name: rgb @ w + b for name, (w, b) in weights.items()}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty folder that is the only place flamejax looks for weights."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(files, "search_dirs", lambda: [folder])
    return folder


@pytest.fixture
def tiny_deca(weights_dir):
    return tiny_network(weights_dir / "deca_encoder.onnx", 224, {"codes": 236})


@pytest.fixture
def tiny_mica(weights_dir):
    return tiny_network(weights_dir / "mica.onnx", 112, {"shape": 300, "identity": 512}, seed=1,
                        normalise=("identity",))


def test_deca_encoder_runs_nhwc_crops_through_the_nchw_graph(tiny_deca, weights_dir):
    encoder = DecaEncoder.load()
    assert encoder is not None and encoder.provider == CPU and encoder.path == weights_dir / "deca_encoder.onnx"
    crops = np.random.default_rng(2).random((3, 224, 224, 3), dtype=np.float32)
    codes = encoder(crops)
    expected = decode_deca(expected_outputs(tiny_deca, crops)["codes"])
    for field in ("shape", "tex", "exp", "pose", "cam", "light"):
        np.testing.assert_allclose(getattr(codes, field), getattr(expected, field), atol=1e-4, err_msg=field)
    assert len(encoder(np.zeros((0, 224, 224, 3), np.float32))) == 0
    with pytest.raises(ValueError, match=r"\(N, 224, 224, 3\)"):
        encoder(crops.transpose(0, 3, 1, 2))


def test_mica_encoder_returns_shape_and_unit_identity(tiny_mica):
    encoder = MicaEncoder.load()
    crops = np.random.default_rng(3).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
    expected = expected_outputs(tiny_mica, crops)
    np.testing.assert_allclose(encoder(crops), expected["shape"], atol=1e-4)
    identity = encoder.embed(crops)
    np.testing.assert_allclose(identity, expected["identity"] / np.linalg.norm(expected["identity"], axis=1,
                                                                               keepdims=True), atol=1e-4)
    assert encoder.provider == CPU


def test_mica_without_identity_output_still_gives_shape(weights_dir):
    tiny_network(weights_dir / "mica.onnx", 112, {"shape": 300})
    encoder = MicaEncoder.load()
    assert encoder(np.zeros((1, 112, 112, 3), np.float32)).shape == (1, 300)
    with pytest.raises(ValueError, match="identity"):
        encoder.embed(np.zeros((1, 112, 112, 3), np.float32))


def test_missing_weights(weights_dir, tmp_path):
    assert DecaEncoder.load() is None and MicaEncoder.load() is None
    with pytest.raises(MissingFileError, match="deca_encoder"):
        DecaEncoder.load(required=True)
    with pytest.raises(MissingFileError, match="nowhere.onnx"):
        MicaEncoder.load(tmp_path / "nowhere.onnx")


def test_corrupted_file_is_named(weights_dir):
    (weights_dir / "deca_encoder.onnx").write_bytes(b"\x08\x07not really a protobuf" * 50)
    with pytest.raises(CorruptFileError, match="deca_encoder.onnx"):
        DecaEncoder.load()


def test_wrong_network_in_the_file_is_named(weights_dir, tmp_path):
    tiny_network(weights_dir / "mica.onnx", 224, {"codes": 236})  # a DECA graph under MICA's name
    with pytest.raises(CorruptFileError, match=r"mica.onnx: not a MICA identity network ONNX file: .*no float32 output 'shape'"):
        MicaEncoder.load()
    tiny_network(weights_dir / "deca_encoder.onnx", 224, {"codes": 200})
    with pytest.raises(CorruptFileError, match=r"no float32 output 'codes' of shape \(N, 236\)"):
        DecaEncoder.load()
    tiny_network(tmp_path / "labelled.onnx", 224, {"codes": 236}, metadata={"flamejax.network": "mica"})
    with pytest.raises(CorruptFileError, match="converted as a mica network"):
        DecaEncoder.load(tmp_path / "labelled.onnx")


def test_provider_fallback_is_reported(tiny_deca):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fallback to observe")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime's own note about the unknown provider
        with pytest.warns(RuntimeWarning, match="CUDA was requested .* CPUExecutionProvider"):
            encoder = DecaEncoder.load(providers=["CUDAExecutionProvider", CPU])
    assert encoder.provider == CPU


# --------------------------------------------------------------------------------------- merge and methods

def test_merge_follows_the_reference():
    rng = np.random.default_rng(4)
    deca = decode_deca(rng.normal(size=(2, DECA_CODE_SIZE)).astype(np.float32))
    mica = rng.normal(size=(2, 300)).astype(np.float32)
    providers = {"deca": CPU, "mica": CPU}
    both = merge_network_codes(deca, mica, providers)
    assert [r.method for r in both] == ["deca+mica"] * 2 and both[1].providers == providers
    np.testing.assert_array_equal(both[1].shape, mica[1])
    np.testing.assert_array_equal(both[1].expression[:50], deca.exp[1])
    assert both[1].expression.shape == (100,) and not both[1].expression[50:].any()
    np.testing.assert_array_equal(both[1].jaw, deca.pose[1, 3:])
    np.testing.assert_array_equal(both[1].texture, deca.tex[1])
    np.testing.assert_array_equal(both[1].light, deca.light[1])
    deca_only = merge_network_codes(deca, None, {"deca": CPU})[0]
    assert deca_only.method == "deca" and deca_only.shape.shape == (300,) and not deca_only.shape[100:].any()
    np.testing.assert_array_equal(deca_only.shape[:100], deca.shape[0])
    mica_only = merge_network_codes(None, mica, {"mica": CPU})[0]
    assert mica_only.method == "mica" and mica_only.expression is None and mica_only.light is None
    with pytest.raises(ValueError):
        merge_network_codes(None, None, {})
    with pytest.raises(ValueError, match="300"):
        merge_network_codes(deca, mica[:, :100], providers)


def test_available_and_resolved_methods(weights_dir):
    assert available_init_methods() == ["linear"]
    assert resolve_init_method("auto") == "linear" and resolve_init_method("linear") == "linear"
    with pytest.raises(MissingFileError, match="mica"):
        resolve_init_method("mica")
    with pytest.raises(ValueError, match="unknown initialisation"):
        resolve_init_method("flame")
    tiny_network(weights_dir / "deca_encoder.onnx", 224, {"codes": 236})
    assert available_init_methods() == ["deca", "linear"] and resolve_init_method() == "deca"
    tiny_network(weights_dir / "mica.onnx", 112, {"shape": 300})
    assert available_init_methods() == ["deca+mica", "mica", "deca", "linear"]
    assert resolve_init_method() == "deca+mica" and resolve_init_method("mica") == "mica"


def test_initialise_from_networks_end_to_end(tiny_deca, tiny_mica):
    image = smooth_image(400, 400, seed=5)
    lmk = synthetic_landmarks(5)
    result = initialise_from_networks(image, lmk)
    assert isinstance(result, NetworkInit) and result.method == "deca+mica"
    assert result.providers == {"deca": CPU, "mica": CPU}
    deca_expected = decode_deca(expected_outputs(tiny_deca, deca_crop(image, lmk)[0][None])["codes"])
    mica_expected = expected_outputs(tiny_mica, mica_crop(image, lmk)[0][None])["shape"][0]
    np.testing.assert_allclose(result.shape, mica_expected, atol=1e-4)
    np.testing.assert_allclose(result.expression[:50], deca_expected.exp[0], atol=1e-4)
    np.testing.assert_allclose(result.jaw, deca_expected.jaw[0], atol=1e-4)
    np.testing.assert_allclose(result.light, deca_expected.light[0], atol=1e-4)
    only_mica = initialise_from_networks(image, lmk, method="mica")
    assert only_mica.method == "mica" and only_mica.providers == {"mica": CPU} and only_mica.jaw is None
    np.testing.assert_allclose(only_mica.shape, result.shape)
    assert initialise_from_networks(image, lmk, method="linear") is None
    # batches run each network once and give the same numbers as single images
    other = smooth_image(400, 400, seed=6)
    batch = initialise_batch_from_networks([image, other], np.stack([lmk, synthetic_landmarks(6)]),
                                           deca=DecaEncoder.load(), mica=MicaEncoder.load())
    np.testing.assert_allclose(batch[0].shape, result.shape, atol=1e-4)
    assert len(batch) == 2 and not np.allclose(batch[1].shape, batch[0].shape)
    with pytest.raises(ValueError, match="landmark"):
        initialise_batch_from_networks([image], np.stack([lmk, lmk]))


def test_initialise_without_weights(weights_dir):
    image, lmk = smooth_image(), synthetic_landmarks()
    assert initialise_from_networks(image, lmk) is None
    with pytest.raises(MissingFileError, match="deca_encoder"):
        initialise_from_networks(image, lmk, method="deca+mica")
    with pytest.raises(ValueError, match="unknown initialisation"):
        initialise_from_networks(image, lmk, method="DECA")


def test_codes_dataclasses_are_frozen():
    codes = decode_deca(np.zeros((1, DECA_CODE_SIZE), np.float32))
    assert isinstance(codes, DecaCodes)
    with pytest.raises(AttributeError):
        codes.shape = None  # type: ignore[misc]
