"""Energy evaluations and wall time to reach |log Ẑ - log Z| <= tol (the cost-to-accuracy table).

Every figure follows the confirmation rule of `benchmarks.perf.confirm`: the cheap estimate checked
after every chunk (the *probe*) is monitoring only; ε counts as reached at a check only when an
independent estimate on `num_confirm` >= 4096 fresh samples (its own key) is <= tol there AND at
the next check; a figure is the median and range over >= 3 seeds (`learned_cost_to_accuracy`,
`particles_cost_to_accuracy`).

Learned methods (`learned_cell`, one seed): ONE training run per (method, target, seed) gives both
the accuracy figures of that seed and the cell's throughput row, so that `make perf` compiles each
cell once. The cell goes through the grid's cell pipeline (`benchmarks.grid.cell`): resolved and
checked for applicability by `benchmarks.perf.cells.build_cell`, trained by `train_cell` in chunks
of `chunk_size` steps with a `Monitor` that applies the confirmation rule in place of the grid's
probe and budget stop. After every chunk `num_trace` fresh samples give the probe
`log Ẑ = LSE(log w) - log N`. When the probe is <= tol, or the previous confirmation was, the
confirming evaluation runs. Training stops at the second of two consecutive confirmations <= tol
(at least `min_chunks` chunks are run, so that the recompilation check sees a second chunk), or
when its budget is spent: `max_evals` energy + gradient evaluations of training, or `max_train_s`
seconds of wall time after the first chunk (the first chunk holds the compilation, which is
reported separately as `train_compile_s`). Reported evals at the confirmed check = training evals
so far + the evaluations of the confirming estimate (the probe's are monitoring, not counted);
wall = training execution time so far + that sampling call (compilation excluded). Not reached:
the last check, with a confirming evaluation of the final state, so that "where the method got
to" is measured on >= 4096 samples too. A run that diverges keeps its last finite point and says
so (`diverged_at_step`; its error is then the probe's, `error_source`).

From the same run: `train_steps_per_s` (executed steps / execution time of all chunks, compilation
excluded), `samples_per_s` (median over the probe's sampling calls, `num_trace` samples each;
the samplers are compiled ahead of time, `sample_compile_s`, `confirm_compile_s`), the compilation
count per chunk (`recompilations_after_first_chunk` must be 0), and the control network's FLOP/s
during sampling.

SMC (blackjax adaptive tempered SMC, `samplers.baselines.smc`) and AIS have no training; their cost
grows along two axes: the number of particles N (`particles`) and the work each particle does, the
MCMC moves per tempering stage of SMC or the annealing levels of AIS (`EFFORT_AXES`: the configured
value times `effort`). The configurations (N, effort) are run in increasing order of their nominal
cost N · effort (fewer particles first on a tie) until one is confirmed or the budget is spent; the
first confirmed one is the baseline's best found configuration for that accuracy (each is its own
compiled program; compile time excluded). At each configuration the run with the seed's key is the
probe; when it is <= tol, two further independent runs (their own keys) must both be <= tol.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

from benchmarks.grid.cell import Monitor, train_cell
from benchmarks.grid.suites import Budget
from benchmarks.perf.cells import build_cell
from benchmarks.perf.compile import CompileCounter
from benchmarks.perf.confirm import (
    MIN_CONFIRM_SAMPLES,
    check_confirm_samples,
    check_seeds,
    confirmed_index,
    needs_confirmation,
    seed_summary,
)
from benchmarks.perf.throughput import network_rate
from samplers.estimators import log_Z as log_z_estimate
from samplers.train import Diverged

__all__ = ["EFFORT_AXES", "learned_cell", "learned_cost_to_accuracy", "particles_cost_to_accuracy"]

DEFAULT_SEEDS = (0, 1, 2)
UNBOUNDED_STEPS = 10**7  # a learned cell trains until the monitor stops it (confirmed, or budget spent)


def _error(samples, log_z: float) -> float:
    err = abs(float(log_z_estimate(samples.log_w).value) - log_z)
    return err if np.isfinite(err) else float("inf")


def learned_cell(
    method: str,
    target: str,
    *,
    tol: float = 0.1,
    max_evals: float = 5e6,
    max_train_s: float = 5.0,
    chunk_size: int = 25,
    min_chunks: int = 2,
    num_trace: int = 512,
    num_confirm: int = MIN_CONFIRM_SAMPLES,
    seed: int = 0,
    **config_overrides: Any,
) -> dict[str, Any]:
    """Train until ε is confirmed or the budget is spent; the confirmed check (or the last point)
    plus the cell's throughput figures (see the module docstring). `config_overrides` replace fields
    of the method's config from the hyper-parameter table (tests use tiny ones)."""
    check_confirm_samples(num_confirm)
    t_cell = time.perf_counter()
    built = build_cell(method, target, **config_overrides)
    log_z = built.problem.log_Z
    key_train, key_trace, key_confirm = jax.random.split(jax.random.key(seed), 3)
    state_shape = jax.eval_shape(built.method.init, key_train)
    sampler = jax.jit(built.method.sample, static_argnums=2)
    t0 = time.perf_counter()
    sample = sampler.lower(key_trace, state_shape, num_trace).compile()
    sample_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    confirm_sample = sampler.lower(key_confirm, state_shape, num_confirm).compile()
    confirm_compile_s = time.perf_counter() - t0
    trace: list[dict[str, Any]] = []
    compiles: list[int] = []
    first_chunk_done: list[float] = []

    def confirm(state, i: int) -> dict[str, float]:
        t0 = time.perf_counter()
        s = jax.block_until_ready(confirm_sample(jax.random.fold_in(key_confirm, i), state))
        return {
            "confirm_error": _error(s, log_z),
            "confirm_s": time.perf_counter() - t0,
            "confirm_evals": s.cost.budget_evals(),
        }

    with CompileCounter() as counter:

        def eval_fn(state):
            t0 = time.perf_counter()
            s = jax.block_until_ready(sample(jax.random.fold_in(key_trace, len(trace)), state))
            point = {
                "train_evals": state.cost.budget_evals(),
                "error": _error(s, log_z),
                "sample_s": time.perf_counter() - t0,
                "network_evals": float(s.cost.network_evals),
                "confirm_error": None,
            }
            previous = trace[-1]["confirm_error"] if trace else None
            if needs_confirmation(point["error"], previous, tol):
                point.update(confirm(state, len(trace)))
            trace.append(point)
            compiles.append(counter.count)
            if not first_chunk_done:
                first_chunk_done.append(time.perf_counter())
            return None

        def stop(state):
            if len(trace) < min_chunks:
                return False
            reached = confirmed_index([p["confirm_error"] for p in trace], tol) is not None
            spent = state.cost.budget_evals() >= max_evals
            return reached or spent or time.perf_counter() - first_chunk_done[0] >= max_train_s

        diverged = None
        budget = Budget("cost_to_accuracy", train_steps=UNBOUNDED_STEPS, chunk_size=chunk_size)
        try:  # the grid's training step (`benchmarks.grid.cell.train_cell`) with this monitor
            trained = train_cell(
                key_train, built.method, built.problem, budget, key_trace, monitor=Monitor(eval_fn, stop)
            )
            hist, compile_s, final_state = trained.history, trained.compile_time_s, trained.state
        except Diverged as err:
            diverged, hist, compile_s, final_state = err, err.history, float("nan"), None
    if not trace:
        raise RuntimeError(f"{method}/{target}: diverged in the first chunk ({diverged})")
    train_s = np.asarray(hist["train_time_s"], float)
    steps = np.asarray(hist["step"], int)
    confirmed = confirmed_index([p["confirm_error"] for p in trace], tol)
    i = confirmed if confirmed is not None else len(trace) - 1
    if trace[i]["confirm_error"] is None and final_state is not None:  # the last check: measure it too
        trace[i].update(confirm(final_state, i))
    point = trace[i]
    measured = point["confirm_error"] is not None
    row: dict[str, Any] = {
        "method": method,
        "target": target,
        "family": built.spec.family,
        "seed": seed,
        "reached": confirmed is not None,
        "evals": point["train_evals"] + (point["confirm_evals"] if measured else 0.0),
        "wall_s": float(train_s[i]) + (point["confirm_s"] if measured else point["sample_s"]),
        "error": point["confirm_error"] if measured else point["error"],
        "error_source": f"{num_confirm} confirming samples" if measured else f"{num_trace}-sample probe",
        "train_steps": int(steps[i]),
        "tol": tol,
        "num_trace": num_trace,
        "num_confirm": num_confirm,
        "probe_crossings": sum(p["error"] <= tol for p in trace),
        "checks": [
            {"step": int(st), "probe_error": p["error"], "confirm_error": p["confirm_error"]}
            for st, p in zip(steps, trace, strict=False)
        ],
        # throughput of the same run
        "train_compile_s": compile_s,
        "step_s": float(train_s[-1] / steps[-1]),
        "train_steps_timed": int(steps[-1]),
        "backend_compiles_per_chunk": compiles,
        "recompilations_after_first_chunk": int(compiles[-1] - compiles[0]),
        "sample_compile_s": sample_compile_s,
        "confirm_compile_s": confirm_compile_s,
        "sample_s": float(statistics.median(p["sample_s"] for p in trace)),
        "num_samples": num_trace,
    }
    row["train_steps_per_s"] = 1.0 / row["step_s"]
    row["samples_per_s"] = num_trace / row["sample_s"]
    if diverged is not None:
        row["diverged_at_step"] = diverged.step
        row["diverged_reason"] = diverged.reason
    if final_state is not None:
        row.update(network_rate(built, final_state, trace[-1]["network_evals"], row["sample_s"]))
    row["cell_wall_s"] = time.perf_counter() - t_cell
    return row


