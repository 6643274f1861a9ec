"""Data parallelism: a ``jax.sharding`` mesh over the batch axis of this process's devices, and several
processes (hosts) joined by ``jax.distributed``, each fitting its own slice of the file list.

A batch of ``B`` images is split along its leading axis over the ``D`` local devices (``B`` is rounded up to a
multiple of ``D``); the model is replicated. ``jax.jit`` follows the input shardings, so the compiled fit is
the single-device one run on ``B / D`` images per device, with no communication between devices. Hosts do not
communicate either: process ``i`` of ``n`` takes files ``i, i + n, i + 2n, ...`` of the sorted list and fits
them on its own devices; ``jax.distributed`` tells each process its index and count and provides the final
barrier before process 0 writes the combined summary. There is no scheduler beyond that.

Launching
---------

One machine, any number of GPUs (or one TPU host): one process sees every local device and shards each batch
over all of them; nothing to configure::

    flamejax fit-dir photos/ -o fits/ --batch-size 256          # 8 GPUs: 32 images per GPU per step
    flamejax fit-dir photos/ -o fits/ --devices 4               # only the first 4 local devices

Several hosts (GPU nodes, or a TPU pod slice): start one process per host, each with all of its local devices,
all reading the same input folder and writing to the same (shared) output folder.

* TPU pod slice: ``jax.distributed`` finds the coordinator, process count and index by itself::

      gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \\
          --command="flamejax fit-dir /mnt/photos -o /mnt/fits --cluster-auto --batch-size 512"

* SLURM or Open MPI: the same auto-detection (``srun flamejax fit-dir ... --cluster-auto``, one task per node).

* Any other cluster: give the coordinator (process 0's address and a free port), the process count and each
  process's index, by options or by environment variables::

      # on host 0                                      # on host 1
      flamejax fit-dir photos/ -o fits/ \\               flamejax fit-dir photos/ -o fits/ \\
          --coordinator 10.0.0.1:1234 \\                     --coordinator 10.0.0.1:1234 \\
          --num-processes 2 --process-id 0                  --num-processes 2 --process-id 1

      # or: JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 flamejax fit-dir ...

Each process writes its images' results and done-markers and its own ``summary-p<i>.jsonl``; process 0 waits
for all (a barrier over every device), then writes ``summary.csv`` for the whole folder. A re-run with the same
command resumes: every process skips the images whose results exist and verify.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flamejax.fit import FitConfig, FitResult, LandmarkTargets, fit_landmarks_batch, landmark_model
from flamejax.flame import FlameModel

log = logging.getLogger("flamejax")

BATCH_AXIS = "batch"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
"""Read by ``jax.distributed.initialize`` itself."""
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- devices


def local_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over the first ``num_devices`` of this process's devices (default: all)."""
    devices = jax.local_devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"asked for {num_devices} devices; this process has {len(devices)}")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh; every other axis whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def round_batch_size(batch_size: int, mesh: Mesh) -> int:
    """``batch_size`` rounded up to a multiple of the mesh size (every device gets the same share)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return math.ceil(batch_size / mesh.size) * mesh.size


def shard_batch(tree: T, mesh: Mesh) -> T:
    """Place a pytree whose leaves share a leading batch axis (divisible by the mesh size) across the mesh."""
    sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1 or next(iter(sizes)) % mesh.size:
        raise ValueError(f"leading axes {sorted(sizes)} must agree and divide over {mesh.size} devices "
                         "(pad with stack_targets(targets, round_batch_size(n, mesh)))")
    return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree: T, mesh: Mesh) -> T:
    """A copy of ``tree`` on every device of the mesh (the model, in a data-parallel fit)."""
    return jax.device_put(tree, replicated(mesh))


def fit_sharded(model: FlameModel, targets: LandmarkTargets, config: FitConfig, mesh: Mesh) -> FitResult:
    """:func:`~flamejax.fit.fit_landmarks_batch` with the batch split over ``mesh`` (results stay sharded).

    ``targets`` has a leading batch axis divisible by ``mesh.size``. Pass ``replicate(landmark_model(model),
    mesh)`` as ``model`` to avoid copying it to the devices on every call.
    """
    return fit_landmarks_batch(replicate(landmark_model(model), mesh), shard_batch(targets, mesh), config)


# ---------------------------------------------------------------------------------------------- processes


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in a (possibly single-process) run."""

    index: int
    count: int

    @property
    def is_main(self) -> bool:
        return self.index == 0


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, cluster_auto: bool = False) -> ProcessInfo:
    """Join a multi-process run through ``jax.distributed.initialize``, or do nothing for a single process.

    Arguments default to the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``). With ``cluster_auto`` JAX detects a TPU pod slice, SLURM, Open MPI or Kubernetes job
    (given arguments still apply). Otherwise a coordinator or a process count above one needs all three
    settings (``ValueError`` naming the missing ones); none of them means a single process. Call it before any
    other JAX call (it must precede backend initialisation).
    """
    if jax.distributed.is_initialized():
        return process_info()
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if cluster_auto:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif coordinator_address is not None or (num_processes or 1) > 1:
        settings = {f"--coordinator or {ENV_COORDINATOR}": coordinator_address,
                    f"--num-processes or {ENV_NUM_PROCESSES}": num_processes,
                    f"--process-id or {ENV_PROCESS_ID}": process_id}
        missing = [name for name, value in settings.items() if value is None]
        if missing:
            raise ValueError(f"a multi-process run needs {', '.join(missing)} (or --cluster-auto on a TPU pod "
                             "slice, SLURM, Open MPI or Kubernetes)")
        if num_processes > 1:
            jax.distributed.initialize(coordinator_address, num_processes, process_id)
    info = process_info()
    if info.count > 1:
        log.info("process %d of %d, %d local devices", info.index, info.count, jax.local_device_count())
    return info


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def process_info() -> ProcessInfo:
    return ProcessInfo(jax.process_index(), jax.process_count())


def host_shard(items: Sequence[T], info: ProcessInfo | None = None) -> list[T]:
    """This process's share of ``items``: every ``count``-th item from its ``index`` (balanced, disjoint)."""
    info = info or process_info()
    return list(items[info.index::info.count])


def wait_for_all_processes(name: str) -> None:
    """Block until every process reaches this point (no-op for a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
