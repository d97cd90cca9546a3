"""Adaptive tempered SMC from blackjax, with log Z from the tempering increments.

Path. Geometric tempering between the normalised Gaussian `p_0 = N(0, s² I)` (`s = init_scale`)
and the working density `γ̃` (`samplers.baselines.common`: the target, or its
centre-of-mass-completed version for particle systems, with `∫ γ̃ = Z` in both cases):

    π_β(x) ∝ p_0(x) · exp(β ℓ(x)),      ℓ(x) = log γ̃(x) − log p_0(x),      0 = β_0 < β_1 < ... < β_T = 1,

i.e. blackjax's `logprior_fn = log p_0` and `loglikelihood_fn = ℓ`, so `Z_{β=1} / Z_{β=0} = Z`.

One stage (blackjax 1.7.1 `adaptive_tempered_smc`, `smc.base.step`): choose `δ = β_{t+1} − β_t`
by bisection so that the ESS of the incremental weights `δ ℓ(x_i)` equals `target_ess · N`;
resample (`resampling`) the particles by their current weights; move each with `num_mcmc_steps`
steps of an MCMC kernel invariant for `π_{β_t}`; reweight by `exp(δ ℓ(x_i))`. The stage's
`log_likelihood_increment` is `log((1/N) Σ_i exp(δ ℓ(x_i)))` (computed after resampling, so with
uniform incoming weights), and

    log Ẑ = Σ_t log_likelihood_increment_t          (E[Ẑ] = Z; log Ẑ is biased low by ≈ Var/2).

Sign convention: blackjax PR #915 (issue #914, in 1.7.1) made the ESS solver use `+δ ℓ`, the
same sign as the weight update; before it, `δ` was solved for `−δ ℓ`, which is invisible on
targets where `ℓ` is symmetric about its particle mean and wrong otherwise. The tests check
log Z on an asymmetric target.

Weights returned. The particles after the last stage are NOT resampled; with their normalised
weights `W_i` (`Σ W_i = 1`), `Samples.log_w_i = log Ẑ + log(N W_i)`, so that

    (1/N) Σ_i exp(log_w_i) = Ẑ,          exp(log_w_i) / Σ_j exp(log_w_j) = W_i,

i.e. the generic estimators (`log Ẑ = LSE(log_w) − log N`, self-normalised expectations, ESS)
recover exactly the SMC estimates. Unlike path weights of independent trajectories, these
weights are dependent across particles (resampling), so the spread of `log_w` is NOT a standard
error of `log Ẑ`: repeat over seeds for that.

Kernels (registry `KERNELS`): "hmc" (blackjax HMC, `num_integration_steps` leapfrog steps of size
`ε`; with `adapt_mass_matrix`, a diagonal inverse mass matrix equal to the weighted particle
variances of the current stage, Buchholz, Chopin & Jacob 2021 §3.1) and "mala" (blackjax MALA,
proposal `x + ε ∇log π_β + sqrt(2ε) ξ`). With `adapt_step_size`, after every stage
`ε ← ε · exp(ᾱ − α*)` with `ᾱ` the mean acceptance rate of the stage (blackjax
`update_scale_from_acceptance_rate`, pooled over particles). Adapting from the particles makes
the sampler an adaptive SMC: consistent, with a small extra bias of `Ẑ`.

Method semantics: SMC has nothing to train: `init` and `step` are no-ops with zero cost (a
harness budget of `num_steps = 0` is natural); `sample(key, state, num_samples)` runs the whole
SMC with `num_particles = num_samples` and returns the final weighted particles.

Cost (per particle per stage, every `log_prob` call counted as one energy evaluation, and
`value_and_grad` as one energy and one gradient evaluation): 1 energy for the ESS bisection
(`ℓ` is evaluated once, the bisection reuses it), 1 energy + 1 gradient to initialise the MCMC
state, `num_mcmc_steps · L` energies and gradients for the moves (`L = num_integration_steps` for
HMC, 1 for MALA), 1 energy for the reweighting.

References:
    Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS-B 2006.
    Jasra, Stephens, Doucet & Tsagaris, "Inference for Lévy-driven stochastic volatility models
    via adaptive SMC", Scand. J. Stat. 2011 (ESS-adaptive tempering).
    Buchholz, Chopin & Jacob, "Adaptive tuning of Hamiltonian Monte Carlo within SMC",
    Bayesian Analysis 2021.
    blackjax-devs/blackjax issue #914 / PR #915 (tempering sign fix).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import blackjax.smc.resampling as resampling
import jax
import jax.numpy as jnp
from blackjax.smc.tempered import TemperedSMCState
from blackjax.smc.tuning.from_kernel_info import update_scale_from_acceptance_rate

from samplers.baselines.common import (
    gaussian_log_prob,
    no_training_method,
    working_density,
)
from samplers.fields import POSITIVE, Checked, field, integer, one_of, within
from samplers.method import Cost, Method, Samples
from samplers.parallel import shard_batch

__all__ = ["KERNELS", "RESAMPLING", "SMCConfig", "SMCKernel", "SMCOutput", "build_smc", "run_smc"]


class SMCKernel(NamedTuple):
    """An MCMC kernel usable inside tempered SMC.

    Attributes:
        step_fn: blackjax kernel `(key, state, logdensity_fn, **parameters) -> (state, info)`;
            `info.acceptance_rate` is read.
        init_fn: `(position, logdensity_fn) -> state` (one `value_and_grad`).
        parameters: `(step_size, particles, weights, config) -> dict` of the kernel's parameters
            for one stage (without the leading particle axis).
        integration_steps: `config -> int`, `value_and_grad` evaluations per MCMC step.
        target_acceptance_rate: default `α*` of the step-size adaptation.
    """

    step_fn: Callable
    init_fn: Callable
    parameters: Callable[..., dict]
    integration_steps: Callable[[Any], int]
    target_acceptance_rate: float


def _weighted_variance(particles: jax.Array, weights: jax.Array) -> jax.Array:
    mean = weights @ particles
    return weights @ (particles - mean) ** 2


def _hmc_parameters(step_size, particles, weights, config):
    if config.adapt_mass_matrix:
        inverse_mass_matrix = _weighted_variance(particles, weights)
    else:
        inverse_mass_matrix = jnp.ones(particles.shape[-1], particles.dtype)
    return {
        "step_size": step_size,
        "inverse_mass_matrix": inverse_mass_matrix,
        "num_integration_steps": jnp.asarray(config.num_integration_steps, jnp.int32),
    }


KERNELS: dict[str, SMCKernel] = {
    # 0.65: optimal HMC acceptance rate in high dimension (Beskos et al., Bernoulli 2013).
    "hmc": SMCKernel(
        step_fn=blackjax.hmc.build_kernel(),
        init_fn=blackjax.hmc.init,
        parameters=_hmc_parameters,
        integration_steps=lambda config: config.num_integration_steps,
        target_acceptance_rate=0.65,
    ),
    # 0.574: optimal MALA acceptance rate (Roberts & Rosenthal, JRSS-B 1998).
    "mala": SMCKernel(
        step_fn=blackjax.mala.build_kernel(),
        init_fn=blackjax.mala.init,
        parameters=lambda step_size, particles, weights, config: {"step_size": step_size},
        integration_steps=lambda config: 1,
        target_acceptance_rate=0.574,
    ),
}

RESAMPLING: dict[str, Callable] = {
    "systematic": resampling.systematic,
    "stratified": resampling.stratified,
    "multinomial": resampling.multinomial,
    "residual": resampling.residual,
}


@dataclasses.dataclass(frozen=True)
class SMCConfig(Checked):
    """Adaptive tempered SMC.

    Attributes:
        kernel: MCMC kernel, a key of `KERNELS` ("hmc" or "mala").
        init_scale: `s` of the initial law `N(0, s² I)` (and of the centre-of-mass factor for
            particle systems); in the benchmark its default follows the problem's `sigma`.
        target_ess: ESS fraction in (0, 1) that fixes each tempering increment.
        num_mcmc_steps: MCMC steps per particle per stage.
        step_size: initial step size `ε` of the kernel.
        num_integration_steps: leapfrog steps per HMC step (ignored by MALA).
        adapt_step_size: adapt `ε` after every stage towards `target_acceptance_rate`.
        adapt_mass_matrix: HMC only: diagonal inverse mass matrix from the particle variances.
        target_acceptance_rate: `α*`; `None` uses the kernel's default (HMC 0.65, MALA 0.574).
        resampling: a key of `RESAMPLING`.
        max_num_stages: safety cap on the number of tempering stages; a run that hits it has not
            reached `β = 1` and its `log Ẑ` is reported as NaN.
    """

    kernel: str = field("hmc", one_of(KERNELS))
    init_scale: float = field(1.0, POSITIVE, follows="sigma")
    target_ess: float = field(0.5, within(0, 1, closed="neither"))
    num_mcmc_steps: int = field(10, integer(1))
    step_size: float = field(0.1, POSITIVE)
    num_integration_steps: int = field(5, integer(1))
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    target_acceptance_rate: float | None = field(None, within(0, 1, closed="neither", optional=True))
    resampling: str = field("systematic", one_of(RESAMPLING))
    max_num_stages: int = field(1000, integer(1))


class SMCOutput(NamedTuple):
    """Everything one SMC run produces.

    Attributes:
        x: final particles `(num_particles, dim)` (projected for particle systems).
        log_w: `log Ẑ + log(N W_i)` (module docstring).
        log_Z: `log Ẑ`, NaN if the run did not reach `β = 1` or the bisection failed.
        num_stages: number of tempering stages run.
        acceptance_rate: mean MCMC acceptance rate over stages.
        step_size: the final step size.
        cost: energy / gradient evaluations of the run.
    """

    x: jax.Array
    log_w: jax.Array
    log_Z: jax.Array
    num_stages: jax.Array
    acceptance_rate: jax.Array
    step_size: jax.Array
    cost: Cost


class _Carry(NamedTuple):
    key: jax.Array
    state: TemperedSMCState
    step_size: jax.Array
    log_Z: jax.Array
    num_stages: jax.Array
    acceptance_sum: jax.Array


def run_smc(key: jax.Array, target: Any, config: SMCConfig, num_particles: int) -> SMCOutput:
    """Run adaptive tempered SMC from `N(0, s² I)` to `target` with `num_particles` particles.

    Jittable with `num_particles` static. See the module docstring for the maths.
    """
    kernel = KERNELS[config.kernel]
    scale = config.init_scale
    log_prob, project = working_density(target, scale)
    log_prior = lambda x: gaussian_log_prob(x, scale)
    log_likelihood = lambda x: log_prob(x) - log_prior(x)
    target_acceptance = config.target_acceptance_rate
    if target_acceptance is None:
        target_acceptance = kernel.target_acceptance_rate
    smc_step = blackjax.adaptive_tempered_smc.build_kernel(
        log_prior,
        log_likelihood,
        kernel.step_fn,
        kernel.init_fn,
        RESAMPLING[config.resampling],
        config.target_ess,
    )

    key_init, key_run = jax.random.split(key)
    particles = scale * shard_batch(jax.random.normal(key_init, (num_particles, target.dim)))
    dtype = particles.dtype
    uniform = jnp.full((num_particles,), 1.0 / num_particles, dtype)
    state = TemperedSMCState(particles, uniform, jnp.zeros((), dtype))

    def running(carry: _Carry) -> jax.Array:
        return (carry.state.tempering_param < 1.0) & (carry.num_stages < config.max_num_stages)

    def stage(carry: _Carry) -> _Carry:
        key, key_stage = jax.random.split(carry.key)
        parameters = kernel.parameters(carry.step_size, carry.state.particles, carry.state.weights, config)
        # A leading axis of length 1 marks a parameter shared by all particles (blackjax convention).
        parameters = jax.tree.map(lambda p: jnp.asarray(p)[None], parameters)
        state, info = smc_step(key_stage, carry.state, config.num_mcmc_steps, parameters)
        acceptance = jnp.mean(info.update_info.acceptance_rate)
        step_size = carry.step_size
        if config.adapt_step_size:
            step_size = update_scale_from_acceptance_rate(
                step_size[None], acceptance[None], target_acceptance
            )[0]
        state = TemperedSMCState(state.particles, state.weights, state.tempering_param.astype(dtype))
        return _Carry(
            key,
            state,
            step_size.astype(dtype),
            carry.log_Z + info.log_likelihood_increment.astype(dtype),
            carry.num_stages + 1,
            carry.acceptance_sum + acceptance.astype(dtype),
        )

    zero = jnp.zeros((), dtype)
    carry = _Carry(key_run, state, jnp.asarray(config.step_size, dtype), zero, jnp.zeros((), jnp.int32), zero)
    carry = jax.lax.while_loop(running, stage, carry)

    finished = carry.state.tempering_param >= 1.0
    log_Z = jnp.where(finished, carry.log_Z, jnp.nan)
    log_w = log_Z + jnp.log(num_particles * carry.state.weights)
    num_stages = carry.num_stages
    per_particle_stage = (
        3 + config.num_mcmc_steps * kernel.integration_steps(config),
        1 + config.num_mcmc_steps * kernel.integration_steps(config),
    )
    evals = num_particles * num_stages.astype(dtype)
    cost = Cost.of(energy_evals=evals * per_particle_stage[0], grad_evals=evals * per_particle_stage[1])
    return SMCOutput(
        x=project(carry.state.particles),
        log_w=log_w,
        log_Z=log_Z,
        num_stages=num_stages,
        acceptance_rate=carry.acceptance_sum / jnp.maximum(num_stages, 1).astype(dtype),
        step_size=carry.step_size,
        cost=cost,
    )


def build_smc(problem: Any, config: SMCConfig) -> Method:
    """Adaptive tempered SMC on `problem.target` as a Method (no training; see module docstring)."""
    target = problem.target

    def sample(key: jax.Array, num_samples: int) -> Samples:
        out = run_smc(key, target, config, num_samples)
        return Samples(out.x, out.log_w, out.cost)

    return no_training_method(sample)
