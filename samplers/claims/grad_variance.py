"""The gradient-variance claim: AS / NSM / AM have finite minibatch-gradient variance, TSM / CSM do not.

The unified paper (arXiv 2605.00229, abstract only; methods.md §1) states bias–variance decompositions in
which Adjoint Matching, Adjoint Sampling and "Novel Score Matching" have finite gradient variance while
Target and Conditional Score Matching do not. In the bridge-pair regression family of
`samplers.methods.bridge_regression` (Brownian base from 0, `α_t = ν_t/ν_1`, `β_t² = ν_t(1 - α_t)`) the
regression targets predict [DERIVED, methods.md §1.3]:

- TSM: `Y = σ[α_t^{-1}∇log p*(X_1) + X_t/ν_t]`, `Var(Y | t) ~ 1/ν_t²` as `t → 0` (not integrable);
- CSM: `Y = σ[-(X_t - α_t X_1)/β_t² + X_t/ν_t]`, `Var(Y | t) ~ 1/β_t²` as `t → 1` (log-divergent);
- AS / NSM: `Y = σ ∇r(X_1)`, bounded in `t`; AM: `Y = -σ ã(t)` with the lean adjoint, for the Brownian
  base `ã ≡ -∇r(X_1)`, bounded.

This module measures, at FIXED parameters, the minibatch gradient `G = ∇_θ L̂_B(θ)` of each loss over many
independent minibatches of size `B`, and reports `tr Cov(G)` and the ratio `tr Cov(G)/|E G|²` (the
relative noise of one SGD step), with standard errors, for (a) several batch sizes over the full time
range and (b) time windows `[0, δ]` and `[1 - δ, 1]` of decreasing `δ` (times drawn uniformly in the
window, clamped to `[TIME_EPS, 1 - TIME_EPS]` as in training), plus the per-time profile at `t = δ` and
`t = 1 - δ` (fixed time), which isolates the `t`-dependence without the heavy tails of the window average.

Fixed parameters: the closed-form optimal control of the target (`mixture_optimal_control`, exact for
Gaussian mixtures under the Brownian base) plus a small fixed perturbation `ε · MLP_θ(x, t)` with
`θ` a fixed random initialisation (so `E G ≠ 0`); `θ` is what is differentiated. End points are EXACT
target samples for every loss (at the optimum the model's buffer samples `p*`, so this is the law the
buffers converge to); AM, which regresses along on-policy trajectories, simulates its own paths under
the perturbed control.

Statistics: with `M` minibatch gradients `G_m` (flattened), `Ḡ` their mean,
`tr Ĉ = Σ_m |G_m - Ḡ|²/(M - 1)` and `|E G|²` estimated without bias by `|Ḡ|² - tr Ĉ/M`. Standard errors
come from a nonparametric bootstrap over the `M` gradients. Under an infinite-variance law the sample
variance and its bootstrap SE are themselves unreliable (they grow with `M`): read the TSM/CSM rows near
their singular end as "large and unstable", which is the claim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base_processes import BrownianBase

__all__ = [
    "mixture_optimal_control",
]

PyTree = Any


def mixture_optimal_control(log_weights, means, covariances, base: BrownianBase) -> Callable:
    """The optimal control `u*(x, t) = σ(t)∇log h_t(x)` for a Gaussian-mixture target under a Brownian base.

    Target `π ∝ Σ_k w_k N(m_k, S_k)`, base Brownian from 0 with `ν_t` (`base.nu`), tilt `r = log γ -
    log N(0, ν_1 I)`. The tilted marginals are `p*_t = Σ_k w_k N(α_t m_k, Σ_{k,t})`, `Σ_{k,t} = α_t² S_k +
    β_t² I`, so `∇log h_t = Σ_k ρ_k(x, t) g_k(x, t)` with `ρ_k ∝ w_k N(x; α_t m_k, Σ_{k,t})` the posterior
    component probabilities and `g_k = (ν_1 I + α_t D_k)^{-1}(D_k x + ν_1 m_k)/ν_1`, `D_k = S_k - ν_1 I`,
    the single-Gaussian value gradient of `samplers.gaussian_oracle` (finite at `t = 0`). For one component
    this is exactly `GaussianOracle.control`. Particle systems are not handled.

    Args:
        log_weights: `(K,)` (unnormalised) log weights.
        means: `(K, d)`.
        covariances: `(K, d, d)`.
        base: a `BrownianBase` without particles.

    Returns:
        `control(params, x, t) -> (d,)` for ONE point (`params` ignored), the `samplers.sde` signature.
    """
    if not isinstance(base, BrownianBase) or base.particles is not None:
        raise ValueError("mixture_optimal_control needs a BrownianBase without particles")
    log_weights = jnp.asarray(log_weights, jnp.float32)
    means = jnp.asarray(means, jnp.float32)
    covariances = jnp.asarray(covariances, jnp.float32)
    num, dim = means.shape
    if log_weights.shape != (num,) or covariances.shape != (num, dim, dim) or dim != base.dim:
        raise ValueError(
            f"shapes do not match: log_weights {log_weights.shape}, means {means.shape}, "
            f"covariances {covariances.shape}, base dim {base.dim}"
        )
    eye = jnp.eye(dim, dtype=jnp.float32)

    def control(params, x, t):
        del params
        nu_t, nu_1 = base.nu(t), base.nu(1.0)
        alpha = nu_t / nu_1
        d_mats = covariances - nu_1 * eye
        g = jax.vmap(lambda d, m: jnp.linalg.solve(nu_1 * eye + alpha * d, d @ x + nu_1 * m) / nu_1)(d_mats, means)
        # At t = 0 (x = 0, p*_0 = δ_0) the covariances vanish; the floor makes ρ_k -> w_k/Σw, its limit.
        cov_t = jnp.maximum(nu_t, 1e-12 * nu_1) * eye + alpha**2 * d_mats
        diff = x - alpha * means

        def log_normal(c, r):
            chol = jnp.linalg.cholesky(c)
            z = jax.scipy.linalg.solve_triangular(chol, r, lower=True)
            return -0.5 * jnp.sum(z * z) - jnp.sum(jnp.log(jnp.diagonal(chol)))

        logits = log_weights + jax.vmap(log_normal)(cov_t, diff)
        rho = jax.nn.softmax(logits)
        return base.sigma(t) * (rho @ g)

    return control
