"""flamejax.convert: random-weight networks saved with the published checkpoints' layout -> ONNX -> ONNX Runtime
equals torch; parameter names against the published ones; refused, damaged and mismatched checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from flamejax.convert import (  # noqa: E402
    CheckpointMismatchError,
    DecaCoarseEncoder,
    ExportVerificationError,
    MicaIdentityNet,
    convert_deca,
    convert_mica,
    export_verified,
    extract_state_dict,
    load_checkpoint,
    load_strict,
    main,
)
from flamejax.files import CorruptFileError  # noqa: E402
from flamejax.init import DecaEncoder, MicaEncoder, decode_deca  # noqa: E402

ATOL = 1e-4
SMALL_RESNET = (1, 1, 1, 1)
SMALL_IRESNET = dict(blocks=(1, 1, 1, 1), widths=(8, 16, 32, 64))


# --------------------------------------------------------------------- parameter names of the published files

def batch_norm(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def deca_e_flame_keys() -> list[str]:
    """``checkpoint['E_flame']`` of deca_model.tar: DECA's ResnetEncoder = torchvision ResNet-50 without fc
    under ``encoder.``, then ``layers`` = Sequential(Linear(2048, 1024), ReLU, Linear(1024, 236))."""
    keys = ["encoder.conv1.weight", *batch_norm("encoder.bn1")]
    for stage, count in enumerate((3, 4, 6, 3), start=1):
        for block in range(count):
            prefix = f"encoder.layer{stage}.{block}"
            for i in (1, 2, 3):
                keys += [f"{prefix}.conv{i}.weight", *batch_norm(f"{prefix}.bn{i}")]
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight", *batch_norm(f"{prefix}.downsample.1")]
    return keys + ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]


def iresnet100_keys() -> list[str]:
    """``checkpoint['arcface']`` of mica.tar: insightface iresnet100 (IBasicBlock x (3, 13, 30, 3))."""
    keys = ["conv1.weight", *batch_norm("bn1"), "prelu.weight"]
    for stage, count in enumerate((3, 13, 30, 3), start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            keys += [*batch_norm(f"{prefix}.bn1"), f"{prefix}.conv1.weight", *batch_norm(f"{prefix}.bn2"),
                     f"{prefix}.prelu.weight", f"{prefix}.conv2.weight", *batch_norm(f"{prefix}.bn3")]
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight", *batch_norm(f"{prefix}.downsample.1")]
    return keys + [*batch_norm("bn2"), "fc.weight", "fc.bias", *batch_norm("features")]


def mapping_keys() -> list[str]:
    """The network part of ``checkpoint['flameModel']``: MappingNetwork(512, 300, 300, hidden=3)."""
    return [f"regressor.network.{i}.{p}" for i in range(4) for p in ("weight", "bias")] + \
        ["regressor.output.weight", "regressor.output.bias"]


def test_deca_parameter_names_and_shapes_are_the_published_ones():
    state = DecaCoarseEncoder().state_dict()
    assert sorted(state) == sorted(deca_e_flame_keys()) and len(state) == 322  # torchvision's 320 - fc + 4
    assert tuple(state["encoder.layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(state["encoder.layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)
    assert tuple(state["layers.0.weight"].shape) == (1024, 2048)
    assert tuple(state["layers.2.weight"].shape) == (236, 1024)


def test_mica_parameter_names_and_shapes_are_the_published_ones():
    net = MicaIdentityNet()
    arcface, regressor = net.arcface.state_dict(), net.regressor.state_dict()
    assert sorted(arcface) == sorted(iresnet100_keys()) and len(arcface) == 925
    assert sorted(f"regressor.{k}" for k in regressor) == sorted(mapping_keys())
    assert tuple(arcface["fc.weight"].shape) == (512, 512 * 7 * 7)
    assert tuple(arcface["layer3.29.prelu.weight"].shape) == (256,)
    assert tuple(arcface["layer1.0.downsample.0.weight"].shape) == (64, 64, 1, 1)
    assert tuple(regressor["network.0.weight"].shape) == (300, 512)
    assert tuple(regressor["output.weight"].shape) == (300, 300)


# ---------------------------------------------------------------------------------------- round trips

def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random parameters *and* BatchNorm statistics, so that no layer is an identity by construction."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + 1.5 * torch.rand(tensor.shape, generator=generator))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim == 1:  # BatchNorm and PReLU weights
                tensor.copy_(0.5 + 0.5 * torch.rand(tensor.shape, generator=generator))
    return module.eval()


def deca_checkpoint(path, model: DecaCoarseEncoder, **extra) -> None:
    """deca_model.tar layout: {'E_flame', 'E_detail', 'D_detail', ...}."""
    torch.save({"E_flame": model.state_dict(), "E_detail": {"encoder.conv1.weight": torch.zeros(2, 3, 1, 1)},
                "D_detail": {}, **extra}, path)


def mica_checkpoint(path, model: MicaIdentityNet, legacy: bool = False) -> None:
    """mica.tar layout: arcface and flameModel (regressor + FLAME buffers under generator.) plus training state,
    including the numpy values MICA's validator keeps."""
    flame_model = {f"regressor.{k}": v for k, v in model.regressor.state_dict().items()}
    flame_model.update({"generator.v_template": torch.zeros(5023, 3), "generator.faces_tensor": torch.zeros(9976, 3,
                        dtype=torch.long), "generator.eye_pose": torch.zeros(1, 6)})
    torch.save({"arcface": model.arcface.state_dict(), "flameModel": flame_model, "epoch": 7, "global_step": 1000,
                "validator": {"embeddings_lyhm": {"actor": [np.zeros(512, np.float32)]}, "best": np.float64(0.5)}},
               path, _use_new_zipfile_serialization=not legacy)


