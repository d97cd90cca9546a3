"""Small scalar networks `F(t)` and `φ(x, t)` (NETS free energy / potential, trajectory-balance flows)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from samplers.networks.base import (
    ScalarNet,
    _check_hidden,
    _check_positive_int,
    _check_time,
    _check_time_features,
    _output_init,
    _point_time_functions,
    get_activation,
    sinusoidal_time_features,
)
from samplers.types import PyTree

__all__ = ["scalar_net"]


# ---------------------------------------------------------------------------------------------
# scalar networks
# ---------------------------------------------------------------------------------------------


class _ScalarMLP(nn.Module):
    hidden: tuple[int, ...]
    time_embedding_dim: int
    frequency_range: tuple[float, float]
    activation: str
    zero_init_output: bool

    @nn.compact
    def __call__(self, x, t):
        act = get_activation(self.activation)
        features = [t[None], sinusoidal_time_features(t, self.time_embedding_dim, self.frequency_range)]
        if x is not None:
            features.insert(0, x)
        h = jnp.concatenate(features)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        out = nn.Dense(
            1, kernel_init=_output_init(self.zero_init_output), bias_init=nn.initializers.zeros, name="output"
        )(h)
        return out[0]


SCALAR_INPUTS = ("t", "xt")


def scalar_net(
    *,
    hidden: Sequence[int] = (64, 64),
    input: str = "t",
    dim: int | None = None,
    time_embedding_dim: int = 16,
    frequency_range: tuple[float, float] = (0.1, 20.0),
    activation: str = "gelu",
    zero_init_output: bool = True,
) -> ScalarNet:
    """A small scalar network: a learned free energy `F(t)` or a potential `φ(x, t)`.

    `F(t) = MLP([t, φ(t)])` (`input="t"`) or `φ(x, t) = MLP([x, t, φ(t)])` (`input="xt"`), with
    `φ(t)` the sinusoidal time features; hidden layers use `activation`, the output layer is
    linear with one unit. Smooth in `t` and `x`, so `∂_t F`, `∂_t φ` and `∇_x φ` (NETS' PINN and
    action-matching losses, `methods.md` §6) are well defined by `jax.grad`.

    Args:
        hidden: widths of the hidden layers.
        input: `"t"` for `apply(params, t) -> ()`, `"xt"` for `apply(params, x, t) -> ()`.
        dim: dimension of `x`; required for `input="xt"`, must be `None` for `input="t"`.
        time_embedding_dim: number of sinusoidal time features (even). The default frequency
            range stops at 20 rad per unit t (lower than the controls' 100) because `∂_t F` is
            part of the NETS loss and high frequencies make it large at initialisation.
        frequency_range: `(ω_min, ω_max)` of the time features.
        activation: one of `ACTIVATIONS`.
        zero_init_output: zero the output layer (the network is identically 0 at init).

    Returns:
        A `ScalarNet`.
    """
    if input not in SCALAR_INPUTS:
        raise ValueError(f"unknown scalar_net input {input!r}; valid choices: {list(SCALAR_INPUTS)}")
    if input == "xt":
        dim = _check_positive_int(dim, "dim (required for input='xt')")
    elif dim is not None:
        raise ValueError(f"scalar_net(input='t') takes no dim, got dim={dim!r}")
    hidden = _check_hidden(hidden)
    time_embedding_dim, frequency_range = _check_time_features(time_embedding_dim, frequency_range)
    get_activation(activation)
    module = _ScalarMLP(
        hidden=hidden,
        time_embedding_dim=time_embedding_dim,
        frequency_range=frequency_range,
        activation=activation,
        zero_init_output=bool(zero_init_output),
    )

    if input == "t":

        @jax.jit
        def init(key: jax.Array) -> PyTree:
            return module.init(key, None, jnp.zeros((), jnp.float32))

        def apply(params: PyTree, t: jax.Array) -> jax.Array:
            return module.apply(params, None, _check_time(t, "scalar_net"))

    else:
        init, apply = _point_time_functions(module, dim, "scalar_net")

    return ScalarNet(init=init, apply=apply, input=input, dim=dim)
