"""Run a third-party function under JAX's standard dtype promotion.

tiltbench's own code casts explicitly, and the test suite checks it under strict dtype promotion
(`jax_numpy_dtype_promotion="strict"`, where mixing dtypes without a cast raises). A few library
internals promote implicitly (blackjax's window adaptation and SMC kernels, numpyro's NUTS kernel,
optax's Adam bias correction `1 - b1**count` with an int32 `count`). Calls into them are wrapped with
`standard_promotion`, which changes nothing under the default (standard) mode and keeps the strict
check on everything else. Promotion is decided while tracing, so wrapping the call suffices inside
`jit`, `vmap` and `lax.scan`. `float_dtype` is the one place that asks for a promoted dtype on
purpose (the float type of a time or a weight array).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp

__all__ = ["float_dtype", "standard_promotion"]

F = TypeVar("F", bound=Callable)


def standard_promotion(fn: F) -> F:
    """`fn` traced and run under `jax.numpy_dtype_promotion("standard")`."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def float_dtype(x) -> jnp.dtype:
    """The dtype `x` takes when combined with float32 under standard promotion: float32 for Python
    scalars, integers and float32 arrays, float64 for float64 arrays (with x64 enabled). It is what
    `jnp.result_type(x, jnp.float32)` gives in the default mode, also under strict promotion."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(x, jnp.float32)
