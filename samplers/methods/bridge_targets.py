"""The bridge-pair regression targets, per base kind (a registry of bridge schedules).

The data of the losses of `samplers.methods.bridge_regression` (module docstring there, and
`docs/methods.md` §1.3, §1.5): for each supported base kind, a *bridge schedule* gives the base's
coefficients at a time (`BridgeCoefficients`: `σ`, `ν`, the Gaussian bridge `X_t | X_1 ~ N(α_t X_1, β_t² I)`),
its four regression targets `Y_t` (Adjoint Sampling, TSM, CSM, NSM; each with `E[Y_t | X_t] = u*(X_t, t)`
when `X_1 ~ p*`) and the gradient data each needs at an end point. `BRIDGE_SCHEDULES` maps a base kind
to the builder of its schedule from a `Problem`:

- `"brownian"` (`BridgeSchedule`): the Brownian base as its Euler–Maruyama chain sees it (piecewise-constant
  `σ̃`, piecewise-linear `ν̃` on the problem's grid), targets `REGRESSION_TARGETS`;
- `"flow"` (`FlowBridgeSchedule`): the memoryless rectified-flow base, `α_t = t`, `β_t = 1 - t`, with the
  base score from the velocity, targets `FLOW_REGRESSION_TARGETS` (methods.md §1.5);
- `"vp"` (`VPBridgeSchedule`): the stationary VP/OU base of the continuous process, `α_t = φ_{t,1}`,
  `β_t² = σ_0²(1 - φ_{t,1}²)`, targets `VP_REGRESSION_TARGETS` (methods.md §1.6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplers.base_processes import MemorylessFlowBase, VPBase
from samplers.methods.common import clip_norm
from samplers.problem import Problem
from targets.registry import Registry

__all__ = [
    "BRIDGE_SCHEDULES",
    "FLOW_REGRESSION_TARGETS",
    "REGRESSION_TARGETS",
    "VP_REGRESSION_TARGETS",
    "TIME_EPS",
    "BridgeCoefficients",
    "BridgeSchedule",
    "FlowBridgeSchedule",
    "RegressionTarget",
    "VPBridgeSchedule",
    "bridge_schedule",
    "check_choice",
    "endpoint_gradients",
    "regression_target",
    "time_window",
]

TIME_EPS = 1e-5
"""Times are clamped to `[TIME_EPS, 1 - TIME_EPS]`: the bridge is degenerate at the end points
(`α_0 = 0`, `β_0 = β_1 = 0`), so TSM/CSM targets would be `inf`/`nan` there in float32 (and `1 - 1e-5`
is still resolved in float32). It is ten times below the smallest window of the gradient-variance
claim (`δ = 1e-4`), where it truncates the heavy tail of `t ~ U[0, δ]` at `1e-5`."""


# ---------------------------------------------------------------------------------------------
# regression targets: what a target is
# ---------------------------------------------------------------------------------------------


class BridgeCoefficients(NamedTuple):
    """The base's coefficients at times `t` (same shape as `t`).

    Attributes:
        sigma: `σ(t)` (`σ̃(t)` of the EM chain for the Brownian base).
        nu: `ν_t = ∫_{t_start}^t σ²`.
        alpha: `α_t` (bridge mean `α_t x_1`).
        bridge_var: `β_t²` (bridge variance per coordinate).
    """

    sigma: jax.Array
    nu: jax.Array
    alpha: jax.Array
    bridge_var: jax.Array


class RegressionTarget(NamedTuple):
    """A regression target of the family on one base kind.

    Attributes:
        fn: `(bridge, coefficients, t, x_t, x_1, grad_1) -> Y_t` for ONE example (the bridge schedule,
            its `BridgeCoefficients` at the example's time `t`, vectors `(dim,)`).
        gradient: what `grad_1` holds: `"tilt"` (`∇r`), `"score"` (`∇log p*`) or `"none"`.
        formula: the target in words (for records and docs).
    """

    fn: Callable
    gradient: str
    formula: str


def check_choice(value, choices, what: str):
    """`value`, or a ValueError naming the valid choices."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {sorted(choices)}")
    return value


def _zeros(x: jax.Array) -> jax.Array:
    return jnp.zeros_like(x)


