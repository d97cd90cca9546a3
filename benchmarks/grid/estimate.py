"""The projected wall time of a suite before it runs (`tiltbench benchmark --estimate`).

Rates come from records already on disk (every suite under the runs root), never from guesses. For
each (method, target), over its `ok` records (those measured on this machine's backend when there
are any, else all, flagged):

    seconds per training step = time/train_s / cost/train_steps     (median over records)
    fixed seconds per cell    = wall_time_s - time/train_s          (median: compilation, probe,
                                sampling, reference sets, metrics; itemised in a record's `time`)

A cell to run is projected as `fixed + steps × seconds per step`, with `steps` the budget's step cap
or, under an evaluation budget, the steps it affords at the measured evaluations per step (energy +
gradient evaluations of training / steps), whichever is smaller; under a wall cap, training stops at
the first chunk boundary past it, so `steps` is at most `chunk_size · (⌊cap / (chunk_size · seconds
per step)⌋ + 1)`: one whole chunk even when a single chunk outlasts the cap; a method
without training steps (MCMC, SMC, AIS) is projected by its median wall time (at the configuration
it ran; under an evaluation budget it scales its work to the budget, so this can be low). Cells whose
(method, target) has no record fall back on the trials of its tuning file
(`benchmarks/grid/configs/tuned/`, which time each trial's training; flagged "from tuning trials": the
per-step rate is the trials' median, the fixed cost their wall time outside training, a lower bound,
since a cell adds reference sets and metrics); with neither they are listed as unmeasured, not
guessed. The cells to run are those the
run itself would run (`runner.plan_cells`: no record, a corrupt one, changed inputs, `--force`,
`--retry`), so the estimate and the run agree; the estimate moves no file.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import samplers
from benchmarks.grid.records import iter_records
from benchmarks.grid.suites import Cell, Suite

__all__ = ["Rate", "SuiteEstimate", "estimate_suite", "measured_rates", "tuning_rates"]


class Rate(NamedTuple):
    """Measured cost of one (method, target): median seconds per step, fixed seconds per cell."""

    seconds_per_step: float
    evals_per_step: float
    fixed_s: float
    wall_s: float
    records: int
    other_hardware: bool  # measured on another backend only
    source: str = "records"  # or "tuning trials" (`tuning_rates`)


class SuiteEstimate(NamedTuple):
    """`estimate_suite`'s answer: per (method, target) rows and the totals."""

    rows: list[dict[str, Any]]
    selected: int
    done: int
    to_run: int
    unmeasured: int
    projected_s: float
    reasons: str = ""  # why the cells run, e.g. " (3 new, 2 inputs changed)"

    def lines(self) -> list[str]:
        """A readable report: one row per (method, target) with cells to run, then the totals."""
        out = [
            "| method | target | cells to run | s/step | fixed s/cell | projected s/cell | total s "
            "| records |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            if r["rate"] is None:
                out.append(f"| {r['method']} | {r['target']} | {r['cells']} | — | — | unmeasured | — | 0 |")
                continue
            rate = r["rate"]
            flag = " (other hardware)" if rate.other_hardware else ""
            flag += " (from tuning trials)" if rate.source != "records" else ""
            out.append(
                f"| {r['method']} | {r['target']} | {r['cells']} | {rate.seconds_per_step:.3g} | "
                f"{rate.fixed_s:.3g} | {r['per_cell_s']:.3g} | {r['total_s']:.3g} | {rate.records}{flag} |"
            )
        out += [
            "",
            f"{self.selected} cells selected, {self.done} done, {self.to_run} to run{self.reasons}; "
            f"{self.to_run - self.unmeasured} with measured rates project to {self.projected_s / 3600:.2f} h "
            f"of serial wall time on this hardware ({self.unmeasured} cells unmeasured: no record or "
            "timed tuning trial of their method and target yet).",
        ]
        return out


def measured_rates(runs_root: str | os.PathLike, backend: str | None = None) -> dict[tuple[str, str], Rate]:
    """Median per-step and fixed seconds per (method, target) from the `ok` records under `runs_root`."""
    samples: dict[tuple[str, str], list[tuple[bool, float, float, float, float]]] = defaultdict(list)
    for rec in iter_records(runs_root, on_bad=lambda err: None):  # `tiltbench doctor` lists bad ones
        metrics = rec.get("metrics", {})
        if rec.get("status") != "ok" or "time/train_s" not in metrics:
            continue
        train_s, steps = float(metrics["time/train_s"]), float(metrics.get("cost/train_steps", 0.0))
        wall = float(rec.get("wall_time_s", 0.0))
        same = backend is None or rec.get("hardware", {}).get("backend") == backend
        train_cost = rec.get("cost_train") or {}
        evals = float(train_cost.get("energy_evals", 0.0)) + float(train_cost.get("grad_evals", 0.0))
        per_step = (train_s / steps, evals / steps) if steps else (0.0, 0.0)
        samples[(rec["method"], rec["target"])].append((same, *per_step, wall - train_s, wall))
    rates = {}
    for key, rows in samples.items():
        same = [r for r in rows if r[0]]
        use = same or rows
        rates[key] = Rate(
            statistics.median(r[1] for r in use),
            statistics.median(r[2] for r in use),
            statistics.median(r[3] for r in use),
            statistics.median(r[4] for r in use),
            len(use),
            not same,
        )
    return rates


def tuning_rates(
    tuned_dir: str | os.PathLike | None = None, backend: str | None = None
) -> dict[tuple[str, str], Rate]:
    """Rates of the (method, target) pairs whose tuning file times its trials (`tune._run_trial`):
    median seconds and evaluations per training step over the trials that trained, and their median
    wall time outside training as the fixed cost (a lower bound for a cell's)."""
    from benchmarks.grid.tune import TUNED_DIR

    rates = {}
    for path in sorted(Path(tuned_dir or TUNED_DIR).glob("*__*.json")):
        if path.name.endswith(".partial.json"):
            continue
        try:
            rec = json.loads(path.read_text())
            trials = [t for t in rec["trials"] if t.get("status") == "ok" and t.get("train_steps")]
            if not trials:
                continue
            same = backend is None or rec.get("hardware", {}).get("backend") == backend
            rates[(rec["method"], rec["target"])] = Rate(
                statistics.median(t["train_s"] / t["train_steps"] for t in trials),
                statistics.median(t["train_evals"] / t["train_steps"] for t in trials),
                statistics.median(t["wall_s"] - t["train_s"] for t in trials),
                statistics.median(t["wall_s"] for t in trials),
                len(trials),
                not same,
                "tuning trials",
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # `tiltbench tune` names a bad tuning file; the estimate just does without it
    return rates


def _projected(rate: Rate, budget: Any, target: str) -> float:
    """fixed + steps × s/step, steps capped by the evaluation budget and the wall cap (module docstring)."""
    steps = float(budget.train_steps)
    max_evals = budget.evals_for(target)
    if max_evals is not None and rate.evals_per_step > 0:
        steps = min(steps, max_evals / rate.evals_per_step)
    cap = budget.train_cap_for(target)
    if cap is not None and rate.seconds_per_step > 0:  # stops at the first chunk boundary past the cap
        chunk_s = budget.chunk_size * rate.seconds_per_step
        steps = min(steps, budget.chunk_size * (math.floor(cap / chunk_s) + 1))
    return rate.fixed_s + steps * rate.seconds_per_step


def estimate_suite(
    suite: Suite,
    cells: Iterable[Cell],
    out_dir: str | os.PathLike,
    runs_root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    retry: Iterable[str] = (),
    log: Callable[[str], None] = print,
    tuned_dir: str | os.PathLike | None = None,
) -> SuiteEstimate:
    """Project the wall time of the cells of `cells` that a run would run (`runner.plan_cells` with the
    same `force` and `retry`), from the rates measured by the records under `runs_root` (default
    `out_dir`), or else from the trials of the pair's tuning file in `tuned_dir` (default: the shipped
    ones). A corrupt record is reported through `log` (and left where it is)."""
    import jax

    from benchmarks.grid.runner import plan_cells, plan_reasons

    rates = {
        **tuning_rates(tuned_dir, jax.default_backend()),
        **measured_rates(runs_root or out_dir, jax.default_backend()),
    }
    cells = list(cells)
    pending = plan_cells(suite, out_dir, cells, force=force, retry=retry, log=log, quarantine_corrupt=False)
    todo = [p.cell for p in pending]
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in todo:
        groups[(c.method, c.target)].append(c)
    rows, projected, unmeasured = [], 0.0, 0
    for (method, target), group in sorted(groups.items()):
        rate = rates.get((method, target))
        if rate is None:
            unmeasured += len(group)
            rows.append({"method": method, "target": target, "cells": len(group), "rate": None})
            continue
        trains = samplers.get(method).train_steps is None
        budgets = [suite.budget(c.budget).for_cell(method, target) for c in group]
        per_cell = [_projected(rate, b, target) if trains else rate.wall_s for b in budgets]
        projected += sum(per_cell)
        rows.append(
            {
                "method": method,
                "target": target,
                "cells": len(group),
                "rate": rate,
                "per_cell_s": statistics.mean(per_cell),
                "total_s": sum(per_cell),
            }
        )
    return SuiteEstimate(
        rows, len(cells), len(cells) - len(todo), len(todo), unmeasured, projected, plan_reasons(pending)
    )
