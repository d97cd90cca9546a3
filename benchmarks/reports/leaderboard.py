"""Leaderboard tables and figures built from the per-cell records.

`build_leaderboard(runs_dir, out_dir)` reads every record under every `runs_dir/<suite>/`, aggregates
over seeds (mean and a percentile-bootstrap 95% confidence interval of the mean, on `ok` cells),
and writes

- `<out>/leaderboard.md`: one table per target (methods sorted by log-Z error when known), with
  the noise floors, the cost columns, status counts, and the hardware / commit of the records;
- `<out>/leaderboard.csv`: the same numbers in long form (one row per method x target x budget x metric);
- `<out>/figures/<suite>/`: sample scatter plots (2-D targets), energy histograms (particle targets),
  and accuracy-versus-cost curves (log-Z error against energy + gradient evaluations; the training
  trace of learned samplers and the end point of every cell).

Beside the run status, every `ok` record gets an accuracy status (`benchmarks.metrics.accuracy`):
a run whose estimate is useless is `failed` with its reason. A group that mixes failed and working
seeds is not averaged: its entries are the median and [min, max] over its `ok` seeds, marked
"(median)", and the table counts the failed seeds and lists their reasons and collapse warnings.

Records from different commits or suites are never silently pooled: the commit set is printed in
the header, and a warning line is added when more than one commit contributed.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.grid.findings import record_findings
from benchmarks.grid.records import (
    RecordError,
    atomic_write_text,
    ensure_writable,
    section_records,
)
from benchmarks.grid.suites import Cell, load_suite, suite_names
from benchmarks.metrics.accuracy import assess
from benchmarks.reports.published import best_published, published, published_lines
from benchmarks.reports.summary import cross_target_summary, profile_figure, summary_table

__all__ = [
    "COLUMNS",
    "FINETUNE_COLUMNS",
    "PARTICLE_COLUMNS",
    "aggregate",
    "bootstrap_ci",
    "build_leaderboard",
    "problem_kind",
    "over_budget",
    "suite_coverage",
]

# A cell that spent more than this fraction over its `max_evals` is named under its suite's header.
OVER_BUDGET_TOLERANCE = 0.05

# (metric key, column title, lower is better?)  -- the Markdown table columns, in order.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("logZ/error", "abs log-Z error", True),
    ("logZ/estimate", "log Ẑ", False),
    ("logZ/elbo", "ELBO", False),
    ("logZ/eubo", "EUBO", True),
    ("ess/reverse", "reverse ESS", False),
    ("ess/forward", "forward ESS", False),
    ("mmd2/rbf_median", "MMD² (median bw)", True),
    ("weighted/mmd2/rbf_median", "MMD² weighted", True),
    ("sinkhorn/divergence", "Sinkhorn", True),
    ("weighted/sinkhorn/divergence", "Sinkhorn weighted", True),
    ("modes/hit_fraction", "modes hit", False),
    ("weighted/modes/hit_fraction", "modes hit weighted", False),
    ("modes/emc", "EMC", False),
    ("weighted/modes/emc", "EMC weighted", False),
    ("energy_w2", "energy W2", True),
    ("weighted/energy_w2", "energy W2 weighted", True),
    ("dist_w2", "dist. W2", True),
    ("weighted/dist_w2", "dist. W2 weighted", True),
    ("eq_w2", "eq. W2", True),
)
# Particle systems (records with energy_w2): the energy and interatomic-distance laws lead; MMD and
# Sinkhorn on raw coordinates sit at their floors there while energy-W2 is far above its own, so
# they are kept out of these tables (they stay in the CSV).
PARTICLE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("energy_w2", "energy W2", True),
    ("weighted/energy_w2", "energy W2 weighted", True),
    ("dist_w2", "dist. W2", True),
    ("weighted/dist_w2", "dist. W2 weighted", True),
    ("dist_tv", "dist. TV", True),
    ("eq_w2", "eq. W2", True),
    ("weighted/eq_w2", "eq. W2 weighted", True),
    ("logZ/error", "abs log-Z error", True),
    ("logZ/estimate", "log Ẑ", False),
    ("logZ/elbo", "ELBO", False),
    ("ess/reverse", "reverse ESS", False),
    ("ess/forward", "forward ESS", False),
)
# The fine-tuning table (records with problem_kind "finetuning"; never mixed into the sampling tables).
FINETUNE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("finetune/objective_gap", "objective gap log Z − (λE[r] − KL)", True),
    ("finetune/reward_mean", "reward E[r]", False),
    ("finetune/reward_gap", "reward gap E*[r] − E[r]", True),
    ("finetune/kl_path", "path KL", True),
    ("logZ/error", "abs log-Z error", True),
    ("ess/reverse", "reverse ESS", False),
    ("mmd2/rbf_median", "MMD² (median bw)", True),
    ("modes/weight_tv", "mode-weight TV", True),
)
FLOORS = {
    "mmd2/rbf_median": "mmd2/rbf_median/noise_floor",
    "sinkhorn/divergence": "sinkhorn/divergence/noise_floor",
    "energy_w2": "energy_w2/noise_floor",
    "dist_w2": "dist_w2/noise_floor",
    "eq_w2": "eq_w2/noise_floor",
    "dist_tv": "dist_tv/noise_floor",
}
COST_COLUMNS = (
    ("cost/energy_evals", "energy evals"),
    ("cost/grad_evals", "grad evals"),
    ("time/train_s", "train s"),
    ("time/sample_s", "sample s"),
)


def bootstrap_ci(
    values: Iterable[float], *, num_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean; `(mean, lo, hi)` (lo = hi = mean for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    if v.size == 1:
        return (float(v[0]),) * 3
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(num_resamples, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def median_range(values: Iterable[float]) -> tuple[float, float, float]:
    """`(median, min, max)` of the finite values (NaN when none): the summary of a group that mixes
    failed and working seeds, where a mean would hide which is which."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    return float(np.median(v)), float(v.min()), float(v.max())