def learned_cost_to_accuracy(
    method: str, target: str, *, seeds: tuple[int, ...] = DEFAULT_SEEDS, **cell_kwargs: Any
) -> dict[str, Any]:
    """`learned_cell` for every seed: the first seed's row (its throughput figures, which the
    throughput table reads) with the seeds' rows under `per_seed` and their summary (`seed_summary`:
    median and range of evals, wall and error, seeds reached) under `summary`."""
    rows = [learned_cell(method, target, seed=s, **cell_kwargs) for s in check_seeds(seeds)]
    return _with_summary(rows)


def _with_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {**rows[0], "per_seed": rows, "summary": seed_summary(rows)}


# the second axis of a particle baseline: the config field that sets each particle's work
EFFORT_AXES: dict[str, str] = {"smc": "num_mcmc_steps", "ais": "num_levels"}


def _configurations(particles, effort) -> list[tuple[int, int]]:
    """`(N, effort multiplier)` pairs in increasing nominal cost `N · effort`, fewer particles first."""
    return sorted(((n, e) for n in particles for e in effort), key=lambda c: (c[0] * c[1], c[0]))


def _particles_seed(builds, tol, configurations, max_evals, max_wall_s, seed) -> dict[str, Any]:
    """One seed of `particles_cost_to_accuracy`; `builds[e]` is the cell at effort multiplier `e`."""
    key_probe, key_confirm = jax.random.split(jax.random.key(seed + 1))
    spent, last, compile_s = 0.0, None, 0.0
    for n, e in configurations:
        built = builds[e]
        state = jax.jit(built.method.init)(jax.random.key(seed))
        sample = jax.jit(built.method.sample, static_argnums=2)
        t0 = time.perf_counter()
        compiled = sample.lower(key_probe, state, n).compile()
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        s = jax.block_until_ready(compiled(key_probe, state))
        wall = time.perf_counter() - t0
        spent += wall
        probe = _error(s, built.problem.log_Z)
        confirms: list[float | None] = [None, None]
        if needs_confirmation(probe, None, tol):
            keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key_confirm, n), e))
            confirms = [_error(compiled(k, state), built.problem.log_Z) for k in keys]
        reached = confirmed_index(confirms, tol) == 0
        axis = EFFORT_AXES.get(built.spec.name)
        last = {
            "particles": n,
            "effort": {axis: getattr(built.config, axis)} if axis else {},
            "evals": s.cost.budget_evals(),
            "wall_s": wall,
            "error": max(confirms) if reached else probe,  # the worse of the two confirmations
            "probe_error": probe,
            "confirm_errors": confirms,
            "reached": reached,
        }
        if reached or last["evals"] >= max_evals or spent >= max_wall_s:
            break
    return {**last, "seed": seed, "compile_s": compile_s}


