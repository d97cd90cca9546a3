"""Wall caps converted into step caps once, so that a suite's records do not depend on the machine.

A suite's wall cap (`max_train_s`) stops a learned cell's training at the first chunk boundary past
that many seconds: on a loaded or slower machine the same cell trains fewer steps and its numbers
move. `derive_step_caps` converts, for every learned (method, target) of a budget with a wall cap,

    step cap = clamp(chunk_size · ⌊cap_s / (seconds per step · chunk_size)⌋, chunk_size, train_steps)

with the seconds per step measured by the records on disk (`estimate.measured_rates`, else the
pair's timed tuning trials, `estimate.tuning_rates`): the number of steps the cap allowed where the
rate was measured. `tiltbench step-caps --suite S --write` stores them in the suite file
(`budgets.<name>.step_caps`, with `_derived` notes naming the rates' hardware, their source and the
commit, which must hold all of the code: `derivation_commit`);
from then on the pair trains that many steps on any machine (`suites.Budget.for_cell`). Caps already
in the file are kept unless `redo`, so a committed grid's cells never change under it; a pair with no
rate keeps its wall cap and is listed, to be converted once it has been measured. So does a pair
whose records of this suite (`suites.Cell.path` under `runs_root`) ran under the wall cap: a cap
would change their inputs and the next run would train them again (`redo` converts it anyway).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import samplers
from benchmarks.grid.estimate import Rate, measured_rates, tuning_rates
from benchmarks.grid.records import REPO_ROOT, code_commit, uncommitted_code
from benchmarks.grid.suites import Cell, Suite

__all__ = ["StepCap", "derive_step_caps", "step_cap_lines", "write_step_caps"]


class StepCap(NamedTuple):
    """One learned (method, target) of a budget with a wall cap, and its step cap (None: no rate)."""

    budget: str
    method: str
    target: str
    cap_s: float
    rate: Rate | None
    steps: int | None
    kept: bool  # the suite file already had this cap (not recomputed)
    recorded: int = 0  # records of the pair that ran under the wall cap (then no cap is written)


def _steps(cap_s: float, seconds_per_step: float, chunk: int, train_steps: int) -> int:
    chunks = math.floor(cap_s / (seconds_per_step * chunk)) if seconds_per_step > 0 else train_steps
    return int(min(max(chunks, 1) * chunk, max(train_steps, chunk)))


def derive_step_caps(
    suite: Suite,
    runs_root: str | os.PathLike,
    *,
    tuned_dir: str | os.PathLike | None = None,
    backend: str | None = None,
    redo: bool = False,
) -> list[StepCap]:
    """The step cap of every learned (method, target, budget) of `suite` whose budget has a wall cap
    for the target (module docstring); rates from the records under `runs_root`, else the tuning
    trials in `tuned_dir` (default the shipped ones), on `backend` where measured there."""
    rates = {**tuning_rates(tuned_dir, backend), **measured_rates(runs_root, backend)}
    out = []
    for budget in suite.budgets:
        for method in suite.methods:
            if samplers.get(method).train_steps is not None:  # MCMC / SMC / AIS: no training steps
                continue
            for target in suite.targets:
                cap_s = budget.train_cap_for(target)
                if cap_s is None or suite.excluded(method, target, budget.name):
                    continue
                rate, have = rates.get((method, target)), budget.step_cap_for(method, target)
                if have is not None and not redo:
                    out.append(StepCap(budget.name, method, target, cap_s, rate, have, True))
                    continue
                recorded = 0 if redo else _recorded(runs_root, suite, method, target, budget.name)
                steps = (
                    None
                    if rate is None or recorded
                    else _steps(cap_s, rate.seconds_per_step, budget.chunk_size, budget.train_steps)
                )
                out.append(StepCap(budget.name, method, target, cap_s, rate, steps, False, recorded))
    return out


def _recorded(runs_root: str | os.PathLike, suite: Suite, method: str, target: str, budget: str) -> int:
    """How many of the suite's cells of the pair have a record on disk (they ran under the wall cap)."""
    cells = (Cell(method, target, budget, seed) for seed in suite.seeds)
    return sum(cell.path(runs_root, suite.name).is_file() for cell in cells)


def step_cap_lines(caps: list[StepCap]) -> list[str]:
    """A Markdown table of `derive_step_caps`'s answer and a one-line tally."""
    out = [
        "| budget | method | target | wall cap s | s/step | rate from | step cap |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in caps:
        rate = "—" if c.rate is None else f"{c.rate.seconds_per_step:.3g}"
        src = "—" if c.rate is None else f"{c.rate.records} {c.rate.source}"
        src += " (other hardware)" if c.rate is not None and c.rate.other_hardware else ""
        if c.recorded:
            steps = f"wall cap stays: {c.recorded} records ran under it (--redo converts and re-runs them)"
        elif c.steps is None:
            steps = "unmeasured: wall cap stays"
        else:
            steps = f"{c.steps}{' (kept)' if c.kept else ''}"
        out.append(f"| {c.budget} | {c.method} | {c.target} | {c.cap_s:g} | {rate} | {src} | {steps} |")
    n_new = sum(c.steps is not None and not c.kept for c in caps)
    n_kept = sum(c.kept for c in caps)
    n_held = sum(bool(c.recorded) for c in caps)
    n_none = sum(c.steps is None and not c.recorded for c in caps)
    out += [
        "",
        f"{len(caps)} learned pairs with a wall cap: {n_new} converted, {n_kept} kept, {n_none} unmeasured, "
        f"{n_held} left at the wall cap their records ran under.",
    ]
    return out


def write_step_caps(path: str | os.PathLike, caps: list[StepCap], provenance: str) -> int:
    """Store the caps in the suite file at `path` (`budgets.<name>.step_caps`, atomically), with
    `provenance` appended to the budget's `_derived` notes; returns the number of caps added."""
    from benchmarks.grid.records import atomic_write_text

    path = Path(path)
    raw: dict[str, Any] = json.loads(path.read_text())
    added: dict[str, int] = {}
    for c in caps:
        if c.steps is None or c.kept:
            continue
        raw["budgets"][c.budget].setdefault("step_caps", {})[f"{c.method}/{c.target}"] = c.steps
        added[c.budget] = added.get(c.budget, 0) + 1
    for name in added:
        table = raw["budgets"][name]["step_caps"]
        notes = table.setdefault("_derived", [])
        if provenance not in notes:
            notes.append(provenance)
        raw["budgets"][name]["step_caps"] = dict(sorted(table.items()))
    if added:
        atomic_write_text(path, json.dumps(raw, indent=2) + "\n")
    return sum(added.values())


def derivation_commit(suite_path: str | os.PathLike) -> tuple[str, list[str]]:
    """The commit a derivation note names, and the uncommitted code beside the suite file itself.

    A first `--write` leaves the suite file changed; a second one before it is committed still
    derives at the same commit, so the suite file does not count. Any other uncommitted code would
    make the note name a commit that is not the code that measured the rates: the caller refuses."""
    try:
        own = Path(suite_path).resolve()
        others = [f for f in uncommitted_code(REPO_ROOT) if (REPO_ROOT / f).resolve() != own]
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []
    return code_commit(REPO_ROOT).removesuffix("-dirty"), others
