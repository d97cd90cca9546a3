"""Training and sampling throughput of one cell, its compile times and its compilation count.

For a learned method the cell is trained by `samplers.train.train` (the harness the runner uses)
for `num_chunks` chunks of `chunk_size` steps: `compile_s` is the ahead-of-time compilation of the
chunk program (the "first step" cost), `step_s` the execution time of all chunks divided by
the steps (steady state: compilation is excluded by construction; 20 steps amortise one buffer
refresh of the bridge-regression methods, whose `refresh_every` is 20), and the jax.monitoring count
says whether anything was compiled after the first chunk. MCMC baselines run their one warm-up
round as their "training step"; SMC / AIS have none. Sampling: `method.sample` is compiled once
(`sample_compile_s`), then timed `repeats` times on `num_samples` samples (`samples_per_s` from the
median). `network_flop_per_s` is the network FLOPs executed by the sampling call (FLOPs of one
evaluation, `benchmarks.perf.flops`, times the `Cost.network_evals` of the call) per second of the
call: the achieved rate of the control network inside the sampler, a lower bound of the network's
own rate (the call also spends time on energies and the integrator).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.perf.cells import build_cell
from benchmarks.perf.compile import train_with_compile_count
from benchmarks.perf.flops import network_flops
from benchmarks.perf.timing import time_call

__all__ = ["cell_throughput", "control_network", "network_rate"]


def _network_params(params: Any) -> Any:
    if isinstance(params, dict):
        for name in ("control", "drift"):
            if name in params:
                return params[name]
        return params if "params" in params else None
    return None


def control_network(built) -> tuple[Any, Any] | None:
    """`(apply, params_of(state))` of the cell's control network, rebuilt as the method builds it, or
    None (no control network: MCMC, SMC, AIS, NETS action matching). A grad-log-target feature is fed
    zeros, so its FLOPs are the network's own, not the target's."""
    from samplers.methods.common import build_control_network

    config = built.config
    if not hasattr(config, "network") or built.spec.name == "nets_action":
        return None
    feature = bool(getattr(config, "grad_log_target_feature", False)) and built.spec.name != "nets_pinn"
    net = build_control_network(
        built.problem,
        network=config.network.kind,
        hidden=config.network.hidden,
        time_embedding_dim=config.network.time_embedding_dim,
        grad_log_target=(lambda x: jnp.zeros_like(x)) if feature else None,
    )
    return net.apply, lambda state: _network_params(state.params)


def cell_throughput(
    method: str,
    target: str,
    *,
    chunk_size: int = 10,
    num_chunks: int = 2,
    num_samples: int = 512,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure one (method, target) cell; returns a JSON-able dict (see the module docstring)."""
    t_cell = time.perf_counter()
    built = build_cell(method, target)
    spec, m = built.spec, built.method
    key_train, key_sample = jax.random.split(jax.random.key(seed))
    row: dict[str, Any] = {"method": method, "target": target, "family": spec.family}
    if spec.train_steps is None:
        result, counts = train_with_compile_count(
            key_train, m, num_steps=chunk_size * num_chunks, chunk_size=chunk_size
        )
        row.update(
            train_compile_s=result.compile_time_s,
            step_s=result.train_time_s / (chunk_size * num_chunks),
            train_steps_timed=int(chunk_size * num_chunks),
            **counts,
        )
        row["train_steps_per_s"] = 1.0 / row["step_s"]
        state = result.state
    elif spec.train_steps > 0:  # MCMC: one warm-up round is the "training step"
        result, counts = train_with_compile_count(key_train, m, num_steps=spec.train_steps, chunk_size=1)
        row.update(
            train_compile_s=result.compile_time_s,
            step_s=result.train_time_s / spec.train_steps,
            train_step_kind="warm-up round",
            **counts,
        )
        row["train_steps_per_s"] = 1.0 / row["step_s"]
        state = result.state
    else:
        state = jax.jit(m.init)(key_train)
        row["train_step_kind"] = "none"
    sample = jax.jit(m.sample, static_argnums=2)
    start = time.perf_counter()
    compiled = sample.lower(key_sample, state, num_samples).compile()
    row["sample_compile_s"] = time.perf_counter() - start
    out = jax.block_until_ready(compiled(key_sample, state))
    times = [
        time_call(lambda i=i: compiled(jax.random.fold_in(key_sample, i), state)) for i in range(repeats)
    ]
    row["sample_s"] = float(statistics.median(times))
    row["num_samples"] = num_samples
    row["samples_per_s"] = num_samples / row["sample_s"]
    row["sample_cost"] = out.cost.as_dict()
    row.update(network_rate(built, state, float(out.cost.network_evals), row["sample_s"]))
    row["wall_s"] = time.perf_counter() - t_cell
    return row


def network_rate(built, state: Any, network_evals: float, seconds: float) -> dict[str, Any]:
    """`{network_flops_per_eval, network_flops_source, network_flop_per_s}` of a sampling call that
    made `network_evals` control-network evaluations in `seconds`; empty without a control network."""
    network = control_network(built)
    if network is None or network_evals <= 0:
        return {}
    apply, params_of = network
    flops = network_flops(apply, params_of(state), built.problem.dim)
    return {
        "network_flops_per_eval": flops["flops"],
        "network_flops_source": flops["source"],
        "network_flop_per_s": flops["flops"] * network_evals / seconds,
    }
