"""Controlled-SDE integration with exact discrete-time path weights (Euler–Maruyama).

The controlled SDE in the paper form (P1) of `docs/methods.md` §0,

    dX = (b(X, t) + σ(t) u_θ(X, t)) dt + σ(t) dB,      X_{t_0} ~ p_0,

is discretised by Euler–Maruyama on the problem's grid `t_0 < … < t_K = 1` (`h_k = t_{k+1} - t_k`):

    x_{k+1} = x_k + h_k (b(x_k, t_k) + σ_k u_θ(x_k, t_k)) + σ_k ΔW_k,    ΔW_k = sqrt(h_k) ε_k,

so the forward kernel is `F_k(x_{k+1} | x_k) = N(x_k + h_k(b + σ_k u), σ_k² h_k I)`. A control is any
`control(params, x, t) -> (dim,)` acting on ONE example (batched here with `jax.vmap`).

**Path log-weights** (methods.md §7.1), two exactly equivalent forms:

- kernel form (default for the Brownian and VP bases):
  `log w = log γ̃(x_K) + Σ_k log B_k(x_k | x_{k+1}) - log p_0(x_0) - Σ_k log F_k(x_{k+1} | x_k)`,
  with `B_k` the base's own exact reversal of its EM chain (`DiscreteChain`: the Brownian bridge
  towards the Dirac at 0, with `log B_0 := 0`; the exact AR(1) reversal for VP) and
  `γ̃ = p^base_K e^r` (`= γ` for sampling problems);
- Girsanov form: `log w = r(x_K) - Σ_k (½ h_k |u_k|² + sqrt(h_k) u_k·ε_k)`; the only form for bases
  without a closed-form discrete chain (the memoryless flow base).

Both satisfy `E_F[w] = Z` exactly for the discrete chain (not only as h → 0). With the realised
noise `ε_k`, `log F_k - log F^base_k = ½h|u|² + sqrt(h) u·ε` is an identity, and for the exact
reversal `p_0 Π F^base = p^base_K Π B`, so the two forms agree path by path (tests check it).

**Backward direction**: `simulate_backward` draws `x_K` from target samples and `x_k ~ B_k(·|x_{k+1})`,
returning the same `log w` on those paths (`E_B[1/w] = 1/Z`; EUBO, forward ESS, Crooks/BAR).

**Stop-gradient placement** (`SDEConfig.detach`, a named option, never a literal in a loop body):

- `"none"`: nothing is stopped; `log w` is differentiable through the reparametrised path
  (path-KL / ELBO losses).
- `"states"`: each state enters a step through `stop_gradient` and the new state is stopped, so
  `log w` depends on θ only through the forward-kernel means `u_θ(x_k, t_k)`, evaluated at the fixed
  points (log-variance / trajectory-balance losses; methods.md §9 `detach=True`).
- `"all"`: no gradient at all (evaluation rollouts, Adjoint Matching trajectories under `sg[u]`).

Two integrators of the same maths: `simulate_diffrax` (diffrax `Euler` + `StepTo` + an
`GridBrownianPath`, the default) and `simulate_scan` (a hand-written `lax.scan`, the reference,
also used by `benchmarks/perf/integrator.py`). Both draw the Brownian increment of step k from the
same `GridBrownianPath`, so they agree path by path for the same key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.base_processes import gaussian_log_prob
from samplers.fields import Checked, Rule, field, integer, one_of
from samplers.method import Cost
from samplers.parallel import shard_batch
from samplers.problem import Problem
from samplers.sde_kernel import (
    GridBrownianPath,
    _check_num_samples,
    _controlled_drift,
    _cost,
    _finish,
    _Grid,
    _grid,
    _initial_and_terminal,
    _log_backward,
    _step,
    _weight_form,
    brownian_path,
)
from samplers.types import Control

__all__ = [
    "DETACH_MODES",
    "INTEGRATORS",
    "WEIGHT_FORMS",
    "PathOutput",
    "SDEConfig",
    "USER_SDE",
    "GridBrownianPath",
    "brownian_path",
    "evaluation_functions",
    "initial_points",
    "path_controls",
    "path_log_weights",
    "simulate",
    "simulate_backward",
    "simulate_diffrax",
    "simulate_scan",
]


INTEGRATOR_NAMES = ("diffrax", "scan")  # the keys of INTEGRATORS (defined below the integrators)
DETACH_MODES: dict[str, str] = {
    "none": "gradients flow through states and controls (reparametrised path; path-KL / ELBO)",
    "states": "states are stop-gradient; log w depends on θ only via the forward-kernel means (LV / TB)",
    "all": "no gradient at all (evaluation rollouts, trajectories under sg[u])",
}
WEIGHT_FORMS: dict[str, str] = {
    "auto": "kernel when the base has a closed-form discrete chain, else girsanov",
    "kernel": "log γ̃(x_K) + Σ log B_k - log p_0(x_0) - Σ log F_k (methods.md §7.1)",
    "girsanov": "r(x_K) - Σ (½ h |u|² + sqrt(h) u·ε) (methods.md §7.1, equivalent form)",
}


@dataclasses.dataclass(frozen=True)
class SDEConfig(Checked):
    """Options of the integrators (a learned method's `sde` sub-config).

    Attributes:
        integrator: `"diffrax"` (default) or `"scan"` (the hand-written reference); see `INTEGRATORS`.
        save_trajectory: return the states `(K+1, n, dim)`.
        save_noise: return the standard-normal increments `ε_k = ΔW_k/sqrt(h_k)` `(K, n, dim)`
            (projected to zero centre of mass for particles).
        save_controls: return `u_θ(x_k, t_k)` `(K, n, dim)`. The diffrax integrator recomputes them
            from the trajectory (one extra network evaluation per step, counted in the cost); the
            scan integrator stores them for free.
        detach: stop-gradient placement, one of `DETACH_MODES`.
        weights: path-weight form, one of `WEIGHT_FORMS`.
        checkpoints: checkpoints of `diffrax.RecursiveCheckpointAdjoint` for reverse-mode gradients;
            None stores every step (no recomputation; memory `K·n·dim`).

    In a method config only `integrator`, `weights` and `checkpoints` are the user's (`USER_SDE`): the
    method sets `detach` and the `save_*` outputs its loss needs.
    """

    integrator: str = field("diffrax", one_of(INTEGRATOR_NAMES))
    save_trajectory: bool = False
    save_noise: bool = False
    save_controls: bool = False
    detach: str = field("none", one_of(DETACH_MODES))
    weights: str = field("auto", one_of(WEIGHT_FORMS))
    checkpoints: int | None = field(None, integer(1, optional=True))


USER_SDE = Rule(
    lambda c: (c.detach, c.save_trajectory, c.save_noise, c.save_controls) == ("none", False, False, False),
    "sets only integrator, weights and checkpoints (the method sets detach and save_*)",
)


class PathOutput(NamedTuple):
    """What the integrators return.

    Attributes:
        x: end points `x_K`, `(n, dim)`.
        log_w: path log-weights `(n,)` with `E[exp(log_w)] = Z` (forward paths) or
            `E[exp(-log_w)] = 1/Z` (backward paths).
        trajectory: `(K+1, n, dim)` or None.
        noise: `ε_k`, `(K, n, dim)` or None (forward paths only).
        controls: `u_θ(x_k, t_k)`, `(K, n, dim)` or None.
        cost: evaluation counters of this call.
    """

    x: jax.Array
    log_w: jax.Array
    trajectory: jax.Array | None
    noise: jax.Array | None
    controls: jax.Array | None
    cost: Cost


# ---------------------------------------------------------------------------------------------
# diffrax integrator
# ---------------------------------------------------------------------------------------------


class _EMKernelTerm(diffrax.AbstractTerm):
    """One Euler–Maruyama transition of the batch plus its path-weight increment, as a diffrax term.

    The state is `(x (n, dim), log_w (n,), k ())` (`k` counts steps, to index per-step constants).
    The control over `[t0, t1]` is `(t1 - t0, ΔW)`. The weight increment is not bilinear in the
    control, so this term defines only `vf_prod` (the one method `diffrax.Euler` calls) and is meant
    for `diffrax.Euler` with a `StepTo` controller.
    """

    brownian: diffrax.AbstractBrownianPath
    transition: Callable
    drift: Callable

    def vf(self, t, y, args):
        # The controlled drift of x (diffrax evaluates it only abstractly, for its shape checks);
        # the weight and counter components are defined only through `vf_prod`.
        x, log_w, k = y
        return self.drift(args, k.astype(jnp.int32), x), jnp.zeros_like(log_w), jnp.zeros_like(k)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0, self.brownian.evaluate(t0, t1)

    def prod(self, vf, control):
        raise NotImplementedError(
            "_EMKernelTerm is an EM transition: use it with diffrax.Euler (vf_prod only)"
        )

    def vf_prod(self, t, y, args, control):
        x, _, k = y
        _, d_w = control
        increment, d_log_w, _ = self.transition(args, k.astype(jnp.int32), x, d_w)
        return increment, d_log_w, jnp.ones_like(k)


def _noise(brownian: GridBrownianPath, grid: _Grid, project) -> jax.Array:
    return jax.vmap(lambda k: project(brownian.standard_increment(k)))(jnp.arange(grid.step_sizes.shape[0]))


class _Start(NamedTuple):
    """What both integrators start from (`_start`)."""

    config: SDEConfig
    num_samples: int
    form: str
    grid: _Grid
    x0: jax.Array
    brownian: GridBrownianPath
    params: Any


def _start(
    key: jax.Array, problem: Problem, params: Any, num_samples: int, config: SDEConfig | None
) -> _Start:
    """The common set-up of `simulate_diffrax` and `simulate_scan`: resolve the config, pick the weight
    form and its grid, split `key` into the initial draw (sharded over the devices) and the Brownian
    path, and detach the parameters when `config.detach == "all"`."""
    config = SDEConfig() if config is None else config
    num_samples = _check_num_samples(num_samples)
    form = _weight_form(problem, config)
    grid = _grid(problem, form)
    x0 = initial_points(key, problem, num_samples)
    brownian = brownian_path(jax.random.split(key)[1], grid.ts, num_samples, problem.dim)
    params_used = sg(params) if config.detach == "all" else params
    return _Start(config, num_samples, form, grid, x0, brownian, params_used)


def initial_points(key: jax.Array, problem: Problem, num_samples: int) -> jax.Array:
    """The start points `x_0 ~ p_0` `(num_samples, dim)` of the paths that `simulate(key, problem, …,
    num_samples, …)` draws (the same key split): for a loss that regresses on the pairs `(x_0, x_K)`."""
    key_init, _ = jax.random.split(key)
    return shard_batch(problem.base.sample_initial(key_init, num_samples))


def simulate_diffrax(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: Any,
    num_samples: int,
    config: SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> PathOutput:
    """Simulate `num_samples` controlled paths with diffrax (`Euler`, `StepTo`, `GridBrownianPath`).

    Args:
        key: PRNG key (split into the initial draw and the Brownian path).
        problem: the `Problem` (base, grid, tilt).
        control: `control(params, x, t) -> (dim,)` for ONE example.
        params: control parameters (a PyTree; differentiable unless `config.detach == "all"`).
        num_samples: number of paths `n`.
        config: `SDEConfig`.
        grad_evals_per_control: evaluations of `∇log γ` inside one control call (cost accounting).

    Returns:
        `PathOutput`; cost: `n·K` network evaluations and SDE steps (+`n·K` network evaluations when
        `save_controls`), `n` energy evaluations (the tilt at `x_K`).
    """
    config, num_samples, form, grid, x0, brownian, params_used = _start(
        key, problem, params, num_samples, config
    )
    k_steps = problem.num_steps
    transition = lambda p, k, x, d_w: _step(problem, control, form, config.detach, grid, p, k, x, d_w)
    drift = lambda p, k, x: _controlled_drift(problem, control, grid, p, k, x)
    term = _EMKernelTerm(brownian=brownian, transition=transition, drift=drift)
    y0 = (x0, jnp.zeros((num_samples,), x0.dtype), jnp.zeros((), x0.dtype))
    saveat = (
        diffrax.SaveAt(t0=True, steps=True)
        if config.save_trajectory or config.save_controls
        else (diffrax.SaveAt(t1=True))
    )
    solution = diffrax.diffeqsolve(
        term,
        diffrax.Euler(),
        t0=grid.ts[0],
        t1=grid.ts[-1],
        dt0=None,
        y0=y0,
        args=params_used,
        saveat=saveat,
        stepsize_controller=diffrax.StepTo(ts=grid.ts),
        adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=config.checkpoints or k_steps),
        max_steps=k_steps,
        throw=False,
    )
    xs, log_ws, _ = solution.ys
    x_end, log_w_steps = xs[-1], log_ws[-1]
    trajectory = xs if (config.save_trajectory or config.save_controls) else None
    controls = None
    calls_per_step = 1
    if config.save_controls:
        controls = path_controls(problem, control, params_used, trajectory)
        calls_per_step = 2
    noise = _noise(brownian, grid, problem.base.project) if config.save_noise else None
    log_w = _finish(problem, form, config.detach, x0, x_end, log_w_steps)
    return PathOutput(
        x=x_end,
        log_w=log_w,
        trajectory=trajectory if config.save_trajectory else None,
        noise=noise,
        controls=controls,
        cost=_cost(num_samples, k_steps, calls_per_step, grad_evals_per_control),
    )


# ---------------------------------------------------------------------------------------------
# lax.scan reference integrator
# ---------------------------------------------------------------------------------------------


def simulate_scan(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: Any,
    num_samples: int,
    config: SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> PathOutput:
    """The hand-written `lax.scan` Euler–Maruyama reference of `simulate_diffrax` (same maths, same noise).

    Arguments and returns as `simulate_diffrax`; `save_controls` costs no extra network evaluation.
    """
    config, num_samples, form, grid, x0, brownian, params_used = _start(
        key, problem, params, num_samples, config
    )

    def body(carry, k):
        x, log_w = carry
        d_w = brownian.increment(k)
        increment, d_log_w, u = _step(problem, control, form, config.detach, grid, params_used, k, x, d_w)
        x_next = x + increment
        saved = (
            x_next if config.save_trajectory else None,
            problem.base.project(brownian.standard_increment(k)) if config.save_noise else None,
            u if config.save_controls else None,
        )
        return (x_next, log_w + d_log_w), saved

    init = (x0, jnp.zeros((num_samples,), x0.dtype))
    (x_end, log_w_steps), (xs, noise, controls) = jax.lax.scan(body, init, jnp.arange(problem.num_steps))
    trajectory = jnp.concatenate([x0[None], xs]) if config.save_trajectory else None
    log_w = _finish(problem, form, config.detach, x0, x_end, log_w_steps)
    return PathOutput(
        x=x_end,
        log_w=log_w,
        trajectory=trajectory,
        noise=noise,
        controls=controls,
        cost=_cost(num_samples, problem.num_steps, 1, grad_evals_per_control),
    )


INTEGRATORS: dict[str, Callable[..., PathOutput]] = {"diffrax": simulate_diffrax, "scan": simulate_scan}


def simulate(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: Any,
    num_samples: int,
    config: SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> PathOutput:
    """Simulate forward paths with the integrator named by `config.integrator` (see `simulate_diffrax`)."""
    config = SDEConfig() if config is None else config
    return INTEGRATORS[config.integrator](
        key, problem, control, params, num_samples, config, grad_evals_per_control=grad_evals_per_control
    )


# ---------------------------------------------------------------------------------------------
# off-policy weights, controls on a given path, backward simulation
# ---------------------------------------------------------------------------------------------


def path_controls(problem: Problem, control: Control, params: Any, trajectory: jax.Array) -> jax.Array:
    """`u_θ(x_k, t_k)` on a stored trajectory `(K+1, n, dim)` -> `(K, n, dim)` (projected)."""
    ts = problem.times

    def one_step(args):
        x, t = args
        return problem.base.project(jax.vmap(control, in_axes=(None, 0, None))(params, x, t))

    return jax.lax.map(one_step, (trajectory[:-1], ts[:-1]))


def path_log_weights(
    problem: Problem, control: Control, params: Any, trajectory: jax.Array, *, form: str = "auto"
) -> jax.Array:
    """Path log-weights of given paths `(K+1, n, dim)` under the controlled forward chain.

    Points are used as given (any stop-gradient is the caller's), so this is the off-policy
    computation of methods.md §7.1: the kernel form evaluates `log F_k` at the stored points, the
    Girsanov form recomputes `ε_k = (x_{k+1} - x_k - h_k(b + σ_k u_k))/(σ_k sqrt(h_k))`.

    Args:
        problem: the problem.
        control: `control(params, x, t)`.
        params: control parameters.
        trajectory: paths `(K+1, n, dim)` on the problem's grid.
        form: `"kernel"`, `"girsanov"` or `"auto"` (`WEIGHT_FORMS`).

    Returns:
        `log w`, `(n,)`.
    """
    if form not in WEIGHT_FORMS:
        raise ValueError(f"unknown weight form {form!r}; valid choices: {sorted(WEIGHT_FORMS)}")
    form = _weight_form(problem, SDEConfig(weights=form))
    if trajectory.shape[0] != problem.num_steps + 1:
        raise ValueError(
            f"trajectory has {trajectory.shape[0]} time points, the grid has {problem.num_steps + 1}"
        )
    grid = _grid(problem, form)
    base = problem.base

    def one_step(args):
        k, x, x_next = args
        t, h, sigma = grid.ts[k], grid.step_sizes[k], grid.sigmas[k]
        u = base.project(jax.vmap(control, in_axes=(None, 0, None))(params, x, t))
        b = base.project(jax.vmap(base.drift, in_axes=(0, None))(x, t))
        if form == "girsanov":
            eps = (x_next - x - h * (b + sigma * u)) / (sigma * jnp.sqrt(h))
            return -(0.5 * h * jnp.sum(u * u, -1) + jnp.sqrt(h) * jnp.sum(u * eps, -1))
        mean = x + h * (b + sigma * u)
        log_forward = jax.vmap(lambda y, m: gaussian_log_prob(y, m, sigma**2 * h, base.dof))(x_next, mean)
        log_backward = jax.vmap(lambda a, b_: _log_backward(problem, grid, k, a, b_))(x, x_next)
        return log_backward - log_forward

    steps = jnp.arange(problem.num_steps)
    increments = jax.lax.map(one_step, (steps, trajectory[:-1], trajectory[1:]))
    return increments.sum(0) + _initial_and_terminal(problem, form, trajectory[0], trajectory[-1])


def simulate_backward(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: Any,
    x_end: jax.Array,
    config: SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> PathOutput:
    """Simulate from target samples back to the base with the base's reversal kernels `B_k`.

    `x_K = x_end`, `x_k ~ B_k(·|x_{k+1})` for `k = K-1, …, 0` (exact reversal of the base's EM
    chain; for a Dirac start `x_0 = 0`). Returns the kernel-form `log w` of these paths under the
    controlled forward chain; with `x_K ~ p*`, `E_B[e^{-log w}] = 1/Z` and `E_B[log w] = EUBO`
    (methods.md §7.2). The states never depend on θ, so `log w` is differentiable in `params`
    through `log F_k` only (forward-KL / EUBO training), unless `config.detach == "all"`.

    Args:
        key: PRNG key for the backward noise.
        problem: a problem whose base has a closed-form discrete chain.
        control: `control(params, x, t)`.
        params: control parameters.
        x_end: samples of the target `(n, dim)` (projected to zero centre of mass for particles).
        config: `SDEConfig` (`save_trajectory`, `detach`; `save_noise` / `save_controls` unused).
        grad_evals_per_control: for the cost accounting.

    Returns:
        `PathOutput` with `noise = controls = None`; cost `n·K` network evaluations and steps, `n`
        energy evaluations.
    """
    config = SDEConfig() if config is None else config
    if not problem.has_log_target:
        raise ValueError(
            f"backward simulation needs the base's exact reversal; the {problem.base.kind!r} base has none"
        )
    grid = _grid(problem, "kernel")
    base = problem.base
    x_end = shard_batch(base.project(jnp.asarray(x_end, jnp.float32)))
    if x_end.ndim != 2 or x_end.shape[1] != problem.dim:
        raise ValueError(f"x_end must have shape (n, {problem.dim}), got {x_end.shape}")
    num_samples = x_end.shape[0]
    params_used = sg(params) if config.detach == "all" else params
    keys = jax.random.split(key, problem.num_steps)

    def body(carry, k):
        x_next, log_w = carry
        z = base.project(shard_batch(jax.random.normal(keys[k], x_next.shape, x_next.dtype)))
        x = grid.backward_coefs[k] * x_next + jnp.sqrt(grid.backward_vars[k]) * z
        log_backward = jax.vmap(lambda a, b_: _log_backward(problem, grid, k, a, b_))(x, x_next)
        t, h, sigma = grid.ts[k], grid.step_sizes[k], grid.sigmas[k]
        u = base.project(jax.vmap(control, in_axes=(None, 0, None))(params_used, x, t))
        mean = x + h * (base.project(jax.vmap(base.drift, in_axes=(0, None))(x, t)) + sigma * u)
        log_forward = jax.vmap(lambda y, m: gaussian_log_prob(y, m, sigma**2 * h, base.dof))(x_next, mean)
        return (x, log_w + log_backward - log_forward), (x if config.save_trajectory else None)

    init = (x_end, jnp.zeros((num_samples,), x_end.dtype))
    (x0, log_w_steps), xs = jax.lax.scan(body, init, jnp.arange(problem.num_steps - 1, -1, -1))
    trajectory = jnp.concatenate([xs[::-1], x_end[None]]) if config.save_trajectory else None
    log_w = _finish(problem, "kernel", config.detach, x0, x_end, log_w_steps)
    return PathOutput(
        x=x_end,
        log_w=log_w,
        trajectory=trajectory,
        noise=None,
        controls=None,
        cost=_cost(num_samples, problem.num_steps, 1, grad_evals_per_control),
    )


def evaluation_functions(
    problem: Problem,
    control: Control,
    params_of: Callable[[Any], Any],
    config: SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> tuple[Callable, Callable | None]:
    """The `Method.sample` and `Method.backward` of a method whose sampler is the controlled SDE.

    Both simulate with `detach="all"` (evaluation rollouts, no gradient): `sample(key, state, n)`
    returns `Samples(x, log_w, cost)` of forward paths, `backward(key, state, x_target)` the
    log-weights of paths simulated back from target samples (None when the problem has no
    `log γ̃`, e.g. the memoryless flow base). `params_of(state)` picks the control's parameters.
    """
    from samplers.method import Samples

    config = dataclasses.replace(config or SDEConfig(), detach="all")

    def sample(key: jax.Array, state: Any, num_samples: int) -> Samples:
        path = simulate(
            key,
            problem,
            control,
            params_of(state),
            num_samples,
            config,
            grad_evals_per_control=grad_evals_per_control,
        )
        return Samples(x=path.x, log_w=path.log_w, cost=path.cost)

    def backward(key: jax.Array, state: Any, x_target: jax.Array) -> jax.Array:
        return simulate_backward(
            key,
            problem,
            control,
            params_of(state),
            x_target,
            SDEConfig(detach="all"),
            grad_evals_per_control=grad_evals_per_control,
        ).log_w

    return sample, (backward if problem.has_log_target else None)
