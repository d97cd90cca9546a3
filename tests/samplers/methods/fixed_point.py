"""The fixed-point check shared by the loss tests.

The loss gradient with respect to an affine perturbation `u = u* + A x + c` of the optimal control,
over independent batches, at the optimum (`A = 0`, `c = 0`: the mean gradient vanishes within its
standard error) and at a perturbed control (`A = 0.2 I`, `c = (0.2, -0.1)`: it does not).

The exact tilted flow of the fine-tuning tasks (`flow_problem`, `flow_optimal_control`): a shipped `ft_*`
task's pretrained flow run as the memoryless base from `FLOW_T0`, whose optimal control
`u* = σ(t)(∇log p*_t - ∇log p_t)` is closed form (docs/methods.md §1.5, "Optimal control").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from samplers.base_processes import MemorylessFlowBase
from samplers.problem import finetuning_problem
from targets.finetuning import get_task

# The two affine perturbations (optimum, perturbed), stacked along a leading axis of size 2.
PERTURBATIONS = {
    "A": jnp.stack([jnp.zeros((2, 2)), 0.2 * jnp.eye(2)]),
    "c": jnp.stack([jnp.zeros(2), jnp.array([0.2, -0.1])]),
}


def affine_control(optimal: Callable) -> Callable:
    """`u(θ, x, t) = u*(x, t) + A x + c` with `θ = {"A", "c"}` (`optimal` has the `(params, x, t)` form)."""
    return lambda theta, x, t: optimal(None, x, t) + theta["A"] @ x + theta["c"]


def z_scores(grads: np.ndarray) -> np.ndarray:
    """Mean over independent batches divided by its standard error, per component."""
    grads = np.asarray(grads, np.float64)
    return grads.mean(0) / (grads.std(0, ddof=1) / np.sqrt(grads.shape[0]))


def perturbation_gradients(
    gradient: Callable[[Any, jax.Array], Any],
    num_batches: int,
    extra: Callable[[Any], Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """`gradient(θ, key) -> {"A", "c", ...}` on `num_batches` keys (split from `key(0)`) at both
    perturbations, in one jitted program: `(grads (2, num_batches, 6 + ...), extra(θ) at both)`; the
    gradient's leaves are flattened in key order (`A`, `c`, then any further keys)."""

    @jax.jit
    def run(thetas):
        def per_theta(theta):
            def per_batch(key):
                return ravel_pytree(gradient(theta, key))[0]

            grads = jax.lax.map(per_batch, jax.random.split(jax.random.key(0), num_batches))
            return grads, None if extra is None else extra(theta)

        return jax.lax.map(per_theta, thetas)

    grads, extras = run(PERTURBATIONS)
    grads = np.asarray(grads)
    assert np.all(np.isfinite(grads))
    return grads, extras


# ---------------------------------------------------------------------------------------------
# the exact tilted flow of a fine-tuning task (docs/methods.md §1.5)
# ---------------------------------------------------------------------------------------------

FLOW_T0 = 0.05


def flow_problem(task_name: str = "ft_gmm2d_linear", *, terminal: str = "density", num_steps: int = 8):
    """The fine-tuning problem of a shipped ft_* task on its exact pretrained flow, memoryless from
    `t_0 = 0.05` with the exact initial law `p_{t_0}`, on the quadratic grid, with the task's `log Z`; the
    data law's score from its density (`terminal="density"`), from the velocity at `t = 1`
    (`"velocity"`) or not at all (`"none"`). Returns `(task, problem)`."""
    task = get_task(task_name)
    initial = task.marginal(FLOW_T0)
    base = MemorylessFlowBase(
        task.dim,
        task.velocity,
        FLOW_T0,
        initial_sample_fn=initial.sample,
        initial_log_prob_fn=initial.log_prob,
        terminal_log_prob_fn=task.data.log_prob if terminal == "density" else None,
        terminal_score_from_velocity=terminal == "velocity",
    )
    problem = finetuning_problem(
        base,
        task.reward,
        task.lam,
        num_steps=num_steps,
        grid="quadratic",
        grad_reward=task.grad_reward,
        log_Z=task.log_Z,
    )
    return task, problem


def flow_optimal_control(task, base):
    """`u*(x, t) = σ(t)(∇log p*_t - ∇log p_t)(x)`: the task's closed-form guidance (targets.finetuning)."""
    return lambda params, x, t: base.sigma(t) * task.optimal_guidance(x, t)
