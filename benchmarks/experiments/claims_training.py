"""Training speed of the regression losses at equal reward evaluations (the gradient-variance claim's cost).

`training_comparison(task, methods, seeds, max_evals)` trains each loss on a fine-tuning task with the
settings the grid runs it with (`benchmarks.grid.cell.resolve_cell`: the hyper-parameter table, the flow
base from `t0 = 0.01` on 200 quadratic steps, each method's config defaults) until it has spent
`max_evals` reward evaluations (values + gradients, `Cost.budget_evals`: Adjoint Matching spends
`2·batch_size` per step, the buffered regressions `2·resample_size` per refresh), and traces after every
chunk of steps, from `num_eval` fresh weighted samples (monitoring, not counted):

- `objective_gap = log Z - mean_i log w_i` (the KL-regularised objective's gap to its optimum `log Z`,
  `finetune/objective_gap` of `benchmarks.metrics.finetune`; ≥ 0 in expectation), with its SE;
- `kl_path = mean_i (λ r(x_i) - log w_i)` (`finetune/kl_path`) and the mean reward.

`equal_budget_table(runs, budgets)` reads each run's gap at the last trace point within each budget.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import numpy as np

from benchmarks.grid.cell import Monitor, resolve_cell, train_cell
from benchmarks.grid.suites import Budget
from benchmarks.metrics.finetune import reward_values

__all__ = [
    "TrainingConfig",
    "equal_budget_table",
    "ranking_line",
    "settings_line",
    "training_comparison",
    "training_run",
]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The comparison's settings.

    Attributes:
        task: the fine-tuning target (a `targets.finetuning` task name).
        methods: the losses (method names).
        seeds: training seeds.
        max_evals: the reward-evaluation budget of every run.
        chunk_size: optimiser steps between two trace points.
        max_steps: a cap on optimiser steps (a run stops at the budget or here, whichever comes first).
        num_eval: fresh samples per trace point.
        overrides: method config overrides applied to every method (tests use tiny networks).
    """

    task: str = "ft_gmm2d_quadratic"
    methods: tuple[str, ...] = (
        "adjoint_matching",
        "adjoint_sampling",
        "novel_score_matching",
        "target_score_matching",
        "conditional_score_matching",
    )
    seeds: tuple[int, ...] = (0, 1)
    max_evals: float = 25_600.0
    chunk_size: int = 10
    max_steps: int = 1000
    num_eval: int = 1000
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def _evaluator(method, problem, num: int):
    """`(key, state) -> point` from `num` fresh weighted samples (module docstring)."""
    sample = jax.jit(method.sample, static_argnums=2)
    task, log_z = problem.target.finetune_task, problem.log_Z

    def evaluate(key, state) -> dict[str, float]:
        s = sample(key, state, num)
        log_w = np.asarray(s.log_w, np.float64)
        reward = reward_values(task, s.x)
        kl = task.lam * reward - log_w
        finite = np.isfinite(log_w)
        sqrt_n = math.sqrt(num)
        return {
            "evals": float(state.cost.budget_evals()),
            "objective_gap": float(log_z - log_w.mean()) if finite.all() else math.inf,
            "objective_gap_se": float(log_w.std(ddof=1) / sqrt_n) if finite.all() else math.nan,
            "kl_path": float(kl.mean()) if finite.all() else math.inf,
            "kl_path_se": float(kl.std(ddof=1) / sqrt_n) if finite.all() else math.nan,
            "reward_mean": float(reward.mean()),
        }

    return evaluate


