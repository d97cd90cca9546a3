"""Energy evaluations and wall time to reach |log Ẑ - log Z| <= tol (the cost-to-accuracy table).

Learned methods (`learned_cell`): ONE training run per (method, target) gives both this table's
row and the cell's throughput row, so that `make perf` compiles each cell once. The cell is
trained by `samplers.train.train` (the harness the runner uses) in chunks of `chunk_size` steps;
after every chunk `num_trace` fresh samples give the importance-sampling estimate
`log Ẑ = LSE(log w) - log N` (as the runner's trace). Training stops at the first chunk whose
error is <= tol ("reached"; at least `min_chunks` chunks are run, so that the recompilation check
sees a second chunk), or when its budget is spent: `max_evals` energy + gradient evaluations of
training, or `max_train_s` seconds of wall time after the first chunk (the first chunk holds the
compilation, which is reported separately as `train_compile_s`). Reported evals = training evals
so far + the evaluations of the `num_trace` samples of the estimate; wall = training execution
time so far + that sampling call (compilation excluded). A single seed: the first crossing of a
noisy estimate, so read it as an order of magnitude. A run that diverges keeps its last finite
point and says so (`diverged_at_step`).

From the same run: `train_steps_per_s` (executed steps / execution time of all chunks, compilation
excluded), `samples_per_s` (median over the estimate's sampling calls, `num_trace` samples each;
the sampler is compiled ahead of time, `sample_compile_s`), the compilation count per chunk
(`recompilations_after_first_chunk` must be 0), and the control network's FLOP/s during sampling.

SMC (blackjax adaptive tempered SMC, `samplers.baselines.smc`) and AIS have no training; their cost
grows with the number of particles: N = `particles[0]`, multiplied by 4 until the error is <= tol or
the budget is spent (each N is its own compiled program; compile time excluded).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

from benchmarks.perf.cells import build_cell
from benchmarks.perf.compile import CompileCounter
from benchmarks.perf.throughput import network_rate
from samplers.estimators import log_Z as log_z_estimate
from samplers.train import Diverged, train

__all__ = ["learned_cell", "particles_cost_to_accuracy"]


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
    seed: int = 0,
    **config_overrides: Any,
) -> dict[str, Any]:
    """Train until the error is <= tol or the budget is spent; the crossing (or the last point) plus
    the cell's throughput figures (see the module docstring). `config_overrides` replace fields of
    the method's config from the hyper-parameter table (tests use tiny ones)."""
    t_cell = time.perf_counter()
    built = build_cell(method, target, **config_overrides)
    log_z = built.problem.log_Z
    key_train, key_trace = jax.random.split(jax.random.key(seed))
    state_shape = jax.eval_shape(built.method.init, key_train)
    t0 = time.perf_counter()
    sample = jax.jit(built.method.sample, static_argnums=2).lower(key_trace, state_shape, num_trace).compile()
    sample_compile_s = time.perf_counter() - t0
    trace: list[dict[str, Any]] = []
    compiles: list[int] = []
    first_chunk_done: list[float] = []

    with CompileCounter() as counter:

        def eval_fn(state):
            t0 = time.perf_counter()
            s = jax.block_until_ready(sample(jax.random.fold_in(key_trace, len(trace)), state))
            sample_s = time.perf_counter() - t0
            err = abs(float(log_z_estimate(s.log_w).value) - log_z)
            if not np.isfinite(err):
                err = float("inf")
            evals = state.cost.budget_evals() + s.cost.budget_evals()
            trace.append(
                {
                    "evals": evals,
                    "error": err,
                    "sample_s": sample_s,
                    "network_evals": float(s.cost.network_evals),
                }
            )
            compiles.append(counter.count)
            if not first_chunk_done:
                first_chunk_done.append(time.perf_counter())
            return None

        def stop(state):
            if len(trace) < min_chunks:
                return False
            reached = any(p["error"] <= tol for p in trace)
            spent = state.cost.budget_evals() >= max_evals
            return reached or spent or time.perf_counter() - first_chunk_done[0] >= max_train_s

        diverged = None
        try:
            result = train(
                key_train, built.method, num_steps=10**7, chunk_size=chunk_size, eval_fn=eval_fn, stop_fn=stop
            )
            hist, compile_s, final_state = result.history, result.compile_time_s, result.state
        except Diverged as err:
            diverged, hist, compile_s, final_state = err, err.history, float("nan"), None
    if not trace:
        raise RuntimeError(f"{method}/{target}: diverged in the first chunk ({diverged})")
    train_s = np.asarray(hist["train_time_s"], float)
    steps = np.asarray(hist["step"], int)
    reached = [i for i, p in enumerate(trace) if p["error"] <= tol]
    i = reached[0] if reached else len(trace) - 1
    row: dict[str, Any] = {
        "method": method,
        "target": target,
        "family": built.spec.family,
        "reached": bool(reached),
        "evals": trace[i]["evals"],
        "wall_s": float(train_s[i]) + trace[i]["sample_s"],
        "error": trace[i]["error"],
        "train_steps": int(steps[i]),
        "tol": tol,
        "num_trace": num_trace,
        # throughput of the same run
        "train_compile_s": compile_s,
        "step_s": float(train_s[-1] / steps[-1]),
        "train_steps_timed": int(steps[-1]),
        "backend_compiles_per_chunk": compiles,
        "recompilations_after_first_chunk": int(compiles[-1] - compiles[0]),
        "sample_compile_s": sample_compile_s,
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


def particles_cost_to_accuracy(
    method: str,
    target: str,
    *,
    tol: float = 0.1,
    particles: tuple[int, ...] = (128, 512, 2048, 8192),
    max_evals: float = 5e6,
    max_wall_s: float = 20.0,
    seed: int = 0,
) -> dict[str, Any]:
    """SMC / AIS: the smallest particle count of `particles` whose run reaches the error (one seed)."""
    t_cell = time.perf_counter()
    built = build_cell(method, target)
    state = jax.jit(built.method.init)(jax.random.key(seed))
    sample = jax.jit(built.method.sample, static_argnums=2)
    key = jax.random.key(seed + 1)
    spent, last, compile_s = 0.0, None, 0.0
    for n in particles:
        t0 = time.perf_counter()
        compiled = sample.lower(key, state, n).compile()
        compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        s = jax.block_until_ready(compiled(key, state))
        wall = time.perf_counter() - t0
        spent += wall
        err = abs(float(log_z_estimate(s.log_w).value) - built.problem.log_Z)
        last = {"particles": n, "evals": s.cost.budget_evals(), "wall_s": wall, "error": err}
        if err <= tol or last["evals"] >= max_evals or spent >= max_wall_s:
            break
    return {
        "method": method,
        "target": target,
        "reached": last["error"] <= tol,
        **last,
        "compile_s": compile_s,
        "cell_wall_s": time.perf_counter() - t_cell,
        "tol": tol,
    }