def problem_kind(record: dict[str, Any]) -> str:
    """`"finetuning"` or `"sampling"`: the record's `problem_kind`, else its problem summary's kind."""
    kind = record.get("problem_kind") or record.get("config", {}).get("problem_summary", {}).get("kind")
    return kind or "sampling"


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Group records by (suite, target, method, budget) and aggregate every metric over ok seeds."""
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["suite"], r["target"], r["method"], r["budget"]["name"])].append(r)
    out = {}
    for key, recs in sorted(groups.items()):
        ok = [r for r in recs if r["status"] == "ok"]
        assessed = [assess(r["metrics"]) for r in ok]
        failed = sum(a.accuracy == "failed" for a in assessed)
        statistic = "median" if 0 < failed < len(ok) else "mean"
        summarise = median_range if statistic == "median" else bootstrap_ci
        metric_names = sorted({k for r in ok for k in r["metrics"]})
        stats = {m: summarise(r["metrics"].get(m, math.nan) for r in ok) for m in metric_names}
        out[key] = {
            "n_seeds": len(recs),
            "statistic": statistic,
            "accuracy_failed": failed,
            "accuracy_reasons": sorted(
                {
                    f"seed {r['seed']}: {'; '.join(a.reasons)}"
                    for r, a in zip(ok, assessed, strict=True)
                    if a.reasons
                }
            ),
            "collapse_warnings": sorted(
                {f"seed {r['seed']}: {w}" for r, a in zip(ok, assessed, strict=True) for w in a.warnings}
            ),
            "status": {
                s: sum(r["status"] == s for r in recs) for s in ("ok", "diverged", "error", "not_applicable")
            },
            "messages": sorted({r.get("message", "") for r in recs if r["status"] != "ok"} - {""}),
            "findings": sorted(
                {
                    f"seed {r['seed']}: {'; '.join(found)}"
                    for r in recs
                    if (found := record_findings(r.get("train")))
                }
            ),
            "stats": stats,
            "commits": sorted({r["commit"] for r in recs}),
            "hardware": sorted({_hardware(r) for r in recs}),
            "traces": [r.get("trace", []) for r in ok],
            "paths": [r["_path"] for r in recs],
            "family": recs[0].get("method_family", ""),
            "kind": "finetuning" if any(problem_kind(r) == "finetuning" for r in recs) else "sampling",
            "optimum": _optimum_of(recs),
        }
    return out


def _optimum_of(recs: list[dict[str, Any]]) -> dict[str, float]:
    """The exact optimum a fine-tuning record carries (reward, KL), for the table's header line."""
    for r in recs:
        m = r.get("metrics", {})
        if "finetune/reward_optimum" in m:
            names = ("reward_optimum", "kl_optimum", "reward_base")
            return {k: m[f"finetune/{k}"] for k in names if f"finetune/{k}" in m}
    return {}


