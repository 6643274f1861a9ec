"""Checks at the public entry points: wrong shapes and non-finite starts fail here with a message naming the
argument, not deep inside an einsum of the compiled fit."""

from __future__ import annotations

import chex
import jax

from flamejax.camera import Camera
from flamejax.flame import FlameModel, FlameParams


def check_model(model: FlameModel) -> None:
    if not isinstance(model, FlameModel):
        raise TypeError(f"model: expected a FlameModel (load_flame), got {type(model).__name__}")
    if model.landmarks is None:
        raise ValueError("model: it has no landmark embedding: load it with load_flame(landmarks=True)")


def _batch(batch_dims: int, batch: int | None) -> tuple:
    return (batch,) if batch_dims else ()


def check_start(start, model: FlameModel, batch_dims: int, batch: int | None = None) -> None:
    """A :class:`FitStart` sized for ``model`` with ``batch_dims`` leading axes (``batch`` entries), finite."""
    if start is None:
        return
    lead = _batch(batch_dims, batch)
    for field, shape in (("shape", (model.num_shape,)), ("expression", (model.num_expression,)), ("jaw_pose", (3,)),
                         ("shape_given", ()), ("expression_given", ())):
        chex.assert_shape(getattr(start, field), lead + shape,
                          custom_message=f"start.{field} must have shape {lead + shape} for this model and batch")
    if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(start)):  # values only when concrete
        chex.assert_tree_all_finite(start, custom_message="start: non-finite coefficients")


def check_params(params: FlameParams, model: FlameModel, batch_dims: int, batch: int | None = None,
                 name: str = "params") -> None:
    lead = _batch(batch_dims, batch)
    sizes = {"shape": model.num_shape, "expression": model.num_expression}
    for field in ("shape", "expression", "head_pose", "neck_pose", "jaw_pose", "left_eye_pose", "right_eye_pose",
                  "translation"):
        shape = lead + (sizes.get(field, 3),)
        chex.assert_shape(getattr(params, field), shape,
                          custom_message=f"{name}.{field} must have shape {shape} for this model and batch")


def check_camera(camera: Camera, batch_dims: int, batch: int | None = None, name: str = "camera") -> None:
    lead = _batch(batch_dims, batch)
    for field, shape in (("rotation", (3,)), ("translation", (3,)), ("fov_deg", ())):
        chex.assert_shape(getattr(camera, field), lead + shape, custom_message=f"{name}.{field} must have shape "
                                                                               f"{lead + shape}")
