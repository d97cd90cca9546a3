"""Sample metrics of weighted samplers on their raw draws AND on their draws resampled by weight.

A weighted sampler (every method that returns path log-weights `log_w`: the learned samplers, AIS,
SMC) targets π only after reweighting: its raw draws x_i ~ q are biased, and the estimator it
stands for is the self-normalised  Σ_i w̄_i f(x_i),  w̄_i = w_i / Σ_j w_j.  So every *sample metric*
(a registered metric that does not read the weights: MMD, Sinkhorn, modes, energy / distance /
equivariant W2, the fine-tuning reward) is computed twice:

    <key>            on the raw draws x_1..x_N (unchanged);
    weighted/<key>   on N draws resampled from the raw ones with probabilities w̄_i
                     (multinomial, with its own key `metric_key(ctx.key, "weighted_resample")`),
                     i.e. i.i.d. draws of the self-normalised importance-sampling approximation of π.

Noise floors (`.../noise_floor`) compare two reference sets and do not depend on the draws, so they
are not repeated. Resampling duplicates points: a resampled metric behaves like the metric of
about n_eff = N·e / (1 + e) exact draws (e = `ess/reverse`: the importance-sampling noise of N·e
draws plus the multinomial noise of N resampled ones), so its sample-size bias is that of n_eff,
not N; read it beside `ess/reverse`.
Unweighted samples (MCMC, `log_w is None`) get the raw pass only.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from benchmarks.metrics.base import METRICS, EvalContext, evaluate, metric_key

__all__ = ["PREFIX", "WEIGHT_REQUIREMENTS", "evaluate_raw_and_weighted", "resample", "sample_metric_names"]

PREFIX = "weighted/"
# metrics that read the weights themselves are not sample metrics
WEIGHT_REQUIREMENTS = frozenset({"log_w", "backward_log_w"})


def sample_metric_names(names: Iterable[str] | None = None) -> list[str]:
    """The registered metrics (of `names`, default all) that do not read the weights."""
    names = METRICS.names() if names is None else list(names)
    return [n for n in names if not WEIGHT_REQUIREMENTS & set(METRICS.meta(n)["requires"])]


def resample(key: jax.Array, x: jax.Array, log_w: jax.Array, num: int | None = None) -> jax.Array:
    """`num` (default N) multinomial draws from the rows of `x` with probabilities ∝ exp(log_w).

    Inverse-CDF sampling: `num` uniforms located in the cumulative normalised weights by binary
    search, O((N + num) log N) (`jax.random.categorical` with a shape draws an N × num Gumbel array).
    Non-finite log-weights count as zero weight. Raises ValueError when no weight is positive."""
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    if not bool(jnp.isfinite(log_w).any()):
        raise ValueError("cannot resample by weight: no finite log-weight")
    cdf = jnp.cumsum(jnp.exp(log_w - jnp.max(log_w)))
    u = jax.random.uniform(key, (x.shape[0] if num is None else num,), cdf.dtype) * cdf[-1]
    idx = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), x.shape[0] - 1)
    return x[idx]


def evaluate_raw_and_weighted(
    ctx: EvalContext,
    names: Iterable[str] | None = None,
    *,
    on_error: str = "raise",
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """`evaluate(ctx)` plus, when `ctx.log_w` is given, the sample metrics on the draws resampled by
    weight under `weighted/` (values and skipped reasons; see the module docstring). `timings`, if
    given, gets each metric's wall time in seconds (the weighted pass's under `weighted/<name>`)."""
    values, skipped = evaluate(ctx, names, on_error=on_error, timings=timings)
    if ctx.log_w is None:
        return values, skipped
    sample_names = sample_metric_names(names)
    try:
        x = resample(metric_key(ctx.key, "weighted_resample"), jnp.asarray(ctx.x), jnp.asarray(ctx.log_w))
    except ValueError as err:
        if on_error == "raise":
            raise
        return values, skipped | {PREFIX + n: f"error: {err}" for n in sample_names}
    more_timings: dict[str, float] = {}
    more, more_skipped = evaluate(ctx._replace(x=x), sample_names, on_error=on_error, timings=more_timings)
    if timings is not None:
        timings |= {PREFIX + k: v for k, v in more_timings.items()}
    values |= {PREFIX + k: v for k, v in more.items() if not k.endswith("noise_floor")}
    skipped |= {PREFIX + k: v for k, v in more_skipped.items()}
    return values, skipped
