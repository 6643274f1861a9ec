"""Damaged, implausible and foreign model files: each gives one clear error naming the file; provenance is recorded."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import warnings

import jax
import numpy as np
import pytest

from flamejax.files import CorruptFileError, MissingFileError
from flamejax.flame import FlameSource, load_flame, load_landmark_embedding, read_flame_arrays, safe_load_npy
from flamejax.flame._model import parse_flame_dict
from tests.conftest import requires_flame, shared_flame_dir

pytestmark = requires_flame


@pytest.fixture(scope="module")
def raw_model():
    from flamejax.flame import safe_load_pickle

    return safe_load_pickle(shared_flame_dir() / "flame_test_model.pkl")


def _with(raw: dict, **changes) -> dict:
    return {**raw, **changes}


def test_implausible_arrays_are_refused_with_what_is_wrong(raw_model, tmp_path):
    path = tmp_path / "generic_model.pkl"
    weights_nan = raw_model["weights"].copy()
    weights_nan[7, 0] = np.nan
    faces_out = raw_model["f"].astype(np.int64)
    faces_out[3, 1] = 5023
    weights_unnormalised = raw_model["weights"] * 1.5
    cases = {
        "weights contains 1 NaN": _with(raw_model, weights=weights_nan),
        "faces index vertices 0..5023": _with(raw_model, f=faces_out),
        "FLAME is in metres": _with(raw_model, v_template=raw_model["v_template"] * 1000),
        "rows do not sum to one": _with(raw_model, weights=weights_unnormalised),
        "at least one expression component": _with(raw_model, shapedirs=raw_model["shapedirs"][:, :, :300]),
        "holds object data": _with(raw_model, posedirs=np.array([None])),
    }
    for message, raw in cases.items():
        with pytest.raises(CorruptFileError, match=f"generic_model.pkl: .*{message}"):
            parse_flame_dict(raw, path)


def test_nan_model_is_refused_end_to_end(raw_model, tmp_path):
    weights = raw_model["weights"].copy()
    weights[0] = np.nan
    with open(tmp_path / "nan.pkl", "wb") as f:
        pickle.dump(_with(raw_model, weights=weights), f, protocol=2)
    with pytest.raises(CorruptFileError, match=r"nan.pkl: damaged FLAME model: weights contains 5 NaN"):
        load_flame(tmp_path / "nan.pkl", use_cache=False, landmarks=False)


def test_component_counts_are_range_checked_with_the_option_named(raw_model, tmp_path):
    path = tmp_path / "ten_expressions.pkl"
    with open(path, "wb") as f:
        pickle.dump(_with(raw_model, shapedirs=raw_model["shapedirs"][:, :, :310]), f, protocol=2)
    model = load_flame(path, n_shape=5, n_expression=10, landmarks=False, use_cache=False)
    assert model.exprdirs.shape[-1] == 10 and model.source.file_expression_components == 10
    with pytest.raises(ValueError, match=r"n_expression=50 is out of range: .*ten_expressions.pkl has 10 expression "
                                         r"components; choose 1..10 \(--n-exp\)"):
        load_flame(path, n_expression=50, landmarks=False, use_cache=False)
    for bad in (1000, 0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"n_shape=.* is out of range: .* choose 1..300 \(--n-shape\)"):
            load_flame(n_shape=bad, landmarks=False)


def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAMEJAX_CACHE", str(tmp_path))
    source = shared_flame_dir() / "flame_test_model.pkl"
    first = read_flame_arrays(source)
    (cached,) = tmp_path.glob("flame-*.npz")
    assert (tmp_path / (cached.name + ".sha256")).is_file()
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])  # a killed writer, a full disk...
    with pytest.warns(RuntimeWarning, match="damaged FLAME cache .* rebuilding it from"):
        rebuilt = read_flame_arrays(source)
    np.testing.assert_array_equal(rebuilt.shapedirs, first.shapedirs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = read_flame_arrays(source)  # the rebuilt cache is valid: no warning
    assert again.sha256 == first.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_provenance_is_recorded_and_static(flame_model):
    source = flame_model.source
    assert isinstance(source, FlameSource)
    assert source.file_name == "flame_test_model.pkl" and source.version == "test model"
    assert (source.n_shape, source.n_expression) == (20, 10)
    assert source.sha256 == read_flame_arrays(shared_flame_dir() / "flame_test_model.pkl").sha256
    assert source.landmark_embedding.endswith("landmark_embedding.npy")
    assert source.to_dict()["file_name"] == "flame_test_model.pkl"
    assert "test model" in source.describe() and source.sha256[:12] in source.describe()
    assert source not in jax.tree.leaves(flame_model)  # meta data: not traced
    total = jax.jit(lambda model: model.v_template.sum())(flame_model)
    assert np.isfinite(total)
    assert flame_model.subset(np.arange(10)).source == source


# ------------------------------------------------------------------------------------- landmark embeddings

@pytest.fixture(scope="module")
def deca_embedding():
    return safe_load_npy(shared_flame_dir() / "landmark_embedding.npy")


def _save_deca(path, data):
    np.save(path, np.array(data, dtype=object), allow_pickle=True)
    return path


def test_damaged_landmark_embeddings_are_named(flame_model, deca_embedding, tmp_path):
    faces = np.asarray(flame_model.faces)
    template = np.asarray(flame_model.v_template)
    good = _save_deca(tmp_path / "good.npy", deca_embedding)
    load_landmark_embedding(faces, good, template=template)
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:-300])
    cases = {
        "unreadable or truncated": tmp_path / "cut.npy",
        "no 'dynamic_lmk_faces_idx'": _save_deca(tmp_path / "keys.npy", {
            k: v for k, v in deca_embedding.items() if k != "dynamic_lmk_faces_idx"}),
        "static face indices are .* expected 51 integers": _save_deca(tmp_path / "short.npy", {
            **deca_embedding, "static_lmk_faces_idx": deca_embedding["static_lmk_faces_idx"][:50]}),
        "not a DECA landmark embedding": _save_deca(tmp_path / "list.npy", [1, 2, 3]),
        "do not sum to one": _save_deca(tmp_path / "bary.npy", {
            **deca_embedding, "full_lmk_bary_coords": deca_embedding["full_lmk_bary_coords"] * 0.5}),
        "face index out of range": _save_deca(tmp_path / "range.npy", {
            **deca_embedding, "static_lmk_faces_idx": deca_embedding["static_lmk_faces_idx"] + 9976}),
    }
    for message, path in cases.items():
        with pytest.raises(CorruptFileError, match=f"{path.name}: .*{message}"):
            load_landmark_embedding(faces, path, template=template)
    with pytest.raises(MissingFileError):
        load_landmark_embedding(faces, tmp_path / "absent.npy")


def test_reordered_landmark_rows_are_refused(flame_model, deca_embedding, tmp_path):
    """Shuffled rows gave a 56.7 % NME fit reported as ok: the layout on the mean head must be iBUG's."""
    faces = np.asarray(flame_model.faces)
    template = np.asarray(flame_model.v_template)
    order = np.random.default_rng(0).permutation(51)
    shuffled = {**deca_embedding, "static_lmk_faces_idx": deca_embedding["static_lmk_faces_idx"][order],
                "static_lmk_bary_coords": deca_embedding["static_lmk_bary_coords"][order]}
    path = _save_deca(tmp_path / "shuffled.npy", shuffled)
    with pytest.raises(CorruptFileError, match="shuffled.npy: the embedded landmarks are not in the iBUG-68 layout"):
        load_landmark_embedding(faces, path, template=template)
    mirrored = {**deca_embedding}
    for key in ("full_lmk_faces_idx", "full_lmk_bary_coords"):  # left/right swapped: jaw 16..0
        full = deca_embedding[key].copy()
        full[0, :17] = full[0, 16::-1]
        mirrored[key] = full
    with pytest.raises(CorruptFileError, match="full 68: points 0-16 do not run"):
        load_landmark_embedding(faces, _save_deca(tmp_path / "mirrored.npy", mirrored), template=template)


