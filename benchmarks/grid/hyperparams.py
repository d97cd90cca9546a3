"""The per-(method, target) settings table and the construction of a cell's Problem.

All tuned values live in one file, `benchmarks/grid/configs/hyperparams.json` (design rule: never inside
target files, never inside method modules). Resolution order:

    problem: problem.default <- problem.targets[target] <- problem.methods[method] <- problem.pairs["m/t"]
    method:  the config's own defaults <- methods[method]["default"] <- methods[method][target]

Method settings nest by sub-config (`{"optim": {"learning_rate": 3e-3}}`, or the dotted key
`"optim.learning_rate"`); each layer replaces only the fields it names (`samplers.fields.merge`).

A method value `"$sigma"` (any problem key after `$`) takes the resolved problem setting, so a
baseline's initial scale follows the per-target base scale without repeating numbers.

Model selection never looks at reference samples: the values come from the target's scale and pilot
runs judged on training signals (loss, ESS of the training batch).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any

import targets
from samplers.base_processes import (
    BrownianBase,
    GeometricSchedule,
    LinearSchedule,
    MemorylessFlowBase,
    VPBase,
)
from samplers.fields import merge
from samplers.problem import Problem, finetuning_problem, sampling_problem

__all__ = ["Resolved", "build_finetuning_problem", "build_problem", "load_table", "resolve"]

_PROBLEM_KEYS = {
    "base",
    "schedule",
    "sigma",
    "sigma0",
    "sigma_min",
    "sigma_max",
    "beta_min",
    "beta_max",
    "num_steps",
    "grid",
    "t0",
}


@functools.cache
def load_table() -> dict[str, Any]:
    """The parsed hyper-parameter table."""
    text = (resources.files("benchmarks.grid") / "configs" / "hyperparams.json").read_text()
    return json.loads(text)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The resolved settings of one (method, target) pair."""

    problem: dict[str, Any]
    method: dict[str, Any]


def resolve(method: str, target: str, table: dict[str, Any] | None = None) -> Resolved:
    """Resolve the problem and method settings of `(method, target)` (see the module docstring)."""
    table = load_table() if table is None else table
    p = table["problem"]
    problem = dict(p["default"])
    problem.update(p.get("targets", {}).get(target, {}))
    problem.update(p.get("methods", {}).get(method, {}))
    problem.update(p.get("pairs", {}).get(f"{method}/{target}", {}))
    unknown = sorted(set(problem) - _PROBLEM_KEYS)
    if unknown:
        raise ValueError(
            f"hyperparams: unknown problem key(s) {unknown}; valid keys: {sorted(_PROBLEM_KEYS)}"
        )
    m = table.get("methods", {}).get(method, {})
    method_cfg = merge(m.get("default", {}), m.get(target, {}))
    # "$name" values refer to a resolved problem setting (e.g. an MCMC init scale equal to the base's sigma).
    for k, v in method_cfg.items():
        if isinstance(v, str) and v.startswith("$"):
            if v[1:] not in problem:
                raise ValueError(
                    f"hyperparams: {method}.{k} = {v!r} names no problem setting; valid: {sorted(problem)}"
                )
            method_cfg[k] = problem[v[1:]]
    return Resolved(problem=problem, method=method_cfg)


def _brownian(target: targets.Target, s: dict[str, Any]) -> BrownianBase:
    if s["schedule"] == "linear":
        schedule = LinearSchedule(float(s["sigma"]))
    elif s["schedule"] == "geometric":
        schedule = GeometricSchedule(float(s.get("sigma_min", 1e-3)), float(s.get("sigma_max", s["sigma"])))
    else:
        raise ValueError(f"unknown schedule {s['schedule']!r}; valid schedules: ['geometric', 'linear']")
    return BrownianBase(target.dim, schedule, particles=target.particles)


def _vp(target: targets.Target, s: dict[str, Any]) -> VPBase:
    extra = {k: float(s[k]) for k in ("beta_min", "beta_max") if k in s}
    return VPBase(target.dim, float(s["sigma0"]), particles=target.particles, **extra)


_BASES = {"brownian": _brownian, "vp": _vp}


def build_finetuning_problem(target: targets.Target, settings: dict[str, Any]) -> Problem:
    """The fine-tuning Problem of a task's tilted target (`target.finetune_task` set).

    The base is the task's pretrained flow run with the memoryless schedule from `t0` (setting `t0`),
    started at the flow marginal `p_{t0}` (`task.marginal(t0)`, exact samples and density); the tilt is
    `λ·reward` with its closed-form gradient; `log_Z` and `target` are the task's exact ones. The base
    of a fine-tuning task IS the pretrained model, so a `base` setting other than `"flow"` (e.g. the
    `"vp"` that `dds` asks for) is ignored: the method is then judged on the flow base, and the runner
    records it as not applicable if it does not support that base.
    """
    task = target.finetune_task
    t0 = float(settings.get("t0", 0.01))
    initial = task.marginal(t0)
    base = MemorylessFlowBase(
        task.dim,
        task.velocity,
        t0,
        initial_sample_fn=initial.sample,
        initial_log_prob_fn=initial.log_prob,
        terminal_log_prob_fn=task.data.log_prob,
    )
    return finetuning_problem(
        base,
        task.reward,
        task.lam,
        num_steps=int(settings["num_steps"]),
        grid=settings["grid"],
        log_Z=task.log_Z,
        target=target,
        name=task.name,
        grad_reward=task.grad_reward,
    )


def build_problem(target: targets.Target, settings: dict[str, Any]) -> Problem:
    """The Problem of `target` with the resolved problem `settings`: fine-tuning for a task's tilted
    target (`build_finetuning_problem`), else sampling with the named base."""
    if target.finetune_task is not None:
        return build_finetuning_problem(target, settings)
    kind = settings["base"]
    if kind not in _BASES:
        raise ValueError(f"unknown base {kind!r} for a sampling problem; valid bases: {sorted(_BASES)}")
    base = _BASES[kind](target, settings)
    return sampling_problem(target, base, num_steps=int(settings["num_steps"]), grid=settings["grid"])
