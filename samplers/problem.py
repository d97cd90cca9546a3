"""Problems: a base process, a time grid and a tilt `r`, i.e. the target `p* ∝ p^base_K exp(r)`.

Every method sees only a `Problem` (`docs/design.md`, "Contracts"). Two builders:

- `sampling_problem(target, base, ...)`: sample `π = γ/Z`. The tilt is
  `r(x) = log γ(x) - log p^base_K(x)` with `p^base_K` the terminal law of the base's *discrete*
  Euler–Maruyama chain on the problem's grid, so that the path weights of `samplers.sde` satisfy
  `E[w] = Z` exactly for the simulated chain (methods.md §1.1, §7.1, §10.7). The tilt's
  normaliser is then the target's `Z`.
- `finetuning_problem(base, reward, lam, ...)`: `r(x) = λ · reward(x)`, target
  `p* ∝ p^base_K e^{λ reward}` with `Z = E_{p^base_K}[e^{λ reward}]` (methods.md §2.2).

Time grids `t_start = t_0 < … < t_K = 1` are built by name from `GRIDS` (`time_grid`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samplers.base_processes import AbstractBaseProcess, DiscreteChain, MemorylessFlowBase, gaussian_log_prob
from targets.base import ParticleSpec, Target
from targets.registry import Registry

__all__ = [
    "GRIDS",
    "PROBLEM_KINDS",
    "Problem",
    "finetuning_problem",
    "sampling_problem",
    "task_problem",
    "time_grid",
]

PROBLEM_KINDS = ("sampling", "finetuning")


# ---------------------------------------------------------------------------------------------
# time grids
# ---------------------------------------------------------------------------------------------


def _uniform(num_steps: int, start: float, end: float) -> np.ndarray:
    """`t_k = start + (end - start) k/K`."""
    return np.linspace(start, end, num_steps + 1)


def _quadratic(num_steps: int, start: float, end: float) -> np.ndarray:
    """`t_k = start + (end - start)(k/K)²`: steps grow linearly, finest near `start` (singular starts)."""
    return start + (end - start) * np.linspace(0.0, 1.0, num_steps + 1) ** 2


def _log(num_steps: int, start: float, end: float) -> np.ndarray:
    """Geometric spacing `t_k = start (end/start)^{k/K}` (needs `start > 0`)."""
    if start <= 0:
        raise ValueError(f"the 'log' grid needs a positive start time, got {start!r}")
    return np.geomspace(start, end, num_steps + 1)


GRIDS: Registry[np.ndarray] = Registry("time grid")
GRIDS.register("uniform", _uniform)
GRIDS.register("quadratic", _quadratic)
GRIDS.register("log", _log)


def time_grid(num_steps: int, grid: str = "uniform", *, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """A time grid of `num_steps` steps from `start` to `end`, by name (`GRIDS`).

    Args:
        num_steps: number of steps `K ≥ 1`.
        grid: `"uniform"`, `"quadratic"` (finest near `start`) or `"log"` (geometric, `start > 0`).
        start: first time (the base's `t_start`).
        end: last time (1).

    Returns:
        Float64 numpy array `(K+1,)`, strictly increasing, with exact end points.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not start < end:
        raise ValueError(f"time grid: need start < end, got {start!r}, {end!r}")
    ts = np.asarray(GRIDS.get(grid, num_steps=int(num_steps), start=float(start), end=float(end)), np.float64)
    ts[0], ts[-1] = start, end
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"time grid {grid!r} with {num_steps} steps is not strictly increasing")
    return ts


def _check_grid(ts: Any, t_start: float) -> np.ndarray:
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a one-dimensional grid with at least 2 points, got shape {ts.shape}")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("ts must be strictly increasing")
    if not np.isclose(ts[-1], 1.0) or not np.isclose(ts[0], t_start):
        raise ValueError(f"ts must run from the base's t_start={t_start} to 1, got [{ts[0]}, {ts[-1]}]")
    return ts


