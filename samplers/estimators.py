"""Estimators of `log Z`, ELBO / EUBO and effective sample sizes from path log-weights.

Every method reports through this module (`docs/methods.md` §7.2). Inputs are
path log-weights `log w` with

- forward paths (simulated by the sampler): `E_F[w] = Z`;
- backward paths (started from target samples, `samplers.sde.simulate_backward`): `E_B[1/w] = 1/Z`.

In the Crooks notation of methods.md §7.1 the generalised work is `W = -log w` and `ΔF = -log Z`.
Every estimator returns `Estimate(value, se)`: `se` is an asymptotic (delta-method) standard error
computed from the same sample, so it is itself noisy and unreliable when the weights are
degenerate (ESS near 1/N). All functions are pure `jnp` and jittable; `log w = -inf` (a zero weight)
is allowed, NaN is not.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplers.promotion import float_dtype

__all__ = [
    "Estimate",
    "bar_log_Z",
    "elbo",
    "eubo",
    "forward_ess",
    "log_Z",
    "log_Z_backward",
    "reverse_ess",
    "summary",
]


class Estimate(NamedTuple):
    """A point estimate and its standard error (same units as `value`)."""

    value: jax.Array
    se: jax.Array


def _as_log_weights(log_w) -> jax.Array:
    log_w = jnp.asarray(log_w)
    log_w = log_w.astype(float_dtype(log_w))
    if log_w.ndim != 1 or log_w.shape[0] < 2:
        raise ValueError(f"log-weights must be a vector of at least 2 values, got shape {log_w.shape}")
    return log_w


def _log_mean_exp(log_w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`log mean(e^{log w})` and its delta-method SE, `std(w)/(sqrt(N) mean(w))`, with a max shift."""
    n = log_w.shape[0]
    shift = jax.lax.stop_gradient(jnp.max(log_w))
    w = jnp.exp(log_w - shift)
    mean = jnp.mean(w)
    se = jnp.std(w, ddof=1) / (jnp.sqrt(n) * mean)
    return jnp.log(mean) + shift, se


def log_Z(log_w) -> Estimate:
    """Jarzynski / importance-sampling estimate `log Ẑ = LSE_i(log w_i) - log N` from forward paths.

    `Ẑ` is unbiased for `Z`, so `log Ẑ` is biased low (a stochastic lower bound on `log Z`).
    SE by the delta method: `se(log Ẑ) ≈ std(w)/(sqrt(N) mean(w))`.

    Args:
        log_w: forward-path log-weights `(N,)`.

    Returns:
        `Estimate(log Ẑ, se)`.
    """
    value, se = _log_mean_exp(_as_log_weights(log_w))
    return Estimate(value, se)


def log_Z_backward(log_w_backward) -> Estimate:
    """`log Ẑ_fwd = -(LSE_i(-log w^B_i) - log N)` from backward paths (methods.md §7.2).

    `1/Ẑ` is unbiased for `1/Z`, so this is a stochastic upper bound on `log Z`. SE by the delta method.

    Args:
        log_w_backward: backward-path log-weights `(N,)` (paths started from exact target samples).
    """
    value, se = _log_mean_exp(-_as_log_weights(log_w_backward))
    return Estimate(-value, se)


def _mean_and_se(values: jax.Array) -> Estimate:
    return Estimate(jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(values.shape[0]))


def elbo(log_w) -> Estimate:
    """ELBO `= mean_i log w_i` on forward paths (`≤ log Z`); SE `std/sqrt(N)`."""
    return _mean_and_se(_as_log_weights(log_w))


def eubo(log_w_backward) -> Estimate:
    """EUBO `= mean_i log w^B_i` on backward paths (`≥ log Z`); SE `std/sqrt(N)`."""
    return _mean_and_se(_as_log_weights(log_w_backward))


def reverse_ess(log_w) -> Estimate:
    """Normalised reverse ESS `(Σ w)² / (N Σ w²) ∈ [1/N, 1]` of forward-path weights.

    With `a = mean(w)`, `B = mean(w²)`, `ESS = a²/B`; delta method on
    `log ESS = 2 log a - log B`: `se(ESS) = ESS · std(2w/a - w²/B)/sqrt(N)`.
    """
    log_w = _as_log_weights(log_w)
    n = log_w.shape[0]
    w = jnp.exp(log_w - jax.lax.stop_gradient(jnp.max(log_w)))
    a, b = jnp.mean(w), jnp.mean(w * w)
    ess = a * a / b
    influence = 2.0 * w / a - w * w / b
    return Estimate(ess, ess * jnp.std(influence, ddof=1) / jnp.sqrt(n))


def forward_ess(log_w_backward) -> Estimate:
    """Normalised forward ESS `N² / (Σ e^{log w^B} Σ e^{-log w^B}) ∈ (0, 1]` of backward-path weights.

    With `a = mean(e^{lw})`, `b = mean(e^{-lw})`, `ESS = 1/(a b)` (methods.md §7.2); delta method on
    `log ESS = -log a - log b`: `se = ESS · std(e^{lw}/a + e^{-lw}/b)/sqrt(N)` (each ratio computed
    with its own max shift).
    """
    log_w = _as_log_weights(log_w_backward)
    n = log_w.shape[0]
    x = jnp.exp(log_w - jax.lax.stop_gradient(jnp.max(log_w)))
    y = jnp.exp(-log_w - jax.lax.stop_gradient(jnp.max(-log_w)))
    log_ess = -(jnp.log(jnp.mean(x)) + jnp.max(log_w)) - (jnp.log(jnp.mean(y)) + jnp.max(-log_w))
    ess = jnp.exp(log_ess)
    influence = x / jnp.mean(x) + y / jnp.mean(y)
    return Estimate(ess, ess * jnp.std(influence, ddof=1) / jnp.sqrt(n))


