"""Harness overhead: a method's training chunk against its hand-fused reference (same maths).

The method side is the very program `samplers.train.train` compiles (`lax.scan` over
`method.step` with the per-step `lax.cond` mask and finiteness checks, diffrax, flax); the
reference side is a plain `lax.scan` over `benchmarks.perf.references`' step. Both start from the
same state and use the same step keys; they are compiled first, then timed A/B/A/B
(`timing.interleaved`). `ratio = t_reference / t_method` per round, median and spread: 1 means no
overhead, the goal is >= 0.9.

Beside the timing, `xla_flops` counts the arithmetic each program asks for (`flops.program_flops`, the
lowered programs, deterministic): `method / reference` above 1 is work the reference does not do.
For PIS (backpropagation through the SDE) it is 1.34 on funnel10: diffrax's
`RecursiveCheckpointAdjoint` stores each step's state, not its activations, and recomputes the step's
forward pass in the backward pass; the scan integrator (`sde.integrator=scan`) keeps the activations,
as the reference does, and counts 1.00. The methods that do not backpropagate through the SDE
(Adjoint Matching, Adjoint Sampling, NETS) count 1.00 on either integrator.

For Adjoint Sampling the record also counts the control network's FLOPs of one timed call
(`chunk_network_flops`): the refresh's `resample_size · K` forward evaluations and the regression's
`steps · batch_size` forward + backward passes, each from XLA's count of the network alone
(`flops.network_flops`, `flops.network_train_flops`); the energy and its gradient, the buffer, the
bridge sampling and the optimiser are not counted. `method_flop_per_s` / `reference_flop_per_s` are that
count over the median call times (`make perf` adds their fraction of the matmul peak).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.perf.cells import build_cell
from benchmarks.perf.flops import program_flops
from benchmarks.perf.references import reference_step
from benchmarks.perf.timing import interleaved, ratio_summary, time_call

__all__ = ["chunk_network_flops", "harness_ratio"]


def chunk_network_flops(method: str, built, steps: int) -> dict[str, Any] | None:
    """Network FLOPs of `steps` training steps from step 0 (module docstring), for Adjoint Sampling;
    None for the other methods."""
    from benchmarks.perf.flops import network_flops, network_train_flops
    from samplers.methods.common import config_network

    if method != "adjoint_sampling":
        return None
    config, dim = built.config, built.problem.dim
    net = config_network(built.problem, config)
    params = net.init(jax.random.key(0))
    forward, train = network_flops(net.apply, params, dim), network_train_flops(net.apply, params, dim)
    refreshes = math.ceil(steps / config.refresh_every)
    forwards = refreshes * config.resample_size * built.problem.num_steps
    passes = steps * config.batch_size
    return {
        "flops": forwards * forward["flops"] + passes * train["flops"],
        "forward_evals": forwards,
        "train_passes": passes,
        "forward_flops": forward["flops"],
        "train_flops": train["flops"],
        "source": forward["source"],
    }


def harness_ratio(
    method: str, target: str, *, steps: int = 3, repeats: int = 5, seed: int = 0, **overrides: Any
) -> dict[str, Any]:
    """Time `steps` training steps of `method` and of its reference, interleaved `repeats` times.

    A buffer method (one with `refresh_every`) is timed over one whole refresh period instead
    (`max(steps, refresh_every)` steps, starting with a refresh), so that refresh and regression
    steps weigh as they do in training."""
    from samplers.train import _make_chunk  # the exact chunk program of samplers.train.train

    built = build_cell(method, target, **overrides)
    steps = max(steps, int(getattr(built.config, "refresh_every", 0) or 0))
    state = jax.jit(built.method.init)(jax.random.key(seed))
    key = jax.random.key(seed + 1)
    chunk = jax.jit(_make_chunk(built.method.step, steps))
    ref = reference_step(method, built.problem, built.config)

    @jax.jit
    def ref_chunk(state, key):
        body = lambda s, i: ref(jax.random.fold_in(key, i), s)
        return jax.lax.scan(body, state, jnp.arange(steps, dtype=jnp.int32))

    start, num_valid = jnp.asarray(0, jnp.int32), jnp.asarray(steps, jnp.int32)
    flops_method = program_flops(chunk, state, key, start, num_valid)
    flops_reference = program_flops(ref_chunk, state, key)
    run_method = lambda: chunk(state, key, start, num_valid).state
    run_ref = lambda: ref_chunk(state, key)[0]
    compile_s = {}
    for name, fn in (("method", run_method), ("reference", run_ref)):
        t0 = time.perf_counter()
        time_call(fn)
        compile_s[name] = time.perf_counter() - t0
    times = interleaved({"method": run_method, "reference": run_ref}, repeats)
    row = {
        "method": method,
        "target": target,
        "steps_per_call": steps,
        "batch_size": built.config.batch_size,
        "num_steps": built.problem.num_steps,
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "method_s": sorted(times["method"])[len(times["method"]) // 2],
        "reference_s": sorted(times["reference"])[len(times["reference"]) // 2],
        "ratio": ratio_summary(times["reference"], times["method"]),
        "first_call_s": compile_s,
    }
    if flops_method is not None and flops_reference is not None:
        row["xla_flops"] = {"method": flops_method, "reference": flops_reference}
    flops = chunk_network_flops(method, built, steps)
    if flops is not None:
        row["network_flops"] = flops
        row["method_flop_per_s"] = flops["flops"] / row["method_s"]
        row["reference_flop_per_s"] = flops["flops"] / row["reference_s"]
    return row
