"""Type aliases shared by the samplers.

- `PyTree`: a parameter pytree (Flax variables, optax states, NamedTuples of arrays).
- `Control`: a control network applied as `u(params, x, t) -> (..., dim)`, with `x` of shape
  `(..., dim)` and `t` broadcastable against `x[..., 0]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["Control", "PyTree"]

PyTree = Any
Control = Callable[[PyTree, jax.Array, jax.Array], jax.Array]
