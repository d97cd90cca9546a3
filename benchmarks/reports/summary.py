"""Cross-target summary of a suite: performance ratios to the best method, their geometric mean with a
bootstrap interval over seeds, and the performance profile (Dolan & Moré, 2002).

Each target is ranked on one metric (lower is better), its primary one: the first of
`PRIMARY_METRICS` that its records report, the log-Z error where the target's log Z is known, else
(the particle targets dw4, lj13, lj55) the W2 between sample and reference configurations under the
targets' symmetries (`eq_w2`). Not the energy W2: on Lennard-Jones one clashing pair in a sample
makes it 1e6-1e15 (NUTS and AIS on lj13), and a ratio to the best would be that outlier.

For a target t, let v_{t,a} be the median over seeds of entrant a's value, an entrant being a method
(with its budget when a target of the suite ran at several). A seed whose cell did not finish `ok`,
whose value is not finite or whose accuracy failed counts as a failure; an entrant fails on t when
at least half of its seeds fail. Which accuracy checks (`benchmarks.metrics.accuracy.CHECKS`) count
depends on the metric (`FAILURE_CHECKS`): a log-Z estimate is a weighted one, so all of them (e.g.
|log Z error| > 10 nats, or ≤ 5 effective draws of the importance weights); the eq. W2 is computed
on the unweighted samples, so only mode coverage (a weight collapse does not make the samples
useless). An entrant whose `ok` records lack the metric (an MCMC chain has no log-Z estimate) is
not ranked on that target. Then

    best_t   = min_a v_{t,a} over the entrants that did not fail on t (at least 1e-12),
    r_{t,a}  = v_{t,a} / best_t  >= 1            (the performance ratio),
    r_fail   = 10 · max finite r over the suite (at least 10): the ratio of every failure,
    score_a  = 10 ** mean_t log10 r_{t,a}        (geometric-mean ratio over the targets a ran on),
    rho_a(τ) = fraction of those targets with r_{t,a} <= τ   (the performance profile).

Entrants that did not run on a target (not applicable, not in the suite) are left out there, not
counted as failures. The interval of score_a is a percentile bootstrap over seeds: each (target,
entrant) cell's seeds are resampled with replacement (failures stay failures), and the medians,
bests, ratios and scores recomputed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmarks.metrics.accuracy import CHECKS, Bounds

__all__ = [
    "FAILURE_CHECKS",
    "PRIMARY_METRICS",
    "Summary",
    "cross_target_summary",
    "profile_figure",
    "summary_table",
]

MIN_BEST = 1e-12
FAIL_FACTOR = 10.0
# a target is ranked on the first of these that its records report
PRIMARY_METRICS = ("logZ/error", "eq_w2")
# the accuracy checks that make a seed a failure on a metric (a metric not listed: all of them)
FAILURE_CHECKS: dict[str, tuple[str, ...]] = {"logZ/error": tuple(CHECKS), "eq_w2": ("mode_coverage",)}
METRIC_LABELS = {"logZ/error": "log-Z error", "eq_w2": "eq. W2"}


class Summary(NamedTuple):
    """Per entrant: score (geometric-mean ratio), its bootstrap interval, targets, failures, wins;
    `ratios[entrant][target]` and the failure ratio for the profile; `target_metrics[target]`: the
    metric that target is ranked on, `metric` their names joined."""

    metric: str
    scores: dict[str, tuple[float, float, float]]
    targets: dict[str, int]
    failures: dict[str, int]
    wins: dict[str, int]
    ratios: dict[str, dict[str, float]]
    fail_ratio: float
    target_metrics: dict[str, str]
    unranked: tuple[str, ...] = ()  # targets whose records report the metric but where every entrant failed


def _entrant(rec: dict[str, Any], multi_budget: bool) -> str:
    return f"{rec['method']} ({rec['budget']['name']})" if multi_budget else rec["method"]


def _failed(metrics: dict[str, Any], metric: str) -> bool:
    """Whether an `ok` record's value of `metric` counts as a failure (`FAILURE_CHECKS`)."""
    value = metrics.get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return True
    bounds = Bounds()
    return any(
        CHECKS[name](metrics, bounds) is not None for name in FAILURE_CHECKS.get(metric, tuple(CHECKS))
    )


