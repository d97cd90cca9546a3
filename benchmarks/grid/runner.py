"""The grid runner: run cells, write one atomic record per cell, resume, shard, filter.

One cell = (method, target, budget, seed):

1. resolve the (method, target) settings (`benchmarks.grid.hyperparams`), build the Problem and the
   method; a method that does not support the base (or, on a fine-tuning task, a baseline that
   samples the tilted density directly) is recorded as `not_applicable` with the reason;
2. train with `samplers.train.train` in jitted chunks; between chunks a cheap trace (log Ẑ error,
   training cost so far and the cost the final sampling would add) is recorded for the
   accuracy-versus-cost plots. Under an evaluation budget (`max_evals`, energy + gradient
   evaluations of training + final sampling; `benchmarks.grid.suites`) a learned sampler stops at the
   last chunk boundary before the predicted total would exceed it, and a fixed-work baseline
   (MCMC / SMC / AIS) is re-configured by its `plan_budget` rule first (its pilot cost counted
   as training cost); the record's `budget_spent` states the budget and what was spent;
3. draw `num_samples` samples, the backward path weights from target samples where the method has
   a backward process, and run every applicable metric (`benchmarks.metrics.evaluate`);
4. write the record atomically. `Diverged` or non-finite samples give status `diverged`; any other
   exception gives `error` with its message; the grid goes on either way.

A re-run skips cells whose record exists (resume); `shard=(i, n)` runs every n-th cell starting at
i; `only` filters by method / target / budget / seed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import samplers
import targets
from benchmarks.grid import hyperparams
from benchmarks.grid.records import atomic_write_json, environment, git_commit, is_stale_temp, temp_prefix
from benchmarks.grid.suites import Cell, Suite
from benchmarks.metrics import EvalContext, evaluate
from benchmarks.metrics.cost import cost_metrics
from samplers import parallel
from samplers.estimators import log_Z as log_z_estimate
from samplers.method import Cost
from samplers.train import Diverged, train

__all__ = ["not_applicable_reason", "parse_only", "parse_shard", "run_cell", "run_suite", "select_cells"]

_ONLY_KEYS = ("method", "target", "budget", "seed")
SAMPLE_FILE_ROWS = 1000  # model samples kept beside each record for figures


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse `"i/n"` (0 <= i < n)."""
    if text is None:
        return (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n with integers, e.g. 0/4; got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs n >= 1 and 0 <= i < n; got {text!r}")
    return (i, n)


def parse_only(items: Iterable[str] | None) -> dict[str, set[str]]:
    """Parse `key=value[,value...]` filters; keys: method, target, budget, seed."""
    out: dict[str, set[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in _ONLY_KEYS or not value:
            raise ValueError(f"--only takes key=value with key one of {list(_ONLY_KEYS)}; got {item!r}")
        out.setdefault(key, set()).update(v for v in value.split(",") if v)
    return out


def select_cells(
    suite: Suite, *, shard: tuple[int, int] = (0, 1), only: dict[str, set[str]] | None = None
) -> list[Cell]:
    """The suite's cells after the `only` filters, then the shard slice (stable order)."""
    only = only or {}
    cells = [c for c in suite.cells() if all(str(getattr(c, k)) in v for k, v in only.items())]
    i, n = shard
    return cells[i::n]


def _finite(x: Any) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x))))


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