def _hardware(r: dict[str, Any]) -> str:
    h = r.get("hardware", {})
    cpu = f"{h.get('cpu', '?')}, {h.get('cpu_count', '?')} cores"
    return f"{h.get('backend', '?')}: {h.get('device_kind', '?')} ({cpu})"


def _fmt(stat: tuple[float, float, float] | None, statistic: str = "mean") -> str:
    if stat is None or not math.isfinite(stat[0]):
        return "—"
    mean, lo, hi = stat
    mark = " (median)" if statistic == "median" else ""
    if lo == hi:
        return f"{mean:.3g}{mark}"
    return f"{mean:.3g}{mark} [{lo:.3g}, {hi:.3g}]"


def _floor_check(target: str, rows: list[tuple[tuple, dict]]) -> list[str]:
    """Lines stating each particle metric's noise floor at the evaluation size beside the best
    published value, and whether the metric can rank methods at that size."""
    lines = []
    for key in published(target)[0]:
        floors = [a["stats"][f"{key}/noise_floor"][0] for _, a in rows if f"{key}/noise_floor" in a["stats"]]
        floors = [f for f in floors if math.isfinite(f)]
        if not floors:
            continue
        best = best_published(target, key)
        floor = float(np.median(floors))
        size = [a["stats"].get(s) for _, a in rows for s in (f"{key}/num_samples", "eval/reference_rows")]
        rows_used = next((int(s[0]) for s in size if s), None)
        verdict = (
            "below it: the metric can rank methods down to the floor"
            if floor < best["value"]
            else "**not below it: at this size the metric cannot rank methods near the published value**"
        )
        lines.append(
            f"- {key}: noise floor {floor:.3g} at {rows_used or '?'} rows (reference against reference); "
            f"best published {best['value']:.3g} ± {best['std']:.2g} ({best['method']}): {verdict}."
        )
    if lines:
        lines.insert(0, "Noise floors against the best published values:")
    return lines


