"""Building blocks shared by the loss modules: the control network by name, the optimizer (with an
optional learning-rate decay), the batch estimate of log Z, the score used as a network feature, and norm
clipping of gradient data.

Every learned method builds its control and optimizer here, so a change of network or optimizer
applies to the whole family at once (one code path, one set of defaults, the same in every record).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from samplers.networks import ControlNet, egnn_control, mlp_control
from samplers.problem import Problem

__all__ = [
    "NETWORKS",
    "batch_log_Z",
    "build_control_network",
    "check_learning_rate_decay",
    "check_network",
    "clip_norm",
    "grad_log_target_fn",
    "make_optimizer",
]

NETWORKS: dict[str, str] = {
    "auto": "egnn for particle systems (problem.particles set), else mlp",
    "mlp": "samplers.networks.mlp_control (optionally with the grad-log-target feature)",
    "egnn": "samplers.networks.egnn_control (particle systems; width hidden[0], len(hidden) layers)",
}


def check_network(network: str, who: str) -> None:
    """Raise a ValueError naming the valid choices when `network` is not in `NETWORKS`."""
    if network not in NETWORKS:
        raise ValueError(f"{who}: unknown network {network!r}; valid choices: {sorted(NETWORKS)}")


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
) -> ControlNet:
    """The control network of a method, chosen by name (`NETWORKS`).

    Args:
        problem: the problem (its `dim` and `particles`).
        network: `"auto"` (egnn for particle systems, else mlp), `"mlp"` or `"egnn"`.
        hidden: MLP hidden widths; for egnn the width is `hidden[0]` and the depth `len(hidden)`.
        time_embedding_dim: number of sinusoidal time features.
        grad_log_target: one-point `∇log γ̃` for the MLP's grad-log-target feature, or None.
        grad_target_clip: element-wise clip of that feature.

    Returns:
        A `ControlNet` whose output is zero at initialisation (training starts from the base).
    """
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
    return adam if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def check_learning_rate_decay(decay_steps: int | None, final_fraction: float, who: str) -> None:
    """Raise a ValueError unless `decay_steps` is a positive integer or None and `final_fraction` lies
    in [0, 1]."""
    if decay_steps is not None and (
        isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1
    ):
        raise ValueError(
            f"{who}: learning_rate_decay_steps must be a positive integer or None, got {decay_steps!r}"
        )
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"{who}: learning_rate_final_fraction must lie in [0, 1], got {final_fraction!r}")


def batch_log_Z(log_w: jax.Array) -> jax.Array:
    """`LSE_i(log w_i) - log n` (the importance-sampling estimate of `log Z` of one batch)."""
    return jax.nn.logsumexp(log_w) - jnp.log(log_w.shape[0])


def clip_norm(g: jax.Array, max_norm: float | None, particles) -> jax.Array:
    """Clip the norm of `g (dim,)` to `max_norm`, per particle for particle systems; None is a no-op."""
    if max_norm is None:
        return g
    blocks = g.reshape(particles.n_particles, particles.spatial_dim) if particles is not None else g[None]
    norms = jnp.linalg.norm(blocks, axis=-1, keepdims=True)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, jnp.finfo(g.dtype).tiny))
    return (blocks * scale).reshape(g.shape)
