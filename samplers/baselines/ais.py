"""Annealed importance sampling (AIS) with a fixed schedule: the Jarzynski baseline.

Path. `π_k ∝ p_0^{1−β_k} γ̃^{β_k}`, `k = 0..K`, from the normalised `p_0 = N(0, s² I)`
(`s = init_scale`) to the working density `γ̃` (`samplers.baselines.common`; `∫ γ̃ = Z`), with a
fixed schedule `0 = β_0 < β_1 < ... < β_K = 1` (registry `SCHEDULES`: "linear" `β_k = k/K`;
"geometric" `β_k = β_min^{(K−k)/(K−1)}` for `k ≥ 1`). Write `ℓ = log γ̃ − log p_0`, so
`log π̃_β = log p_0 + β ℓ`. Every level applies `num_mcmc_steps` transitions of step size `ε`
(`step_size`), all with the Langevin proposal

    F_β(x' | x) = N(x'; x + ε ∇log π̃_β(x), 2ε I)       (blackjax's MALA convention).

Transitions (registry `TRANSITIONS`) and their weights, both with `E[exp(log w)] = Z` exactly
for the discrete chain simulated, whatever `ε` and `K`:

- "mala": `F_β` plus a Metropolis–Hastings correction, a kernel `T_k` reversible w.r.t. `π_k`.
  Neal's AIS / Jarzynski weight: `x_0 ~ p_0`; for `k = 1..K`: `log w += (β_k − β_{k−1}) ℓ(x_{k−1})`,
  then `x_k ~ T_k(x_{k−1}, ·)`. Equivalently `log w = −W` with `W = −Σ_k Δβ_k ℓ(x_{k−1})` the
  discrete Jarzynski work, and `E[e^{−W}] = Z / Z_0 = Z`.
- "ula": `F_β` alone (unadjusted Langevin, not invariant), weighted as MCD with a zero control
  (`docs/methods.md` §5.2, §7.1): with `B_β(x | x') = N(x; x' + ε ∇log π̃_β(x'), 2ε I)`,

      log w = log γ̃(x_K) − log p_0(x_0) + Σ_t [log B_{β(t)}(x_{t−1} | x_t) − log F_{β(t)}(x_t | x_{t−1})],

  one term per transition `t`, `β(t)` the level of the transition (both kernels of a
  transition use the same `β`, as in DenisBless/variational_sampling_methods' CMCD).

Backward paths (`Method.backward`, for the EUBO, forward ESS and Crooks/BAR): from target
samples `x_K ~ π`, run the reversed chain — for "mala" the reversal of `T_k` w.r.t. `π_k` is `T_k`
itself (reversible), applied for `k = K..1`; for "ula" `x_{t−1} ~ B_{β(t)}(· | x_t)` — and
return the same functional `log w` of the backward path, for which `E_π[exp(−log w)] = 1/Z`.

Method semantics: nothing to train: `init` and `step` are no-ops with zero cost; `sample`
runs `num_samples` independent annealing paths. Cost per path: `value_and_grad` of `log γ̃` once
at `x_0` and once per transition (1 energy + 1 gradient each); `log p_0` is analytic and not
counted.

References:
    Neal, "Annealed importance sampling", Statistics and Computing 2001.
    Jarzynski, "Nonequilibrium equality for free energy differences", PRL 1997.
    Doucet, Grathwohl, Matthews & Strathmann, "Score-based diffusion meets annealed importance
    sampling", NeurIPS 2022 (MCD: ULA with Gaussian backward kernels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplers.baselines.common import (
    complete_centre_of_mass,
    gaussian_log_prob,
    no_training_method,
    working_density,
)
from samplers.fields import POSITIVE, Checked, field, integer, one_of, within
from samplers.method import Cost, Method, Samples
from samplers.parallel import shard_batch

__all__ = [
    "SCHEDULES",
    "TRANSITIONS",
    "AISConfig",
    "beta_schedule",
    "build_ais",
    "run_ais",
    "run_ais_backward",
]


def _linear(num_levels: int, beta_min: float) -> jax.Array:
    del beta_min
    return jnp.linspace(0.0, 1.0, num_levels + 1)


def _geometric(num_levels: int, beta_min: float) -> jax.Array:
    if num_levels == 1:
        return jnp.array([0.0, 1.0])
    return jnp.concatenate([jnp.zeros(1), jnp.geomspace(beta_min, 1.0, num_levels)])


SCHEDULES: dict[str, Callable[[int, float], jax.Array]] = {"linear": _linear, "geometric": _geometric}


@dataclasses.dataclass(frozen=True)
class AISConfig(Checked):
    """Tempered AIS with a fixed schedule.

    Attributes:
        num_levels: `K`, the number of annealing levels after `β_0 = 0`.
        schedule: a key of `SCHEDULES` ("linear" or "geometric").
        beta_min: `β_1` of the geometric schedule (ignored by "linear").
        transition: a key of `TRANSITIONS` ("mala" or "ula").
        num_mcmc_steps: transitions per level.
        step_size: `ε` of the Langevin proposal `x + ε ∇log π̃_β + sqrt(2ε) ξ`.
        init_scale: `s` of `p_0 = N(0, s² I)` (and of the centre-of-mass factor for particle
            systems); in the benchmark its default follows the problem's `sigma`.
    """

    num_levels: int = field(100, integer(1))
    schedule: str = field("linear", one_of(SCHEDULES))
    beta_min: float = field(1e-3, within(0, 1, closed="neither"))
    transition: str = field("mala", one_of(lambda: TRANSITIONS))
    num_mcmc_steps: int = field(1, integer(1))
    step_size: float = field(0.05, POSITIVE)
    init_scale: float = field(1.0, POSITIVE, follows="sigma")


def beta_schedule(config: AISConfig) -> jax.Array:
    """`(β_0, ..., β_K)` of `config`, `β_0 = 0`, `β_K = 1`."""
    return SCHEDULES[config.schedule](config.num_levels, config.beta_min)


class _Point(NamedTuple):
    """A position with the cached value and gradient of `log γ̃` there."""

    x: jax.Array
    log_gamma: jax.Array
    grad_log_gamma: jax.Array


class _Annealing(NamedTuple):
    """The pieces both transitions share, bound to one target and config."""

    point: Callable[[jax.Array], _Point]
    log_p0: Callable[[jax.Array], jax.Array]
    grad_log_pi: Callable[[_Point, jax.Array], jax.Array]
    log_pi: Callable[[_Point, jax.Array], jax.Array]
    step_size: float


def _annealing(log_prob: Callable, config: AISConfig) -> _Annealing:
    scale = config.init_scale
    log_p0 = lambda x: gaussian_log_prob(x, scale)

    def point(x):
        value, grad = jax.value_and_grad(log_prob)(x)
        return _Point(x, value, grad)

    # log π̃_β = (1 − β) log p_0 + β log γ̃, ∇log p_0(x) = −x / s².
    grad_log_pi = lambda p, beta: (1.0 - beta) * (-p.x / scale**2) + beta * p.grad_log_gamma
    log_pi = lambda p, beta: (1.0 - beta) * log_p0(p.x) + beta * p.log_gamma
    return _Annealing(point, log_p0, grad_log_pi, log_pi, config.step_size)


def _log_kernel(a: _Annealing, x_to: jax.Array, start: _Point, beta: jax.Array) -> jax.Array:
    """`log N(x_to; start + ε ∇log π̃_β(start), 2ε I)`."""
    mean = start.x + a.step_size * a.grad_log_pi(start, beta)
    return gaussian_log_prob(x_to - mean, math.sqrt(2.0 * a.step_size))


def _propose(a: _Annealing, key: jax.Array, p: _Point, beta: jax.Array) -> _Point:
    noise = jax.random.normal(key, p.x.shape, p.x.dtype)
    return a.point(p.x + a.step_size * a.grad_log_pi(p, beta) + math.sqrt(2.0 * a.step_size) * noise)


def _mala_move(a: _Annealing, key: jax.Array, p: _Point, beta: jax.Array) -> tuple[_Point, jax.Array]:
    """One MALA step for `π_β`; returns the new point and the log-weight contribution (0)."""
    key_propose, key_accept = jax.random.split(key)
    q = _propose(a, key_propose, p, beta)
    # Metropolis–Hastings: log [π(q) F(p | q)] − log [π(p) F(q | p)].
    log_forward = a.log_pi(p, beta) + _log_kernel(a, q.x, p, beta)
    log_reverse = a.log_pi(q, beta) + _log_kernel(a, p.x, q, beta)
    log_ratio = log_reverse - log_forward
    accept = jnp.log(jax.random.uniform(key_accept, dtype=p.x.dtype)) < log_ratio
    new = jax.tree.map(lambda new, old: jnp.where(accept, new, old), q, p)
    return new, jnp.zeros((), p.x.dtype)


def _ula_forward(a: _Annealing, key: jax.Array, p: _Point, beta: jax.Array) -> tuple[_Point, jax.Array]:
    """One ULA step for `π_β`; returns the new point and `log B(x | x') − log F(x' | x)`."""
    q = _propose(a, key, p, beta)
    return q, _log_kernel(a, p.x, q, beta) - _log_kernel(a, q.x, p, beta)


def _ula_backward(a: _Annealing, key: jax.Array, q: _Point, beta: jax.Array) -> tuple[_Point, jax.Array]:
    """One backward step `x ~ B_β(· | x')`; returns `x` and `log B(x | x') − log F(x' | x)`."""
    p = _propose(a, key, q, beta)
    return p, _log_kernel(a, p.x, q, beta) - _log_kernel(a, q.x, p, beta)


class _Transition(NamedTuple):
    forward: Callable
    backward: Callable
    endpoint_terms: bool  # ULA: add log γ̃(x_K) − log p_0(x_0); MALA: add the Δβ ℓ increments


# The MALA kernel is reversible w.r.t. π_β, so it is its own reversal: backward = forward.
TRANSITIONS: dict[str, _Transition] = {
    "mala": _Transition(forward=_mala_move, backward=_mala_move, endpoint_terms=False),
    "ula": _Transition(forward=_ula_forward, backward=_ula_backward, endpoint_terms=True),
}


def _path(
    a: _Annealing, transition: _Transition, config: AISConfig, key: jax.Array, start: _Point, backward: bool
) -> tuple[_Point, _Point, jax.Array]:
    """Run all levels from `start` (forward: `x_0`; backward: `x_K`); return `(x_0, x_K, log w)`.

    Transitions only; the endpoint term (ULA) is added by the caller.
    """
    betas = beta_schedule(config).astype(start.x.dtype)
    deltas = betas[1:] - betas[:-1]
    levels = (betas[1:], deltas)
    move = transition.backward if backward else transition.forward

    def level(carry, inputs):
        point, log_w = carry
        key, beta, delta = inputs
        # Forward AIS weighs x_{k−1} before moving; backward weighs x_{k−1} after moving back.
        if not backward and not transition.endpoint_terms:
            log_w = log_w + delta * (point.log_gamma - a.log_p0(point.x))

        def one(carry, key):
            point, log_w = carry
            point, increment = move(a, key, point, beta)
            return (point, log_w + increment), None

        keys = jax.random.split(key, config.num_mcmc_steps)
        (point, log_w), _ = jax.lax.scan(one, (point, log_w), keys)
        if backward and not transition.endpoint_terms:
            log_w = log_w + delta * (point.log_gamma - a.log_p0(point.x))
        return (point, log_w), None

    keys = jax.random.split(key, config.num_levels)
    inputs = (keys, *levels)
    if backward:
        inputs = jax.tree.map(lambda v: v[::-1], inputs)
    (end, log_w), _ = jax.lax.scan(level, (start, jnp.zeros((), start.x.dtype)), inputs)
    return (end, start, log_w) if backward else (start, end, log_w)


def _evaluations(config: AISConfig) -> int:
    return 1 + config.num_levels * config.num_mcmc_steps


def run_ais(key: jax.Array, target: Any, config: AISConfig, num_samples: int) -> Samples:
    """`num_samples` independent AIS paths from `p_0` to `target`: end points and log-weights.

    Jittable with `num_samples` static; see the module docstring for the maths.
    """
    log_prob, project = working_density(target, config.init_scale)
    a = _annealing(log_prob, config)
    transition = TRANSITIONS[config.transition]

    def one(key):
        key_start, key_path = jax.random.split(key)
        start = a.point(config.init_scale * jax.random.normal(key_start, (target.dim,)))
        first, last, log_w = _path(a, transition, config, key_path, start, backward=False)
        if transition.endpoint_terms:
            log_w = log_w + last.log_gamma - a.log_p0(first.x)
        return last.x, log_w

    x, log_w = jax.vmap(one)(shard_batch(jax.random.split(key, num_samples)))  # paths over the devices
    evals = num_samples * _evaluations(config)
    return Samples(project(x), log_w, Cost.of(evals, evals))


def run_ais_backward(key: jax.Array, target: Any, config: AISConfig, x_target: jax.Array) -> jax.Array:
    """Log-weights `log w` of backward paths started at target samples `x_target` `(n, dim)`.

    `E_π[exp(−log w)] = 1/Z`, so `−(LSE(−log w) − log n)` estimates `log Z` from above. For
    particle systems the samples get a random centre of mass first (`complete_centre_of_mass`).
    """
    key_centre, key = jax.random.split(key)
    x_target = complete_centre_of_mass(key_centre, x_target, target, config.init_scale)
    log_prob, _ = working_density(target, config.init_scale)
    a = _annealing(log_prob, config)
    transition = TRANSITIONS[config.transition]

    def one(key, x):
        first, last, log_w = _path(a, transition, config, key, a.point(x), backward=True)
        if transition.endpoint_terms:
            log_w = log_w + last.log_gamma - a.log_p0(first.x)
        return log_w

    return jax.vmap(one)(jax.random.split(key, x_target.shape[0]), x_target)


def build_ais(problem: Any, config: AISConfig) -> Method:
    """AIS on `problem.target` as a Method (no training; see the module docstring)."""
    target = problem.target
    return no_training_method(
        lambda key, num_samples: run_ais(key, target, config, num_samples),
        lambda key, x_target: run_ais_backward(key, target, config, x_target),
    )
