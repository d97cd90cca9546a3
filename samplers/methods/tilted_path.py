"""The tilted path on the memoryless flow base of fine-tuning: `ρ_t ∝ p_t e^{λ_t r}` [DERIVED].

The thermodynamic methods (`nets_pinn`, `nets_action`, `cmcd_kl`, `cmcd_lv`) anneal from the pretrained
model's marginal at the start time to the tilted law along this path (`docs/methods.md` §1.4).
A fine-tuning method sees only the pretrained velocity `v(x, t)` and the reward `r`, so everything here is
written with scores and `r`, never with `log p_t`:

- **path**: `ρ̃_t = p_t e^{λ_t r}`, `λ_t = (t - t_0)/(1 - t_0)` on the base's interval `[t_0, 1]`, so
  `ρ_{t_0} = p_{t_0}` (normalised, `Z_{t_0} = 1`) and `ρ̃_1 = p_1 e^r` (`∫ρ̃_1 = Z`);
- **scores**: `∇log ρ_t = s_t + λ_t ∇r`, with the base's score from the velocity
  `s_t(x) = (t v(x, t) - x)/(1 - t)` (`MemorylessFlowBase.score`). Its `1/(1 - t)` factor is 0/0 at
  `t = 1` (`v(x, 1) = x`): for `t > 1 - TIME_EPS` (the window of the other flow-base methods,
  `samplers.methods.bridge_targets.TIME_EPS`) the limit `MemorylessFlowBase.terminal_score` is used
  (`-(x + ∂_t v(x, 1))`, or the data score when the base has its density). On a grid only `t_K = 1`
  is in that window; the weights and losses evaluate the score at grid points only;
- **noise**: the Langevin rate follows the base's memoryless schedule, `ε_t = ε · ½σ(t)²` with
  `½σ(t)² = (1 - t)/t` (`noise_profile`), so that with `ε = 1` the dynamics
  `v + ε_t ∇log ρ_t = b + ½σ²λ_t ∇r` are the base SDE `b = 2v - x/t` plus the tilt's Langevin term
  (`ε_t s_t = ε(v - x/t)` is regular at both ends);
- **rate**: `D_t(x) = λ̇_t r(x) + λ_t ∇r(x)·v(x, t)`, which is `∂_t log ρ̃_t + ∇·v + ∇log ρ̃_t·v` by the
  continuity equation `∂_t log p_t = -∇·v - s_t·v` of the flow. With a learned drift `b̂` on top of
  `v + ε_t∇log ρ_t`, the NETS weight is `dA = (D + ∇·b̂ + ∇log ρ_t·b̂) dt` (`samplers.methods.nets_path`);
- **the base's exact reversal** (the mean of CMCD's backward kernels): conditioned on `X_1 = y` the
  continuous base is Gaussian with mean `t y` and `Cov(X_s, X_t | y) = s(1 - t)²/t` (`MemorylessFlowBase`),
  so between two grid times `s < t`

      X_s | X_t ~ N((s/t) X_t, (t - s)(t + s - 2st)/t² · I),

  independent of `y` (the `y` terms cancel). CMCD's backward kernels take its mean and the forward EM step's
  variance (methods.md §1.4); its weights take `log p_1(x_K)` from the model's probability-flow ODE
  (`samplers.flow_likelihood`) and `log p_{t_0}` from the base, so they are exact Crooks weights of its
  chain (methods.md §5.3);
- **the log-density step** (NETS' Crooks weights, `log_density_step`): `log ρ̃_{t'}(x') - log ρ̃_t(x) =
  λ_{t'} r(x') - λ_t r(x) + log p_{t'}(x') - log p_t(x)`, the last difference by the trapezoid rule on the
  segment from `(x, t)` to `(x', t')` with `∇log p = s` and `∂_t log p = -∇·v - s·v` (`log_base_step`; the
  divergence of the pretrained velocity by `dim` forward-mode products), paired with Nelson's reversal of
  the forward step at the same level (`backward_kernel`). O(h) as a whole; the base's exact reversal (CMCD's
  backward kernel) is not used for NETS because its learned drift `b̂` is not scaled by the vanishing noise,
  and near `t = 1` a shift `h b̂` is as large as the exact reversal's standard deviation `1 - t`, which
  left an O(1) bias (measured: `E[w]/Z - 1 = +0.031 ± 0.006` on 200 and `+0.035 ± 0.006` on 800 steps
  after training, against `-0.022 ± 0.006` and `-0.006 ± 0.006` with the quadrature).

NETS' weights satisfy `E[w] = Z` up to O(h), not exactly (unlike the Brownian / VP bases, whose discrete
chain has a closed-form reversal); CMCD's are exact for the model's ODE law `p_1`.

Particle systems are not handled: the fine-tuning tasks are plain vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplers.base_processes import MemorylessFlowBase
from samplers.methods.bridge_targets import TIME_EPS
from samplers.problem import Problem

__all__ = ["TiltPoint", "TiltedFlowPath", "tilted_flow_path"]


class TiltPoint(NamedTuple):
    """The per-point data of the tilted path: `r(x)` and `∇r(x)` (one reward and one gradient eval)."""

    tilt: jax.Array
    grad_tilt: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class TiltedFlowPath:
    """`ρ̃_t = p_t e^{λ_t r}` on the memoryless flow base (module docstring). Point-wise methods act on ONE
    point `x (dim,)` and a scalar `t`; `log_density_step` on a batch.

    Args:
        base: the pretrained flow base (its velocity, `t_0`, initial law `p_{t_0}` and terminal score).
        tilt: `r(x)` of ONE point.
        grad_tilt: `∇r(x)` of ONE point.
    """

    base: MemorylessFlowBase
    tilt: Callable[[jax.Array], jax.Array]
    grad_tilt: Callable[[jax.Array], jax.Array]

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def t_start(self) -> float:
        return self.base.t_start

    def level(self, t: jax.Array) -> jax.Array:
        """`λ_t = (t - t_0)/(1 - t_0)`."""
        return (t - self.base.t0) / (1.0 - self.base.t0)

    @property
    def level_rate(self) -> float:
        """`λ̇_t = 1/(1 - t_0)`."""
        return 1.0 / (1.0 - self.base.t0)

    def sample_initial(self, key: jax.Array, num_samples: int) -> jax.Array:
        """`num_samples` draws of `ρ_{t_0} = p_{t_0}` (the base's initial law)."""
        return self.base.sample_initial(key, num_samples)

    def point(self, x: jax.Array) -> TiltPoint:
        return TiltPoint(self.tilt(x), self.grad_tilt(x))

    def noise_profile(self, t: jax.Array) -> jax.Array:
        """`½σ(t)² = (1 - t)/t`: the Langevin rate is `ε · ½σ(t)²`."""
        return 0.5 * self.base.sigma(t) ** 2

    def base_score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`s_t(x) = (t v(x, t) - x)/(1 - t)`, and the terminal score for `t > 1 - TIME_EPS`."""
        t = jnp.asarray(t, x.dtype)
        terminal = t > 1.0 - TIME_EPS
        inside = jnp.minimum(t, 1.0 - TIME_EPS)  # never divides by 0, even in the branch not taken
        interior = lambda y: (inside * self.base.velocity(y, inside) - y) / (1.0 - inside)
        return jax.lax.cond(terminal, self.base.terminal_score, interior, x)

    def level_score(self, x: jax.Array, t: jax.Array, point: TiltPoint, level: jax.Array) -> jax.Array:
        """`s_t(x) + level · ∇r(x)` (CMCD's learned schedule sets `level`)."""
        return self.base_score(x, t) + level * point.grad_tilt

    def score(self, x: jax.Array, t: jax.Array, point: TiltPoint) -> jax.Array:
        """`∇log ρ_t(x) = s_t(x) + λ_t ∇r(x)`."""
        return self.level_score(x, t, point, self.level(t))

    def drift(self, x: jax.Array, t: jax.Array, point: TiltPoint, eps: jax.Array) -> jax.Array:
        """The dynamics' drift without `b̂`: `v(x, t) + ε_t ∇log ρ_t(x)`."""
        return self.base.velocity(x, t) + eps * self.score(x, t, point)

    def backward_kernel(self, x_next, t, t_next, point_next: TiltPoint, eps, var):
        """The Crooks backward kernel of step `k` without `b̂`, batched: Nelson's reversal of the forward
        step at its level `t`, `B_k(· | x') = N(x' + h(-v(x', t) + ε_t ∇log ρ_t(x') - b̂(x', t')), var I)`
        with the forward kernel's variance. Returns `(anchor, drift, var)`."""
        reverse = lambda y, p: -self.base.velocity(y, t) + eps * self.score(y, t, p)
        return x_next, jax.vmap(reverse)(x_next, point_next), var

    def rate(self, x: jax.Array, t: jax.Array, point: TiltPoint) -> jax.Array:
        """`D_t(x) = λ̇ r(x) + λ_t ∇r(x)·v(x, t)`."""
        return self.level_rate * point.tilt + self.level(t) * jnp.dot(
            point.grad_tilt, self.base.velocity(x, t)
        )

    def log_base_rate(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`∂_t log p_t(x) = -∇·v(x, t) - s_t(x)·v(x, t)` of ONE point (the flow's continuity equation; the
        divergence by `dim` forward-mode products of the velocity)."""
        f = lambda y: self.base.velocity(y, t)
        basis = jnp.eye(x.shape[0], dtype=x.dtype)
        values, columns = jax.vmap(lambda e: jax.jvp(f, (x,), (e,)))(basis)
        return -jnp.trace(columns) - jnp.dot(self.base_score(x, t), values[0])

    def log_base_step(self, x: jax.Array, x_next: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
        """`log p_{t'}(x') - log p_t(x)` by the trapezoid rule on the segment from `(x, t)` to `(x', t')`:
        `½(s_t(x) + s_{t'}(x'))·(x' - x) + ½(t' - t)(∂_t log p_t(x) + ∂_t log p_{t'}(x'))`, batched
        `(n, dim) -> (n,)` (module docstring)."""
        score = jax.vmap(self.base_score, in_axes=(0, None))
        rate = jax.vmap(self.log_base_rate, in_axes=(0, None))
        spatial = 0.5 * jnp.sum((score(x, t) + score(x_next, t_next)) * (x_next - x), -1)
        return spatial + 0.5 * (t_next - t) * (rate(x, t) + rate(x_next, t_next))

    def log_density_step(self, x, x_next, t, t_next, point: TiltPoint, point_next: TiltPoint) -> jax.Array:
        """`log ρ̃_{t'}(x') - log ρ̃_t(x) = λ_{t'} r(x') - λ_t r(x) + log p_{t'}(x') - log p_t(x)`, the
        last difference by `log_base_step`, batched `(n, dim) -> (n,)`."""
        gain = self.level(t_next) * point_next.tilt - self.level(t) * point.tilt
        return gain + self.log_base_step(x, x_next, t, t_next)


def tilted_flow_path(problem: Problem, *, needs_score: bool = True) -> TiltedFlowPath:
    """The tilted path of a fine-tuning problem on the flow base (raises naming the base otherwise).

    `needs_score`: the caller uses `score` (NETS' weights and losses), which needs the data law's score at
    `t = 1`; CMCD's kernels use only the velocity and the base's exact reversal."""
    base = problem.base
    if not isinstance(base, MemorylessFlowBase):
        raise ValueError(f"the tilted flow path needs the 'flow' base, got {base.kind!r}")
    if problem.particles is not None:
        raise ValueError("the tilted flow path does not handle particle systems")
    if needs_score and not base.has_terminal_score:
        raise ValueError(
            "the tilted flow path needs the data law's score at t = 1: build the flow base with "
            "terminal_score_from_velocity=True (or its terminal_log_prob_fn)"
        )
    return TiltedFlowPath(base, problem.tilt, problem.grad_tilt)
