"""NETS simulation: the annealing path, the Langevin SDE with a learned drift and its path weights.

The sampler half of NETS (`samplers.methods.nets` trains it). Albergo & Vanden-Eijnden, "NETS: A
Non-Equilibrium Transport Sampler", arXiv 2410.02711 (ICML 2025);
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

**Paths** (`PATHS`, by base kind): everything above is written for the linear path of potentials
(`Annealing`, Brownian and VP bases). On the flow base of fine-tuning the path is the tilted
`ρ̃_t = p_t e^{λ_t r}` of `samplers.methods.tilted_path.TiltedFlowPath` (methods.md §1.4): the SDE gains the
pretrained velocity, `dX = (v + ε_t∇log ρ_t + b̂) dt + sqrt(2ε_t) dW` with `ε_t = ε·schedule(t)·½σ(t)²`, the
integrand becomes `∇·b̂ + ∇log ρ_t·b̂ + D_t` (`transport_integrand`; `D_t = -∂_tU_t` above, `λ̇r + λ∇r·v`
there), and the Crooks form takes `-U_{t'}(x') + U_t(x)` from `path.log_density_step` (exact above; a
quadrature of `log p` from the velocity there, so O(h)) with `B_k` from `path.backward_kernel`.

`method.backward` exists only for `weights="crooks"`: the left-point `A` is not a ratio of path
densities of any discrete backward chain, so no exact backward identity holds for it, and mixing it
with Crooks weights in BAR would compare two different path functionals.

**ε is re-tunable after training**: the drift's optimum does not depend on ε (any ε transports ρ_t
when `b̂` is perfect; ε only damps `b̂`'s errors, at the price of a larger EM error). The state holds
`epsilon`; `with_epsilon(state, ε)` returns a state that samples (and trains) with another ε, without
recompiling, and `tune_epsilon` picks the ε with the largest reverse ESS among candidates.
`ε_t = ε · EPSILON_SCHEDULES[epsilon_schedule](t)`.

Cost accounting (per path of `K` steps): `K + 1` evaluations of `log γ̃` and of `∇log γ̃` (one
`value_and_grad` per visited point, needed by both the drift and `∂_tU`), `K` SDE steps, and `K + 1`
drift-network evaluations (each with an exact divergence, Jarzynski forms only, counts `dim`
evaluations: one Jacobian-vector product per coordinate). Loss points count `dim` (exact) or 1
(Hutchinson) drift evaluations plus one free-energy evaluation (PINN), or one potential evaluation
(AM). Backward passes are not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplers.baselines.common import working_density
from samplers.method import Cost
from samplers.methods.tilted_path import TiltedFlowPath, tilted_flow_path
from samplers.parallel import shard_batch
from samplers.problem import Problem
from targets.registry import Registry

__all__ = [
    "DIVERGENCES",
    "EPSILON_SCHEDULES",
    "WEIGHT_FORMS",
    "Annealing",
    "Drift",
    "NETSPath",
    "PATHS",
    "Path",
    "annealing_for",
    "path_for",
    "drift_and_divergence",
    "simulate_nets",
    "simulate_nets_backward",
    "transport_integrand",
]

Drift = Callable[[jax.Array, jax.Array], jax.Array]

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

    # -- the path protocol (`PATHS`) --------------------------------------------------------
    @property
    def t_start(self) -> float:
        """The path starts at `t = 0` (`ρ_0 = N(0, s0² I)`)."""
        return 0.0

    def point(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The per-point data of ONE point: `(U_1(x), ∇U_1(x))`."""
        return self.u1_and_grad(x)

    def noise_profile(self, t: jax.Array) -> jax.Array:
        """`ε_t = ε · schedule(t) · noise_profile(t)`: 1 (the Langevin rate is the config's)."""
        return jnp.ones_like(t)

    def drift(self, x: jax.Array, t: jax.Array, point, eps: jax.Array) -> jax.Array:
        """The dynamics' drift without `b̂`: `-ε∇U_t(x)` (with the optional clip of `∇U_1`)."""
        return -eps * self.langevin_grad(x, t, point[1])

    def backward_kernel(self, x_next, t, t_next, point_next, eps, var):
        """`B_k(· | x_{k+1}) = N(anchor + h(drift - b̂(x_{k+1}, t_{k+1})), var_B)` without `b̂`, batched:
        `(anchor, drift, var_B) = (x_{k+1}, -ε∇U_t(x_{k+1}), var)` (Nelson's reversal flips only `b̂`;
        the Langevin part is at the level `t = t_k` of the forward kernel)."""
        langevin = jax.vmap(self.langevin_grad, in_axes=(0, None, 0))(x_next, t, point_next[1])
        return x_next, -eps * langevin, var

    def score(self, x: jax.Array, t: jax.Array, point) -> jax.Array:
        """`∇log ρ_t(x) = -∇U_t(x)` (unclipped: the weights' identity needs the true score)."""
        return -((1.0 - t) * self.grad_u0(x) + t * point[1])

    def rate(self, x: jax.Array, t: jax.Array, point) -> jax.Array:
        """`D_t(x) = ∂_t log ρ̃_t(x) = -∂_tU_t = -(U_1 - U_0)`."""
        return -(point[0] - self.u0(x))

    def log_density_step(self, x, x_next, t, t_next, point, point_next) -> jax.Array:
        """`log ρ̃_{t'}(x') - log ρ̃_t(x) = U_t(x) - U_{t'}(x')` (exact), batched over `(n, dim)` points."""
        u0_batch = jax.vmap(self.u0)
        return (
            (1.0 - t) * u0_batch(x)
            + t * point[0]
            - ((1.0 - t_next) * u0_batch(x_next) + t_next * point_next[0])
        )


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


