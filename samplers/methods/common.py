"""Building blocks shared by the loss modules: the control network by name, the optimizer (with an
optional learning-rate decay), the batch estimate of log Z, the score used as a network feature, and norm
clipping of gradient data.

Every learned method builds its control and optimizer here, so a change of network or optimizer
applies to the whole family at once (one code path, one set of defaults, the same in every record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from samplers.fields import POSITIVE, POSITIVE_OR_NONE, WIDTHS, Checked, field, integer, one_of, within
from samplers.learned import Training, build_learned
from samplers.method import Method
from samplers.networks import ControlNet, egnn_control, mlp_control
from samplers.problem import Problem
from samplers.promotion import standard_promotion

__all__ = [
    "EMA_DECAY",
    "NETWORKS",
    "ControlTrainingConfig",
    "NetworkConfig",
    "OptimConfig",
    "batch_log_Z",
    "build_configured",
    "build_control_network",
    "config_network",
    "config_optimizer",
    "clip_norm",
    "clip_output",
    "grad_log_target_fn",
    "make_optimizer",
    "path_weight_loss",
]

NETWORKS: dict[str, str] = {
    "auto": "egnn for particle systems (problem.particles set), else mlp",
    "mlp": "samplers.networks.mlp_control (optionally with the grad-log-target feature)",
    "egnn": "samplers.networks.egnn_control (particle systems; width hidden[0], len(hidden) layers)",
}


EMA_DECAY = within(0, 1, closed="left", optional=True)
"""The rule of `OptimConfig.ema_decay`: a decay in `[0, 1)` of the sampling parameters' moving
average (`samplers.learned.build_learned`), or None (sample with the trained parameters)."""


@dataclasses.dataclass(frozen=True)
class OptimConfig(Checked):
    """The optimiser of a learned method (its `optim` sub-config): Adam, an optional global-norm clip of
    the parameter gradient applied first, and an optional cosine learning-rate decay (`make_optimizer`).

    Attributes:
        learning_rate: Adam learning rate `η` (the initial one when decayed).
        decay_steps: if set, the learning rate follows a cosine decay from `η` to `final_fraction · η`
            over this many steps, then stays there (reduces the final-iterate noise of small budgets;
            `None`: constant, the default).
        final_fraction: see `decay_steps`.
        grad_clip: global-norm clip of the parameter gradient (optax), or None.
        ema_decay: sample with an exponential moving average of the parameters at this decay
            (`samplers.learned.build_learned`); None (default): with the trained parameters.
    """

    learning_rate: float = field(1e-3, POSITIVE)
    decay_steps: int | None = field(None, integer(1, optional=True))
    final_fraction: float = field(0.1, within(0, 1))
    grad_clip: float | None = field(10.0, POSITIVE_OR_NONE)
    ema_decay: float | None = field(None, EMA_DECAY)


@dataclasses.dataclass(frozen=True)
class NetworkConfig(Checked):
    """The control network of a learned method (its `network` sub-config; `build_control_network`).

    Attributes:
        kind: `"auto"` (egnn for particle systems, else mlp), `"mlp"` or `"egnn"` (`NETWORKS`).
        hidden: hidden widths of the MLP (for `egnn`: width `hidden[0]`, `len(hidden)` layers).
        time_embedding_dim: number of sinusoidal time features of the network.
        output_clip: element-wise clip of the network's output `u_θ(x, t)` to `[-c, c]` (None: off):
            gfn-diffusion's `--clipping` (`gfn_clip`, 1e4 in its runs; GFNOrg/gfn-diffusion,
            `energy_sampling/models/gfn.py`). An EGNN's output grows faster than linearly in the
            particle distances, so a trajectory that strays far can feed itself to overflow.
    """

    kind: str = field("auto", one_of(NETWORKS))
    hidden: tuple[int, ...] = field((64, 64), WIDTHS)
    time_embedding_dim: int = field(32, integer(2))
    output_clip: float | None = field(None, POSITIVE_OR_NONE)


# Flat names of the fields that moved into a sub-config under another name (for the error message).
_MOVED = {
    "learning_rate_decay_steps": "optim.decay_steps",
    "learning_rate_final_fraction": "optim.final_fraction",
}


@dataclasses.dataclass(frozen=True)
class ControlTrainingConfig(Checked):
    """The fields every learned method's config starts with: the optimiser and the control network as
    sub-configs, and the batch size. Every learned config extends it (these fields come first).

    Attributes:
        optim: `OptimConfig` (learning rate, its decay, gradient clip, parameter EMA for sampling).
        network: `NetworkConfig` (kind, hidden widths, time features).
        batch_size: examples per training step (trajectories, or regression pairs).

    Overrides name sub-config fields with dots (`optim.learning_rate`) or nested objects
    (`{"optim": {"learning_rate": ...}}`); see `samplers.fields.configure`.
    """

    moved = _MOVED

    optim: OptimConfig = field(OptimConfig())
    network: NetworkConfig = field(NetworkConfig())
    batch_size: int = field(256, integer(2))


def grad_log_target_fn(problem: Problem) -> Callable[[jax.Array], jax.Array]:
    """`∇log γ̃` of ONE point: the target score for sampling problems, `∇r` without a terminal law."""
    if problem.has_log_target:
        return jax.grad(problem.log_target)
    return problem.grad_tilt


def build_control_network(
    problem: Problem,
    *,
    network: str = "auto",
    hidden: tuple[int, ...] = (64, 64),
    time_embedding_dim: int = 32,
    grad_log_target: Callable[[jax.Array], jax.Array] | None = None,
    grad_target_clip: float = 100.0,
    output_clip: float | None = None,
) -> ControlNet:
    """The control network of a method, chosen by name (`NETWORKS`).

    Args:
        problem: the problem (its `dim` and `particles`).
        network: `"auto"` (egnn for particle systems, else mlp), `"mlp"` or `"egnn"`.
        hidden: MLP hidden widths; for egnn the width is `hidden[0]` and the depth `len(hidden)`.
        time_embedding_dim: number of sinusoidal time features.
        grad_log_target: one-point `∇log γ̃` for the MLP's grad-log-target feature, or None.
        grad_target_clip: element-wise clip of that feature.
        output_clip: element-wise clip of the output to `[-c, c]` (`NetworkConfig.output_clip`), or None.

    Returns:
        A `ControlNet` whose output is zero at initialisation (training starts from the base).
    """
    net = _control_network(problem, network, hidden, time_embedding_dim, grad_log_target, grad_target_clip)
    return net if output_clip is None else clip_output(net, output_clip)


def clip_output(net: ControlNet, c: float) -> ControlNet:
    """`net` with its output clipped element-wise to `[-c, c]` (`apply` and `apply_with_grad`); where
    `|u| < c` the network is unchanged, values and gradients."""

    def apply(params, x, t):
        return jnp.clip(net.apply(params, x, t), -c, c)

    def apply_with_grad(params, x, t, g):
        return jnp.clip(net.apply_with_grad(params, x, t, g), -c, c)

    return net._replace(apply=apply, apply_with_grad=None if net.apply_with_grad is None else apply_with_grad)


def _control_network(problem, network, hidden, time_embedding_dim, grad_log_target, grad_target_clip):
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; valid choices: {sorted(NETWORKS)}")
    if network == "auto":
        network = "egnn" if problem.particles is not None else "mlp"
    if network == "egnn":
        if problem.particles is None:
            raise ValueError("network='egnn' needs a particle system (problem.particles); use 'mlp'")
        return egnn_control(
            problem.particles, hidden=hidden[0], num_layers=len(hidden), time_embedding_dim=time_embedding_dim
        )
    return mlp_control(
        problem.dim,
        hidden=hidden,
        time_embedding_dim=time_embedding_dim,
        grad_log_target=grad_log_target,
        grad_clip=grad_target_clip,
    )


def config_network(
    problem: Problem, config, *, grad_log_target: Callable[[jax.Array], jax.Array] | None = None
) -> ControlNet:
    """`build_control_network` with a method config's `network` sub-config (kind, widths, time features,
    output clip) and, where the config has it, its `grad_target_clip` (else 100)."""
    net = config.network
    return build_control_network(
        problem,
        network=net.kind,
        hidden=net.hidden,
        time_embedding_dim=net.time_embedding_dim,
        grad_log_target=grad_log_target,
        grad_target_clip=getattr(config, "grad_target_clip", 100.0),
        output_clip=net.output_clip,
    )


def build_configured(
    training: Training,
    config,
    sample: Callable,
    backward: Callable | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> Method:
    """`samplers.learned.build_learned` with a method config's `optim` sub-config: its optimiser
    (`config_optimizer`, unless `optimizer` is given) and its `ema_decay`."""
    optimizer = config_optimizer(config) if optimizer is None else optimizer
    return build_learned(training, optimizer, sample, backward, ema_decay=config.optim.ema_decay)


def config_optimizer(config) -> optax.GradientTransformation:
    """`make_optimizer` with a method config's `optim` sub-config."""
    optim = config.optim
    return make_optimizer(optim.learning_rate, optim.grad_clip, optim.decay_steps, optim.final_fraction)


