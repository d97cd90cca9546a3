"""NETS losses: the PINN residual loss and the action-matching loss, pure functions of any drift,
free energy or potential (the closed-form transport of `samplers.gaussian_oracle.GaussianTransport`
plugs in for the fixed-point checks). The annealing path and the simulation are
`samplers.methods.nets_path`; the methods, `samplers.methods.nets`.

**Losses** (both off-policy on *detached* trajectories of the current sampler, so no
backpropagation through the SDE; `μ_t` below is the law of the detached `X_t`):

- `nets_pinn`: learned drift `b̂_θ = mlp_control` (or egnn for particles) and free energy
  `F̂_ψ(t) = scalar_net`,

      L_PINN(θ, ψ) = ∫_0^1 E_{x~μ_t} | ∂_t F̂_ψ(t) + ∇·b̂_θ(x, t) - ∇U_t(x)·b̂_θ(x, t) - ∂_t U_t(x) |² dt,

  unweighted (any full-support `μ_t` has the perfect transport as a minimiser, with `F̂ = F` up to a
  constant). `∂_t F̂` by `jax.grad` in `t`; the divergence as above (Hutchinson in the loss adds
  `Var(δ) = ½ Σ_{i≠j} (J_ij + J_ji)²` to the expected loss, a bias that penalises the symmetric
  off-diagonal part of `∂b̂`). `F̂(0) - F̂(1)` is a second estimate of `log Z` (`Info.log_Z_free_energy`).
- `nets_action`: gradient-field drift `b̂ = ∇_x φ̂(x, t)` (`scalar_net(input="xt")`), action-matching
  loss [RECON; the paper's exact form and weighting not re-verified]

      L_AM(φ̂) = ∫_0^1 E_{ρ_t}[½|∇φ̂_t|² + ∂_t φ̂_t] dt - E_{ρ_1}[φ̂_1] + E_{ρ_0}[φ̂_0]
              = ∫_0^1 ( E_{ρ_t}[½|∇φ̂_t|²] + Cov_{ρ_t}(φ̂_t, ∂_tU_t) ) dt              [DERIVED, by parts]

  (`∂_tρ = ρ(∂_tF - ∂_tU)` and `∂_tF = E_{ρ_t}[∂_tU]`); its minimiser is the gradient field that
  transports `ρ_t`, `L_AM = ½∫E_{ρ_t}|∇φ̂ - ∇φ*|² + const`. We use the second form (no `∂_t φ̂`, no
  boundary terms, invariant to `φ̂ + c(t)`), with every `E_{ρ_t}` estimated by **self-normalised
  running weights** `softmax_i(L^i_{t_k})` of the detached batch at the same time (`L = A` or the
  Crooks running weight), which is consistent but biased at O(1/n).

Time points: `time_subsample = m` draws `m` grid indices per trajectory (PINN) or per batch (AM)
with probability proportional to the trapezoid weights of the grid (an unbiased estimate of
`∫ dt`); `None` uses every grid point with the trapezoid weights.

"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.methods.nets_path import Drift, Path, drift_and_divergence, transport_integrand

__all__ = ["action_matching_loss", "pinn_loss", "pinn_residual", "time_points", "trapezoid_weights"]


def trapezoid_weights(ts: jax.Array) -> jax.Array:
    """Trapezoid quadrature weights `q_k` of `∫_{t_0}^{t_K} f dt ≈ Σ_k q_k f(t_k)` on the grid `(K+1,)`."""
    h = jnp.diff(ts)
    zero = jnp.zeros((1,), h.dtype)
    return 0.5 * (jnp.concatenate([zero, h]) + jnp.concatenate([h, zero]))


def time_points(key: jax.Array, ts: jax.Array, shape: tuple[int, ...], num: int | None):
    """Grid indices and weights for a time integral `∫ f dt ≈ Σ_j weight_j f(t_{index_j})`.

    Args:
        key: PRNG key.
        ts: the grid `(K+1,)`.
        shape: leading shape of the index array (e.g. `(n,)` for per-trajectory draws, `()` shared).
        num: `m` indices drawn with probability `∝` the trapezoid weights (each weighted
            `(t_K - t_0)/m`), or None for every grid point with its trapezoid weight.

    Returns:
        `(indices (*shape, m), weights (*shape, m))`.
    """
    q = trapezoid_weights(ts)
    if num is None:
        size = ts.shape[0]
        return jnp.broadcast_to(jnp.arange(size), (*shape, size)), jnp.broadcast_to(q, (*shape, size))
    length = ts[-1] - ts[0]
    indices = jax.random.categorical(key, jnp.log(q), shape=(*shape, num))
    return indices, jnp.full((*shape, num), length / num, ts.dtype)


def pinn_residual(
    drift: Drift,
    free_energy: Callable[[jax.Array], jax.Array],
    path: Path,
    x: jax.Array,
    t: jax.Array,
    point,
    key: jax.Array | None = None,
    divergence: str = "exact",
) -> jax.Array:
    """The NETS PINN residual of ONE point (methods.md §6, §1.4):

        R(x, t) = ∂_t F̂(t) + ∇·b̂(x, t) + ∇log ρ_t(x)·b̂(x, t) + D_t(x),

    (`transport_integrand`), i.e. `∂_tF̂ + ∇·b̂ - ∇U_t·b̂ - ∂_tU_t` on an `Annealing` (`∇U_t = (1-t)∇U_0 +
    t∇U_1` unclipped, `∂_tU_t = U_1 - U_0`) and `∂_tF̂ + ∇·b̂ + (s_t + λ_t∇r)·b̂ + λ̇r + λ_t∇r·v` on the
    tilted flow path. `R ≡ 0` iff `b̂` transports `ρ_t` (on top of the path's own transport) and `F̂ = F`
    up to a constant.

    Args:
        drift: `b̂(x, t)`.
        free_energy: `F̂(t) -> ()` (differentiated in `t` by `jax.grad`).
        path: the path (`Annealing` or `TiltedFlowPath`).
        x: `(dim,)` (treated as data: pass detached points).
        t: `()`.
        point: the path's per-point data at `x` (`path.point(x)`, precomputed along the trajectory).
        key: probe key (Hutchinson).
        divergence: `"exact"` or `"hutchinson"`.
    """
    b, div = drift_and_divergence(drift, x, t, key, divergence)
    d_free_energy = jax.grad(free_energy)(t)
    return d_free_energy + transport_integrand(path, x, t, point, b, div)


def pinn_loss(
    drift: Drift,
    free_energy: Callable[[jax.Array], jax.Array],
    path: Path,
    x: jax.Array,
    t: jax.Array,
    point,
    weights: jax.Array,
    key: jax.Array,
    divergence: str = "exact",
) -> jax.Array:
    """`L_PINN ≈ (1/n) Σ_i Σ_j weight_ij R(x_ij, t_ij)²` over `n` trajectories × `m` time points.

    Args: as `pinn_residual`, batched: `x (n, m, dim)`, `t (n, m)`, `point` with leaves `(n, m, ...)`,
    `weights (n, m)` (from `time_points`), `key` split into one probe per point.
    """
    n, m = t.shape
    keys = jax.random.split(key, n * m).reshape(n, m)
    residual = jax.vmap(
        jax.vmap(lambda x_, t_, p_, k_: pinn_residual(drift, free_energy, path, x_, t_, p_, k_, divergence))
    )(x, t, point, keys)
    return jnp.sum(weights * residual**2) / n


def action_matching_loss(
    potential: Callable[[jax.Array, jax.Array], jax.Array],
    path: Path,
    x: jax.Array,
    t: jax.Array,
    point,
    log_w: jax.Array,
    weights: jax.Array,
) -> jax.Array:
    """Action-matching loss `Σ_j weight_j ( E_j[½|∇φ̂(·, t_j)|²] - Cov_j(φ̂(·, t_j), D_{t_j}) )`.

    `D_t = -∂_tU_t` on an `Annealing` (the module docstring's `+Cov(φ̂, ∂_tU)`), `λ̇r + λ_t∇r·v` on the
    tilted flow path, where `∇φ̂` is the correction to the path's transport `v` (methods.md §1.4). `E_j`
    and `Cov_j` use the self-normalised weights `softmax_i(log_w[j, i])` of the `n` points at time `t_j`
    (the module docstring's [RECON] form).

    Args:
        potential: `φ̂(x, t) -> ()`; its gradient in `x` is the drift.
        path: the path.
        x: `(m, n, dim)` detached points, `n` per time.
        t: `(m,)` times.
        point: the path's per-point data at `x`, leaves `(m, n, ...)`.
        log_w: `(m, n)` running log-weights at the points (uniform: zeros).
        weights: `(m,)` quadrature weights.
    """

    def one_time(x_j, t_j, point_j, log_w_j):
        w = jax.nn.softmax(sg(log_w_j))
        d_u = sg(-jax.vmap(path.rate, in_axes=(0, None, 0))(x_j, t_j, point_j))
        d_u = d_u - jnp.sum(w * d_u)
        phi, grad_phi = jax.vmap(jax.value_and_grad(potential), in_axes=(0, None))(x_j, t_j)
        return jnp.sum(w * (0.5 * jnp.sum(grad_phi**2, -1) + phi * d_u))

    return jnp.sum(weights * jax.vmap(one_time)(x, t, point, log_w))