def test_damaged_mediapipe_embedding_is_named(flame_model, tmp_path):
    faces = np.asarray(flame_model.faces)
    real = dict(np.load(shared_flame_dir() / "mediapipe_landmark_embedding.npz"))
    landmarks = shared_flame_dir() / "landmark_embedding.npy"
    cases = {
        "must be distinct and lie in 0..477": {**real, "landmark_indices": real["landmark_indices"] + 478},
        "no 'lmk_b_coords'": {k: v for k, v in real.items() if k != "lmk_b_coords"},
        "mediapipe face indices": {**real, "lmk_face_idx": real["lmk_face_idx"][:-1]},
    }
    for i, (message, arrays) in enumerate(cases.items()):
        np.savez(tmp_path / f"mp{i}.npz", **arrays)
        with pytest.raises(CorruptFileError, match=f"mp{i}.npz: .*{message}"):
            load_landmark_embedding(faces, landmarks, tmp_path / f"mp{i}.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "mp0.npz").read_bytes()[:500])
    with pytest.raises(CorruptFileError, match="cut.npz: not a readable .npz"):
        load_landmark_embedding(faces, landmarks, tmp_path / "cut.npz")


def test_flame_source_is_a_frozen_record():
    source = FlameSource(path="/m/generic_model.pkl", sha256="ab" * 32, version="FLAME 2020", n_shape=100,
                         n_expression=50, file_shape_components=300, file_expression_components=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.n_shape = 3
    assert hash(source) == hash(dataclasses.replace(source))


def test_face_region_comes_from_the_masks_file_and_degrades_with_a_warning(flame_model, tmp_path, caplog):
    """The embedding carries the masks file's face region (kept through the landmark-only model); a masks file
    without a usable face region gives a warning naming it and no face vertices, not an error."""
    from flamejax.fit import landmark_model
    from flamejax.flame import safe_load_pickle

    masks = safe_load_pickle(shared_flame_dir() / "FLAME_masks.pkl")
    np.testing.assert_array_equal(flame_model.landmarks.face_vertices, np.unique(masks["face"]))
    subset = landmark_model(flame_model)
    np.testing.assert_allclose(subset.v_template[subset.landmarks.face_vertices],
                               flame_model.v_template[flame_model.landmarks.face_vertices])
    without = landmark_model(flame_model, face=False)  # what a fit without a silhouette needs
    assert without.landmarks.face_vertices.shape == (0,) and without.num_vertices < subset.num_vertices / 2
    faces = np.asarray(flame_model.faces)
    landmarks = shared_flame_dir() / "landmark_embedding.npy"
    for name, content in {"no_face.pkl": {"forehead": masks["forehead"]},
                          "out_of_range.pkl": {"face": np.asarray([0, 99999])}, "a_list.pkl": [1, 2, 3]}.items():
        (tmp_path / name).write_bytes(pickle.dumps(content))
        caplog.clear()
        embedding = load_landmark_embedding(faces, landmarks, masks_path=tmp_path / name)
        assert embedding.face_vertices.shape == (0,)
        assert name in caplog.text and "silhouette" in caplog.text
    with pytest.raises(MissingFileError):
        load_landmark_embedding(faces, landmarks, masks_path=tmp_path / "absent.pkl")
    from flamejax.flame import load_vertex_masks

    read = load_vertex_masks()  # one reader, once per file: the embedding and the UV layout's regions share it
    assert read is load_vertex_masks(shared_flame_dir() / "FLAME_masks.pkl")
    assert read.path == (shared_flame_dir() / "FLAME_masks.pkl").resolve()
    assert not read["face"].flags.writeable and read["face"].dtype == np.int32
    assert dict(load_vertex_masks(tmp_path / "a_list.pkl")) == {}