Path = Annealing | TiltedFlowPath
"""What `simulate_nets` and the NETS losses anneal along: the protocol of `Annealing` and
`samplers.methods.tilted_path.TiltedFlowPath` (`t_start`, `sample_initial`, `point`, `noise_profile`,
`drift`, `backward_kernel`, `score`, `rate`, `log_density_step`)."""

PATHS: Registry[Path] = Registry("NETS path")
"""The path of each base kind: the linear path of potentials from `N(0, s0² I)` to `γ̃` on the Brownian
and VP bases (the base supplies only the grid and `γ̃`), the tilted path `p_t e^{λ_t r}` on the flow base."""
PATHS.register("brownian", annealing_for)
PATHS.register("vp", annealing_for)
PATHS.register("flow", lambda problem, s0, max_grad_norm_target=None: tilted_flow_path(problem))


def path_for(problem: Problem, s0: float, max_grad_norm_target: float | None = None) -> Path:
    """The NETS path of a problem's base kind (`PATHS`; a ValueError naming the valid kinds otherwise).

    `s0` and `max_grad_norm_target` apply to the `Annealing` only (the tilted flow path starts at the
    base's own `p_{t_0}` and has no target gradient to clip)."""
    kind = problem.base.kind
    if kind not in PATHS.names():
        raise ValueError(f"NETS has no path for the {kind!r} base; valid bases: {PATHS.names()}")
    return PATHS.get(kind, problem=problem, s0=s0, max_grad_norm_target=max_grad_norm_target)


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


# ---------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------


class NETSPath(NamedTuple):
    """Output of `simulate_nets` / `simulate_nets_backward`.

    Attributes:
        x: end points `x_K`, `(n, dim)` (ambient space; not projected).
        log_w: terminal log-weights `(n,)` (`A_K` or the Crooks weight; zeros for `weights="none"`).
        trajectory: `(K+1, n, dim)` or None.
        point: the path's per-point data along the trajectory (`path.point`, each leaf `(K+1, n, ...)`:
            `(U_1, ∇U_1)` of an `Annealing`, `(r, ∇r)` of a `TiltedFlowPath`), or None.
        running_log_w: `(K+1, n)` running log-weights `L_k` (`E[e^{L_k} φ(x_k)] ≈ Z_{t_k} E_{ρ_{t_k}}φ`),
            or None.
        cost: evaluation counters of this call.
    """

    x: jax.Array
    log_w: jax.Array
    trajectory: jax.Array | None
    point: Any
    running_log_w: jax.Array | None
    cost: Cost


def _check_weights(weights: str) -> None:
    if weights not in _SIM_WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid choices: {list(_SIM_WEIGHTS)}")


