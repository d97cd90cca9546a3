"""tiltbench samplers: base processes, SDE integration with path weights, control networks,
the unified loss family and the MCMC/SMC baselines, all behind one Method contract.

`samplers.get(name)` returns a `MethodSpec`; `spec.build(problem, spec.make_config(...))` returns
a bound `Method(init, step, sample)`. Add your own with `samplers.register(MethodSpec(...))`.

The built-in methods are listed once, here: every module of `samplers.methods` and
`samplers.baselines` exports its `MethodSpec`s as `SPECS` and registers nothing itself.
"""

from __future__ import annotations

from samplers import baselines, methods
from samplers.method import Cost, Method, MethodSpec, Samples
from targets.registry import Registry, UnknownNameError

__all__ = [
    "BUILTIN",
    "METHODS",
    "Cost",
    "Method",
    "MethodSpec",
    "Samples",
    "UnknownNameError",
    "get",
    "names",
    "register",
]

METHODS: Registry[MethodSpec] = Registry("method")


def register(spec: MethodSpec, *, overwrite: bool = False) -> MethodSpec:
    """Register a method spec under `spec.name` (usable from user code)."""
    METHODS.register(spec.name, lambda: spec, overwrite=overwrite, family=spec.family)
    return spec


def get(name: str) -> MethodSpec:
    """The spec registered as `name`; unknown names raise with the list of valid ones."""
    return METHODS.get(name)


def names() -> list[str]:
    """All registered method names, sorted."""
    return METHODS.names()


BUILTIN: tuple[MethodSpec, ...] = (*methods.SPECS, *baselines.SPECS)
"""Every built-in method, learned losses first, then the MCMC / SMC / AIS baselines."""

for _spec in BUILTIN:
    register(_spec)