def _log_target_gradient_data(
    problem: Problem, gradient: str, max_grad_norm_target: float | None, terminal_var
) -> Callable:
    """`x_1 -> grad_1` from `s = ∇log γ̃(x_1)` (`γ̃ = p^base_K e^r`, `∇log γ` for sampling problems), clipped
    per particle to `max_grad_norm_target` and projected: `"score"` is `s`, `"tilt"` is `∇r = s + x_1/v`
    relative to the Gaussian terminal law `N(0, v I)` of the bridge (`v = terminal_var`), `"none"` zeros."""
    base = problem.base
    if gradient == "none":
        return _zeros
    score = jax.grad(problem.log_target)

    def data(x):
        s = base.project(clip_norm(score(x), max_grad_norm_target, problem.particles))
        if gradient == "score":
            return s
        return base.project(s + base.project(x) / terminal_var)  # ∇r = ∇log γ̃ - ∇log N(0, v I)

    return data


# ---------------------------------------------------------------------------------------------
# the Brownian base as the EM chain sees it
# ---------------------------------------------------------------------------------------------


class BridgeSchedule(NamedTuple):
    """The Brownian base of the EM chain on a grid: piecewise-constant `σ̃`, piecewise-linear `ν̃`.

    On `[t_k, t_{k+1})`: `σ̃(t) = σ(t_k)`, `ν̃_t = s_k + σ(t_k)² (t - t_k)` with `s_k` the marginal
    variances of the chain, so `ν̃_{t_k} = s_k` and `ν̃_1 = s_K` (the variance the tilt uses). The bridge
    is `X_t | X_1 ~ N(α_t X_1, β_t² I)` with `α_t = ν̃_t/ν̃_1`, `β_t² = ν̃_t (1 - α_t)`, and
    `∇log p^base_t(x) = -x/ν̃_t` (methods.md §1.3).

    Attributes:
        ts: grid `(K+1,)`.
        sigmas: `σ(t_k)`, `(K,)`.
        marginal_vars: `s_k`, `(K+1,)`.
    """

    ts: jax.Array
    sigmas: jax.Array
    marginal_vars: jax.Array

    kind = "brownian"
    t_start = 0.0

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

    @property
    def targets(self) -> Mapping[str, RegressionTarget]:
        """The four targets on this base (`REGRESSION_TARGETS`)."""
        return REGRESSION_TARGETS

    def gradient_data(self, problem: Problem, gradient: str, max_grad_norm_target: float | None) -> Callable:
        """`x_1 -> grad_1` for the gradient kind `gradient` (`endpoint_gradients`): `"score"` is
        `∇log γ̃(x_1)` (clipped), `"tilt"` is `∇r = ∇log γ̃ - ∇log p^base_K = ∇log γ̃ + x_1/s_K` with `s_K`
        the chain's terminal variance, `"none"` zeros (`_log_target_gradient_data`)."""
        if gradient == "none":
            return _zeros
        terminal_var = problem.chain.marginal_vars[-1]  # p^base_K = N(0, s_K I) for the linear-Gaussian bases
        return _log_target_gradient_data(problem, gradient, max_grad_norm_target, terminal_var)


def _brownian_schedule(problem: Problem) -> BridgeSchedule:
    chain = problem.chain  # float64-accurate marginal variances, stored as float32 constants
    return BridgeSchedule(ts=chain.ts, sigmas=chain.sigmas, marginal_vars=chain.marginal_vars)


