"""Closed-form optimal control and tilted marginals for a Gaussian target under the Brownian base.

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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base_processes import BrownianBase

__all__ = ["GaussianOracle"]


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

    def sample_marginal(self, key: jax.Array, t, num_samples: int) -> jax.Array:
        """`num_samples` draws of `p*_t`, `(num_samples, dim)`."""
        mean_t, cov_t = self.marginal(t)
        return jax.random.multivariate_normal(key, mean_t, cov_t, (int(num_samples),))

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
