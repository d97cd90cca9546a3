"""Cross-target summary of a suite: performance ratios to the best method, their geometric mean with a
bootstrap interval over seeds, and the performance profile (Dolan & Moré, 2002).

For a metric (lower is better; the leaderboard uses the log-Z error) and a target t, let v_{t,a} be
the median over seeds of entrant a's value, an entrant being a method (with its budget when the
suite has several). A seed whose cell did not finish `ok`, whose accuracy failed
(`benchmarks.metrics.accuracy.assess`: a useless estimate, e.g. |log Z error| > 10 nats) or whose
value is not finite counts as a failure; an entrant fails on t when at least half of its seeds fail.
An entrant whose `ok` records lack the metric (an MCMC chain has no log-Z estimate) is not ranked on
it. Then

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
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmarks.metrics.accuracy import assess

__all__ = ["Summary", "cross_target_summary", "profile_figure", "summary_table"]

MIN_BEST = 1e-12
FAIL_FACTOR = 10.0


class Summary(NamedTuple):
    """Per entrant: score (geometric-mean ratio), its bootstrap interval, targets, failures, wins;
    `ratios[entrant][target]` and the failure ratio for the profile."""

    metric: str
    scores: dict[str, tuple[float, float, float]]
    targets: dict[str, int]
    failures: dict[str, int]
    wins: dict[str, int]
    ratios: dict[str, dict[str, float]]
    fail_ratio: float


def _entrant(rec: dict[str, Any], multi_budget: bool) -> str:
    return f"{rec['method']} ({rec['budget']['name']})" if multi_budget else rec["method"]


def _cells(records: list[dict[str, Any]], metric: str) -> dict[str, dict[str, list[float]]]:
    """`cells[target][entrant]` = per-seed values (NaN for a failed seed)."""
    multi_budget = len({r["budget"]["name"] for r in records}) > 1
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        metrics = r.get("metrics", {})
        if r["status"] == "not_applicable" or (r["status"] == "ok" and metric not in metrics):
            continue
        ok = r["status"] == "ok" and assess(metrics).accuracy == "ok"
        cells[r["target"]][_entrant(r, multi_budget)].append(float(metrics[metric]) if ok else math.nan)
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
    records: list[dict[str, Any]], metric: str = "logZ/error", *, num_bootstrap: int = 200, seed: int = 0
) -> Summary | None:
    """The summary of one suite's sampling records (None when fewer than two targets have the metric)."""
    cells = _cells(records, metric)
    if len(cells) < 2:
        return None
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
    return Summary(metric, scores, {e: len(p) for e, p in ratios.items()}, failures, wins, ratios, fail_ratio)


def summary_table(summary: Summary) -> list[str]:
    """The Markdown lines of the summary (best geometric-mean ratio first)."""
    lines = [
        f"### Cross-target summary ({summary.metric})",
        "",
        "Per method, the geometric mean over the targets it ran on of its performance ratio "
        f"(median {summary.metric} over seeds / the best method's on that target; a failure counts as "
        f"{summary.fail_ratio:.3g}, ten times the worst finite ratio) with a 95% bootstrap interval over "
        "seeds; 1 means best on every target (`benchmarks/reports/summary.py`).",
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
