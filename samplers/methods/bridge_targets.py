"""The bridge-pair regression targets on the Brownian base as its Euler–Maruyama chain sees it.

The data of the losses of `samplers.methods.bridge_regression` (module docstring there, and
`docs/methods.md` §1.3): the base's piecewise-constant `σ̃` and piecewise-linear `ν̃` on the problem's
grid (`BridgeSchedule`), the Gaussian bridge `X_t | X_1 ~ N(α_t X_1, β_t² I)`, the four regression
targets `Y_t` (`REGRESSION_TARGETS`: Adjoint Sampling, TSM, CSM, NSM) and the gradient data each
needs at an end point (`endpoint_gradients`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplers.methods.common import clip_norm
from samplers.problem import Problem

__all__ = [
    "REGRESSION_TARGETS",
    "TIME_EPS",
    "BridgeCoefficients",
    "BridgeSchedule",
    "RegressionTarget",
    "bridge_schedule",
    "check_choice",
    "endpoint_gradients",
    "regression_target",
]

TIME_EPS = 1e-5
"""Times are clamped to `[TIME_EPS, 1 - TIME_EPS]`: the bridge is degenerate at the end points
(`α_0 = 0`, `β_0 = β_1 = 0`), so TSM/CSM targets would be `inf`/`nan` there in float32 (and `1 - 1e-5`
is still resolved in float32). It is ten times below the smallest window of the gradient-variance
claim (`δ = 1e-4`), where it truncates the heavy tail of `t ~ U[0, δ]` at `1e-5`."""


# ---------------------------------------------------------------------------------------------
# the base as the EM chain sees it
# ---------------------------------------------------------------------------------------------


class BridgeCoefficients(NamedTuple):
    """The base's coefficients at times `t` (same shape as `t`).

    Attributes:
        sigma: `σ̃(t)`.
        nu: `ν̃_t = ∫_0^t σ̃²`.
        alpha: `α_t = ν̃_t/ν̃_1` (bridge mean `α_t x_1`).
        bridge_var: `β_t² = ν̃_t (1 - α_t)` (bridge variance per coordinate).
    """

    sigma: jax.Array
    nu: jax.Array
    alpha: jax.Array
    bridge_var: jax.Array


class BridgeSchedule(NamedTuple):
    """The Brownian base of the EM chain on a grid: piecewise-constant `σ̃`, piecewise-linear `ν̃`.

    On `[t_k, t_{k+1})`: `σ̃(t) = σ(t_k)`, `ν̃_t = s_k + σ(t_k)² (t - t_k)` with `s_k` the marginal
    variances of the chain, so `ν̃_{t_k} = s_k` and `ν̃_1 = s_K` (the variance the tilt uses).

    Attributes:
        ts: grid `(K+1,)`.
        sigmas: `σ(t_k)`, `(K,)`.
        marginal_vars: `s_k`, `(K+1,)`.
    """

    ts: jax.Array
    sigmas: jax.Array
    marginal_vars: jax.Array

    def _index(self, t: jax.Array) -> jax.Array:
        # "compare_all": a vectorised comparison (K is small), no while loop to compile.
        k = jnp.searchsorted(self.ts, t, side="right", method="compare_all") - 1
        return jnp.clip(k, 0, self.sigmas.shape[0] - 1)

    def coefficients(self, t: jax.Array) -> BridgeCoefficients:
        """`σ̃`, `ν̃`, `α`, `β²` at `t` (elementwise), with one grid search."""
        k = self._index(t)
        sigma = self.sigmas[k]
        nu = self.marginal_vars[k] + sigma**2 * (t - self.ts[k])
        # In float32 `ν̃_t / ν̃_1` can round to just above 1 near t = 1 (σ_min = 1e-3 on a geometric
        # schedule gives 1.0000001), which would make `β_t²` negative and its square root NaN: α ≤ 1
        # and β² ≥ 0 hold exactly, so clamp to them.
        alpha = jnp.minimum(nu / self.nu1, 1.0)
        bridge_var = jnp.maximum(nu * (1.0 - alpha), 0.0)
        return BridgeCoefficients(sigma=sigma, nu=nu, alpha=alpha, bridge_var=bridge_var)

    def sigma(self, t: jax.Array) -> jax.Array:
        """`σ̃(t)` (elementwise)."""
        return self.sigmas[self._index(t)]

    def nu(self, t: jax.Array) -> jax.Array:
        """`ν̃_t = ∫_0^t σ̃²` (elementwise)."""
        return self.coefficients(t).nu

    @property
    def nu1(self) -> jax.Array:
        """`ν̃_1 = s_K`."""
        return self.marginal_vars[-1]

    def alpha(self, t: jax.Array) -> jax.Array:
        """`α_t = ν̃_t/ν̃_1`: the bridge mean is `α_t x_1`."""
        return self.coefficients(t).alpha

    def bridge_var(self, t: jax.Array) -> jax.Array:
        """`β_t² = ν̃_t (1 - α_t)`: the bridge variance (per coordinate)."""
        return self.coefficients(t).bridge_var


def bridge_schedule(problem: Problem) -> BridgeSchedule:
    """The `BridgeSchedule` of a problem with a Brownian base (raises for other bases)."""
    if problem.base.kind != "brownian":
        raise ValueError(
            f"bridge-pair regression needs a Dirac-start Brownian base (kind 'brownian'), got "
            f"{problem.base.kind!r}; valid base kinds: ['brownian']"
        )
    chain = problem.chain  # float64-accurate marginal variances, stored as float32 constants
    return BridgeSchedule(ts=chain.ts, sigmas=chain.sigmas, marginal_vars=chain.marginal_vars)


# ---------------------------------------------------------------------------------------------
# regression targets (one example each; vmap outside)
# ---------------------------------------------------------------------------------------------


def _target_adjoint(c: BridgeCoefficients, x_t, x_1, grad_1):
    # Y = -σ ∇g(X_1) = σ ∇r(X_1): grad_1 is ∇r(X_1).
    return c.sigma * grad_1


def _target_tsm(c: BridgeCoefficients, x_t, x_1, grad_1):
    # Y = σ [α^{-1} ∇log p*(X_1) + X_t/ν_t]: grad_1 is ∇log p*(X_1).
    return c.sigma * (grad_1 / c.alpha + x_t / c.nu)


def _target_csm(c: BridgeCoefficients, x_t, x_1, grad_1):
    # Y = σ [-(X_t - α X_1)/β² + X_t/ν_t]: no gradient data.
    return c.sigma * (-(x_t - c.alpha * x_1) / c.bridge_var + x_t / c.nu)


def _target_nsm(c: BridgeCoefficients, x_t, x_1, grad_1):
    # Y = σ a_t ∇r(X_1) with a_t = 1 for the Brownian base (E_base[X_1 | X_t] = X_t): grad_1 is ∇r(X_1).
    return c.sigma * grad_1


class RegressionTarget(NamedTuple):
    """A regression target of the family.

    Attributes:
        fn: `(coefficients, x_t, x_1, grad_1) -> Y_t` for ONE example (`BridgeCoefficients` at its
            time, vectors `(dim,)`).
        gradient: what `grad_1` holds: `"tilt"` (`∇r`), `"score"` (`∇log p* = ∇log γ̃`) or `"none"`.
        formula: the target in words (for records and docs).
    """

    fn: Callable
    gradient: str
    formula: str


REGRESSION_TARGETS: dict[str, RegressionTarget] = {
    "adjoint": RegressionTarget(_target_adjoint, "tilt", "σ(t) ∇r(X_1) = -σ(t) ∇g(X_1)"),
    "tsm": RegressionTarget(_target_tsm, "score", "σ(t)[∇log p*(X_1)/α_t + X_t/ν_t]"),
    "csm": RegressionTarget(_target_csm, "none", "σ(t)[-(X_t - α_t X_1)/β_t² + X_t/ν_t]"),
    "nsm": RegressionTarget(_target_nsm, "tilt", "σ(t) a_t ∇r(X_1), a_t = 1 (Brownian)"),
}


def check_choice(value, choices, what: str):
    """`value`, or a ValueError naming the valid choices."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {sorted(choices)}")
    return value