def _target_metrics(records: list[dict[str, Any]], metrics: Sequence[str]) -> dict[str, str]:
    """Per target, the first of `metrics` that one of its `ok` records reports."""
    reported: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r["status"] == "ok":
            reported[r["target"]].update(r.get("metrics", {}))
    return {
        t: next(m for m in metrics if m in names) for t, names in reported.items() if names & set(metrics)
    }


def _cells(
    records: list[dict[str, Any]], target_metrics: dict[str, str]
) -> dict[str, dict[str, list[float]]]:
    """`cells[target][entrant]` = per-seed values of the target's metric (NaN for a failed seed)."""
    budgets: dict[str, set[str]] = defaultdict(set)
    for r in records:
        budgets[r["target"]].add(r["budget"]["name"])
    # an entrant is a method, or a (method, budget) when some target ran at several budgets; budgets
    # that only partition the targets (one per target, e.g. a longer one for lj13) name no entrant
    multi_budget = any(len(names) > 1 for names in budgets.values())
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        metric = target_metrics.get(r["target"])
        metrics = r.get("metrics", {})
        if (
            metric is None
            or r["status"] == "not_applicable"
            or (r["status"] == "ok" and metric not in metrics)
        ):
            continue
        failed = r["status"] != "ok" or _failed(metrics, metric)
        cells[r["target"]][_entrant(r, multi_budget)].append(math.nan if failed else float(metrics[metric]))
    # a target on which no entrant produced the metric is not a target of this summary
    return {t: dict(c) for t, c in cells.items() if any(np.isfinite(v).any() for v in c.values())}


def _ratios(cells: dict[str, dict[str, list[float]]]) -> tuple[dict[str, dict[str, float]], float]:
    ratios: dict[str, dict[str, float]] = defaultdict(dict)
    for target, entrants in cells.items():
        medians = {}
        for entrant, values in entrants.items():
            v = np.asarray(values, float)
            failed = np.mean(~np.isfinite(v)) >= 0.5
            medians[entrant] = math.inf if failed else float(np.median(v[np.isfinite(v)]))
        finite = [m for m in medians.values() if math.isfinite(m)]
        if not finite:
            continue
        best = max(min(finite), MIN_BEST)
        for entrant, m in medians.items():
            ratios[entrant][target] = max(m, MIN_BEST) / best if math.isfinite(m) else math.inf
    worst = max((r for per in ratios.values() for r in per.values() if math.isfinite(r)), default=1.0)
    fail_ratio = FAIL_FACTOR * max(worst, 1.0)
    return {
        e: {t: (r if math.isfinite(r) else fail_ratio) for t, r in per.items()} for e, per in ratios.items()
    }, fail_ratio


def _scores(ratios: dict[str, dict[str, float]]) -> dict[str, float]:
    return {e: float(10 ** np.mean(np.log10(list(per.values())))) for e, per in ratios.items() if per}


