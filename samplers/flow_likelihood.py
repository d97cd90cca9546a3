"""The pretrained flow's own density: `log p_1(x)` by the probability-flow ODE (instantaneous change of
variables, Chen et al. 2018, "Neural Ordinary Differential Equations", and Grathwohl et al. 2019, FFJORD).

A flow model `dX/dt = v(X, t)` carries its start law `p_{t_0}` to `p_1`, and along an ODE trajectory
`d/dt log p_t(X_t) = -∇·v(X_t, t)` (the continuity equation). Solving backwards from `X_1 = x`:

    log p_1(x) = log p_{t_0}(X_{t_0}) - ∫_{t_0}^1 ∇·v(X_t, t) dt,

with the augmented state `(X_t, ℓ_t)`, `dℓ/dt = ∇·v(X_t, t)`, `ℓ_1 = 0`, integrated from `t = 1` down to
`t_0` (diffrax `Tsit5`, adaptive steps): `log p_1(x) = log p_{t_0}(X_{t_0}) + ℓ_{t_0}`. The divergence is
exact (`dim` forward-mode products of `v`), so `p_1` is a normalised density up to the solver's tolerance,
whatever the velocity: the memoryless SDE of the same velocity has the same marginals when `v` is the
exact velocity of the interpolant; for a learned `v` this is the model's ODE law, which can differ from the
law of its SDE (`docs/methods.md` §5.3). Cost per point: `dim + 1` velocity evaluations (one primal and
`dim` tangents, batched) per solver stage.

**Gradient.** Differentiating through the adaptive solve (with a divergence inside) costs far more than
the value; `flow_log_prob` instead has a custom JVP whose tangent is `score(x)·ẋ` for a given score
function, the data-law score that the base computes from the velocity at `t = 1`
(`MemorylessFlowBase.terminal_score`). That is `∇log p_1` exactly for the exact velocity and an
approximation of it for a learned one (the value stays the ODE's).
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from samplers.methods.nets_path import drift_and_divergence

__all__ = ["FlowLikelihood", "flow_log_prob"]


class FlowLikelihood:
    """`log p_1` of ONE point for a flow `v` started at `t_0` from `p_{t_0}` (module docstring).

    Args:
        velocity: `v(x, t)` of ONE point, `(dim,)`.
        initial_log_prob: `log p_{t_0}(x)` of ONE point.
        t0: the start time.
        score: `∇log p_1(x)` of ONE point for the JVP, or None (then the JVP goes through the solve).
        rtol, atol: the step-size controller's tolerances.
        max_steps: the solver's step limit (a non-finite value is returned when it is hit).
    """

    def __init__(
        self,
        velocity: Callable[[jax.Array, jax.Array], jax.Array],
        initial_log_prob: Callable[[jax.Array], jax.Array],
        t0: float,
        *,
        score: Callable[[jax.Array], jax.Array] | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_steps: int = 1024,
    ):
        if not 0.0 < float(t0) < 1.0:
            raise ValueError(f"FlowLikelihood: t0 must lie in (0, 1), got {t0!r}")
        self.velocity, self.initial_log_prob, self.t0 = velocity, initial_log_prob, float(t0)
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), int(max_steps)
        self._value = jax.custom_jvp(self.solve) if score is not None else self.solve
        if score is not None:

            @self._value.defjvp
            def _jvp(primals, tangents):
                (x,), (dx,) = primals, tangents
                return self.solve(x), jnp.dot(score(x), dx)

    def _field(self, t, state, args):
        return drift_and_divergence(self.velocity, state[0], t)

    def solve(self, x: jax.Array) -> jax.Array:
        """`log p_1(x)` of ONE point by the backward solve (no custom gradient)."""
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(self._field),
            diffrax.Tsit5(),
            t0=1.0,
            t1=self.t0,
            dt0=-0.05,
            y0=(x, jnp.zeros((), x.dtype)),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
            throw=False,
        )
        y, ell = solution.ys[0][-1], solution.ys[1][-1]
        ok = solution.result == diffrax.RESULTS.successful
        return jnp.where(ok, self.initial_log_prob(y) + ell, jnp.nan)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._value(x)


def flow_log_prob(base, *, rtol: float = 1e-5, atol: float = 1e-5) -> Callable[[jax.Array], jax.Array]:
    """`log p_1` of ONE point for a `MemorylessFlowBase`: the ODE law of its velocity started at its
    `p_{t_0}`, with the base's `terminal_score` as the gradient when it has one (module docstring)."""
    score = base.terminal_score if base.has_terminal_score else None
    return FlowLikelihood(base.velocity, base.initial_log_prob, base.t0, score=score, rtol=rtol, atol=atol)
