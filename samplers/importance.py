"""Importance weights of a replay buffer: effective sample size, tempering to an ESS floor, weighted draws.

A buffer that resamples its entries by path weights `w_i = exp(ℓ_i)` (`ℓ_i = log w_i`) is a
self-normalised importance sample; when one path weight dominates, every minibatch is that one end
point copied (the buffer's ESS collapses to 1-2 entries out of thousands on many-well-32). The guard
here tempers the weights, `w_i^β` with `β ∈ [0, 1]`, choosing the largest `β` whose normalised ESS

    ESS(β) = (Σ_i w_i^β)² / (N Σ_i w_i^{2β}),       N = number of filled entries,

is at least a floor `ρ` (e.g. 5 % of the buffer). `ESS(β)` is non-increasing in `β`
(`d log ESS/dβ = 2(E_β[ℓ] - E_{2β}[ℓ]) ≤ 0`: a stronger tilt has a larger mean of `ℓ`), `ESS(0) = 1`,
so bisection on `[0, 1]` keeping the feasible end finds it. A buffer already at or above the floor
is untouched (`β = 1`, the weights bit for bit). Tempering trades the consistency of the weighted
buffer (exact as the buffer grows, at `β = 1`) for a bounded variance: the resampled buffer is then a
sample of `∝ q·(p*/q)^β`, between the proposal `q` (`β = 0`) and `p*` (`β = 1`).

Every function is pure and jittable; empty slots and non-finite weights carry `ℓ = -inf` (weight 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Tempered", "normalised_ess", "temper_to_ess", "weighted_indices"]

BISECTION_STEPS = 30  # β to 2^-30 ≈ 1e-9


class Tempered(NamedTuple):
    """What `temper_to_ess` returns.

    Attributes:
        log_w: the tempered log-weights `β ℓ` (`-inf` stays `-inf`); `ℓ` itself when `β = 1`.
        beta: the exponent `β ∈ [0, 1]`.
        ess: normalised ESS of the weights before tempering, in `[1/N, 1]`.
        ess_tempered: normalised ESS after tempering (`≥ floor` whenever some weight is positive).
    """

    log_w: jax.Array
    beta: jax.Array
    ess: jax.Array
    ess_tempered: jax.Array


def normalised_ess(log_w: jax.Array, num: jax.Array) -> jax.Array:
    """`(Σw)² / (num Σw²)` of the weights `exp(log_w)` (`-inf` entries count as weight 0), stably."""
    top = jnp.max(log_w)
    w = jnp.exp(log_w - jnp.where(jnp.isfinite(top), top, 0.0))
    count = jnp.maximum(num, 1).astype(w.dtype)  # an int32 buffer size
    return jnp.sum(w) ** 2 / (count * jnp.maximum(jnp.sum(w * w), jnp.finfo(w.dtype).tiny))


def _scaled(log_w: jax.Array, beta: jax.Array) -> jax.Array:
    """`β ℓ` with `-inf` kept (`0 · -inf` would be NaN at `β = 0`)."""
    return jnp.where(jnp.isfinite(log_w), beta * log_w, -jnp.inf)


def temper_to_ess(log_w: jax.Array, num: jax.Array, floor: float | None) -> Tempered:
    """Temper `log_w` to the largest `β ∈ [0, 1]` with `normalised_ess(β ℓ, num) ≥ floor` (bisection).

    Args:
        log_w: `(capacity,)` log-weights, `-inf` for empty slots and zero weights.
        num: the number of filled entries `N` (the ESS is normalised by it).
        floor: the ESS floor `ρ ∈ (0, 1]`; None turns the guard off (`β = 1`).

    Returns:
        `Tempered`: with `β = 1` (and `log_w` returned unchanged) when `ESS(1) ≥ ρ`.
    """
    ess = normalised_ess(log_w, num)
    if floor is None:
        return Tempered(log_w, jnp.ones((), log_w.dtype), ess, ess)

    def feasible(beta):
        return normalised_ess(_scaled(log_w, beta), num) >= floor

    def bisect(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        ok = feasible(mid)
        return jnp.where(ok, mid, low), jnp.where(ok, high, mid)

    zero, one = jnp.zeros((), log_w.dtype), jnp.ones((), log_w.dtype)
    low, _ = jax.lax.fori_loop(0, BISECTION_STEPS, bisect, (zero, one))
    beta = jnp.where(ess >= floor, one, low)
    tempered = jnp.where(beta == 1.0, log_w, _scaled(log_w, beta))
    return Tempered(tempered, beta, ess, normalised_ess(tempered, num))


def weighted_indices(key: jax.Array, log_w: jax.Array, num: int) -> jax.Array:
    """`num` i.i.d. indices with `P(i) ∝ exp(log_w_i)`, by inverse-CDF search.

    Equivalent to `jax.random.categorical(key, log_w, shape=(num,))` but O(capacity + num log capacity)
    instead of drawing `num × capacity` Gumbel variates (which dominated the step time).
    """
    top = jnp.max(log_w)
    cdf = jnp.cumsum(jnp.exp(log_w - jnp.where(jnp.isfinite(top), top, 0.0)))
    u = jax.random.uniform(key, (num,), cdf.dtype) * cdf[-1]
    index = jnp.searchsorted(cdf, u, side="right")
    # Never return a zero-weight slot (u = total after rounding): fall back to the last positive one.
    last = jnp.max(jnp.where(log_w > -jnp.inf, jnp.arange(log_w.shape[0]), 0))
    return jnp.minimum(index, last)
