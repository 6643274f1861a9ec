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
