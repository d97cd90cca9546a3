"""NETS, the Non-Equilibrium Transport Sampler: `nets_pinn` and `nets_action`.

Albergo & Vanden-Eijnden, "NETS: A Non-Equilibrium Transport Sampler", arXiv 2410.02711 (ICML 2025);
`docs/methods.md` §6 and §1.4. **No code exists for NETS: everything here is a
[RECON]struction from the paper's equations, with the signs re-derived [DERIVED]** (methods.md §6,
§11: the loss normalisations, the weighting of the action-matching expectations and the training
schedule are not verified against the paper).

**Annealing path.** With `t ∈ [0, 1]` on the problem's grid `0 = t_0 < … < t_K = 1` (`h_k = t_{k+1} - t_k`),

    U_t = (1 - t) U_0 + t U_1,   U_0 = -log N(0, s0² I)  (normalised, Z_0 = 1),   U_1 = -log γ̃,
    ρ_t = e^{-U_t} / Z_t,   F_t = -log Z_t,   so  ∂_t U_t = U_1 - U_0,  ∂_t F_t = E_{ρ_t}[∂_t U_t],

where `γ̃` is the problem's unnormalised target (`Problem.log_target`: `γ` for sampling problems, the
tilted base law `p^base_K e^r` for fine-tuning problems) and `Z_1 = Z`. The problem's base process is
not simulated: it supplies only the grid and `γ̃`. Particle systems are handled in the ambient space on
the working density of `samplers.baselines.common` (`∫ γ̃ = Z`, centre-of-mass factor of scale `s0`);
samples are projected to zero centre of mass on output.

**SDE and Jarzynski weights** (Itô; `ε_t ≥ 0` the Langevin rate, `b̂` the learned drift):

    dX = (-ε_t ∇U_t(X) + b̂_t(X)) dt + sqrt(2 ε_t) dW,        X_0 ~ ρ_0,
    dA = (∇·b̂_t(X) - ∇U_t(X)·b̂_t(X) - ∂_t U_t(X)) dt,      A_0 = 0,

and for every `b̂`: `E[e^{A_t} φ(X_t)] = (Z_t/Z_0) E_{ρ_t}[φ]`, hence `E[e^{A_1}] = Z` (`Z_0 = 1`). A
perfect transport `∇·(b̂ ρ_t) = -∂_t ρ_t`, i.e. `∇·b̂ - ∇U·b̂ = ∂_tU - ∂_tF`, makes `A_t = -(F_t - F_0)`
deterministic (zero-variance weights). Sign convention: `A` is a log *weight* (large is good), the
generalised work is `W = -A`.

**Discretisation** (`weights`, `WEIGHT_FORMS`):

- `"jarzynski"` (default; the NETS estimator as reconstructed in methods.md §6): Euler–Maruyama for
  `X` with everything at the left point `t_k`, and the left-point rule
  `A_{k+1} = A_k + h_k (∇·b̂ - ∇U·b̂ - ∂_tU)(X_k, t_k)`. **The EM bias makes these weights only
  asymptotically unbiased**: `E[e^{A_K}] = Z (1 + O(h))` (with `b̂ = 0` this is AIS with unadjusted
  Langevin moves; measured `log Ẑ - log Z ≈ -1.25/K` on a 1-D Gaussian, see the tests).
  `Samples.log_w = A_K`, so that `log Ẑ = LSE(A_K) - log N + log Z_0` (`log Z_0 = 0`) is what every
  estimator computes. The divergence is exact (a Jacobian trace by forward mode) for
  `dim ≤ exact_div_max_dim`, else a one-probe Rademacher Hutchinson estimate (`ξᵀ(∂b̂)ξ` by
  `jax.jvp`), which adds the Jensen bias `E[e^{hδ}] ≈ 1 + h² Var(δ)/2` per step, again O(h) overall.
- `"jarzynski_trapezoid"` [DERIVED here]: the same `A` with the trapezoid rule
  `A_{k+1} = A_k + ½h_k (g(X_k, t_k) + g(X_{k+1}, t_{k+1}))`, `g` the integrand above. For a perfect
  transport `g(x, t) = -∂_tF_t` for every `x`, so the left-point weight is deterministic but off by
  the Riemann-sum error `≈ ½h(∂_tF_1 - ∂_tF_0)` (e.g. `-0.029` on `gaussian_correlated` with 64
  steps, `s0 = 1`, with reverse ESS 1.0); the trapezoid rule removes that first-order term at the
  same cost (one extra drift evaluation at `x_K`). Still only asymptotically unbiased.
- `"crooks"` [DERIVED here, not in the NETS paper]: the same forward chain, with the exact
  discrete-time Crooks/importance weight of methods.md §7.1 for the backward kernel given by the
  time-reversed (Nelson) annealed Langevin dynamics (reverse drift `-ε∇U - b̂`):

      F_k(x_{k+1} | x_k) = N(x_k     + h_k(-ε_k ∇U_{t_k}(x_k)     + b̂(x_k, t_k)),         2 ε_k h_k I)
      B_k(x_k | x_{k+1}) = N(x_{k+1} + h_k(-ε_k ∇U_{t_k}(x_{k+1}) - b̂(x_{k+1}, t_{k+1})), 2 ε_k h_k I)
      log w = log γ̃(x_K) - log ρ_0(x_0) + Σ_k [log B_k(x_k | x_{k+1}) - log F_k(x_{k+1} | x_k)],

  so `E_F[w] = Z` *exactly* for the simulated chain, and on backward paths (`x_K ~ π`,
  `x_k ~ B_k(·|x_{k+1})`) `E_B[1/w] = 1/Z` (EUBO, forward ESS, BAR). Its running form
  `L_k = -U_{t_k}(x_k) - log ρ_0(x_0) + Σ_{j<k}(log B_j - log F_j)` satisfies `E[e^{L_k} φ(x_k)] =
  Z_{t_k} E_{ρ_{t_k}}[φ]` at every k. No divergence is needed. With `b̂ = 0` both kernels are the ULA
  kernel of `ρ_{t_k}` and the weight is the AIS weight `Σ_k -h_k ∂_tU(x_{k+1})` up to ULA's
  detailed-balance defect. In continuous time the two forms coincide.

`method.backward` exists only for `weights="crooks"`: the left-point `A` is not a ratio of path
densities of any discrete backward chain, so no exact backward identity holds for it, and mixing it
with Crooks weights in BAR would compare two different path functionals.

**ε is re-tunable after training**: the drift's optimum does not depend on ε (any ε transports ρ_t
when `b̂` is perfect; ε only damps `b̂`'s errors, at the price of a larger EM error). The state holds
`epsilon`; `with_epsilon(state, ε)` returns a state that samples (and trains) with another ε, without
recompiling, and `tune_epsilon` picks the ε with the largest reverse ESS among candidates.
`ε_t = ε · EPSILON_SCHEDULES[epsilon_schedule](t)`.

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

Cost accounting (per path of `K` steps): `K + 1` evaluations of `log γ̃` and of `∇log γ̃` (one
`value_and_grad` per visited point, needed by both the drift and `∂_tU`), `K` SDE steps, and `K + 1`
drift-network evaluations (each with an exact divergence, Jarzynski forms only, counts `dim`
evaluations: one Jacobian-vector product per coordinate). Loss points count `dim` (exact) or 1
(Hutchinson) drift evaluations plus one free-energy evaluation (PINN), or one potential evaluation
(AM). Backward passes are not counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import samplers
from samplers.baselines.common import complete_centre_of_mass, working_density
from samplers.estimators import reverse_ess
from samplers.method import Cost, Method, MethodSpec, Samples
from samplers.methods.common import NETWORKS, build_control_network, make_optimizer
from samplers.networks import scalar_net
from samplers.parallel import shard_batch
from samplers.problem import Problem

__all__ = [
    "DIVERGENCES",
    "EPSILON_SCHEDULES",
    "WEIGHT_FORMS",
    "ActionInfo",
    "Annealing",
    "GaussianTransport",
    "NETSConfig",
    "NETSPath",
    "NETSState",
    "PINNInfo",
    "action_matching_loss",
    "annealing_for",
    "build_nets_action",
    "build_nets_pinn",
    "drift_and_divergence",
    "pinn_loss",
    "pinn_residual",
    "simulate_nets",
    "simulate_nets_backward",
    "time_points",
    "trapezoid_weights",
    "tune_epsilon",
    "with_epsilon",
]

PyTree = Any
Drift = Callable[[jax.Array, jax.Array], jax.Array]
sg = jax.lax.stop_gradient

WEIGHT_FORMS: dict[str, str] = {
    "jarzynski": "left-point NETS weight A_K (asymptotically unbiased: O(h) EM bias); no backward",
    "jarzynski_trapezoid": "NETS weight A_K by the trapezoid rule in t (removes the O(h) quadrature error)",
    "crooks": "exact discrete Crooks weight with the Nelson-reversed annealed Langevin kernel; backward",
}
_SIM_WEIGHTS = (*WEIGHT_FORMS, "none")
DIVERGENCES: dict[str, str] = {
    "exact": "trace of the Jacobian by forward mode (dim Jacobian-vector products)",
    "hutchinson": "one Rademacher probe ξᵀ(∂b)ξ by jax.jvp (unbiased, noisy)",
}
EPSILON_SCHEDULES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "constant": lambda t: jnp.ones_like(t),
    "linear": lambda t: t,  # no Langevin at t = 0 (ρ_0 is sampled exactly), full at the target end
}


# ---------------------------------------------------------------------------------------------
# the annealing path
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Annealing:
    """The linear path of potentials `U_t = (1 - t) U_0 + t U_1` (module docstring).

    Args:
        dim: dimension.
        s0: standard deviation of `ρ_0 = N(0, s0² I)` (`U_0 = |x|²/(2 s0²) + (d/2) log(2π s0²)`).
        log_target: `log γ̃(x)` of ONE point (`U_1 = -log γ̃`, `∫ γ̃ = Z`).
        max_grad_norm_target: clip the norm of `∇U_1` in the *Langevin drift only* (a stabiliser for
            stiff targets), or None. The `"crooks"` weights stay exact under the clip (it is part of the
            kernel); the Jarzynski weights do not (their identity needs the true `∇U_t` in the drift).
    """

    dim: int
    s0: float
    log_target: Callable[[jax.Array], jax.Array]
    max_grad_norm_target: float | None = None

    def u0(self, x: jax.Array) -> jax.Array:
        """`U_0(x) = -log N(x; 0, s0² I)` of one point."""
        var = self.s0**2
        return 0.5 * jnp.sum(x * x) / var + 0.5 * self.dim * jnp.log(2.0 * jnp.pi * var)

    def grad_u0(self, x: jax.Array) -> jax.Array:
        return x / self.s0**2

    def u1_and_grad(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(U_1(x), ∇U_1(x)) = -(log γ̃(x), ∇log γ̃(x))` of one point (one energy and one gradient eval)."""
        value, grad = jax.value_and_grad(self.log_target)(x)
        return -value, -grad

    def potential(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`U_t(x)`."""
        return (1.0 - t) * self.u0(x) - t * self.log_target(x)

    def langevin_grad(self, x: jax.Array, t: jax.Array, grad_u1: jax.Array) -> jax.Array:
        """`∇U_t(x)` as used in the drift, with the optional norm clip of `∇U_1`."""
        if self.max_grad_norm_target is not None:
            norm = jnp.sqrt(jnp.sum(grad_u1 * grad_u1))
            grad_u1 = grad_u1 * jnp.minimum(1.0, self.max_grad_norm_target / jnp.maximum(norm, 1e-30))
        return (1.0 - t) * self.grad_u0(x) + t * grad_u1

    def sample_initial(self, key: jax.Array, num_samples: int) -> jax.Array:
        return self.s0 * jax.random.normal(key, (num_samples, self.dim), jnp.float32)


def annealing_for(problem: Problem, s0: float, max_grad_norm_target: float | None = None) -> Annealing:
    """The `Annealing` of a problem: `U_1 = -log γ̃` (`Problem.log_target`, or the working density of a
    particle target with centre-of-mass scale `s0`)."""
    if not problem.has_log_target:
        raise ValueError(
            f"NETS needs the unnormalised target log γ̃; the {problem.base.kind!r} base has no closed-form "
            "terminal law (valid bases: 'brownian', 'vp')"
        )
    if problem.particles is not None and problem.target is not None:
        log_target, _ = working_density(problem.target, s0)
    else:
        log_target = problem.log_target
    return Annealing(problem.dim, float(s0), log_target, max_grad_norm_target)


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


# ---------------------------------------------------------------------------------------------
# divergence, residual and losses (pure functions of any drift / free energy / potential)
# ---------------------------------------------------------------------------------------------


def drift_and_divergence(
    drift: Drift, x: jax.Array, t: jax.Array, key: jax.Array | None = None, divergence: str = "exact"
) -> tuple[jax.Array, jax.Array]:
    """`(b(x, t), ∇·b(x, t))` of ONE point.

    Args:
        drift: `b(x, t) -> (dim,)`.
        x: `(dim,)`.
        t: `()`.
        key: PRNG key of the Rademacher probe (Hutchinson only).
        divergence: `"exact"` (trace of the forward-mode Jacobian) or `"hutchinson"` (`ξᵀ(∂b)ξ`, `ξ`
            Rademacher: `E[ξᵀJξ] = tr J`).
    """
    f = lambda y: drift(y, t)
    if divergence == "exact":
        basis = jnp.eye(x.shape[0], dtype=x.dtype)
        values, columns = jax.vmap(lambda v: jax.jvp(f, (x,), (v,)))(basis)
        return values[0], jnp.trace(columns)
    if divergence == "hutchinson":
        if key is None:
            raise ValueError("the Hutchinson divergence needs a key")
        probe = jax.random.rademacher(key, x.shape, x.dtype)
        value, jv = jax.jvp(f, (x,), (probe,))
        return value, jnp.dot(probe, jv)
    raise ValueError(f"unknown divergence {divergence!r}; valid choices: {sorted(DIVERGENCES)}")


def pinn_residual(
    drift: Drift,
    free_energy: Callable[[jax.Array], jax.Array],
    annealing: Annealing,
    x: jax.Array,
    t: jax.Array,
    u1: jax.Array,
    grad_u1: jax.Array,
    key: jax.Array | None = None,
    divergence: str = "exact",
) -> jax.Array:
    """The NETS PINN residual of ONE point (methods.md §6):

        R(x, t) = ∂_t F̂(t) + ∇·b̂(x, t) - ∇U_t(x)·b̂(x, t) - ∂_t U_t(x),

    with `∇U_t = (1-t)∇U_0 + t∇U_1` (unclipped) and `∂_tU_t = U_1 - U_0`. `R ≡ 0` iff `b̂` transports
    `ρ_t` and `F̂ = F` up to a constant.

    Args:
        drift: `b̂(x, t)`.
        free_energy: `F̂(t) -> ()` (differentiated in `t` by `jax.grad`).
        annealing: the path.
        x: `(dim,)` (treated as data: pass detached points).
        t: `()`.
        u1: `U_1(x)` (precomputed along the trajectory).
        grad_u1: `∇U_1(x)`.
        key: probe key (Hutchinson).
        divergence: `"exact"` or `"hutchinson"`.
    """
    b, div = drift_and_divergence(drift, x, t, key, divergence)
    d_free_energy = jax.grad(free_energy)(t)
    grad_u = (1.0 - t) * annealing.grad_u0(x) + t * grad_u1
    return d_free_energy + div - jnp.dot(grad_u, b) - (u1 - annealing.u0(x))


def pinn_loss(
    drift: Drift,
    free_energy: Callable[[jax.Array], jax.Array],
    annealing: Annealing,
    x: jax.Array,
    t: jax.Array,
    u1: jax.Array,
    grad_u1: jax.Array,
    weights: jax.Array,
    key: jax.Array,
    divergence: str = "exact",
) -> jax.Array:
    """`L_PINN ≈ (1/n) Σ_i Σ_j weight_ij R(x_ij, t_ij)²` over `n` trajectories × `m` time points.

    Args: as `pinn_residual`, batched: `x (n, m, dim)`, `t (n, m)`, `u1 (n, m)`, `grad_u1 (n, m, dim)`,
    `weights (n, m)` (from `time_points`), `key` split into one probe per point.
    """
    n, m = t.shape
    keys = jax.random.split(key, n * m).reshape(n, m)
    residual = jax.vmap(
        jax.vmap(
            lambda x_, t_, u_, g_, k_: pinn_residual(
                drift, free_energy, annealing, x_, t_, u_, g_, k_, divergence
            )
        )
    )(x, t, u1, grad_u1, keys)
    return jnp.sum(weights * residual**2) / n


def action_matching_loss(
    potential: Callable[[jax.Array, jax.Array], jax.Array],
    annealing: Annealing,
    x: jax.Array,
    t: jax.Array,
    u1: jax.Array,
    log_w: jax.Array,
    weights: jax.Array,
) -> jax.Array:
    """Action-matching loss `Σ_j weight_j ( E_j[½|∇φ̂(·, t_j)|²] + Cov_j(φ̂(·, t_j), ∂_tU_{t_j}) )`.

    `E_j` and `Cov_j` use the self-normalised weights `softmax_i(log_w[j, i])` of the `n` points at
    time `t_j` (the module docstring's [RECON] form).

    Args:
        potential: `φ̂(x, t) -> ()`; its gradient in `x` is the drift.
        annealing: the path.
        x: `(m, n, dim)` detached points, `n` per time.
        t: `(m,)` times.
        u1: `(m, n)` `U_1` at the points.
        log_w: `(m, n)` running log-weights at the points (uniform: zeros).
        weights: `(m,)` quadrature weights.
    """

    def one_time(x_j, t_j, u1_j, log_w_j):
        w = jax.nn.softmax(sg(log_w_j))
        d_u = sg(u1_j - jax.vmap(annealing.u0)(x_j))
        d_u = d_u - jnp.sum(w * d_u)
        phi, grad_phi = jax.vmap(jax.value_and_grad(potential), in_axes=(0, None))(x_j, t_j)
        return jnp.sum(w * (0.5 * jnp.sum(grad_phi**2, -1) + phi * d_u))

    return jnp.sum(weights * jax.vmap(one_time)(x, t, u1, log_w))


# ---------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------


class NETSPath(NamedTuple):
    """Output of `simulate_nets` / `simulate_nets_backward`.

    Attributes:
        x: end points `x_K`, `(n, dim)` (ambient space; not projected).
        log_w: terminal log-weights `(n,)` (`A_K` or the Crooks weight; zeros for `weights="none"`).
        trajectory: `(K+1, n, dim)` or None.
        u1: `U_1` along the trajectory, `(K+1, n)`, or None.
        grad_u1: `∇U_1` along the trajectory, `(K+1, n, dim)`, or None.
        running_log_w: `(K+1, n)` running log-weights `L_k` (`E[e^{L_k} φ(x_k)] ≈ Z_{t_k} E_{ρ_{t_k}}φ`),
            or None.
        cost: evaluation counters of this call.
    """

    x: jax.Array
    log_w: jax.Array
    trajectory: jax.Array | None
    u1: jax.Array | None
    grad_u1: jax.Array | None
    running_log_w: jax.Array | None
    cost: Cost


def _check_weights(weights: str) -> None:
    if weights not in _SIM_WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid choices: {list(_SIM_WEIGHTS)}")


def _gaussian_residual_log_ratio(x, mean_b, noise, var):
    """`log B - log F` for Gaussian kernels of equal variance: `-½|x - mean_b|²/var + ½|ε|²`."""
    return -0.5 * jnp.sum((x - mean_b) ** 2, -1) / var + 0.5 * jnp.sum(noise * noise, -1)


def simulate_nets(
    key: jax.Array,
    annealing: Annealing,
    drift: Drift,
    ts: jax.Array,
    epsilons: jax.Array,
    num_samples: int,
    *,
    weights: str = "jarzynski",
    divergence: str = "exact",
    save_path: bool = False,
) -> NETSPath:
    """Simulate `num_samples` NETS paths `dX = (-ε∇U_t + b̂) dt + sqrt(2ε) dW` from `ρ_0` by Euler–Maruyama.

    Args:
        key: PRNG key (initial draw, noise, Hutchinson probes).
        annealing: the path of potentials.
        drift: `b̂(x, t)` of ONE point (close over parameters; stop their gradient for detached paths).
        ts: grid `(K+1,)` from 0 to 1.
        epsilons: `ε_{t_k}`, `(K,)`, non-negative.
        num_samples: number of paths `n`.
        weights: one of `WEIGHT_FORMS`, or `"none"` (no weights, no divergence).
        divergence: `"exact"` or `"hutchinson"` (Jarzynski forms only).
        save_path: return the trajectory, `U_1`, `∇U_1` and the running log-weights at every grid point.

    Returns:
        `NETSPath` (cost in the module docstring's accounting).
    """
    _check_weights(weights)
    ts = jnp.asarray(ts, jnp.float32)
    h = jnp.diff(ts)
    num_steps = h.shape[0]
    dim = annealing.dim
    jarzynski = weights in ("jarzynski", "jarzynski_trapezoid")
    key_init, key_noise, key_div = jax.random.split(key, 3)
    u0_batch = jax.vmap(annealing.u0)
    langevin_batch = jax.vmap(annealing.langevin_grad, in_axes=(0, None, 0))
    zeros = jnp.zeros((num_samples,), jnp.float32)

    def evaluate(k, x, t):
        """`U_1`, `∇U_1`, `b̂` and the NETS integrand `∇·b̂ - ∇U_t·b̂ - ∂_tU` (Jarzynski forms) at `(x, t)`."""
        u1, g1 = jax.vmap(annealing.u1_and_grad)(x)
        if not jarzynski:
            return u1, g1, jax.vmap(drift, in_axes=(0, None))(x, t), zeros
        probes = jax.random.split(jax.random.fold_in(key_div, k), num_samples)
        b, div = jax.vmap(lambda x_, p_: drift_and_divergence(drift, x_, t, p_, divergence))(x, probes)
        grad_u = (1.0 - t) * jax.vmap(annealing.grad_u0)(x) + t * g1
        return u1, g1, b, div - jnp.sum(grad_u * b, -1) - (u1 - u0_batch(x))

    def body(carry, k):
        x, u1, g1, b, integrand, log_w = carry
        t, t_next, h_k, eps = ts[k], ts[k + 1], h[k], epsilons[k]
        noise = shard_batch(jax.random.normal(jax.random.fold_in(key_noise, k), x.shape, x.dtype))
        var = 2.0 * eps * h_k
        x_next = x + h_k * (b - eps * langevin_batch(x, t, g1)) + jnp.sqrt(var) * noise
        u1_next, g1_next, b_next, integrand_next = evaluate(k + 1, x_next, t_next)
        if weights == "jarzynski":
            log_w = log_w + h_k * integrand
        elif weights == "jarzynski_trapezoid":
            log_w = log_w + 0.5 * h_k * (integrand + integrand_next)
        elif weights == "crooks":
            mean_back = x_next + h_k * (-eps * langevin_batch(x_next, t, g1_next) - b_next)
            potential_now = (1.0 - t) * u0_batch(x) + t * u1
            potential_next = (1.0 - t_next) * u0_batch(x_next) + t_next * u1_next
            log_w = (
                log_w
                + potential_now
                - potential_next
                + _gaussian_residual_log_ratio(x, mean_back, noise, var)
            )
        saved = (x_next, u1_next, g1_next, log_w) if save_path else None
        return (x_next, u1_next, g1_next, b_next, integrand_next, log_w), saved

    x0 = shard_batch(annealing.sample_initial(key_init, num_samples))  # batch over the devices
    init = (x0, *evaluate(0, x0, ts[0]), zeros)
    (x_end, *_, log_w), saved = jax.lax.scan(body, init, jnp.arange(num_steps))
    trajectory = u1 = grad_u1 = running = None
    if save_path:
        xs, u1s, g1s, lws = saved
        trajectory = jnp.concatenate([x0[None], xs])
        u1 = jnp.concatenate([init[1][None], u1s])
        grad_u1 = jnp.concatenate([init[2][None], g1s])
        running = jnp.concatenate([zeros[None], lws])
    per_drift = dim if (jarzynski and divergence == "exact") else 1
    cost = Cost.of(
        energy_evals=num_samples * (num_steps + 1),
        grad_evals=num_samples * (num_steps + 1),
        network_evals=num_samples * (num_steps + 1) * per_drift,
        sde_steps=num_samples * num_steps,
    )
    return NETSPath(x_end, log_w, trajectory, u1, grad_u1, running, cost)


def simulate_nets_backward(
    key: jax.Array,
    annealing: Annealing,
    drift: Drift,
    ts: jax.Array,
    epsilons: jax.Array,
    x_end: jax.Array,
) -> NETSPath:
    """Backward paths of the `"crooks"` weights: `x_K = x_end`, `x_k ~ B_k(·|x_{k+1})` (module docstring).

    Returns the Crooks log-weights `log w = log γ̃(x_K) - log ρ_0(x_0) + Σ_k (log B_k - log F_k)` of
    these paths; with `x_end ~ γ̃/Z`, `E_B[e^{-log w}] = 1/Z` and `E_B[log w] = EUBO ≥ log Z`.

    Args: as `simulate_nets`, with `x_end (n, dim)` samples of `γ̃/Z` (ambient space) instead of a count.
    """
    ts = jnp.asarray(ts, jnp.float32)
    h = jnp.diff(ts)
    num_steps = h.shape[0]
    num_samples = x_end.shape[0]
    drift_batch = jax.vmap(drift, in_axes=(0, None))
    u1_end, g1_end = jax.vmap(annealing.u1_and_grad)(x_end)
    b_end = drift_batch(x_end, ts[-1])
    keys = jax.random.split(key, num_steps)

    def body(carry, k):
        x_next, u1_next, g1_next, b_next, log_w = carry
        t, t_next, h_k, eps = ts[k], ts[k + 1], h[k], epsilons[k]
        var = 2.0 * eps * h_k
        langevin_back = jax.vmap(annealing.langevin_grad, in_axes=(0, None, 0))(x_next, t, g1_next)
        mean_back = x_next + h_k * (-eps * langevin_back - b_next)
        x = mean_back + jnp.sqrt(var) * shard_batch(jax.random.normal(keys[k], x_next.shape, x_next.dtype))
        u1, g1 = jax.vmap(annealing.u1_and_grad)(x)
        b = drift_batch(x, t)
        langevin = jax.vmap(annealing.langevin_grad, in_axes=(0, None, 0))(x, t, g1)
        noise = (x_next - x - h_k * (b - eps * langevin)) / jnp.sqrt(var)
        potential_now = (1.0 - t) * jax.vmap(annealing.u0)(x) + t * u1
        potential_next = (1.0 - t_next) * jax.vmap(annealing.u0)(x_next) + t_next * u1_next
        log_w = (
            log_w + potential_now - potential_next + _gaussian_residual_log_ratio(x, mean_back, noise, var)
        )
        return (x, u1, g1, b, log_w), None

    init = (x_end, u1_end, g1_end, b_end, jnp.zeros((num_samples,), jnp.float32))
    (_, _, _, _, log_w), _ = jax.lax.scan(body, init, jnp.arange(num_steps - 1, -1, -1))
    cost = Cost.of(
        energy_evals=num_samples * (num_steps + 1),
        grad_evals=num_samples * (num_steps + 1),
        network_evals=num_samples * (num_steps + 1),
        sde_steps=num_samples * num_steps,
    )
    return NETSPath(x_end, log_w, None, None, None, None, cost)


# ---------------------------------------------------------------------------------------------
# closed-form Gaussian transport (tests, claims)
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


# ---------------------------------------------------------------------------------------------
# config, state, infos
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NETSConfig:
    """Hyper-parameters of `nets_pinn` and `nets_action`.

    Attributes:
        learning_rate: Adam learning rate (all networks).
        batch_size: detached trajectories simulated per training step.
        hidden: hidden widths of the drift network `b̂` (PINN; for `egnn`: width `hidden[0]`,
            `len(hidden)` layers) and of the potential `φ̂` (action matching).
        network: `"auto"` (egnn for particle systems), `"mlp"` or `"egnn"` for the PINN drift; the
            action-matching potential is always a `scalar_net` MLP (not permutation invariant). No
            grad-log-target input feature: it is stop-gradient inside the network, so a forward-mode
            divergence would miss its Jacobian and the Jarzynski weights would be wrong.
        time_embedding_dim: number of sinusoidal time features of `b̂` / `φ̂`.
        free_energy_hidden: hidden widths of `F̂(t)` (PINN).
        grad_clip: global-norm clip of the parameter gradient (optax), or None.
        s0: standard deviation of `ρ_0 = N(0, s0² I)` (and the centre-of-mass scale of particle systems).
        epsilon: the Langevin rate `ε` (re-tunable after training: `with_epsilon`).
        epsilon_schedule: `ε_t = ε · schedule(t)`, one of `EPSILON_SCHEDULES`.
        weights: `"jarzynski"` (the paper's left-point `A`, O(h) bias), `"jarzynski_trapezoid"` (the
            same `A` by the trapezoid rule) or `"crooks"` (exact, has `backward`), see `WEIGHT_FORMS`.
        exact_div_max_dim: exact divergence for `dim ≤` this, Hutchinson above.
        time_subsample: loss time points per trajectory (PINN) or per batch (AM), drawn `∝` trapezoid
            weights; None uses every grid point.
        max_grad_norm_target: norm clip of `∇U_1 = -∇log γ̃` in the Langevin drift, or None (see
            `Annealing`: keeps `"crooks"` exact, biases `"jarzynski"`).
    """

    learning_rate: float = 1e-3
    batch_size: int = 256
    hidden: tuple[int, ...] = (64, 64)
    network: str = "auto"
    time_embedding_dim: int = 32
    free_energy_hidden: tuple[int, ...] = (32, 32)
    grad_clip: float | None = 10.0
    s0: float = 1.0
    epsilon: float = 1.0
    epsilon_schedule: str = "constant"
    weights: str = "jarzynski"
    exact_div_max_dim: int = 16
    time_subsample: int | None = 8
    max_grad_norm_target: float | None = None

    def __post_init__(self):
        who = type(self).__name__
        if self.network not in NETWORKS:
            raise ValueError(f"{who}: unknown network {self.network!r}; valid choices: {sorted(NETWORKS)}")
        if self.weights not in WEIGHT_FORMS:
            raise ValueError(
                f"{who}: unknown weights {self.weights!r}; valid choices: {sorted(WEIGHT_FORMS)}"
            )
        if self.epsilon_schedule not in EPSILON_SCHEDULES:
            raise ValueError(
                f"{who}: unknown epsilon_schedule {self.epsilon_schedule!r}; "
                f"valid choices: {sorted(EPSILON_SCHEDULES)}"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"{who}: batch_size must be an integer >= 2, got {self.batch_size!r}")
        for name in ("learning_rate", "s0"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{who}: {name} must be positive, got {getattr(self, name)!r}")
        if not self.epsilon >= 0:
            raise ValueError(f"{who}: epsilon must be >= 0, got {self.epsilon!r}")
        if self.weights == "crooks" and not self.epsilon > 0:
            raise ValueError(f"{who}: weights='crooks' needs epsilon > 0 (the kernels are Gaussian)")
        for name in ("grad_clip", "max_grad_norm_target"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{who}: {name} must be positive or None, got {value!r}")
        if isinstance(self.exact_div_max_dim, bool) or not isinstance(self.exact_div_max_dim, int):
            raise ValueError(f"{who}: exact_div_max_dim must be an integer, got {self.exact_div_max_dim!r}")
        if self.time_subsample is not None and (
            isinstance(self.time_subsample, bool)
            or not isinstance(self.time_subsample, int)
            or self.time_subsample < 1
        ):
            raise ValueError(
                f"{who}: time_subsample must be a positive integer or None, got {self.time_subsample!r}"
            )
        for name in ("hidden", "free_energy_hidden"):
            widths = getattr(self, name)
            if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
                raise ValueError(
                    f"{who}: {name} must be a non-empty tuple of positive widths, got {widths!r}"
                )


class NETSState(NamedTuple):
    """Training state.

    Attributes:
        params: `{"drift": b̂, "free_energy": F̂}` (PINN) or `{"potential": φ̂}` (action matching).
        opt_state: optax state.
        epsilon: `()` float32, the Langevin rate used by `sample`, `backward` and training (`with_epsilon`).
        cost: cumulative training cost.
    """

    params: PyTree
    opt_state: optax.OptState
    epsilon: jax.Array
    cost: Cost


class PINNInfo(NamedTuple):
    """Per-step diagnostics of `nets_pinn`.

    Attributes:
        loss: the PINN loss of the batch.
        grad_norm: global norm of the parameter gradient (before clipping).
        log_Z_free_energy: `F̂(0) - F̂(1)`, the learned estimate of `log Z - log Z_0 = log Z`.
    """

    loss: jax.Array
    grad_norm: jax.Array
    log_Z_free_energy: jax.Array


class ActionInfo(NamedTuple):
    """Per-step diagnostics of `nets_action`.

    Attributes:
        loss: the action-matching loss of the batch (not bounded below by 0; its minimum is `-const`).
        grad_norm: global norm of the parameter gradient (before clipping).
        log_Z: `LSE(log w) - log n` of the training batch's terminal weights.
        ess: normalised reverse ESS of the training batch.
    """

    loss: jax.Array
    grad_norm: jax.Array
    log_Z: jax.Array
    ess: jax.Array


def with_epsilon(state: NETSState, epsilon: float | jax.Array) -> NETSState:
    """The same trained state with the Langevin rate `ε` replaced (no retraining, no recompilation).

    `method.sample(key, with_epsilon(state, 0.5), n)` draws NETS samples with `ε = 0.5`; the weights
    stay valid for any `ε ≥ 0` (exactly with `"crooks"`, up to the O(h) EM bias with `"jarzynski"`).
    """
    if not isinstance(state, NETSState):
        raise TypeError(
            f"with_epsilon takes a NETSState (nets_pinn / nets_action), got {type(state).__name__}"
        )
    epsilon = jnp.asarray(epsilon, jnp.float32)
    if epsilon.shape != ():
        raise ValueError(f"epsilon must be a scalar, got shape {epsilon.shape}")
    return state._replace(epsilon=epsilon)


def tune_epsilon(
    key: jax.Array, method: Method, state: NETSState, candidates, num_samples: int = 1024
) -> tuple[NETSState, jax.Array]:
    """Pick the `ε` of largest reverse ESS among `candidates` (NETS' post-training re-tuning).

    Each candidate samples `num_samples` paths with the same key. The chosen state's own estimates
    should be recomputed with a fresh key (selecting on the same samples biases them).

    Returns:
        `(state with the best ε, ESS per candidate)`.
    """
    candidates = jnp.asarray(candidates, jnp.float32)
    if candidates.ndim != 1 or candidates.shape[0] < 1:
        raise ValueError(f"candidates must be a non-empty 1-D list of epsilons, got shape {candidates.shape}")

    def ess_of(epsilon):
        draws = method.sample(key, with_epsilon(state, epsilon), num_samples)
        return reverse_ess(draws.log_w).value

    ess = jax.lax.map(ess_of, candidates)
    return with_epsilon(state, candidates[jnp.argmax(ess)]), ess


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


class _Setup(NamedTuple):
    annealing: Annealing
    ts: jax.Array
    epsilon_profile: jax.Array  # (K,) schedule(t_k), multiplied by state.epsilon
    divergence: str
    project: Callable[[jax.Array], jax.Array]
    complete: Callable[[jax.Array, jax.Array], jax.Array]


def _setup(problem: Problem, config: NETSConfig, name: str) -> _Setup:
    if not isinstance(problem, Problem):
        raise TypeError(f"{name}: expected a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, NETSConfig):
        raise TypeError(f"{name} needs a NETSConfig, got {type(config).__name__}")
    annealing = annealing_for(problem, config.s0, config.max_grad_norm_target)
    if abs(float(problem.ts[0])) > 1e-12:
        raise ValueError(
            f"{name} anneals t from 0 to 1; the problem's grid starts at {float(problem.ts[0])!r}"
        )
    ts = problem.times
    profile = EPSILON_SCHEDULES[config.epsilon_schedule](ts[:-1])
    divergence = "exact" if problem.dim <= config.exact_div_max_dim else "hutchinson"
    target = problem.target
    if problem.particles is not None and target is not None:
        _, project = working_density(target, config.s0)
        complete = lambda key, x: complete_centre_of_mass(key, x, target, config.s0)
    else:
        project = lambda x: x
        complete = lambda key, x: x
    return _Setup(annealing, ts, profile, divergence, project, complete)


def _sampler(setup: _Setup, config: NETSConfig, drift_of: Callable[[PyTree], Drift]):
    """`(sample, backward or None)` for a drift built from the state's parameters."""

    def sample(key: jax.Array, state: NETSState, num_samples: int) -> Samples:
        path = simulate_nets(
            key,
            setup.annealing,
            drift_of(sg(state.params)),
            setup.ts,
            state.epsilon * setup.epsilon_profile,
            num_samples,
            weights=config.weights,
            divergence=setup.divergence,
        )
        return Samples(x=setup.project(path.x), log_w=path.log_w, cost=path.cost)

    def backward(key: jax.Array, state: NETSState, x_target: jax.Array) -> jax.Array:
        key_com, key_path = jax.random.split(key)
        x_end = setup.complete(key_com, jnp.asarray(x_target, jnp.float32))
        path = simulate_nets_backward(
            key_path,
            setup.annealing,
            drift_of(sg(state.params)),
            setup.ts,
            state.epsilon * setup.epsilon_profile,
            x_end,
        )
        return path.log_w

    return sample, (backward if config.weights == "crooks" else None)


def build_nets_pinn(problem: Problem, config: NETSConfig) -> Method:
    """`nets_pinn`: the PINN loss (`pinn_loss`) with a learned drift `b̂` and free energy `F̂(t)`."""
    setup = _setup(problem, config, "nets_pinn")
    net = build_control_network(
        problem, network=config.network, hidden=config.hidden, time_embedding_dim=config.time_embedding_dim
    )
    free = scalar_net(hidden=config.free_energy_hidden, input="t")
    optimizer = make_optimizer(config.learning_rate, config.grad_clip)
    drift_of = lambda params: lambda x, t: net.apply(params["drift"], x, t)
    sample, backward = _sampler(setup, config, drift_of)
    n = config.batch_size
    per_point = problem.dim if setup.divergence == "exact" else 1

    def init(key: jax.Array) -> NETSState:
        key_drift, key_free = jax.random.split(key)
        params = {"drift": net.init(key_drift), "free_energy": free.init(key_free)}
        return NETSState(
            params, optimizer.init(params), jnp.asarray(config.epsilon, jnp.float32), Cost.zero()
        )

    def step(key: jax.Array, state: NETSState) -> tuple[NETSState, PINNInfo]:
        key_sim, key_time, key_loss = jax.random.split(key, 3)
        path = simulate_nets(
            key_sim,
            setup.annealing,
            drift_of(sg(state.params)),
            setup.ts,
            state.epsilon * setup.epsilon_profile,
            n,
            weights="none",
            save_path=True,
        )
        index, weight = time_points(key_time, setup.ts, (n,), config.time_subsample)
        rows = jnp.arange(n)[:, None]
        x, u1, g1 = (sg(a)[index, rows] for a in (path.trajectory, path.u1, path.grad_u1))
        t = setup.ts[index]

        def objective(params):
            return pinn_loss(
                drift_of(params),
                lambda s: free.apply(params["free_energy"], s),
                setup.annealing,
                x,
                t,
                u1,
                g1,
                weight,
                key_loss,
                setup.divergence,
            )

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        points = index.size
        cost = path.cost + Cost.of(network_evals=points * (per_point + 1))
        log_Z_free = free.apply(state.params["free_energy"], jnp.float32(0.0)) - free.apply(
            state.params["free_energy"], jnp.float32(1.0)
        )
        info = PINNInfo(loss=loss, grad_norm=optax.tree.norm(grads), log_Z_free_energy=log_Z_free)
        return NETSState(params, opt_state, state.epsilon, state.cost + cost), info

    return Method(init=init, step=step, sample=sample, backward=backward)


def build_nets_action(problem: Problem, config: NETSConfig) -> Method:
    """`nets_action`: the action-matching loss (`action_matching_loss`) with `b̂ = ∇_x φ̂`."""
    setup = _setup(problem, config, "nets_action")
    potential = scalar_net(
        hidden=config.hidden, input="xt", dim=problem.dim, time_embedding_dim=config.time_embedding_dim
    )
    optimizer = make_optimizer(config.learning_rate, config.grad_clip)
    potential_of = lambda params: lambda x, t: potential.apply(params["potential"], x, t)
    drift_of = lambda params: jax.grad(potential_of(params))
    sample, backward = _sampler(setup, config, drift_of)
    n = config.batch_size

    def init(key: jax.Array) -> NETSState:
        params = {"potential": potential.init(key)}
        return NETSState(
            params, optimizer.init(params), jnp.asarray(config.epsilon, jnp.float32), Cost.zero()
        )

    def step(key: jax.Array, state: NETSState) -> tuple[NETSState, ActionInfo]:
        key_sim, key_time = jax.random.split(key)
        path = simulate_nets(
            key_sim,
            setup.annealing,
            drift_of(sg(state.params)),
            setup.ts,
            state.epsilon * setup.epsilon_profile,
            n,
            weights=config.weights,
            divergence=setup.divergence,
            save_path=True,
        )
        index, weight = time_points(key_time, setup.ts, (), config.time_subsample)
        x, u1, log_w = (sg(a)[index] for a in (path.trajectory, path.u1, path.running_log_w))
        t = setup.ts[index]

        def objective(params):
            return action_matching_loss(potential_of(params), setup.annealing, x, t, u1, log_w, weight)

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        cost = path.cost + Cost.of(network_evals=index.size * n)
        terminal = sg(path.log_w)
        info = ActionInfo(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            log_Z=jax.nn.logsumexp(terminal) - math.log(n),
            ess=reverse_ess(terminal).value,
        )
        return NETSState(params, opt_state, state.epsilon, state.cost + cost), info

    return Method(init=init, step=step, sample=sample, backward=backward)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_COST = (
    "per path of K steps: K+1 energy and gradient evals of log γ̃, K SDE steps, K+1 drift evals "
    "(×dim with the exact divergence of the Jarzynski weights; no divergence with 'crooks'); "
    "no backprop through the SDE"
)

samplers.register(
    MethodSpec(
        name="nets_pinn",
        family="thermodynamic",
        config_cls=NETSConfig,
        build=build_nets_pinn,
        bases=("brownian", "vp"),
        cost_model=_COST
        + "; loss: time_subsample points per path, each dim (exact) or 1 drift evals + 1 F̂ eval",
        description=(
            "NETS [RECON from arXiv 2410.02711, no code]: annealed Langevin dX = (-ε∇U_t + b̂)dt + sqrt(2ε)dW "
            "along U_t = (1-t)U_0 - t log γ̃ with Jarzynski weights dA = (∇·b̂ - ∇U·b̂ - ∂_tU)dt; b̂ and F̂(t) "
            "trained by the PINN loss E|∂_tF̂ + ∇·b̂ - ∇U·b̂ - ∂_tU|² on detached samples. The base process "
            "supplies only the grid."
        ),
    )
)
samplers.register(
    MethodSpec(
        name="nets_action",
        family="thermodynamic",
        config_cls=NETSConfig,
        build=build_nets_action,
        bases=("brownian", "vp"),
        cost_model=_COST + "; loss: time_subsample times × batch potential evals",
        description=(
            "NETS [RECON from arXiv 2410.02711, no code] with a gradient-field drift b̂ = ∇φ̂ trained by "
            "action matching ∫ E_ρt[½|∇φ̂|²] + Cov_ρt(φ̂, ∂_tU) dt, ρ_t-expectations by self-normalised "
            "running Jarzynski weights of detached trajectories."
        ),
    )
)
