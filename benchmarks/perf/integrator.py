"""Throughput of the diffrax integrator against the hand-written `lax.scan` reference (same maths).

    tiltbench perf --integrator [--repeats 7]

Both integrators simulate the controlled SDE of `samplers.sde` (Brownian base, kernel-form path
weights, the same `GridBrownianPath` noise) with a 3×128 MLP control (`samplers.networks.mlp_control`,
random non-zero output layer so the network is really evaluated) on a Gaussian target. Each
function is compiled and run once before timing; then the two are timed alternately, side by side,
`repeats` times (the machine is shared and noisy), and the table reports the medians and the
median of the per-pair ratios `t_scan / t_diffrax` (≥ 1 means diffrax is no slower).
`integrator_report` writes the record and the table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from samplers.base_processes import BrownianBase
from samplers.networks import mlp_control
from samplers.problem import sampling_problem
from samplers.sde import SDEConfig, simulate
from targets.base import Target

__all__ = ["benchmark", "integrator_report"]


def _gaussian_target(dim: int) -> Target:
    return Target(
        name=f"perf_gaussian_{dim}d",
        dim=dim,
        log_prob_fn=lambda x: -0.5 * jnp.sum((x - 1.0) ** 2),
        log_Z=0.5 * dim * float(jnp.log(2 * jnp.pi)),
    )


def _simulator(problem, control, batch_size: int, integrator: str):
    """`(key, params) -> (end points, log-weights)`, jitted, for one integrator."""
    config = SDEConfig(integrator=integrator)
    return jax.jit(lambda key, params: simulate(key, problem, control, params, batch_size, config)[:2])


def _time_call(fn, key, params) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(key, params))
    return time.perf_counter() - start


def benchmark(
    *,
    dims: Sequence[int] = (2, 10, 32),
    batch_size: int = 512,
    num_steps: int = 100,
    repeats: int = 7,
    seed: int = 0,
    verbose: bool = True,
) -> dict[int, dict[str, float]]:
    """Time both integrators per dimension.

    Args:
        dims: state dimensions.
        batch_size: particles per call.
        num_steps: EM steps.
        repeats: timed side-by-side pairs per dimension.
        seed: seed of the network initialisation and of the simulation keys.
        verbose: print the table.

    Returns:
        `{dim: {"diffrax_s": median seconds, "scan_s": median seconds, "ratio": median of
        t_scan/t_diffrax over pairs, "compile_diffrax_s", "compile_scan_s"}}`.
    """
    key = jax.random.key(seed)
    results: dict[int, dict[str, float]] = {}
    for dim in dims:
        key, key_init = jax.random.split(key)
        net = mlp_control(dim, hidden=(128, 128, 128), zero_init_output=False)
        params = net.init(key_init)
        problem = sampling_problem(_gaussian_target(dim), BrownianBase(dim), num_steps=num_steps)
        fns = {name: _simulator(problem, net.apply, batch_size, name) for name in ("diffrax", "scan")}
        compile_s = {}
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(key, params))  # compile + first run
            compile_s[name] = time.perf_counter() - start
        times: dict[str, list[float]] = {"diffrax": [], "scan": []}
        for i in range(repeats):
            call_key = jax.random.fold_in(key, i)
            order = ("diffrax", "scan") if i % 2 == 0 else ("scan", "diffrax")
            for name in order:
                times[name].append(_time_call(fns[name], call_key, params))
        ratios = [s / d for s, d in zip(times["scan"], times["diffrax"], strict=True)]
        results[dim] = {
            "diffrax_s": statistics.median(times["diffrax"]),
            "scan_s": statistics.median(times["scan"]),
            "ratio": statistics.median(ratios),
            "compile_diffrax_s": compile_s["diffrax"],
            "compile_scan_s": compile_s["scan"],
        }
    if verbose:
        print(
            f"batch {batch_size}, {num_steps} steps, 3x128 MLP control, {repeats} side-by-side repeats, "
            f"device {jax.devices()[0].platform}"
        )
        print(
            f"{'dim':>5} {'diffrax ms':>11} {'scan ms':>9} {'ratio scan/diffrax':>19} {'compile d/s (s)':>16}"
        )
        for dim, row in results.items():
            print(
                f"{dim:>5} {1e3 * row['diffrax_s']:>11.2f} {1e3 * row['scan_s']:>9.2f} {row['ratio']:>19.3f} "
                f"{row['compile_diffrax_s']:>7.1f}/{row['compile_scan_s']:<7.1f}"
            )
    return results


def integrator_report(out: Path, repeats: int = 7) -> dict[str, str]:
    """Run `benchmark` at the report's settings and write `integrator.json` and `integrator.md` under `out`.

    Returns:
        `{"markdown": path, "record": path}`.
    """
    from benchmarks.grid.records import atomic_write_json, environment, git_commit

    config = {
        "dims": [2, 10, 32],
        "batch_size": 512,
        "num_steps": 100,
        "repeats": repeats,
        "seed": 0,
        "network": "3x128 MLP control",
    }
    results = benchmark(dims=config["dims"], batch_size=512, num_steps=100, repeats=repeats, seed=0)
    record = {
        "benchmark": "integrator",
        "config": config,
        "commit": git_commit(),
        "hardware": environment(),
        "results": {str(k): v for k, v in results.items()},
    }
    atomic_write_json(out / "integrator.json", record)
    lines = [
        "# diffrax integrator vs hand-written lax.scan (same Euler–Maruyama maths, same noise)",
        "",
        f"Generated by `make perf` at commit `{record['commit']}` on {environment()['cpu']} "
        f"({environment()['backend']}). Batch 512, 100 steps, 3x128 MLP control; ratio = median over "
        f"{repeats} interleaved side-by-side pairs of t_scan / t_diffrax (>= 1: diffrax no slower).",
        "",
        "| dim | diffrax ms | scan ms | ratio scan/diffrax | compile diffrax s | compile scan s |",
        "|---|---|---|---|---|---|",
    ]
    for dim, r in results.items():
        lines.append(
            f"| {dim} | {1e3 * r['diffrax_s']:.2f} | {1e3 * r['scan_s']:.2f} | {r['ratio']:.3f} | "
            f"{r['compile_diffrax_s']:.1f} | {r['compile_scan_s']:.1f} |"
        )
    (out / "integrator.md").write_text("\n".join(lines) + "\n")
    return {"markdown": str(out / "integrator.md"), "record": str(out / "integrator.json")}
