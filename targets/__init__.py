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

from targets import finetuning, funnel, gaussian, many_well, mixtures, particles
from targets.base import ParticleSpec, ReferenceSet, Target, TargetEntry, remove_mean
from targets.registry import Registry, UnknownNameError

__all__ = [
    "BUILTIN",
    "TARGETS",
    "ParticleSpec",
    "ReferenceSet",
    "Target",
    "UnknownNameError",
    "check_log_prob",
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

    `log_prob` is checked once here (`check_log_prob`), so that a wrong one fails at registration
    with its name, not later inside a benchmark cell.

    Raises:
        ValueError: naming the target, when `dim` is not a positive integer or `log_prob` fails the check.
    """
    check_log_prob(name, log_prob, dim)
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


def check_log_prob(name: str, log_prob: Callable, dim: int) -> None:
    """Evaluate `log_prob` once at a fixed test point `x` of shape `(dim,)` and check it.

    - it runs, and returns a scalar of shape `()` that is finite or ±inf (log 0), not NaN;
    - it reads no coordinate beyond `dim`: the same point as a NumPy array, whose indexing raises
      on an out-of-range index where JAX's clamps silently (`x[2]` with `dim=2` would read `x[1]`).
      A function that cannot take a NumPy array (e.g. uses `x.at[...]`) skips this part.

    Raises:
        ValueError: naming the target and what is wrong.
    """
    import jax.numpy as jnp
    import numpy as np

    where = f"target {name!r}"
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"{where}: dim must be a positive integer, got {dim!r}")
    point = (0.5 * np.random.default_rng(0).standard_normal(dim)).astype(np.float32)
    try:
        value = jnp.asarray(log_prob(jnp.asarray(point)))
    except Exception as err:  # noqa: BLE001 - reported with the target's name
        raise ValueError(
            f"{where}: log_prob fails on a point of shape ({dim},): {type(err).__name__}: {err}"
        ) from err
    if value.shape != ():
        raise ValueError(
            f"{where}: log_prob must return a scalar of shape () for one point of shape ({dim},), "
            f"got shape {value.shape} (sum over coordinates, or check that it takes ONE point)"
        )
    if bool(jnp.isnan(value)):
        raise ValueError(f"{where}: log_prob returns NaN at the test point {point.tolist()}")
    try:
        log_prob(point)
    except IndexError as err:
        raise ValueError(
            f"{where}: log_prob reads a coordinate beyond dim={dim} ({err}); is dim right?"
        ) from None
    except Exception:  # noqa: BLE001 - not NumPy-compatible: this part cannot be checked
        pass


BUILTIN: tuple[TargetEntry, ...] = (
    *finetuning.ENTRIES,
    *funnel.ENTRIES,
    *gaussian.ENTRIES,
    *many_well.ENTRIES,
    *mixtures.ENTRIES,
    *particles.ENTRIES,
)
"""Every built-in target; each module lists its own as `ENTRIES` and registers nothing itself."""

for _entry in BUILTIN:
    register(_entry.name, _entry.factory, **_entry.meta)
