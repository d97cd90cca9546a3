"""The MLP control `u_θ(x, t)`, optionally with the PIS/DDS/CMCD grad-log-target feature."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from samplers.networks.base import (
    DEFAULT_FREQUENCY_RANGE,
    ControlNet,
    _check_hidden,
    _check_point,
    _check_positive_int,
    _check_time,
    _check_time_features,
    _output_init,
    _TimeEncoder,
    get_activation,
)
from samplers.types import PyTree

__all__ = ["mlp_control"]


# ---------------------------------------------------------------------------------------------
# MLP control
# ---------------------------------------------------------------------------------------------


class _MLPControl(nn.Module):
    out_dim: int
    hidden: tuple[int, ...]
    time_embedding_dim: int
    frequency_range: tuple[float, float]
    activation: str
    zero_init_output: bool
    grad_feature: bool
    grad_scale_init: float

    @nn.compact
    def __call__(self, x, t, grad=None):
        act = get_activation(self.activation)
        time_code = _TimeEncoder(
            self.hidden[0],
            self.time_embedding_dim,
            self.frequency_range,
            self.activation,
            name="time_encoder",
        )(t)
        h = jnp.concatenate([x, time_code])
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        out = nn.Dense(
            self.out_dim,
            kernel_init=_output_init(self.zero_init_output),
            bias_init=nn.initializers.zeros,
            name="output",
        )(h)
        if self.grad_feature:
            # NN₂(t): its own time encoder (as PIS's `time_coder_grad`), a per-coordinate scale.
            g = _TimeEncoder(
                self.hidden[0],
                self.time_embedding_dim,
                self.frequency_range,
                self.activation,
                name="grad_time_encoder",
            )(t)
            scale = nn.Dense(
                self.out_dim,
                kernel_init=_output_init(self.zero_init_output),
                bias_init=nn.initializers.constant(self.grad_scale_init),
                name="grad_scale",
            )(act(g))
            out = out + scale * grad
        return out


def mlp_control(
    dim: int,
    *,
    hidden: Sequence[int] = (128, 128, 128),
    time_embedding_dim: int = 32,
    frequency_range: tuple[float, float] = DEFAULT_FREQUENCY_RANGE,
    activation: str = "gelu",
    zero_init_output: bool = True,
    grad_log_target: Callable[[jax.Array], jax.Array] | None = None,
    grad_clip: float = 100.0,
    grad_scale_init: float = 0.0,
    out_dim: int | None = None,
) -> ControlNet:
    """An MLP control `u_θ(x, t) ∈ R^out_dim` with sinusoidal time features.

    Without the grad-log-target feature:

        u_θ(x, t) = NN₁([x, E(t)]),   E(t) = Dense(act(Dense(φ(t)))),

    with `φ` the sinusoidal features of `sinusoidal_time_features` and `NN₁` an MLP of widths
    `hidden` (activation after every hidden layer) followed by a linear output layer.

    With `grad_log_target = ∇log γ` (the PIS / DDS / CMCD "grad-log-target" or Langevin feature):

        u_θ(x, t) = NN₁([x, E(t)]) + NN₂(t) ⊙ sg[clip(∇log γ(x), -c, c)],

    where `NN₂(t) ∈ R^dim` is a per-coordinate scale computed from its own time encoder, `sg` is
    `jax.lax.stop_gradient` (the feature is an input, not a path for gradients: neither θ nor x
    is differentiated through `∇log γ`), and the clip is element-wise at `c = grad_clip`.
    Each `apply` then costs one evaluation of `∇log γ` (`grad_evals_per_apply = 1`).

    Args:
        dim: dimension of `x`.
        hidden: widths of the hidden layers of `NN₁` (the first width is also the width of the
            time encoders).
        time_embedding_dim: number of sinusoidal time features (even).
        frequency_range: `(ω_min, ω_max)` of the geometric frequency grid, radians per unit t.
        activation: one of `ACTIVATIONS`.
        zero_init_output: initialise the output layer (and the `NN₂` output layer) to zero, so
            that `u_θ ≡ 0` at initialisation (with `grad_scale_init = 0`): training starts from
            the uncontrolled base process. Gradients still flow to the output layer.
        grad_log_target: one-point callable `x (dim,) -> ∇log γ(x) (dim,)`; enables the feature.
        grad_clip: element-wise clip `c` of `∇log γ` in the feature; 100 follows CMCD
            (`gradU` clipping) and PIS (`lgv_clip = 1e2`), see `methods.md` §5.2 and §10.6.
        grad_scale_init: initial value of the bias of `NN₂`'s output layer, i.e. `NN₂(t)` at
            initialisation when `zero_init_output` (0 gives a zero control at init).
        out_dim: output dimension (default `dim`); must equal `dim` with the grad feature.

    Returns:
        A `ControlNet`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = mlp_control(3, hidden=(16, 16))
        >>> params = net.init(jax.random.key(0))
        >>> net.apply(params, jnp.ones(3), 0.5).shape
        (3,)
    """
    dim = _check_positive_int(dim, "dim")
    out_dim = dim if out_dim is None else _check_positive_int(out_dim, "out_dim")
    hidden = _check_hidden(hidden)
    time_embedding_dim, frequency_range = _check_time_features(time_embedding_dim, frequency_range)
    get_activation(activation)
    use_grad = grad_log_target is not None
    if use_grad:
        if not callable(grad_log_target):
            raise TypeError(f"grad_log_target must be a callable x -> ∇log γ(x), got {type(grad_log_target)}")
        if out_dim != dim:
            raise ValueError(
                f"the grad-log-target feature needs out_dim == dim, got out_dim={out_dim}, dim={dim}"
            )
        if not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {grad_clip!r}")
    module = _MLPControl(
        out_dim=out_dim,
        hidden=hidden,
        time_embedding_dim=time_embedding_dim,
        frequency_range=frequency_range,
        activation=activation,
        zero_init_output=bool(zero_init_output),
        grad_feature=use_grad,
        grad_scale_init=float(grad_scale_init),
    )
    clip = float(grad_clip)

    def clipped(grad):
        grad = jnp.asarray(grad)
        if grad.shape != (dim,):
            raise ValueError(f"mlp_control: the ∇log γ feature must have shape ({dim},), got {grad.shape}")
        return jax.lax.stop_gradient(jnp.clip(grad, -clip, clip))

    def grad_feature(x):
        return clipped(grad_log_target(x)) if use_grad else None

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        x = jnp.zeros((dim,), jnp.float32)
        grad = jnp.zeros((dim,), jnp.float32) if use_grad else None
        return module.init(key, x, jnp.zeros((), jnp.float32), grad)

    def apply(params: PyTree, x: jax.Array, t: jax.Array) -> jax.Array:
        x = _check_point(x, dim, "mlp_control")
        t = _check_time(t, "mlp_control")
        return module.apply(params, x, t, grad_feature(x))

    def apply_with_grad(params: PyTree, x: jax.Array, t: jax.Array, grad: jax.Array) -> jax.Array:
        x = _check_point(x, dim, "mlp_control")
        return module.apply(params, x, _check_time(t, "mlp_control"), clipped(grad))

    return ControlNet(
        init=init,
        apply=apply,
        dim=dim,
        out_dim=out_dim,
        grad_evals_per_apply=int(use_grad),
        apply_with_grad=apply_with_grad if use_grad else None,
    )