def _gaussian_residual_log_ratio(x, mean_b, noise, var, var_b):
    """`log B - log F` for isotropic Gaussian kernels `F = N(·, var)` (realised noise `ε`) and
    `B = N(mean_b, var_b)`: `-½|x - mean_b|²/var_b + ½|ε|² - (d/2) log(var_b/var)` (the last term is 0
    for equal variances)."""
    log_det = 0.5 * x.shape[-1] * jnp.log(var_b / var)
    return -0.5 * jnp.sum((x - mean_b) ** 2, -1) / var_b + 0.5 * jnp.sum(noise * noise, -1) - log_det


def transport_integrand(path, x: jax.Array, t: jax.Array, point, b: jax.Array, div: jax.Array) -> jax.Array:
    """The NETS weight rate of ONE point, `dA/dt = ∇·b̂ + ∇log ρ_t·b̂ + D_t` (module docstring; `D_t =
    -∂_tU_t` on an `Annealing`, `λ̇r + λ∇r·v` on the tilted flow path). A perfect transport makes it
    `-∂_tF_t` at every `x`."""
    return div + jnp.dot(path.score(x, t, point), b) + path.rate(x, t, point)


def _path_cost(num_samples: int, num_steps: int, per_drift: int) -> Cost:
    return Cost.of(
        energy_evals=num_samples * (num_steps + 1),
        grad_evals=num_samples * (num_steps + 1),
        network_evals=num_samples * (num_steps + 1) * per_drift,
        sde_steps=num_samples * num_steps,
    )


def simulate_nets(
    key: jax.Array,
    path: Path,
    drift: Drift,
    ts: jax.Array,
    epsilons: jax.Array,
    num_samples: int,
    *,
    weights: str = "jarzynski",
    divergence: str = "exact",
    save_path: bool = False,
) -> NETSPath:
    """Simulate `num_samples` NETS paths `dX = (path.drift + b̂) dt + sqrt(2ε) dW` from `ρ_{t_0}` by
    Euler–Maruyama (`path.drift = -ε∇U_t` on an `Annealing`, `v + ε∇log ρ_t` on the tilted flow path).

    Args:
        key: PRNG key (initial draw, noise, Hutchinson probes).
        path: the path (`PATHS`): an `Annealing` or a `TiltedFlowPath`.
        drift: `b̂(x, t)` of ONE point (close over parameters; stop their gradient for detached paths).
        ts: grid `(K+1,)` from `path.t_start` to 1.
        epsilons: `ε_{t_k}`, `(K,)`, non-negative.
        num_samples: number of paths `n`.
        weights: one of `WEIGHT_FORMS`, or `"none"` (no weights, no divergence).
        divergence: `"exact"` or `"hutchinson"` (Jarzynski forms only).
        save_path: return the trajectory, the per-point data (`path.point`) and the running log-weights
            at every grid point.

    Returns:
        `NETSPath` (cost in the module docstring's accounting).
    """
    _check_weights(weights)
    ts = jnp.asarray(ts, jnp.float32)
    h = jnp.diff(ts)
    num_steps = h.shape[0]
    dim = path.dim
    jarzynski = weights in ("jarzynski", "jarzynski_trapezoid")
    key_init, key_noise, key_div = jax.random.split(key, 3)
    dynamics = jax.vmap(path.drift, in_axes=(0, None, 0, None))
    zeros = jnp.zeros((num_samples,), jnp.float32)

    def evaluate(k, x, t):
        """The per-point data, `b̂` and the NETS integrand (Jarzynski forms) at `(x, t)`."""
        point = jax.vmap(path.point)(x)
        if not jarzynski:
            return point, jax.vmap(drift, in_axes=(0, None))(x, t), zeros
        probes = jax.random.split(jax.random.fold_in(key_div, k), num_samples)
        b, div = jax.vmap(lambda x_, p_: drift_and_divergence(drift, x_, t, p_, divergence))(x, probes)
        integrand = jax.vmap(transport_integrand, in_axes=(None, 0, None, 0, 0, 0))(path, x, t, point, b, div)
        return point, b, integrand

    def body(carry, k):
        x, point, b, integrand, log_w = carry
        t, t_next, h_k, eps = ts[k], ts[k + 1], h[k], epsilons[k]
        noise = shard_batch(jax.random.normal(jax.random.fold_in(key_noise, k), x.shape, x.dtype))
        var = 2.0 * eps * h_k
        x_next = x + h_k * (b + dynamics(x, t, point, eps)) + jnp.sqrt(var) * noise
        point_next, b_next, integrand_next = evaluate(k + 1, x_next, t_next)
        if weights == "jarzynski":
            log_w = log_w + h_k * integrand
        elif weights == "jarzynski_trapezoid":
            log_w = log_w + 0.5 * h_k * (integrand + integrand_next)
        elif weights == "crooks":
            anchor, langevin, var_back = path.backward_kernel(x_next, t, t_next, point_next, eps, var)
            mean_back = anchor + h_k * (langevin - b_next)
            log_w = (
                log_w
                + path.log_density_step(x, x_next, t, t_next, point, point_next)
                + _gaussian_residual_log_ratio(x, mean_back, noise, var, var_back)
            )
        saved = (x_next, point_next, log_w) if save_path else None
        return (x_next, point_next, b_next, integrand_next, log_w), saved

    x0 = shard_batch(path.sample_initial(key_init, num_samples))  # batch over the devices
    init = (x0, *evaluate(0, x0, ts[0]), zeros)
    (x_end, *_, log_w), saved = jax.lax.scan(body, init, jnp.arange(num_steps))
    trajectory = points = running = None
    if save_path:
        xs, point_rest, lws = saved
        trajectory = jnp.concatenate([x0[None], xs])
        points = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), init[1], point_rest)
        running = jnp.concatenate([zeros[None], lws])
    per_drift = dim if (jarzynski and divergence == "exact") else 1
    cost = _path_cost(num_samples, num_steps, per_drift)
    return NETSPath(x_end, log_w, trajectory, points, running, cost)


