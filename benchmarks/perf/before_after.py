"""Before/after ratios of the speed optimisations, measured side by side in one run.

Each `Optimisation` names a method and the config override that restores the code path as it was
before the change (the override is a real, documented config field, so "before" is exactly the
old computation, not a re-creation). For each target, both variants of the cell (the runner's
settings, `cells.build_cell`) are compiled ahead of time, then their training chunk
(`steps` steps of `samplers.train`'s chunk program) and their sampling call (`num_samples`
samples) are timed interleaved (`timing.interleaved`): `ratio = t_before / t_after` per round,
median and spread (> 1: the change made it faster). The cost counters of one sampling call of
each variant say what was saved (evaluations per sample).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from benchmarks.perf.cells import build_cell
from benchmarks.perf.side_by_side import write_side_by_side
from benchmarks.perf.timing import interleaved, ratio_summary

__all__ = ["OPTIMISATIONS", "Optimisation", "before_after", "render_markdown", "run_before_after"]


class Optimisation(NamedTuple):
    """A speed change: `method` is measured with `before` (config overrides restoring the old path)
    against its current default, on `targets`."""

    method: str
    before: tuple[tuple[str, Any], ...]
    what: str
    targets: tuple[str, ...]


OPTIMISATIONS: dict[str, Optimisation] = {
    "cmcd_reuse_drift_gradient": Optimisation(
        method="cmcd_lv",
        before=(("reuse_drift_gradient", False),),
        what=(
            "CMCD: the control network's grad-log-target feature reuses the clipped ∇log γ(x) the "
            "forward and backward kernels compute at every point (one gradient evaluation per point "
            "instead of two)"
        ),
        targets=("many_well32",),
    ),
    "cmcd_checkpoint_steps": Optimisation(
        method="cmcd_lv",
        before=(("checkpoint_steps", False),),
        what=(
            "CMCD: each chain step is rematerialised in the backward pass (`jax.checkpoint`), so a "
            "training step keeps the K states instead of every step's network activations (a memory "
            "change: on lj13 with the EGNN 32 GB -> 0.5 GB per step, `tests/benchmarks/perf/test_memory.py`; "
            "the ratio shows what it costs in time)"
        ),
        targets=("many_well32",),
    ),
}


def before_after(
    name: str, target: str, *, steps: int = 3, num_samples: int = 512, repeats: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Time the optimisation `name` (a key of `OPTIMISATIONS`) on `target`; see the module docstring."""
    from samplers.train import _make_chunk  # the exact chunk program of samplers.train.train

    if name not in OPTIMISATIONS:
        raise ValueError(f"unknown optimisation {name!r}; valid choices: {sorted(OPTIMISATIONS)}")
    opt = OPTIMISATIONS[name]
    variants = {
        "before": build_cell(opt.method, target, **dict(opt.before)),
        "after": build_cell(opt.method, target),
    }
    key_init, key_steps, key_sample = jax.random.split(jax.random.key(seed), 3)
    start, num_valid = jnp.asarray(0, jnp.int32), jnp.asarray(steps, jnp.int32)
    train_calls, sample_calls, costs, temp_gb = {}, {}, {}, {}
    for label, built in variants.items():
        state = jax.jit(built.method.init)(key_init)
        chunk = (
            jax.jit(_make_chunk(built.method.step, steps)).lower(state, key_steps, start, num_valid).compile()
        )
        temp_gb[label] = chunk.memory_analysis().temp_size_in_bytes / 1e9
        sample = (
            jax.jit(built.method.sample, static_argnums=2).lower(key_sample, state, num_samples).compile()
        )
        train_calls[label] = lambda c=chunk, s=state: c(s, key_steps, start, num_valid).state
        sample_calls[label] = lambda c=sample, s=state: c(key_sample, s)
        out = jax.block_until_ready(sample_calls[label]())
        costs[label] = {k: v / num_samples for k, v in out.cost.as_dict().items() if v}
    train_times = interleaved(train_calls, repeats)
    sample_times = interleaved(sample_calls, repeats)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    return {
        "optimisation": name,
        "method": opt.method,
        "target": target,
        "what": opt.what,
        "before": dict(opt.before),
        "steps_per_call": steps,
        "num_samples": num_samples,
        "train_s": {k: median(v) for k, v in train_times.items()},
        "sample_s": {k: median(v) for k, v in sample_times.items()},
        "train_ratio": ratio_summary(train_times["before"], train_times["after"]),
        "sample_ratio": ratio_summary(sample_times["before"], sample_times["after"]),
        "cost_per_sample": costs,
        "train_temp_gb": temp_gb,
    }


def run_before_after(out: Path, *, repeats: int = 7, log=print) -> Path:
    """Measure every optimisation on its targets; write `out/before_after.json` and `.md` (returned)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = []
    for name, opt in OPTIMISATIONS.items():
        for target in opt.targets:
            rows.append(before_after(name, target, repeats=repeats))
            train, sample = rows[-1]["train_ratio"]["median"], rows[-1]["sample_ratio"]["median"]
            log(f"{name}/{target}: train ×{train:.3f}, sample ×{sample:.3f}")
    return write_side_by_side(
        out, "before_after", rows, repeats=repeats, t0=t0, started=started, render=render_markdown
    )


def render_markdown(record: dict[str, Any]) -> str:
    hw = record["hardware"]
    lines = [
        "# Speed optimisations: before / after, side by side",
        "",
        f"Generated by `tiltbench perf --before-after` (`benchmarks/perf/before_after.py`) at commit "
        f"`{record['commit']}` on {hw.get('cpu')} ({hw.get('backend')}), {record['wall_s']:.0f} s. "
        "`before` re-enables the old code path through a config field; ratio = t_before / t_after per "
        f"interleaved round, median [min, max] over {record['repeats']} rounds (> 1: faster now). "
        "Evaluations per sample from the cost counters of one sampling call.",
        "",
        "| optimisation | method | target | train ratio | sample ratio "
        "| grad evals / sample before → after | training-chunk memory GB before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        tr, sr = r["train_ratio"], r["sample_ratio"]
        before, after = (r["cost_per_sample"][k].get("grad_evals", 0.0) for k in ("before", "after"))
        lines.append(
            f"| {r['optimisation']} | {r['method']} | {r['target']} | {tr['median']:.3f} [{tr['min']:.3f}, "
            f"{tr['max']:.3f}] | {sr['median']:.3f} [{sr['min']:.3f}, {sr['max']:.3f}] | "
            f"{before:.0f} → {after:.0f} | "
            f"{r['train_temp_gb']['before']:.3f} → {r['train_temp_gb']['after']:.3f} |"
        )
    lines += ["", *[f"- `{k}`: {o.what}." for k, o in OPTIMISATIONS.items()]]
    return "\n".join(lines) + "\n"