def _table_for(
    target: str, rows: list[tuple[tuple, dict]], columns: tuple[tuple[str, str, bool], ...] = COLUMNS
) -> str:
    particles = columns is COLUMNS and any("energy_w2" in a["stats"] for _, a in rows)
    if particles:
        columns = PARTICLE_COLUMNS
    present = [c for c in columns if any(c[0] in agg["stats"] for _, agg in rows)]
    sort_key = (
        columns[0][0]
        if any(columns[0][0] in a["stats"] for _, a in rows)
        else (present[0][0] if present else None)
    )

    def order(item):
        stat = item[1]["stats"].get(sort_key) if sort_key else None
        return (math.inf if stat is None or not math.isfinite(stat[0]) else stat[0], item[0][2])

    head = ["method", "budget", "ok/seeds", "accuracy failed"] + [t for _, t, _ in present]
    floors = [FLOORS[k] for k, _, _ in present if k in FLOORS]
    head += [f"floor: {f.rsplit('/', 1)[0]}" for f in floors]
    head += [t for _, t in COST_COLUMNS]
    lines = [f"### {target}", ""]
    optimum = next((a["optimum"] for _, a in rows if a.get("optimum")), {})
    if optimum:
        lines += [
            "Exact optimum of this λ: E*[r] = {:.4g}, KL(p*‖p_data) = {:.4g}; "
            "pretrained model E_data[r] = {:.4g}. "
            "Objective in tilting units (nats), J = λE[r] − KL_path = mean log w ≤ log Z.".format(
                optimum.get("reward_optimum", math.nan),
                optimum.get("kl_optimum", math.nan),
                optimum.get("reward_base", math.nan),
            ),
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes, accuracy_notes, collapse_notes, finding_notes = [], [], [], []
    for (_suite, _t, method, budget), agg in sorted(rows, key=order):
        st = agg["status"]
        how = agg.get("statistic", "mean")
        failed = agg.get("accuracy_failed", 0)
        cells = [
            f"`{method}`",
            budget,
            f"{st['ok']}/{agg['n_seeds']}",
            f"{failed}/{st['ok']}" if failed else "0",
        ]
        cells += [_fmt(agg["stats"].get(k), how) for k, _, _ in present]
        cells += [_fmt(agg["stats"].get(f), how) for f in floors]
        cells += [_fmt(agg["stats"].get(k), how) for k, _ in COST_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
        if st["ok"] < agg["n_seeds"]:
            notes.append(
                f"- `{method}`: "
                + ", ".join(f"{v} {k}" for k, v in st.items() if v and k != "ok")
                + (f" — {agg['messages'][0][:160]}" if agg["messages"] else "")
            )
        for reason in agg.get("accuracy_reasons", []):
            accuracy_notes.append(f"- `{method}` ({budget}), {reason[:200]}")
        for warning in agg.get("collapse_warnings", []):
            collapse_notes.append(f"- `{method}` ({budget}), {warning}")
        for finding in agg.get("findings", []):
            finding_notes.append(f"- `{method}` ({budget}), {finding[:240]}")
    cited = published_lines(target)
    if cited:
        lines += ["", *cited]
    if particles:
        lines += ["", *_floor_check(target, rows)]
    if notes:
        lines += ["", "Cells that did not finish ok:", *notes]
    if accuracy_notes:
        lines += [
            "",
            "Cells that ran but whose accuracy **failed** (`benchmarks/metrics/accuracy.py`; rows mixing "
            "failed and working seeds show the median [min, max]):",
            *accuracy_notes,
        ]
    if collapse_notes:
        lines += [
            "",
            "Mode-collapse warnings (reverse ESS high, forward ESS or mode coverage low):",
            *collapse_notes,
        ]
    if finding_notes:
        lines += [
            "",
            "What training showed (`benchmarks/grid/findings.py`, first chunk where each diagnostic fired):",
            *finding_notes,
        ]
    return "\n".join(lines)


def suite_coverage(suite: str, records: list[dict[str, Any]]) -> str | None:
    """For a shipped suite, a line saying how many of its cells have a record (and, when some are
    missing, that the section is partial and how to finish it); None for a user's own suite."""
    if suite not in suite_names():
        return None
    expected = {c.id for c in load_suite(suite).cells()}
    have = {Cell.of_record(r).id for r in records}
    done = len(expected & have)
    if done == len(expected):
        return f"- cells: all {done} of the suite recorded"
    return (
        f"- **partial section**: {done} of the suite's {len(expected)} cells recorded, "
        f"{len(expected) - done} still to run (`tiltbench benchmark --suite {suite}` runs only those); "
        "cross-method comparisons cover only the recorded cells"
    )


def over_budget(records: list[dict[str, Any]], tolerance: float = OVER_BUDGET_TOLERANCE) -> str | None:
    """A line naming the (method, target) pairs whose cells spent more than `(1 + tolerance)` times
    their evaluation budget (`budget_spent.spent_ratio`), with how many cells and the range of the
    ratio; None when every cell kept to its budget. An equal-budget comparison is only as equal as
    this line is short: a baseline that plans its work from a pilot (NUTS) or a learned sampler whose
    first training chunk is dearer than the budget can overshoot. Cells whose budget rule found the
    budget too small for its minimum work (`budget_plan.feasible` false, at the first plan or the
    re-plan after a warm-up) are counted as infeasible: they overshoot by construction."""
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    infeasible: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        ratio = (r.get("budget_spent") or {}).get("spent_ratio")
        if ratio is not None and ratio > 1.0 + tolerance:
            pair = (r["method"], r["target"])
            ratios[pair].append(float(ratio))
            plan = r.get("budget_plan") or {}
            infeasible[pair] += (
                plan.get("feasible") is False or (plan.get("replanned") or {}).get("feasible") is False
            )
    if not ratios:
        return None
    parts = []
    for (method, target), rs in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        low, high = f"{min(rs):.2f}", f"{max(rs):.2f}"
        span = f"{low}×" if low == high else f"{low}–{high}×"
        n_inf = infeasible[(method, target)]
        why = "" if not n_inf else f"; {'all' if n_inf == len(rs) else n_inf} infeasible"
        parts.append(f"`{method}` on {target} ({len(rs)} cell{'s' if len(rs) > 1 else ''}, {span}{why})")
    defined = (
        "; infeasible: the budget does not pay for the method's minimum work, `budget_plan.feasible` false"
        if any(infeasible.values())
        else ""
    )
    return (
        f"- **over budget** (spent more than {1 + tolerance:g}× `max_evals`; the rows still count "
        f"every evaluation spent{defined}): {', '.join(parts)}"
    )


def _existing_figures(figure_dir: Path, targets: Iterable[str]) -> list[str]:
    """The figures already under `figure_dir` for `targets`, in `make_figures`' order."""
    return [
        str(figure_dir / f"{t}_{suffix}.png")
        for t in sorted(targets)
        for suffix in ("budget", "cost", "samples", "energy")
        if (figure_dir / f"{t}_{suffix}.png").is_file()
    ]


def build_leaderboard(
    runs_dir: str = "results/runs",
    out_dir: str = "results",
    *,
    figures: bool | Iterable[str] = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write `leaderboard.md`, `leaderboard.csv` and figures from the records; returns a summary.

    The tables always cover every suite directory under `runs_dir` (a run of one suite never drops
    the other sections). `figures`: True redraws every suite's figures, False none, a collection of
    suite names only those (the others keep their figures on disk and their links). A file under
    `runs_dir` that is not a valid record of its section is skipped with a warning naming it
    (`log`, default stderr); the summary lists them under `"skipped"`. Both tables are written
    atomically, and not at all when no valid record is found (ValueError: nothing would replace them).
    """
    runs = Path(runs_dir)
    warn = log or (lambda text: print(f"warning: {text}", file=sys.stderr))
    suites = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.exists() else []
    redraw = (set(suites) if figures else set()) if isinstance(figures, bool) else set(figures)
    out = Path(out_dir)
    ensure_writable(out)
    md = [
        "# tiltbench leaderboard",
        "",
        "Generated by `make leaderboard` from the per-cell records under "
        f"`{runs_dir}/`; do not edit by hand. Entries are the mean over seeds with a 95% "
        "percentile-bootstrap interval of the mean in brackets (one seed: no interval); where some "
        "seeds' accuracy failed (|log Z error| > 10 nats, ≤ 5 effective draws in reverse or forward ESS, "
        "or mode coverage < 0.5: `benchmarks/metrics/accuracy.py`), the median and [min, max] instead, "
        'marked (median), and the "accuracy failed" column counts those seeds. Sample metrics are on the '
        'raw draws; the "weighted" columns are the same metric on the draws resampled by their importance '
        "weights (`benchmarks/metrics/weighted.py`; weighted samplers only). Rows are ranked by the "
        "log-Z error, not by a sample metric. Noise floors are "
        "the same metric between two independent reference sets of the evaluation size. Costs count "
        "energy and energy-gradient evaluations spent in training plus sampling. Metric definitions: "
        "`benchmarks/metrics/` and the README.",
        "",
    ]
    csv_buf = io.StringIO()
    writer = csv.writer(csv_buf)
    writer.writerow(
        [
            "suite",
            "target",
            "method",
            "budget",
            "metric",
            "mean",
            "ci_low",
            "ci_high",
            "n_ok",
            "n_seeds",
            "statistic",
            "n_accuracy_failed",
            "commit",
            "hardware",
        ]
    )
    summary: dict[str, Any] = {"suites": {}, "skipped": []}

    def skip(err: RecordError) -> None:
        summary["skipped"].append(str(err))
        warn(f"skipped {err}")

    for s in suites:
        records = section_records(runs, s, on_bad=skip)
        if not records:
            continue
        agg = aggregate(records)
        commits = sorted({c for a in agg.values() for c in a["commits"]})
        hardware = sorted({h for a in agg.values() for h in a["hardware"]})
        md += [
            f"## Suite `{s}`",
            "",
            f"- records: {len(records)} cells; commit(s): {', '.join(commits)}",
            f"- hardware: {'; '.join(hardware)}",
        ]
        if len(commits) > 1:
            md.append("- **warning**: records come from more than one commit; compare rows with care.")
        if (coverage := suite_coverage(s, records)) is not None:
            md.append(coverage)
        if (over := over_budget(records)) is not None:
            md.append(over)
        md.append("")
        by_target: dict[str, list] = defaultdict(list)
        for key, a in agg.items():
            by_target[key[1]].append((key, a))
            for metric, (mean, lo, hi) in sorted(a["stats"].items()):
                writer.writerow(
                    [
                        *key[:1],
                        key[1],
                        key[2],
                        key[3],
                        metric,
                        mean,
                        lo,
                        hi,
                        a["status"]["ok"],
                        a["n_seeds"],
                        "median_min_max" if a["statistic"] == "median" else "mean_bootstrap95",
                        a["accuracy_failed"],
                        ";".join(a["commits"]),
                        ";".join(a["hardware"]),
                    ]
                )
        sampling = sorted(t for t, rows in by_target.items() if rows[0][1]["kind"] != "finetuning")
        finetuning = sorted(t for t, rows in by_target.items() if rows[0][1]["kind"] == "finetuning")
        for target in sampling:
            md += [_table_for(target, by_target[target]), ""]
        cross = cross_target_summary([r for r in records if problem_kind(r) != "finetuning"])
        if cross is not None:
            md += [*summary_table(cross), ""]
        if finetuning:
            md += [
                "### Reward fine-tuning tasks",
                "",
                "Separate from the sampling tables: the base is a pretrained flow, the target its reward "
                "tilt p* ∝ p_data e^{λr}. Columns: `benchmarks/metrics/finetune.py` "
                "(path KL = mean(λr − log w), objective gap = log Z − mean log w ≥ 0, "
                "reward gap to the exact E*[r]).",
                "",
            ]
            for target in finetuning:
                md += [_table_for(target, by_target[target], FINETUNE_COLUMNS), ""]
        if s in redraw:
            from benchmarks.reports.figures import make_figures

            figs = make_figures(s, agg, out / "figures" / s)
            if cross is not None:
                figs.append(str(profile_figure(cross, out / "figures" / s / "profile.png", f"suite {s}")))
        else:
            figs = _existing_figures(out / "figures" / s, by_target)
            if cross is not None and (out / "figures" / s / "profile.png").is_file():
                figs.append(str(out / "figures" / s / "profile.png"))
        if figs:
            md += [
                "Figures: " + ", ".join(f"[{Path(f).name}]({Path(f).relative_to(out)})" for f in figs),
                "",
            ]
        summary["suites"][s] = {"records": len(records), "commits": commits, "cells": len(agg)}
    if not summary["suites"]:
        raise ValueError(
            f"no valid records under {runs_dir}/ (suite directories: {suites or 'none'}): "
            f"{out / 'leaderboard.md'} left as it is"
        )
    atomic_write_text(out / "leaderboard.md", "\n".join(md) + "\n")
    atomic_write_text(out / "leaderboard.csv", csv_buf.getvalue())
    summary["markdown"] = str(out / "leaderboard.md")
    summary["csv"] = str(out / "leaderboard.csv")
    return summary
