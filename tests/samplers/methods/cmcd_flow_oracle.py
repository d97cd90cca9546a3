"""The exact optimum of the CMCD chain on the tilted Gaussian flow, over controls that are constant in `x` at
each grid time (docs/methods.md §5.3, "The chain's exact optimum").

On `gaussian_flow` (data `N(μ, c² I)`, linear reward `λ w·x`, isotropic) every kernel of the CMCD chain is
Gaussian with a mean affine in the state, so with a control `u(x, t_k) = c_k` each coordinate `j` is an
independent scalar chain: the path `X = (x_0, …, x_K)` is Gaussian, `X = M z + μ(c)` with `M` fixed and
`μ` affine in the controls, and `log w(X, c)` is a quadratic form in `X` whose linear part and constant
are affine and quadratic in `c`. Written out here from the kernels' definitions, independently of
`samplers.methods.cmcd` (which evaluates the model's `log p_1` by its ODE; here it is the data law):

- reparametrised KL: `E[-log w](c) = -(½ tr(QΣ) + ½ μᵀQμ + qᵀμ + k)`, a quadratic in `c`, minimised by one
  Newton step;
- log-variance on detached paths: the loss's gradient is `2 Cov_{F_c}(log w(X, c), ∂_c log w(X, c))
  = 2 D Σ (Q μ + q)` with `D = ∂_c q` (the detached paths do not move with `c`), affine in `c`: one linear
  solve gives its zero.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tests.samplers.methods import gaussian_flow as gf


def _normal_log_prob(x, mean, var):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * jnp.log(2.0 * jnp.pi * var)


class ScalarChain:
    """Coordinate `j` of the chain on the grid `ts` with levels `β_k = k/K` (CMCD's initial schedule)."""

    def __init__(self, ts: np.ndarray, j: int):
        self.ts = np.asarray(ts, np.float64)
        self.K = len(self.ts) - 1
        self.a = gf.LAM * float(np.asarray(gf.W)[j])  # ∂r/∂x_j
        self.betas = np.arange(self.K + 1) / self.K
        self.mean0, self.var0 = gf.T0 * gf.MU, (1 - gf.T0) ** 2 + gf.T0**2 * gf.C2

    def _slope(self, t):  # v(x, t) = μ + g(t)(x - tμ)
        return (t * gf.C2 - (1 - t)) / ((1 - t) ** 2 + t**2 * gf.C2)

    def _forward(self, k):
        """`x_{k+1} = A x_k + b + h ε c_k + s ξ`: returns `(A, b, h ε, s²)`."""
        t, t1 = self.ts[k], self.ts[k + 1]
        h, eps, g = t1 - t, (1 - t) / t, self._slope(t)
        slope = 1.0 + h * (2.0 * g - 1.0 / t)
        offset = h * (2.0 * (gf.MU - g * t * gf.MU) + eps * self.betas[k + 1] * self.a)
        return slope, offset, h * eps, 2.0 * (1 - t) / t * h

    def _backward(self, k):
        """`x_k | x_{k+1} ~ N(ρ x_{k+1} + h ε (β_{k+1} a - c_{k+1}), V)`: returns `(ρ, h ε, V)`."""
        t, t1 = self.ts[k], self.ts[k + 1]
        h, eps = t1 - t, (1 - t) / t
        return t / t1, h * eps, 2.0 * (1 - t) / t * h

    def log_w(self, x, c):
        """`log w` of one scalar path `x (K+1,)` under controls `c (K+1,)`."""
        total = -_normal_log_prob(x[0], self.mean0, self.var0)
        for k in range(self.K):
            slope, offset, gain, var = self._forward(k)
            rho, back_gain, back_var = self._backward(k)
            total -= _normal_log_prob(x[k + 1], slope * x[k] + offset + gain * c[k], var)
            total += _normal_log_prob(
                x[k], rho * x[k + 1] + back_gain * (self.betas[k + 1] * self.a - c[k + 1]), back_var
            )
        return total + self.a * x[-1] + _normal_log_prob(x[-1], gf.MU, gf.C2)

    def moments(self, c):
        """`(μ(c) (K+1,), Σ (K+1, K+1))` of the forward path."""
        n = self.K + 1
        mixing = jnp.zeros((n, n)).at[0, 0].set(np.sqrt(self.var0))
        mean = [jnp.asarray(self.mean0)]
        for k in range(self.K):
            slope, offset, gain, var = self._forward(k)
            mixing = mixing.at[k + 1].set(slope * mixing[k]).at[k + 1, k + 1].set(np.sqrt(var))
            mean.append(slope * mean[k] + offset + gain * c[k])
        return jnp.stack(mean), mixing @ mixing.T

    def _quadratic(self, c):
        zero = jnp.zeros(self.K + 1)
        q_matrix = jax.hessian(self.log_w)(zero, c)
        return q_matrix, jax.grad(self.log_w)(zero, c), self.log_w(zero, c)

    def elbo(self, c):
        """`E_{F_c}[log w]` (exact)."""
        mean, cov = self.moments(c)
        q_matrix, q, k = self._quadratic(c)
        return 0.5 * jnp.trace(q_matrix @ cov) + 0.5 * mean @ q_matrix @ mean + q @ mean + k

    def lv_gradient(self, c):
        """The log-variance loss's gradient on detached paths, `2 D Σ (Qμ + q)` (module docstring)."""
        mean, cov = self.moments(c)
        q_matrix, q, _ = self._quadratic(c)
        mixed = jax.jacfwd(lambda cc: jax.grad(self.log_w)(jnp.zeros(self.K + 1), cc))(c)  # ∂q/∂c: (K+1, K+1)
        return 2.0 * mixed.T @ cov @ (q_matrix @ mean + q)


def optimal_controls(ts: np.ndarray, loss: str) -> tuple[np.ndarray, float]:
    """The chain's optimum over per-grid-time constant controls, `(c* (K+1, 2), E[log w] there)`: the KL
    loss's minimiser (`loss="kl"`) or the zero of the log-variance loss's gradient (`loss="lv"`), computed
    in float64 (cached per grid)."""
    if loss not in ("kl", "lv"):
        raise ValueError(f"unknown loss {loss!r}; valid: 'kl', 'lv'")
    controls, elbo = _cached(tuple(float(t) for t in np.asarray(ts)), loss)
    return controls.copy(), elbo


@functools.lru_cache(maxsize=8)
def _cached(ts: tuple[float, ...], loss: str) -> tuple[np.ndarray, float]:
    with jax.enable_x64(True):
        return _optimal_controls(np.asarray(ts), loss)


def _optimal_controls(ts: np.ndarray, loss: str) -> tuple[np.ndarray, float]:
    controls, elbo = [], 0.0
    for j in range(2):
        chain = ScalarChain(ts, j)
        zero = jnp.zeros(chain.K + 1)
        if loss == "kl":
            grad, hess = jax.jit(jax.grad(chain.elbo))(zero), jax.jit(jax.hessian(chain.elbo))(zero)
            c = -jnp.linalg.solve(hess, grad)
        elif loss == "lv":
            gradient = jax.jit(chain.lv_gradient)
            c = -jnp.linalg.solve(jax.jit(jax.jacfwd(chain.lv_gradient))(zero), gradient(zero))
        else:
            raise ValueError(f"unknown loss {loss!r}; valid: 'kl', 'lv'")
        controls.append(np.asarray(c))
        elbo += float(chain.elbo(c))
    return np.stack(controls, axis=1), elbo
