"""Data parallelism: a batch sharded over 4 (forced host) devices fits as it does unsharded; several
processes joined by ``jax.distributed`` split the file list and one summary covers them all."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from flamejax.fitdir import read_jsonl
from flamejax.distributed import ProcessInfo, host_shard, initialize_distributed
from flamejax.fit import fit_landmarks_batch, sample_problem, stack_targets
from tests.conftest import requires_flame
from tests.test_fitdir import ARGS, PHOTOS, fitter_of, make_photo_dir, run_dir

pytestmark = requires_flame
ROOT = Path(__file__).resolve().parents[1]
DEVICES = 4
FOUR_PHOTOS = dict(list(PHOTOS.items())[:DEVICES])

_SHARDED_RUN = """
import json, sys
from pathlib import Path
import jax, numpy as np
from flamejax.cli import directory_config_from_args, fitter_from_args
from flamejax.distributed import fit_sharded, local_mesh, round_batch_size, shard_batch
from flamejax.fit import LandmarkTargets
from flamejax.fitdir import fit_directory
from flamejax.flame import load_flame
from tests.test_fitdir import parse_args

work = Path(sys.argv[1])
mesh = local_mesh()
args = parse_args(work / "photos", work / "sharded_dir", ["--devices", str(mesh.size)])
model = load_flame(n_shape=args.n_shape, n_expression=args.n_exp)
fitter = fitter_from_args(args, model=model)
with np.load(work / "targets.npz") as f:
    targets = LandmarkTargets(**{k: f[k] for k in f.files})
result = fit_sharded(model, targets, fitter.config, mesh)
leaf = result.params.shape
np.savez(work / "sharded.npz", *[np.asarray(x) for x in jax.tree.leaves(result)])
try:
    shard_batch(np.zeros((mesh.size + 2, 3)), mesh)
    indivisible = "accepted"
except ValueError:
    indivisible = "refused"
summary = fit_directory(work / "photos", work / "sharded_dir", fitter, directory_config_from_args(args))
(work / "facts.json").write_text(json.dumps({
    "mesh_size": mesh.size, "round_5": round_batch_size(5, mesh), "indivisible": indivisible,
    "spec": list(leaf.sharding.spec), "result_devices": len(leaf.sharding.device_set),
    "dir_devices": summary.devices, "dir_batch": summary.batch_size, "dir_fitted": summary.fitted}))
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                                            "JAX_PROCESS_ID")}
    return env | {"JAX_PLATFORMS": "cpu"} | extra


