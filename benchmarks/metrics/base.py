"""The metric contract: an evaluation context, a registry of metric functions, and `evaluate`.

A metric is a pure function `fn(ctx: EvalContext) -> dict[str, float]` returning NAMESPACED keys
(`logZ/error`, `mmd2/rbf_median`, `energy_w2`, ...; every key says whether it is squared). It is
registered with the list of context fields / target capabilities it REQUIRES; `evaluate` runs every
applicable metric and reports, for each metric it did not run, the reason (a metric that does not
apply is reported with a reason, never silently dropped).

Each metric receives its own PRNG key, `fold_in(ctx.key, crc32(name))`, so adding or removing a
metric never changes the randomness of the others.
"""

from __future__ import annotations

import collections
import hashlib
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np

from targets.base import Target
from targets.registry import Registry

__all__ = [
    "METRICS",
    "REQUIREMENTS",
    "EvalContext",
    "MetricFn",
    "check_context",
    "evaluate",
    "metric_key",
    "missing_requirements",
    "noise_floor",
    "register_metric",
]


class EvalContext(NamedTuple):
    """Everything a metric may look at, for one (method, target, seed) cell.

    Attributes:
        key: PRNG key for the metrics' own randomness (subsampling, Monte-Carlo noise floors).
        target: the `targets.Target` being sampled.
        x: `(n, dim)` model samples.
        log_w: `(n,)` forward path log-weights with `E[exp(log_w)] = Z`, or `None` for unweighted
            (MCMC) samples.
        reference: `(m, dim)` target samples (exact draws or the shipped reference set).
        reference2: a second, independent reference set of the same size, used for noise floors
            (the same estimator between `reference` and `reference2`).
        backward_log_w: `(m,)` log-weights of paths simulated BACKWARD from `reference` (the same path
            functional `log w` as `log_w`, so that `E_B[exp(-log w)] = 1/Z` and `E_B[log w] >= log Z`).
    """

    key: jax.Array
    target: Target
    x: jax.Array
    log_w: jax.Array | None = None
    reference: jax.Array | None = None
    reference2: jax.Array | None = None
    backward_log_w: jax.Array | None = None


MetricFn = Callable[[EvalContext], dict[str, float]]

METRICS: Registry[MetricFn] = Registry("metric")

# requirement name -> (predicate on the context, why the metric is skipped when it fails)
REQUIREMENTS: dict[str, tuple[Callable[[EvalContext], bool], str]] = {
    "log_w": (lambda ctx: ctx.log_w is not None, "no path log-weights (unweighted samples, e.g. MCMC)"),
    "log_Z": (lambda ctx: ctx.target.log_Z is not None, "the target's log Z is unknown"),
    "reference": (lambda ctx: ctx.reference is not None, "no reference samples of the target"),
    "reference2": (
        lambda ctx: ctx.reference2 is not None,
        "no second reference set (needed for the noise floor)",
    ),
    "backward_log_w": (
        lambda ctx: ctx.backward_log_w is not None,
        "no log-weights of backward paths from target samples",
    ),
    "particles": (lambda ctx: ctx.target.particles is not None, "the target is not a particle system"),
    "mixture": (lambda ctx: ctx.target.mixture is not None, "the target is not a Gaussian mixture"),
    "dim1": (lambda ctx: ctx.target.dim == 1, "the target is not one-dimensional"),
    "finetune": (lambda ctx: ctx.target.finetune_task is not None, "the target is not a fine-tuning task"),
}


def register_metric(
    name: str,
    fn: MetricFn | None = None,
    *,
    requires: Iterable[str] = (),
    description: str = "",
    overwrite: bool = False,
):
    """Register a metric `fn(ctx) -> dict[str, float]` under `name` (direct call or decorator).

    Args:
        name: snake_case registry id (the keys it returns are namespaced separately).
        fn: the metric function.
        requires: names from `REQUIREMENTS` that must hold for the metric to run.
        description: one line stating the exact definition (used in tables and `--help`).
        overwrite: replace an existing registration (e.g. to change a metric's config).

    Raises:
        ValueError: on an unknown requirement (the message lists the valid ones).
    """
    requires = tuple(requires)
    unknown = sorted(set(requires) - set(REQUIREMENTS))
    if unknown:
        raise ValueError(f"metric {name!r}: unknown requirement(s) {unknown}; valid: {sorted(REQUIREMENTS)}")
    return METRICS.register(name, fn, overwrite=overwrite, requires=requires, description=description)