def particles_cost_to_accuracy(
    method: str,
    target: str,
    *,
    tol: float = 0.1,
    particles: tuple[int, ...] = (128, 512, 2048, 8192),
    effort: tuple[int, ...] = (1, 4),
    max_evals: float = 5e6,
    max_wall_s: float = 20.0,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
) -> dict[str, Any]:
    """SMC / AIS: per seed, the cheapest configuration (particles × `effort` times the configured
    MCMC moves per stage / annealing levels) whose run is confirmed by two independent runs (see the
    module docstring); the first seed's row with every seed's under `per_seed` and their median and
    range under `summary`. A method without an effort axis scans particles only."""
    t_cell = time.perf_counter()
    base = build_cell(method, target)
    axis = EFFORT_AXES.get(method)
    effort = tuple(effort) if axis else (1,)
    if not effort or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in effort):
        raise ValueError(f"effort multipliers must be positive integers, got {effort!r}")
    builds = {
        e: base if e == 1 else build_cell(method, target, **{axis: getattr(base.config, axis) * e})
        for e in effort
    }
    configurations = _configurations(particles, effort)
    rows = [
        {
            "method": method,
            "target": target,
            "tol": tol,
            **_particles_seed(builds, tol, configurations, max_evals, max_wall_s, s),
        }
        for s in check_seeds(seeds)
    ]
    return {**_with_summary(rows), "cell_wall_s": time.perf_counter() - t_cell}