def _trace_fn(
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
        s = sample(jax.random.fold_in(key, counter["i"]), state, num)
        est = float(log_z_estimate(s.log_w).value) if weighted else float("nan")
        err = abs(est - log_z) if log_z is not None else float("nan")
        return {
            "evals": state.cost.budget_evals(),
            "evals_sample": s.cost.budget_evals() * num_samples / num,
            "logZ": est,
            "logZ_error": err,
        }

    return fn


def _plan_baseline(spec, problem, config, key, max_evals, num_samples, record):
    """Re-configure a fixed-work baseline for the budget; returns `(config, pilot cost)`."""
    if spec.plan_budget is None:
        record["budget_plan"] = {"note": f"{spec.name} has no budget rule; it ran its own configuration"}
        return config, Cost.zero()
    plan = spec.plan_budget(key, problem, config, max_evals, num_samples)
    record["budget_plan"] = dict(plan.notes)
    record["config"]["method"] = _config_dict(plan.config)
    return plan.config, plan.cost


def _budget_spent(max_evals: float | None, cost: Cost) -> dict[str, Any]:
    spent = cost.budget_evals()
    return {
        "max_evals": max_evals,
        "spent_evals": spent,
        "spent_ratio": spent / max_evals if max_evals else None,
    }


# Why a method that does not list a base kind cannot run on it (the not_applicable message).
_BASE_NOTES = {
    "brownian": "Brownian motion from a Dirac at 0",
    "vp": "the variance-preserving OU process started at its stationary Gaussian",
    "flow": "a pretrained flow run with the memoryless schedule from t0 > 0, started at the flow marginal "
    "p_t0 (no Dirac start, no closed-form discrete chain or reversal kernels, terminal law known only "
    "through the model)",
}


def not_applicable_reason(spec: samplers.MethodSpec, problem) -> str | None:
    """Why `spec` cannot run on `problem` (the record's message), or None when it can.

    - the method does not support the base kind (e.g. Adjoint Sampling assumes a Dirac start);
    - a fine-tuning problem and a method that ignores the base (`bases == ("any",)`: the MCMC / SMC /
      AIS baselines sample `problem.target` from its log-density). For a fine-tuning task that
      density is `log p_data + λ r`, i.e. it uses the data law's density, which a fine-tuning method
      never sees (it only has the pretrained velocity and the reward). They are recorded as not
      applicable rather than as a reference row, so that no fine-tuning table mixes the two settings.
    """
    kind = problem.base.kind
    if not spec.supports(kind):
        return (
            f"{spec.name} supports bases {list(spec.bases)}; this {problem.kind} problem uses the "
            f"{kind!r} base ({_BASE_NOTES.get(kind, kind)})"
        )
    if problem.kind == "finetuning" and tuple(spec.bases) == ("any",):
        return (
            f"{spec.name} samples the tilted target from its log-density log p_data + λ r, which needs the "
            "data law's density; a fine-tuning method only sees the pretrained model and the reward"
        )
    return None


def run_cell(cell: Cell, suite: Suite, *, progress: bool = False, trace: bool = True) -> dict[str, Any]:
    """Run one cell and return its record (nothing is written here)."""
    budget = suite.budget(cell.budget)
    record: dict[str, Any] = {
        "suite": suite.name,
        "method": cell.method,
        "target": cell.target,
        "budget": budget.for_target(cell.target),
        "seed": cell.seed,
        "num_samples": suite.num_samples,
        "commit": git_commit(),
        "hardware": environment(),
        "data_parallel_devices": parallel.num_shards(),  # devices the particle batch is split over
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {},
        "skipped_metrics": {},
        "trace": [],
    }
    t_cell = time.perf_counter()
    try:
        spec = samplers.get(cell.method)
        target = targets.get(cell.target)
        record["target_fingerprint"] = target.fingerprint()
        settings = hyperparams.resolve(cell.method, cell.target)
        problem = hyperparams.build_problem(target, settings.problem)
        config = spec.make_config(**settings.method)
        record["config"] = {
            "problem": settings.problem,
            "problem_summary": problem.summary(),
            "method": _config_dict(config),
        }
        record["method_family"] = spec.family
        record["problem_kind"] = problem.kind
        reason = not_applicable_reason(spec, problem)
        if reason is not None:
            record.update(status="not_applicable", message=reason)
            return record
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
        state, train_info = _train(
            k_train,
            method,
            problem,
            budget,
            k_trace,
            progress,
            trace and spec.weighted,
            record,
            max_evals=max_evals_train,
            num_samples=suite.num_samples,
        )
        state = state._replace(cost=state.cost + pilot_cost)
        record["cost_train"] = state.cost._asdict()

        sample = jax.jit(method.sample, static_argnums=2)
        t0 = time.perf_counter()
        compiled = sample.lower(k_sample, state, suite.num_samples).compile()
        sample_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        samples = jax.block_until_ready(compiled(k_sample, state))
        sample_time = time.perf_counter() - t0
        record["cost_sample"] = samples.cost._asdict()
        _save_samples(record, samples.x)
        if not _finite(samples.x) or bool(np.any(np.isnan(np.asarray(samples.log_w)))):
            record.update(status="diverged", message="non-finite samples or NaN log-weights after training")
            return record

        ref, ref2, _ = _reference_sets(target, k_ref, suite.num_samples)
        bwd = None
        if method.backward is not None and ref is not None and spec.weighted:
            bwd = jax.jit(method.backward)(k_bwd, state, ref)
        ctx = EvalContext(
            key=k_metric,
            target=target,
            x=samples.x,
            log_w=samples.log_w if spec.weighted else None,
            reference=ref,
            reference2=ref2,
            backward_log_w=bwd,
        )
        values, skipped = evaluate(ctx, on_error="report")
        if spec.diagnostics is not None:
            values.update({k: float(v) for k, v in spec.diagnostics(samples.x, config, target).items()})
        values.update(
            cost_metrics(
                state.cost + samples.cost,
                train_info["train_time_s"],
                sample_time,
                train_info["compile_time_s"] + sample_compile,
            )
        )
        values["cost/train_steps"] = float(train_info["steps"])
        if max_evals is not None:
            record["budget_spent"] = _budget_spent(max_evals, state.cost + samples.cost)
            values["budget/max_evals"] = float(max_evals)
            values["budget/spent_evals"] = record["budget_spent"]["spent_evals"]
        record["metrics"] = values
        record["skipped_metrics"] = skipped
        record["status"] = "ok"
    except Diverged as err:
        record.update(status="diverged", message=f"diverged at step {err.step}: {err.reason}")
    except Exception as err:  # noqa: BLE001 - recorded; the grid goes on
        record.update(
            status="error", message=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8)
        )
    finally:
        record["wall_time_s"] = time.perf_counter() - t_cell
    return record


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    return {"repr": repr(config)}