def make_optimizer(
    learning_rate: float,
    grad_clip: float | None,
    decay_steps: int | None = None,
    final_fraction: float = 0.1,
) -> optax.GradientTransformation:
    """Adam with an optional global-norm gradient clip (applied first) and learning-rate decay.

    With `decay_steps = S` the learning rate of step `s` is the cosine decay
    `η_s = η·(f + (1 - f)·½(1 + cos(π·min(s, S)/S)))` from `η = learning_rate` to `f·η`
    (`f = final_fraction`), constant after `S` steps (`optax.cosine_decay_schedule`); it shrinks the
    final-iterate SGD noise of small budgets. `None` keeps `η` constant.
    """
    if decay_steps is not None:
        learning_rate = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_fraction)
    adam = optax.adam(learning_rate)
    optimizer = adam if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adam)
    # optax's bias correction and schedules mix its int32 step count with floats
    return optax.GradientTransformation(
        standard_promotion(optimizer.init), standard_promotion(optimizer.update)
    )


def batch_log_Z(log_w: jax.Array) -> jax.Array:
    """`LSE_i(log w_i) - log n` (the importance-sampling estimate of `log Z` of one batch)."""
    return jax.nn.logsumexp(log_w) - jnp.log(log_w.shape[0])


def clip_norm(g: jax.Array, max_norm: float | None, particles) -> jax.Array:
    """Clip the norm of `g (dim,)` to `max_norm`, per particle for particle systems; None is a no-op.

    `g ← g · min(1, c / ‖g‖)` per block, robust at the two places the plain formula breaks:
    - a block with infinite entries is clipped to its limit direction: the signs of its infinite
      entries (finite entries 0), scaled to norm `c` (the plain formula gives `inf · 0 = NaN`);
    - a block of finite entries whose float32 norm overflows is clipped with the norm computed as
      `m ‖g / m‖`, `m = max |g_i|` (the plain formula gives `c / inf = 0`, zeroing the block).
    Everywhere else the result is the plain formula's, bit for bit. NaN entries stay NaN.
    """
    if max_norm is None:
        return g
    blocks = g.reshape(particles.n_particles, particles.spatial_dim) if particles is not None else g[None]
    infinite = jnp.isinf(blocks)
    has_inf = jnp.any(infinite, axis=-1, keepdims=True)
    blocks = jnp.where(has_inf, jnp.where(infinite, jnp.sign(blocks), jnp.zeros_like(blocks)), blocks)
    norms = jnp.linalg.norm(blocks, axis=-1, keepdims=True)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, jnp.finfo(g.dtype).tiny))
    overflow = jnp.isinf(norms)
    # divide by √m twice: 1/m itself is subnormal for m near the float32 maximum (flushed to 0 on CPU)
    peak = jnp.max(jnp.abs(blocks), axis=-1, keepdims=True)
    root = jnp.sqrt(jnp.where(overflow, peak, jnp.ones_like(norms)))
    rescaled = jnp.linalg.norm(blocks / root / root, axis=-1, keepdims=True)  # in [1, √d] where it overflowed
    scale = jnp.where(overflow, jnp.minimum(1.0, max_norm / root / root / rescaled), scale)
    # the sign vector has norm ≥ 1: scale it to c exactly
    scale = jnp.where(has_inf, max_norm / jnp.maximum(norms, 1.0), scale)
    return (blocks * scale).reshape(g.shape)


def path_weight_loss(simulate: Callable[..., Any], reduce: Callable[[jax.Array], jax.Array], doc: str):
    """A loss `reduce(log w)` on a batch of paths: `loss(key, problem, control, params, batch_size,
    config, *, grad_evals_per_control) -> (loss, path)`, with the batch drawn by
    `simulate(key, problem, control, params, batch_size, config, grad_evals_per_control) -> path`
    (a path with `log_w` and `cost`); `doc` is the loss's docstring (its maths)."""

    def loss(key, problem, control, params, batch_size, config=None, *, grad_evals_per_control=0.0):
        path = simulate(key, problem, control, params, batch_size, config, grad_evals_per_control)
        return reduce(path.log_w), path

    loss.__doc__ = doc
    return loss
