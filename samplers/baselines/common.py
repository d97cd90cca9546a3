"""Shared pieces of the MCMC / SMC / AIS baselines.

Everything here acts on a `targets.Target` only through its contract (`log_prob` on one point,
`dim`, `particles`), so the baselines run on any object with a `.target` attribute.

Working density. A baseline samples the *working* density `γ̃` on `R^dim`:

- ordinary targets: `γ̃ = γ`;
- particle systems (`target.particles` set, `γ` translation invariant, `Z` defined on the zero
  centre-of-mass subspace with `(n - 1)·d` degrees of freedom): write `x = y + 1 ⊗ c` with `y`
  centre-of-mass free and `c ∈ R^d` the centre of mass, and `u = √n · c` (the orthonormal
  coordinate of `x` along the centre-of-mass directions, so `|x|² = |y|² + |u|²`). Then

      log γ̃(x) = log γ(y) + log N(u; 0, s² I_d),

  a proper density on `R^{n·d}` with `∫ γ̃ dx = ∫ γ dy = Z` exactly (`dx = dy du`), whose
  `y`-marginal is the target. Samples are projected back with `remove_mean`. With `s` equal to
  the scale of the Gaussian initial law `N(0, s² I)` of SMC/AIS, the centre-of-mass factor of
  `γ̃` equals that of the initial law, so the tempering log-likelihood `log γ̃ − log p_0` does not
  depend on `u` at all.

MCMC draws layout. `Samples.x` of an MCMC baseline is *draw-major*: row `i · num_chains + c` is
draw `i` of chain `c`, so that truncating to `num_samples` rows drops only the last draws;
`chains_from_samples` / `diagnostics` undo this layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import blackjax.diagnostics as bjd
import jax
import jax.numpy as jnp
import numpy as np

from samplers.method import Cost, Method, Samples
from samplers.promotion import standard_promotion
from targets.base import remove_mean

__all__ = [
    "NoTrainingInfo",
    "NoTrainingState",
    "chains_from_samples",
    "complete_centre_of_mass",
    "diagnostics",
    "gaussian_log_prob",
    "monte_carlo_standard_error",
    "no_training_method",
    "working_density",
]

T = TypeVar("T")


class NoTrainingState(NamedTuple):
    """State of a baseline with nothing to train (SMC, AIS): only the (zero) training cost.

    Attributes:
        cost: cumulative training cost, always zero.
    """

    cost: Any


class NoTrainingInfo(NamedTuple):
    """Info of a no-op training step (SMC, AIS): empty."""


def no_training_method(
    sample: Callable[[jax.Array, int], Samples],
    backward: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Method:
    """A Method with nothing to train (SMC, AIS): `init` gives a zero-cost `NoTrainingState`, `step` is
    a no-op, and all the work is done by `sample(key, num_samples)` and, when given,
    `backward(key, x_target)`; both ignore the state."""

    def init(key: jax.Array) -> NoTrainingState:
        del key
        return NoTrainingState(Cost.zero())

    def step(key: jax.Array, state: NoTrainingState) -> tuple[NoTrainingState, NoTrainingInfo]:
        del key
        return state, NoTrainingInfo()

    def sample_method(key: jax.Array, state: NoTrainingState, num_samples: int) -> Samples:
        del state
        return sample(key, num_samples)

    def backward_method(key: jax.Array, state: NoTrainingState, x_target: jax.Array) -> jax.Array:
        del state
        return backward(key, x_target)

    return Method(init, step, sample_method, None if backward is None else backward_method)


def gaussian_log_prob(x: jax.Array, scale: float) -> jax.Array:
    """`log N(x; 0, scale² I)` of one point `x` of shape `(dim,)` (normalised, in nats)."""
    dim = x.shape[-1]
    return -0.5 * jnp.sum(x**2) / scale**2 - 0.5 * dim * math.log(2.0 * math.pi * scale**2)


def working_density(target: Any, scale: float) -> tuple[Callable, Callable]:
    """The working log density `log γ̃` of one point, and the projection applied to outputs.

    Args:
        target: a `targets.Target`.
        scale: `s`, the standard deviation of the centre-of-mass factor (particle systems only).

    Returns:
        `(log_prob, project)`: `log_prob(x) = log γ̃(x)` on one point `(dim,)` with
        `∫ γ̃ = Z` (see the module docstring), and `project(x)` (batched over leading axes): the
        identity, or `remove_mean` for particle systems.
    """
    spec = target.particles
    if spec is None:
        return target.log_prob, lambda x: x
    n, d = spec.n_particles, spec.spatial_dim
    sqrt_n = math.sqrt(n)

    def log_prob(x: jax.Array) -> jax.Array:
        centre = x.reshape(n, d).mean(axis=0)
        return target.log_prob(remove_mean(x, spec)) + gaussian_log_prob(sqrt_n * centre, scale)

    return log_prob, lambda x: remove_mean(x, spec)


def complete_centre_of_mass(key: jax.Array, x: jax.Array, target: Any, scale: float) -> jax.Array:
    """Target samples `(n, dim)` -> samples of the working density `γ̃` (identity for ordinary targets).

    For particle systems, adds an independent centre of mass `c` with `√n · c ~ N(0, scale² I_d)`,
    the centre-of-mass factor of `γ̃` (module docstring); the centre-of-mass-free part is kept.
    """
    spec = target.particles
    if spec is None:
        return x
    n, d = spec.n_particles, spec.spatial_dim
    centre = scale / math.sqrt(n) * jax.random.normal(key, (x.shape[0], 1, d), x.dtype)
    shaped = remove_mean(x, spec).reshape(x.shape[0], n, d) + centre
    return shaped.reshape(x.shape)


def chains_from_samples(x: jax.Array, num_chains: int) -> jax.Array:
    """Undo the draw-major layout: `(num_samples, ...)` -> `(num_chains, num_draws, ...)`.

    Only complete draws (all chains present) are kept: `num_draws = num_samples // num_chains`.
    """
    num_draws = x.shape[0] // num_chains
    if num_draws < 1:
        raise ValueError(f"need at least num_chains={num_chains} samples, got {x.shape[0]}")
    x = x[: num_draws * num_chains].reshape(num_draws, num_chains, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)


@jax.jit
def monte_carlo_standard_error(values: jax.Array) -> jax.Array:
    """Monte-Carlo standard error of the mean of each variable: `sd / sqrt(ESS)`.

    Args:
        values: `(num_chains, num_draws, ...)` draws of one or more scalar statistics.

    Returns:
        `(...)` standard errors, with the autocorrelation ESS of `blackjax.diagnostics.
        effective_sample_size` (Geyer initial monotone sequence over all chains) and the pooled
        standard deviation.
    """
    ess = bjd.effective_sample_size(values, chain_axis=0, sample_axis=1)
    sd = jnp.std(values.reshape(-1, *values.shape[2:]), axis=0, ddof=1)
    return sd / jnp.sqrt(ess)


@jax.jit
@standard_promotion  # blackjax's rank normalisation divides int32 ranks by Python floats
def _ess_and_rhat(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One compiled program: blackjax's rank-normalised diagnostics are many small ops, slow eagerly.
    ess = bjd.ess_bulk(values, chain_axis=0, sample_axis=1)
    if values.shape[0] >= 2 and values.shape[1] >= 4:
        rhat = bjd.rhat(values, chain_axis=0, sample_axis=1)
    else:
        rhat = jnp.full_like(ess, jnp.nan)
    return ess, rhat


def diagnostics(x: jax.Array, num_chains: int, target: Any | None = None) -> dict[str, float]:
    """MCMC convergence diagnostics of draw-major samples, for the result record.

    Statistics: every coordinate `x_j`, the squared norm `|x|²`, and `log γ(x)` when `target` is
    given. For each, the rank-normalised bulk ESS (Vehtari et al. 2021) and the rank-normalised
    split R-hat, both from `blackjax.diagnostics`.

    Args:
        x: `Samples.x` of an MCMC baseline, `(num_samples, dim)`, draw-major.
        num_chains: the config's `num_chains`.
        target: optional `targets.Target` for the log-density statistic.

    Returns:
        `{"mcmc/ess_bulk_min": min over coordinates, "mcmc/ess_bulk_per_chain_min": the same
        divided by the chain count (effective draws per chain: many short chains show here),
        "mcmc/rhat_max": max over coordinates,
        "mcmc/ess_bulk_sq_norm", "mcmc/rhat_sq_norm", ["mcmc/ess_bulk_log_prob",
        "mcmc/rhat_log_prob"], "mcmc/num_chains", "mcmc/num_draws"}` as Python floats
        (R-hat needs at least 2 chains and 4 draws per chain; NaN otherwise).
    """
    chains = chains_from_samples(jnp.asarray(x), num_chains)
    dim = chains.shape[-1]
    columns = [chains, jnp.sum(chains**2, axis=-1, keepdims=True)]
    if target is not None:
        columns.append(jax.jit(jax.vmap(jax.vmap(target.log_prob)))(chains)[..., None])
    ess, rhat = (np.asarray(v, np.float64) for v in _ess_and_rhat(jnp.concatenate(columns, axis=-1)))
    out = {
        "mcmc/ess_bulk_min": float(np.min(ess[:dim])),
        "mcmc/ess_bulk_per_chain_min": float(np.min(ess[:dim])) / num_chains,
        "mcmc/rhat_max": float(np.max(rhat[:dim])),
        "mcmc/ess_bulk_sq_norm": float(ess[dim]),
        "mcmc/rhat_sq_norm": float(rhat[dim]),
    }
    if target is not None:
        out["mcmc/ess_bulk_log_prob"] = float(ess[dim + 1])
        out["mcmc/rhat_log_prob"] = float(rhat[dim + 1])
    out["mcmc/num_chains"] = float(num_chains)
    out["mcmc/num_draws"] = float(chains.shape[1])
    return out
