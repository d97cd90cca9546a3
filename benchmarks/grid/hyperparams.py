"""The per-(method, target) settings table, resolved into a cell's typed problem config and method settings.

All tuned values live in one file, `benchmarks/grid/configs/hyperparams.json` (design rule: never inside
target files, never inside method modules). Resolution order, each layer replacing only the fields it
names (sub-config fields nested, `{"optim": {"learning_rate": 3e-3}}`, or dotted, `"optim.learning_rate"`):

    problem: ProblemConfig defaults <- problem.default <- problem.targets[target]
             <- problem.methods[method] <- problem.pairs["m/t"] <- overrides["problem"]
    method:  the config's own defaults <- the problem settings its fields follow
             <- methods[method]["default"] <- methods[method][target] <- overrides["method"]

`overrides` are a suite's settings or the CLI's `--set` (`benchmarks.grid.suites`). A method config
field declared with `follows="sigma"` (`samplers.fields.field`: the MCMC / SMC / AIS `init_scale`,
CMCD's `initial_std`, NETS's `s0`) takes the resolved `problem.sigma` as its default, so an initial
scale follows the base's scale without repeating numbers.

**Ground-truth-free default of the scale.** When no layer sets `sigma` and the base needs it, `sigma`
is the estimate of a short seeded pilot on the target's unnormalised density (`samplers.pilot`: a
Gaussian variational fit refined by preconditioned MALA, then a robust spread of the draws about the
origin), rounded to three significant digits. A warning naming the target is printed (once per
process), and the pilot's settings, estimate and cost (energy and gradient evaluations) go into the
cell's record (`Resolved.pilot`). It never looks at reference samples or `log Z`.

Model selection never looks at reference samples: the tabled values come from the target's scale and
pilot runs judged on training signals (loss, ESS of the training batch).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from collections.abc import Mapping
from importlib import resources
from typing import Any

import samplers
import targets
from benchmarks.grid.problems import ProblemConfig, build_problem
from samplers.fields import configure, followers, merge
from samplers.pilot import PilotConfig, pilot_scale

__all__ = ["Resolved", "build_problem", "load_table", "resolve", "resolve_problem"]


@functools.cache
def load_table() -> dict[str, Any]:
    """The parsed hyper-parameter table."""
    text = (resources.files("benchmarks.grid") / "configs" / "hyperparams.json").read_text()
    return json.loads(text)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The resolved settings of one (method, target) pair.

    Attributes:
        problem: the typed problem config, its scales resolved.
        method: the method's config settings (nested by sub-config) over its defaults.
        pilot: when `sigma` came from the pilot: its settings, estimate and cost; else None.
    """

    problem: ProblemConfig
    method: dict[str, Any]
    pilot: dict[str, Any] | None = None


def _layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out = merge(out, {k: v for k, v in layer.items() if not k.startswith("_")})
    return out


def resolve_problem(
    method: str, target: str, table: dict[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[ProblemConfig, dict[str, Any] | None]:
    """The problem config of `(method, target)` (module docstring) and the pilot's record (or None)."""
    table = load_table() if table is None else table
    p = table["problem"]
    settings = _layers(
        p["default"],
        p.get("targets", {}).get(target, {}),
        p.get("methods", {}).get(method, {}),
        p.get("pairs", {}).get(f"{method}/{target}", {}),
        overrides or {},
    )
    problem = configure(ProblemConfig, settings, who=f"problem settings of {method}/{target}")
    tgt = targets.get(target)
    if problem.sigma is not None or not problem.needs_sigma or tgt.finetune_task is not None:
        return problem, None
    pilot = _pilot(target, tgt.fingerprint(), problem.pilot)
    return dataclasses.replace(problem, sigma=pilot["sigma"]), pilot


def _significant(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


@functools.cache
def _pilot(target: str, fingerprint: str, config: PilotConfig) -> dict[str, Any]:
    """The pilot's record for `target` (cached per target definition and pilot settings); prints the
    warning that the default is used."""
    tgt = targets.get(target)
    result = pilot_scale(tgt.log_prob, tgt.dim, config)
    if not math.isfinite(result.scale) or result.scale <= 0:
        raise ValueError(
            f"target {target!r} has no sigma in hyperparams.json and the pilot found no usable scale "
            f"(got {result.scale}); set problem.sigma (suite settings or --set problem.sigma=...)"
        )
    sigma = _significant(result.scale)
    cost = result.cost.as_dict()
    print(
        f"warning: target {target!r} has no sigma in hyperparams.json; using the ground-truth-free pilot "
        f"estimate sigma = {sigma:g} ({cost['energy_evals']:.0f} energy + {cost['grad_evals']:.0f} gradient "
        "evaluations); set problem.sigma in a suite's settings or with --set problem.sigma=... to override",
        file=sys.stderr,
    )
    return {
        "sigma": sigma,
        "estimate": result.scale,
        "acceptance": result.acceptance,
        "settings": dataclasses.asdict(config),
        "cost": cost,
    }


def resolve(
    method: str,
    target: str,
    table: dict[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Resolved:
    """Resolve the problem and method settings of `(method, target)` (see the module docstring).

    Args:
        method, target: registered names.
        table: the hyper-parameter table (default: the shipped one).
        overrides: `{"problem": {...}, "method": {...}}`, the last layer of each (suite settings, CLI).

    Raises:
        ValueError: an unknown or ill-typed problem setting, naming the valid fields.
    """
    table = load_table() if table is None else table
    overrides = overrides or {}
    problem, pilot = resolve_problem(method, target, table, overrides.get("problem"))
    follow = {}
    for name, source in followers(samplers.get(method).config_cls).items():
        value = getattr(problem, source)
        if value is not None:
            follow[name] = value
    m = table.get("methods", {}).get(method, {})
    method_cfg = _layers(follow, m.get("default", {}), m.get(target, {}), overrides.get("method", {}))
    return Resolved(problem=problem, method=method_cfg, pilot=pilot)
