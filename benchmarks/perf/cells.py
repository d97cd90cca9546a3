"""Build a benchmark cell's method exactly as the runner does (the hyper-parameter table)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import samplers
import targets
from benchmarks.grid import hyperparams

__all__ = ["Built", "build_cell"]


class Built(NamedTuple):
    spec: Any
    problem: Any
    config: Any
    method: Any


def build_cell(method: str, target: str, **config_overrides: Any) -> Built:
    """`(spec, problem, config, method)` of `(method, target)` with the suite's resolved settings."""
    spec = samplers.get(method)
    settings = hyperparams.resolve(method, target)
    problem = hyperparams.build_problem(targets.get(target), settings.problem)
    config = spec.make_config(**settings.method)
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    if not spec.supports(problem.base.kind):
        raise ValueError(f"{method} does not support the {problem.base.kind!r} base of {target}")
    return Built(spec, problem, config, spec.build(problem, config))
