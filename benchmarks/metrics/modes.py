"""Mode-coverage metrics for Gaussian-mixture targets (`target.mixture`).

Each model sample is assigned to the component with the largest posterior probability,
`k(x) = argmax_k [log π_k + log N(x; μ_k, Σ_k)]` (the Bayes classifier; for equal weights this is
the argmax of the component log densities, the rule of VSM's EMC). Non-finite samples are
assigned to no mode but still count in `n`. With counts `c_k`, `h_k = c_k / n` and the true
weights `π_k` (K components):

    modes/hit_fraction = (1/K) #{k : c_k ≥ τ · n · π_k}    (τ = `hit_threshold`, default 0.1:
                         a mode is hit when it holds at least 10 % of its expected count)
    modes/emc          = −Σ_k h_k log h_k / log K           (entropy of the mode histogram; 1 when
                         the histogram is uniform; VSM "EMC"; `0 log 0 = 0`)
    modes/emc_truth    = −Σ_k π_k log π_k / log K           (the EMC of a perfect sampler's weights)
    modes/weight_tv    = ½ Σ_k |h_k − π_k|                  (total variation between the empirical
                         and the true mode weights, the unassigned mass counted in full)
    modes/weight_tv/noise_floor = E[½ Σ_k |ĥ_k − π_k|] for ĥ ~ Multinomial(n, π)/n, the TV an exact
                         sampler gets at the same n (Monte Carlo over `noise_floor_draws` draws).

Samples are unweighted (importance weights are not used); a sampler that puts all its samples in
one of K equally weighted modes gets `hit_fraction = 1/K`, `emc = 0`, `weight_tv = 1 − 1/K`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.metrics.base import EvalContext, metric

__all__ = ["ModeConfig", "mode_counts", "mode_metrics", "mode_statistics", "multinomial_tv_floor"]


@dataclasses.dataclass(frozen=True)
class ModeConfig:
    """Configuration of the mode metrics.

    Attributes:
        hit_threshold: τ, the fraction of a mode's expected count `n π_k` needed to call it hit.
        noise_floor_draws: multinomial draws for the TV noise floor (its Monte-Carlo SE is about
            `sd / sqrt(draws)`, below 1 % of the floor at the default).
    """

    hit_threshold: float = 0.1
    noise_floor_draws: int = 256


@jax.jit
def _assign(mixture, x: jax.Array) -> jax.Array:
    joint = jax.vmap(lambda p: mixture.log_weights + mixture.component_log_probs(p))(x)
    finite = jnp.all(jnp.isfinite(x), axis=-1)
    return jnp.where(finite, jnp.argmax(joint, axis=-1), -1)


def mode_counts(mixture, x: jax.Array) -> np.ndarray:
    """Counts `c_k` of samples assigned to each component (argmax posterior), shape `(K,)`."""
    labels = np.asarray(_assign(mixture, jnp.asarray(x)))
    return np.bincount(labels[labels >= 0], minlength=mixture.num_components).astype(np.float64)


def mode_statistics(counts, num_samples: int, weights, hit_threshold: float = 0.1) -> dict[str, float]:
    """`hit_fraction`, `emc`, `emc_truth`, `weight_tv` from counts and true weights (see module doc)."""
    counts = np.asarray(counts, np.float64)
    weights = np.asarray(weights, np.float64)
    k = weights.size
    h = counts / num_samples
    log_k = np.log(k) if k > 1 else np.nan

    def entropy(p):
        p = p[p > 0]
        return float(-np.sum(p * np.log(p)))

    return {
        "modes/hit_fraction": float(np.mean(counts >= hit_threshold * num_samples * weights)),
        "modes/emc": entropy(h) / log_k,
        "modes/emc_truth": entropy(weights) / log_k,
        "modes/weight_tv": 0.5 * float(np.sum(np.abs(h - weights)) + (1.0 - h.sum())),
    }


def multinomial_tv_floor(key: jax.Array, weights, num_samples: int, draws: int = 256) -> float:
    """`E[½ Σ_k |ĥ_k − π_k|]`, `ĥ ~ Multinomial(num_samples, π) / num_samples`, by Monte Carlo.

    The draws use NumPy's exact multinomial sampler seeded from `key`.
    """
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    weights = np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    hist = np.random.default_rng(seed).multinomial(num_samples, weights, size=draws) / num_samples
    return float(np.mean(0.5 * np.abs(hist - weights).sum(-1)))


def mode_metrics(ctx: EvalContext, config: ModeConfig = ModeConfig()) -> dict[str, float]:
    """The `modes/*` metrics of `ctx.x` against `ctx.target.mixture` (see module doc)."""
    mixture = ctx.target.mixture
    n = int(np.shape(ctx.x)[0])
    weights = np.asarray(mixture.weights, np.float64)
    out = mode_statistics(mode_counts(mixture, ctx.x), n, weights, config.hit_threshold)
    out["modes/weight_tv/noise_floor"] = multinomial_tv_floor(ctx.key, weights, n, config.noise_floor_draws)
    out["modes/num_modes"] = float(weights.size)
    return out


ENTRIES = (
    metric(
        "modes",
        mode_metrics,
        requires=("mixture",),
        description="mode hit fraction, EMC (histogram entropy / log K), TV of mode weights",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
