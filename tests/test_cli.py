"""`flamejax fit` end to end on real photographs: outputs, landmark error, failure isolation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from flamejax.cli import main
from tests.conftest import SHARED, requires_flame

pytestmark = [requires_flame, pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="no ../shared/images")]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    Image.fromarray(gradient).save(root / "no_face.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = [SHARED / "images" / "ffhq_00000.png", root / "no_face.png", SHARED / "images" / "parsing_image.jpg",
              root / "broken.jpg"]
    out = root / "out"
    code = main(["fit", *map(str, images), "-o", str(out), "--rigid-steps", "150", "--landmark-steps", "80",
                 "--batch-size", "2", "--n-shape", "20", "--n-exp", "10", "--mesh", "obj,glb,ply", "--init", "linear"])
    return code, out


def test_good_images_are_fitted_and_bad_ones_reported(fitted, capsys):
    code, out = fitted
    assert code == 2  # some images failed
    for stem in ("ffhq_00000", "parsing_image"):
        for suffix in (".json", ".npz", ".obj", ".glb", ".ply", "_overlay.png"):
            assert (out / f"{stem}{suffix}").is_file(), stem + suffix
    assert not (out / "no_face.json").exists() and not (out / "broken.json").exists()


def test_parameter_files_hold_what_users_expect(fitted):
    _, out = fitted
    record = json.loads((out / "ffhq_00000.json").read_text())
    for key in ("shape", "exp", "head_pose", "neck_pose", "jaw_pose", "eye_pose", "cam", "landmarks", "nme_inner51"):
        assert key in record
    assert len(record["shape"]) == 20 and len(record["exp"]) == 10 and len(record["eye_pose"]) == 6
    for key in ("yaw", "pitch", "roll", "x", "y", "z", "fov_deg", "K"):
        assert key in record["cam"]
    assert record["status"] == "ok" and record["init"] == "linear"
    assert record["nme_inner51"] < 0.05
    assert abs(record["cam"]["yaw"]) < 45 and abs(record["cam"]["roll"]) < 20  # upright, roughly frontal
    target = np.array(record["landmarks"]["lmk68_target_original"])
    fitted_points = np.array(record["landmarks"]["lmk68_fitted_original"])
    eye_distance = np.linalg.norm(target[36] - target[45])
    assert np.linalg.norm(fitted_points - target, axis=1).mean() / eye_distance < 0.06  # on the photograph too
    with np.load(out / "ffhq_00000.npz") as z:
        assert z["vertices"].shape == (5023, 3) and z["cam_K"].shape == (3, 3)


def test_meshes_and_overlay_are_readable(fitted):
    _, out = fitted
    mesh = trimesh.load(out / "ffhq_00000.obj", force="mesh", process=False)
    assert len(mesh.faces) == 9976 and len(mesh.vertices) == 5023  # FLAME vertex order kept
    with np.load(out / "ffhq_00000.npz") as z:
        np.testing.assert_allclose(mesh.vertices, z["vertices"], atol=1e-6)
    glb = trimesh.load(out / "ffhq_00000.glb", force="mesh", process=False)
    assert glb.visual.uv.shape == (len(glb.vertices), 2)  # textured formats carry FLAME's UV layout
    assert trimesh.load(out / "ffhq_00000.ply", process=False).vertices.shape == (5023, 3)
    overlay = np.asarray(Image.open(out / "ffhq_00000_overlay.png"))
    assert overlay.shape[0] == 512 and overlay.shape[1] >= 1024
