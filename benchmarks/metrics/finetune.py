"""Reward fine-tuning metrics: achieved reward, path KL and the KL-regularised objective vs the exact optimum.

They apply to the tilted targets of `targets.finetuning` (`target.finetune_task` set; requirement
`finetune`), whose optimum is known in closed form (`FinetuneTask.reward_optimum`). With `r` the raw
reward, λ the task's multiplier, `x_i` the N model samples and `log w_i` their path log-weights:

    finetune/reward_mean     = mean_i r(x_i)                 (+ `_se`, sample std/√N)
    finetune/reward_optimum  = E_{p*}[r]                     (exact)
    finetune/reward_base     = E_{p_data}[r]                 (exact; the pretrained model's reward)
    finetune/reward_gap      = E_{p*}[r] − mean_i r(x_i)     (+ `_se`; 0 at the optimum, may be < 0)
    finetune/reward_fraction = (mean_i r − E_data[r]) / (E_{p*}[r] − E_data[r])   (1 at the optimum)

**Path KL** (requirement `log_w`). Every weighted sampler on a base `P` returns
`log w = λ r(x_K) + log dP/dP^u` (path space; Girsanov form of `samplers.sde`:
`log w = λ r(x_K) − Σ_k (½ h_k |u_k|² + sqrt(h_k) u_k·ε_k)`, the kernel form is the same path by path), so

    d_i = λ r(x_i) − log w_i = log dP^u/dP (path i),     E_{P^u}[d] = KL(P^u || P),

exactly for the simulated discrete chain (for the Girsanov form `E[d] = E Σ_k ½ h_k |u_k|²`, because
`ε_k` is independent of `u_k`; the `u·ε` term only adds variance). Hence

    finetune/kl_path          = mean_i d_i                   (+ `_se`) ≥ KL(p^u_1 || p^base_1)
    finetune/kl_optimum       = KL(p* || p_data) = λ E_{p*}[r] − log Z   (exact)
    finetune/objective        = mean_i log w_i = λ·mean r − kl_path      (+ `_se`; tilting units, nats)
    finetune/objective_gap    = log Z − finetune/objective   ≥ 0 in expectation (J* = log Z)

`objective_gap` is the ELBO gap `logZ/elbo_gap` read as the KL-regularised fine-tuning objective
`λ E[r] − KL`; divide by λ for reward units (`E[r] − KL/λ`). The path KL upper-bounds the KL of the
terminal law (data processing) and equals `KL(p*||p_data)` at the optimum of a memoryless base, up
to the O(t_0²) memorylessness bias and the discretisation of the base (the problem's `log Z` is the
continuous-time one).
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

from benchmarks.metrics.base import EvalContext, metric

__all__ = ["finetune_kl_metrics", "finetune_reward_metrics", "reward_values"]


@functools.cache
def _batched_reward(task):
    return jax.jit(jax.vmap(task.reward))


def reward_values(task, x) -> np.ndarray:
    """`r(x_i)` of a batch `(n, dim)` as float64 NumPy."""
    return np.asarray(_batched_reward(task)(jax.numpy.asarray(x, jax.numpy.float32)), np.float64)


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se


def finetune_reward_metrics(ctx: EvalContext) -> dict[str, float]:
    """`finetune/reward_mean(_se)`, `_optimum`, `_base`, `_gap(_se)`, `_fraction` (module docstring)."""
    task = ctx.target.finetune_task
    optimum = task.reward_optimum
    mean, se = _mean_se(reward_values(task, ctx.x))
    span = optimum.reward_mean - optimum.base_reward_mean
    return {
        "finetune/reward_mean": mean,
        "finetune/reward_se": se,
        "finetune/reward_optimum": optimum.reward_mean,
        "finetune/reward_base": optimum.base_reward_mean,
        "finetune/reward_gap": optimum.reward_mean - mean,
        "finetune/reward_gap_se": se,
        "finetune/reward_fraction": (mean - optimum.base_reward_mean) / span if span != 0 else math.nan,
    }


def finetune_kl_metrics(ctx: EvalContext) -> dict[str, float]:
    """`finetune/kl_path(_se)`, `_kl_optimum`, `_objective(_se)`, `_objective_gap` (module docstring)."""
    task = ctx.target.finetune_task
    optimum = task.reward_optimum
    log_w = np.asarray(ctx.log_w, np.float64)
    if np.isnan(log_w).any():
        nan = math.nan
        return {
            k: nan
            for k in (
                "finetune/kl_path",
                "finetune/kl_path_se",
                "finetune/objective",
                "finetune/objective_se",
                "finetune/objective_gap",
            )
        } | {"finetune/kl_optimum": optimum.kl}
    kl, kl_se = _mean_se(task.lam * reward_values(task, ctx.x) - log_w)
    objective, objective_se = _mean_se(log_w)
    return {
        "finetune/kl_path": kl,
        "finetune/kl_path_se": kl_se,
        "finetune/kl_optimum": optimum.kl,
        "finetune/objective": objective,
        "finetune/objective_se": objective_se,
        "finetune/objective_gap": optimum.log_Z - objective,
    }


ENTRIES = (
    metric(
        "finetune_reward",
        finetune_reward_metrics,
        requires=("finetune",),
        description="mean reward (+SE) of the samples, exact optimum E_p*[r], gap and fraction of the "
        "achievable improvement",
    ),
    metric(
        "finetune_kl",
        finetune_kl_metrics,
        requires=("finetune", "log_w"),
        description="path KL = mean(λr - log w) = KL(P^u||P) (+SE), exact KL(p*||p_data), objective "
        "λE[r] - KL = mean log w and its gap to log Z",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
