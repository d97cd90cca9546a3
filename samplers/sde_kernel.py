"""The Euler–Maruyama kernel shared by the integrators of `samplers.sde`: the grid Brownian path, the
time grid with its backward-kernel coefficients, one controlled step with its log-weight
increment, and the initial/terminal terms and cost of a batch of paths (the maths is stated in the
`samplers.sde` module docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.base_processes import gaussian_log_prob
from samplers.method import Cost
from samplers.parallel import shard_batch
from samplers.problem import Problem
from samplers.types import Control

if TYPE_CHECKING:
    from samplers.sde import SDEConfig

__all__ = ["GridBrownianPath", "brownian_path"]


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """Brownian motion sampled on a fixed grid: `W(t_{k+1}) - W(t_k) = sqrt(h_k) ε_k`, `ε_k ~ N(0, I)`.

    `ε_k` is drawn from `fold_in(key, k)`, so increments are exact, independent across steps, cost
    O(1) memory, and are reproduced bit for bit when the same interval is evaluated again, which is
    what reverse-mode differentiation through `diffrax.RecursiveCheckpointAdjoint` needs (diffrax
    refuses to differentiate through its `UnsafeBrownianPath`, which samples the same way but keyed
    by the bits of the times; a `VirtualBrownianTree` would be exact for any interval but pays a
    tree search per step). Only intervals `[t_k, t_{k+1}]` of the grid may be evaluated (as
    `diffrax.StepTo(ts)` does); the interval is found by rounding `t0` to the nearest grid point.

    Attributes:
        ts: the grid `(K+1,)`.
        key: PRNG key.
        shape: shape of one increment (the batch `(n, dim)`).
    """

    ts: jax.Array
    key: jax.Array
    shape: tuple[int, ...] = eqx.field(static=True)
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def step_index(self, t0) -> jax.Array:
        """Index k of the grid interval that starts at `t0`."""
        midpoints = 0.5 * (self.ts[:-1] + self.ts[1:])
        return jnp.searchsorted(midpoints, t0)

    def standard_increment(self, k) -> jax.Array:
        """`ε_k ~ N(0, I)` of step k (the increment divided by `sqrt(h_k)`)."""
        # batch-sharded over the active mesh (samplers.parallel); the same numbers on any device count
        return shard_batch(jax.random.normal(jax.random.fold_in(self.key, k), self.shape, self.ts.dtype))

    def increment(self, k) -> jax.Array:
        """`W(t_{k+1}) - W(t_k) = sqrt(h_k) ε_k`."""
        return jnp.sqrt(self.ts[k + 1] - self.ts[k]) * self.standard_increment(k)

    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        if t1 is None:
            raise ValueError("GridBrownianPath only evaluates increments over grid intervals [t_k, t_{k+1}]")
        k = self.step_index(t0)
        w = self.increment(k)
        if use_levy:
            return diffrax.BrownianIncrement(dt=self.ts[k + 1] - self.ts[k], W=w)
        return w


def brownian_path(key: jax.Array, ts: jax.Array, num_samples: int, dim: int) -> GridBrownianPath:
    """The Brownian path of `num_samples` particles on the grid `ts` (shared by both integrators)."""
    return GridBrownianPath(ts=jnp.asarray(ts), key=key, shape=(int(num_samples), int(dim)))


def _weight_form(problem: Problem, config: SDEConfig) -> str:
    if config.weights == "auto":
        return "kernel" if problem.has_log_target else "girsanov"
    if config.weights == "kernel" and not problem.has_log_target:
        raise ValueError(
            "kernel-form weights need a base with a closed-form discrete chain; "
            f"the {problem.base.kind!r} base has none: use weights='girsanov' (or 'auto')"
        )
    return config.weights


def _check_num_samples(num_samples) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return num_samples


class _Grid(NamedTuple):
    """Per-step constants: times, step sizes, σ(t_k), and the base's reversal (kernel form)."""

    ts: jax.Array
    step_sizes: jax.Array
    sigmas: jax.Array
    backward_coefs: jax.Array | None
    backward_vars: jax.Array | None


def _grid(problem: Problem, form: str) -> _Grid:
    ts = problem.times
    if form == "kernel":
        chain = problem.chain  # float32 constants, computed once per problem
        return _Grid(ts, chain.step_sizes, chain.sigmas, chain.backward_coefs, chain.backward_vars)
    return _Grid(ts, jnp.diff(ts), problem.base.sigma(ts[:-1]), None, None)


