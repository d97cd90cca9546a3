"""A ground-truth-free scale of a target from a short, seeded pilot run.

A Brownian base started at 0 ends at `N(0, σ² I)`; the learned samplers and the MCMC / SMC / AIS
initial laws start from that scale, so σ must cover the target's mass. A target without a tuned σ
gets it from this pilot, which only evaluates the unnormalised `log γ` and its gradient:

1. **Gaussian variational fit.** `q = N(μ, diag(s²))`, started at `μ = 0`, `s = init_scale`,
   maximises the reparametrised ELBO `E_ε[log γ(μ + s ⊙ ε)] + Σ_i log s_i` (the entropy up to a
   constant) with Adam, `vi_samples` draws per step, for `vi_steps` steps. Draws whose `log γ` or
   gradient is not finite are left out of the step.
2. **Preconditioned MALA.** `chains` chains start at `μ + max(s, init_scale) ⊙ ε` (the fit, widened
   to the broad start in every coordinate, so that chains reach modes near the one the fit found) and
   take `mala_steps` MALA steps with the preconditioner `diag(s²)` and step size `h`, started at
   `step_size · d^{-1/6}`: `x' = x + ½h² S²∇log γ(x) + h S ξ`, accepted with the Metropolis–Hastings
   ratio (a non-finite proposal is rejected); after every step `log h` moves by
   `0.1 · (acceptance − 0.574)`, so that chains started far out still move. This corrects what the
   Gaussian misses (skew, heavy tails, nearby modes); the chains' final states are the pilot draws.
3. **Robust scale.** Per coordinate `i`, with the median `m_i` and the median absolute deviation
   `MAD_i` of the chains' final states, `r_i = sqrt(m_i² + (1.4826 MAD_i)²)` (the robust analogue of
   `sqrt(E[x_i²])`: the offset of the mass from the origin plus its spread; `1.4826 MAD` is the
   standard deviation of a Gaussian). The scale is `σ̂ = max_i r_i`, the widest coordinate, so that the
   isotropic base covers every direction.

The cost is `vi_steps · vi_samples + chains · (mala_steps + 1)` evaluations of `log γ` and as many of
its gradient (`Cost`), recorded with the cell. Everything is deterministic given the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from samplers.fields import INTEGER, POSITIVE, Checked, field, integer
from samplers.method import Cost
from samplers.promotion import standard_promotion

__all__ = ["PilotConfig", "PilotScale", "pilot_scale", "robust_scale"]

MAD_TO_STD = 1.4826  # 1 / Φ⁻¹(3/4): the MAD of a Gaussian times this is its standard deviation
TARGET_ACCEPTANCE = 0.574  # the optimal MALA acceptance rate
ADAPTATION_RATE = 0.1  # log h moves by this times (acceptance - target) after every step


@dataclasses.dataclass(frozen=True)
class PilotConfig(Checked):
    """Settings of the pilot (module docstring).

    Attributes:
        seed: the pilot's key is `jax.random.key(seed)`: the scale of a target is the same in every cell.
        init_scale: the initial std `s` of the variational fit (a broad start).
        vi_steps, vi_samples, learning_rate: Adam steps, draws per step and learning rate of the fit.
        chains, mala_steps, step_size: the preconditioned MALA refinement.
    """

    seed: int = field(0, INTEGER)
    init_scale: float = field(3.0, POSITIVE)
    vi_steps: int = field(200, integer(1))
    vi_samples: int = field(16, integer(1))
    learning_rate: float = field(0.1, POSITIVE)
    chains: int = field(64, integer(2))
    mala_steps: int = field(100, integer(0))
    step_size: float = field(1.0, POSITIVE)


class PilotScale(NamedTuple):
    """What `pilot_scale` returns.

    Attributes:
        scale: `σ̂` (host float).
        mean, std: the variational fit's `μ` and `s`, `(dim,)`.
        acceptance: the MALA chains' mean acceptance rate.
        cost: the evaluations spent.
    """

    scale: float
    mean: jax.Array
    std: jax.Array
    acceptance: float
    cost: Cost


def robust_scale(x: jax.Array) -> jax.Array:
    """`max_i sqrt(m_i² + (1.4826 MAD_i)²)` of points `x (n, dim)` (module docstring, step 3)."""
    median = jnp.median(x, axis=0)
    mad = jnp.median(jnp.abs(x - median), axis=0)
    return jnp.max(jnp.sqrt(median**2 + (MAD_TO_STD * mad) ** 2))


def _finite_value_and_grad(log_prob: Callable[[jax.Array], jax.Array]):
    """`x -> (log γ(x), ∇log γ(x), finite)` for one point; a non-finite value or gradient gives
    `(-inf, 0, False)`."""

    def fn(x):
        value, grad = jax.value_and_grad(log_prob)(x)
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        return jnp.where(finite, value, -jnp.inf), jnp.where(finite, grad, jnp.zeros_like(grad)), finite

    return jax.vmap(fn)


def _fit(key, value_and_grad, dim: int, config: PilotConfig):
    """Step 1: `(μ, log s)` of the Gaussian fit."""
    params = (jnp.zeros(dim, jnp.float32), jnp.full(dim, jnp.log(config.init_scale), jnp.float32))
    optimizer = optax.adam(config.learning_rate)

    def step(carry, key):
        params, opt_state = carry
        mean, log_std = params
        eps = jax.random.normal(key, (config.vi_samples, dim), jnp.float32)
        x = mean + jnp.exp(log_std) * eps
        _, grad, finite = value_and_grad(x)
        weight = finite.astype(jnp.float32) / jnp.maximum(jnp.sum(finite), 1).astype(jnp.float32)
        g = grad * weight[:, None]
        # ascent directions of the ELBO, negated for the minimiser
        grads = (-jnp.sum(g, axis=0), -(jnp.sum(g * eps, axis=0) * jnp.exp(log_std) + 1.0))
        updates, opt_state = standard_promotion(optimizer.update)(grads, opt_state, params)  # optax promotes
        return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(key, config.vi_steps)
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), keys)
    return params


def _mala(key, value_and_grad, x, precond, config: PilotConfig):
    """Step 2: the chains' final states and their mean acceptance rate."""
    dim = x.shape[-1]
    var = precond**2

    def log_q(x_to, x_from, g_from, h):  # log N(x_to; x_from + ½h²S²g, h²S²) up to a constant
        mean = x_from + 0.5 * h**2 * var * g_from
        return -0.5 * jnp.sum((x_to - mean) ** 2 / (h**2 * var), axis=-1)

    def step(carry, key):
        x, value, grad, log_h, accepted = carry
        h = jnp.exp(log_h)
        key_move, key_accept = jax.random.split(key)
        xi = jax.random.normal(key_move, x.shape, jnp.float32)
        proposal = x + 0.5 * h**2 * var * grad + h * precond * xi
        value_p, grad_p, finite = value_and_grad(proposal)
        log_ratio = value_p - value + log_q(x, proposal, grad_p, h) - log_q(proposal, x, grad, h)
        log_u = jnp.log(jax.random.uniform(key_accept, value.shape, jnp.float32))
        accept = finite & (log_u < jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio))
        keep = lambda new, old: jnp.where(accept.reshape(accept.shape + (1,) * (new.ndim - 1)), new, old)
        rate = jnp.mean(accept.astype(jnp.float32))
        log_h = log_h + ADAPTATION_RATE * (rate - TARGET_ACCEPTANCE)
        return (keep(proposal, x), keep(value_p, value), keep(grad_p, grad), log_h, accepted + rate), None

    value, grad, _ = value_and_grad(x)
    keys = jax.random.split(key, config.mala_steps)
    log_h = jnp.log(jnp.float32(config.step_size * dim ** (-1.0 / 6.0)))
    init = (x, value, grad, log_h, jnp.zeros((), jnp.float32))
    (x, _, _, _, accepted), _ = jax.lax.scan(step, init, keys)
    return x, accepted / max(config.mala_steps, 1)


