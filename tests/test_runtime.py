"""How flamejax sets up JAX: the XLA flag whatever the import order, the compilation cache, compile timing, and
keeping native libraries' chatter off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flamejax._runtime import CompileClock, native_stderr_to
from tests.conftest import requires_flame

ROOT = Path(__file__).resolve().parents[1]
FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "FLAMEJAX_KEEP_XLA_FLAGS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean | env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("first", ["import jax", "import numpy"])
def test_the_xla_flag_is_set_whatever_was_imported_first(first):
    out = _python(f"{first}\nimport flamejax, os\nprint(os.environ.get('XLA_FLAGS', ''))")
    assert FLAG in out


def test_the_flag_is_left_alone_once_jax_has_started():
    out = _python("import jax; jax.numpy.zeros(1).block_until_ready()\nimport flamejax, os\n"
                  "print(repr(os.environ.get('XLA_FLAGS', '')))")
    assert FLAG not in out


def test_native_writes_to_stderr_are_routed_away_but_python_messages_are_not(capfd, tmp_path):
    log = tmp_path / "native.log"
    with native_stderr_to(log):
        os.write(2, b"I0000 00:00 native chatter\n")
        print("flamejax: a message for the user", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a message for the user" in err and "native chatter" not in err
    assert "native chatter" in log.read_text()
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err  # the terminal is back


def test_compile_clock_counts_compilation_not_execution():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 0.123456)
    x = jnp.ones((64, 64))
    with CompileClock() as first:
        f(x).block_until_ready()
    with CompileClock() as second:
        f(x).block_until_ready()
    assert first.seconds > 0 and second.seconds == 0


_CACHED_FIT = """
import sys
import numpy as np
import flamejax
from flamejax.fit import fit_landmarks_batch, quick_config, sample_problem, stack_targets
from flamejax.flame import load_flame

flamejax.enable_compilation_cache(sys.argv[1], min_compile_seconds=0.0)
model = load_flame(n_shape=20, n_expression=10)
rng = np.random.default_rng(3)
targets = stack_targets([sample_problem(model, rng).targets for _ in range(2)])
with flamejax.CompileClock() as clock:
    result = fit_landmarks_batch(model, targets, quick_config(40, 20))
np.savez(sys.argv[2], lmk68=np.asarray(result.landmarks.lmk68), shape=np.asarray(result.params.shape))
print(clock.seconds)
"""


@requires_flame
def test_a_cached_compilation_fits_as_a_fresh_one(tmp_path):
    cache = tmp_path / "cache"
    fresh_seconds = float(_python(_CACHED_FIT.replace("sys.argv[1]", repr(str(cache)))
                                  .replace("sys.argv[2]", repr(str(tmp_path / "fresh.npz")))))
    assert any(cache.iterdir())
    cached_seconds = float(_python(_CACHED_FIT.replace("sys.argv[1]", repr(str(cache)))
                                   .replace("sys.argv[2]", repr(str(tmp_path / "cached.npz")))))
    assert cached_seconds < fresh_seconds
    with np.load(tmp_path / "fresh.npz") as fresh, np.load(tmp_path / "cached.npz") as cached:
        np.testing.assert_allclose(cached["lmk68"], fresh["lmk68"], atol=1e-4)
        np.testing.assert_allclose(cached["shape"], fresh["shape"], atol=1e-3)
