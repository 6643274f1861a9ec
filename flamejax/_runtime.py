"""How flamejax sets up JAX: the CPU compiler flag, the persistent compilation cache, compile-time accounting.

The flag: XLA's experimental YNNPACK fusions make this package's small-matrix scans and the rasterizer's backward
pass 1.4-2.3x slower on x86 CPUs (benchmarks/RESULTS.md) and change no result. XLA reads ``XLA_FLAGS`` when its
first backend starts, not when jax is imported, so the flag is set on ``import flamejax`` whatever was imported
before, as long as no computation ran yet. XLA aborts on flags it does not know, so it is only set for the jaxlib
versions it was checked on; it never overrides a choice already in ``XLA_FLAGS``; ``FLAMEJAX_KEEP_XLA_FLAGS=1``
disables it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path

log = logging.getLogger("flamejax")

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_FLAG_JAXLIB = ((0, 9), (0, 11))
"""Inclusive (major, minor) range of jaxlib versions whose XLA knows the flag (checked on 0.10.2)."""


def _jaxlib_version() -> tuple[int, int] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (PackageNotFoundError, ValueError):
        return None


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a jax without the query: assume the worst
        return True


def apply_xla_flags() -> bool:
    """Set the CPU flag if it can still take effect; returns whether ``XLA_FLAGS`` now holds it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags:
        return True
    if os.environ.get("FLAMEJAX_KEEP_XLA_FLAGS") == "1" or _backends_started():
        return False
    jaxlib = _jaxlib_version()
    if jaxlib is None or not _FLAG_JAXLIB[0] <= jaxlib <= _FLAG_JAXLIB[1]:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=".strip()
    return True


def default_cache_dir() -> Path:
    """``$FLAMEJAX_CACHE`` or ``~/.cache/flamejax``: converted models and compiled programs."""
    return Path(os.environ.get("FLAMEJAX_CACHE") or Path.home() / ".cache" / "flamejax")


def enable_compilation_cache(path: str | Path | None = None, min_compile_seconds: float = 1.0) -> Path | None:
    """Keep compiled fits on disk so that the next process skips the compilation (~10-40 s on a CPU).

    ``path`` defaults to ``default_cache_dir() / "jax"``. Fitted numbers from a cached program equal a fresh
    compilation's within float32 rounding (tests/test_runtime.py). Returns the folder, or ``None`` when this jax
    does not support the cache (a warning-free no-op: it only costs time).
    """
    import jax

    folder = Path(path) if path is not None else default_cache_dir() / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    except (OSError, AttributeError, ValueError) as err:
        log.info("no persistent compilation cache: %s", err)
        return None
    return folder


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling while the clock was running (all threads).

    >>> with CompileClock() as clock:
    ...     fit(...)
    >>> clock.seconds
    """

    _lock = threading.Lock()
    _running: list["CompileClock"] = []
    _installed = False

    def __init__(self) -> None:
        self.seconds = 0.0

    @classmethod
    def _listener(cls, name: str, duration: float, **_) -> None:
        if name.startswith("/jax/core/compile/"):
            with cls._lock:
                for clock in cls._running:
                    clock.seconds += duration

    def __enter__(self) -> "CompileClock":
        from jax import monitoring

        with self._lock:
            if not CompileClock._installed:
                monitoring.register_event_duration_secs_listener(CompileClock._listener)
                CompileClock._installed = True
            self._running.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._running.remove(self)


@contextlib.contextmanager
def native_stderr_to(path: Path | None):
    """Send what native libraries (MediaPipe, TFLite, absl, XLA) write to file descriptor 2 into ``path``
    (``None``: discard), while Python's ``sys.stderr`` (our messages, progress bars, logging) still reaches the
    terminal. Native code ignores Python's streams and the environment variables meant to silence it."""
    sys.stderr.flush()
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # already redirected (a test's capture, an IDE console)
        python_on_fd2 = False
    saved = os.dup(2)
    target = os.open(os.devnull if path is None else path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    previous = sys.stderr
    try:
        os.dup2(target, 2)
        if python_on_fd2:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=previous.encoding or "utf-8",
                                   errors="backslashreplace")
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
