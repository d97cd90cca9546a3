"""One benchmark cell, from its names to its record: the single pipeline every harness uses.

A cell is `(method, target, budget, seed)` of a suite. `run_cell` takes it through

1. **resolve** (`resolve_cell`): the (method, target) settings of `benchmarks.grid.hyperparams`,
   the target, the Problem and the method's typed config; `cell_inputs` is what a resumed grid
   compares with a finished record (target fingerprint, resolved settings, budget, sample size);
2. **applicability**: `MethodSpec.applicable(problem)`; a method that cannot run on the problem is
   recorded as `not_applicable` with the reason;
3. **train** (`train_cell`) with `samplers.train.train` in jitted chunks. Between chunks a cheap
   probe records log Ẑ (and its error), the training cost so far and the cost the final sampling
   would add, for the accuracy-versus-cost plots. Under an evaluation budget (`max_evals`, energy +
   gradient evaluations of training + final sampling; `benchmarks.grid.suites`) a learned sampler
   stops at the last chunk boundary before the predicted total would exceed it, and a fixed-work
   baseline (MCMC / SMC / AIS) is re-configured by its `plan_budget` rule first (its pilot cost
   counted as training cost). A caller with its own stopping rule passes a `Monitor` in place of
   the probe and the budget stop (the cost-to-accuracy cells of `benchmarks.perf` do);
4. **sample** `num_samples` points, plus the backward path weights from target samples where the
   method has a backward process;
5. **score** with every applicable metric (`benchmarks.metrics.evaluate`; a weighted sampler's
   sample metrics also on its draws resampled by weight, under `weighted/`:
   `benchmarks.metrics.weighted`), judge the accuracy (`benchmarks.metrics.accuracy`), and add the
   cost counters;

and returns a `CellResult`: the typed `CellRecord` and, beside it, the first `SAMPLE_FILE_ROWS`
samples for the figures. `Diverged` or non-finite samples give status `diverged`; any other
exception gives `error` with its message. Nothing is written here (`benchmarks.grid.runner` does).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

import samplers
import targets
from benchmarks.grid import hyperparams
from benchmarks.grid.findings import diagnosis
from benchmarks.grid.problems import build_problem, settings_dict
from benchmarks.grid.records import environment, git_commit, jsonable
from benchmarks.grid.suites import Budget, Cell, Suite
from benchmarks.metrics import EvalContext
from benchmarks.metrics.accuracy import assess
from benchmarks.metrics.cost import cost_metrics
from benchmarks.metrics.weighted import evaluate_raw_and_weighted
from samplers import parallel
from samplers.estimators import log_Z as log_z_estimate
from samplers.fields import merge
from samplers.learned import sampled_params
from samplers.method import Cost
from samplers.train import Diverged, train

__all__ = [
    "SAMPLE_FILE_ROWS",
    "CellProgress",
    "CellRecord",
    "CellResult",
    "Drawn",
    "Monitor",
    "Resolved",
    "Trained",
    "cell_inputs",
    "changed_inputs",
    "config_dict",
    "draw_samples",
    "resolve_cell",
    "run_cell",
    "train_cell",
]

SAMPLE_FILE_ROWS = 1000  # model samples kept beside each record for the figures
PROBE_SAMPLES = 256  # fresh weighted samples drawn by the between-chunk probe


# ---------------------------------------------------------------------------------------------
# 1. resolve
# ---------------------------------------------------------------------------------------------


class Resolved(NamedTuple):
    """A cell's method and target with the suite's resolved settings (nothing trained yet)."""

    spec: samplers.MethodSpec
    target: targets.Target
    settings: hyperparams.Resolved
    problem: Any
    config: Any
    tuned: dict[str, Any] = {}  # overrides from a committed tuning file (`benchmarks.grid.tune`)
    tuning_evals: float = 0.0  # the evaluations that tuning search spent


def resolve_cell(
    method: str,
    target: str,
    overrides: dict[str, Any] | None = None,
    *,
    use_tuned: bool = True,
    **config_overrides: Any,
) -> Resolved:
    """Resolve `(method, target)` as the grid runs it. Layers, each over the previous and each replacing
    only the fields it names (sub-config fields dotted, `**{"optim.learning_rate": 1e-2}`, or nested,
    `optim={"learning_rate": 1e-2}`; `MethodSpec.make_config`): the table (`hyperparams.resolve`), the
    committed tuning file of `(method, target)` if any (`tiltbench tune`), the suite's `overrides`
    (`{"problem": ..., "method": ...}`, `Suite.overrides(method)`: its settings and the CLI's `--set`),
    then `config_overrides`. `use_tuned=False` leaves the tuning file out (the search itself starts from
    the table, so that what it finds does not depend on an earlier search's choice)."""
    from benchmarks.grid.tune import tuned_overrides

    overrides = overrides or {}
    spec = samplers.get(method)
    tgt = targets.get(target)
    settings = hyperparams.resolve(method, target, overrides={"problem": overrides.get("problem", {})})
    problem = build_problem(tgt, settings.problem)
    tuned, tuning_evals = tuned_overrides(method, target) if use_tuned else ({}, 0.0)
    layers = (settings.method, tuned, overrides.get("method", {}), config_overrides)
    config = spec.make_config(functools.reduce(merge, layers))
    return Resolved(spec, tgt, settings, problem, config, tuned, tuning_evals)


def _canonical(value: Any) -> Any:
    """`value` as it reads back from a record (tuples become lists, keys strings, NaN / Inf strings)."""
    return json.loads(json.dumps(jsonable(value), default=repr))


def cell_inputs(
    resolved: Resolved, budget: dict[str, Any], num_samples: int, fingerprint: str | None = None
) -> dict[str, Any]:
    """What determines a cell's result besides the code: compared on resume with the record's.

    `fingerprint`: the target's, when already computed (`Target.fingerprint` evaluates log_prob).
    """
    return _canonical(
        {
            "target_fingerprint": fingerprint or resolved.target.fingerprint(),
            "problem": settings_dict(resolved.settings.problem),
            "method": config_dict(resolved.config),
            "budget": budget,
            "num_samples": num_samples,
        }
    )


def _recorded_inputs(record: dict[str, Any]) -> dict[str, Any]:
    """The inputs of a finished record; records written before `inputs` existed give them from
    their fields (their method config is left out when a budget plan replaced it)."""
    if isinstance(record.get("inputs"), dict):
        return record["inputs"]
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    out = {
        "target_fingerprint": record.get("target_fingerprint"),
        "problem": config.get("problem"),
        "budget": record.get("budget"),
        "num_samples": record.get("num_samples"),
    }
    if "budget_plan" not in record and "method" in config:
        out["method"] = config["method"]
    return out


def changed_inputs(
    record: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """The names of the inputs whose recorded value differs from `current` (empty: unchanged).

    Settings are compared on the keys both sides have (`_differ`), and on a key the record lacks
    where `defaults` (the inputs' values at the code's defaults, e.g. `{"method": config_dict(
    spec.make_config())}`) says the present value is not the field's default. A record without a
    target fingerprint (it failed before the target was built) always counts as changed: nothing
    says it was run on the present target.
    """
    stored = _recorded_inputs(record)
    if not stored.get("target_fingerprint"):
        return ["target_fingerprint"]
    defaults = defaults or {}
    return [
        k
        for k, v in current.items()
        if k in stored and stored[k] is not None and _differ(stored[k], v, defaults.get(k))
    ]


_ABSENT = object()


def _differ(stored: Any, current: Any, default: Any = _ABSENT) -> bool:
    """Whether a recorded input differs from the present one. Settings objects are compared on the
    keys both have: a config field added to the code after the record was written is a code change,
    which resume does not compare (the record's `commit` says which code ran; `--force` re-runs),
    unless the present value is not the field's `default` (a table or suite sets the new field, so
    the record ran without that setting)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        defaults = default if isinstance(default, dict) else {}
        if any(
            _differ(stored[k], current[k], defaults.get(k, _ABSENT)) for k in stored.keys() & current.keys()
        ):
            return True
        return any(
            k in defaults and _set_away_from(current[k], defaults[k]) for k in current.keys() - stored.keys()
        )
    return stored != current


def _set_away_from(current: Any, default: Any) -> bool:
    """Whether a value the record does not have differs from the code's default for it."""
    if isinstance(current, dict) and isinstance(default, dict):
        return any(k in default and _set_away_from(v, default[k]) for k, v in current.items())
    return current != default


# ---------------------------------------------------------------------------------------------
# the typed record
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CellRecord:
    """The record of one cell (`benchmarks.grid.records` writes `to_dict()` as JSON).

    Attributes:
        suite, method, target, seed: the cell.
        budget: the budget resolved for the target (`Budget.for_target`).
        num_samples: samples drawn and scored.
        commit, hardware, data_parallel_devices, started: provenance.
        status: "ok", "diverged", "error" or "not_applicable"; `message` says why when not ok.
        accuracy: of an `ok` cell, `benchmarks.metrics.accuracy.assess` of its metrics:
            {"status": "ok" | "failed", "reasons": [...], "warnings": [...]} (a run can finish and
            still give a useless estimate).
        inputs: `cell_inputs` (compared on resume); `target_fingerprint` also at top level.
        config: {"problem", "problem_summary", "method"} as run (after a budget plan).
        metrics, skipped_metrics: metric values and the reasons of those not computed.
        trace: the between-chunk probe points (accuracy-versus-cost curves).
        pilot: when the problem's `sigma` came from the ground-truth-free pilot
            (`benchmarks.grid.hyperparams`): its settings, estimate and cost (energy and gradient
            evaluations, not counted in the cell's budget: the problem's set-up, shared by every method).
        cost_train, cost_sample: `Cost` counters of training (with pilots) and of sampling.
        budget_plan, budget_spent: the budget rule's notes and what was spent (equal budgets).
        train: compilations and final loss; traceback: of an `error`; wall_time_s: the whole cell.
        time: where the wall time went: `phases_s` (resolving: settings, a baseline's budget pilots
            and the build; training; sampling; reference; backward; metrics: they add up to the
            wall time but for `unaccounted_s`), the compile
            and run times inside the phases (training steps, the probe with its first, compiling
            call, final sampling, backward paths) and `metrics_s` per metric (the weighted pass
            under `weighted/`).
    """

    suite: str
    method: str
    target: str
    budget: dict[str, Any]
    seed: int
    num_samples: int
    commit: str
    hardware: dict[str, Any]
    data_parallel_devices: int
    started: str
    status: str = "error"
    message: str = ""
    inputs: dict[str, Any] | None = None
    target_fingerprint: str | None = None
    config: dict[str, Any] | None = None
    method_family: str | None = None
    problem_kind: str | None = None
    accuracy: dict[str, Any] | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped_metrics: dict[str, str] = dataclasses.field(default_factory=dict)
    trace: list[dict[str, float]] = dataclasses.field(default_factory=list)
    pilot: dict[str, Any] | None = None
    cost_train: dict[str, float] | None = None
    cost_sample: dict[str, float] | None = None
    budget_plan: dict[str, Any] | None = None
    budget_spent: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    traceback: str | None = None
    wall_time_s: float = 0.0
    time: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: every field, except unset optional ones and an empty message."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in out.items() if v is not None and not (k == "message" and not v)}


class CellProgress(Protocol):
    """Where `run_cell` reports what it is doing (the runner shows it on the cell's progress line)."""

    def phase(self, name: str) -> None:
        """A new stage began: "resolving", "training", "sampling", "scoring"."""

    def chunk(self, step: int, num_steps: int, loss: float | None) -> None:
        """A training chunk ended: steps done, the step budget, the chunk's mean loss (if scalar)."""


class CellResult(NamedTuple):
    """What `run_cell` returns: the record and, beside it, the samples kept for the figures."""

    record: CellRecord
    samples: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# 3. train
# ---------------------------------------------------------------------------------------------


class Monitor(NamedTuple):
    """A caller's own between-chunk check, in place of the cell's probe and budget stop.

    `eval_fn(state)` runs after every chunk (what it returns is recorded under `eval/<name>` in
    `Trained.history`, as `samplers.train.train` does; None records nothing) and `stop_fn(state)`
    after it; `True` ends training at that chunk. The cost-to-accuracy cells use it for the
    confirmed-crossing rule (`benchmarks.perf.cost_to_accuracy.learned_cell`).
    """

    eval_fn: Callable[[Any], dict[str, Any] | None]
    stop_fn: Callable[[Any], bool]


class Trained(NamedTuple):
    """`train_cell`'s result: the state, its timings and the probe's trace."""

    state: Any
    train_time_s: float
    compile_time_s: float
    steps: int
    trace: list[dict[str, float]]
    # when training ran: num_compilations, final_loss, sampled_params ("ema" / "trained" / "none"), and
    # the Info history's summary and findings (benchmarks.grid.findings)
    summary: dict[str, Any] | None
    note: str | None  # why nothing was trained, when the budget left no room
    history: dict[str, np.ndarray]  # `TrainResult.history` ({} when nothing was trained)
    probe_time_s: float = 0.0  # the probe's draws and log Ẑ (monitoring; included in neither time above)
    probe_first_s: float = 0.0  # its first call, which compiles the probe's sampler


def _probe(
    method: samplers.Method, problem, key: jax.Array, num: int, num_samples: int, weighted: bool = True
) -> Callable:
    """Between chunks: cost so far and log Ẑ (and its error) from `num` fresh weighted samples.

    `evals` is the training cost so far; `evals_sample` the cost of drawing the `num_samples`
    evaluation samples from the current state (the probe's cost scaled by `num_samples / num`;
    exact for samplers whose cost is linear in the number of samples, as every learned one is).
    The probe's own draws are monitoring, not counted in the cell's cost. Unweighted samplers
    (`weighted=False`) report NaN log Ẑ.
    """
    sample = jax.jit(method.sample, static_argnums=2)
    counter = {"i": 0}
    log_z = problem.log_Z

    def fn(state) -> dict[str, Any]:
        counter["i"] += 1
        t0 = time.perf_counter()
        s = sample(jax.random.fold_in(key, counter["i"]), state, num)
        est = float(log_z_estimate(s.log_w).value) if weighted else float("nan")
        err = abs(est - log_z) if log_z is not None else float("nan")
        spent = time.perf_counter() - t0
        fn.seconds += spent
        fn.first_s = fn.first_s or spent
        return {
            "evals": state.cost.budget_evals(),
            "evals_sample": s.cost.budget_evals() * num_samples / num,
            "logZ": est,
            "logZ_error": err,
        }

    fn.seconds, fn.first_s = 0.0, 0.0  # wall time of all calls / of the first (compiling) call
    return fn


def _budget_stop(probe: Callable, max_evals: float) -> tuple[Callable, Callable]:
    """`(eval_fn, stop_fn)` for `train`: stop at the last chunk boundary before the budget.

    After every chunk, with `E` the training cost so far, `ΔE` the last chunk's cost and `S` the
    cost of the final sampling (from the probe), training stops when `E + ΔE + S > max_evals`,
    i.e. when one more chunk would break the budget. A chunk that would itself break it (the first,
    whose cost nothing predicts, or one dearer than the last) is cut by `_budget_keep`.
    """
    last: dict[str, float] = {"evals": 0.0, "delta": 0.0, "sample": 0.0}

    def eval_fn(state):
        out = probe(state)
        last["delta"] = out["evals"] - last["evals"]
        last["evals"], last["sample"] = out["evals"], out["evals_sample"]
        return out

    def stop_fn(state):
        return last["evals"] + last["delta"] + last["sample"] > max_evals

    return eval_fn, stop_fn


def _budget_keep(max_evals: float, sample_evals: float) -> Callable[[np.ndarray], int]:
    """`keep_steps` for `train`: the leading steps of a chunk after which the training cost `E_s`
    plus the final sampling's `S` stays within `max_evals` (`E_s + S ≤ max_evals`)."""

    def keep(evals: np.ndarray) -> int:
        over = np.flatnonzero(np.asarray(evals, np.float64) + sample_evals > max_evals)
        return int(over[0]) if over.size else len(evals)

    return keep


def train_cell(
    key: jax.Array,
    method: samplers.Method,
    problem,
    budget: Budget,
    k_trace: jax.Array,
    *,
    trace: bool = True,
    max_evals: float | None = None,
    num_samples: int = 0,
    report: Callable[[int, int, float | None], None] | None = None,
    monitor: Monitor | None = None,
) -> Trained:
    """Train in budget-sized chunks, with the probe (`trace`, on a problem with a known log Z) and the
    budget stop (`max_evals`), or with the caller's `monitor` instead of both (then `trace` and
    `max_evals` must be left unset); `report(step, num_steps, loss)` is called after every chunk.

    Raises:
        Diverged: from `samplers.train.train`, at the first non-finite loss or parameter.
    """
    if monitor is not None:
        if max_evals is not None:
            raise ValueError("train_cell: a monitor replaces the budget stop; leave max_evals unset")
        return _train(key, method, budget, monitor.eval_fn, monitor.stop_fn, None, report)
    probe_on = trace and problem.log_Z is not None
    probe = (
        _probe(method, problem, k_trace, PROBE_SAMPLES, num_samples, trace)
        if (probe_on or max_evals)
        else None
    )
    clocked = probe  # keeps the probe's own wall-time counters (`_budget_stop` wraps it)
    stop_fn, keep, note = None, None, None
    train_steps = budget.train_steps
    if max_evals is not None and train_steps > 0:
        first = probe(method.init(jax.random.split(key)[0]))  # the final sampling's cost, untrained
        if first["evals"] + first["evals_sample"] >= max_evals:
            note = "the budget covers no more than the final sampling: no training"
            train_steps = 0
        probe, stop_fn = _budget_stop(probe, max_evals)
        keep = _budget_keep(max_evals, first["evals_sample"])
    if train_steps == 0:
        state = jax.jit(method.init)(jax.random.split(key)[0])
        return Trained(state, 0.0, 0.0, 0, [], None, note, {}, *_probe_times(clocked))
    budget = dataclasses.replace(budget, train_steps=train_steps)
    return _train(key, method, budget, probe, stop_fn, note, report, clocked, keep)


def _probe_times(probe: Callable | None) -> tuple[float, float]:
    """`(all calls, first call)` wall seconds of a `_probe` (zeros for another monitor)."""
    return getattr(probe, "seconds", 0.0), getattr(probe, "first_s", 0.0)


def _train(key, method, budget: Budget, probe, stop_fn, note, report, clocked=None, keep=None) -> Trained:
    """`samplers.train.train` over the budget's steps and chunks; the probe's points (when its
    values are the cell probe's) become the trace; `clocked` is the probe whose time is reported.
    With `budget.max_train_s`, training also stops at the first chunk boundary past that wall time."""
    capped = {"hit": False}
    if budget.max_train_s is not None:
        started, inner, cap = time.perf_counter(), stop_fn, budget.max_train_s

        def stop_fn(state) -> bool:
            if inner is not None and inner(state):
                return True
            capped["hit"] = time.perf_counter() - started > cap
            return capped["hit"]

    result = train(
        key,
        method,
        num_steps=budget.train_steps,
        chunk_size=budget.chunk_size,
        eval_fn=probe,
        stop_fn=stop_fn,
        on_chunk=report,
        keep_steps=keep,
    )
    hist = result.history
    steps_done = int(np.asarray(hist["step"])[-1]) if len(hist.get("step", [])) else 0
    if capped["hit"] and steps_done < budget.train_steps:  # a cap found after the last step cut nothing
        cap_note = f"training stopped at the wall cap of {budget.max_train_s:g} s after {steps_done} steps"
        note = f"{note}; {cap_note}" if note else cap_note
    points: list[dict[str, float]] = []
    if probe is not None and "eval/evals" in hist:
        columns = ("evals", "evals_sample", "logZ", "logZ_error")
        points = [
            {"step": int(s), **{c: float(v) for c, v in zip(columns, row, strict=True)}}
            for s, *row in zip(hist["step"], *(hist[f"eval/{c}"] for c in columns), strict=True)
        ]
    summary = {
        "num_compilations": int(result.num_compilations),
        "final_loss": float(np.asarray(hist["loss"])[-1]) if len(hist.get("loss", [])) else None,
        "sampled_params": sampled_params(result.state),
        **diagnosis(hist),
    }
    steps = int(np.asarray(hist["step"])[-1]) if len(hist.get("step", [])) else budget.train_steps
    return Trained(
        result.state,
        result.train_time_s,
        result.compile_time_s,
        steps,
        points,
        summary,
        note,
        hist,
        *_probe_times(clocked if clocked is not None else probe),
    )


# ---------------------------------------------------------------------------------------------
# 4. sample
# ---------------------------------------------------------------------------------------------


class Drawn(NamedTuple):
    """`draw_samples`' result: the `Samples` and the compile and run times of drawing them."""

    samples: Any
    compile_time_s: float
    sample_time_s: float


def compile_and_run(fn: Callable, *args: Any) -> tuple[Any, float, float]:
    """`jit(fn)(*args)` compiled ahead of the call: `(result, compile seconds, run seconds)`."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - t0


def draw_samples(method: samplers.Method, state: Any, key: jax.Array, num_samples: int) -> Drawn:
    """Draw `num_samples` from the trained `state` (compiled first, so the timing excludes it)."""
    return Drawn(*compile_and_run(lambda k, s: method.sample(k, s, num_samples), key, state))


class PhaseClock:
    """Wall time per phase of a cell: `start(name)` ends the running phase and starts `name`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = time.perf_counter()

    def start(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = self.seconds.get(self._name, 0.0) + now - self._t0
        self._name, self._t0 = name, now

    def stop(self) -> dict[str, float]:
        self.start(None)
        return dict(self.seconds)


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------


def config_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain JSON values (anything else as its repr)."""
    if dataclasses.is_dataclass(config):
        return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    return {"repr": repr(config)}


def _plain(v: Any) -> Any:
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if dataclasses.is_dataclass(v):
        return config_dict(v)
    return repr(v)


def _unusable_draws(x: Any, log_w: Any) -> str | None:
    """Why the final draws cannot be scored (None: they can): how many rows of `x` are non-finite and
    how many log-weights are NaN (a log-weight of -inf is a draw of weight 0, which is allowed)."""
    x, log_w = np.asarray(x), np.asarray(log_w)
    bad_x = int(np.sum(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)))
    bad_w = int(np.sum(np.isnan(log_w)))
    if not bad_x and not bad_w:
        return None
    return (
        f"non-finite samples or NaN log-weights after training: {bad_x} of {len(x)} draws non-finite, "
        f"{bad_w} of {log_w.size} log-weights NaN"
    )


def _reference_sets(target: targets.Target, key: jax.Array, n: int) -> tuple[Any, Any, int]:
    """Two independent reference sets of equal size (exact draws, or disjoint halves of the shipped set)."""
    if target.exact_samples:
        both = target.sample(key, 2 * n)
        return both[:n], both[n:], n
    if target.reference is None:
        return None, None, 0
    data = jnp.asarray(target.reference.load(), jnp.float32)
    m = min(n, data.shape[0] // 2)
    perm = jax.random.permutation(key, data.shape[0])
    return data[perm[:m]], data[perm[m : 2 * m]], m


def _budget_spent(max_evals: float | None, cost: Cost) -> dict[str, Any]:
    spent = cost.budget_evals()
    return {
        "max_evals": max_evals,
        "spent_evals": spent,
        "spent_ratio": spent / max_evals if max_evals else None,
    }


def _plan_baseline(spec, problem, config, key, max_evals, num_samples, record: CellRecord):
    """Re-configure a fixed-work baseline for the budget; returns `(config, pilot cost)`."""
    if spec.plan_budget is None:
        record.budget_plan = {"note": f"{spec.name} has no budget rule; it ran its own configuration"}
        return config, Cost.zero()
    plan = spec.plan_budget(key, problem, config, max_evals, num_samples)
    record.budget_plan = dict(plan.notes)
    record.config["method"] = config_dict(plan.config)
    return plan.config, plan.cost


def run_cell(
    cell: Cell,
    suite: Suite,
    *,
    trace: bool = True,
    progress: CellProgress | None = None,
) -> CellResult:
    """Run one cell through the pipeline of the module docstring (nothing is written here);
    `progress` hears each stage and each training chunk."""
    # this cell's evaluation budget, wall cap or step cap (a budget may give them per target / pair)
    budget = suite.budget(cell.budget).for_cell(cell.method, cell.target)
    record = CellRecord(
        suite=suite.name,
        method=cell.method,
        target=cell.target,
        budget=budget.for_target(cell.target),
        seed=cell.seed,
        num_samples=suite.num_samples,
        commit=git_commit(),
        hardware=environment(),
        data_parallel_devices=parallel.num_shards(),  # devices the particle batch is split over
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    samples_kept = None
    t_cell = time.perf_counter()
    clock, timing = PhaseClock(), {}

    def phase(name: str, clocked: str | None = None) -> None:
        clock.start(clocked or name)
        if progress is not None:
            progress.phase(name)

    try:
        phase("resolving")
        resolved = resolve_cell(cell.method, cell.target, suite.overrides(cell.method))
        spec, target, problem, config = resolved.spec, resolved.target, resolved.problem, resolved.config
        record.inputs = cell_inputs(resolved, record.budget, suite.num_samples)
        record.target_fingerprint = record.inputs["target_fingerprint"]
        record.pilot = resolved.settings.pilot
        record.config = {
            "problem": settings_dict(resolved.settings.problem),
            "problem_summary": problem.summary(),
            "method": config_dict(config),
            **({"tuned": resolved.tuned} if resolved.tuned else {}),
        }
        record.method_family = spec.family
        record.problem_kind = problem.kind
        reason = spec.applicable(problem)
        if reason is not None:
            record.status, record.message = "not_applicable", reason
            return CellResult(record, None)
        key = jax.random.key(cell.seed)
        k_train, k_trace, k_sample, k_ref, k_bwd, k_metric = jax.random.split(key, 6)
        max_evals = budget.evals_for(cell.target)
        pilot_cost = Cost.zero()
        if spec.train_steps is not None:  # MCMC warm-up rounds / no-op steps replace the training budget
            if max_evals is not None:
                k_plan = jax.random.fold_in(k_train, 1)
                config, pilot_cost = _plan_baseline(
                    spec, problem, config, k_plan, max_evals, suite.num_samples, record
                )
            budget = dataclasses.replace(
                budget, train_steps=spec.train_steps, chunk_size=max(spec.train_steps, 1)
            )
            max_evals_train = None
        else:
            max_evals_train = max_evals
        method = spec.build(problem, config)
        phase("training")
        trained = train_cell(
            k_train,
            method,
            problem,
            budget,
            k_trace,
            trace=trace and spec.weighted,
            max_evals=max_evals_train,
            num_samples=suite.num_samples,
            report=progress.chunk if progress is not None else None,
        )
        timing["training"] = {
            "steps_run_s": trained.train_time_s,
            "steps_compile_s": trained.compile_time_s,
            "probe_s": trained.probe_time_s,
            "probe_first_call_s": trained.probe_first_s,
        }
        record.trace, record.train = trained.trace, trained.summary
        if trained.note is not None:  # beside a baseline's plan, not instead of it
            record.budget_plan = {**(record.budget_plan or {}), "note": trained.note}
        state = trained.state._replace(cost=trained.state.cost + pilot_cost)
        if spec.replan_sampling is not None and max_evals is not None and spec.train_steps is not None:
            k_replan = jax.random.fold_in(k_train, 2)
            replan = spec.replan_sampling(
                k_replan, problem, config, state, max_evals - state.cost.budget_evals(), suite.num_samples
            )
            config, state = replan.config, state._replace(cost=state.cost + replan.cost)
            record.budget_plan = {**(record.budget_plan or {}), "replanned": dict(replan.notes)}
            record.config["method"] = config_dict(config)
            method = spec.build(problem, config)
        record.cost_train = state.cost._asdict()

        phase("sampling")
        samples, sample_compile, sample_time = draw_samples(method, state, k_sample, suite.num_samples)
        timing["sampling"] = {"compile_s": sample_compile, "run_s": sample_time}
        record.cost_sample = samples.cost._asdict()
        samples_kept = np.asarray(samples.x[:SAMPLE_FILE_ROWS], np.float32)
        if (why := _unusable_draws(samples.x, samples.log_w)) is not None:
            record.status, record.message = "diverged", why
            return CellResult(record, samples_kept)

        phase("scoring", "reference")
        ref, ref2, num_ref = _reference_sets(target, k_ref, suite.num_samples)
        bwd, backward_compile = None, 0.0
        if method.backward is not None and ref is not None and spec.weighted:
            clock.start("backward")
            bwd, backward_compile, backward_run = compile_and_run(method.backward, k_bwd, state, ref)
            timing["backward"] = {"compile_s": backward_compile, "run_s": backward_run}
        clock.start("metrics")
        ctx = EvalContext(
            key=k_metric,
            target=target,
            x=samples.x,
            log_w=samples.log_w if spec.weighted else None,
            reference=ref,
            reference2=ref2,
            backward_log_w=bwd,
        )
        # a weighted sampler's sample metrics on its raw draws and, under weighted/, on its draws
        # resampled by weight (benchmarks/metrics/weighted.py)
        timing["metrics_s"] = {}
        values, skipped = evaluate_raw_and_weighted(ctx, on_error="report", timings=timing["metrics_s"])
        if spec.diagnostics is not None:
            values.update({k: float(v) for k, v in spec.diagnostics(samples.x, config, target).items()})
        values.update(
            cost_metrics(
                state.cost + samples.cost,
                trained.train_time_s,
                sample_time,
                trained.compile_time_s + sample_compile + backward_compile,
            )
        )
        values["cost/train_steps"] = float(trained.steps)
        if resolved.tuning_evals:  # the search that chose this configuration, once per (method, target)
            values["cost/tuning_evals"] = resolved.tuning_evals
        if ref is not None:  # the sample metrics and their floors compare this many rows
            values["eval/reference_rows"] = float(num_ref)
        if max_evals is not None:
            record.budget_spent = _budget_spent(max_evals, state.cost + samples.cost)
            values["budget/max_evals"] = float(max_evals)
            values["budget/spent_evals"] = record.budget_spent["spent_evals"]
        record.metrics, record.skipped_metrics, record.status = values, skipped, "ok"
        judged = assess(values)
        record.accuracy = {
            "status": judged.accuracy,
            "reasons": list(judged.reasons),
            "warnings": list(judged.warnings),
        }
    except Diverged as err:
        record.status, record.message = "diverged", f"diverged at step {err.step}: {err.reason}"
        record.train = diagnosis(err.history)  # what the completed chunks show (findings.py)
    except Exception as err:  # noqa: BLE001 - recorded; the grid goes on
        record.status, record.message = "error", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc(limit=8)
    finally:
        phases = clock.stop()  # before the wall time, so the phases never add up to more than it
        record.wall_time_s = time.perf_counter() - t_cell
        if "training" in timing:  # set-up, the first chunk's dispatch, history: the rest of the phase
            tr = timing["training"]  # the probe's first call is inside probe_s
            tr["other_s"] = phases["training"] - tr["steps_run_s"] - tr["steps_compile_s"] - tr["probe_s"]
        record.time = {
            "phases_s": phases,
            "unaccounted_s": record.wall_time_s - sum(phases.values()),
            **timing,
        }
    return CellResult(record, samples_kept)
