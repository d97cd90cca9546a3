"""The value-guidance estimators of Reward Score Matching: `Ψ ≈ ∇log h_t(x)` at one point of the
grid, by a first-order look-ahead (∇r at a denoised prediction or at the end of a controlled
rollout) or a zeroth-order one (self-normalised `e^r` of branched rollouts with the Gaussian
score-function identity). The maths, the estimators' bias and their cost are stated in the
docstring of `samplers.methods.reward_score_matching`, which trains on them (RECONSTRUCTION, as
stated there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.method import Cost
from samplers.methods.common import clip_norm
from samplers.problem import Problem
from samplers.types import Control, PyTree

if TYPE_CHECKING:
    from samplers.methods.reward_score_matching import RewardScoreMatchingConfig

__all__ = [
    "DENOISERS",
    "GUIDANCES",
    "JACOBIANS",
    "Guidance",
    "GuidanceOutput",
    "guidance_estimates",
    "rollout",
]


def _check_choice(value: str, choices, what: str, who: str) -> None:
    if value not in choices:
        raise ValueError(f"{who}: unknown {what} {value!r}; valid choices: {sorted(choices)}")


def _denoise_brownian(base, x, t):
    del base, t
    return x  # E_base[X_1 | X_t = x] = x (Brownian motion is a martingale)


def _denoise_flow(base, x, t):
    return x + (1.0 - t) * base.velocity(x, t)  # E[X_1 | X_t = x] of the linear interpolant


DENOISERS: dict[str, Callable[[Any, jax.Array, jax.Array], jax.Array]] = {
    "brownian": _denoise_brownian,
    "flow": _denoise_flow,
}

JACOBIANS: dict[str, str] = {
    "vjp": "exact Jacobian of the look-ahead / branch mean map (one VJP of the pretrained drift)",
    "a_t": "Jacobian replaced by a_t = 1 (exact for the Brownian base; Jacobian-free approximation for flow)",
}


def _denoiser(problem: Problem) -> Callable[[jax.Array, jax.Array], jax.Array]:
    kind = problem.base.kind
    if kind not in DENOISERS:
        raise ValueError(
            f"reward_score_matching: no look-ahead for base kind {kind!r}; valid choices: {sorted(DENOISERS)}"
        )
    fn = DENOISERS[kind]
    return lambda x, t: fn(problem.base, x, t)


class GuidanceOutput(NamedTuple):
    """`guidance_estimates` output: `psi (…, dim)`, `branch_ess (…)`, and the cost of the estimate."""

    psi: jax.Array
    branch_ess: jax.Array
    cost: Cost


# ---------------------------------------------------------------------------------------------
# rollouts and the guidance estimators (ONE point; vmapped by `guidance_estimates`)
# ---------------------------------------------------------------------------------------------


def _subgrid(num_steps: int, k_start: jax.Array, depth: int) -> jax.Array:
    """`depth + 1` grid indices from `k_start` to `K`, evenly spaced (repeats = void steps)."""
    m = jnp.arange(depth + 1)
    return k_start + (m * (num_steps - k_start)) // depth


def rollout(
    problem: Problem, control: Control, params: PyTree, key: jax.Array, x: jax.Array, k_start, depth: int
) -> tuple[jax.Array, jax.Array]:
    """EM rollout of ONE point from `(x, t_{k_start})` to `t = 1` on `depth` sub-steps of the grid.

    `y_{m+1} = y_m + Δ_m b(y_m, τ_m) + sg[Δ_m σ(τ_m) u(y_m, τ_m) + σ(τ_m) sqrt(Δ_m) ε_m]` (control and
    noise frozen, so `∇_x y_end` is the lean adjoint through the base drift), with the Girsanov log factor
    `−Σ_m (½Δ_m|u_m|² + sqrt(Δ_m) u_m·ε_m)` of the rollout against the base. Void sub-steps (`Δ = 0`,
    when fewer than `depth` grid steps remain) are the identity.

    Returns:
        `(y_end (dim,), log_girsanov ())`.
    """
    base = problem.base
    ts = problem.times
    idx = _subgrid(problem.num_steps, k_start, depth)
    taus, deltas = ts[idx[:-1]], jnp.diff(ts[idx])
    noise = base.project(jax.random.normal(key, (depth, x.shape[-1]), x.dtype))
    params = sg(params)

    def body(carry, inputs):
        y, log_g = carry
        tau, delta, eps = inputs
        tau = jnp.where(delta > 0, tau, ts[0])  # a void step may sit at t = 1, where b can be singular
        sigma = base.sigma(tau)
        u = sg(base.project(control(params, sg(y), tau)))
        increment = sg(delta * sigma * u + sigma * jnp.sqrt(delta) * eps)
        y_next = y + base.project(delta * base.drift(y, tau)) + increment
        log_g = log_g - sg(0.5 * delta * jnp.sum(u * u) + jnp.sqrt(delta) * jnp.sum(u * eps))
        return (y_next, log_g), None

    (y_end, log_g), _ = jax.lax.scan(body, (x, jnp.zeros((), x.dtype)), (taus, deltas, noise))
    return y_end, log_g


def _rollout_steps(num_steps: int, k_start: jax.Array, depth: int) -> jax.Array:
    """Number of non-void sub-steps of `rollout` from `k_start` (a traced float)."""
    return jnp.minimum(depth, num_steps - k_start).astype(jnp.float32)


def _depth(problem: Problem, config: RewardScoreMatchingConfig) -> int:
    return problem.num_steps if config.lookahead_steps is None else int(config.lookahead_steps)


def _first_order(problem, control, params, key, x, k, config) -> tuple[jax.Array, jax.Array, Cost]:
    """`Ψ` from `∇r` at the denoised prediction or at the end of a controlled rollout (module docstring)."""
    t = problem.times[k]
    depth = _depth(problem, config)
    if depth == 0:
        denoise = _denoiser(problem)
        if config.jacobian == "vjp":
            psi = jax.grad(lambda y: problem.tilt(denoise(y, t)))(x)
        else:
            psi = problem.grad_tilt(denoise(x, t))
        return psi, jnp.ones(()), Cost.of(grad_evals=1.0)
    if config.jacobian == "vjp":
        psi = jax.grad(lambda y: problem.tilt(rollout(problem, control, params, key, y, k, depth)[0]))(x)
    else:
        psi = problem.grad_tilt(rollout(problem, control, params, key, x, k, depth)[0])
    steps = _rollout_steps(problem.num_steps, k, depth)
    return psi, jnp.ones(()), Cost.of(grad_evals=1.0, network_evals=steps, sde_steps=steps)


def _zeroth_order(problem, control, params, key, x, k, config) -> tuple[jax.Array, jax.Array, Cost]:
    """`Ψ` from reward values of `B` branches via the Gaussian score-function identity (module docstring)."""
    base = problem.base
    ts = problem.times
    num_steps = problem.num_steps
    sigmas2_h = base.sigma(ts[:-1]) ** 2 * jnp.diff(ts)
    cumulative = jnp.concatenate([jnp.zeros((1,), ts.dtype), jnp.cumsum(sigmas2_h)])
    k_branch = num_steps if config.branch_span is None else jnp.minimum(k + config.branch_span, num_steps)
    t, t_branch = ts[k], ts[k_branch]
    delta = t_branch - t
    var = cumulative[k_branch] - cumulative[k]
    mean_map = lambda y: y + base.project(delta * base.drift(y, t))
    mu, pullback = jax.vjp(mean_map, x)

    b = config.num_branches
    key_eps, key_roll = jax.random.split(key)
    eps = base.project(jax.random.normal(key_eps, (b, x.shape[-1]), x.dtype))
    x_branch = mu + jnp.sqrt(var) * eps
    depth = _depth(problem, config)
    if depth == 0:
        denoise = _denoiser(problem)
        t_safe = jnp.minimum(t_branch, ts[num_steps - 1])  # the denoiser may be singular at t = 1
        ends = jax.vmap(lambda y: jnp.where(t_branch < 1.0, denoise(y, t_safe), y))(x_branch)
        log_f = jax.vmap(problem.tilt)(ends)
        steps = jnp.zeros((), jnp.float32)
    else:
        keys = jax.random.split(key_roll, b)
        ends, log_g = jax.vmap(lambda kk, y: rollout(problem, control, params, kk, y, k_branch, depth))(
            keys, x_branch
        )
        log_f = jax.vmap(problem.tilt)(ends) + log_g
        steps = _rollout_steps(num_steps, k_branch, depth)
    weights = jax.nn.softmax(sg(log_f))
    score = jnp.sum((weights - 1.0 / b)[:, None] * eps, axis=0) / jnp.sqrt(var)
    psi = pullback(score)[0] if config.jacobian == "vjp" else score
    ess = 1.0 / (b * jnp.sum(weights * weights))
    cost = Cost.of(energy_evals=b, network_evals=b * steps, sde_steps=b * (1.0 + steps))
    return psi, ess, cost


class Guidance(NamedTuple):
    fn: Callable[..., tuple[jax.Array, jax.Array, Cost]]
    description: str


GUIDANCES: dict[str, Guidance] = {
    "first_order": Guidance(
        _first_order, "∇r at the denoised look-ahead point or a controlled rollout's end"
    ),
    "zeroth_order": Guidance(
        _zeroth_order, "self-normalised e^r of branched rollouts, Gaussian score-function identity"
    ),
}


def guidance_estimates(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    x: jax.Array,
    k: jax.Array,
    config: RewardScoreMatchingConfig,
) -> GuidanceOutput:
    """`Ψ` at the points `x (..., dim)` with grid indices `k (...)` (stopped; clipped per `guidance_clip`).

    Args:
        key: PRNG key (one sub-key per point).
        problem: the problem (brownian or flow base).
        control: `control(params, x, t)` of ONE example (the rollouts' current control).
        params: control parameters (stopped).
        x: points, any batch shape `(..., dim)`.
        k: their grid indices `(...)`, each `< K`.
        config: the estimator options (`guidance`, `jacobian`, `lookahead_steps`, `num_branches`,
            `branch_span`, `guidance_clip`).

    Returns:
        `GuidanceOutput` (the cost summed over the points).
    """
    _check_choice(config.guidance, GUIDANCES, "guidance", "guidance_estimates")
    fn = GUIDANCES[config.guidance].fn
    batch_shape = x.shape[:-1]
    flat_x = sg(x).reshape(-1, x.shape[-1])
    flat_k = jnp.broadcast_to(k, batch_shape).reshape(-1)
    keys = jax.random.split(key, flat_x.shape[0])
    psi, ess, cost = jax.vmap(lambda kk, y, j: fn(problem, control, sg(params), kk, y, j, config))(
        keys, flat_x, flat_k
    )
    psi = problem.base.project(psi)
    psi = jax.vmap(lambda g: clip_norm(g, config.guidance_clip, problem.particles))(psi)
    total = Cost(*(jnp.sum(c) for c in cost))
    return GuidanceOutput(sg(psi).reshape(x.shape), ess.reshape(batch_shape), total)
