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

On the memoryless flow base of reward fine-tuning (`σ(t)² = 2(1 - t)/t`, bridge `N(t X_1, (1 - t)² I)`,
targets `bridge_targets.FLOW_REGRESSION_TARGETS`, docs/methods.md §1.5) the same analysis gives: TSM
`Var ~ σ²/t² ~ t^{-3}` as `t → 0`; CSM `~ 1/(1 - t)` as `t → 1`; AS / NSM (the `α_t`-mixture)
`~ σ(t)² ~ 2/t` as `t → 0` (log-divergent in these units, cut at `log(1/t_0)` by the flow's start); AM
`σ ã` with a lean adjoint `ã_t = O(t)` (`dã/dt = (I/t - 2∇v^T)ã`), bounded.

Setups (`CLAIM_BASES`, by base kind): `"brownian"` — a Gaussian or Gaussian-mixture target, a linear
Brownian base, `symmetric_grid`, `u* = mixture_optimal_control` (exact); `"flow"` — a fine-tuning task
(`targets.finetuning`) on its exact pretrained flow from `t_0 = TIME_EPS` (`samplers.problem.task_problem`),
`two_sided_log_grid`, `u* = σ(t)(∇log p*_t - ∇log p_t)` (the exact tilted Gaussian-mixture flow);
`"perturbed_base"` — any problem without a closed-form optimum (the digits model with a classifier
reward): `u* := 0` (the base), end points from a pool simulated under the perturbed control.

Fixed parameters: the closed-form optimal control `u*` plus a small fixed perturbation `ε · MLP_θ(x, t)`
with `θ` a fixed random initialisation (so `E G ≠ 0`); `θ` is what is differentiated. End points are EXACT
samples of `p*` for every loss (at the optimum the model's buffer samples `p*`, so this is the law the
buffers converge to); AM, which regresses along on-policy trajectories, simulates its own paths under
the perturbed control.

Verdict (`end_verdict`): the variance over `t ~ U[0, 1]` is finite iff `∫ tr Cov(G | t) dt` converges at
both ends, i.e. iff the fixed-time profile `∝ |t - end|^p` has `p > -1` there; decided as
`p - 2·SE(p) > -1` from a weighted fit (`fit_exponent`).

Statistics: with `M` minibatch gradients `G_m` (flattened), `Ḡ` their mean,
`tr Ĉ = Σ_m |G_m - Ḡ|²/(M - 1)` and `|E G|²` estimated without bias by `|Ḡ|² - tr Ĉ/M`. Standard errors
come from a nonparametric bootstrap over the `M` gradients. Under an infinite-variance law the sample
variance and its bootstrap SE are themselves unreliable (they grow with `M`): read the TSM/CSM rows near
their singular end as "large and unstable", which is the claim.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers import sde
from samplers.base_processes import BrownianBase, LinearSchedule
from samplers.methods import bridge_regression as br
from samplers.networks import mlp_control
from samplers.problem import Problem, sampling_problem, task_problem
from samplers.types import PyTree
from targets.base import Target
from targets.registry import Registry

__all__ = [
    "CLAIM_BASES",
    "FINITE_VARIANCE_LOSSES",
    "LOSSES",
    "WINDOW_KINDS",
    "ClaimSetup",
    "EndVerdict",
    "GradVarianceConfig",
    "GradVarianceEstimate",
    "end_verdict",
    "fit_exponent",
    "gradient_statistics",
    "growth_factor",
    "make_setup",
    "measure",
    "minibatch_gradients",
    "mixture_optimal_control",
    "symmetric_grid",
    "time_window",
    "two_sided_log_grid",
]


LOSSES: dict[str, str] = {
    "adjoint_sampling": "adjoint",
    "novel_score_matching": "nsm",
    "target_score_matching": "tsm",
    "conditional_score_matching": "csm",
    "adjoint_matching": "am",
}
"""Loss name -> regression target kind (`bridge_regression.REGRESSION_TARGETS`, or "am")."""

WINDOW_KINDS: dict[str, str] = {
    "start": "t ~ U[0, δ] (near the source end, where TSM's α_t^{-1} blows up)",
    "end": "t ~ U[1 - δ, 1] (near the data end, where CSM's 1/β_t² blows up)",
    "at_start": "t = δ fixed (the per-time profile near 0)",
    "at_end": "t = 1 - δ fixed (the per-time profile near 1)",
}


def time_window(kind: str, delta: float) -> tuple[float, float]:
    """`(t_lo, t_hi)` of a window of `WINDOW_KINDS` with width / distance `δ` from its end point."""
    windows = {
        "start": (0.0, delta),
        "end": (1.0 - delta, 1.0),
        "at_start": (delta, delta),
        "at_end": (1.0 - delta, 1.0 - delta),
    }
    if kind not in windows:
        raise ValueError(f"unknown window kind {kind!r}; valid choices: {sorted(windows)}")
    return windows[kind]


def symmetric_grid(num_steps: int) -> np.ndarray:
    """`t_k = ½(1 - cos(πk/K))`: a grid refined at BOTH ends (steps `~ π²/(4K²)` there), so that AM's
    on-grid control times reach into windows as small as `δ = 10^-4` at `K = 200` (`t_1 ≈ 6·10^-5`)."""
    return 0.5 * (1.0 - np.cos(np.pi * np.arange(num_steps + 1) / num_steps))


def two_sided_log_grid(num_steps: int, t0: float, end_gap: float = br.TIME_EPS) -> np.ndarray:
    """A grid from `t0` to 1, geometric in `t` from `t0` to ½ (`⌊K/2⌋` steps) and geometric in `1 - t` from
    ½ down to `end_gap`, then one step to 1: the flow base's drift `-x/t` needs `h_k/t_k` small near `t0`
    (at `K = 200`, `t0 = 10^-5`: `h/t ≈ 0.11`), and AM's control times must reach into windows as small as
    `δ = 10^-4` at both ends."""
    if not 0.0 < t0 < 0.5 or not 0.0 < end_gap < 0.5 or num_steps < 3:
        raise ValueError(f"need 0 < t0, end_gap < 1/2 and num_steps >= 3, got {t0}, {end_gap}, {num_steps}")
    first = num_steps // 2
    head = np.geomspace(t0, 0.5, first + 1)
    tail = 1.0 - np.geomspace(0.5, end_gap, num_steps - first)[1:]
    return np.concatenate([head, tail, [1.0]])


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
        solve = lambda d, m: jnp.linalg.solve(nu_1 * eye + alpha * d, d @ x + nu_1 * m) / nu_1  # noqa: E731
        g = jax.vmap(solve)(d_mats, means)
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


# ---------------------------------------------------------------------------------------------
# setup: problem, fixed parameters, exact end points
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GradVarianceConfig:
    """What to measure, and how precisely.

    Attributes:
        losses: loss names (keys of `LOSSES`); "adjoint_matching" is skipped when its module is absent.
        batch_sizes: minibatch sizes of the batch-size sweep (full time range `[0, 1]`).
        deltas: window widths / distances `δ` of the time-window sweep.
        window_kinds: which of `WINDOW_KINDS` to measure.
        window_batch_size: minibatch size of the time-window sweep.
        num_minibatches: independent minibatches `M` per estimate.
        num_bootstrap: bootstrap resamples for the standard errors.
        num_steps: EM steps `K` of the symmetric grid (AM's trajectories).
        hidden: widths of the perturbation MLP.
        perturbation_scale: `ε` in `u = u* + ε·MLP_θ`.
        seed: root seed (perturbation init, minibatches, bootstrap).
    """

    losses: tuple[str, ...] = tuple(LOSSES)
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    deltas: tuple[float, ...] = (0.1, 0.01, 1e-3, 1e-4)
    window_kinds: tuple[str, ...] = tuple(WINDOW_KINDS)
    window_batch_size: int = 64
    num_minibatches: int = 128
    num_bootstrap: int = 100
    num_steps: int = 200
    hidden: tuple[int, ...] = (32, 32)
    perturbation_scale: float = 0.3
    seed: int = 0

    def __post_init__(self):
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown losses {unknown}; valid choices: {sorted(LOSSES)}")
        unknown = sorted(set(self.window_kinds) - set(WINDOW_KINDS))
        if unknown:
            raise ValueError(f"unknown window kinds {unknown}; valid choices: {sorted(WINDOW_KINDS)}")
        if self.num_minibatches < 2 or any(b < 1 for b in self.batch_sizes) or self.window_batch_size < 1:
            raise ValueError("need num_minibatches >= 2 and positive batch sizes")
        if not all(0.0 < d <= 1.0 for d in self.deltas):
            raise ValueError(f"deltas must lie in (0, 1], got {self.deltas}")


class ClaimSetup(NamedTuple):
    """A problem, the fixed parameters at which gradients are measured, and the law of the end points.

    Attributes:
        name: target (or problem) name.
        problem: the problem (its base, a grid refined at both ends).
        target: the target whose exact samples are the end points (the sampled law, or the tilted law of
            a fine-tuning task); None when the end points come from a simulated pool.
        control: `control(θ, x, t) = u*(x, t) + ε·MLP_θ(x, t)` (`u* = 0`, the base, when unknown).
        params: the fixed `θ`.
        endpoints: `(key, n) -> (n, dim)` draws of the bridge losses' end points `X_1`.
    """

    name: str
    problem: Problem
    target: Target | None
    control: Callable
    params: PyTree
    endpoints: Callable


def _perturbed(
    key: jax.Array, problem: Problem, optimal: Callable, config, *, target: Target | None = None
) -> ClaimSetup:
    """`u = u* + ε·MLP_θ` with `θ` a fixed random initialisation drawn from `key`; end points are exact
    samples of `target`."""
    net = mlp_control(problem.dim, hidden=config.hidden, zero_init_output=False)
    scale = float(config.perturbation_scale)

    def control(params, x, t):
        return optimal(None, x, t) + scale * net.apply(params, x, t)

    endpoints = None if target is None else target.sample
    name = problem.name if target is None else target.name
    return ClaimSetup(name, problem, target, control, net.init(key), endpoints)


def _brownian_setup(
    key: jax.Array, target: Target, config: GradVarianceConfig, *, sigma: float
) -> ClaimSetup:
    """A Gaussian or Gaussian-mixture target (`target.mixture` or `target.ground_truth` mean/covariance)
    sampled with a linear Brownian base of scale `sigma` on `symmetric_grid`; `u*` is
    `mixture_optimal_control`."""
    base = BrownianBase(dim=target.dim, schedule=LinearSchedule(float(sigma)))
    problem = sampling_problem(target, base, ts=symmetric_grid(config.num_steps))
    if target.mixture is not None:
        mix = target.mixture
        covariances = jnp.einsum("kij,klj->kil", mix.scale_trils, mix.scale_trils)
        optimal = mixture_optimal_control(mix.log_weights, mix.means, covariances, base)
    elif "mean" in target.ground_truth and "covariance" in target.ground_truth:
        mean, covariance = (np.asarray(target.ground_truth[k])[None] for k in ("mean", "covariance"))
        optimal = mixture_optimal_control(jnp.zeros(1), mean, covariance, base)
    else:
        raise ValueError(f"target {target.name!r} is neither a Gaussian nor a Gaussian mixture")
    return _perturbed(key, problem, optimal, config, target=target)


def _flow_setup(
    key: jax.Array, target: Target, config: GradVarianceConfig, *, t0: float = br.TIME_EPS
) -> ClaimSetup:
    """A fine-tuning task (`target.finetune_task`) on its exact pretrained flow, memoryless from `t0`
    (`task_problem`: what the harness builds, with the data law's score from the velocity) on
    `two_sided_log_grid`; `u*(x, t) = σ(t)(∇log p*_t - ∇log p_t)(x)` is the task's closed-form guidance
    (the exact tilted Gaussian-mixture flow). `t0` defaults to `TIME_EPS`, the clamp of the regression
    times, so that the window `[0, δ]` means `[TIME_EPS, δ]` on both bases."""
    task = target.finetune_task
    if task is None:
        raise ValueError(f"target {target.name!r} is not a fine-tuning task; the flow base needs one")
    problem = task_problem(task, t0, ts=two_sided_log_grid(config.num_steps, t0), target=target)
    sigma = problem.base.sigma

    def optimal(params, x, t):
        del params
        return sigma(t) * task.optimal_guidance(x, t)

    return _perturbed(key, problem, optimal, config, target=target)


def _perturbed_base_setup(
    key: jax.Array,
    target: Target | None,
    config: GradVarianceConfig,
    *,
    problem: Problem,
    pool_size: int = 4096,
) -> ClaimSetup:
    """A problem without a closed-form optimum (e.g. a learned flow and a classifier reward): measured at
    the BASE plus the fixed perturbation, `u = ε·MLP_θ` (`u* := 0`), with end points drawn uniformly from a
    pool of `pool_size` end points simulated under that control, the law a replay buffer holds at these
    parameters (not `p*`: the conditional mean of each target is then not `u`, but its variance near the
    end points is what the claim is about). `target` is ignored (pass None)."""
    del target
    key_net, key_pool = jax.random.split(key)
    setup = _perturbed(key_net, problem, lambda params, x, t: jnp.zeros_like(x), config)
    simulate = jax.jit(lambda k, p: sde.simulate(k, problem, setup.control, p, pool_size).x)
    pool = problem.base.project(simulate(key_pool, setup.params))
    if not bool(jnp.all(jnp.isfinite(pool))):
        raise ValueError(f"{problem.name}: the simulated end-point pool is not finite")

    def endpoints(key, n):
        return pool[jax.random.randint(key, (n,), 0, pool_size)]

    return setup._replace(endpoints=endpoints)


CLAIM_BASES: Registry[ClaimSetup] = Registry("claim base")
CLAIM_BASES.register("brownian", _brownian_setup, settings="sigma: the linear schedule's scale")
CLAIM_BASES.register("flow", _flow_setup, settings="t0: the memoryless flow's start time (default TIME_EPS)")
CLAIM_BASES.register(
    "perturbed_base", _perturbed_base_setup, settings="problem: any Problem; pool_size: simulated end points"
)


def make_setup(
    key: jax.Array, target: Target | None, config: GradVarianceConfig, base: str = "brownian", **settings: Any
) -> ClaimSetup:
    """Problem and fixed parameters of `target` on the base kind `base` (`CLAIM_BASES`: `"brownian"` with
    `sigma=`, `"flow"` for a fine-tuning task with optional `t0=`, `"perturbed_base"` with `problem=` for a
    problem without a closed-form optimum, `target` None)."""
    return CLAIM_BASES.get(base, key=key, target=target, config=config, **settings)


# ---------------------------------------------------------------------------------------------
# minibatch gradients
# ---------------------------------------------------------------------------------------------


def _flat(tree: PyTree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _am_time_weights(ts: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Probabilities over control times `t_k` (k < K): `∝ h_k` inside the window (uniform in t), or the
    grid time nearest to the window when none lies inside (fixed-time windows)."""
    t_left, h = ts[:-1], np.diff(ts)
    lo, hi = window
    inside = (t_left >= lo - 1e-12) & (t_left <= hi + 1e-12) & (hi > lo)
    if inside.any():
        weights = np.where(inside, h, 0.0)
    else:
        weights = np.zeros_like(h)
        weights[np.argmin(np.abs(t_left - 0.5 * (lo + hi)))] = 1.0
    return weights / weights.sum()


def _group_means(per_example: jax.Array, group: int) -> jax.Array:
    """`(C, P) -> (C/group, P)`: means of consecutive groups (keeps host transfers small)."""
    return per_example.reshape(-1, group, per_example.shape[-1]).mean(axis=1)


def _bridge_chunk_fn(setup: ClaimSetup, kind: str, chunk_size: int, group: int) -> Callable:
    """`(key, index, window) -> (chunk_size/group, P)` group means of per-example gradients of a bridge loss
    (jitted once)."""
    problem = setup.problem
    bridge = br.bridge_schedule(problem)
    gradient_data = br.endpoint_gradients(problem, kind)

    def one(key, lo, hi):
        key_x, key_loss = jax.random.split(key)
        x_1 = problem.base.project(setup.endpoints(key_x, 1))
        g = jax.grad(br.regression_loss, argnums=1)(
            setup.control,
            setup.params,
            key_loss,
            x_1,
            jax.vmap(gradient_data)(x_1),
            kind=kind,
            bridge=bridge,
            time_window=(lo, hi),
            weighting="paper",
            project=problem.base.project,
        )
        return _flat(g)

    @jax.jit
    def chunk(key, index, lo, hi):
        keys = jax.random.split(jax.random.fold_in(key, index), chunk_size)
        return _group_means(jax.vmap(one, in_axes=(0, None, None))(keys, lo, hi), group)

    return lambda key, index, window: chunk(key, index, jnp.float32(window[0]), jnp.float32(window[1]))


def _am_chunk_fn(key: jax.Array, setup: ClaimSetup, chunk_size: int, group: int, pool_size: int) -> Callable:
    """AM per-trajectory gradients from one pool of on-policy trajectories with lean adjoints.

    Each trajectory contributes `∇_θ |u_θ(x_k, t_k) + σ(t_k) ã_k|²` at ONE control time `t_k` drawn in the
    window (probabilities `_am_time_weights`): the AM loss with one sub-sampled time and uniform
    weighting, under `sg[u]` (the perturbed control simulates its own paths).
    """
    from samplers.methods.adjoint_matching import simulate_with_adjoint  # another engineer's module

    problem = setup.problem
    path, adjoints = jax.jit(lambda k, p: simulate_with_adjoint(k, problem, setup.control, p, pool_size))(
        key, setup.params
    )
    traj, adj = path.trajectory[:-1], adjoints[:-1]  # control times t_0 … t_{K-1}: (K, pool, dim)
    ts = problem.times[:-1]
    sigmas = problem.base.sigma(ts)  # σ(t_k), as in the AM loss

    def one(key, x_path, a_path, probabilities):
        k = jax.random.choice(key, ts.shape[0], p=probabilities)
        x, a, t = x_path[k], a_path[k], ts[k]

        def loss(params):
            u = problem.base.project(setup.control(params, x, t))
            return jnp.sum((u + sigmas[k] * a) ** 2)

        return _flat(jax.grad(loss)(setup.params))

    @jax.jit
    def chunk(key, index, probabilities):
        start = index * chunk_size
        x_paths = jax.lax.dynamic_slice_in_dim(traj, start, chunk_size, axis=1).swapaxes(0, 1)
        a_paths = jax.lax.dynamic_slice_in_dim(adj, start, chunk_size, axis=1).swapaxes(0, 1)
        keys = jax.random.split(jax.random.fold_in(key, index), chunk_size)
        per_example = jax.vmap(one, in_axes=(0, 0, 0, None))(keys, x_paths, a_paths, probabilities)
        return _group_means(per_example, group)

    ts_np = np.asarray(problem.ts)

    def run(key, index, window):
        return chunk(key, index, jnp.asarray(_am_time_weights(ts_np, window), jnp.float32))

    return run


def minibatch_gradients(
    key: jax.Array,
    setup: ClaimSetup,
    loss: str,
    requests,
    num_minibatches: int,
    *,
    chunk_size: int | None = None,
) -> list[np.ndarray]:
    """`M` independent minibatch gradients `(M, P)` (float64) of `loss` at `setup.params`, per request.

    A minibatch loss is a mean over i.i.d. examples, so its gradient is the mean of per-example gradients:
    per-example gradients are computed in jitted chunks (one compilation per loss) and averaged in
    groups of `batch_size`; examples are never shared between minibatches of one request.

    - Bridge losses: one example = one end point `X_1` (`setup.endpoints`), its gradient data,
      `t ~ U[window]` and a bridge point (`bridge_regression.regression_loss`, P1 weighting).
    - AM: one example = one on-policy trajectory under the perturbed control with its lean adjoint
      (`adjoint_matching.simulate_with_adjoint`) and one control time drawn uniformly in `t` within the
      window; the trajectory pool is shared across requests (and across minibatches of different
      requests), never within one request.

    Args:
        key: PRNG key.
        setup: `ClaimSetup`.
        loss: one of `LOSSES`.
        requests: sequence of `((t_lo, t_hi), batch_size)`.
        num_minibatches: `M`.
        chunk_size: examples per compiled chunk (default: the largest batch size).

    Returns:
        One `(M, P)` array per request.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid choices: {sorted(LOSSES)}")
    requests = [((float(lo), float(hi)), int(b)) for (lo, hi), b in requests]
    group = math.gcd(*(b for _, b in requests))  # per-example gradients leave the device as group means
    chunk_size = chunk_size or max(b for _, b in requests)
    if chunk_size % group:
        raise ValueError(f"chunk_size {chunk_size} must be a multiple of the batch sizes' gcd {group}")
    needed = [-(-num_minibatches * b // chunk_size) for _, b in requests]  # chunks per request
    key_pool, key_examples = jax.random.split(key)
    if LOSSES[loss] == "am":
        chunk = _am_chunk_fn(key_pool, setup, chunk_size, group, max(needed) * chunk_size)
    else:
        chunk = _bridge_chunk_fn(setup, LOSSES[loss], chunk_size, group)
    out = []
    for r, ((window, batch_size), num_chunks) in enumerate(zip(requests, needed, strict=True)):
        key_request = jax.random.fold_in(key_examples, r)
        groups = np.concatenate(
            [np.asarray(chunk(key_request, i, window), np.float64) for i in range(num_chunks)], axis=0
        )
        per_minibatch = batch_size // group
        groups = groups[: num_minibatches * per_minibatch]
        out.append(groups.reshape(num_minibatches, per_minibatch, -1).mean(axis=1))
    return out


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


class GradVarianceEstimate(NamedTuple):
    """Statistics of `M` minibatch gradients.

    Attributes:
        trace_cov: `tr Cov(G)` (unbiased sample estimate).
        trace_cov_se: its bootstrap standard error.
        mean_sq_norm: `|E G|²`, estimated as `|Ḡ|² - tr Ĉ/M` (unbiased; may be negative when the mean
            is below the noise).
        ratio: `tr Cov(G)/|E G|²` (from the two estimates; `inf` when `mean_sq_norm <= 0`).
        ratio_se: bootstrap standard error of the ratio (over resamples with positive denominator).
        num_minibatches: `M`.
    """

    trace_cov: float
    trace_cov_se: float
    mean_sq_norm: float
    ratio: float
    ratio_se: float
    num_minibatches: int


def _stats(g: np.ndarray) -> tuple[float, float]:
    m = g.shape[0]
    mean = g.mean(0)
    trace = float(np.sum((g - mean) ** 2) / (m - 1))
    return trace, float(np.sum(mean**2) - trace / m)


def gradient_statistics(
    gradients: np.ndarray, rng: np.random.Generator, num_bootstrap: int
) -> GradVarianceEstimate:
    """`GradVarianceEstimate` of `gradients (M, P)`, with nonparametric-bootstrap standard errors."""
    gradients = np.asarray(gradients, np.float64)
    if gradients.ndim != 2 or gradients.shape[0] < 2:
        raise ValueError(f"gradients must have shape (M >= 2, P), got {gradients.shape}")
    m = gradients.shape[0]
    trace, mean_sq = _stats(gradients)
    traces, ratios = [], []
    for _ in range(num_bootstrap):
        tb, mb = _stats(gradients[rng.integers(0, m, m)])
        traces.append(tb)
        if mb > 0:
            ratios.append(tb / mb)
    ratio = trace / mean_sq if mean_sq > 0 else float("inf")
    return GradVarianceEstimate(
        trace_cov=trace,
        trace_cov_se=float(np.std(traces, ddof=1)) if num_bootstrap > 1 else float("nan"),
        mean_sq_norm=mean_sq,
        ratio=ratio,
        ratio_se=float(np.std(ratios, ddof=1)) if len(ratios) > 1 else float("nan"),
        num_minibatches=m,
    )


# ---------------------------------------------------------------------------------------------
# the verdict: is the variance integrable at an end point?
# ---------------------------------------------------------------------------------------------

FINITE_VARIANCE_LOSSES: tuple[str, ...] = ("adjoint_matching", "adjoint_sampling", "novel_score_matching")
"""The losses the claim says have finite gradient variance; TSM and CSM do not."""


def fit_exponent(deltas, values, ses) -> tuple[float, float]:
    """`(p, SE(p))`: weighted least-squares slope of `log V` against `log δ` (`V ∝ δ^p`).

    Weights `1/s²` with `s = SE(V)/V`, the delta-method SE of `log V`; the SE of the slope is
    `(Σ_i w_i (x_i - x̄_w)²)^{-1/2}`, the SEs being taken as known (exact for two points).
    """
    x = np.log(np.asarray(deltas, np.float64))
    values, ses = np.asarray(values, np.float64), np.asarray(ses, np.float64)
    if x.size < 2 or x.size != values.size or np.any(values <= 0):
        raise ValueError(f"need >= 2 positive values at distinct δ, got δ={deltas}, V={values}")
    w = 1.0 / np.maximum(ses / values, 1e-12) ** 2
    y = np.log(values)
    x_bar, y_bar = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (x - x_bar) ** 2)
    return float(np.sum(w * (x - x_bar) * (y - y_bar)) / sxx), float(1.0 / np.sqrt(sxx))


def growth_factor(narrow: float, narrow_se: float, wide: float, wide_se: float) -> tuple[float, float]:
    """`(g, SE(g))`, `g = V_narrow/V_wide` (independent estimates; delta-method SE)."""
    g = narrow / wide
    return g, g * math.hypot(narrow_se / narrow, wide_se / wide)


class EndVerdict(NamedTuple):
    """Whether the gradient variance is integrable in time at one end point.

    Attributes:
        exponent: `p` in `tr Cov(G | t) ∝ |t - end|^p`, fitted on the fixed-time profile (`fit_exponent`).
        exponent_se: its SE.
        finite: `p - z·SE > -1`: `∫ tr Cov(G | t) dt` converges at this end, with margin `z` SEs; a
            log-divergence (`p = -1`) or a power divergence (`p < -1`) is not finite.
    """

    exponent: float
    exponent_se: float
    finite: bool


def end_verdict(deltas, values, ses, z: float = 2.0) -> EndVerdict:
    """The `EndVerdict` from the fixed-time profile `V(δ) ± SE` at distance `δ` from the end point.

    The loss gradient over `t ~ U[0, 1]` has variance `∫ tr Cov(G | t) dt` (plus the variance of the
    conditional mean), finite iff the integral converges at both ends, i.e. iff `p > -1` at each.
    """
    p, se = fit_exponent(deltas, values, ses)
    return EndVerdict(p, se, bool(p - z * se > -1.0))


def measure(key: jax.Array, setup: ClaimSetup, config: GradVarianceConfig) -> list[dict[str, Any]]:
    """All measurements of one target: the batch-size sweep (full range) and the time-window sweep.

    Returns:
        One dict per (loss, sweep point): `target`, `loss`, `sweep` ("batch_size" or a window kind),
        `batch_size`, `delta` (None for the batch sweep), `t_lo`, `t_hi`, and the fields of
        `GradVarianceEstimate`.
    """
    rng = np.random.default_rng(config.seed)
    rows = []
    losses = [name for name in config.losses if name != "adjoint_matching" or _has_adjoint_matching()]
    specs = [("batch_size", None, (0.0, 1.0), b) for b in config.batch_sizes]
    specs += [
        (kind, d, time_window(kind, d), config.window_batch_size)
        for kind in config.window_kinds
        for d in config.deltas
    ]
    for i, loss in enumerate(losses):
        grads = minibatch_gradients(
            jax.random.fold_in(key, i), setup, loss, [(w, b) for _, _, w, b in specs], config.num_minibatches
        )
        for (sweep, delta, (lo, hi), batch_size), g in zip(specs, grads, strict=True):
            est = gradient_statistics(g, rng, config.num_bootstrap)
            rows.append(
                dict(
                    target=setup.name,
                    loss=loss,
                    sweep=sweep,
                    batch_size=batch_size,
                    delta=delta,
                    t_lo=lo,
                    t_hi=hi,
                    **est._asdict(),
                )
            )
    return rows


def _has_adjoint_matching() -> bool:
    try:
        from samplers.methods.adjoint_matching import simulate_with_adjoint  # noqa: F401
    except ImportError:
        return False
    return True