def test_deca_full_resnet50_through_the_cli(tmp_path):
    model = randomised(DecaCoarseEncoder(), seed=0)
    deca_checkpoint(tmp_path / "deca_model.tar", model)
    out = tmp_path / "weights" / "deca_encoder.onnx"
    assert main(["deca", str(tmp_path / "deca_model.tar"), "-o", str(out)]) == 0
    encoder = DecaEncoder.load(out)
    crops = np.random.default_rng(1).random((3, 224, 224, 3), dtype=np.float32)  # batch 3: dynamic axis
    with torch.no_grad():
        expected = model(torch.from_numpy(crops.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(expected).max() > 0.1, "the test network should not be trivially small"
    codes, want = encoder(crops), decode_deca(expected)
    for field in ("shape", "tex", "exp", "pose", "cam", "light"):
        np.testing.assert_allclose(getattr(codes, field), getattr(want, field), atol=ATOL, rtol=0, err_msg=field)
    assert encoder.provider == "CPUExecutionProvider"
    assert encoder.model.session.get_modelmeta().custom_metadata_map["flamejax.network"] == "deca_encoder"
    assert sorted(p.name for p in out.parent.iterdir()) == ["deca_encoder.onnx"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temporary


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-tar"])
def test_mica_small_round_trip(tmp_path, legacy):
    model = randomised(MicaIdentityNet(**SMALL_IRESNET), seed=2)
    mica_checkpoint(tmp_path / "mica.tar", model, legacy=legacy)
    out = convert_mica(tmp_path / "mica.tar", tmp_path / "mica.onnx", **SMALL_IRESNET)
    compare_mica(model, MicaEncoder.load(out))


def compare_mica(model: MicaIdentityNet, encoder: MicaEncoder, batch: int = 2) -> None:
    crops = np.random.default_rng(3).uniform(-1, 1, (batch, 112, 112, 3)).astype(np.float32)
    with torch.no_grad():
        shape, identity = (t.numpy() for t in model(torch.from_numpy(crops.transpose(0, 3, 1, 2).copy())))
    assert np.abs(shape).max() > 0.05
    np.testing.assert_allclose(encoder(crops), shape, atol=ATOL, rtol=0)
    np.testing.assert_allclose(encoder.embed(crops), identity, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(identity, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_mica_full_iresnet100_round_trip(tmp_path):
    model = randomised(MicaIdentityNet(), seed=4)
    mica_checkpoint(tmp_path / "mica.tar", model)
    compare_mica(model, MicaEncoder.load(convert_mica(tmp_path / "mica.tar", tmp_path / "mica.onnx")), batch=1)


def test_checkpoint_layout_variants_load(tmp_path):
    """DataParallel ``module.`` prefixes, a flat ``E_flame.``-prefixed dict, and pre-0.4.1 BatchNorm without
    ``num_batches_tracked`` all give the same network."""
    state = randomised(DecaCoarseEncoder(SMALL_RESNET), seed=5).state_dict()
    variants = {
        "module": {"E_flame": {f"module.{k}": v for k, v in state.items()}},
        "flat": {f"E_flame.{k}": v for k, v in state.items()},
        "old_bn": {"E_flame": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}},
    }
    for name, checkpoint in variants.items():
        torch.save(checkpoint, tmp_path / f"{name}.tar")
        loaded = DecaCoarseEncoder(SMALL_RESNET)
        load_strict(loaded, extract_state_dict(load_checkpoint(tmp_path / f"{name}.tar"), "E_flame", name), name, "x")
        for key, value in loaded.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(value, state[key]), (name, key)


# ----------------------------------------------------------------------------------------------- failures

def test_renamed_key_lists_missing_and_unexpected(tmp_path):
    model = DecaCoarseEncoder(SMALL_RESNET)
    state = model.state_dict()
    state["layers.3.weight"] = state.pop("layers.2.weight")
    torch.save({"E_flame": state}, tmp_path / "renamed.tar")
    with pytest.raises(CheckpointMismatchError) as caught:
        convert_deca(tmp_path / "renamed.tar", tmp_path / "deca.onnx", blocks=SMALL_RESNET)
    assert caught.value.missing == ["layers.2.weight"] and caught.value.unexpected == ["layers.3.weight"]
    message = str(caught.value)
    assert "renamed.tar" in message and "missing: layers.2.weight" in message
    assert "unexpected: layers.3.weight" in message
    assert not (tmp_path / "deca.onnx").exists()


def test_mica_mismatch_names_checkpoint_entries(tmp_path):
    model = MicaIdentityNet(**SMALL_IRESNET)
    mica_checkpoint(tmp_path / "mica.tar", model)
    checkpoint = torch.load(tmp_path / "mica.tar", weights_only=False)
    checkpoint["arcface"]["fc2.weight"] = checkpoint["arcface"].pop("fc.weight")
    del checkpoint["flameModel"]["regressor.output.bias"]
    torch.save(checkpoint, tmp_path / "broken.tar")
    with pytest.raises(CheckpointMismatchError) as caught:
        convert_mica(tmp_path / "broken.tar", tmp_path / "mica.onnx", **SMALL_IRESNET)
    assert caught.value.missing == ["arcface.fc.weight", "regressor.output.bias"]
    assert caught.value.unexpected == ["arcface.fc2.weight"]


def test_wrong_architecture_and_missing_entry(tmp_path):
    torch.save({"E_flame": DecaCoarseEncoder(SMALL_RESNET).state_dict()}, tmp_path / "small.tar")
    with pytest.raises(CheckpointMismatchError, match="missing: encoder.layer1.1"):
        convert_deca(tmp_path / "small.tar", tmp_path / "deca.onnx")  # full ResNet-50 expected
    torch.save({"arcface": {}, "opt": {}}, tmp_path / "no_flame.tar")
    with pytest.raises(CorruptFileError, match=r"no_flame.tar: no 'E_flame' state dict .*\['arcface', 'opt'\]"):
        convert_deca(tmp_path / "no_flame.tar", tmp_path / "deca.onnx")
    state = DecaCoarseEncoder(SMALL_RESNET).state_dict()
    state["layers.2.weight"] = torch.zeros(200, 1024)
    torch.save({"E_flame": state}, tmp_path / "shape.tar")
    with pytest.raises(CorruptFileError, match=r"layers.2.weight \(200, 1024\) \(expected \(236, 1024\)\)"):
        convert_deca(tmp_path / "shape.tar", tmp_path / "deca.onnx", blocks=SMALL_RESNET)


def test_damaged_checkpoints_are_named(tmp_path):
    deca_checkpoint(tmp_path / "good.tar", DecaCoarseEncoder(SMALL_RESNET))
    data = (tmp_path / "good.tar").read_bytes()
    (tmp_path / "truncated.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.tar").write_bytes(b"\x80\x02 certainly not a checkpoint" * 40)
    for name in ("truncated.tar", "garbage.tar"):
        with pytest.raises(CorruptFileError, match=f"{name}: not a readable torch checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="absent.tar"):
        load_checkpoint(tmp_path / "absent.tar")


class _Payload:
    """Unpickling this would create a file: the loader must refuse it without running it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (self.target,)


def test_checkpoint_code_is_never_executed(tmp_path):
    target = tmp_path / "executed"
    torch.save({"E_flame": DecaCoarseEncoder(SMALL_RESNET).state_dict(), "hook": _Payload(target)},
               tmp_path / "hostile.tar")
    with pytest.raises(CorruptFileError, match="objects other than weights .*trust_checkpoint"):
        convert_deca(tmp_path / "hostile.tar", tmp_path / "deca.onnx", blocks=SMALL_RESNET)
    assert not target.exists()


def test_cli_reports_failures(tmp_path, capsys):
    (tmp_path / "garbage.tar").write_bytes(b"nothing")
    assert main(["mica", str(tmp_path / "garbage.tar"), "-o", str(tmp_path / "mica.onnx")]) == 1
    assert "garbage.tar" in capsys.readouterr().err
    assert not (tmp_path / "mica.onnx").exists()


class _BatchDependent(torch.nn.Module):
    """Tracing freezes the Python branch at batch 1; at batch 2 eager torch and the ONNX graph disagree."""

    def forward(self, x):
        return x.mean((1, 2, 3))[:, None] * (2.0 if x.shape[0] == 1 else 3.0)


def test_failed_verification_writes_nothing(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportVerificationError, match="differs from torch"):
        export_verified(_BatchDependent(), (3, 8, 8), "images", ["out"], out)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert export_verified(_BatchDependent(), (3, 8, 8), "images", ["out"], out, verify=False) == out