def pilot_scale(
    log_prob: Callable[[jax.Array], jax.Array], dim: int, config: PilotConfig | None = None
) -> PilotScale:
    """The ground-truth-free scale `σ̂` of the density `exp(log_prob)` on `R^dim` (module docstring).

    Args:
        log_prob: the unnormalised log-density of ONE point `(dim,)`.
        dim: the dimension.
        config: the pilot's settings (`PilotConfig()` by default); its `seed` makes the result
            deterministic.

    Returns:
        A `PilotScale`; `scale` is NaN when the pilot found no finite point (the caller decides).
    """
    config = PilotConfig() if config is None else config
    value_and_grad = _finite_value_and_grad(log_prob)
    key_fit, key_start, key_mala = jax.random.split(jax.random.key(config.seed), 3)

    @jax.jit
    def run():
        mean, log_std = _fit(key_fit, value_and_grad, dim, config)
        std = jnp.exp(log_std)
        broad = jnp.maximum(std, config.init_scale)
        start = mean + broad * jax.random.normal(key_start, (config.chains, dim), jnp.float32)
        x, acceptance = _mala(key_mala, value_and_grad, start, std, config)
        return robust_scale(x), mean, std, acceptance

    scale, mean, std, acceptance = run()
    evals = config.vi_steps * config.vi_samples + config.chains * (config.mala_steps + 1)
    return PilotScale(float(scale), mean, std, float(acceptance), Cost.of(evals, evals))