def _bar_balance(c, log_w_forward, log_w_backward, log_ratio):
    """`Σ_i σ(lw_i - c - M) - Σ_j σ(c + M - lw^B_j)`, decreasing in `c` (σ the logistic function)."""
    forward = jnp.sum(jax.nn.sigmoid(log_w_forward - c - log_ratio))
    backward = jnp.sum(jax.nn.sigmoid(c + log_ratio - log_w_backward))
    return forward - backward


def bar_log_Z(log_w_forward, log_w_backward, *, num_iterations: int = 100) -> Estimate:
    """Bennett acceptance ratio (Crooks / BAR) estimate of `log Z` from forward and backward paths.

    With forward work `W_F = -log w` (`n_F` forward paths), reverse work `W_R = log w^B` (`n_B`
    backward paths), `ΔF = -log Z` and `M = log(n_F/n_B)`, BAR solves (Bennett 1976; Shirts et al. 2003)

        Σ_i 1/(1 + e^{M + W_F,i - ΔF}) = Σ_j 1/(1 + e^{-M + W_R,j + ΔF}),

    i.e. in `c = log Z`: `Σ_i σ(lw_i - c - M) = Σ_j σ(c + M - lw^B_j)`. The left side decreases and
    the right side increases in `c`, so the root is unique; it is found by bisection in `jnp`
    (`num_iterations` halvings of a bracket that always contains it). Standard error: the
    asymptotic BAR variance (Bennett's eq. 10a, as corrected in `pymbar`),

        Var(log Ẑ) = <f_F²>/(n_F <f_F>²) + <f_R²>/(n_B <f_R>²) - 1/n_F - 1/n_B,

    with `f_F = σ(lw_i - c - M)` on forward paths and `f_R = σ(c + M - lw^B_j)` on backward paths.

    Args:
        log_w_forward: forward-path log-weights `(n_F,)` (`E_F[w] = Z`).
        log_w_backward: backward-path log-weights `(n_B,)` (`E_B[1/w] = 1/Z`), on the same path space.
        num_iterations: bisection steps (100 halvings reach float resolution from any bracket used here).

    Returns:
        `Estimate(log Ẑ_BAR, se)`.
    """
    lw_f = _as_log_weights(log_w_forward)
    lw_b = _as_log_weights(log_w_backward)
    n_f, n_b = lw_f.shape[0], lw_b.shape[0]
    log_ratio = jnp.log(n_f / n_b)
    finite = jnp.concatenate([lw_f, lw_b])
    finite = jnp.where(jnp.isfinite(finite), finite, jnp.nan)
    # At c = lo every forward term is ≈ 1 and every backward term ≈ 0 (balance > 0), at c = hi the
    # reverse: a margin of 40 makes the logistic tails e^{-40} ≈ 4e-18, far below one term.
    lo = jnp.nanmin(finite) - jnp.abs(log_ratio) - 40.0
    hi = jnp.nanmax(finite) + jnp.abs(log_ratio) + 40.0

    def bisect(_, bracket):
        low, high = bracket
        mid = 0.5 * (low + high)
        positive = _bar_balance(mid, lw_f, lw_b, log_ratio) > 0
        return jnp.where(positive, mid, low), jnp.where(positive, high, mid)

    low, high = jax.lax.fori_loop(0, num_iterations, bisect, (lo, hi))
    c = 0.5 * (low + high)
    f_forward = jax.nn.sigmoid(lw_f - c - log_ratio)
    f_backward = jax.nn.sigmoid(c + log_ratio - lw_b)
    var = (
        jnp.mean(f_forward**2) / (n_f * jnp.mean(f_forward) ** 2)
        + jnp.mean(f_backward**2) / (n_b * jnp.mean(f_backward) ** 2)
        - 1.0 / n_f
        - 1.0 / n_b
    )
    return Estimate(c, jnp.sqrt(jnp.maximum(var, 0.0)))


def summary(log_w, log_w_backward=None) -> dict[str, Estimate]:
    """Every estimator that applies: forward ones always, backward and BAR when backward weights are given.

    Keys: `log_Z`, `elbo`, `reverse_ess`, and with `log_w_backward`: `log_Z_backward`, `eubo`,
    `forward_ess`, `bar_log_Z`.
    """
    out = {"log_Z": log_Z(log_w), "elbo": elbo(log_w), "reverse_ess": reverse_ess(log_w)}
    if log_w_backward is not None:
        out.update(
            log_Z_backward=log_Z_backward(log_w_backward),
            eubo=eubo(log_w_backward),
            forward_ess=forward_ess(log_w_backward),
            bar_log_Z=bar_log_Z(log_w, log_w_backward),
        )
    return out