def metric_key(key: jax.Array, name: str) -> jax.Array:
    """The PRNG key a metric gets: `fold_in(key, crc32(name))`, independent of the other metrics."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def missing_requirements(ctx: EvalContext, name: str) -> list[str]:
    """The requirements of metric `name` that `ctx` does not meet, as `"<requirement>: <reason>"`."""
    return [
        f"{req}: {REQUIREMENTS[req][1]}"
        for req in METRICS.meta(name)["requires"]
        if not REQUIREMENTS[req][0](ctx)
    ]


def check_context(ctx: EvalContext) -> None:
    """Validate shapes of an `EvalContext` against its target.

    Raises:
        ValueError: naming the offending field and the expected shape.
    """
    dim = ctx.target.dim
    shape = np.shape(ctx.x)
    if len(shape) != 2 or shape[1] != dim:
        raise ValueError(
            f"EvalContext.x must have shape (n, {dim}) for target {ctx.target.name!r}, got {shape}"
        )
    n = shape[0]
    if ctx.log_w is not None and np.shape(ctx.log_w) != (n,):
        raise ValueError(f"EvalContext.log_w must have shape ({n},) like x, got {np.shape(ctx.log_w)}")
    for field in ("reference", "reference2"):
        ref = getattr(ctx, field)
        if ref is not None and (np.ndim(ref) != 2 or np.shape(ref)[1] != dim):
            raise ValueError(f"EvalContext.{field} must have shape (m, {dim}), got {np.shape(ref)}")
    if ctx.reference is not None and ctx.reference2 is not None:
        m, m2 = np.shape(ctx.reference)[0], np.shape(ctx.reference2)[0]
        if m != m2:
            raise ValueError(
                f"EvalContext.reference2 has {m2} rows and reference {m}: a noise floor must be computed "
                "at the sample size of the comparison it bounds"
            )
    if ctx.backward_log_w is not None:
        if ctx.reference is None:
            raise ValueError("EvalContext.backward_log_w was given without the reference it starts from")
        m = np.shape(ctx.reference)[0]
        if np.shape(ctx.backward_log_w) != (m,):
            raise ValueError(
                f"EvalContext.backward_log_w must have shape ({m},) like reference, "
                f"got {np.shape(ctx.backward_log_w)}"
            )


_FLOORS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_FLOOR_CACHE_SIZE = 64


def _digest(value: Any) -> Any:
    """A hashable stand-in for an argument: arrays by dtype, shape and a hash of their bytes."""
    if isinstance(value, (np.ndarray, jax.Array)):
        a = np.asarray(value)
        return ("array", a.dtype.str, a.shape, hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
    return value


def noise_floor(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, memoised on the argument values: a metric's noise floor.

    A noise floor is the metric's estimator between the two reference sets, a deterministic
    function of them, identical for every sampler scored on the same target, seed and sample
    size: the weighted pass (`weighted.evaluate_raw_and_weighted`) and the other methods' cells of
    a grid process reuse it instead of recomputing it (the exact equivariant W2 floor alone takes
    seconds to minutes). `fn` must be pure; arrays are keyed by a hash of their bytes, other
    arguments must be hashable. The last 64 floors are kept.
    """
    key = (
        fn.__module__,
        fn.__qualname__,
        tuple(map(_digest, args)),
        tuple(sorted((k, _digest(v)) for k, v in kwargs.items())),
    )
    if key in _FLOORS:
        _FLOORS.move_to_end(key)
        return _FLOORS[key]
    value = fn(*args, **kwargs)
    _FLOORS[key] = value
    while len(_FLOORS) > _FLOOR_CACHE_SIZE:
        _FLOORS.popitem(last=False)
    return value


def _at_floor_size(ctx: EvalContext, name: str) -> EvalContext:
    """The context a metric with a noise floor sees: the model draws cut to the reference size.

    A floor (`reference2` against `reference`, `m` rows each) bounds the model comparison only at
    the same size: with `n > m` model draws, such a metric compares the first `m` (the draws are
    i.i.d. or resampled); with `n < m` it raises rather than state a floor at a larger size.
    """
    if "reference2" not in METRICS.meta(name)["requires"] or ctx.reference is None:
        return ctx
    n, m = np.shape(ctx.x)[0], np.shape(ctx.reference)[0]
    if n < m:
        raise ValueError(
            f"metric {name!r}: {n} model draws against {m} reference rows; the noise floor would be "
            f"computed at {m}, a larger size than the comparison (give at least {m} draws)"
        )
    if n == m:
        return ctx
    log_w = None if ctx.log_w is None else ctx.log_w[:m]
    return ctx._replace(x=ctx.x[:m], log_w=log_w)


def evaluate(
    ctx: EvalContext,
    names: Iterable[str] | None = None,
    *,
    on_error: str = "raise",
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Run every applicable metric on `ctx`.

    Args:
        ctx: the evaluation context (validated with `check_context`).
        names: metric names to run (default: every registered metric). Unknown names raise with
            the list of valid ones.
        on_error: `"raise"` (default) re-raises a metric's exception; `"report"` records it as the
            metric's reason (`"error: <type>: <message>"`) and carries on with the other metrics.
        timings: if given, each metric that ran adds its wall time (seconds) under its name.

    Returns:
        `(values, skipped)`: `values` maps namespaced keys to floats (NaN where a statistic is
        undefined, e.g. all weights zero); `skipped` maps each metric that did not run to the reason.

    Raises:
        ValueError: on a bad `on_error`, a malformed context, or two metrics returning the same key.
    """
    if on_error not in ("raise", "report"):
        raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
    check_context(ctx)
    names = METRICS.names() if names is None else list(names)
    for name in names:
        METRICS.factory(name)  # unknown names fail before any work is done
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in names:
        missing = missing_requirements(ctx, name)
        if missing:
            skipped[name] = "requires " + "; ".join(missing)
            continue
        t0 = time.perf_counter()
        try:
            out = METRICS.factory(name)(_at_floor_size(ctx, name)._replace(key=metric_key(ctx.key, name)))
        except Exception as err:  # noqa: BLE001 - reported, by request, with its type and message
            if on_error == "raise":
                raise
            skipped[name] = f"error: {type(err).__name__}: {err}"
            continue
        clash = sorted(set(out) & set(values))
        if clash:
            raise ValueError(f"metric {name!r} returned keys already produced by another metric: {clash}")
        values.update({k: float(v) for k, v in out.items()})
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    return values, skipped


class MetricEntry(NamedTuple):
    """A built-in metric's registry entry: each metric module lists its entries in `ENTRIES`, and
    `benchmarks/metrics/__init__.py` registers them all in one place (`register_metric`)."""

    name: str
    fn: MetricFn
    requires: tuple[str, ...] = ()
    description: str = ""


def metric(name: str, fn: MetricFn, requires: Iterable[str] = (), description: str = "") -> MetricEntry:
    """`MetricEntry(name, fn, requires, description)`."""
    return MetricEntry(name, fn, tuple(requires), description)