def simulate_nets_backward(
    key: jax.Array,
    path: Path,
    drift: Drift,
    ts: jax.Array,
    epsilons: jax.Array,
    x_end: jax.Array,
) -> NETSPath:
    """Backward paths of the `"crooks"` weights: `x_K = x_end`, `x_k ~ B_k(·|x_{k+1})` (module docstring).

    Returns the Crooks log-weights `log w = log γ̃(x_K) - log ρ_0(x_0) + Σ_k (log B_k - log F_k)` of
    these paths (on the tilted flow path, with the base-relative `path.log_density_step`); with
    `x_end ~ γ̃/Z`, `E_B[e^{-log w}] = 1/Z` and `E_B[log w] = EUBO ≥ log Z`.

    Args: as `simulate_nets`, with `x_end (n, dim)` samples of `γ̃/Z` (ambient space) instead of a count.
    """
    ts = jnp.asarray(ts, jnp.float32)
    h = jnp.diff(ts)
    num_steps = h.shape[0]
    num_samples = x_end.shape[0]
    drift_batch = jax.vmap(drift, in_axes=(0, None))
    dynamics = jax.vmap(path.drift, in_axes=(0, None, 0, None))
    point_end = jax.vmap(path.point)(x_end)
    b_end = drift_batch(x_end, ts[-1])
    keys = jax.random.split(key, num_steps)

    def body(carry, k):
        x_next, point_next, b_next, log_w = carry
        t, t_next, h_k, eps = ts[k], ts[k + 1], h[k], epsilons[k]
        var = 2.0 * eps * h_k
        anchor, langevin, var_back = path.backward_kernel(x_next, t, t_next, point_next, eps, var)
        mean_back = anchor + h_k * (langevin - b_next)
        draw = shard_batch(jax.random.normal(keys[k], x_next.shape, x_next.dtype))
        x = mean_back + jnp.sqrt(var_back) * draw
        point = jax.vmap(path.point)(x)
        b = drift_batch(x, t)
        noise = (x_next - x - h_k * (b + dynamics(x, t, point, eps))) / jnp.sqrt(var)
        log_w = (
            log_w
            + path.log_density_step(x, x_next, t, t_next, point, point_next)
            + _gaussian_residual_log_ratio(x, mean_back, noise, var, var_back)
        )
        return (x, point, b, log_w), None

    init = (x_end, point_end, b_end, jnp.zeros((num_samples,), jnp.float32))
    (*_, log_w), _ = jax.lax.scan(body, init, jnp.arange(num_steps - 1, -1, -1))
    return NETSPath(x_end, log_w, None, None, None, _path_cost(num_samples, num_steps, 1))
