"""Locating user-supplied files: lookup order, clear messages, checksums."""

from __future__ import annotations

import hashlib

import pytest

from flamejax.files import CorruptFileError, MissingFileError, find_file


def test_explicit_folder_and_env_lookup(tmp_path, monkeypatch):
    (tmp_path / "mica.onnx").write_bytes(b"x")
    assert find_file("mica", tmp_path) == tmp_path / "mica.onnx"
    monkeypatch.setenv("FLAMEJAX_WEIGHTS", str(tmp_path))
    assert find_file("mica") == tmp_path / "mica.onnx"


def test_missing_file_says_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAMEJAX_WEIGHTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert find_file("deca_encoder", required=False) is None  # absent optional weights: None, no error
    with pytest.raises(MissingFileError, match="deca.is.tue.mpg.de") as err:
        find_file("deca_encoder", tmp_path / "nope.onnx")
    assert "FLAMEJAX_WEIGHTS" in str(err.value)
    with pytest.raises(KeyError, match="unknown weight file kind"):
        find_file("not_a_kind")


def test_pinned_checksums_catch_a_changed_file(tmp_path):
    onnx = tmp_path / "mica.onnx"
    onnx.write_bytes(b"the file the user downloaded")
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  mica.onnx\n{'0' * 64}  other.onnx\n")
    assert find_file("mica", tmp_path) == onnx
    onnx.write_bytes(b"the file the user downloaded, truncated or replaced")
    with pytest.raises(CorruptFileError, match="mica.onnx: checksum mismatch"):
        find_file("mica", tmp_path)
    with pytest.raises(CorruptFileError):
        find_file("mica", onnx)


def test_set_weights_folder_never_falls_back_to_another_model(tmp_path, monkeypatch):
    """An empty or mistyped FLAMEJAX_WEIGHTS used to load the development model beside the checkout silently."""
    import flamejax.files as files

    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FLAMEJAX_WEIGHTS", str(empty))
    with pytest.raises(MissingFileError, match=f"(?s)missing flame_model: .*generic_model.pkl.* in: {empty}\\.") as err:
        find_file("flame_model")
    assert f"FLAMEJAX_WEIGHTS (now {empty})" in str(err.value)
    assert find_file("mica", required=False) is None
    monkeypatch.setenv("FLAMEJAX_WEIGHTS", str(tmp_path / "emtpy"))  # mistyped
    with pytest.raises(MissingFileError, match="FLAMEJAX_WEIGHTS names .*emtpy, which is not an existing folder"):
        find_file("flame_model")
    monkeypatch.delenv("FLAMEJAX_WEIGHTS")
    assert files.search_dirs() == files.default_dirs()


def test_missing_file_advice_names_a_real_place(tmp_path, monkeypatch):
    import flamejax.files as files

    monkeypatch.delenv("FLAMEJAX_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(files, "default_dirs", lambda: [])
    with pytest.raises(MissingFileError) as err:
        find_file("deca_encoder", required=True)
    user_dir = tmp_path / "data" / "flamejax"
    assert str(user_dir) in str(err.value) and "site-packages" not in str(err.value)
    assert files.user_weights_dir() == user_dir and not user_dir.exists()
    assert files.user_weights_dir(create=True).is_dir()
    (user_dir / "mica.onnx").write_bytes(b"x")
    monkeypatch.undo()
    monkeypatch.delenv("FLAMEJAX_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_dir in files.default_dirs()