# ---------------------------------------------------------------------------------------------
# the problem
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A tilted base process on a time grid: target `p*(x) ∝ p^base_K(x) exp(r(x))`, `Z = E_{p^base_K}[e^r]`.

    Args:
        name: id for records (e.g. the target name, or the fine-tuning task).
        kind: `"sampling"` or `"finetuning"`.
        base: the base process.
        ts: time grid `(K+1,)` from `base.t_start` to 1 (numpy float64; `times` gives the jnp float32 copy).
        tilt_fn: `r(x)` of ONE point, `()`.
        grad_tilt_fn: `∇r(x)`; default `jax.grad(tilt_fn)`.
        log_Z: `log Z` of the tilt if known (for sampling problems, the target's `log Z`).
        target: the sampled target (sampling problems), or an optional reference target (fine-tuning
            tasks with known tilted law), else None.
        description: one line for records.
    """

    name: str
    kind: str
    base: AbstractBaseProcess
    ts: np.ndarray
    tilt_fn: Callable[[jax.Array], jax.Array]
    grad_tilt_fn: Callable[[jax.Array], jax.Array] | None = None
    log_Z: float | None = None
    target: Target | None = None
    description: str = ""

    def __post_init__(self):
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"problem kind must be one of {PROBLEM_KINDS}, got {self.kind!r}")
        if not isinstance(self.base, AbstractBaseProcess):
            raise TypeError(f"base must be an AbstractBaseProcess, got {type(self.base).__name__}")
        object.__setattr__(self, "ts", _check_grid(self.ts, self.base.t_start))
        if self.grad_tilt_fn is None:
            object.__setattr__(self, "grad_tilt_fn", jax.grad(self.tilt_fn))
        if self.target is not None and self.target.dim != self.base.dim:
            raise ValueError(f"target dim {self.target.dim} does not match base dim {self.base.dim}")

    # -- shapes ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def num_steps(self) -> int:
        return int(self.ts.shape[0] - 1)

    @property
    def particles(self) -> ParticleSpec | None:
        return self.base.particles

    @property
    def times(self) -> jax.Array:
        """The grid as a float32 jnp array (what the integrators step on)."""
        return jnp.asarray(self.ts, jnp.float32)

    @functools.cached_property
    def chain(self) -> DiscreteChain:
        """The base's EM chain on `ts` (float32 constants, computed once; linear-Gaussian bases only)."""
        return self.base.discretise(self.ts)

    # -- the tilt ----------------------------------------------------------------------------
    def tilt(self, x: jax.Array) -> jax.Array:
        """`r(x)` of ONE point."""
        return self.tilt_fn(x)

    def grad_tilt(self, x: jax.Array) -> jax.Array:
        """`∇r(x)` of ONE point (projected to zero centre of mass for particle systems)."""
        return self.base.project(self.grad_tilt_fn(x))

    @property
    def has_log_target(self) -> bool:
        """True when `log γ̃ = r + log p^base_K` is available (the kernel form of the path weights)."""
        return self.base.has_discrete_chain

    def log_target(self, x: jax.Array) -> jax.Array:
        """Unnormalised log density of `p*`: `log γ̃(x) = r(x) + log p^base_K(x)` (`= log γ` for sampling)."""
        if self.kind == "sampling" and self.target is not None:
            return self.target.log_prob(x)
        return self.tilt(x) + gaussian_log_prob(x, 0.0, self.chain.marginal_vars[-1], self.base.dof)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (recorded with results)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "base": self.base.summary(),
            "num_steps": self.num_steps,
            "t_start": float(self.ts[0]),
            "log_Z": self.log_Z,
            "target": None if self.target is None else self.target.name,
        }


def _grid_for(base: AbstractBaseProcess, ts, num_steps: int, grid: str) -> np.ndarray:
    if ts is not None:
        return _check_grid(ts, base.t_start)
    return time_grid(num_steps, grid, start=base.t_start)


