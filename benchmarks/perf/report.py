"""The performance report: run every section under a time budget, write `results/perf.md` + JSON.

`run_perf(config)` measures, on the default JAX device:
1. the float32 matmul peak (`flops.matmul_peak`);
2. every method on the cell targets: one training run of a learned method gives its throughput,
   compile-time, recompilation and FLOP/s row and its cost-to-accuracy row
   (`cost_to_accuracy.learned_cell`); SMC/AIS reach the accuracy by more particles and more MCMC
   moves per stage / annealing levels;
3. throughput rows of the MCMC baselines and of the four code-path representatives on the other
   reference targets (`throughput.cell_throughput`);
4. the harness-overhead ratios against the hand-fused references (`overhead.harness_ratio`): the four
   code-path representatives on the reference target, and Adjoint Sampling with the EGNN on the
   particle targets (dw4, lj13), with the training step's network FLOP rate against the matmul peak;
5. energy + gradient evaluations per second of the suite's targets (`target_evals.target_throughput`):
   what one unit of the budget axis costs in time, and on the Gaussian mixtures the ratio of the
   former per-point triangular-solve whitening to the current one.
Each section has a wall-clock budget; cells that do not fit are listed as skipped, never silently
dropped. The JSON record (`results/perf/perf.json`) keeps one entry per backend (`cpu`, `gpu`, ...)
so that runs on different devices sit side by side; the Markdown report renders every backend.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

import samplers
from benchmarks.grid.records import atomic_write_json, environment, git_commit, nonfinite_back

__all__ = ["PerfConfig", "render_markdown", "run_perf"]

REPRESENTATIVES = ("adjoint_matching", "adjoint_sampling", "pis", "nets_pinn")


@dataclasses.dataclass(frozen=True)
class PerfConfig:
    """What `make perf` measures (defaults sized for about 10-11 min on a quiet 2-core CPU).

    Attributes:
        cell_targets: targets on which EVERY method is measured: a learned method by one training
            run that gives its throughput row and its cost-to-accuracy row
            (`cost_to_accuracy.learned_cell`); SMC and AIS by the particles × effort cost-to-accuracy
            scan (`cost_to_accuracy.particles_cost_to_accuracy`).
        mcmc_target: target of the throughput rows of the non-learned methods (MCMC warm-up rounds,
            SMC/AIS sampling; `throughput.cell_throughput`).
        extra_targets: `{target: methods}` throughput rows in addition (the code-path
            representatives on the other reference targets).
        reference_target: target of the harness-overhead ratios of the four representatives.
        particle_ratio_targets: particle targets of the Adjoint Sampling (EGNN) overhead ratios.
        particle_ratio_overrides: their config overrides: the suite's network (EGNN, width 64, 3
            layers), K = 100 and settings otherwise, with the refresh period scaled down 4x and the
            batches 4x and 16x (refresh forwards : regression passes stays the suite's 3.3 : 1, each
            timed call is 1/16 of the suite's refresh period of 20 steps).
        particle_ratio_repeats: their A/B rounds (an lj13 call takes ~1.5 s on a quiet 2-core CPU).
        chunk_size, num_chunks: training steps per timed chunk, and chunks (extra throughput rows).
        num_samples, sample_repeats: sampling throughput batch and timed calls.
        ratio_steps, ratio_repeats: steps per timed call and A/B rounds of the overhead ratios.
        tol: the |log Z error| to reach.
        seeds: the seeds of every cost-to-accuracy figure (median and range; at least 3).
        num_confirm: fresh samples of the independent evaluation that confirms a crossing (>= 4096;
            `benchmarks.perf.confirm`).
        accuracy_chunk_size: training steps between two log-Z checks of a learned cell.
        accuracy_max_evals, accuracy_max_train_s: per-cell training budget of a learned cell
            (energy + gradient evaluations; wall seconds after the first, compiling chunk).
        eval_targets, eval_batch, eval_repeats: the targets of the evaluation-throughput rows, the
            points per timed call and the timed calls (`target_evals.target_throughput`).
        budgets_s: wall-clock budget of each section (cells, throughput, overhead, targets); a cell
            that does not fit is listed as skipped.
    """

    cell_targets: tuple[str, ...] = ("funnel10", "many_well32")
    mcmc_target: str = "funnel10"
    extra_targets: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("gmm40", ("adjoint_matching", "adjoint_sampling")),
        ("lj13", ("adjoint_sampling",)),  # EGNN; an AM step on lj13 takes ~4 s on 2 CPU cores
    )
    reference_target: str = "funnel10"
    particle_ratio_targets: tuple[str, ...] = ("dw4", "lj13")
    particle_ratio_overrides: tuple[tuple[str, Any], ...] = (
        ("batch_size", 64),
        ("resample_size", 32),
        ("refresh_every", 5),
    )
    particle_ratio_repeats: int = 5
    chunk_size: int = 10
    num_chunks: int = 2
    num_samples: int = 512
    sample_repeats: int = 3
    ratio_steps: int = 3
    ratio_repeats: int = 11
    tol: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)
    num_confirm: int = 4096
    accuracy_chunk_size: int = 10
    accuracy_max_evals: float = 5e6
    accuracy_max_train_s: float = 2.5
    eval_targets: tuple[str, ...] = ("gmm40", "mog50", "funnel10", "many_well32", "dw4", "lj13", "lj55")
    eval_batch: int = 512
    eval_repeats: int = 7
    budgets_s: tuple[tuple[str, float], ...] = (
        ("cells", 440.0),
        ("throughput", 90.0),
        ("overhead", 120.0),
        ("targets", 60.0),
    )

    def scaled(self, factor: float) -> PerfConfig:
        """The same report with every time budget (sections and per-cell training) times `factor`."""
        if not factor > 0:
            raise ValueError(f"the budget scale must be positive, got {factor}")
        return dataclasses.replace(
            self,
            accuracy_max_train_s=self.accuracy_max_train_s * factor,
            budgets_s=tuple((k, v * factor) for k, v in self.budgets_s),
        )


def _budgeted(name: str, cells: list[tuple[str, Callable[[], dict]]], budget_s: float, log) -> dict:
    start = time.perf_counter()
    rows, skipped, errors = [], [], []
    for label, fn in cells:
        if time.perf_counter() - start > budget_s:
            skipped.append(label)
            continue
        try:
            row = fn()
            rows.append(row)
            log(f"[{name}] {label}: {json.dumps(_brief(row))}")
        except Exception as err:  # noqa: BLE001 - recorded, the report goes on
            errors.append(
                {"cell": label, "error": f"{type(err).__name__}: {err}", "tb": traceback.format_exc(limit=4)}
            )
            log(f"[{name}] {label}: ERROR {type(err).__name__}: {err}")
    return {
        "rows": rows,
        "skipped": skipped,
        "errors": errors,
        "wall_s": time.perf_counter() - start,
        "budget_s": budget_s,
    }


def _brief(row: dict) -> dict:
    keys = ("step_s", "samples_per_s", "train_compile_s", "ratio", "reached", "evals", "error")
    row = {**row, **row.get("summary", {})}  # a cost-to-accuracy row: its median over the seeds
    median = lambda v: v["median"] if isinstance(v, dict) else v
    return {k: median(row[k]) for k in keys if k in row}


def applicable(method: str, target: str) -> bool:
    """Whether `method` supports the base the hyper-parameter table gives `(method, target)`."""
    from benchmarks.grid import hyperparams

    return samplers.get(method).supports(hyperparams.resolve(method, target).problem.base)


def _cell(method: str, target: str, config: PerfConfig) -> Callable[[], dict]:
    from benchmarks.perf.cost_to_accuracy import learned_cost_to_accuracy, particles_cost_to_accuracy

    if samplers.get(method).train_steps is None:
        return lambda: learned_cost_to_accuracy(
            method,
            target,
            seeds=config.seeds,
            num_confirm=config.num_confirm,
            tol=config.tol,
            max_evals=config.accuracy_max_evals,
            max_train_s=config.accuracy_max_train_s,
            chunk_size=config.accuracy_chunk_size,
            num_trace=config.num_samples,
        )
    return lambda: particles_cost_to_accuracy(
        method, target, tol=config.tol, max_evals=config.accuracy_max_evals, seeds=config.seeds
    )


def _log_Z_capable(method: str) -> bool:
    """Learned methods and the particle methods with a log-Z estimate (SMC, AIS); not NUTS/MALA."""
    return samplers.get(method).train_steps is None or samplers.get(method).train_steps == 0


def run_perf(config: PerfConfig = PerfConfig(), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every section; returns the record of this backend (see the module docstring)."""
    from benchmarks.perf.flops import matmul_peak
    from benchmarks.perf.overhead import harness_ratio
    from benchmarks.perf.target_evals import target_throughput
    from benchmarks.perf.throughput import cell_throughput

    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    budgets = dict(config.budgets_s)
    peak = matmul_peak()
    log(f"matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")

    # 1. every method on the cell targets, in priority order (the section is budget-capped): SMC and
    # the code-path representatives first, then AIS and the other learned methods
    names = [m for m in samplers.names() if _log_Z_capable(m)]
    order = ["smc", *REPRESENTATIVES] + [m for m in names if m not in ("smc", *REPRESENTATIVES)]
    pairs = [(m, t) for m in order for t in config.cell_targets if applicable(m, t)]
    cells = _budgeted("cells", [(f"{m}/{t}", _cell(m, t, config)) for m, t in pairs], budgets["cells"], log)

    # 2. throughput rows of the non-learned methods, and of the representatives on the other targets
    pairs = [(m, config.mcmc_target) for m in samplers.names() if samplers.get(m).train_steps is not None]
    pairs += [(m, t) for t, methods in config.extra_targets for m in methods if applicable(m, t)]
    tp = lambda m, t: (
        lambda: cell_throughput(
            m,
            t,
            chunk_size=config.chunk_size,
            num_chunks=config.num_chunks,
            num_samples=config.num_samples,
            repeats=config.sample_repeats,
        )
    )
    throughput = _budgeted(
        "throughput", [(f"{m}/{t}", tp(m, t)) for m, t in pairs], budgets["throughput"], log
    )
    for row in throughput["rows"] + cells["rows"]:
        if "network_flop_per_s" in row:
            row["network_peak_fraction"] = row["network_flop_per_s"] / peak["flops_per_s"]

    # 3. harness overhead against the hand-fused references (and the EGNN path on particle targets)
    ref = config.reference_target
    hr = lambda m: lambda: harness_ratio(m, ref, steps=config.ratio_steps, repeats=config.ratio_repeats)
    particle = lambda t: (
        lambda: harness_ratio(
            "adjoint_sampling",
            t,
            steps=config.ratio_steps,
            repeats=config.particle_ratio_repeats,
            **dict(config.particle_ratio_overrides),
        )
    )
    ratio_cells = [(m, hr(m)) for m in REPRESENTATIVES]
    ratio_cells += [(f"adjoint_sampling/{t}", particle(t)) for t in config.particle_ratio_targets]
    overhead = _budgeted("overhead", ratio_cells, budgets["overhead"], log)
    for row in overhead["rows"]:
        if "method_flop_per_s" in row:
            row["method_peak_fraction"] = row["method_flop_per_s"] / peak["flops_per_s"]

    # 4. energy + gradient evaluations per second of the targets (the cost of one budget unit)
    te = lambda t: lambda: target_throughput(t, batch=config.eval_batch, repeats=config.eval_repeats)
    target_rows = _budgeted(
        "targets", [(t, te(t)) for t in config.eval_targets], budgets.get("targets", 60.0), log
    )
    return {
        "backend": jax.default_backend(),
        "commit": git_commit(),
        "hardware": environment(),
        "started": started,
        "config": dataclasses.asdict(config),
        "matmul_peak": peak,
        "cells": cells,
        "throughput": throughput,
        "overhead": overhead,
        "targets": target_rows,
        "wall_s": time.perf_counter() - t0,
    }


def write_report(record: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Merge `record` into the per-backend JSON file and re-render the Markdown report."""
    records = nonfinite_back(json.loads(json_path.read_text())) if json_path.exists() else {}
    records[record["backend"]] = record
    atomic_write_json(json_path, records)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_markdown(records))


def _f(v, fmt=".3g", missing="—"):
    return missing if v is None or v != v else format(v, fmt)  # None or NaN: not measured


def render_markdown(records: dict[str, dict]) -> str:
    """The report of every backend in `records`."""
    out = ["# Performance report (`make perf`)", ""]
    out.append(
        "Generated by `tiltbench perf` (`benchmarks/perf/`). Timings are wall-clock on a shared machine:"
        " read ratios, not absolute values. Steady-state times exclude compilation (ahead-of-time)."
    )
    for backend, rec in records.items():
        hw = rec["hardware"]
        out += [
            "",
            f"## {backend}: {hw.get('device_kind')} ({hw.get('cpu')}, {hw.get('cpu_count')} cores)",
            "",
        ]
        out.append(
            f"Commit `{rec['commit']}`, started {rec['started']}, total wall {rec['wall_s']:.0f} s; jax "
            f"{hw['versions'].get('jax')}, diffrax {hw['versions'].get('diffrax')}, "
            f"flax {hw['versions'].get('flax')}. float32 matmul peak ({rec['matmul_peak']['n']}²): "
            f"{rec['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s."
        )
        out += _throughput_table(rec) + _overhead_table(rec) + _accuracy_table(rec) + _targets_table(rec)
    return "\n".join(out) + "\n"


def _skipped(section: dict) -> list[str]:
    lines = []
    if section["skipped"]:
        lines.append(
            f"Skipped (section budget {section['budget_s']:.0f} s spent): {', '.join(section['skipped'])}."
        )
    for e in section["errors"]:
        lines.append(f"Error in `{e['cell']}`: {e['error'][:200]}")
    return ["", *lines] if lines else []


def _throughput_table(rec) -> list[str]:
    sec = rec["throughput"]
    learned = [r for r in rec["cells"]["rows"] if "train_steps_per_s" in r]
    out = [
        "",
        "### Throughput, compile time, recompilation, network FLOP/s",
        "",
        f"Rows on {', '.join(rec['config']['cell_targets'])}: the learned methods' cost-to-accuracy "
        "training runs below (one run gives both; trained for the steps listed there). Other rows: "
        f"{rec['config']['num_chunks']} chunks of {rec['config']['chunk_size']} steps. "
        "Training: steps/s of `samplers.train` chunks (steady state); MCMC: warm-up rounds/s. Sampling: "
        f"samples/s of `method.sample` ({rec['config']['num_samples']} samples). Compile: ahead-of-time "
        "compilation of the training chunk (the first step) and of the sampler. Recompiles: XLA backend "
        "compilations after the first chunk (jax.monitoring; must be 0). Network: FLOP/s of the control "
        "network during sampling (FLOPs per evaluation × network evaluations / call time) and its "
        "fraction of the matmul peak; FLOPs from XLA's cost_analysis unless marked (a).",
        "",
        "| method | target | train steps/s | samples/s | compile train s | compile sample s | recompiles | "
        "network GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(learned, key=lambda r: (r["target"], r["method"])) + sec["rows"]:
        src = "" if r.get("network_flops_source", "xla").startswith("xla") else " (a)"
        frac = r.get("network_peak_fraction")
        out.append(
            f"| {r['method']} | {r['target']} | {_f(r.get('train_steps_per_s'))} | "
            f"{_f(r['samples_per_s'])} | "
            f"{_f(r.get('train_compile_s'), '.1f')} | {_f(r['sample_compile_s'], '.1f')} | "
            f"{r.get('recompilations_after_first_chunk', '—')} | "
            f"{_f(r['network_flop_per_s'] / 1e9 if 'network_flop_per_s' in r else None)}{src} | "
            f"{_f(100 * frac if frac is not None else None, '.2f')} |"
        )
    return out + _skipped(sec)


def _overhead_table(rec) -> list[str]:
    sec = rec["overhead"]
    out = [
        "",
        "### Harness overhead against hand-fused `lax.scan` references",
        "",
        "ratio = t_reference / t_method per A/B round (≥ 0.9 is the goal: harness, diffrax and flax add no "
        "measurable overhead); median and [min, max] over interleaved rounds. The references "
        "(`benchmarks/perf/references.py`) compute the same loss, gradient and update "
        "(`tests/benchmarks/perf/test_perf.py`). Particle targets: Adjoint Sampling with the EGNN control "
        "(the reference's EGNN is written by hand from the flax parameters), settings as listed under "
        "`particle_ratio_overrides`; network GFLOP/s: the control network's FLOPs of one call (refresh "
        "forwards + regression forward/backward passes, XLA's count of the network alone; energy, buffer "
        "and optimiser not counted) over the median call time, and the method's fraction of the matmul peak. "
        "XLA FLOPs method / reference: the arithmetic the two lowered programs ask for "
        "(`benchmarks/perf/overhead.py`; deterministic, where the timed ratio is noisy): above 1 is work "
        "the reference does not do, e.g. diffrax's checkpointed adjoint recomputing each step's forward "
        "pass when a loss backpropagates through the SDE (PIS).",
        "",
        "| method (code path) | target | steps/call | batch | method s | reference s | ratio median "
        "| [min, max] | XLA FLOPs method / reference | network GFLOP/s method / reference | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        q = r["ratio"]
        gflops = "—"
        if "method_flop_per_s" in r:
            gflops = f"{r['method_flop_per_s'] / 1e9:.3g} / {r['reference_flop_per_s'] / 1e9:.3g}"
        frac = r.get("method_peak_fraction")
        xla = r.get("xla_flops")
        out.append(
            f"| {r['method']} | {r['target']} | {r['steps_per_call']} | {r['batch_size']} | "
            f"{r['method_s']:.3f} | "
            f"{r['reference_s']:.3f} | {q['median']:.3f} | [{q['min']:.3f}, {q['max']:.3f}] | "
            f"{_f(xla['method'] / xla['reference'] if xla else None, '.3f')} | "
            f"{gflops} | {_f(100 * frac if frac is not None else None, '.2f')} |"
        )
    return out + _skipped(sec)


def _accuracy_table(rec) -> list[str]:
    sec = rec["cells"]
    c = rec["config"]
    if "seeds" not in c:
        return [
            "",
            f"### Cost to reach |log Ẑ − log Z| ≤ {c['tol']}",
            "",
            "This record predates the confirmation rule (`benchmarks/perf/confirm.py`): its "
            f"{len(sec['rows'])} "
            "rows are single-seed first crossings of the per-chunk estimate, not confirmed figures, and are "
            "not shown. Regenerate with `tiltbench perf`.",
        ]
    seeds = c["seeds"]
    out = [
        "",
        f"### Cost to reach |log Ẑ − log Z| ≤ {c['tol']} (confirmed)",
        "",
        f"Every method with a log-Z estimate, on {', '.join(c['cell_targets'])}, seeds {list(seeds)}: "
        "median [min, max] over the seeds, a seed that did not reach counting as ∞ (so the median reads "
        '"not reached" when most seeds fail). A learned method trains in chunks of '
        f"{c['accuracy_chunk_size']} steps; after each, a {c['num_samples']}-sample probe (monitoring only) "
        f"decides whether to run an independent estimate on {c.get('num_confirm', '—')} fresh samples "
        "(its own key); ε is reached at a check only when that estimate is ≤ ε there and at the next "
        "check (`benchmarks/perf/confirm.py`). Evals = training evaluations + the confirming estimate's. "
        f"Budget per seed: at most {c['accuracy_max_train_s']:.3g} s of training after the first "
        f"(compiling) chunk or {c['accuracy_max_evals']:.0e} energy+gradient evaluations. SMC/AIS: "
        "particles (× 4 from 128) and MCMC moves per stage / annealing levels (× 1, × 4) scanned in "
        "order of nominal cost; a configuration is reached when the seed's run and two further "
        'independent runs at it are all ≤ ε. Wall excludes compilation. "probe crossings": checks whose '
        "probe alone was ≤ ε (what the old first-crossing rule counted). Error: the confirmed estimate's, "
        "or at the last point where the method got to (`tiltbench perf --budget-scale K` multiplies "
        "the budget).",
        "",
        "| target | method | seeds reached | energy+grad evals | wall s | |error| | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in sec["rows"] if "summary" in r]
    for r in sorted(
        rows, key=lambda r: (r["target"], not r["summary"]["reached"], r["summary"]["evals"]["median"])
    ):
        q = r["summary"]
        per_seed = r["per_seed"]
        if "particles" in r:
            detail = "particles × effort " + ", ".join(
                f"{p['particles']}" + "".join(f" × {k} {v}" for k, v in p.get("effort", {}).items())
                for p in per_seed
            )
        else:
            detail = "steps " + ", ".join(str(p["train_steps"]) for p in per_seed)
            detail += "; probe crossings " + ", ".join(str(p.get("probe_crossings", "—")) for p in per_seed)
        for p in per_seed:
            if "diverged_at_step" in p:
                detail += (
                    f"; seed {p['seed']} diverged at step {p['diverged_at_step']} ({p['diverged_reason']})"
                )
        out.append(
            f"| {r['target']} | {r['method']} | {q['seeds_reached']}/{q['num_seeds']} | "
            f"{_range(q['evals'])} | {_range(q['wall_s'], '.2f')} | {_range(q['error'])} | {detail} |"
        )
    old = [r for r in sec["rows"] if "summary" not in r]
    if old:
        out += ["", f"{len(old)} row(s) from an older single-seed, unconfirmed record are not shown."]
    return out + _skipped(sec)


def _range(q: dict, fmt: str = ".3g") -> str:
    """`median [min, max]`; an infinite median reads "not reached"."""
    med = "not reached" if q["median"] == float("inf") else format(q["median"], fmt)
    hi = "∞" if q["max"] == float("inf") else format(q["max"], fmt)
    lo = "∞" if q["min"] == float("inf") else format(q["min"], fmt)
    return f"{med} [{lo}, {hi}]"


def _targets_table(rec) -> list[str]:
    """Section 5 (absent from records made before it existed)."""
    sec = rec.get("targets")
    if sec is None:
        return []
    out = [
        "",
        "### Energy + gradient evaluations per second of the targets",
        "",
        "What one unit of the budget axis costs on this device: `jit(vmap(value_and_grad(log_prob)))` "
        f"on a batch of {rec['config'].get('eval_batch', 512)} points, median of "
        f"{rec['config'].get('eval_repeats', 7)} steady-state calls; one energy and one gradient per point "
        "(`benchmarks/perf/target_evals.py`). Mixtures: the former whitening (one triangular solve per "
        "point and component) against the current one (`L_k⁻¹` formed once per batch), interleaved; "
        "ratio = t_former / t_current per round, median [min, max].",
        "",
        "| target | dim | evals/s | call ms | components | former / current whitening |",
        "|---|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        ratio = r.get("solves_ratio")
        cmp = f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]" if ratio else "—"
        out.append(
            f"| {r['target']} | {r['dim']} | {_f(r['evals_per_s'])} | {_f(1e3 * r['call_s'])} | "
            f"{r.get('components', '—')} | {cmp} |"
        )
    return out + _skipped(sec)
