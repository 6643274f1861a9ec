"""The one ONNX layer against hostile files: truncated, foreign, wrong contract, failing or lying at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flamejax.files import CorruptFileError, MissingFileError
from flamejax.onnx_session import OnnxContract, OnnxModel, TensorSpec, open_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

CONTRACT = OnnxContract(key="mica", title="test network", inputs=(TensorSpec("x", ((None, 4),)),),
                        outputs=(TensorSpec("y", ((None, 2),)),), remedy="Make it again.")


def _graph(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _slice_graph(path: Path, *, out_width=2, declared_width=2, out_name="y", dtype=TensorProto.FLOAT) -> Path:
    """y = x[:, :out_width], declared as (N, declared_width)."""
    consts = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
              for name, value in (("starts", 0), ("ends", out_width), ("axes", 1))]
    return _graph(path, [helper.make_node("Slice", ["x", "starts", "ends", "axes"], [out_name])],
                  [helper.make_tensor_value_info("x", dtype, ["N", 4])],
                  [helper.make_tensor_value_info(out_name, dtype, ["N", declared_width])], consts)


def test_a_conforming_graph_runs_and_reports_its_provider(tmp_path):
    model = open_onnx(CONTRACT, _slice_graph(tmp_path / "ok.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(model, OnnxModel) and model.provider == "CPUExecutionProvider"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(model.run({"x": x})["y"], x[:, :2])
    assert open_onnx(CONTRACT, tmp_path / "ok.onnx", providers=["CPUExecutionProvider"]).session is model.session


def test_hostile_files_give_one_clear_error(tmp_path):
    good = _slice_graph(tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "pickle.onnx").write_bytes(b"\x80\x04\x95\x00\x00")
    cases = {
        "cut.onnx": "cut.onnx: not a valid ONNX model for test network",
        "empty.onnx": "empty.onnx: not a valid ONNX model",
        "pickle.onnx": "pickle.onnx: not a valid ONNX model",
    }
    for name, message in cases.items():
        with pytest.raises(CorruptFileError, match=f"{message}.*Make it again"):
            open_onnx(CONTRACT, tmp_path / name)
    _slice_graph(tmp_path / "renamed.onnx", out_name="z")
    with pytest.raises(CorruptFileError, match=r"renamed.onnx: not a test network ONNX file: no float32 output 'y' "
                                               r"of shape \(N, 2\) \(it has x tensor\(float\) \['N', 4\], z "):
        open_onnx(CONTRACT, tmp_path / "renamed.onnx")
    _slice_graph(tmp_path / "double.onnx", dtype=TensorProto.DOUBLE)
    with pytest.raises(CorruptFileError, match="no float32 input 'x'"):
        open_onnx(CONTRACT, tmp_path / "double.onnx")
    with pytest.raises(MissingFileError, match="absent.onnx"):
        open_onnx(CONTRACT, tmp_path / "absent.onnx")


def test_graphs_that_lie_about_their_outputs_are_caught_when_run(tmp_path):
    liar = open_onnx(CONTRACT, _slice_graph(tmp_path / "liar.onnx", out_width=3, declared_width=2))
    with pytest.raises(CorruptFileError, match=r"liar.onnx: output 'y' is float32 \(2, 3\) for a batch of 2; "
                                               r"expected float32 'y' of shape \(N, 2\)"):
        liar.run({"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(CorruptFileError, match="liar.onnx: ONNX Runtime could not run this network"):
        liar.run({"x": np.zeros((2, 5, 1), np.float32)})


def test_an_open_model_is_checked_against_the_contract_it_is_used_for(tmp_path):
    from flamejax.perception import parse_face

    model = open_onnx(CONTRACT, _slice_graph(tmp_path / "mica.onnx"))
    with pytest.raises(CorruptFileError, match="mica.onnx: not a face parsing .* ONNX file: first input: expected "
                                               r"a float32 \(N, 3, H, W\) image tensor"):
        parse_face(np.zeros((32, 32, 3), np.uint8), model)
