"""Budget rules: scale the work of an MCMC / SMC / AIS baseline to an evaluation budget.

A budget `B` counts energy + gradient evaluations (`Cost.energy_evals + Cost.grad_evals`) of
everything a cell spends, planning pilot included, for `N = num_samples` output samples. Every
baseline here evaluates `log γ̃` and its gradient together (`value_and_grad`), so one such call
counts 2. Each rule returns a `BudgetPlan`: the config to run, the cost of any pilot run it made
(the harness adds it to the cell's cost), and notes for the record (the predicted spend, the
knobs chosen). The harness records what was actually spent; the rules only aim at `B`:

- **AIS** (deterministic cost, exact up to rounding): a path costs `2 (1 + K m)` evaluations
  (`m = num_mcmc_steps`), so `K = num_levels = floor((B / (2N) − 1) / m)`.
- **SMC** (adaptive number of stages `T`): a particle costs `4 + 2 m L` evaluations per stage
  (`L` = leapfrog steps per HMC move, 1 for MALA; `smc.py`). A pilot run with
  `min(N, SMC_PILOT_PARTICLES)` particles and the given config measures `T`; then
  `num_mcmc_steps = m = floor(((B − pilot) / (N T) − 4) / (2L))`. `T` of the ESS-adaptive schedule
  hardly depends on `N` or `m`, so the spend lands near `B`; it is recorded exactly.
- **Chain MCMC** (NUTS from blackjax or numpyro, MALA): `C = num_chains` chains, `D = ceil(N / C)`
  draws each. Per chain: 1 evaluation pair at init, `W = num_warmup` warm-up iterations (plus one
  re-initialisation for blackjax's window adaptation) and `D t` sampling iterations
  (`t = thinning`), each costing `L̄` pairs (`L̄` = 1 for MALA; for NUTS the mean number of
  leapfrog steps, unknown in advance). For NUTS a pilot (init, one warm-up round of
  `MCMC_PILOT_WARMUP` iterations, `MCMC_PILOT_WARMUP` draws with the tuned parameters) measures
  `L̄_w` (warm-up) and `L̄_s` (after adaptation), and every iteration is priced at
  `L̄ = max(L̄_w, L̄_s)` (next paragraph). With `I` the iterations per chain the rest of the budget
  pays for, half go to sampling (Stan's 1:1 warm-up : sampling split):
  `t = max(1, floor(I / (2D)))`, `W = max(MCMC_MIN_WARMUP, I − D t)`.

The NUTS pilot's 50-iteration adaptation ends with a larger step size than a full-length window
adaptation, so it underestimates `L̄_s` on harder targets (gmm9: 2.6 in the pilot, 5.5 after a
7000-iteration warm-up; with the pilot's plan the standard suite's NUTS cells spent up to 1.9 B
(blackjax) and 2.2 B (numpyro)).
So NUTS prices its warm-up at the larger of the pilot's two counts (the pilot's own warm-up runs
at the small early step sizes, nearer to what a full adaptation ends with), and plans twice
(`replan_mcmc`): the pilot sets the warm-up length, and after the real warm-up
`MCMC_CALIBRATION` iterations per chain with the tuned parameters measure `L̄` again (the final
step size is the dual-averaging mean, smaller than the iterates of the warm-up's last window, so
that window's leapfrog count still underestimates it: 26 against 43, numpyro on funnel10), and the thinning is
set from what is left of the budget, `R`: `t = max(1, floor((R − calibration) / (2 C D L̄)))`. The
warm-up's own overrun is then paid by fewer sampling iterations instead of by the budget.
The pilot's cost grows with `C`: at the default 64 chains it alone spent about 55,000 of a
60,000-evaluation budget on a 2-D mixture (measured with 4 chains otherwise), so a NUTS budget
must be well above the pilot's cost.

A budget too small for the minimum work (AIS `K = 1`, SMC `m = 1`, MCMC `t = 1` and
`W = MCMC_MIN_WARMUP`) runs that minimum and says so in the notes (`feasible: false`); the
recorded spend then exceeds `B`. The pilots are wasted work, counted in full: an honest price of
not knowing `T` or `L̄` in advance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax

from samplers.baselines.ais import AISConfig
from samplers.baselines.smc import KERNELS, SMCConfig, run_smc
from samplers.method import Cost

__all__ = [
    "MCMC_CALIBRATION",
    "MCMC_MIN_WARMUP",
    "MCMC_PILOT_WARMUP",
    "SMC_PILOT_PARTICLES",
    "BudgetPlan",
    "evals",
    "plan_ais",
    "plan_mcmc",
    "plan_smc",
    "replan_mcmc",
]

SMC_PILOT_PARTICLES = 128
MCMC_PILOT_WARMUP = 50
MCMC_MIN_WARMUP = 20
MCMC_CALIBRATION = 5


class BudgetPlan(NamedTuple):
    """What a budget rule returns.

    Attributes:
        config: the config to run (the input config with the budget-derived fields replaced).
        cost: the cost already spent by the rule (pilot runs); zero for exact rules.
        notes: JSON-able facts for the record: `predicted_evals`, `feasible`, the chosen knobs,
            and the pilot's measurements.
    """

    config: Any
    cost: Cost
    notes: dict[str, Any]


def evals(cost: Cost) -> float:
    """Budget units of a cost: energy + gradient evaluations (`Cost.budget_evals`)."""
    return cost.budget_evals()


def _check(max_evals: float, num_samples: int) -> None:
    if not (max_evals > 0 and math.isfinite(max_evals)):
        raise ValueError(f"max_evals must be a positive finite number, got {max_evals!r}")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


def plan_ais(
    key: jax.Array, problem: Any, config: AISConfig, max_evals: float, num_samples: int
) -> BudgetPlan:
    """AIS: `num_levels = floor((B / (2N) − 1) / num_mcmc_steps)` (exact cost model; no pilot)."""
    del key, problem
    _check(max_evals, num_samples)
    m = config.num_mcmc_steps
    levels = math.floor((max_evals / (2 * num_samples) - 1) / m)
    feasible = levels >= 1
    levels = max(levels, 1)
    planned = dataclasses.replace(config, num_levels=levels)
    predicted = 2 * num_samples * (1 + levels * m)
    notes = {"num_levels": levels, "predicted_evals": float(predicted), "feasible": feasible}
    return BudgetPlan(planned, Cost.zero(), notes)


def plan_smc(
    key: jax.Array, problem: Any, config: SMCConfig, max_evals: float, num_samples: int
) -> BudgetPlan:
    """SMC: `num_mcmc_steps` from the budget and the stage count `T` of a pilot run (module docstring)."""
    _check(max_evals, num_samples)
    pilot_n = min(num_samples, SMC_PILOT_PARTICLES)
    out = jax.jit(lambda k: run_smc(k, problem.target, config, pilot_n))(key)
    stages = max(int(out.num_stages), 1)
    pilot_cost = out.cost
    steps_per_move = KERNELS[config.kernel].integration_steps(config)
    remaining = max_evals - evals(pilot_cost)
    m = math.floor((remaining / (num_samples * stages) - 4) / (2 * steps_per_move))
    feasible = m >= 1
    m = max(m, 1)
    planned = dataclasses.replace(config, num_mcmc_steps=m)
    predicted = evals(pilot_cost) + num_samples * stages * (4 + 2 * m * steps_per_move)
    notes = {
        "num_mcmc_steps": m,
        "pilot_particles": pilot_n,
        "pilot_num_stages": stages,
        "pilot_evals": evals(pilot_cost),
        "predicted_evals": float(predicted),
        "feasible": feasible,
    }
    return BudgetPlan(planned, pilot_cost, notes)


def _chain_pilot(key, problem, config, build) -> tuple[Cost, float, float]:
    """Init + one warm-up round + draws with the tuned parameters; `(cost, L̄_warmup, L̄_sample)`."""
    pilot_config = dataclasses.replace(config, num_warmup=MCMC_PILOT_WARMUP, thinning=1)
    method = build(problem, pilot_config)
    k_init, k_step, k_sample = jax.random.split(key, 3)
    state = jax.jit(method.init)(k_init)
    state, info = jax.jit(method.step)(k_step, state)
    draws_cost, leap_sample = _draw_leapfrogs(method, k_sample, state, MCMC_PILOT_WARMUP * config.num_chains)
    return state.cost + draws_cost, float(info.num_integration_steps), leap_sample


def _draw_leapfrogs(method, key, state, num: int) -> tuple[Cost, float]:
    """`num` draws from `state` with `method`'s tuned parameters: their cost and the mean number of
    leapfrog steps (gradient evaluations) per draw."""
    samples = jax.jit(method.sample, static_argnums=2)(key, state, num)
    return samples.cost, float(samples.cost.grad_evals) / num


def plan_mcmc(
    key: jax.Array,
    problem: Any,
    config: Any,
    max_evals: float,
    num_samples: int,
    *,
    build: Any,
    pilot: bool,
    reinit_per_round: int,
) -> BudgetPlan:
    """Chain MCMC: `num_warmup` and `thinning` from the budget (module docstring).

    Args:
        build: the method builder `(problem, config) -> Method` (used by the pilot).
        pilot: measure `L̄` with a pilot run (NUTS); `False` means `L̄ = 1` (MALA).
        reinit_per_round: value_and_grad calls per chain per warm-up round outside the
            iterations (1 for blackjax's window adaptation, 0 otherwise).
    """
    _check(max_evals, num_samples)
    chains = config.num_chains
    draws = -(-num_samples // chains)
    if pilot:
        pilot_cost, leap_warmup, leap_sample = _chain_pilot(key, problem, config, build)
    else:
        pilot_cost, leap_warmup, leap_sample = Cost.zero(), 1.0, 1.0
    leap_warmup, leap_sample = max(leap_warmup, 1.0), max(leap_sample, 1.0)
    fixed = 2 * chains * (1 + reinit_per_round)  # init + re-initialisation, in evaluations
    remaining = max_evals - evals(pilot_cost) - fixed
    # Every iteration priced at max(L̄_w, L̄_s): the pilot's L̄_s, after a 50-iteration adaptation,
    # underestimates what a full-length warm-up ends with (module docstring).
    per_iter = 2 * chains * max(leap_warmup, leap_sample)
    iterations = math.floor(remaining / per_iter)
    thinning = max(1, iterations // (2 * draws))
    warmup = iterations - draws * thinning
    feasible = warmup >= MCMC_MIN_WARMUP
    warmup = max(warmup, MCMC_MIN_WARMUP)
    predicted = evals(pilot_cost) + fixed + per_iter * (warmup + draws * thinning)
    planned = dataclasses.replace(config, num_warmup=int(warmup), thinning=int(thinning))
    notes = {
        "num_warmup": int(warmup),
        "thinning": int(thinning),
        "pilot_evals": evals(pilot_cost),
        "pilot_leapfrogs_warmup": leap_warmup,
        "pilot_leapfrogs_sample": leap_sample,
        "predicted_evals": float(predicted),
        "feasible": feasible,
    }
    return BudgetPlan(planned, pilot_cost, notes)


def replan_mcmc(
    key: jax.Array,
    problem: Any,
    config: Any,
    state: Any,
    remaining_evals: float,
    num_samples: int,
    *,
    build: Any,
) -> BudgetPlan:
    """Chain MCMC after its warm-up (module docstring): `MCMC_CALIBRATION` iterations per chain
    with the tuned parameters from the warmed-up `state` measure `L̄` (their cost is counted, in the
    plan's `cost`), then `thinning = max(1, floor((R − calibration) / (2 C D L̄)))`."""
    chains = config.num_chains
    draws = -(-num_samples // chains)
    probe = build(problem, dataclasses.replace(config, thinning=1))
    cost, leap = _draw_leapfrogs(probe, key, state, MCMC_CALIBRATION * chains)
    leap = max(leap, 1.0)
    per_thin = 2 * chains * draws * leap
    left = remaining_evals - evals(cost)
    thinning = math.floor(left / per_thin)
    feasible = thinning >= 1
    thinning = max(thinning, 1)
    notes = {
        "thinning": int(thinning),
        "remaining_evals": float(remaining_evals),
        "calibration_evals": evals(cost),
        "calibration_leapfrogs": leap,
        "predicted_sample_evals": float(per_thin * thinning),
        "feasible": feasible,
    }
    return BudgetPlan(dataclasses.replace(config, thinning=int(thinning)), cost, notes)
