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


def run_stage(loss_fn: Callable[[object], Float[Array, ""]], variables, optimiser: optax.GradientTransformation,
              steps: int, project: Callable[[object], object] | None = None) -> tuple[object, StageReport]:
    """``steps`` optimiser updates of ``variables`` on ``loss_fn``; ``project`` maps iterates back to bounds.

    A step whose loss, gradient or result is not finite is rejected and freezes the variables at the last
    finite iterate, so one diverging image never leaks NaN into a batch or into its own result. The iterate with
    the lowest loss is returned, so a high learning rate's last oscillation costs nothing.
    """
    value_and_grad = jax.value_and_grad(loss_fn)

    def keep_best(best, best_loss, candidate, loss):
        better = jnp.isfinite(loss) & (loss < best_loss)
        return jax.tree.map(lambda a, b: jnp.where(better, a, b), candidate, best), jnp.where(better, loss, best_loss)

    def step(carry, index):
        current, opt_state, ok, failed, best, best_loss = carry
        loss, grads = value_and_grad(current)
        best, best_loss = keep_best(best, best_loss, current, jnp.where(ok, loss, jnp.inf))
        updates, new_state = optimiser.update(grads, opt_state, current)
        candidate = optax.apply_updates(current, updates)
        if project is not None:
            candidate = project(candidate)
        accept = ok & jnp.isfinite(loss) & all_finite(grads) & all_finite(candidate)
        choose = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        failed = jnp.where(ok & ~accept, index, failed)
        return (choose(candidate, current), choose(new_state, opt_state), accept, failed, best, best_loss), loss

    inf = jnp.asarray(jnp.inf, jnp.result_type(float))
    init = (variables, optimiser.init(variables), jnp.asarray(True), jnp.asarray(-1, jnp.int32), variables, inf)
    (last, _, ok, failed, best, best_loss), losses = jax.lax.scan(step, init, jnp.arange(steps, dtype=jnp.int32))
    best, best_loss = keep_best(best, best_loss, last, jnp.where(ok, loss_fn(last), jnp.inf))
    return best, StageReport(finite_or_marker(losses), finite_or_marker(best_loss), ok, failed)