def training_run(method_name: str, seed: int, config: TrainingConfig) -> dict[str, Any]:
    """Train one loss on the task until the budget (module docstring); its trace and timings."""
    resolved = resolve_cell(method_name, config.task, **config.overrides)
    method = resolved.spec.build(resolved.problem, resolved.config)
    evaluate = _evaluator(method, resolved.problem, config.num_eval)
    key_train, key_eval = jax.random.split(jax.random.key(seed))
    trace: list[dict[str, float]] = []
    last = {"evals": 0.0, "delta": 0.0}

    def eval_fn(state):
        point = evaluate(jax.random.fold_in(key_eval, len(trace)), state)
        # the largest chunk cost so far: the buffered losses spend nothing between refreshes
        last["delta"] = max(last["delta"], point["evals"] - last["evals"])
        last["evals"] = point["evals"]
        trace.append(point)
        return None

    def stop_fn(state) -> bool:
        return last["evals"] + last["delta"] > config.max_evals  # one more chunk would break the budget

    start = time.perf_counter()
    budget = Budget("claims", train_steps=config.max_steps, chunk_size=config.chunk_size)
    monitor = Monitor(eval_fn, stop_fn)
    trained = train_cell(key_train, method, resolved.problem, budget, key_eval, monitor=monitor)
    steps = [int(s) for s in np.asarray(trained.history.get("step", []))]  # one per chunk, as the trace
    return {
        "method": method_name,
        "seed": seed,
        "trace": [{"step": s, **p} for s, p in zip(steps, trace, strict=True)],
        "steps": trained.steps,
        "wall_time_s": time.perf_counter() - start,
        "config": {k: v for k, v in dataclasses.asdict(resolved.config).items() if not isinstance(v, dict)},
    }


def training_comparison(config: TrainingConfig) -> list[dict[str, Any]]:
    """`training_run` for every method and seed of `config`."""
    return [training_run(name, seed, config) for name in config.methods for seed in config.seeds]


def _gap_within(run: dict[str, Any], budget: float) -> tuple[float, float] | None:
    points = [p for p in run["trace"] if p["evals"] <= budget]
    return (points[-1]["objective_gap"], points[-1]["objective_gap_se"]) if points else None


def equal_budget_table(runs: list[dict[str, Any]], budgets: tuple[float, ...]) -> str:
    """Markdown: per method, the objective gap `log Z - mean log w` at the last trace point within each
    budget, one value ± SE per seed, and their mean ("—": no trace point within that budget)."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    head = "| method | " + " | ".join(f"gap at ≤ {b:,.0f} evals" for b in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for name in methods:
        cells = []
        for b in budgets:
            values = [_gap_within(r, b) for r in runs if r["method"] == name]
            if any(v is None for v in values):
                cells.append("—")
                continue
            per_seed = " / ".join(f"{g:.3f} ± {se:.3f}" for g, se in values)
            cells.append(f"**{np.mean([g for g, _ in values]):.3f}** ({per_seed})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_line(runs: list[dict[str, Any]], budget: float) -> str:
    """One sentence: the methods by their mean objective gap within `budget` (smallest first), with the
    optimiser steps each ran and the reward evaluations one step costs on average."""
    parts = []
    for name in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == name]
        gaps = [_gap_within(r, budget) for r in mine]
        if any(g is None for g in gaps):
            continue
        steps = np.mean([r["steps"] for r in mine])
        per_step = np.mean([r["trace"][-1]["evals"] / max(r["steps"], 1) for r in mine])
        parts.append((np.mean([g for g, _ in gaps]), name, steps, per_step))
    ranked = ", ".join(
        f"{name} {gap:.3f} ({steps:.0f} steps, {per_step:.0f} evaluations per step)"
        for gap, name, steps, per_step in sorted(parts)
    )
    return f"At ≤ {budget:,.0f} reward evaluations, smallest objective gap first: {ranked}."


SETTINGS_SHOWN = ("loss_weighting", "t_min", "importance_weights", "max_grad_norm_target", "time_subsample")
"""Config fields `settings_line` reports (those in which the default configs of the losses differ)."""


def settings_line(runs: list[dict[str, Any]]) -> str:
    """One sentence: per method, the fields of `SETTINGS_SHOWN` its config has (from the first run)."""
    parts = []
    for name in dict.fromkeys(r["method"] for r in runs):
        config = next(r["config"] for r in runs if r["method"] == name)
        fields = ", ".join(f"{k} {config[k]}" for k in SETTINGS_SHOWN if k in config)
        parts.append(f"{name}: {fields}")
    return "Loss settings (each method's defaults): " + "; ".join(parts) + "."
