"""Fit files: round trips through NPZ and JSON, provenance, camera conventions, flame-head-tracker keys, smplx."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax import camera as cam
from flamejax.camera import Camera
from flamejax.flame import FlameParams
from flamejax.io import FIT_FORMAT_VERSION, FitRecord, load_fit, save_fit
from flamejax.rotation import axis_angle_to_matrix

from conftest import requires_flame, shared_flame_dir

PROVENANCE = {
    "flame_file": {"name": "flame_test_model.pkl", "sha256": "ab" * 32, "version": "2023"},
    "n_shape": 20, "n_expression": 10, "fit_config": {"rigid_steps": 150, "fov_deg": 20.0, "weights": [1.0, 0.5]},
    "init": "linear", "onnx_provider": "CPUExecutionProvider", "flamejax": "0.1.0", "jax": "0.10.2",
    "date": "2026-11-29T23:00:00+00:00",
}


def _params(rng, n_shape=20, n_exp=10) -> FlameParams:
    return FlameParams(rng.normal(size=n_shape) * 0.5, rng.normal(size=n_exp) * 0.5, np.zeros(3),
                       rng.normal(size=3) * 0.05, np.array([0.15, 0.0, 0.0]), rng.normal(size=3) * 0.1,
                       rng.normal(size=3) * 0.1, rng.normal(size=3) * 0.01)


def make_record(rng, vertices=None, photometric=False, status="ok") -> FitRecord:
    camera = Camera(np.array([0.05, -0.2, 0.03]), np.array([0.01, -0.02, -1.1]), np.array(21.5))
    vertices = rng.normal(size=(5023, 3)) * 0.08 if vertices is None else vertices
    fitted = np.asarray(cam.project(Camera(*(jnp.asarray(x, jnp.float32) for x in (
        camera.rotation, camera.translation, camera.fov_deg))), jnp.asarray(vertices[:68], jnp.float32), 256)[0])
    affine = np.array([[2.5, 0.1, 40.0], [-0.1, 2.5, 12.0]])
    landmarks = {"lmk68_fitted": fitted, "lmk68_target": fitted + 0.5, "iris_fitted": fitted[:10],
                 "iris_target": fitted[:10] + 0.2, "mediapipe_target": rng.uniform(0, 256, size=(478, 2))}
    landmarks |= {f"{k}_original": v @ affine[:, :2].T + affine[:, 2] for k, v in list(landmarks.items())}
    return FitRecord(
        name="photos/face 01.jpg", status=status, reason="" if status == "ok" else "NME above 8 %",
        mode="photometric" if photometric else "landmark", init="linear", params=_params(rng), camera=camera,
        image_size=256, vertices=vertices, landmarks=landmarks, fit_to_original=affine, original_size=(1024, 768),
        metrics={"nme_inner51": 0.021, "rigid_final_loss": 1.5e-3, "landmark_final_loss": 8e-4,
                 "undefined_metric": float("nan")},
        provenance=PROVENANCE, detection={"confidence": 0.93, "num_faces": 1, "face_index": 0},
        photometric=None if not photometric else {
            "texture": rng.uniform(size=(32, 32, 3)), "light": rng.normal(size=(9, 3)),
            "texture_coeffs": rng.normal(size=50), "l1_start": 0.12, "l1_final": 0.05})


def assert_records_equal(a: FitRecord, b: FitRecord, texture: bool = True):
    for field in ("name", "status", "reason", "mode", "init", "image_size", "original_size", "provenance",
                  "detection"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.metrics.keys() == b.metrics.keys()
    np.testing.assert_array_equal(list(a.metrics.values()), list(b.metrics.values()))  # NaN-aware
    leaves = jax.tree_util.tree_leaves
    for x, y in zip(leaves(a.params) + leaves(a.camera), leaves(b.params) + leaves(b.camera)):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.fit_to_original, b.fit_to_original)
    assert a.landmarks.keys() == b.landmarks.keys()
    for k in a.landmarks:
        np.testing.assert_array_equal(a.landmarks[k], b.landmarks[k], err_msg=k)
    assert (a.photometric is None) == (b.photometric is None)
    if a.photometric is not None:
        for k in a.photometric:
            if k == "texture" and not texture:
                assert b.photometric[k] is None
            else:
                np.testing.assert_array_equal(a.photometric[k], b.photometric[k], err_msg=k)


@pytest.mark.parametrize("photometric", [False, True])
def test_fit_files_round_trip(tmp_path, photometric):
    record = make_record(np.random.default_rng(0), photometric=photometric)
    written = save_fit(tmp_path / "face 01", record)
    assert written == {"npz": tmp_path / "face 01.npz", "json": tmp_path / "face 01.json"}
    assert_records_equal(record, load_fit(written["npz"]))
    assert_records_equal(record, load_fit(written["json"]), texture=False)
    document = json.loads(written["json"].read_text())  # strict JSON: the NaN metric is null
    assert document["format_version"] == FIT_FORMAT_VERSION and document["metrics"]["undefined_metric"] is None
    assert document["provenance"]["flame_file"]["sha256"] == "ab" * 32
    with np.load(written["npz"]) as z:  # plain arrays: no pickle needed
        assert int(z["format_version"]) == FIT_FORMAT_VERSION
        assert str(z["status"]) == "ok" and str(z["init"]) == "linear"
        assert str(z["mode"]) == ("photometric" if photometric else "landmark")
        assert json.loads(str(z["provenance"])) == PROVENANCE
        assert z["mediapipe_target"].shape == (478, 2) and z["eye_pose"].shape == (6,)
        assert "cam" not in z.files  # flame-head-tracker keys only on request


def test_failed_fits_keep_their_status_and_nan(tmp_path):
    rng = np.random.default_rng(1)
    vertices = np.full((5023, 3), np.nan)
    with pytest.raises(ValueError, match="status ok with non-finite"):
        make_record(rng, vertices=vertices)
    record = make_record(rng, vertices=vertices, status="failed")
    written = save_fit(tmp_path / "bad", record)
    for path in written.values():
        back = load_fit(path)
        assert back.status == "failed" and back.reason == "NME above 8 %" and np.isnan(back.vertices).all()
    with pytest.raises(ValueError, match="status 'fine'"):
        make_record(rng, status="fine")
    with pytest.raises(ValueError, match="provenance must be JSON-serialisable"):
        dataclasses.replace(record, provenance={"config": object()})


def test_fit_file_saves_every_camera_convention(tmp_path):
    import cv2

    record = make_record(np.random.default_rng(2))
    with np.load(save_fit(tmp_path / "f", record)["npz"]) as z:
        pixels = z["lmk68_fitted"].astype(np.float64)
        rvec = cv2.Rodrigues(z["R_opencv"].astype(np.float64))[0]
        cv_pixels = cv2.projectPoints(z["vertices"][:68].astype(np.float64), rvec, z["t_opencv"].astype(np.float64),
                                      z["K_opencv"].astype(np.float64), None)[0][:, 0]
        np.testing.assert_allclose(cv_pixels + 0.5, pixels, atol=2e-3)
        in_camera = z["vertices_camera_opencv"][:68].astype(np.float64)
        uvw = in_camera @ z["K"].astype(np.float64).T
        np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], pixels, atol=2e-3)
        np.testing.assert_allclose(np.linalg.inv(z["camera_to_world_opengl"]),
                                   np.diag([1, -1, -1, 1]) @ z["world_to_camera_opencv"], atol=1e-5)
        rvec = cv2.Rodrigues(z["R_opencv_original"].astype(np.float64))[0]
        photo_pixels = cv2.projectPoints(z["vertices"][:68].astype(np.float64), rvec,
                                         z["t_opencv_original"].astype(np.float64),
                                         z["K_opencv_original"].astype(np.float64), None)[0][:, 0]
        np.testing.assert_allclose(photo_pixels + 0.5, z["lmk68_fitted_original"], atol=1e-2)
    document = json.loads((tmp_path / "f.json").read_text())
    np.testing.assert_allclose(document["cam"]["K_opencv"], np.asarray(cam.intrinsics_opencv(record.camera, 256)))
    assert set(document["cam"]["conventions"]) >= {"opencv", "opengl", "K", "K_opencv", "K_original"}
    with np.load(tmp_path / "f.npz") as z:
        for key in ("K_original", "K_opencv_original", "R_opencv_original", "t_opencv_original"):
            np.testing.assert_allclose(document["cam"][key], z[key], atol=1e-6)


def test_flame_head_tracker_keys(tmp_path):
    record = make_record(np.random.default_rng(3), photometric=True)
    with np.load(save_fit(tmp_path / "f", record, fht=True)["npz"]) as z:
        assert z["cam"].shape == (6,) and z["fov"].shape == () and z["tex"].shape == (50,)
        assert z["lmks_68"].shape == (68, 2) and z["lmks_dense"].shape == (478, 2) and z["lmks_eyes"].shape == (10, 2)
        for key in ("shape", "exp", "head_pose", "jaw_pose", "eye_pose", "light", "K"):
            assert key in z.files
        np.testing.assert_allclose(z["cam"], cam.camera_to_world_pose6(record.camera), atol=1e-6)
        np.testing.assert_array_equal(z["lmks_dense"], record.landmarks["mediapipe_target"])
        np.testing.assert_allclose(float(z["fov"]), 21.5)


def test_load_fit_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match=r"\.npz or \.json"):
        load_fit(tmp_path / "f.txt")
    np.savez(tmp_path / "other.npz", shape=np.zeros(3))
    with pytest.raises(ValueError, match="not a flamejax fit file"):
        load_fit(tmp_path / "other.npz")
    written = save_fit(tmp_path / "f", make_record(np.random.default_rng(4)))
    document = json.loads(written["json"].read_text())
    document["format_version"] = FIT_FORMAT_VERSION + 1
    written["json"].write_text(json.dumps(document))
    with pytest.raises(ValueError, match="newer"):
        load_fit(written["json"])


@requires_flame
def test_saved_parameters_reproduce_smplx_vertices(tmp_path, flame_model):
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    from flamejax.flame import flame_forward

    rng = np.random.default_rng(5)
    params = _params(rng)
    vertices = np.asarray(flame_forward(flame_model, FlameParams(*(jnp.asarray(x, jnp.float32) for x in (
        params.shape, params.expression, params.head_pose, params.neck_pose, params.jaw_pose,
        params.left_eye_pose, params.right_eye_pose, params.translation)))).vertices)
    record = dataclasses.replace(make_record(rng, vertices=vertices), params=params)
    with np.load(save_fit(tmp_path / "fit", record)["npz"]) as z:
        saved = {k: torch.tensor(z[k][None], dtype=torch.float32) for k in (
            "shape", "exp", "head_pose", "neck_pose", "jaw_pose", "eye_pose", "translation", "camera_rotation",
            "camera_translation")}
        saved_vertices, in_camera = z["vertices"], z["vertices_camera_opencv"]
    model_dir = tmp_path / "flame"  # smplx.create looks in <model_path>/flame
    model_dir.mkdir()
    shutil.copy(shared_flame_dir() / "flame_test_model.pkl", model_dir / "FLAME_NEUTRAL.pkl")
    shutil.copy(shared_flame_dir() / "flame_static_embedding.pkl", model_dir / "flame_static_embedding.pkl")
    model = smplx.create(str(tmp_path), model_type="flame", num_betas=20, num_expression_coeffs=10)
    kwargs = dict(betas=saved["shape"], expression=saved["exp"], neck_pose=saved["neck_pose"],
                  jaw_pose=saved["jaw_pose"], leye_pose=saved["eye_pose"][:, :3], reye_pose=saved["eye_pose"][:, 3:])
    with torch.no_grad():
        out = model(global_orient=saved["head_pose"], transl=saved["translation"], **kwargs)
        head = out.vertices[0].numpy()
        np.testing.assert_allclose(head, saved_vertices, atol=1e-6)  # measured: 3.0e-8 m
        # the camera folded into smplx's root rotation (see the flamejax.io._fit_file docstring)
        rotation = axis_angle_to_matrix(jnp.asarray(saved["camera_rotation"][0].numpy()))
        root = out.joints[0, 0].numpy() - saved["translation"][0].numpy()
        transl = (np.asarray(rotation) @ saved["translation"][0].numpy() + saved["camera_translation"][0].numpy()
                  + (np.asarray(rotation) - np.eye(3)) @ root)
        posed = model(global_orient=saved["camera_rotation"], transl=torch.tensor(transl[None], dtype=torch.float32),
                      **kwargs).vertices[0].numpy()
    np.testing.assert_allclose(posed * [1, -1, -1], in_camera, atol=2e-6)  # measured: 1.2e-7 m


