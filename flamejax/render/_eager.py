"""Rendering functions that compile once when called outside ``jax.jit``.

The rasterizers' ``lax.while_loop`` and ``lax.map`` take closures that are new on every call. Run op by op, each call
therefore compiles its loops again (about 0.7 s) and keeps the executable, and a loop of a few hundred eager overlays
runs out of memory. Eager calls go through one ``jax.jit`` per function instead. Calls with traced arguments
(inside a caller's ``jit``, ``vmap`` or ``grad``) run the function itself, so the caller's program is exactly what it
was without the wrapper.
"""

from __future__ import annotations

import functools

import jax


def _traced(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def compiled_when_eager(*static_argnames: str):
    """Decorator: eager calls run ``jax.jit(fn, static_argnames=...)``, traced calls run ``fn``."""

    def wrap(fn):
        compiled = jax.jit(fn, static_argnames=static_argnames)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return (fn if _traced((args, kwargs)) else compiled)(*args, **kwargs)

        return call

    return wrap
