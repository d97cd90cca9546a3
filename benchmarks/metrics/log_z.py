"""Normalising-constant metrics from path log-weights: IS log Ẑ, ELBO, EUBO, backward and BAR log Ẑ.

Definitions (`docs/methods.md` §7.2, `targets.md` §6); the estimators themselves are
`samplers.estimators` (the one implementation every method reports through), evaluated here in
float64 under a scoped `jax.enable_x64`. With `N` forward paths of the model (`E_F[w] = Z`) and
`M` backward paths started at target samples (`E_B[1/w] = 1/Z`):

    logZ/estimate          = LSE_i(log w_i) − log N             (unbiased for Z; biased low for log Z)
    logZ/elbo              = mean_i log w_i                      (≤ log Z)
    logZ/eubo              = mean_j log w^B_j                    (≥ log Z)
    logZ/backward_estimate = −(LSE_j(−log w^B_j) − log M)        (biased high for log Z)
    logZ/bar               = Bennett acceptance ratio from both sets (Crooks)

Every estimate comes with `<key>_se` (`logZ/se` for the headline estimate; delta method or sample
standard deviation, themselves noisy when the weights are degenerate), and, where the target's
log Z is known, an error: `logZ/error = |log Ẑ − log Z|` is THE headline number,
`logZ/signed_error` keeps the sign (IS is biased low), `logZ/elbo_gap = log Z − ELBO ≥ 0`,
`logZ/eubo_gap = EUBO − log Z ≥ 0`. `logZ/reference_se` is the standard error of the target's own
log Z (0 when exact), to be added in quadrature when judging an error. Any NaN weight makes every
value of that metric NaN (weights are NaN-free by contract; `-inf`, a zero weight, is allowed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from benchmarks.metrics.base import EvalContext, metric
from samplers import estimators

__all__ = [
    "log_z_backward_metrics",
    "log_z_bar_metrics",
    "log_z_error_metrics",
    "log_z_metrics",
    "x64_estimate",
]


@functools.cache
def _jitted(fn: Callable[..., estimators.Estimate]) -> Callable[..., estimators.Estimate]:
    return jax.jit(fn)


def x64_estimate(fn: Callable[..., estimators.Estimate], *log_ws) -> tuple[float, float]:
    """`(value, se)` of a `samplers.estimators` function evaluated in float64.

    The closed-form estimators run eagerly (a handful of array ops, no compilation); BAR, whose
    bisection loop is compiled on every eager call, is jitted once per input shape. Returns
    `(nan, nan)` if any weight is NaN.
    """
    arrays = [np.asarray(a, np.float64).reshape(-1) for a in log_ws]
    if any(np.isnan(a).any() for a in arrays):
        return np.nan, np.nan
    with jax.enable_x64(True):
        out = (_jitted(fn) if fn is estimators.bar_log_Z else fn)(*arrays)
        return float(out.value), float(out.se)


def log_z_metrics(ctx: EvalContext) -> dict[str, float]:
    """`logZ/estimate`, `logZ/se`, `logZ/elbo`, `logZ/elbo_se` from forward path log-weights."""
    z, z_se = x64_estimate(estimators.log_Z, ctx.log_w)
    lb, lb_se = x64_estimate(estimators.elbo, ctx.log_w)
    return {"logZ/estimate": z, "logZ/se": z_se, "logZ/elbo": lb, "logZ/elbo_se": lb_se}


def log_z_error_metrics(ctx: EvalContext) -> dict[str, float]:
    """`logZ/error = |log Ẑ − log Z|`, `logZ/signed_error`, `logZ/elbo_gap`, `logZ/reference_se`."""
    z, _ = x64_estimate(estimators.log_Z, ctx.log_w)
    lb, _ = x64_estimate(estimators.elbo, ctx.log_w)
    log_z = float(ctx.target.log_Z)
    return {
        "logZ/error": abs(z - log_z),
        "logZ/signed_error": z - log_z,
        "logZ/elbo_gap": log_z - lb,
        "logZ/reference_se": float(ctx.target.log_Z_se),
    }


def log_z_backward_metrics(ctx: EvalContext) -> dict[str, float]:
    """`logZ/eubo(_se)` and the backward estimate `logZ/backward_estimate(_se)` (+ gaps when log Z known)."""
    ub, ub_se = x64_estimate(estimators.eubo, ctx.backward_log_w)
    zb, zb_se = x64_estimate(estimators.log_Z_backward, ctx.backward_log_w)
    out = {
        "logZ/eubo": ub,
        "logZ/eubo_se": ub_se,
        "logZ/backward_estimate": zb,
        "logZ/backward_estimate_se": zb_se,
    }
    if ctx.target.log_Z is not None:
        out["logZ/eubo_gap"] = ub - float(ctx.target.log_Z)
        out["logZ/backward_estimate_error"] = abs(zb - float(ctx.target.log_Z))
    return out


def log_z_bar_metrics(ctx: EvalContext) -> dict[str, float]:
    """`logZ/bar(_se)`: Bennett/Crooks estimate from forward AND backward paths (+ `_error`)."""
    bar, bar_se = x64_estimate(estimators.bar_log_Z, ctx.log_w, ctx.backward_log_w)
    out = {"logZ/bar": bar, "logZ/bar_se": bar_se}
    if ctx.target.log_Z is not None:
        out["logZ/bar_error"] = abs(bar - float(ctx.target.log_Z))
    return out


ENTRIES = (
    metric(
        "log_z",
        log_z_metrics,
        requires=("log_w",),
        description="IS log Z = LSE(log w) - log N and ELBO = mean log w, with SEs",
    ),
    metric(
        "log_z_error",
        log_z_error_metrics,
        requires=("log_w", "log_Z"),
        description="|log Z_IS - log Z| (and signed), log Z - ELBO",
    ),
    metric(
        "log_z_backward",
        log_z_backward_metrics,
        requires=("backward_log_w",),
        description="EUBO = mean_B log w and backward estimate -(LSE(-log w_B) - log M)",
    ),
    metric(
        "log_z_bar",
        log_z_bar_metrics,
        requires=("log_w", "backward_log_w"),
        description="Bennett acceptance ratio (Crooks) log Z from forward and backward paths",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
