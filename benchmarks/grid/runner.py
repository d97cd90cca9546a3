"""The grid runner: select cells, resume, run each through the cell pipeline, write its record.

`run_suite` runs the selected cells of a suite (`shard=(i, n)`: every n-th cell from i; `only`:
filters by method / target / budget / seed, each value checked against the suite) one by one
through `benchmarks.grid.cell.run_cell`, and writes each record atomically as soon as the cell ends
(with its samples beside it, `<record>.samples.npz`). The grid goes on after a diverged or failed
cell.

Resume (`plan_cells`). A selected cell is run again only when

- it has no record (new), or `force`;
- its record is not a valid record (truncated, not JSON, wrong schema): the file is moved aside
  to `<name>.corrupt` (`records.quarantine`) with a warning, and the cell counts as not done;
- its inputs changed since the record was written: the target fingerprint, the resolved problem
  and method settings, the budget or the sample size (`cell.changed_inputs`);
- its status is in `retry` (`tiltbench benchmark --retry failed`: `error` and `diverged`).
  Otherwise a finished cell, whatever its status, is kept: failed cells are not retried by default.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.grid.cell import cell_inputs, changed_inputs, config_dict, resolve_cell, run_cell
from benchmarks.grid.records import (
    RecordError,
    atomic_savez,
    atomic_write_json,
    is_stale_temp,
    quarantine,
    read_record,
    record_paths,
)
from benchmarks.grid.suites import Cell, Suite

__all__ = [
    "GridInterrupted",
    "Pending",
    "parse_only",
    "parse_shard",
    "plan_cells",
    "plan_reasons",
    "run_suite",
    "select_cells",
]

_ONLY_KEYS = ("method", "target", "budget", "seed")


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse `"i/n"` (0 <= i < n)."""
    if text is None:
        return (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n with integers, e.g. 0/4; got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs n >= 1 and 0 <= i < n; got {text!r}")
    return (i, n)


def parse_only(items: Iterable[str] | None) -> dict[str, set[str]]:
    """Parse `key=value[,value...]` filters; keys: method, target, budget, seed."""
    out: dict[str, set[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in _ONLY_KEYS or not value:
            raise ValueError(f"--only takes key=value with key one of {list(_ONLY_KEYS)}; got {item!r}")
        out.setdefault(key, set()).update(v for v in value.split(",") if v)
    return out


def _axes(suite: Suite) -> dict[str, list[str]]:
    return {
        "method": list(suite.methods),
        "target": list(suite.targets),
        "budget": [b.name for b in suite.budgets],
        "seed": [str(s) for s in suite.seeds],
    }


def select_cells(
    suite: Suite, *, shard: tuple[int, int] = (0, 1), only: dict[str, set[str]] | None = None
) -> list[Cell]:
    """The suite's cells after the `only` filters, then the shard slice (stable order).

    Raises:
        ValueError: when an `only` value names nothing in the suite (the message lists the valid
            values), or when the filters together select no cell.
    """
    only = only or {}
    axes = _axes(suite)
    for key, values in sorted(only.items()):
        unknown = sorted(set(values) - set(axes[key]))
        if unknown:
            raise ValueError(
                f"--only {key}={','.join(unknown)} matches no {key} of suite {suite.name!r}; "
                f"valid {key}s: {', '.join(axes[key])}"
            )
    cells = [c for c in suite.cells() if all(str(getattr(c, k)) in v for k, v in only.items())]
    if only and not cells:
        raise ValueError(
            f"the --only filters {sorted((k, sorted(v)) for k, v in only.items())} select no cell of "
            f"suite {suite.name!r} (the suite excludes those combinations)"
        )
    i, n = shard
    return cells[i::n]


class Pending(NamedTuple):
    """A cell to run and why (`new`, `forced`, `inputs changed: ...`, `corrupt record`, `retry ...`)."""

    cell: Cell
    why: str


class _Inputs:
    """The present inputs of cells (resolved once per method and target); None where they cannot be
    resolved (the cell then runs, and its record says why it failed)."""

    def __init__(self, suite: Suite):
        self.suite, self._resolved, self._fingerprints = suite, {}, {}

    def __call__(self, cell: Cell) -> dict[str, Any] | None:
        key = (cell.method, cell.target)
        if key not in self._resolved:
            try:
                resolved = resolve_cell(cell.method, cell.target, self.suite.overrides(cell.method))
                if cell.target not in self._fingerprints:
                    self._fingerprints[cell.target] = resolved.target.fingerprint()
            except Exception:  # noqa: BLE001 - the run records the error
                resolved = None
            self._resolved[key] = resolved
        resolved = self._resolved[key]
        if resolved is None:
            return None
        budget = self.suite.budget(cell.budget).for_cell(cell.method, cell.target).for_target(cell.target)
        return cell_inputs(resolved, budget, self.suite.num_samples, self._fingerprints[cell.target])

    def defaults(self, cell: Cell) -> dict[str, Any] | None:
        """The method config at the code's defaults (`changed_inputs`: a field a record lacks counts as
        changed where the table or suite sets it away from its default)."""
        resolved = self._resolved.get((cell.method, cell.target))
        if resolved is None:
            return None
        return {"method": config_dict(resolved.spec.make_config())}


def plan_cells(
    suite: Suite,
    out_dir: str | os.PathLike,
    cells: Iterable[Cell],
    *,
    force: bool = False,
    retry: Iterable[str] = (),
    log: Callable[[str], None] = print,
    quarantine_corrupt: bool = True,
) -> list[Pending]:
    """The cells of `cells` that must run, with the reason (see the module docstring).

    A corrupt record is moved aside here (`records.quarantine`), with a warning naming it, unless
    `quarantine_corrupt` is False (a plan that only reports, such as `--estimate`, moves nothing).
    """
    retry = frozenset(retry)
    inputs = _Inputs(suite)
    todo = []
    for cell in cells:
        path = cell.path(out_dir, suite.name)
        if force:
            todo.append(Pending(cell, "forced"))
            continue
        if not path.exists():
            todo.append(Pending(cell, "new"))
            continue
        try:
            record = read_record(path)
        except RecordError as err:
            if quarantine_corrupt:
                moved = quarantine(path)
                log(f"warning: {err}; moved to {moved.name}, the cell will run again")
            else:
                log(f"warning: {err}; the cell will run again")
            todo.append(Pending(cell, "corrupt record"))
            continue
        if record["status"] in retry:
            todo.append(Pending(cell, f"retry {record['status']}"))
            continue
        current = inputs(cell)
        defaults = inputs.defaults(cell)
        changed = changed_inputs(record, current, defaults) if current is not None else ["unresolvable"]
        if changed:
            todo.append(Pending(cell, f"inputs changed: {', '.join(changed)}"))
    return todo


def plan_reasons(todo: Iterable[Pending]) -> str:
    """`"(3 new, 2 inputs changed)"`: how many cells run for each kind of reason ('' when none)."""
    reasons: dict[str, int] = {}
    for p in todo:
        reasons[p.why.split(":")[0]] = reasons.get(p.why.split(":")[0], 0) + 1
    return f" ({', '.join(f'{n} {why}' for why, n in sorted(reasons.items()))})" if reasons else ""


def _plan_summary(selected: int, todo: list[Pending]) -> str:
    done = selected - len(todo)
    return f"{selected} cells selected, {done} already done, {len(todo)} to run{plan_reasons(todo)}"


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_suite`: how many records this run wrote and where the suite's records are."""

    def __init__(self, written: int, directory: Path):
        super().__init__(f"{written} cells written under {directory}")
        self.written, self.directory = written, directory

    @property
    def saved(self) -> int:
        """Valid records of the suite on disk (finished before the interrupt, by any run)."""
        return len(record_paths(self.directory)) if self.directory.exists() else 0


def _clean_stale(out: Path) -> int:
    """Remove temp files left by a run killed mid-write (names start with '.' and end in .tmp).

    Only temp files whose writer is gone (`records.is_stale_temp`): shards and array tasks writing
    into the same directory at the same time must not delete each other's in-flight files.
    """
    n = 0
    if out.exists():
        for p in out.rglob(".*.tmp"):
            if is_stale_temp(p):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _summary_line(cell: Cell, rec: dict[str, Any]) -> str:
    m = rec.get("metrics", {})
    parts = [f"{rec['status']:>8}", cell.id]
    for k, label in (("logZ/error", "|ΔlogZ|"), ("ess/reverse", "ESS"), ("mmd2/rbf_median", "MMD²")):
        if k in m and isinstance(m[k], float) and math.isfinite(m[k]):
            parts.append(f"{label}={m[k]:.3g}")
    parts.append(f"{rec.get('wall_time_s', 0):.1f}s")
    if rec["status"] != "ok" and rec.get("message"):
        parts.append(f"({rec['message'][:80]})")
    return "  ".join(parts)


class _BarProgress:
    """A cell's progress on the grid's tqdm line (postfix): the stage, then after each training
    chunk the step, the loss and an ETA. The ETA is timed from the end of the first chunk, which
    includes the compilation."""

    def __init__(self, bar: Any):
        self.bar, self.first = bar, None

    def _show(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def phase(self, name: str) -> None:
        self._show(f"{name} (compiling)" if name == "training" else name)

    def chunk(self, step: int, num_steps: int, loss: float | None) -> None:
        now = time.perf_counter()
        parts = [f"step {step}/{num_steps}"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if self.first is None:
            self.first = (step, now)
        elif step > self.first[0]:
            rate = (now - self.first[1]) / (step - self.first[0])
            parts.append(f"ETA {rate * (num_steps - step):.0f}s")
        self._show(" ".join(parts))


def run_suite(
    suite: Suite,
    out_dir: str | os.PathLike = "results/runs",
    *,
    shard=(0, 1),
    only=None,
    force: bool = False,
    retry: Iterable[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the suite's selected cells that `plan_cells` says must run; returns the records written.

    Raises:
        GridInterrupted: on Ctrl-C (a KeyboardInterrupt); every record finished before it is on disk.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    stale = _clean_stale(out / suite.name)
    if stale:
        log(f"removed {stale} partial file(s) left by an interrupted run")
    cells = select_cells(suite, shard=shard, only=only)
    todo = plan_cells(suite, out, cells, force=force, retry=retry, log=log)
    log(f"suite {suite.name!r}: {_plan_summary(len(cells), todo)} -> {out / suite.name}")
    written: list[dict] = []
    bar = tqdm(todo, disable=not progress, unit="cell", dynamic_ncols=True)
    interrupt = _InterruptMemory()
    try:
        for cell, why in bar:
            if interrupt.seen:  # a Ctrl-C whose KeyboardInterrupt was swallowed mid-cell
                raise KeyboardInterrupt
            bar.set_description(cell.id)
            if why not in ("new", "forced"):
                (bar.write if progress else log)(f"  re-running {cell.id}: {why}")
            result = run_cell(cell, suite, progress=_BarProgress(bar) if progress else None)
            rec = result.record.to_dict()
            path = cell.path(out, suite.name)
            if result.samples is not None:
                atomic_savez(path.with_suffix(".samples.npz"), x=result.samples)
            atomic_write_json(path, rec)
            written.append(rec)
            (bar.write if progress else log)(_summary_line(cell, rec))
        if interrupt.seen:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        raise GridInterrupted(len(written), out / suite.name) from None
    finally:
        interrupt.restore()
    return written


class _InterruptMemory:
    """Wraps the SIGINT handler so that a Ctrl-C is remembered as well as raised. Python swallows an
    exception raised inside a garbage-collection callback (JAX registers one: "Exception ignored in
    _xla_gc_callback ... KeyboardInterrupt"), a weakref callback or a `__del__`, so a Ctrl-C landing
    there would be lost and the grid would run on: inside a gc callback the handler only remembers
    it; elsewhere it raises, and where Python swallows that KeyboardInterrupt anyway, the
    `sys.unraisablehook` installed here keeps the "Exception ignored" report off the terminal (the
    interrupt is remembered). Either way the runner stops at the next cell."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None
        self._unraisable = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
                self._unraisable = sys.unraisablehook
                sys.unraisablehook = self._swallowed

    def _handle(self, signum, frame):
        self.seen = True
        if not _in_gc_callback(frame):
            self._previous(signum, frame)

    def _swallowed(self, unraisable) -> None:
        if self.seen and unraisable.exc_type is KeyboardInterrupt:
            return  # our own Ctrl-C, remembered: the runner stops at the next cell
        self._unraisable(unraisable)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._unraisable is not None:
            sys.unraisablehook = self._unraisable
            self._unraisable = None


def _in_gc_callback(frame) -> bool:
    """Whether `frame` runs inside one of `gc.callbacks` (where a raised exception is swallowed)."""
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks} - {None}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False
