"""Shared pieces of the networks: the `ControlNet` / `ScalarNet` contracts, activations, sinusoidal
time features, input checks and the time encoder (`samplers.networks` lists the builders)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from samplers.promotion import float_dtype
from samplers.types import PyTree

ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
}

# Default frequency range of the sinusoidal time features: PIS / DDS (`PISGRADNet`) use
# `linspace(0.1, 100, ·)`; we keep the same range with geometric spacing, so that low
# frequencies (smooth dependence on t ∈ [0, 1]) are as well represented as high ones.
DEFAULT_FREQUENCY_RANGE = (0.1, 100.0)


class ControlNet(NamedTuple):
    """A control network `u_θ(x, t)`: a pair of pure functions plus metadata.

    Attributes:
        init: `(key) -> params`, a plain PyTree of arrays (jitted: one compilation, not one per op).
        apply: `(params, x, t) -> u`, with `x` of shape `(dim,)`, `t` of shape `()` and `u` of
            shape `(out_dim,)`. One example, one time; `jax.vmap` for batches.
        dim: input dimension.
        out_dim: output dimension.
        grad_evals_per_apply: evaluations of `∇log γ` spent by one `apply` (1 with the
            grad-log-target feature, else 0), for the methods' `Cost` accounting.
        apply_with_grad: with the grad-log-target feature only (else None): `(params, x, t, g) -> u`,
            the same network fed a `∇log γ(x)` the caller has already computed (clipped and
            stop-gradient inside, as in `apply`), so a method whose drift needs `∇log γ(x)` anyway
            does not evaluate it twice. Costs no `∇log γ` evaluation.
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
    dim: int
    out_dim: int
    grad_evals_per_apply: int = 0
    apply_with_grad: Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array] | None = None


class ScalarNet(NamedTuple):
    """A scalar network: `F(t)` (`input="t"`) or `φ(x, t)` (`input="xt"`).

    Attributes:
        init: `(key) -> params`.
        apply: `(params, t) -> ()` when `input == "t"`; `(params, x, t) -> ()` when
            `input == "xt"`, with `x` of shape `(dim,)` and `t` of shape `()`.
        input: `"t"` or `"xt"`.
        dim: dimension of `x` (`None` for `input="t"`).
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[..., jax.Array]
    input: str
    dim: int | None = None


__all__ = [
    "ACTIVATIONS",
    "DEFAULT_FREQUENCY_RANGE",
    "ControlNet",
    "ScalarNet",
    "get_activation",
    "sinusoidal_time_features",
]


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function registered as `name`; unknown names raise with the valid ones."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid choices: {sorted(ACTIVATIONS)}") from None


def sinusoidal_time_features(
    t: jax.Array, num_features: int, frequency_range: tuple[float, float] = DEFAULT_FREQUENCY_RANGE
) -> jax.Array:
    """Fourier features of a scalar time.

    `φ(t) = [sin(ω_1 t), …, sin(ω_K t), cos(ω_1 t), …, cos(ω_K t)]` with `K = num_features / 2`
    angular frequencies `ω_k` spaced geometrically from `frequency_range[0]` to
    `frequency_range[1]` (radians per unit of t).

    Args:
        t: scalar time, shape `()`.
        num_features: even number of features `2K`.
        frequency_range: `(ω_min, ω_max)`, both positive.

    Returns:
        Features of shape `(num_features,)`, in the dtype of `t` (float32 by default).
    """
    t = jnp.asarray(t, dtype=float_dtype(t))
    half = num_features // 2
    low, high = frequency_range
    frequencies = jnp.geomspace(low, high, half, dtype=t.dtype) if half > 1 else jnp.full((1,), low, t.dtype)
    angles = frequencies * t
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_hidden(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, int):
        hidden = (hidden,)
    if not isinstance(hidden, Sequence) or len(hidden) == 0:
        raise ValueError(f"hidden must be a non-empty sequence of layer widths, got {hidden!r}")
    return tuple(_check_positive_int(width, "every hidden width") for width in hidden)


def _check_time_features(num_features: Any, frequency_range: Any) -> tuple[int, tuple[float, float]]:
    num_features = _check_positive_int(num_features, "time_embedding_dim")
    if num_features % 2:
        raise ValueError(f"time_embedding_dim must be even (sin and cos pairs), got {num_features}")
    low, high = (float(v) for v in frequency_range)
    if not 0.0 < low <= high:
        raise ValueError(f"frequency_range must satisfy 0 < low <= high, got {frequency_range!r}")
    return num_features, (low, high)


def _as_float(value: Any) -> jax.Array:
    value = jnp.asarray(value)
    return value if jnp.issubdtype(value.dtype, jnp.inexact) else value.astype(jnp.float32)


def _check_point(x: jax.Array, dim: int, who: str) -> jax.Array:
    x = _as_float(x)
    if x.shape != (dim,):
        raise ValueError(f"{who}: x must be ONE point of shape ({dim},), got {x.shape}; batch with jax.vmap")
    return x


def _check_time(t: jax.Array, who: str) -> jax.Array:
    t = _as_float(t)
    if t.shape != ():
        raise ValueError(f"{who}: t must be a scalar of shape (), got {t.shape}; batch with jax.vmap")
    return t


def _point_time_functions(module: nn.Module, dim: int, owner: str):
    """`init(key)` (jitted, on a zero point and time) and `apply(params, x, t)` (with `x`, `t` shape
    checks naming `owner`) of a module acting on ONE point `(dim,)` and one time."""

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        return module.init(key, jnp.zeros((dim,), jnp.float32), jnp.zeros((), jnp.float32))

    def apply(params: PyTree, x: jax.Array, t: jax.Array) -> jax.Array:
        return module.apply(params, _check_point(x, dim, owner), _check_time(t, owner))

    return init, apply


def _output_init(zero: bool):
    return nn.initializers.zeros if zero else nn.initializers.lecun_normal()


class _TimeEncoder(nn.Module):
    """`t ↦ Dense(act(Dense(φ(t))))`: sinusoidal features followed by a two-layer MLP."""

    width: int
    num_features: int
    frequency_range: tuple[float, float]
    activation: str

    @nn.compact
    def __call__(self, t):
        act = get_activation(self.activation)
        features = sinusoidal_time_features(t, self.num_features, self.frequency_range)
        hidden = act(nn.Dense(self.width, name="dense_1")(features))
        return nn.Dense(self.width, name="dense_2")(hidden)
