"""Array type aliases used in signatures (jaxtyping): shapes and dtypes are part of the interface."""

from __future__ import annotations

from typing import Union

import jax
import numpy as np
from jaxtyping import Array, Bool, Float, Int, Shaped, UInt8  # noqa: F401  (re-exported)

ArrayLike = Union[jax.Array, np.ndarray]