def regression_target(kind: str, bridge: BridgeSchedule, t, x_t, x_1, grad_1) -> jax.Array:
    """`Y_t` of the target `kind` for a batch: `t (n,)`, `x_t, x_1, grad_1 (n, dim)` -> `(n, dim)`."""
    target = REGRESSION_TARGETS[check_choice(kind, REGRESSION_TARGETS, "regression target")]
    return jax.vmap(target.fn)(bridge.coefficients(t), x_t, x_1, grad_1)


# ---------------------------------------------------------------------------------------------
# gradient data at end points
# ---------------------------------------------------------------------------------------------


def endpoint_gradients(problem: Problem, kind: str, max_grad_norm_target: float | None = None) -> Callable:
    """`x_1 (dim,) -> grad_1 (dim,)`: the gradient data the target `kind` needs at one end point.

    With `s = ∇log γ̃(x_1)` (`γ̃ = p^base_K e^r`, i.e. `∇log γ` for sampling problems), clipped per
    particle to `max_grad_norm_target` and projected to zero centre of mass:

    - `"score"` (TSM): `∇log p*(x_1) = s`;
    - `"tilt"` (AS, NSM): `∇r(x_1) = s - ∇log p^base_K(x_1) = s + x_1/s_K`;
    - `"none"` (CSM): zeros (no gradient evaluation).
    """
    target = REGRESSION_TARGETS[check_choice(kind, REGRESSION_TARGETS, "regression target")]
    base = problem.base
    if target.gradient == "none":
        return lambda x: jnp.zeros_like(x)
    score = jax.grad(problem.log_target)
    terminal_var = problem.chain.marginal_vars[-1]  # p^base_K = N(0, s_K I) for the linear-Gaussian bases

    def gradient(x):
        s = base.project(clip_norm(score(x), max_grad_norm_target, problem.particles))
        if target.gradient == "score":
            return s
        return base.project(s + base.project(x) / terminal_var)  # ∇r = ∇log γ̃ - ∇log p^base_K

    return gradient
