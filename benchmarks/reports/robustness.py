"""The robustness report: did each learned method diverge, and how close did it get, per target.

`robustness_report(sections)` reads labelled record sets (a label and a directory of records of any
suite, the robustness suite's records last) and writes, per target and method, over the seeds:

- **runs**: `ok/seeds`, and the diverged (non-finite training, a failure of the method) and error
  (a failure of the harness) counts;
- **accuracy failed**: seeds whose accuracy flag failed (`benchmarks/metrics/accuracy.py`: |log Z error|
  above its bound, too few effective draws in reverse or forward ESS, mode coverage too low);
- **|log Ẑ − log Z|**: median [min, max] over the `ok` seeds, on the cell's fresh evaluation samples
  (never the training probe);
- **ELBO gap**: median log Z − ELBO over the `ok` seeds (a lower-variance view of how far training
  got than the importance-sampling error; published values use the same definition);
- **eq. W2 and energy W2** (particle targets, which have no reference log Z): median [min, max] over
  the `ok` seeds of the record's `eq_w2` and `energy_w2` (the definitions of the published values listed
  under the target), with the median fraction of draws above the energy clip when any are;
- **reverse ESS**: median over the `ok` seeds;
- **evaluations**: the median energy + gradient evaluations a seed spent (training and the final
  sampling; the tuning search is counted apart, in the record's `cost/tuning_evals`) and the median
  training steps they bought (the budget stops a trajectory method long before the step cap);
- the training findings of the seeds (e.g. a buffer ESS collapse, `benchmarks/grid/findings.py`).

A method in the tally whose seeds' estimates carry a standard error above the threshold is marked: its
error fell under the threshold on those seeds, but the estimate cannot resolve it (typically a
reverse ESS of a few draws), so it is not a measurement at that precision.

Baselines (registered methods with a fixed schedule of work: SMC, AIS, MCMC) run in the same suite
at the same evaluation budgets are listed below the learned methods, marked, and left out of the
tally: they are the yardstick. Each target ends with the published values of the same metric
(`benchmarks/reports/published.py`).

Each label's column states the budget and sample count its records ran with, since earlier sets
(e.g. the `default` suite before and after the authors' recipes) ran smaller budgets than the
robustness suite. Last, the tally the robustness suite is judged by: per target, the methods whose
|log Ẑ − log Z| ≤ `threshold` on every seed, and every method that diverged anywhere.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import samplers
from benchmarks.grid.findings import record_findings, regressions
from benchmarks.grid.records import iter_records
from benchmarks.grid.tune import edge_keys, tuned_file, tuned_overrides
from benchmarks.reports.leaderboard import median_range
from benchmarks.reports.published import published_lines

__all__ = ["RecordSet", "is_baseline", "robustness_report", "summarise", "superseded", "tuning_lines"]

RecordSet = tuple[str, str | Path]  # (label, directory of records)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def is_baseline(method: str) -> bool:
    """Whether `method` is a registered baseline (a fixed schedule of work instead of training: MCMC,
    SMC, AIS); an unregistered name counts as learned."""
    try:
        return samplers.get(method).train_steps is not None
    except (KeyError, ValueError):
        return False


def _spent(record: dict[str, Any]) -> float | None:
    spent = record.get("budget_spent", {}).get("spent_evals")
    if spent is None:
        m = record.get("metrics", {})
        spent = (m.get("cost/energy_evals") or 0) + (m.get("cost/grad_evals") or 0) or None
    return _num(spent)


def superseded(records: Sequence[dict[str, Any]], tuned_dir: str | Path | None = None) -> int:
    """How many of one (method, target)'s records ran with tuned values that the pair's tuning file
    (in `tuned_dir`: the shipped one) no longer chooses: a later search moved them, and those cells
    are due to run again. The file is read once; a record without its config says nothing and is
    not counted."""
    if not records:
        return 0
    try:
        current = tuned_overrides(records[0]["method"], records[0]["target"], tuned_dir)[0]
    except ValueError:
        return 0
    return sum(isinstance(r.get("config"), dict) and r["config"].get("tuned", {}) != current for r in records)


def summarise(
    records: Iterable[dict[str, Any]], tuned_dir: str | Path | None = None, check_tuning: bool = False
) -> dict[tuple[str, str], dict[str, Any]]:
    """`{(target, method): summary}` over the seeds of each (target, method) (see the module doc);
    with `check_tuning`, `superseded` counts the seeds run with tuned values that the tuning files
    in `tuned_dir` no longer choose."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["target"], r["method"])].append(r)
    out = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r["status"] == "ok"]
        errors = [_num(r.get("metrics", {}).get("logZ/error")) for r in ok]
        ess = [_num(r.get("metrics", {}).get("ess/reverse")) for r in ok]
        gaps = [e for r in ok if (e := _num(r.get("metrics", {}).get("logZ/elbo_gap"))) is not None]
        spent = [e for e in map(_spent, ok) if e is not None]
        steps = [e for r in ok if (e := _num(r.get("metrics", {}).get("cost/train_steps"))) is not None]
        particle = {
            key: [e for r in ok if (e := _num(r.get("metrics", {}).get(key))) is not None]
            for key in ("eq_w2", "energy_w2", "energy/clipped_fraction")
        }
        budget = recs[0].get("budget", {})
        out[key] = {
            "seeds": len(recs),
            "ok": len(ok),
            "diverged": sum(r["status"] == "diverged" for r in recs),
            "error": sum(r["status"] == "error" for r in recs),
            "accuracy_failed": sum(r.get("accuracy", {}).get("status") == "failed" for r in ok),
            "log_z_error": median_range(e for e in errors if e is not None),
            "log_z_errors": errors,
            "log_z_ses": [_num(r.get("metrics", {}).get("logZ/se")) for r in ok],
            "reverse_ess": median_range(e for e in ess if e is not None)[0],
            "elbo_gap": median_range(gaps)[0] if gaps else None,
            "evals": median_range(spent)[0] if spent else None,
            "steps": median_range(steps)[0] if steps else None,
            "eq_w2": median_range(particle["eq_w2"]) if particle["eq_w2"] else None,
            "energy_w2": median_range(particle["energy_w2"]) if particle["energy_w2"] else None,
            "above_clip": (
                median_range(particle["energy/clipped_fraction"])[0]
                if particle["energy/clipped_fraction"]
                else None
            ),
            "findings": sorted({f for r in recs for f in record_findings(r.get("train"))}),
            "regressed": sum(bool(regressions((r.get("train") or {}).get("info", {}))) for r in ok),
            "budget": budget.get("name", ""),
            "train_steps": budget.get("train_steps"),
            "num_samples": recs[0].get("num_samples"),
            "commits": sorted({str(r.get("commit", ""))[:7] for r in recs}),
            "superseded": superseded(recs, tuned_dir) if check_tuning else 0,
        }
    return out


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.3g}"