def cross_target_summary(
    records: list[dict[str, Any]],
    metrics: str | Sequence[str] = PRIMARY_METRICS,
    *,
    num_bootstrap: int = 200,
    seed: int = 0,
) -> Summary | None:
    """The summary of one suite's sampling records, each target ranked on the first of `metrics` its
    records report (None when fewer than two targets have one)."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    target_metrics = _target_metrics(records, metrics)
    cells = _cells(records, target_metrics)
    if len(cells) < 2:
        return None
    unranked = tuple(sorted(t for t in target_metrics if t not in cells))
    # grouped by metric in the order asked for, then by name
    target_metrics = {
        t: target_metrics[t] for t in sorted(cells, key=lambda t: (metrics.index(target_metrics[t]), t))
    }
    ratios, fail_ratio = _ratios(cells)
    point = _scores(ratios)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(num_bootstrap):
        resampled = {
            t: {e: list(rng.choice(np.asarray(v, float), size=len(v))) for e, v in c.items()}
            for t, c in cells.items()
        }
        for entrant, score in _scores(_ratios(resampled)[0]).items():
            draws[entrant].append(score)
    scores = {
        e: (s, float(np.percentile(draws[e], 2.5)), float(np.percentile(draws[e], 97.5)))
        for e, s in point.items()
    }
    failures = {e: sum(r == fail_ratio for r in per.values()) for e, per in ratios.items()}
    wins = {e: sum(r == 1.0 for r in per.values()) for e, per in ratios.items()}
    used = list(dict.fromkeys(target_metrics.values()))  # in the order asked for
    return Summary(
        "; ".join(used),
        scores,
        {e: len(p) for e, p in ratios.items()},
        failures,
        wins,
        ratios,
        fail_ratio,
        target_metrics,
        unranked,
    )


def _metric_sentence(summary: Summary) -> str:
    """Which metric each target is ranked on, e.g. "log-Z error on funnel10, gmm40; eq. W2 on dw4"."""
    by_metric: dict[str, list[str]] = defaultdict(list)
    for target, metric in summary.target_metrics.items():
        by_metric[metric].append(target)
    return "; ".join(f"{METRIC_LABELS.get(m, m)} on {', '.join(ts)}" for m, ts in by_metric.items())


def summary_table(summary: Summary) -> list[str]:
    """The Markdown lines of the summary (best geometric-mean ratio first)."""
    lines = [
        f"### Cross-target summary ({summary.metric})",
        "",
        "Per method, the geometric mean over the targets it ran on of its performance ratio "
        "(median over seeds of the target's metric / the best method's on that target; a failure counts as "
        f"{summary.fail_ratio:.3g}, ten times the worst finite ratio) with a 95% bootstrap interval over "
        "seeds; 1 means best on every target (`benchmarks/reports/summary.py`). Metrics: "
        f"{_metric_sentence(summary)}. A failure is a cell that did not finish, a non-finite value or a "
        "failed accuracy check: all checks for the log-Z error, mode coverage only for the eq. W2 "
        "(measured on the unweighted samples)."
        + (
            f" Not ranked: {', '.join(summary.unranked)}, where every method's value failed."
            if summary.unranked
            else ""
        ),
        "",
        "| method | geometric-mean ratio to best | targets | best on | failed on |",
        "|---|---|---|---|---|",
    ]
    for entrant, (score, lo, hi) in sorted(summary.scores.items(), key=lambda kv: kv[1][0]):
        lines.append(
            f"| `{entrant}` | {score:.3g} [{lo:.3g}, {hi:.3g}] | {summary.targets[entrant]} | "
            f"{summary.wins[entrant]} | {summary.failures[entrant]} |"
        )
    return lines


def profile_figure(summary: Summary, path: str | Path, title: str = "") -> Path:
    """The performance profile rho(τ) of every entrant, as a step plot on a log τ axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.grid.records import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    taus = np.logspace(0, math.log10(summary.fail_ratio), 400)[:-1]  # failures sit at fail_ratio
    order = sorted(summary.scores, key=lambda e: summary.scores[e][0])
    for i, entrant in enumerate(order):
        r = np.asarray(list(summary.ratios[entrant].values()))
        rho = [(r <= tau).mean() for tau in taus]
        ax.step(taus, rho, where="post", label=entrant, ls="-" if i < 10 else "--")
    ax.set(
        xscale="log",
        xlabel="τ (ratio to the best method)",
        ylabel="fraction of targets within τ",
        ylim=(0, 1.02),
        title=title or f"performance profile ({summary.metric})",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    path = Path(path)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return path
