"""The tilted path `p_t e^{λ_t r}` on the exact flow of Gaussian data with a linear reward, and its
closed-form NETS optimum, shared by the NETS and tilted-path tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplers.base_processes import MemorylessFlowBase
from samplers.methods import nets
from samplers.problem import finetuning_problem

__all__ = ["FLOW_MEAN", "FLOW_REWARD", "FLOW_T0", "FLOW_VAR", "Transport", "flow_case"]


class Transport(NamedTuple):
    """A closed-form optimum of the NETS losses on a path: `b*`, `F*`, `φ*` (`∇φ* = b*`), the exact
    marginals `ρ_t = N(mean, cov)` and the time interval."""

    path: object
    drift: Callable
    free_energy: Callable
    potential: Callable
    marginal: Callable
    t_start: float


FLOW_MEAN, FLOW_VAR, FLOW_T0 = 0.5, 0.8, 0.05
FLOW_REWARD = (1.0, -0.5)


def flow_case() -> Transport:
    """The tilted path `p_t e^{λ_t r}` on the exact flow of the data law `N(0.5, 0.8 I)` (2-D) with the
    linear reward `r = a·x`: `p_t = N(t m, S_t I)`, `S_t = t²c + (1 - t)²`, so
    `ρ_t = N(t m + λ_t S_t a, S_t I)` and, as `v` transports `p_t`, the correction
    `b* = λ̇ S_t a + ½ λ_t Ṡ_t a` (constant in x), with `F_t = -(λ_t a·t m + ½ λ_t² |a|² S_t)` and
    `φ* = b*·x` [DERIVED]."""
    m, c, t0 = FLOW_MEAN, FLOW_VAR, FLOW_T0
    a = jnp.asarray(FLOW_REWARD)
    variance = lambda t: t * t * c + (1.0 - t) ** 2

    def velocity(x, t):
        return m + (t * c - (1.0 - t)) / variance(t) * (x - t * m)

    base = MemorylessFlowBase(
        2, velocity, t0, terminal_log_prob_fn=lambda x: -0.5 * jnp.sum((x - m) ** 2) / c
    )
    problem = finetuning_problem(base, lambda x: jnp.dot(a, x), 1.0, num_steps=4)
    path = nets.path_for(problem, 1.0)
    level = lambda t: (t - t0) / (1.0 - t0)

    def drift(x, t):
        return (variance(t) / (1.0 - t0) + 0.5 * level(t) * jax.grad(variance)(t)) * a

    def free_energy(t):
        return -(
            level(t) * jnp.dot(a, t * m * jnp.ones(2)) + 0.5 * level(t) ** 2 * jnp.dot(a, a) * variance(t)
        )

    def marginal(t):
        return t * m + level(t) * variance(t) * a, variance(t) * jnp.eye(2)

    return Transport(path, drift, free_energy, lambda x, t: jnp.dot(drift(x, t), x), marginal, t0)