def _spread(s: dict[str, Any], triple: tuple[float, float, float]) -> str:
    """`median [min, max]` over the ok seeds (the median alone for one seed or a non-finite median)."""
    med, lo, hi = triple
    return _fmt(med) if s["ok"] < 2 or not math.isfinite(med) else f"{_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}]"


def _particle(s: dict[str, Any]) -> str:
    """eq. W2 and energy W2 of a target without a reference log Z (and the draws above the energy clip)."""
    parts = [
        f"{name} {_spread(s, s[key])}"
        for key, name in (("eq_w2", "eq. W2"), ("energy_w2", "energy W2"))
        if s.get(key)
    ]
    if s.get("above_clip"):
        parts.append(f"{100 * s['above_clip']:.3g} % above the energy clip")
    return ", ".join(parts)


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    err = _spread(s, s["log_z_error"])
    if err == "—" and _particle(s):
        err = _particle(s)
    runs = f"{s['ok']}/{s['seeds']}"
    if s["diverged"] or s["error"]:
        runs += f" ({s['diverged']} diverged, {s['error']} error)"
    flagged = f", {s['accuracy_failed']} flagged" if s["accuracy_failed"] else ""
    flagged += f", {s['superseded']} with superseded tuning" if s.get("superseded") else ""
    evals = f"; {s['evals']:.2g} evals" if s.get("evals") else ""
    evals += f" ({s['steps']:.0f} steps)" if s.get("steps") else ""
    gap = f"; ELBO gap {_fmt(s['elbo_gap'])}" if s.get("elbo_gap") is not None else ""
    return f"{err}{gap}; ESS {_fmt(s['reverse_ess'])}{evals}; {runs}{flagged}"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def tuning_lines(
    methods: Sequence[str], targets: Sequence[str], directory: str | Path | None = None
) -> list[str]:
    """A Markdown table of the chosen settings per method (rows) and target (columns) from the tuning
    files of `tiltbench tune` (`directory`: the shipped ones), with each search's trial count and
    evaluations; "—" where a pair has no tuning file; "(edge)" after a value that is the largest or
    smallest of its key's trials (`edge_keys`: the search did not bracket it)."""
    lines = ["| method | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for method in methods:
        cells = []
        for target in targets:
            path = tuned_file(method, target, directory)
            if not path.is_file():
                cells.append("—")
                continue
            rec = json.loads(path.read_text())
            edge = edge_keys(rec)
            chosen = (
                ", ".join(
                    f"{_short(k)} {v}" + (" (edge)" if k in edge else "")
                    for k, v in sorted(rec["chosen"].items())
                )
                or "failed"
            )
            cells.append(f"{chosen} ({len(rec['trials'])} trials, {rec['tuning_evals']:.2g} evals)")
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return lines


def _beside_baselines(
    target: str, judged: dict[tuple[str, str], dict[str, Any]], learned: list[str], baselines: list[str]
) -> str:
    """`; best learned median … vs baselines …` for the tally line of `target` (empty without both)."""

    def median(m: str) -> float | None:
        s = judged.get((target, m))
        return s["log_z_error"][0] if s and s["ok"] and math.isfinite(s["log_z_error"][0]) else None

    ranked = sorted((e, m) for m in learned if (e := median(m)) is not None)
    base = [f"`{m}` {_fmt(e)}" for m in baselines if (e := median(m)) is not None]
    if not ranked or not base:
        return ""
    return f"; best learned median {_fmt(ranked[0][0])} (`{ranked[0][1]}`) vs baselines {', '.join(base)}"


def _tally_line(
    target: str,
    judged: dict[tuple[str, str], dict[str, Any]],
    learned: list[str],
    methods: list[str],
    passed: list[str],
    threshold: float,
) -> str:
    runs = [judged[(target, m)] for m in learned if (target, m) in judged]
    if not runs:
        return f"- {target}: no learned method recorded yet"
    counted = f"{len(runs)} learned method(s) recorded"
    if not any(e is not None for s in runs for e in s["log_z_errors"]):
        return f"- {target}: {counted}; no |log Ẑ − log Z| (no reference log Z): judged by divergence only"
    named = []
    for m in passed:
        loose = sum(se is not None and se > threshold for se in judged[(target, m)]["log_z_ses"])
        named.append(
            f"`{m}`" + (f" ({loose} seed(s) with a standard error above {threshold})" if loose else "")
        )
    return (
        f"- {target}: {len(passed)} of {counted} with |log Ẑ − log Z| ≤ {threshold} on every seed"
        + (f" ({', '.join(named)})" if named else "")
        + _beside_baselines(target, judged, learned, [m for m in methods if m not in learned])
    )


def robustness_report(
    sections: Sequence[RecordSet],
    *,
    threshold: float = 0.2,
    tuned_dir: str | Path | None = None,
) -> tuple[str, dict[str, Any]]:
    """`(markdown, json-able summary)` of the labelled record sets; the last set is the one judged,
    followed by the tuned settings of its pairs (`tuning_lines`, from `tuned_dir`).

    Raises:
        ValueError: with no record sets, or when the judged set has no records.
    """
    if not sections:
        raise ValueError("robustness_report needs at least one (label, directory) record set")
    judged_label = sections[-1][0]
    summaries = {
        label: summarise(iter_records(path), tuned_dir, check_tuning=label == judged_label)
        for label, path in sections
    }
    judged = summaries[judged_label]
    if not judged:
        raise ValueError(f"no records under {sections[-1][1]} (the judged set {judged_label!r})")
    targets = sorted({t for t, _ in judged})
    methods = sorted({m for _, m in judged}, key=lambda m: (is_baseline(m), m))
    learned = [m for m in methods if not is_baseline(m)]
    lines = [
        "# Robustness of the learned methods",
        "",
        "Generated by `tiltbench robustness-report` from the records; do not edit by hand. Each entry: "
        "|log Ẑ − log Z| median [min, max] over the seeds that ran (fresh evaluation samples; on a "
        "target without a reference log Z, eq. W2 and energy W2 instead, with the draws above the energy "
        "clip), the median ELBO gap log Z − ELBO, the median reverse ESS, the median energy + gradient "
        "evaluations spent and training steps taken, ok/seeds with the diverged and error counts, and "
        "the seeds whose accuracy flag failed (`benchmarks/metrics/accuracy.py`). Baselines (SMC, AIS) "
        "ran at the same budgets and are not judged; SMC's weights are dependent through resampling "
        "(`log w_i = log Ẑ + log N W_i`), so its 'ELBO gap' is not that of a variational bound.",
        "",
        "Record sets:",
    ]
    for label, path in sections:
        sets = summaries[label].values()
        budgets = sorted({f"{s['budget']} ({s['train_steps']} steps)" for s in sets})
        samples = sorted({s["num_samples"] for s in sets if s["num_samples"] is not None})
        commits = sorted({c for s in sets for c in s["commits"]})
        lines.append(
            f"- **{label}**: `{path}`, {sum(s['seeds'] for s in sets)} records; budgets "
            f"{', '.join(budgets) or '—'}; {', '.join(map(str, samples)) or '—'} evaluation samples; "
            f"commit(s) {', '.join(commits) or '—'}"
        )
    for target in targets:
        lines += ["", f"## {target}", "", "| method | " + " | ".join(label for label, _ in sections) + " |"]
        lines.append("|---" * (len(sections) + 1) + "|")
        for method in methods:
            if (target, method) not in judged:
                continue
            cells = [_cell(summaries[label].get((target, method))) for label, _ in sections]
            name = f"`{method}` (baseline)" if is_baseline(method) else f"`{method}`"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        findings = {
            m: judged[(target, m)]["findings"] for m in methods if judged.get((target, m), {}).get("findings")
        }
        if findings:
            lines += ["", f"Training findings ({judged_label}):"]
            lines += [f"- `{m}`: {'; '.join(f)}" for m, f in findings.items()]
        cited = published_lines(target)
        if cited:
            lines += ["", *cited]
    tally = {
        t: sorted(
            m
            for m in learned
            if (s := judged.get((t, m)))
            and s["ok"] == s["seeds"]
            and all(e is not None and e <= threshold for e in s["log_z_errors"])
        )
        for t in targets
    }
    diverged = sorted({m for (t, m), s in judged.items() if (s["diverged"] or s["error"]) and m in learned})
    lines += ["", f"## Tally ({judged_label})", ""]
    lines += [_tally_line(t, judged, learned, methods, tally[t], threshold) for t in targets]
    lines.append(
        "- diverged or errored on some seed: "
        + (", ".join(f"`{m}`" for m in diverged) if diverged else "none")
    )
    regressed = sorted(
        {f"`{m}` on {t} ({s['regressed']}/{s['ok']})" for (t, m), s in judged.items() if s.get("regressed")}
    )
    lines.append(
        "- ok, but the training ELBO ended far below its best (training moved away from the target; "
        "`benchmarks/grid/findings.py`): " + (", ".join(regressed) if regressed else "none")
    )
    stale = sorted(
        f"`{m}` on {t} ({s['superseded']}/{s['seeds']})"
        for (t, m), s in judged.items()
        if s.get("superseded")
    )
    if stale:
        lines.append(
            "- ran with tuned values that a later search replaced (counted above as measured; the grid "
            "runs them again at the new values, `inputs changed`): " + ", ".join(stale)
        )
    lines += ["", "## Tuned settings", ""]
    lines += [
        "Chosen by `tiltbench tune` (`benchmarks/grid/configs/tuned/`; each file keeps every trial): "
        "the highest ELBO on fresh samples after a short run, the reverse ESS breaking ties within one "
        "standard error. A cell's record names the values it ran with (`config.tuned`) and counts the "
        "search's evaluations beside its own (`cost/tuning_evals`). Where the winning learning rate was the "
        "largest or smallest tried, the search went on outward by the declared extension "
        '(`benchmarks/grid/configs/search_spaces.json`) until an interior value won; "(edge)" marks a '
        "value still on the edge of everything tried.",
        "",
        *tuning_lines(methods, targets, tuned_dir),
    ]
    summary = {
        "threshold": threshold,
        "sets": [{"label": label, "path": str(path)} for label, path in sections],
        "judged": judged_label,
        "tally": tally,
        "diverged": diverged,
        "cells": {label: {f"{t}/{m}": s for (t, m), s in summ.items()} for label, summ in summaries.items()},
    }
    return "\n".join(lines) + "\n", summary