def _plain(v: Any) -> Any:
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if dataclasses.is_dataclass(v):
        return _config_dict(v)
    return repr(v)


def _save_samples(record: dict[str, Any], x: jax.Array) -> None:
    # Kept in memory here; `run_suite` writes them beside the record for the figures.
    record["_samples"] = np.asarray(x[:SAMPLE_FILE_ROWS], np.float32)


def _budget_stop(trace_fn: Callable, max_evals: float) -> tuple[Callable, Callable]:
    """`(eval_fn, stop_fn)` for `train`: stop at the last chunk boundary before the budget.

    After every chunk, with `E` the training cost so far, `ΔE` the last chunk's cost and `S` the
    cost of the final sampling (from the trace probe), training stops when `E + ΔE + S > max_evals`,
    i.e. when one more chunk would break the budget. The first chunk always runs.
    """
    last: dict[str, float] = {"evals": 0.0, "delta": 0.0, "sample": 0.0}

    def eval_fn(state):
        out = trace_fn(state)
        last["delta"] = out["evals"] - last["evals"]
        last["evals"], last["sample"] = out["evals"], out["evals_sample"]
        return out

    def stop_fn(state):
        return last["evals"] + last["delta"] + last["sample"] > max_evals

    return eval_fn, stop_fn


def _train(key, method, problem, budget, k_trace, progress, trace, record, *, max_evals=None, num_samples=0):
    """Train in budget-sized pieces: whole budget at once unless `max_evals` needs a check."""
    probe = trace and problem.log_Z is not None
    trace_fn = _trace_fn(method, problem, k_trace, 256, num_samples, trace) if (probe or max_evals) else None
    stop_fn = None
    train_steps = budget.train_steps
    if max_evals is not None and train_steps > 0:
        first = trace_fn(method.init(jax.random.split(key)[0]))  # the final sampling's cost, untrained
        if first["evals"] + first["evals_sample"] >= max_evals:
            record["budget_plan"] = {"note": "the budget covers no more than the final sampling: no training"}
            train_steps = 0
        trace_fn, stop_fn = _budget_stop(trace_fn, max_evals)
    if train_steps == 0:
        state = jax.jit(method.init)(jax.random.split(key)[0])
        return state, {"train_time_s": 0.0, "compile_time_s": 0.0, "steps": 0}
    result = train(
        key,
        method,
        num_steps=train_steps,
        chunk_size=budget.chunk_size,
        eval_fn=trace_fn,
        progress=progress,
        stop_fn=stop_fn,
    )
    hist = result.history
    if trace_fn is not None and "eval/evals" in hist:
        record["trace"] = [
            {
                "step": int(s),
                "evals": float(e),
                "evals_sample": float(es),
                "logZ": float(z),
                "logZ_error": float(err),
            }
            for s, e, es, z, err in zip(
                hist["step"],
                hist["eval/evals"],
                hist["eval/evals_sample"],
                hist["eval/logZ"],
                hist["eval/logZ_error"],
                strict=False,
            )
        ]
    record["train"] = {
        "num_compilations": int(result.num_compilations),
        "final_loss": float(np.asarray(hist["loss"])[-1]) if len(hist.get("loss", [])) else None,
    }
    steps = int(np.asarray(hist["step"])[-1]) if len(hist.get("step", [])) else budget.train_steps
    return result.state, {
        "train_time_s": result.train_time_s,
        "compile_time_s": result.compile_time_s,
        "steps": steps,
    }


