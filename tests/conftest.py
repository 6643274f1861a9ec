"""Shared fixtures. Assets come from FLAMEJAX_WEIGHTS, else ../shared/flame beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
if (SHARED / "flame").is_dir():  # a set FLAMEJAX_WEIGHTS must name existing folders
    os.environ.setdefault("FLAMEJAX_WEIGHTS", str(SHARED / "flame"))
# The CLI keeps compiled programs on disk by default; tests that compare runs exactly compile fresh
# (tests/test_runtime.py checks the cache itself).
os.environ.setdefault("FLAMEJAX_COMPILE_CACHE", "0")


def _memory_maps() -> int | None:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return None


def _map_limit() -> int:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return 65530


MAP_LIMIT = _map_limit()
_caches_dropped = []


@pytest.fixture(autouse=True)
def _release_compiled_programs_near_the_map_limit():
    """Every compiled XLA CPU program holds about 18 memory mappings, every eager op's about 9. A full run compiles
    thousands; past ``vm.max_map_count`` (65530 by default) LLVM cannot map the next program and XLA segfaults
    (it did, in the last tests to run). Near the limit JAX's caches are dropped, which unmaps them; what a later
    test needs compiles again."""
    yield
    count = _memory_maps()
    if count is not None and count > 0.6 * MAP_LIMIT:
        import jax

        jax.clear_caches()
        _caches_dropped.append((count, _memory_maps()))


def pytest_terminal_summary(terminalreporter):
    for before, after in _caches_dropped:
        terminalreporter.write_line(f"JAX caches dropped near the memory-map limit: {before} -> {after} maps "
                                    f"(vm.max_map_count {MAP_LIMIT})")


def shared_flame_dir() -> Path:
    return Path(os.environ.get("FLAMEJAX_WEIGHTS", str(SHARED / "flame")).split(os.pathsep)[0])


requires_flame = pytest.mark.skipif(
    not (shared_flame_dir() / "flame_test_model.pkl").is_file() and not (shared_flame_dir() / "generic_model.pkl").is_file(),
    reason="no FLAME model: set FLAMEJAX_WEIGHTS or put ../shared beside the checkout",
)


@pytest.fixture(scope="session")
def flame_model():
    """The test model with 20 identity and 10 expression components (small, fast to compile)."""
    from flamejax.flame import load_flame

    if not any((shared_flame_dir() / n).is_file() for n in ("flame_test_model.pkl", "generic_model.pkl")):
        pytest.skip("no FLAME model available")
    return load_flame(n_shape=20, n_expression=10)


def assert_directional_derivatives(value_and_grad, args, rng, rtol: float, atol: float, eps: float = 1e-6):
    """Each argument's gradient against a central finite difference along a random direction."""
    import jax.numpy as jnp

    _, grads = value_and_grad(*args)
    for i in range(len(args)):
        direction = jnp.asarray(rng.normal(size=args[i].shape))
        moved = [[a + t * direction if j == i else a for j, a in enumerate(args)] for t in (eps, -eps)]
        numeric = (value_and_grad(*moved[0])[0] - value_and_grad(*moved[1])[0]) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(grads[i], direction), numeric, rtol=rtol, atol=atol)
    return grads


def folded_look(points: np.ndarray, by: float) -> np.ndarray:
    """``points`` (MediaPipe's, pixels) with the face's left half (x below the median) pulled towards the median
    by the share ``by``: FaceMesh folding the far half of a turned face in one of its looks."""
    folded = np.array(points, copy=True)
    centre = np.median(points[:, 0])
    left = points[:, 0] < centre
    folded[left, 0] = centre + (1.0 - by) * (points[left, 0] - centre)
    return folded