@pytest.fixture(scope="module")
def sharded_and_unsharded(tmp_path_factory, flame_model):
    """The same synthetic batch and photo folder fitted sharded over 4 devices (a child process, as the device
    count is fixed when JAX starts) and on one device (here), concurrently."""
    work = tmp_path_factory.mktemp("sharded")
    make_photo_dir(work / "photos", FOUR_PHOTOS, failing=False)
    rng = np.random.default_rng(11)
    targets = stack_targets([sample_problem(flame_model, rng).targets for _ in range(DEVICES)])
    np.savez(work / "targets.npz", **{k: np.asarray(v) for k, v in vars(targets).items() if v is not None})
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    child = subprocess.Popen([sys.executable, "-c", _SHARDED_RUN, str(work)], cwd=ROOT, env=_child_env(XLA_FLAGS=flags),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fitter = fitter_of(flame_model)
        unsharded = jax.tree.map(np.asarray, fit_landmarks_batch(flame_model, targets, fitter.config))
        run_dir(work / "photos", work / "unsharded_dir", flame_model)
    finally:
        output, _ = child.communicate(timeout=300)
    assert child.returncode == 0, output
    with np.load(work / "sharded.npz") as f:
        sharded = jax.tree.unflatten(jax.tree.structure(unsharded), [f[f"arr_{i}"] for i in range(len(f.files))])
    return work, unsharded, sharded, json.loads((work / "facts.json").read_text())


def test_batch_is_split_over_the_devices(sharded_and_unsharded):
    *_, facts = sharded_and_unsharded
    assert (facts["mesh_size"], facts["result_devices"], facts["spec"]) == (DEVICES, DEVICES, ["batch"])
    assert (facts["round_5"], facts["indivisible"]) == (8, "refused")
    assert (facts["dir_devices"], facts["dir_batch"], facts["dir_fitted"]) == (DEVICES, DEVICES, DEVICES)


def test_sharded_fit_equals_unsharded(sharded_and_unsharded):
    _, unsharded, sharded, _ = sharded_and_unsharded
    # Each device compiles the fit for its own slice of the batch: float32 sums may round differently,
    # which the optimiser carries to ~1e-3 in coefficients; a mix-up of images would differ by ~1.
    np.testing.assert_array_equal(sharded.status, unsharded.status)
    np.testing.assert_allclose(sharded.landmarks.lmk68, unsharded.landmarks.lmk68, atol=5e-4)
    np.testing.assert_allclose(sharded.camera.rotation, unsharded.camera.rotation, atol=1e-3)
    np.testing.assert_allclose(sharded.camera.translation, unsharded.camera.translation, atol=1e-3)
    np.testing.assert_allclose(sharded.params.shape, unsharded.params.shape, atol=1e-2)
    np.testing.assert_allclose(sharded.params.expression, unsharded.params.expression, atol=1e-2)
    np.testing.assert_allclose(sharded.nme, unsharded.nme, atol=1e-4)


def test_sharded_directory_run_equals_single_device(sharded_and_unsharded):
    work, *_ = sharded_and_unsharded
    for name in FOUR_PHOTOS:
        stem = Path(name).with_suffix("")
        with np.load(work / "sharded_dir" / f"{stem}.npz") as a, np.load(work / "unsharded_dir" / f"{stem}.npz") as b:
            # Coefficients held near their optimum by the priors have almost no gradient, and Adam's normalised
            # steps turn per-device rounding there into a walk of ~0.05 (shape) or ~1 degree (jaw twist): well under
            # a millimetre on the face, and far below a mix-up of images (checked by the landmarks below).
            for key, atol in (("shape", 0.1), ("exp", 0.1), ("jaw_pose", 0.03), ("eye_pose", 0.03),
                              ("camera_rotation", 1e-2), ("camera_translation", 1e-2)):
                np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=f"{name}: {key}")
            # Real photographs: the optimiser carries the per-device rounding to ~0.2 px of 256, the landmark weights
            # recomputed at each segment's pose to ~0.75 px at the jaw (mix-ups: ~10 px).
            np.testing.assert_allclose(a["lmk68_fitted"], b["lmk68_fitted"], atol=1.0, err_msg=name)
            nme_a, nme_b = (json.loads(str(z["metrics"]))["nme_inner51"] for z in (a, b))
            np.testing.assert_allclose(nme_a, nme_b, atol=2e-3, err_msg=name)


# ---------------------------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_processes_split_the_files_and_share_one_summary(tmp_path):
    """Two processes joined by jax.distributed (environment variables only), each with its share of a folder."""
    photos = make_photo_dir(tmp_path / "photos", {}, failing=True)  # two images, each failing fast
    out = tmp_path / "out"
    address = f"localhost:{_free_port()}"
    children = [subprocess.Popen([sys.executable, "-m", "flamejax", "fit-dir", str(photos), "-o", str(out), *ARGS],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=_child_env(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                                                JAX_PROCESS_ID=str(i)))
                for i in range(2)]
    outputs = [child.communicate(timeout=180)[0] for child in children]
    assert [child.returncode for child in children] == [5, 5], outputs  # 5: no image fitted
    assert "process 0/2" in outputs[0] and "process 1/2" in outputs[1]
    logged = [[row["image"] for row in read_jsonl(out / f"summary-p{i}.jsonl")] for i in range(2)]
    assert logged == [["corrupt.png"], ["noface.png"]]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["image"], r["status"]) for r in rows] == [("corrupt.png", "failed"), ("noface.png", "failed")]


def test_host_shard_is_a_disjoint_balanced_cover():
    items = list(range(10))
    shares = [host_shard(items, ProcessInfo(i, 3)) for i in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert host_shard(items, ProcessInfo(0, 1)) == items


def test_single_process_needs_no_initialisation(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert initialize_distributed() == ProcessInfo(0, 1)
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("args, env, message", [
    ((None, 2, 0), {}, "needs --coordinator"),
    (("localhost:1", 2, None), {}, "needs --process-id"),
    (("localhost:1", None, None), {}, "needs --num-processes or JAX_NUM_PROCESSES, --process-id"),
    ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "not an integer"),
])
def test_incomplete_multi_process_settings_are_refused(monkeypatch, args, env, message):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        initialize_distributed(*args)
    assert not jax.distributed.is_initialized()
