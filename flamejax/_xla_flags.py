"""CPU compiler setting applied before JAX starts, when flamejax is imported first.

XLA's experimental YNNPACK fusions make this package's small-matrix scans and the rasterizer's backward pass
1.4-2.3x slower on x86 CPUs (measured in benchmarks/RESULTS.md); turning them off changes no result. It only
takes effect if JAX has not been imported yet, never overrides a choice already in ``XLA_FLAGS``, and
``FLAMEJAX_KEEP_XLA_FLAGS=1`` disables it.
"""

from __future__ import annotations

import os
import sys

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def apply() -> None:
    if "jax" in sys.modules or os.environ.get("FLAMEJAX_KEEP_XLA_FLAGS") == "1":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=".strip()
