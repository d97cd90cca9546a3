"""Energy evaluations and wall time to reach |log Ẑ - log Z| <= tol (the cost-to-accuracy table).

Learned methods: trained by `samplers.train.train` in chunks; after every chunk `num_trace` fresh
samples give the importance-sampling estimate `log Ẑ = LSE(log w) - log N` (as the runner's
trace). The cell stops at the first chunk whose error is <= tol ("reached"), or when its budget is
spent: `max_evals` energy + gradient evaluations of training, or `max_wall_s` seconds of the
training loop (compilation of the first chunk included). Reported evals = training evals so far
+ the evaluations of the `num_trace` samples of the estimate; wall = training execution time so
far + that sampling call (compilation excluded, reported separately). A single seed: the first
crossing of a noisy estimate, so read it as an order of magnitude.

SMC (blackjax adaptive tempered SMC, `samplers.baselines.smc`) and AIS have no training; their cost
grows with the number of particles: N = `smc_particles[0]`, doubled until the error is <= tol or
the budget is spent (each N is its own compiled program; compile time excluded).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from benchmarks.perf.cells import build_cell
from samplers.estimators import log_Z as log_z_estimate
from samplers.train import train

__all__ = ["learned_cost_to_accuracy", "particles_cost_to_accuracy"]


def learned_cost_to_accuracy(
    method: str,
    target: str,
    *,
    tol: float = 0.1,
    max_evals: float = 5e6,
    max_wall_s: float = 20.0,
    chunk_size: int = 25,
    num_trace: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Train until the error is <= tol or the budget is spent; returns the crossing (or the last point)."""
    t_cell = time.perf_counter()
    built = build_cell(method, target)
    log_z = built.problem.log_Z
    sample = jax.jit(built.method.sample, static_argnums=2)
    key_train, key_trace = jax.random.split(jax.random.key(seed))
    trace: list[dict[str, float]] = []

    def eval_fn(state):
        i = len(trace)
        t0 = time.perf_counter()
        s = jax.block_until_ready(sample(jax.random.fold_in(key_trace, i), state, num_trace))
        sample_s = time.perf_counter() - t0 if i > 0 else float("nan")  # the first call compiles
        err = abs(float(log_z_estimate(s.log_w).value) - log_z)
        evals = state.cost.budget_evals() + s.cost.budget_evals()
        trace.append({"evals": evals, "error": err, "sample_s": sample_s})
        return None

    start = time.perf_counter()

    def stop(state):
        elapsed = time.perf_counter() - start  # includes the first chunk's compilation
        return trace[-1]["error"] <= tol or state.cost.budget_evals() >= max_evals or elapsed >= max_wall_s

    result = train(
        key_train, built.method, num_steps=100_000, chunk_size=chunk_size, eval_fn=eval_fn, stop_fn=stop
    )
    hist = result.history
    train_s = np.asarray(hist["train_time_s"], float)
    steps = np.asarray(hist["step"], int)
    reached = [i for i, p in enumerate(trace) if p["error"] <= tol]
    i = reached[0] if reached else len(trace) - 1
    sample_s = trace[i]["sample_s"] if np.isfinite(trace[i]["sample_s"]) else 0.0
    return {
        "method": method,
        "target": target,
        "reached": bool(reached),
        "evals": trace[i]["evals"],
        "wall_s": float(train_s[i]) + sample_s,
        "error": trace[i]["error"],
        "train_steps": int(steps[i]),
        "compile_s": result.compile_time_s,
        "cell_wall_s": time.perf_counter() - t_cell,
        "tol": tol,
        "num_trace": num_trace,
    }


def particles_cost_to_accuracy(
    method: str,
    target: str,
    *,
    tol: float = 0.1,
    particles: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096),
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