def _target_adjoint(bridge, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = -σ ∇g(X_1) = σ ∇r(X_1): grad_1 is ∇r(X_1).
    return c.sigma * grad_1


def _target_tsm(bridge, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [α^{-1} ∇log p*(X_1) + X_t/ν_t]: grad_1 is ∇log p*(X_1).
    return c.sigma * (grad_1 / c.alpha + x_t / c.nu)


def _target_csm(bridge, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [-(X_t - α X_1)/β² + X_t/ν_t]: no gradient data.
    return c.sigma * (-(x_t - c.alpha * x_1) / c.bridge_var + x_t / c.nu)


def _target_nsm(bridge, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ a_t ∇r(X_1) with a_t = 1 for the Brownian base (E_base[X_1 | X_t] = X_t): grad_1 is ∇r(X_1).
    return c.sigma * grad_1


REGRESSION_TARGETS: dict[str, RegressionTarget] = {
    "adjoint": RegressionTarget(_target_adjoint, "tilt", "σ(t) ∇r(X_1) = -σ(t) ∇g(X_1)"),
    "tsm": RegressionTarget(_target_tsm, "score", "σ(t)[∇log p*(X_1)/α_t + X_t/ν_t]"),
    "csm": RegressionTarget(_target_csm, "none", "σ(t)[-(X_t - α_t X_1)/β_t² + X_t/ν_t]"),
    "nsm": RegressionTarget(_target_nsm, "tilt", "σ(t) a_t ∇r(X_1), a_t = 1 (Brownian)"),
}
"""The targets on the Brownian base (methods.md §1.3); the names are the family's target kinds."""


# ---------------------------------------------------------------------------------------------
# the memoryless flow base
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class FlowBridgeSchedule:
    """The memoryless rectified-flow base (`MemorylessFlowBase`): `X_t | X_1 ~ N(t X_1, (1 - t)² I)`.

    `σ(t) = sqrt(2(1 - t)/t)`, `ν_t = 2 log(t/t_0) - 2(t - t_0)`, `α_t = t`, `β_t² = (1 - t)²`, base score
    `∇log p^base_t(x) = (t v(x, t) - x)/(1 - t)` from the velocity and the base denoiser
    `D_t(x) = E_base[X_1 | X_t = x] = x + (1 - t) v(x, t)` (methods.md §1.5). The bridge is the
    continuous-time process's (exact for the interpolant; the EM chain matches it to O(h)), and times
    run over `[t_0, 1]`.

    Attributes:
        base: the `MemorylessFlowBase`.
    """

    base: MemorylessFlowBase

    kind = "flow"

    @property
    def t_start(self) -> float:
        """`t_0`: the base (and the control) live on `[t_0, 1]`."""
        return self.base.t_start

    def coefficients(self, t: jax.Array) -> BridgeCoefficients:
        """`σ`, `ν`, `α = t`, `β² = (1 - t)²` at `t` (elementwise)."""
        return BridgeCoefficients(
            sigma=self.base.sigma(t), nu=self.base.nu(t), alpha=t, bridge_var=(1.0 - t) ** 2
        )

    @property
    def targets(self) -> Mapping[str, RegressionTarget]:
        """The four targets on this base (`FLOW_REGRESSION_TARGETS`)."""
        return FLOW_REGRESSION_TARGETS

    def gradient_data(self, problem: Problem, gradient: str, max_grad_norm_target: float | None) -> Callable:
        """`x_1 -> grad_1`: `"score"` is `∇log p*(x_1) = ∇log p^base_1(x_1) + ∇r(x_1)` (clipped per particle
        to `max_grad_norm_target`, projected), `"tilt"` is `∇r(x_1)` (clipped, projected), `"none"` zeros.

        Raises:
            ValueError: `"score"` on a base without the data law's score (`has_terminal_score` false).
        """
        base = problem.base
        if gradient == "none":
            return _zeros
        if gradient == "score" and not base.has_terminal_score:
            raise ValueError(
                "this regression target needs ∇log p*(X_1) = ∇log p^base_1(X_1) + ∇r(X_1) on the flow base, "
                "i.e. the score of the pretrained data law at t = 1, which MemorylessFlowBase gets from "
                "terminal_log_prob_fn (not given here) or, with terminal_score_from_velocity=True, from the "
                "velocity at t = 1 (-(x + ∂_t v(x, 1)); what the harness's ft_* problems use). "
                "Pass one of them, or use conditional_score_matching, which needs no end-point gradient "
                "(methods.md §1.5)"
            )
        terminal = base.terminal_score if gradient == "score" else _zeros

        def data(x):
            g = problem.grad_tilt(x) + terminal(x)
            return base.project(clip_norm(g, max_grad_norm_target, problem.particles))

        return data


def _flow_tsm(bridge: FlowBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [∇log p*(X_1)/t - ∇log p^base_t(X_t)]: grad_1 is ∇log p*(X_1).
    return c.sigma * (grad_1 / t - bridge.base.score(x_t, t))


def _flow_csm(bridge: FlowBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [-(X_t - t X_1)/(1 - t)² - ∇log p^base_t(X_t)] = σ t (X_1 - D_t(X_t))/(1 - t)², written with
    # the denoiser D_t(x) = x + (1 - t) v(x, t) (no cancellation of two O(1/(1 - t)²) terms).
    denoised = x_t + (1.0 - t) * bridge.base.velocity(x_t, t)
    return c.sigma * t * (x_1 - denoised) / (1.0 - t) ** 2


def _flow_mixture(bridge: FlowBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = t Y^TSM + (1 - t) Y^CSM = σ [∇log p*(X_1) + t (X_1 - v(X_t, t))/(1 - t)]: grad_1 is ∇log p*(X_1).
    return c.sigma * (grad_1 + t * (x_1 - bridge.base.velocity(x_t, t)) / (1.0 - t))


_FLOW_MIXTURE = "σ(t)[∇log p*(X_1) + t(X_1 - v(X_t, t))/(1 - t)] = t Y^TSM + (1 - t) Y^CSM"
FLOW_REGRESSION_TARGETS: dict[str, RegressionTarget] = {
    "adjoint": RegressionTarget(_flow_mixture, "score", _FLOW_MIXTURE),
    "tsm": RegressionTarget(_flow_tsm, "score", "σ(t)[∇log p*(X_1)/t - ∇log p^base_t(X_t)]"),
    "csm": RegressionTarget(_flow_csm, "none", "σ(t) t (X_1 - D_t(X_t))/(1 - t)², D_t = x + (1 - t) v"),
    "nsm": RegressionTarget(_flow_mixture, "score", _FLOW_MIXTURE + " (as Adjoint Sampling)"),
}
"""The targets on the memoryless flow base (methods.md §1.5): TSM and CSM with `α_t = t`, `β_t = 1 - t`;
Adjoint Sampling and NSM take their `α_t`-mixture, which is their target `σ a_t ∇r(X_1)` on the Brownian
base but keeps base-score terms on the flow (whose `p^base_t` is not Gaussian)."""


# ---------------------------------------------------------------------------------------------
# the VP base
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class VPBridgeSchedule:
    """The stationary VP/OU base (`VPBase`) in continuous time: `X_t | X_1 ~ N(φ_{t,1} X_1, β_t² I)`.

    `φ_{t,1} = exp(-½∫_t^1 β)`, `β_t² = σ_0²(1 - φ_{t,1}²)` (the stationary law `N(0, σ_0² I)` conditioned
    on `X_1`, with `X_0` marginalised), `∇log p^base_t(x) = -x/σ_0²`, and `a_t = φ_{t,1}` the coefficient of
    `x_t` in `E_base[X_1 | X_t]` (methods.md §1.6). The bridge and the tilt `∇r = ∇log p* + x/σ_0²` are the
    continuous process's; the simulated EM chain (not stationary, terminal variance `s_K ≠ σ_0²`) matches
    them to O(h). Not memoryless (`Corr(X_0, X_1) = φ_{0,1}`).

    Attributes:
        base: the `VPBase`.
    """

    base: VPBase

    kind = "vp"
    t_start = 0.0

    @property
    def marginal_var(self) -> float:
        """`σ_0²`: the variance of every marginal `p^base_t` (and of the bridge's terminal law)."""
        return self.base.initial_variance

    def coefficients(self, t: jax.Array) -> BridgeCoefficients:
        """`σ`, `ν = σ_0² B(t)`, `α = φ_{t,1}`, `β² = σ_0²(1 - φ_{t,1}²)` at `t` (elementwise)."""
        remaining = self.base.beta_integral(1.0) - self.base.beta_integral(t)  # ∫_t^1 β
        return BridgeCoefficients(
            sigma=self.base.sigma(t),
            nu=self.base.nu(t),
            alpha=jnp.exp(-0.5 * remaining),
            bridge_var=self.marginal_var * -jnp.expm1(-remaining),
        )

    @property
    def targets(self) -> Mapping[str, RegressionTarget]:
        """The four targets on this base (`VP_REGRESSION_TARGETS`)."""
        return VP_REGRESSION_TARGETS

    def gradient_data(self, problem: Problem, gradient: str, max_grad_norm_target: float | None) -> Callable:
        """`x_1 -> grad_1`: `"score"` is `∇log γ̃(x_1)` (clipped), `"tilt"` is `∇r = ∇log γ̃ + x_1/σ_0²`
        relative to the continuous terminal law `N(0, σ_0² I)` of the bridge, `"none"` zeros."""
        return _log_target_gradient_data(problem, gradient, max_grad_norm_target, self.marginal_var)


def _vp_tsm(bridge: VPBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [φ^{-1} ∇log p*(X_1) + X_t/σ_0²]: grad_1 is ∇log p*(X_1).
    return c.sigma * (grad_1 / c.alpha + x_t / bridge.marginal_var)


def _vp_csm(bridge: VPBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ [-(X_t - φ X_1)/β² + X_t/σ_0²]: no gradient data.
    return c.sigma * (-(x_t - c.alpha * x_1) / c.bridge_var + x_t / bridge.marginal_var)


def _vp_tilt(bridge: VPBridgeSchedule, c: BridgeCoefficients, t, x_t, x_1, grad_1):
    # Y = σ a_t ∇r(X_1), a_t = φ_{t,1} = α_t (the VP lean adjoint): grad_1 is ∇r(X_1).
    return c.sigma * c.alpha * grad_1


VP_REGRESSION_TARGETS: dict[str, RegressionTarget] = {
    "adjoint": RegressionTarget(_vp_tilt, "tilt", "σ(t) φ_{t,1} ∇r(X_1) = -σ(t) e^{-½∫_t^1 β} ∇g(X_1)"),
    "tsm": RegressionTarget(_vp_tsm, "score", "σ(t)[∇log p*(X_1)/φ_{t,1} + X_t/σ_0²]"),
    "csm": RegressionTarget(_vp_csm, "none", "σ(t)[-(X_t - φ_{t,1} X_1)/β_t² + X_t/σ_0²]"),
    "nsm": RegressionTarget(_vp_tilt, "tilt", "σ(t) a_t ∇r(X_1), a_t = φ_{t,1} (VP)"),
}
"""The targets on the VP base (methods.md §1.6): AS and NSM coincide (`σ a_t ∇r`, the `α_t²`-mixture of TSM
and CSM)."""


# ---------------------------------------------------------------------------------------------
# the registry and the per-problem entry points
# ---------------------------------------------------------------------------------------------

BRIDGE_SCHEDULES: Registry[Any] = Registry("bridge base")
BRIDGE_SCHEDULES.register("brownian", _brownian_schedule)
BRIDGE_SCHEDULES.register("flow", lambda problem: FlowBridgeSchedule(problem.base))
BRIDGE_SCHEDULES.register("vp", lambda problem: VPBridgeSchedule(problem.base))


def bridge_schedule(problem: Problem):
    """The bridge schedule of the problem's base kind (`BRIDGE_SCHEDULES`; raises for other bases)."""
    kind = problem.base.kind
    if kind not in BRIDGE_SCHEDULES:
        raise ValueError(
            f"bridge-pair regression needs a base with a Gaussian bridge X_t | X_1 and known scores, got "
            f"{kind!r}; valid base kinds: {BRIDGE_SCHEDULES.names()}"
        )
    return BRIDGE_SCHEDULES.get(kind, problem=problem)


def time_window(bridge, t_min: float) -> tuple[float, float]:
    """`(max(t_min, t_start), 1 - t_min)`: regression times stay on the base's interval `[t_start, 1]`."""
    return max(float(t_min), float(bridge.t_start)), 1.0 - float(t_min)


def target_of(bridge, kind: str) -> RegressionTarget:
    """The target `kind` on the bridge's base (a ValueError naming the valid kinds otherwise)."""
    return bridge.targets[check_choice(kind, bridge.targets, "regression target")]


def regression_target(kind: str, bridge, t, x_t, x_1, grad_1) -> jax.Array:
    """`Y_t` of the target `kind` for a batch: `t (n,)`, `x_t, x_1, grad_1 (n, dim)` -> `(n, dim)`."""
    target = target_of(bridge, kind)
    fn = lambda c, t, x_t, x_1, grad_1: target.fn(bridge, c, t, x_t, x_1, grad_1)
    return jax.vmap(fn)(bridge.coefficients(t), t, x_t, x_1, grad_1)


# ---------------------------------------------------------------------------------------------
# gradient data at end points
# ---------------------------------------------------------------------------------------------


def endpoint_gradients(problem: Problem, kind: str, max_grad_norm_target: float | None = None) -> Callable:
    """`x_1 (dim,) -> grad_1 (dim,)`: the gradient data the target `kind` needs at one end point, on the
    problem's base (`gradient_data` of its bridge schedule): `"score"` (TSM, and AS / NSM on the flow base)
    `∇log p*(x_1)`; `"tilt"` (AS, NSM on the Brownian base) `∇r(x_1)`; `"none"` (CSM) zeros. Clipped per
    particle to `max_grad_norm_target` (the Brownian base clips `∇log γ̃` before `∇r` is formed from it)
    and projected to zero centre of mass.
    """
    bridge = bridge_schedule(problem)
    return bridge.gradient_data(problem, target_of(bridge, kind).gradient, max_grad_norm_target)
