"""tiltbench targets: unnormalised Boltzmann densities with exact or reference ground truth.

Use `targets.get(name, **overrides)` to build one, `targets.names()` to list them, and
`targets.register_target(...)` (or the `targets.register` decorator) to add your own:

    >>> import jax.numpy as jnp, targets
    >>> t = targets.register_target("my_banana", lambda x: -0.5 * (x[0]**2 + (x[1] - x[0]**2)**2), dim=2)
    >>> targets.get("my_banana").dim
    2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from targets.base import ParticleSpec, ReferenceSet, Target, remove_mean
from targets.registry import Registry, UnknownNameError

__all__ = [
    "TARGETS",
    "ParticleSpec",
    "ReferenceSet",
    "Target",
    "UnknownNameError",
    "get",
    "names",
    "register",
    "register_target",
    "remove_mean",
]

TARGETS: Registry[Target] = Registry("target")


def register(
    name: str, factory: Callable[..., Target] | None = None, *, overwrite: bool = False, **meta: Any
):
    """Register a target factory `(**overrides) -> Target` under `name` (decorator or call)."""
    return TARGETS.register(name, factory, overwrite=overwrite, **meta)


def get(name: str, **overrides: Any) -> Target:
    """Build the registered target `name`; unknown names raise with the list of valid ones."""
    return TARGETS.get(name, **overrides)


def names() -> list[str]:
    """All registered target names, sorted."""
    return TARGETS.names()


def register_target(
    name: str,
    log_prob: Callable,
    dim: int,
    *,
    log_Z: float | None = None,
    sample: Callable | None = None,
    pretty_name: str = "",
    overwrite: bool = False,
    **fields: Any,
) -> Target:
    """Register a user target from just `log_prob` (one point `(dim,)`) and `dim`.

    Optional `sample(key, n) -> (n, dim)` (exact samples) and `log_Z` unlock the metrics that need
    them. Returns the built `Target`; every later part of the suite accepts it by `name`.
    """
    target = Target(
        name=name,
        dim=dim,
        log_prob_fn=log_prob,
        log_Z=log_Z,
        sample_fn=sample,
        pretty_name=pretty_name or name,
        log_Z_source="user supplied" if log_Z is not None else "",
        **fields,
    )
    TARGETS.register(name, lambda: target, overwrite=overwrite, family="user")
    return target


# Built-in targets register themselves on import.
from targets import finetuning, funnel, gaussian, many_well, mixtures, particles  # noqa: E402,F401
