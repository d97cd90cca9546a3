"""tiltbench metrics: one registry of metric functions `fn(EvalContext) -> dict[str, float]`.

    from benchmarks import metrics
    ctx = metrics.EvalContext(key, target, x, log_w=log_w, reference=ref, reference2=ref2)
    values, skipped = metrics.evaluate(ctx)   # {"logZ/estimate": ..., ...}, {"modes": "requires ..."}

`evaluate` runs every registered metric whose requirements hold and returns the reasons for the
others. Keys are namespaced and say whether a distance is squared (`mmd2/...`, `energy_w2` vs
`energy_w2_squared`); every distance has a `<key>/noise_floor` beside it. Families (one module each):

    log_z      logZ/estimate, logZ/se, logZ/error, logZ/elbo, logZ/eubo, logZ/bar, ... (the
               estimators are `samplers.estimators`, evaluated in float64)
    ess        ess/reverse, ess/num_samples, ess/forward (+ `_se`)
    mmd        mmd2/rbf_median, mmd2/rbf_multi (unbiased MMD², jackknife SE)
    ot         sinkhorn/divergence (ε relative to the reference cost scale), w2_exact_1d/*
    modes      modes/hit_fraction, modes/emc, modes/weight_tv (Gaussian-mixture targets)
    particles  energy_w2, energy_w2_clipped, dist_w2, dist_tv, eq_w2, eq_w2_invariant (particle
               systems; `alignment` holds the jittable Hungarian and Kabsch used by eq_w2)
    finetune   finetune/reward_mean, finetune/reward_gap, finetune/kl_path, finetune/objective_gap
               (fine-tuning tasks: reward and path KL against the exact optimum)
    cost       cost_metrics(cost, train_time, sample_time, compile_time) (not a registered metric)
    accuracy   assess(metrics) -> the accuracy status ("ok" / "failed" with reasons) and the
               mode-collapse warnings of a finished cell (not a registered metric)

Add your own with `register_metric(name, fn, requires=(...), description=...)`.
"""

from __future__ import annotations

from benchmarks.metrics import ess, finetune, log_z, mmd, modes, ot, particles
from benchmarks.metrics.base import (
    METRICS,
    REQUIREMENTS,
    EvalContext,
    MetricEntry,
    MetricFn,
    check_context,
    evaluate,
    metric_key,
    missing_requirements,
    register_metric,
)
from benchmarks.metrics.cost import cost_metrics

__all__ = [
    "BUILTIN",
    "METRICS",
    "REQUIREMENTS",
    "EvalContext",
    "MetricFn",
    "check_context",
    "cost_metrics",
    "describe",
    "evaluate",
    "metric_key",
    "missing_requirements",
    "names",
    "register_metric",
]


def names() -> list[str]:
    """All registered metric names, sorted."""
    return METRICS.names()


def describe() -> list[dict[str, object]]:
    """One row per metric (name, requirements, description) for `tiltbench metrics` and the README."""
    return [
        {
            "name": name,
            "requires": list(METRICS.meta(name)["requires"]),
            "description": METRICS.meta(name)["description"],
        }
        for name in METRICS.names()
    ]


BUILTIN: tuple[MetricEntry, ...] = (
    *ess.ENTRIES,
    *finetune.ENTRIES,
    *log_z.ENTRIES,
    *mmd.ENTRIES,
    *modes.ENTRIES,
    *ot.ENTRIES,
    *particles.ENTRIES,
)
"""Every built-in metric; each module lists its own as `ENTRIES` and registers nothing itself."""

for _entry in BUILTIN:
    register_metric(_entry.name, _entry.fn, requires=_entry.requires, description=_entry.description)