def _log_backward(problem: Problem, grid: _Grid, k, x, x_next) -> jax.Array:
    """`log B_k(x | x_next)` for one point; 0 at k = 0 for a Dirac start (methods.md §7.1)."""
    var = grid.backward_vars[k]
    if not problem.base.initial_is_dirac:
        return gaussian_log_prob(x, grid.backward_coefs[k] * x_next, var, problem.base.dof)
    # B_0 is the point mass at 0: substitute a unit variance so that neither the value nor the
    # gradient of the discarded branch is NaN, then define log B_0 := 0.
    degenerate = k == 0
    value = gaussian_log_prob(
        x, grid.backward_coefs[k] * x_next, jnp.where(degenerate, 1.0, var), problem.base.dof
    )
    return jnp.where(degenerate, 0.0, value)


def _initial_and_terminal(problem: Problem, form: str, x0: jax.Array, xk: jax.Array) -> jax.Array:
    """The boundary terms of `log w`: kernel `log γ̃(x_K) - log p_0(x_0)`; Girsanov `r(x_K)`."""
    if form == "girsanov":
        return jax.vmap(problem.tilt)(xk)
    out = jax.vmap(problem.log_target)(xk)
    if not problem.base.initial_is_dirac:
        out = out - jax.vmap(problem.base.initial_log_prob)(x0)
    return out


def _step(problem: Problem, control: Control, form: str, detach: str, grid: _Grid, params, k, x, d_w):
    """One EM step of the whole batch and its log-weight increment (the maths of the module docstring).

    Returns `(increment of x, increment of log w, u)` for `x: (n, dim)`, `d_w: (n, dim)`.
    """
    base = problem.base
    t, h, sigma = grid.ts[k], grid.step_sizes[k], grid.sigmas[k]
    x_in = x if detach == "none" else sg(x)
    u = base.project(jax.vmap(control, in_axes=(None, 0, None))(params, x_in, t))
    b = base.project(jax.vmap(base.drift, in_axes=(0, None))(x_in, t))
    mean_shift = h * (b + sigma * u)
    d_w = base.project(d_w)
    increment = mean_shift + sigma * d_w
    sqrt_h = jnp.sqrt(h)
    eps = d_w / sqrt_h
    if detach == "states":
        # ε as a function of θ at the fixed points: (x_{k+1} - x_k - h(b + σu_θ))/(σ sqrt h) (§7.1).
        increment = sg(increment)
        eps = eps + (sg(mean_shift) - mean_shift) / (sigma * sqrt_h)
    if form == "girsanov":
        d_log_w = -(0.5 * h * jnp.sum(u * u, -1) + sqrt_h * jnp.sum(u * eps, -1))
    else:
        # log F_k(x_{k+1} | x_k) = -½|ε|² - (dof/2) log(2π σ² h); the residual x_{k+1} - mean is σ sqrt(h) ε.
        log_forward = -0.5 * jnp.sum(eps * eps, -1) - 0.5 * base.dof * jnp.log(2.0 * jnp.pi * sigma**2 * h)
        x_next = x_in + increment
        log_backward = jax.vmap(lambda a, b_: _log_backward(problem, grid, k, a, b_))(x_in, x_next)
        d_log_w = log_backward - log_forward
    return increment, d_log_w, u


def _controlled_drift(problem: Problem, control: Control, grid: _Grid, params, k, x) -> jax.Array:
    """`b(x, t_k) + σ_k u_θ(x, t_k)` of the batch (projected)."""
    t, sigma = grid.ts[k], grid.sigmas[k]
    u = jax.vmap(control, in_axes=(None, 0, None))(params, x, t)
    return problem.base.project(jax.vmap(problem.base.drift, in_axes=(0, None))(x, t) + sigma * u)


def _cost(
    num_samples: int, num_steps: int, network_calls_per_step: int, grad_evals_per_control: float
) -> Cost:
    network = num_samples * num_steps * network_calls_per_step
    return Cost.of(
        energy_evals=num_samples,
        grad_evals=network * grad_evals_per_control,
        network_evals=network,
        sde_steps=num_samples * num_steps,
    )


def _finish(problem, form, detach, x0, xk, log_w_steps):
    log_w = log_w_steps + _initial_and_terminal(problem, form, x0, xk)
    return sg(log_w) if detach == "all" else log_w
