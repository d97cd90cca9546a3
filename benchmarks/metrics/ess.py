"""Effective-sample-size metrics of importance weights (normalised to a fraction).

    ess/reverse      = (Σ_i w_i)² / (N Σ_i w_i²) ∈ [1/N, 1], on the N = `ess/num_samples` model
                       samples (VSM / FAB definition; peers report it on 2000, 20 000 or 16 samples,
                       so the sample count is always recorded beside it).
    ess/forward      = M² / (Σ_j w^B_j · Σ_j 1/w^B_j) ∈ (0, 1], on the M = `ess/forward_num_samples`
                       backward paths from target samples: the self-normalised form of
                       `Z / E_π[w]` (VSM); fab-jax plugs in the exact Z instead of Ẑ_bwd.

Both come with a delta-method `_se` (from `samplers.estimators`, evaluated in float64). These are
importance-sampling ESS, not the autocorrelation ESS of MCMC chains.
"""

from __future__ import annotations

import numpy as np

from benchmarks.metrics.base import EvalContext, metric
from benchmarks.metrics.log_z import x64_estimate
from samplers import estimators

__all__ = ["ess_forward_metrics", "ess_reverse_metrics"]


def ess_reverse_metrics(ctx: EvalContext) -> dict[str, float]:
    """`ess/reverse` (fraction), `ess/reverse_se` and `ess/num_samples`."""
    ess, se = x64_estimate(estimators.reverse_ess, ctx.log_w)
    return {"ess/reverse": ess, "ess/reverse_se": se, "ess/num_samples": float(np.size(ctx.log_w))}


def ess_forward_metrics(ctx: EvalContext) -> dict[str, float]:
    """`ess/forward` (fraction), `ess/forward_se` and `ess/forward_num_samples`."""
    ess, se = x64_estimate(estimators.forward_ess, ctx.backward_log_w)
    return {
        "ess/forward": ess,
        "ess/forward_se": se,
        "ess/forward_num_samples": float(np.size(ctx.backward_log_w)),
    }


ENTRIES = (
    metric(
        "ess_reverse",
        ess_reverse_metrics,
        requires=("log_w",),
        description="(Σw)² / (N Σw²) on the N model samples",
    ),
    metric(
        "ess_forward",
        ess_forward_metrics,
        requires=("backward_log_w",),
        description="M² / (Σ w_B Σ 1/w_B) on M backward paths from target samples",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