def _clean_stale(out: Path) -> int:
    """Remove temp files left by a run killed mid-write (names start with '.' and end in .tmp).

    Only temp files whose writer is gone (`records.is_stale_temp`): shards and array tasks writing
    into the same directory at the same time must not delete each other's in-flight files.
    """
    n = 0
    if out.exists():
        for p in out.rglob(".*.tmp"):
            if is_stale_temp(p):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _summary_line(cell: Cell, rec: dict[str, Any]) -> str:
    m = rec.get("metrics", {})
    parts = [f"{rec['status']:>8}", cell.id]
    for k, label in (("logZ/error", "|ΔlogZ|"), ("ess/reverse", "ESS"), ("mmd2/rbf_median", "MMD²")):
        if k in m and isinstance(m[k], float) and math.isfinite(m[k]):
            parts.append(f"{label}={m[k]:.3g}")
    parts.append(f"{rec.get('wall_time_s', 0):.1f}s")
    if rec["status"] != "ok" and rec.get("message"):
        parts.append(f"({rec['message'][:80]})")
    return "  ".join(parts)


def run_suite(
    suite: Suite,
    out_dir: str | os.PathLike = "results/runs",
    *,
    shard=(0, 1),
    only=None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the suite's selected cells, skipping finished ones; returns the records written now."""
    from tqdm import tqdm

    out = Path(out_dir)
    stale = _clean_stale(out / suite.name)
    if stale:
        log(f"removed {stale} partial file(s) left by an interrupted run")
    cells = select_cells(suite, shard=shard, only=only)
    todo = [c for c in cells if force or not c.path(out, suite.name).exists()]
    log(
        f"suite {suite.name!r}: {len(cells)} cells selected, {len(cells) - len(todo)} already done, "
        f"{len(todo)} to run -> {out / suite.name}"
    )
    written = []
    bar = tqdm(todo, disable=not progress, unit="cell", dynamic_ncols=True)
    for cell in bar:
        bar.set_description(cell.id)
        rec = run_cell(cell, suite)
        samples = rec.pop("_samples", None)
        path = cell.path(out, suite.name)
        if samples is not None:
            _atomic_npz(path.with_suffix(".samples.npz"), samples)
        atomic_write_json(path, rec)
        written.append(rec)
        (bar.write if progress else log)(_summary_line(cell, rec))
    return written


def _atomic_npz(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{temp_prefix(path)}npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, x=x)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
