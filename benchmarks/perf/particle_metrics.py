"""The two engines of the equivariant distance matrix behind `eq_w2`, side by side in one run.

`benchmarks.metrics.alignment.aligned_distance_matrix` has a jitted engine (the vmapped Hungarian,
the accelerator path) and a SciPy engine (the CPU default above `BRUTE_FORCE_MAX` particles). For
each case (target, frames, B) both compute the B×B matrix between two disjoint halves of the
target's reference samples; after one untimed call each (compilation), the calls are timed
interleaved (`timing.interleaved`): `ratio = t_jax / t_scipy` per round, median [min, max] (> 1: the
SciPy engine is faster). `cpu_s` is the process CPU time of one further call of each (all threads:
XLA spreads the jitted engine over the cores, SciPy runs on one, so on a machine whose cores are all
busy, as in a grid with one process per core, CPU time is what a cell pays). `max_rel_diff` is the
largest relative difference between the two matrices (both are exact; float32 against float64
rounding). `projected_s` scales the median time of each engine to the number of samples `eq_w2`
compares by default on that target (`particles.EqW2Config`): by `(B_metric / B)²` for SciPy and by
the ratio of the squared padded sizes for the jitted engine (its rows are padded to a power of two),
the cost of one matrix in a grid cell (a cell computes the model's and, once per process, the noise
floor's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import targets
from benchmarks.metrics.alignment import aligned_distance_matrix, padded_rows
from benchmarks.metrics.particles import EqW2Config
from benchmarks.perf.side_by_side import write_side_by_side
from benchmarks.perf.timing import interleaved, ratio_summary

__all__ = ["CASES", "Case", "compare_engines", "render_markdown", "run_particle_metrics"]


class Case(NamedTuple):
    """One matrix: `num_samples` × `num_samples` configurations of `target`, matched in `frames`."""

    target: str
    frames: str
    num_samples: int


CASES: tuple[Case, ...] = (  # powers of two: no padded rows in the jitted engine
    Case("lj13", "peer", 256),
    Case("lj13", "pca", 128),
    Case("lj55", "peer", 64),
)


def compare_engines(case: Case, *, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Time both engines on `case` (module docstring)."""
    target = targets.get(case.target)
    spec = target.particles
    if spec is None:
        raise ValueError(f"{case.target!r} is not a particle system")
    ref = np.asarray(target.reference_samples(jax.random.key(seed), 2 * case.num_samples))
    x, y = ref[: case.num_samples], ref[case.num_samples :]
    calls = {
        engine: (
            lambda e=engine: aligned_distance_matrix(
                x, y, spec.n_particles, spec.spatial_dim, frames=case.frames, engine=e
            )
        )
        for engine in ("jax", "scipy")
    }
    matrices = {engine: fn() for engine, fn in calls.items()}  # first calls: compilation, untimed
    times = interleaved(calls, repeats)
    median = {k: float(np.median(v)) for k, v in times.items()}
    cpu_s = {}
    for engine, fn in calls.items():
        start = time.process_time()
        fn()
        cpu_s[engine] = time.process_time() - start
    metric_b = EqW2Config(frames=case.frames).num_samples(spec.n_particles)
    scale = {
        "jax": (padded_rows(metric_b) / padded_rows(case.num_samples)) ** 2,
        "scipy": (metric_b / case.num_samples) ** 2,
    }
    return {
        **case._asdict(),
        "n_particles": spec.n_particles,
        "pairs": case.num_samples**2,
        "median_s": median,
        "cpu_s": cpu_s,
        "us_per_pair": {k: 1e6 * v / case.num_samples**2 for k, v in median.items()},
        "ratio": ratio_summary(times["jax"], times["scipy"]),
        "max_rel_diff": float(
            np.max(np.abs(matrices["jax"] - matrices["scipy"]) / np.abs(matrices["scipy"]))
        ),
        "metric_num_samples": metric_b,
        "projected_s": {k: v * scale[k] for k, v in median.items()},
    }


def run_particle_metrics(out: Path, *, repeats: int = 3, cases: tuple[Case, ...] = CASES, log=print) -> Path:
    """Compare the engines on every case; write `out/particle_metrics.json` and `.md` (returned)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = []
    for case in cases:
        rows.append(compare_engines(case, repeats=repeats))
        r = rows[-1]
        log(f"{case.target}/{case.frames}/B={case.num_samples}: jax/scipy ×{r['ratio']['median']:.2f}")
    return write_side_by_side(
        out, "particle_metrics", rows, repeats=repeats, t0=t0, started=started, render=render_markdown
    )


def render_markdown(record: dict[str, Any]) -> str:
    hw = record["hardware"]
    lines = [
        "# The equivariant distance matrix of `eq_w2`: jitted Hungarian against SciPy, side by side",
        "",
        f"Generated by `tiltbench perf --particle-metrics` (`benchmarks/perf/particle_metrics.py`) at commit "
        f"`{record['commit']}` on {hw.get('cpu')} ({hw.get('backend')}), {record['wall_s']:.0f} s. "
        "Both engines compute the same B×B matrix between two halves of the target's reference samples; "
        f"ratio = t_jax / t_scipy per interleaved round, median [min, max] over {record['repeats']} rounds "
        "(> 1: SciPy faster), compilation excluded. CPU s: process CPU time of one call (all threads; the "
        "jitted engine uses every core, SciPy one). Projected: the median wall time scaled to the number of "
        "samples `eq_w2` compares on that target (B_metric; the jitted engine's rows are padded to a power "
        "of two; one matrix, and a cell also computes the noise floor's once per process).",
        "",
        "| target | frames | B | wall s jax / scipy | ratio | CPU s jax / scipy | µs per pair jax / scipy "
        "| max rel. diff | B_metric | projected wall s jax / scipy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        q, t, u, p, c = r["ratio"], r["median_s"], r["us_per_pair"], r["projected_s"], r["cpu_s"]
        lines.append(
            f"| {r['target']} | {r['frames']} | {r['num_samples']} | {t['jax']:.3g} / {t['scipy']:.3g} | "
            f"{q['median']:.2f} [{q['min']:.2f}, {q['max']:.2f}] | {c['jax']:.3g} / {c['scipy']:.3g} | "
            f"{u['jax']:.3g} / {u['scipy']:.3g} | {r['max_rel_diff']:.1e} | {r['metric_num_samples']} | "
            f"{p['jax']:.3g} / {p['scipy']:.3g} |"
        )
    return "\n".join(lines) + "\n"