def sampling_problem(
    target: Target,
    base: AbstractBaseProcess,
    *,
    num_steps: int = 100,
    grid: str = "uniform",
    ts=None,
) -> Problem:
    """The problem of sampling `target` with `base`: `r = log γ - log p^base_K` (discrete terminal law).

    Args:
        target: the `Target` (its `particles` must match the base's).
        base: a base with a closed-form discrete chain (`"brownian"` or `"vp"`).
        num_steps: number of EM steps `K` (ignored when `ts` is given).
        grid: grid name (`GRIDS`).
        ts: an explicit grid `(K+1,)` from `base.t_start` to 1.

    Returns:
        A `Problem` with `log_Z = target.log_Z`.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be a targets.Target, got {type(target).__name__}")
    if target.dim != base.dim:
        raise ValueError(f"target {target.name!r} has dim {target.dim}, the base has dim {base.dim}")
    if target.particles != base.particles:
        raise ValueError(
            f"target {target.name!r} has particles {target.particles}, the base has {base.particles}; "
            "build the base with the target's ParticleSpec"
        )
    if not base.has_discrete_chain:
        raise ValueError(
            f"sampling needs a base with a known terminal law ('brownian' or 'vp'), got {base.kind!r}"
        )
    grid_ts = _grid_for(base, ts, num_steps, grid)
    # a Python float (weakly typed), so that the tilt keeps the dtype of x (float32, or float64 under x64)
    terminal_var = float(base.discretise(grid_ts).marginal_vars[-1])
    dof = base.dof
    log_prob = target.log_prob

    def tilt(x):
        # r = log γ - log N(x; 0, s_K I), s_K the EM chain's terminal variance (methods.md §10.7).
        base_log_prob = -0.5 * jnp.sum(x * x) / terminal_var - 0.5 * dof * jnp.log(
            2.0 * jnp.pi * terminal_var
        )
        return jnp.asarray(log_prob(x), base_log_prob.dtype) - base_log_prob

    return Problem(
        name=target.name,
        kind="sampling",
        base=base,
        ts=grid_ts,
        tilt_fn=tilt,
        log_Z=target.log_Z,
        target=target,
        description=f"sample {target.name} with a {base.kind} base, {len(grid_ts) - 1} {grid} steps",
    )


def finetuning_problem(
    base: AbstractBaseProcess,
    reward: Callable[[jax.Array], jax.Array],
    lam: float,
    *,
    num_steps: int = 100,
    grid: str = "uniform",
    ts=None,
    log_Z: float | None = None,
    target: Target | None = None,
    name: str = "finetuning",
    grad_reward: Callable[[jax.Array], jax.Array] | None = None,
) -> Problem:
    """Reward fine-tuning: `r = λ · reward`, target `p* ∝ p^base e^{λ reward}`.

    Args:
        base: the (memoryless) pretrained base process.
        reward: `reward(x)` of ONE point.
        lam: reward multiplier `λ` (the inverse temperature of the tilt).
        num_steps: EM steps (ignored when `ts` is given).
        grid: grid name (`GRIDS`); `"quadratic"` is advisable for the singular flow base.
        ts: an explicit grid.
        log_Z: `log E_{p^base}[e^{λ reward}]` when known.
        target: the tilted law as a `Target` when known (exact samples, metrics).
        name: id for records.
        grad_reward: `∇reward` if cheaper than autodiff.

    Returns:
        A `Problem` of kind `"finetuning"`.
    """
    if not callable(reward):
        raise TypeError("reward must be a callable reward(x) -> () of one point")
    lam = float(lam)
    grid_ts = _grid_for(base, ts, num_steps, grid)
    grad_tilt = None if grad_reward is None else (lambda x: lam * grad_reward(x))
    return Problem(
        name=name,
        kind="finetuning",
        base=base,
        ts=grid_ts,
        tilt_fn=lambda x: lam * reward(x),
        grad_tilt_fn=grad_tilt,
        log_Z=log_Z,
        target=target,
        description=f"fine-tune a {base.kind} base with lambda={lam}, {len(grid_ts) - 1} {grid} steps",
    )


def task_problem(
    task: Any,
    t0: float,
    *,
    num_steps: int = 100,
    grid: str = "uniform",
    ts=None,
    target: Target | None = None,
) -> Problem:
    """The fine-tuning Problem of a task with an exact pretrained flow (`targets.finetuning.FinetuneTask`).

    The base is the task's flow run with the memoryless schedule from `t0` (`MemorylessFlowBase`), started
    at the flow marginal `p_{t0}` (`task.marginal(t0)`, exact samples and density); the data law's score at
    `t = 1` comes from the velocity (`terminal_score_from_velocity=True`), never from the data density; the
    tilt is `λ·reward` with its closed-form gradient, and `log_Z` is the task's exact one.

    Args:
        task: the task (`dim`, `velocity`, `marginal`, `reward`, `grad_reward`, `lam`, `log_Z`, `name`).
        t0: the start time `t_0 ∈ (0, 1)` of the memoryless flow.
        num_steps: EM steps (ignored when `ts` is given).
        grid: grid name (`GRIDS`).
        ts: an explicit grid from `t0` to 1.
        target: the tilted law as a `Target` (exact samples, metrics), or None.
    """
    initial = task.marginal(float(t0))
    base = MemorylessFlowBase(
        task.dim,
        task.velocity,
        float(t0),
        initial_sample_fn=initial.sample,
        initial_log_prob_fn=initial.log_prob,
        terminal_score_from_velocity=True,
    )
    return finetuning_problem(
        base,
        task.reward,
        task.lam,
        num_steps=num_steps,
        grid=grid,
        ts=ts,
        log_Z=task.log_Z,
        target=target,
        name=task.name,
        grad_reward=task.grad_reward,
    )
