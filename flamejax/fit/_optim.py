"""The optimisation loop shared by every stage: optax updates inside ``lax.scan``, guarded against NaN/inf."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flamejax._typing import Array, Bool, Float, Int


class StageOutcome(NamedTuple):
    variables: object
    """The iterate with the lowest loss seen (never a non-finite one)."""
    final_loss: Float[Array, ""]
    """Loss of ``variables``."""
    losses: Float[Array, "steps"]
    """Loss before each step."""
    finite: Bool[Array, ""]
    """False when a step produced a non-finite loss or variable; later steps were skipped."""
    failed_step: Int[Array, ""]
    """The step that diverged, -1 if none."""


def all_finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def run_optimiser(loss_fn: Callable[[object], Float[Array, ""]], variables, optimiser: optax.GradientTransformation,
                  steps: int, project: Callable[[object], object] | None = None) -> StageOutcome:
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
    return StageOutcome(best, best_loss, losses, ok, failed)


def grouped_adam(schedules: dict[str, optax.Schedule | None]) -> optax.GradientTransformation:
    """Adam per top-level key of a dict of variables; a ``None`` schedule freezes that group."""
    transforms = {name: optax.adam(s) if s is not None else optax.set_to_zero() for name, s in schedules.items()}
    return optax.multi_transform(transforms, lambda variables: {name: name for name in variables})
