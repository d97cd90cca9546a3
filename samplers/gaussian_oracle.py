"""Closed-form optimal controls for a Gaussian target: Brownian base, and any linear-Gaussian EM chain.

Target `π = N(m, S)` (unnormalised `γ = Z·π`), base: Brownian motion from the Dirac at 0 with
schedule `σ(t)`, `ν_t = ∫_0^t σ²` (`samplers.base_processes.BrownianBase`), tilt
`r = log γ - log p^base_1`. The base is memoryless and its bridge is
`X_t | X_1 ~ N(α_t X_1, β_t² I)`, `α_t = ν_t/ν_1`, `β_t² = ν_t(1 - α_t)` (methods.md §1.3), so the
optimally controlled process has marginals (methods.md §1.2)

    p*_t = N(α_t m, Σ*_t),   Σ*_t = α_t² S + β_t² I = ν_t I + α_t² D,   D := S - ν_1 I,

and the value function `h_t = Z p*_t / p^base_t` (`p^base_t = N(0, ν_t I)`). Its gradient, in a form
that stays finite at `t = 0` (where `p*_0 = p^base_0 = δ_0`):

    ∇log h_t(x) = Σ*_t^{-1}(α_t m - x) + x/ν_t = (ν_1 I + α_t D)^{-1} (D x + ν_1 m) / ν_1

(use `α_t Σ*_t^{-1} = (ν_1 I + α_t D)^{-1}` and `1/ν_t - Σ*_t^{-1} = Σ*_t^{-1} α_t² D/ν_t`).
The optimal control in the paper form (P1) is `u*(x, t) = σ(t) ∇log h_t(x)`
`= σ(t)(∇log p*_t(x) - ∇log p^base_t(x))`. At `t = 1` this is `σ(1)(∇log π(x) + x/ν_1)`.

**Discrete-grid variant** (`discrete_control`). For the EM chain on a grid (`x_{k+1} = x_k + c_k ε_k`,
`c_k² = σ(t_k)² h_k`, marginals `N(0, s_k I)`, `s_k = Σ_{j<k} c_j²`), tilting by
`r = log γ - log N(0, s_K I)` (what `sampling_problem` uses) gives exactly the formulas above with
`ν_t → s_k`. The optimally tilted kernel is `F*_k(y | x) ∝ N(y; x, c_k² I) h_{k+1}(y)`, a Gaussian with
mean `x + (I + c_k² Q_{k+1})^{-1} c_k² ∇log h_{k+1}(x)` (`Q_{k+1} = -∇²log h_{k+1}`) and covariance
`(I/c_k² + Q_{k+1})^{-1}`. An EM step can match the mean but not the covariance, so the mean-matching
control `u_k(x) = σ(t_k)(I + c_k² Q_{k+1})^{-1} ∇log h_{k+1}(x)` leaves only the covariance mismatch:
per-step log-weight fluctuations of order `c_k² |Q|`, so `std(log w) = O(sqrt(h))` over the path (the
continuous `u*` evaluated at `t_k` behaves the same to leading order).

**Any linear-Gaussian base** (`DiscreteChainOracle`: the VP/OU base of DDS as well as the Brownian
one). The simulated chain is `x_{k+1} = a_k x_k + h_k σ_k u_k + c_k ε_k` (`samplers.sde`, Euler–Maruyama;
`DiscreteChain`: `a_k = 1 + h_k ℓ(t_k)`, `c_k² = σ_k² h_k`) from `x_0 ~ p_0 = N(0, s_0 I)` (`s_0 = 0`:
Dirac), tilted by `r = log γ - log N(0, s_K I)`. The discrete value function
`h_k(x) = E^base[e^{r(X_K)} | X_k = x]` is the exponential of a quadratic form,

    log h_k(x) = -½ xᵀ P_k x + q_kᵀ x + κ_k,

with `P_K = S^{-1} - I/s_K`, `q_K = S^{-1} m`,
`κ_K = log Z - ½ mᵀS^{-1}m - ½ log det(2πS) + (d/2) log(2π s_K)`, and one Gaussian integral
`h_k(x) = ∫ N(y; a_k x, c_k² I) h_{k+1}(y) dy` per step backwards
(`G_k := (I + c_k² P_{k+1})^{-1}`, which must be positive definite):

    P_k = a_k² G_k P_{k+1},   q_k = a_k G_k q_{k+1},
    κ_k = κ_{k+1} + ½ c_k² q_{k+1}ᵀ G_k q_{k+1} + ½ log det G_k,

and `log E_{p_0}[h_0] = κ_0 + ½ s_0 q_0ᵀ G_{-1} q_0 + ½ log det G_{-1}` (`G_{-1} = (I + s_0 P_0)^{-1}`)
must be `log Z` (a check of the recursion). The optimal (h-transformed) kernel
`F*_k(y | x) = N(y; a_k x, c_k² I) h_{k+1}(y)/h_k(x)` is `N(a_k x + c_k² G_k ∇log h_{k+1}(a_k x), c_k² G_k)`;
matching its mean with the EM step gives the control

    u_k(x) = σ_k G_k ∇log h_{k+1}(a_k x) = σ_k G_k (q_{k+1} - a_k P_{k+1} x),

which is `GaussianOracle.discrete_control` when `a_k = 1`, `s_0 = 0` (tests check it). Path weight under
it: the kernel-form `log w = r(x_K) + Σ_k log(F^base_k/F^u_k)` telescopes to

    log w = log h_0(x_0) + Σ_k g_k(ε_k),   g_k(ε) = -½ c_k² εᵀ P_{k+1} ε - ½ log det G_k,

(`g_k` = log F*_k - log F^u_k, the EM covariance mismatch, a function of the step's noise only), so

    E[log w] = κ_0 - ½ s_0 tr P_0 + Σ_k (-½ c_k² tr P_{k+1} - ½ log det G_k),
    Var[log w] = ½ s_0² tr P_0² + s_0 |q_0|² + Σ_k ½ c_k⁴ tr P_{k+1}².

`log w` is *not* constant even as `h → 0` when the start is random: the optimally tilted path law starts
from `p_0 h_0 / Z ≠ p_0` (the VP base is not memoryless, `Corr(X_0, X_1) = φ_{0,1} > 0`), and the
control cannot change `p_0`; the term `Var_{p_0}[log h_0]` is the floor. The mean-matching control is
nonetheless the exact minimiser of `KL(P^u || P*)` over EM controls (each conditional KL
`KL(F^u_k(·|x) || F*_k(·|x))` is minimised by matching the mean, and its minimum does not depend on x),
and the gradients of the log-variance and trajectory-balance losses vanish there in expectation
(`∂_θ log w = -Σ_k ε_k·∂_θ(mean_k)/c_k` is uncorrelated with `log h_0(x_0)` and with every even `g_j`).
[DERIVED here; checked by tests/samplers/methods/test_path_kl.py.]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base_processes import AbstractLinearGaussianBase, BrownianBase

__all__ = ["DiscreteChainOracle", "GaussianOracle", "GaussianTransport", "QuadraticValue"]


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianOracle:
    """Optimal control, value function and tilted marginals for `π = N(mean, cov)` under `BrownianBase`.

    Args:
        mean: target mean `m`, `(dim,)`.
        cov: target covariance `S`, `(dim, dim)`, or its diagonal `(dim,)`.
        base: the Brownian base (any schedule; no particles).
        log_Z: log normaliser of the unnormalised target `γ = Z·N(m, S)` (enters `log_h` only).
    """

    mean: Any
    cov: Any
    base: BrownianBase
    log_Z: float = 0.0

    def __post_init__(self):
        if not isinstance(self.base, BrownianBase):
            raise TypeError(f"GaussianOracle needs a BrownianBase, got {type(self.base).__name__}")
        if self.base.particles is not None:
            raise ValueError("GaussianOracle does not handle particle systems (zero centre-of-mass subspace)")
        mean = jnp.asarray(self.mean, jnp.float32).reshape(-1)
        cov = jnp.asarray(self.cov, jnp.float32)
        if cov.ndim == 1:
            cov = jnp.diag(cov)
        d = self.base.dim
        if mean.shape != (d,) or cov.shape != (d, d):
            raise ValueError(
                f"mean must be ({d},) and cov ({d}, {d}) or ({d},), got {mean.shape}, {cov.shape}"
            )
        if not np.all(np.linalg.eigvalsh(np.asarray(cov, np.float64)) > 0):
            raise ValueError("cov must be symmetric positive definite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def is_diagonal(self) -> bool:
        """True when `S` is diagonal: every matrix in the formulas is then diagonal (elementwise path)."""
        cov = np.asarray(self.cov)
        return bool(np.all(cov == np.diag(np.diag(cov))))

    # -- formulas in terms of (ν_t, ν_1) so that continuous and discrete variances share them -------
    def _grad_log_h(self, x, nu_t, nu_1):
        alpha = nu_t / nu_1
        if self.is_diagonal:
            d_diag = jnp.diag(self.cov) - nu_1
            return (d_diag * x + nu_1 * self.mean) / ((nu_1 + alpha * d_diag) * nu_1)
        eye = jnp.eye(self.dim, dtype=self.cov.dtype)
        d_mat = self.cov - nu_1 * eye
        return jnp.linalg.solve(nu_1 * eye + alpha * d_mat, d_mat @ x + nu_1 * self.mean) / nu_1

    def _hessian_neg_log_h(self, nu_t, nu_1):
        """`Q = -∇² log h = -(ν_1 I + α D)^{-1} D / ν_1` (constant in x)."""
        eye = jnp.eye(self.dim, dtype=self.cov.dtype)
        d_mat = self.cov - nu_1 * eye
        return -jnp.linalg.solve(nu_1 * eye + (nu_t / nu_1) * d_mat, d_mat) / nu_1

    def _marginal(self, nu_t, nu_1):
        alpha = nu_t / nu_1
        eye = jnp.eye(self.dim, dtype=self.cov.dtype)
        return alpha * self.mean, nu_t * eye + alpha**2 * (self.cov - nu_1 * eye)

    # -- continuous time ----------------------------------------------------------------------
    def marginal(self, t) -> tuple[jax.Array, jax.Array]:
        """`p*_t = N(α_t m, α_t² S + β_t² I)`: returns `(mean, covariance)`."""
        return self._marginal(self.base.nu(t), self.base.nu(1.0))

    def grad_log_h(self, x: jax.Array, t) -> jax.Array:
        """`∇log h_t(x) = (ν_1 I + α_t D)^{-1}(D x + ν_1 m)/ν_1` of ONE point (finite at t = 0)."""
        return self._grad_log_h(x, self.base.nu(t), self.base.nu(1.0))

    def log_h(self, x: jax.Array, t) -> jax.Array:
        """`log h_t(x) = log Z + log p*_t(x) - log p^base_t(x)` of ONE point (t > 0)."""
        mean_t, cov_t = self.marginal(t)
        nu_t = self.base.nu(t)
        diff = x - mean_t
        _, logdet = jnp.linalg.slogdet(cov_t)
        log_p_star = (
            -0.5 * diff @ jnp.linalg.solve(cov_t, diff) - 0.5 * logdet - 0.5 * self.dim * jnp.log(2 * jnp.pi)
        )
        log_p_base = -0.5 * jnp.sum(x * x) / nu_t - 0.5 * self.dim * jnp.log(2 * jnp.pi * nu_t)
        return self.log_Z + log_p_star - log_p_base

    def control(self, params: Any, x: jax.Array, t) -> jax.Array:
        """The optimal control `u*(x, t) = σ(t) ∇log h_t(x)` (P1), with the `control(params, x, t)`
        signature of `samplers.sde` (`params` is ignored)."""
        del params
        return self.base.sigma(t) * self.grad_log_h(x, t)

    # -- discrete grid ------------------------------------------------------------------------
    def discrete_marginal(self, ts, k: int) -> tuple[jax.Array, jax.Array]:
        """Marginal of the exactly tilted EM chain at step `k`: `N(α_k m, s_k I + α_k² (S - s_K I))`."""
        s = self.base.discretise(np.asarray(ts, np.float64)).marginal_vars
        return self._marginal(s[k], s[-1])

    def discrete_control(self, ts) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
        """The mean-matching optimal control of the EM chain on the grid `ts` (see the module docstring).

        Returns `control(params, x, t)` valid at the grid times `t = t_k`, `k < K`:
        `u_k(x) = σ(t_k)(I + c_k² Q_{k+1})^{-1} ∇log h_{k+1}(x)` with the discrete variances `s_k`.
        """
        chain = self.base.discretise(np.asarray(ts, np.float64))
        grid, s, sigmas, noise_vars = chain.ts, chain.marginal_vars, chain.sigmas, chain.noise_vars
        s_end = s[-1]
        eye = jnp.eye(self.dim, dtype=self.cov.dtype)

        # (I + c_k² Q_{k+1})^{-1} for every k, computed once per grid (Q does not depend on x).
        gains = jax.vmap(
            lambda s_next, c2: jnp.linalg.inv(eye + c2 * self._hessian_neg_log_h(s_next, s_end))
        )(s[1:], noise_vars)

        def control(params, x, t):
            del params
            k = jnp.argmin(jnp.abs(grid[:-1] - t))  # t is a grid time; nearest index is exact
            return sigmas[k] * gains[k] @ self._grad_log_h(x, s[k + 1], s_end)

        return control


# ---------------------------------------------------------------------------------------------
# any linear-Gaussian base, exact on its EM chain
# ---------------------------------------------------------------------------------------------


class QuadraticValue(NamedTuple):
    """`log h_k(x) = -½ xᵀ P_k x + q_kᵀ x + κ_k` for `k = 0, …, K`.

    Attributes:
        precision: `P_k`, `(K+1, dim, dim)`.
        linear: `q_k`, `(K+1, dim)`.
        const: `κ_k`, `(K+1,)`.
    """

    precision: np.ndarray
    linear: np.ndarray
    const: np.ndarray


def _psd_inverse(matrix: np.ndarray, what: str) -> np.ndarray:
    eigenvalues = np.linalg.eigvalsh(matrix)
    if not np.all(eigenvalues > 0):
        raise ValueError(
            f"{what} is not positive definite (eigenvalues {eigenvalues}): the discrete value function is "
            "not integrable on this grid (target too broad for the base's noise)"
        )
    return np.linalg.inv(matrix)


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteChainOracle:
    """Exact discrete value function and mean-matching optimal control of a linear-Gaussian base's EM chain
    for `π = N(mean, cov)` (the maths is in the module docstring, "Any linear-Gaussian base").

    Works for `VPBase` (DDS) and `BrownianBase`; computed once, in float64, from the same float32
    chain constants (`base.discretise(ts)`) that `samplers.sde` simulates.

    Args:
        mean: target mean `m`, `(dim,)`.
        cov: target covariance `S`, `(dim, dim)`, or its diagonal `(dim,)`.
        base: a linear-Gaussian base (`AbstractLinearGaussianBase`; no particles).
        ts: the problem's grid `t_0 < … < t_K` (`Problem.ts`).
        log_Z: log normaliser of the unnormalised target `γ = Z·N(m, S)`.

    Attributes (derived):
        value: the quadratic forms of `log h_k` (float64 numpy).
        log_Z_chain: `log E_{p_0}[h_0]`, equal to `log_Z` up to rounding (a check of the recursion).
        log_weight_mean: `E[log w]` under `control` (the ELBO of the optimal EM control).
        log_weight_var: `Var[log w]` under `control`.
        initial_log_weight_var: its part `Var_{p_0}[log h_0(X_0)]` due to the fixed initial law (0 for a
            Dirac start).
    """

    mean: Any
    cov: Any
    base: AbstractLinearGaussianBase
    ts: Any
    log_Z: float = 0.0
    # derived in __post_init__ (see the module docstring)
    value: QuadraticValue = dataclasses.field(init=False, repr=False)
    log_Z_chain: float = dataclasses.field(init=False)
    log_weight_mean: float = dataclasses.field(init=False)
    log_weight_var: float = dataclasses.field(init=False)
    initial_log_weight_var: float = dataclasses.field(init=False)
    _grid: jax.Array = dataclasses.field(init=False, repr=False)
    _offsets: jax.Array = dataclasses.field(init=False, repr=False)
    _slopes: jax.Array = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.base, AbstractLinearGaussianBase):
            raise TypeError(
                f"DiscreteChainOracle needs a linear-Gaussian base ('brownian' or 'vp'), got "
                f"{type(self.base).__name__}"
            )
        if self.base.particles is not None:
            raise ValueError("DiscreteChainOracle does not handle particle systems")
        d = self.base.dim
        mean = np.asarray(self.mean, np.float64).reshape(-1)
        cov = np.asarray(self.cov, np.float64)
        cov = np.diag(cov) if cov.ndim == 1 else cov
        if mean.shape != (d,) or cov.shape != (d, d):
            raise ValueError(
                f"mean must be ({d},) and cov ({d}, {d}) or ({d},), got {mean.shape}, {cov.shape}"
            )
        if not (np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)):
            raise ValueError("cov must be symmetric positive definite")
        chain = self.base.discretise(np.asarray(self.ts, np.float64))
        a, c2, s = (np.asarray(v, np.float64) for v in (chain.decays, chain.noise_vars, chain.marginal_vars))
        num_steps, eye = a.shape[0], np.eye(d)

        s_inv = np.linalg.inv(cov)
        precision = np.empty((num_steps + 1, d, d))
        linear = np.empty((num_steps + 1, d))
        const = np.empty(num_steps + 1)
        gains = np.empty((num_steps, d, d))
        precision[-1], linear[-1] = s_inv - eye / s[-1], s_inv @ mean
        const[-1] = (
            self.log_Z
            - 0.5 * mean @ s_inv @ mean
            - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
            + 0.5 * d * np.log(2 * np.pi * s[-1])
        )
        for k in range(num_steps - 1, -1, -1):
            p_next, q_next = precision[k + 1], linear[k + 1]
            gain = _psd_inverse(eye + c2[k] * p_next, f"I + c_k² P_(k+1) at k = {k}")
            gains[k] = gain
            precision[k] = a[k] ** 2 * gain @ p_next
            precision[k] = 0.5 * (precision[k] + precision[k].T)
            linear[k] = a[k] * gain @ q_next
            const[k] = const[k + 1] + 0.5 * c2[k] * q_next @ gain @ q_next + 0.5 * np.linalg.slogdet(gain)[1]
        s0 = s[0]
        gain0 = _psd_inverse(eye + s0 * precision[0], "I + s_0 P_0")
        log_z_chain = const[0] + 0.5 * s0 * linear[0] @ gain0 @ linear[0] + 0.5 * np.linalg.slogdet(gain0)[1]

        mismatch_mean = sum(
            -0.5 * c2[k] * np.trace(precision[k + 1]) - 0.5 * np.linalg.slogdet(gains[k])[1]
            for k in range(num_steps)
        )
        mismatch_var = sum(0.5 * c2[k] ** 2 * np.sum(precision[k + 1] ** 2) for k in range(num_steps))
        initial_mean = const[0] - 0.5 * s0 * np.trace(precision[0])
        initial_var = 0.5 * s0**2 * np.sum(precision[0] ** 2) + s0 * linear[0] @ linear[0]

        sigmas = np.asarray(chain.sigmas, np.float64)[:, None, None]
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("mean", jnp.asarray(mean, jnp.float32))
        set_("cov", jnp.asarray(cov, jnp.float32))
        set_("value", QuadraticValue(precision, linear, const))
        set_("log_Z_chain", float(log_z_chain))
        set_("log_weight_mean", float(initial_mean + mismatch_mean))
        set_("log_weight_var", float(initial_var + mismatch_var))
        set_("initial_log_weight_var", float(initial_var))
        # u_k(x) = σ_k G_k q_{k+1} - σ_k a_k G_k P_{k+1} x
        set_("_grid", jnp.asarray(np.asarray(chain.ts)[:-1], jnp.float32))
        offsets = sigmas[:, :, 0] * np.einsum("kij,kj->ki", gains, linear[1:])
        set_("_offsets", jnp.asarray(offsets, jnp.float32))
        set_("_slopes", jnp.asarray(sigmas * a[:, None, None] * gains @ precision[1:], jnp.float32))

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def num_steps(self) -> int:
        return int(self.value.const.shape[0]) - 1

    def log_h(self, x: jax.Array, k: int) -> jax.Array:
        """`log h_k(x) = -½ xᵀ P_k x + q_kᵀ x + κ_k` of ONE point (`k` a Python int)."""
        p, q, c = (jnp.asarray(v[k], jnp.float32) for v in self.value)
        return -0.5 * x @ p @ x + q @ x + c

    def grad_log_h(self, x: jax.Array, k: int) -> jax.Array:
        """`∇log h_k(x) = q_k - P_k x` of ONE point."""
        p, q = (jnp.asarray(v[k], jnp.float32) for v in (self.value.precision, self.value.linear))
        return q - p @ x

    def control(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        """`u_k(x) = σ_k G_k (q_{k+1} - a_k P_{k+1} x)` at the grid time `t = t_k` (`k < K`), with the
        `control(params, x, t)` signature of `samplers.sde` (`params` is ignored)."""
        del params
        k = jnp.argmin(jnp.abs(self._grid - t))  # t is a grid time; nearest index is exact
        return self._offsets[k] - self._slopes[k] @ x


# ---------------------------------------------------------------------------------------------
# closed-form annealing transport (NETS fixed points)
# ---------------------------------------------------------------------------------------------


class GaussianTransport(NamedTuple):
    """Closed-form NETS objects when `ρ_0 = N(μ_0, Σ_0)` (normalised) and `γ = Z_1 N(μ_1, Σ_1)` [DERIVED].

    `U_t = ½ xᵀP_t x - q_tᵀx + c_t` with `P_t = (1-t)P_0 + tP_1` (`P_i = Σ_i^{-1}`),
    `q_t = (1-t)P_0μ_0 + tP_1μ_1`, `c_t = (1-t)[½μ_0ᵀP_0μ_0 + ½log det 2πΣ_0] + t[½μ_1ᵀP_1μ_1 +
    ½log det 2πΣ_1 - log Z_1]`, so `ρ_t = N(m_t, S_t)`, `S_t = P_t^{-1}`, `m_t = S_t q_t`, and

        log Z_t = -c_t + ½ q_tᵀ S_t q_t + ½ log det(2π S_t),      F_t = -log Z_t,
        Ṡ_t = -S_t (P_1 - P_0) S_t,   ṁ_t = S_t (q̇ - (P_1 - P_0) m_t),   q̇ = P_1μ_1 - P_0μ_0.

    The linear drift `b*(x, t) = B_t (x - m_t) + ṁ_t`, with `B_t` the symmetric solution of the
    Lyapunov equation `B_t S_t + S_t B_t = Ṡ_t` (solved in the eigenbasis of `S_t`:
    `B̃_ij = Ṡ̃_ij/(λ_i + λ_j)`), pushes `N(m_t, S_t)` forward (mean `ṁ`, covariance `BS + SBᵀ`), so it is a
    perfect transport: the PINN residual vanishes identically with `F̂ = F`. Being symmetric, `B_t`
    makes `b* = ∇φ*` with `φ*(x, t) = ½(x - m_t)ᵀB_t(x - m_t) + ṁ_tᵀx`, the action-matching minimiser.
    """

    mean0: jax.Array
    cov0: jax.Array
    mean1: jax.Array
    cov1: jax.Array
    log_Z1: jax.Array

    @staticmethod
    def create(mean0, cov0, mean1, cov1, log_Z1) -> GaussianTransport:
        as_array = lambda a: jnp.asarray(a, jnp.result_type(float))
        return GaussianTransport(*(as_array(a) for a in (mean0, cov0, mean1, cov1, log_Z1)))

    def _pieces(self, t):
        p0, p1 = jnp.linalg.inv(self.cov0), jnp.linalg.inv(self.cov1)
        p_t = (1.0 - t) * p0 + t * p1
        s_t = jnp.linalg.inv(p_t)
        q_t = (1.0 - t) * p0 @ self.mean0 + t * p1 @ self.mean1
        return p0, p1, s_t, q_t

    def marginal(self, t) -> tuple[jax.Array, jax.Array]:
        """`(m_t, S_t)`."""
        _, _, s_t, q_t = self._pieces(t)
        return s_t @ q_t, s_t

    def log_Z(self, t) -> jax.Array:
        """`log Z_t = -F_t`."""
        p0, p1, s_t, q_t = self._pieces(t)
        logdet = lambda c: jnp.linalg.slogdet(2.0 * jnp.pi * c)[1]
        c_t = (1.0 - t) * (0.5 * self.mean0 @ p0 @ self.mean0 + 0.5 * logdet(self.cov0)) + t * (
            0.5 * self.mean1 @ p1 @ self.mean1 + 0.5 * logdet(self.cov1) - self.log_Z1
        )
        return -c_t + 0.5 * q_t @ s_t @ q_t + 0.5 * logdet(s_t)

    def free_energy(self, t) -> jax.Array:
        """`F_t = -log Z_t`."""
        return -self.log_Z(t)

    def free_energy_rate(self, t) -> jax.Array:
        """`∂_t F_t = E_{ρ_t}[U_1 - U_0]` in closed form (Gaussian expectations of quadratics)."""
        p0, p1, s_t, q_t = self._pieces(t)
        m_t = s_t @ q_t
        expected_u = lambda p, mu, cov, log_z: (
            0.5 * jnp.trace(p @ s_t)
            + 0.5 * (m_t - mu) @ p @ (m_t - mu)
            + 0.5 * jnp.linalg.slogdet(2.0 * jnp.pi * cov)[1]
            - log_z
        )
        return expected_u(p1, self.mean1, self.cov1, self.log_Z1) - expected_u(p0, self.mean0, self.cov0, 0.0)

    def _velocity_pieces(self, t):
        p0, p1, s_t, q_t = self._pieces(t)
        m_t = s_t @ q_t
        dp = p1 - p0
        ds = -s_t @ dp @ s_t
        dm = s_t @ (p1 @ self.mean1 - p0 @ self.mean0 - dp @ m_t)
        lam, vecs = jnp.linalg.eigh(s_t)
        ds_rot = vecs.T @ ds @ vecs
        b_t = vecs @ (ds_rot / (lam[:, None] + lam[None, :])) @ vecs.T
        return m_t, dm, b_t

    def drift(self, x, t) -> jax.Array:
        """`b*(x, t) = B_t (x - m_t) + ṁ_t` of one point."""
        m_t, dm, b_t = self._velocity_pieces(t)
        return b_t @ (x - m_t) + dm

    def potential(self, x, t) -> jax.Array:
        """`φ*(x, t) = ½(x - m_t)ᵀB_t(x - m_t) + ṁ_tᵀx` (`∇φ* = b*`)."""
        m_t, dm, b_t = self._velocity_pieces(t)
        return 0.5 * (x - m_t) @ b_t @ (x - m_t) + dm @ x
