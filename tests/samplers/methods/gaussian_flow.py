"""The exact flow of Gaussian data with a linear reward, shared by the tests of the losses that run on
the memoryless flow base (reward score matching, CMCD, the flow likelihood), and a flow with a non-linear
base drift (`nonlinear_flow_problem`: Adjoint Matching, the lean-adjoint claim).

Data `N(μ, c² I)` in 2-D (`MU`, `C2`), the flow `X̄_t = (1 - t) Z + t X` run as the memoryless base from
`T0` with its exact marginal there, and the reward `λ w·x` (`LAM`, `W`): the tilted law is
`N(μ + λ c² w, c² I)` and `log Z = λ w·μ + ½ λ² c² |w|²` (`LOG_Z`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base_processes import MemorylessFlowBase, gaussian_log_prob
from samplers.problem import finetuning_problem

__all__ = [
    "C2",
    "LAM",
    "LOG_Z",
    "MU",
    "T0",
    "W",
    "a_t",
    "flow_optimal_control",
    "flow_problem",
    "nonlinear_flow_problem",
    "velocity",
]

MU, C2, T0, LAM = 0.5, 0.8, 0.05, 1.0
W = jnp.array([1.0, -0.5])
LOG_Z = LAM * MU * float(np.sum(W)) + 0.5 * LAM**2 * C2 * float(np.sum(np.asarray(W, np.float64) ** 2))


def velocity(x, t):
    # X̄_t = (1-t)Z + tX, X ~ N(μ, c²I): v = E[X - Z | X̄_t = x] = μ + (tc² - (1-t))/((1-t)² + t²c²)(x - tμ)
    return MU + (t * C2 - (1 - t)) / ((1 - t) ** 2 + t**2 * C2) * (x - t * MU)


def a_t(t):
    """`∂E[X_1|X_t=x]/∂x = 1 + (1-t)·∂v/∂x = t c²/((1-t)² + t²c²)` (scalar, Gaussian data)."""
    return t * C2 / ((1 - t) ** 2 + t**2 * C2)


def flow_problem(num_steps: int = 12):
    """The fine-tuning problem on the quadratic grid of `num_steps` steps."""
    var0 = (1 - T0) ** 2 + T0**2 * C2  # exact flow marginal at t_0
    base = MemorylessFlowBase(
        2,
        velocity=velocity,
        t0=T0,
        initial_sample_fn=lambda key, n: T0 * MU + np.sqrt(var0) * jax.random.normal(key, (n, 2)),
        initial_log_prob_fn=lambda x: gaussian_log_prob(x, T0 * MU, var0, 2),
    )
    return finetuning_problem(base, lambda x: W @ x, LAM, num_steps=num_steps, grid="quadratic")


def flow_optimal_control(params, x, t):
    """`u* = σ(t)∇log h_t = σ(t) λ a_t w` (log h_t = λ w·E[X_1|X_t] + const for Gaussian X_1|X_t)."""
    del params
    return jnp.sqrt(2 * (1 - t) / t) * LAM * a_t(t) * W + 0.0 * x


def nonlinear_flow_problem(num_steps: int = 12):
    """A fine-tuning problem whose base drift `b = 2v - x/t` is non-linear in x (tanh velocity)."""
    matrix = jnp.array([[1.0, 0.7], [-0.4, 1.3]])
    velocity = lambda x, t: jnp.tanh(matrix.astype(x.dtype) @ x) * (1.0 + t) - 0.3 * x  # in x's precision
    base = MemorylessFlowBase(dim=2, velocity=velocity, t0=0.2)
    reward = lambda x: -0.5 * jnp.sum((x - 1.0) ** 2) + jnp.sin(2.0 * x[0]) * x[1]
    return finetuning_problem(base, reward, 1.0, num_steps=num_steps)
