"""The optimisation loop shared by every stage: optax updates inside ``lax.scan``, guarded against NaN/inf, and
Adam per labelled parameter group (``optax.partition`` over a label tree shaped like the stage's variables)."""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from flamejax._typing import Array, Bool, Float
from flamejax.fit._result import StageReport

FROZEN = "frozen"
"""Label of variables a stage holds fixed."""


def all_finite(tree) -> Bool[Array, ""]:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def finite_or_marker(values):
    """``values`` with -1 where they are not finite (a stage's ``finite`` flag says that it failed)."""
    return jnp.where(jnp.isfinite(values), values, -1.0)


def partitioned_adam(schedules: Mapping[str, optax.Schedule], labels) -> optax.GradientTransformation:
    """Adam with its own learning-rate schedule per label; leaves labelled :data:`FROZEN` do not move.

    ``labels`` has the structure of the variables (or a prefix of it) with a label string at each leaf.
    """
    transforms = {name: optax.adam(schedule) for name, schedule in schedules.items()}
    transforms[FROZEN] = optax.set_to_zero()
    return optax.partition(transforms, labels)


def run_stage(loss_fn: Callable[..., Float[Array, ""]], variables, optimiser: optax.GradientTransformation,
              steps: int, project: Callable[[object], object] | None = None, *,
              refresh: Callable[[object], object] | None = None, segments: int = 1) -> tuple[object, StageReport]:
    """``steps`` optimiser updates of ``variables`` on ``loss_fn``; ``project`` maps iterates back to bounds.

    A step whose loss, gradient or result is not finite is rejected and freezes the variables at the last
    finite iterate, so one diverging image never leaks NaN into a batch or into its own result. The iterate with
    the lowest loss is returned, so a high learning rate's last oscillation costs nothing.

    With ``refresh``, the loss is ``loss_fn(variables, context)`` with ``context = refresh(variables)`` computed at
    the start of each of ``segments`` equal parts of the stage and held fixed within it (e.g. per-point weights at
    the pose reached so far). Each part starts from the best iterate of the part before; Adam's state and the
    learning-rate schedules run on. The parts are one ``lax.scan`` over one compiled body of
    ``ceil(steps / segments)`` steps (the last part's surplus steps do nothing), so compilation does not grow with
    ``segments``. Each part ends with one more pass of that body that only scores the part's last iterate, so
    the loss is compiled once (inside the body), not a second time after the loop.
    """
    if refresh is None:
        plain_loss = loss_fn
        loss_fn, refresh, segments = (lambda v, _: plain_loss(v)), (lambda v: None), 1
    segments = max(1, min(int(segments), steps))
    length = -(-steps // segments)

    def keep_best(best, best_loss, candidate, loss):
        better = jnp.isfinite(loss) & (loss < best_loss)
        return jax.tree.map(lambda a, b: jnp.where(better, a, b), candidate, best), jnp.where(better, loss, best_loss)

    inf = jnp.asarray(jnp.inf, jnp.result_type(float))

    def part(carry, first):
        start, opt_state, ok, failed = carry
        context = refresh(start)
        value_and_grad = jax.value_and_grad(lambda v: loss_fn(v, context))

        def step(inner, index_and_scoring):
            index, scoring_only = index_and_scoring
            current, opt_state, ok, failed, best, best_loss = inner
            active = (index < steps) & ~scoring_only
            loss, grads = value_and_grad(current)
            scored = ok & (active | scoring_only)
            best, best_loss = keep_best(best, best_loss, current, jnp.where(scored, loss, jnp.inf))
            updates, new_state = optimiser.update(grads, opt_state, current)
            candidate = optax.apply_updates(current, updates)
            if project is not None:
                candidate = project(candidate)
            good = jnp.isfinite(loss) & all_finite(grads) & all_finite(candidate)
            accept = ok & active & good
            choose = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
            failed = jnp.where(ok & active & ~good, index, failed)
            ok = ok & (good | ~active)
            return (choose(candidate, current), choose(new_state, opt_state), ok, failed, best, best_loss), loss

        init = (start, opt_state, ok, failed, start, inf)
        indices = first + jnp.arange(length + 1, dtype=jnp.int32)
        (_, opt_state, ok, failed, best, best_loss), losses = jax.lax.scan(
            step, init, (indices, indices == first + length))
        return (best, opt_state, ok, failed), (losses[:length], best_loss)

    init = (variables, optimiser.init(variables), jnp.asarray(True), jnp.asarray(-1, jnp.int32))
    (best, _, ok, failed), (losses, best_losses) = jax.lax.scan(
        part, init, jnp.arange(segments, dtype=jnp.int32) * length)
    losses = losses.reshape(-1)[:steps]
    return best, StageReport(finite_or_marker(losses), finite_or_marker(best_losses[-1]), ok, failed)
