"""What one unit of the budget axis costs: energy + gradient evaluations per second of each target.

A cell's budget counts energy and gradient evaluations (`Cost.budget_evals`); what they cost in
time depends on the target. Per target, `target_throughput` times the evaluation every method makes,
`jit(vmap(value_and_grad(log_prob)))` on a batch of `batch` points, compiled ahead of time, over
`repeats` steady-state calls (median): evaluations per second count one energy and one gradient per
point, as the budget does. Points are `N(0, I)`: the time of these programs does not depend on the
values (no data-dependent control flow).

On a Gaussian mixture it also times, interleaved with it (`timing.interleaved`), the whitening the
mixtures used before: one triangular solve `L_k w = x - μ_k` per point and component under `vmap`
(`mixture_log_prob_by_solves`), where `GaussianMixture.log_prob` now multiplies by `L_k⁻¹` formed
once per batch; `ratio = t_solves / t_log_prob` per round (> 1: the current path is faster).
"""

from __future__ import annotations

import statistics
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

import targets
from benchmarks.perf.timing import interleaved, ratio_summary

__all__ = ["mixture_log_prob_by_solves", "target_throughput"]


def mixture_log_prob_by_solves(mixture, x: jax.Array) -> jax.Array:
    """`log Σ_k w_k N(x; μ_k, L_k L_kᵀ)` of ONE point by a triangular solve per component (the
    mixtures' former whitening, kept as the reference of the ratio)."""
    whitened = jax.vmap(lambda tril, mean: solve_triangular(tril, x - mean, lower=True))(
        mixture.scale_trils, mixture.means
    )
    log_det = jnp.sum(jnp.log(jnp.diagonal(mixture.scale_trils, axis1=-2, axis2=-1)), axis=-1)
    log_n = -0.5 * jnp.sum(whitened**2, axis=-1) - log_det - 0.5 * mixture.dim * jnp.log(2 * jnp.pi)
    return logsumexp(mixture.log_weights + log_n)


def _batched(log_prob):
    return jax.jit(jax.vmap(jax.value_and_grad(log_prob)))


def target_throughput(name: str, *, batch: int = 512, repeats: int = 7, seed: int = 0) -> dict[str, Any]:
    """Energy + gradient evaluations per second of target `name` (see the module docstring)."""
    target = targets.get(name)
    x = jax.random.normal(jax.random.key(seed), (batch, target.dim))
    fns = {"log_prob": _batched(target.log_prob).lower(x).compile()}
    mixture = getattr(target, "mixture", None)
    if mixture is not None:
        fns["solves"] = _batched(lambda y: mixture_log_prob_by_solves(mixture, y)).lower(x).compile()
    for fn in fns.values():  # warm up (allocations, thread pools)
        jax.block_until_ready(fn(x))
    times = interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeats)
    seconds = statistics.median(times["log_prob"])
    row: dict[str, Any] = {
        "target": name,
        "dim": target.dim,
        "batch": batch,
        "call_s": seconds,
        "evals_per_s": 2 * batch / seconds,
    }
    if mixture is not None:
        row["components"] = int(mixture.num_components)
        row["solves_ratio"] = ratio_summary(times["solves"], times["log_prob"])
    return row
