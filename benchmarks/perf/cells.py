"""Build a benchmark cell's method exactly as the grid does (`benchmarks.grid.cell`: the
hyper-parameter table, then the applicability check)."""

from __future__ import annotations

from typing import Any, NamedTuple

from benchmarks.grid.cell import resolve_cell

__all__ = ["Built", "build_cell"]


class Built(NamedTuple):
    spec: Any
    problem: Any
    config: Any
    method: Any


def build_cell(method: str, target: str, *, use_tuned: bool = True, **config_overrides: Any) -> Built:
    """`(spec, problem, config, method)` of `(method, target)` with the suite's resolved settings
    (`resolve_cell`; `use_tuned=False` without the tuning file).

    Raises:
        ValueError: with `MethodSpec.applicable`'s reason when the method cannot run on the problem.
    """
    resolved = resolve_cell(method, target, use_tuned=use_tuned, **config_overrides)
    reason = resolved.spec.applicable(resolved.problem)
    if reason is not None:
        raise ValueError(f"{method} on {target}: {reason}")
    return Built(
        resolved.spec,
        resolved.problem,
        resolved.config,
        resolved.spec.build(resolved.problem, resolved.config),
    )
