"""MCMC / SMC / AIS baselines, exported as `SPECS` and registered by `samplers` next to the learned losses.

| name           | family | weighted | what                                                          |
|----------------|--------|----------|---------------------------------------------------------------|
| `nuts`         | mcmc   | no       | blackjax NUTS, Stan window adaptation per warm-up round        |
| `mala`         | mcmc   | no       | blackjax MALA, dual-averaging step size per warm-up round      |
| `numpyro_nuts` | mcmc   | no       | numpyro NUTS (functional `hmc` kernel) on `U = -log γ`         |
| `smc`          | smc    | yes      | blackjax adaptive tempered SMC from `N(0, s² I)`, log Ẑ         |
| `ais`          | ais    | yes      | tempered AIS, fixed schedule, MALA or ULA (MCD, u = 0) moves   |

Builders take `(problem, config)` and use only `problem.target`. For MCMC baselines, `step` is
one warm-up round (a harness budget of `num_steps = 1` is the standard warm-up) and
`diagnostics(samples.x, config.num_chains, target)` gives ESS / R-hat for the result record;
SMC and AIS have no-op `step`s (budget `num_steps = 0`) and do all the work in `sample`.
Under an evaluation budget (`max_evals` in a suite) each scales its work with its `plan_budget`
rule (`samplers.baselines.budget`: AIS levels, SMC MCMC steps per stage, MCMC warm-up length and
thinning).
"""

from __future__ import annotations

import functools

from samplers.baselines.ais import AISConfig, build_ais, run_ais, run_ais_backward
from samplers.baselines.budget import BudgetPlan, plan_ais, plan_mcmc, plan_smc, replan_mcmc
from samplers.baselines.common import diagnostics, monte_carlo_standard_error
from samplers.baselines.mcmc import MALAConfig, MCMCInfo, MCMCState, NUTSConfig, build_mala, build_nuts
from samplers.baselines.numpyro_nuts import NumpyroNUTSConfig, build_numpyro_nuts
from samplers.baselines.smc import SMCConfig, SMCOutput, build_smc, run_smc
from samplers.method import MethodSpec

__all__ = [
    "SPECS",
    "AISConfig",
    "BudgetPlan",
    "MALAConfig",
    "MCMCInfo",
    "MCMCState",
    "NUTSConfig",
    "NumpyroNUTSConfig",
    "SMCConfig",
    "SMCOutput",
    "build_ais",
    "build_mala",
    "build_nuts",
    "build_numpyro_nuts",
    "build_smc",
    "diagnostics",
    "monte_carlo_standard_error",
    "run_ais",
    "run_ais_backward",
    "run_smc",
]

_MCMC_COST = (
    "log_prob and its gradient together (value_and_grad): 1 per chain at init, then per iteration the "
    "{per_iteration}; step = one warm-up round of num_warmup iterations per chain; sample = "
    "num_chains * ceil(num_samples / num_chains) * thinning iterations"
)


def _mcmc_diagnostics(x, config, target) -> dict[str, float]:
    """MCMC ESS / R-hat of the draws (draw-major layout over `config.num_chains` chains)."""
    return diagnostics(x, config.num_chains, target)


def _mcmc_spec(name, config_cls, build, *, per_iteration, pilot, reinit_per_round, description) -> MethodSpec:
    """The spec of a multi-chain MCMC baseline: one warm-up round per `step`, unweighted draws, ESS /
    R-hat diagnostics and the MCMC budget rule; only the cost per iteration and the budget pilot differ."""
    return MethodSpec(
        name=name,
        train_steps=1,
        family="mcmc",
        config_cls=config_cls,
        build=build,
        cost_model=_MCMC_COST.format(per_iteration=per_iteration),
        weighted=False,
        diagnostics=_mcmc_diagnostics,
        plan_budget=functools.partial(plan_mcmc, build=build, pilot=pilot, reinit_per_round=reinit_per_round),
        # MALA's plan is exact (one gradient per iteration); NUTS measures its path length again
        replan_sampling=functools.partial(replan_mcmc, build=build) if pilot else None,
        description=description,
    )


SPECS: tuple[MethodSpec, ...] = (
    _mcmc_spec(
        "nuts",
        NUTSConfig,
        build_nuts,
        per_iteration="number of leapfrog steps (NUTSInfo.num_integration_steps)",
        pilot=True,
        reinit_per_round=1,
        description=(
            "No-U-Turn Sampler (Hoffman & Gelman 2014) from blackjax, num_chains independent chains from "
            "N(0, init_scale² I); each step runs one Stan window adaptation (dual averaging towards "
            "target_acceptance_rate, windowed diagonal/dense inverse mass matrix) per chain; sample draws "
            "with fixed tuned parameters (draw-major layout, log_w = 0)."
        ),
    ),
    _mcmc_spec(
        "mala",
        MALAConfig,
        build_mala,
        per_iteration="single MALA proposal (1)",
        pilot=False,
        reinit_per_round=0,
        description=(
            "Metropolis-adjusted Langevin algorithm from blackjax (proposal x + ε ∇log γ + sqrt(2ε) ξ), "
            "num_chains chains; each step runs num_warmup iterations of dual averaging of ε towards the "
            "acceptance rate 0.574 per chain; sample draws with ε fixed (draw-major layout, log_w = 0)."
        ),
    ),
    _mcmc_spec(
        "numpyro_nuts",
        NumpyroNUTSConfig,
        build_numpyro_nuts,
        per_iteration="number of leapfrog steps (HMCState.num_steps)",
        pilot=True,
        reinit_per_round=0,
        description=(
            "NUTS from numpyro on the potential U = -log γ, through numpyro.infer.hmc.hmc (the functional "
            "kernel numpyro.infer.MCMC drives), so it runs inside jit/scan; each step is one numpyro "
            "warm-up (Stan windows) per chain; sample draws with adaptation off."
        ),
    ),
    MethodSpec(
        name="smc",
        train_steps=0,
        family="smc",
        config_cls=SMCConfig,
        build=build_smc,
        cost_model=(
            "per particle per tempering stage: 1 energy (ESS bisection) + 1 energy "
            "and gradient (MCMC init) + "
            "num_mcmc_steps * L energies and gradients (L = num_integration_steps for HMC, 1 for MALA) + "
            "1 energy (reweighting); no training cost"
        ),
        weighted=True,
        plan_budget=plan_smc,
        description=(
            "Adaptive tempered SMC (blackjax.adaptive_tempered_smc, with the #914 sign fix) on the geometric "
            "path from N(0, s² I) to γ, ESS-adaptive temperatures, HMC or MALA moves with step size (and HMC "
            "diagonal mass matrix) adapted from the particles; log Ẑ = sum of tempering increments; "
            "log_w = log Ẑ + log(N W_i) so that mean(exp(log_w)) = Ẑ."
        ),
    ),
    MethodSpec(
        name="ais",
        train_steps=0,
        family="ais",
        config_cls=AISConfig,
        build=build_ais,
        cost_model="per path: 1 energy and gradient at x_0 + 1 per transition (num_levels * num_mcmc_steps)",
        weighted=True,
        plan_budget=plan_ais,
        description=(
            "Annealed importance sampling / Jarzynski on the geometric path from "
            "N(0, s² I) to γ with a fixed "
            "linear or geometric β schedule; MALA transitions with Neal's weights, "
            "or ULA transitions with the "
            "MCD (zero-control CMCD) weights; E[exp(log_w)] = Z exactly for the "
            "discrete chain; backward paths "
            "from target samples for EUBO / Crooks."
        ),
    ),
)
