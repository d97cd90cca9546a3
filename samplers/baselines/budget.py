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
  `L̄_w` (warm-up) and `L̄_s` (after adaptation). With `I` the iterations per chain the rest of the
  budget pays for, half go to sampling (Stan's 1:1 warm-up : sampling split):
  `t = max(1, floor(I / (2D)))`, `W = max(MCMC_MIN_WARMUP, I − D t)`.

Known limitation (measured in `results/runs/equal_budget`): the NUTS pilot's 50-iteration
adaptation ends with a larger step size than a full-length window adaptation, so `L̄_s` can be
underestimated on harder targets (gmm9: 2.6 in the pilot, 5.5 after a 7000-iteration warm-up,
spend 1.7 to 2.1 B); on the correlated Gaussian the spend was within 7 % of `B`. A longer pilot, or
re-planning the thinning after the real warm-up, would tighten it. Those figures were measured with
4 chains; the pilot's cost grows with `C`: at the default 64 chains it alone spent about 55,000 of a
60,000-evaluation budget on a 2-D mixture, so a NUTS budget must be well above the pilot's cost.

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
    "MCMC_MIN_WARMUP",
    "MCMC_PILOT_WARMUP",
    "SMC_PILOT_PARTICLES",
    "BudgetPlan",
    "evals",
    "plan_ais",
    "plan_mcmc",
    "plan_smc",
]

SMC_PILOT_PARTICLES = 128
MCMC_PILOT_WARMUP = 50
MCMC_MIN_WARMUP = 20


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
    num_draws = MCMC_PILOT_WARMUP * config.num_chains
    samples = jax.jit(method.sample, static_argnums=2)(k_sample, state, num_draws)
    leap_sample = float(samples.cost.grad_evals) / num_draws
    return state.cost + samples.cost, float(info.num_integration_steps), leap_sample


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
    # Warm-up iterations beyond the pilot's length are priced at the adapted L̄_s (the early,
    # expensive part of adaptation is priced at L̄_w); sampling at L̄_s.
    per_iter = 2 * chains * leap_sample
    head = MCMC_PILOT_WARMUP * 2 * chains * (leap_warmup - leap_sample)
    iterations = math.floor((remaining - head) / per_iter)
    thinning = max(1, iterations // (2 * draws))
    warmup = iterations - draws * thinning
    feasible = warmup >= MCMC_MIN_WARMUP
    warmup = max(warmup, MCMC_MIN_WARMUP)

    def warmup_cost(w: int) -> float:
        early = min(w, MCMC_PILOT_WARMUP)
        return 2 * chains * (early * leap_warmup + (w - early) * leap_sample)

    predicted = evals(pilot_cost) + fixed + warmup_cost(warmup) + per_iter * draws * thinning
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
