"""Multi-chain MCMC baselines from blackjax: NUTS with Stan window adaptation, MALA with dual averaging.

Both run `num_chains` independent chains (`jax.vmap` over chains) on the working density `γ̃` of
`samplers.baselines.common` (the target itself, or its centre-of-mass-completed version for
particle systems), and plug into the Method contract as follows:

- `init(key)`: draws the chains' starting points from `N(0, init_scale² I)` and evaluates
  `log γ̃` and its gradient there (1 energy + 1 gradient evaluation per chain).
- `step(key, state)`: ONE WARM-UP ROUND of `num_warmup` iterations per chain with the library's
  adaptation, started from the current chain positions and seeded with the current tuned
  parameters. NUTS: `blackjax.window_adaptation` (Stan's windowed step-size dual averaging and
  diagonal/dense inverse-mass-matrix estimation); MALA: `blackjax` dual averaging
  (`dual_averaging_adaptation`) of the step size towards the acceptance rate 0.574
  (Roberts & Rosenthal 1998). Each chain is adapted on its own. A harness training budget of
  `num_steps = 1` is the standard single warm-up; more steps run further warm-up rounds (further
  burn-in and re-estimated parameters). Without any `step` the chains sample with the initial
  parameters (`initial_step_size`, identity mass matrix) from their starting points.
- `sample(key, state, num_samples)`: runs every chain `ceil(num_samples / num_chains) · thinning`
  further iterations with the tuned parameters fixed (a valid, non-adaptive Markov chain) and
  keeps every `thinning`-th state. `Samples.x` is draw-major (row `i · num_chains + c` is draw `i`
  of chain `c`; see `common.diagnostics` for ESS / R-hat), `log_w = 0` (MCMC draws are
  unweighted: `weighted=False` in the spec).

Cost: every kernel here evaluates `log γ̃` and its gradient together (`jax.value_and_grad`), so
`energy_evals = grad_evals` = 1 per chain per (re-)initialisation plus, per iteration, the
number of leapfrog steps (NUTS, `info.num_integration_steps`) or 1 (MALA). The counts of a
`sample` call cover all `num_chains · ceil(num_samples / num_chains) · thinning` iterations.

Chain count and budgets. NUTS and MALA run 64 chains by default, so that the chain count never
bounds mode coverage (C chains started from one broad Gaussian can visit at most about C isolated
modes; 4 chains could never cover an 8-mode target). Warm-up is per chain: every chain runs
`num_warmup` adaptation iterations (total C · W iterations), and the N output samples are split as D
= ceil(N / C) draws per chain (2000 samples: 32 draws from each of 64 chains; R-hat needs at least
4). Under an evaluation budget B (`samplers.baselines.budget.plan_mcmc`) the budget is divided
evenly among the chains: after the pilot and the initialisations each chain gets I = B' / (2 C L̄)
iterations, half of them sampling (thinning t = floor(I / 2D)) and the rest warm-up (W = I − D t, at
least `MCMC_MIN_WARMUP`), so more chains mean shorter chains at the same B.

References:
    Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014 (NUTS, dual averaging).
    Stan Reference Manual, "HMC algorithm parameters" (windowed warm-up).
    Roberts & Tweedie, "Exponential convergence of Langevin distributions", Bernoulli 1996 (MALA).
    Cabezas et al., "BlackJAX: Composable Bayesian inference in JAX", 2024.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.adaptation.step_size import dual_averaging_adaptation

from samplers.baselines.common import working_density
from samplers.fields import POSITIVE, Checked, field, integer, within
from samplers.method import Cost, Method, Samples
from samplers.parallel import shard_batch
from samplers.promotion import standard_promotion

__all__ = [
    "ChainConfig",
    "ChainKernel",
    "ChainStats",
    "MALAConfig",
    "MCMCInfo",
    "MCMCState",
    "NUTSConfig",
    "build_chain_method",
    "build_mala",
    "build_nuts",
]


class MCMCState(NamedTuple):
    """State of a multi-chain MCMC baseline.

    Attributes:
        chains: the library's chain states, leading axis `num_chains`.
        parameters: tuned kernel parameters per chain (`step_size` `(num_chains,)`, and for NUTS
            `inverse_mass_matrix` `(num_chains, dim)` or `(num_chains, dim, dim)`).
        num_rounds: number of warm-up rounds done (int32 scalar).
        cost: cumulative cost of initialisation and warm-up.
    """

    chains: Any
    parameters: dict[str, jax.Array]
    num_rounds: jax.Array
    cost: Cost


class MCMCInfo(NamedTuple):
    """What one warm-up round reports (means over chains and iterations).

    Attributes:
        acceptance_rate: mean Metropolis acceptance probability during the round.
        step_size: mean over chains of the tuned step size after the round.
        num_integration_steps: mean number of leapfrog steps per iteration (1 for MALA).
        num_divergent: number of divergent transitions in the round, summed over chains.
    """

    acceptance_rate: jax.Array
    step_size: jax.Array
    num_integration_steps: jax.Array
    num_divergent: jax.Array


class ChainStats(NamedTuple):
    """Per-chain statistics of one or more iterations.

    Attributes:
        acceptance_rate: mean acceptance probability.
        integration_steps: total leapfrog steps (NUTS) or proposals (MALA) of the iterations.
        grad_evals: number of `value_and_grad(log γ̃)` evaluations (each is one energy and one
            gradient evaluation): `integration_steps` plus any re-initialisation.
        num_divergent: number of divergent transitions (0 for kernels without the notion).
    """

    acceptance_rate: jax.Array
    integration_steps: jax.Array
    grad_evals: jax.Array
    num_divergent: jax.Array


class ChainKernel(NamedTuple):
    """One MCMC algorithm acting on ONE chain, with `log γ̃` bound in the closures.

    Attributes:
        init: `position (dim,) -> chain_state` (one `value_and_grad` evaluation).
        initial_parameters: the untuned parameters of one chain, a dict of arrays.
        warmup: `(key, chain_state, parameters) -> (chain_state, parameters, ChainStats)`: one
            warm-up round with adaptation.
        transition: `(key, chain_state, parameters) -> (chain_state, ChainStats)`: one
            iteration with fixed parameters.
        position: `chain_state -> (dim,)`; by default the state's `position` field (blackjax and
            numpyro chain states alike).
    """

    init: Callable[[jax.Array], Any]
    initial_parameters: dict[str, jax.Array]
    warmup: Callable[[jax.Array, Any, dict], tuple[Any, dict, ChainStats]]
    transition: Callable[[jax.Array, Any, dict], tuple[Any, ChainStats]]
    position: Callable[[Any], jax.Array] = operator.attrgetter("position")


@dataclasses.dataclass(frozen=True)
class ChainConfig(Checked):
    """The fields every multi-chain MCMC baseline shares, with their checks. A subclass names its
    method (`method_name`, used in error messages), adds its own fields and may change defaults.

    Attributes:
        num_chains: independent chains, each adapted on its own.
        num_warmup: warm-up iterations per `step` (one adaptation round).
        thinning: keep every `thinning`-th iteration in `sample`.
        initial_step_size: step size the first round starts dual averaging from.
        target_acceptance_rate: dual-averaging target, in (0, 1).
        init_scale: chains start from `N(0, init_scale² I)`; also the scale of the
            centre-of-mass factor for particle systems (`common.working_density`); in the benchmark
            its default follows the problem's `sigma`.
    """

    method_name: ClassVar[str] = "mcmc"

    num_chains: int = field(4, integer(1))
    num_warmup: int = field(500, integer(1))
    thinning: int = field(1, integer(1))
    initial_step_size: float = field(0.1, POSITIVE)
    target_acceptance_rate: float = field(0.8, within(0, 1, closed="neither"))
    init_scale: float = field(1.0, POSITIVE, follows="sigma")


def _cast_like(new: dict, old: dict) -> dict:
    """Keep the parameter dtypes fixed across rounds (a `lax.scan` carry must not change type)."""
    return {k: jnp.asarray(new[k]).astype(jnp.asarray(v).dtype) for k, v in old.items()}


def build_chain_method(target: Any, config: Any, make_kernel: Callable[..., ChainKernel]) -> Method:
    """Bind a per-chain MCMC algorithm to a target as a multi-chain `Method` (module docstring).

    Args:
        target: a `targets.Target`.
        config: a config with `num_chains`, `num_warmup`, `thinning`, `init_scale` (and the
            fields `make_kernel` reads).
        make_kernel: `(log_prob, dim, config) -> ChainKernel`.
    """
    log_prob, project = working_density(target, config.init_scale)
    dim, num_chains, thinning = target.dim, config.num_chains, config.thinning
    kernel = make_kernel(log_prob, dim, config)

    def init(key: jax.Array) -> MCMCState:
        positions = config.init_scale * shard_batch(jax.random.normal(key, (num_chains, dim)))
        chains = jax.vmap(kernel.init)(positions)
        parameters = jax.tree.map(
            lambda p: jnp.broadcast_to(p, (num_chains, *jnp.shape(p))), kernel.initial_parameters
        )
        return MCMCState(chains, parameters, jnp.zeros((), jnp.int32), Cost.of(num_chains, num_chains))

    def step(key: jax.Array, state: MCMCState) -> tuple[MCMCState, MCMCInfo]:
        keys = jax.random.split(key, num_chains)
        chains, parameters, stats = jax.vmap(kernel.warmup)(keys, state.chains, state.parameters)
        parameters = _cast_like(parameters, state.parameters)
        evals = jnp.sum(stats.grad_evals)
        info = MCMCInfo(
            acceptance_rate=jnp.mean(stats.acceptance_rate),
            step_size=jnp.mean(parameters["step_size"]),
            num_integration_steps=jnp.sum(stats.integration_steps) / (num_chains * config.num_warmup),
            num_divergent=jnp.sum(stats.num_divergent),
        )
        cost = state.cost + Cost.of(evals, evals)
        return MCMCState(chains, parameters, state.num_rounds + 1, cost), info

    def sample(key: jax.Array, state: MCMCState, num_samples: int) -> Samples:
        num_draws = -(-num_samples // num_chains)

        def run_chain(key, chain, parameters):
            def draw(chain, key):
                def move(chain, key):
                    return kernel.transition(key, chain, parameters)

                chain, stats = jax.lax.scan(move, chain, jax.random.split(key, thinning))
                return chain, (kernel.position(chain), jnp.sum(stats.grad_evals))

            _, (positions, evals) = jax.lax.scan(draw, chain, jax.random.split(key, num_draws))
            return positions, jnp.sum(evals)

        keys = jax.random.split(key, num_chains)
        positions, evals = jax.vmap(run_chain)(keys, state.chains, state.parameters)
        x = jnp.swapaxes(positions, 0, 1).reshape(num_draws * num_chains, dim)[:num_samples]
        total = jnp.sum(evals)
        return Samples(project(x), jnp.zeros((num_samples,), x.dtype), Cost.of(total, total))

    return Method(init, step, sample)


# ---------------------------------------------------------------------------------------------
# NUTS
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NUTSConfig(ChainConfig):
    """blackjax NUTS with Stan window adaptation. The shared chain fields are `ChainConfig`'s (Stan's
    default warm-up is 1000 iterations, 500 is ample in low dimension; the acceptance target 0.8 is
    Stan's default), with 64 chains by default (module docstring, "Chain count and budgets").

    Attributes:
        max_num_doublings: maximum tree depth (trajectories of at most `2**10 - 1` leapfrog
            steps, Stan's default).
        diagonal_mass_matrix: adapt a diagonal (True) or dense inverse mass matrix.
    """

    method_name: ClassVar[str] = "nuts"

    num_chains: int = 64
    max_num_doublings: int = field(10, integer(1))
    diagonal_mass_matrix: bool = True


def _nuts_kernel(log_prob: Callable, dim: int, config: NUTSConfig) -> ChainKernel:
    float_dtype = jnp.result_type(float)
    mass = jnp.ones(dim, float_dtype) if config.diagonal_mass_matrix else jnp.eye(dim, dtype=float_dtype)
    initial = {"step_size": jnp.asarray(config.initial_step_size, float_dtype), "inverse_mass_matrix": mass}
    nuts_step = blackjax.nuts.build_kernel()
    keep = get_filter_adapt_info_fn(info_keys={"acceptance_rate", "num_integration_steps", "is_divergent"})

    def warmup(key, chain, parameters):
        adaptation = blackjax.window_adaptation(
            blackjax.nuts,
            log_prob,
            is_mass_matrix_diagonal=config.diagonal_mass_matrix,
            initial_inverse_mass_matrix=parameters["inverse_mass_matrix"],
            initial_step_size=parameters["step_size"],
            target_acceptance_rate=config.target_acceptance_rate,
            adaptation_info_fn=keep,
            max_num_doublings=config.max_num_doublings,
        )
        run = standard_promotion(adaptation.run)  # blackjax's adaptation promotes implicitly
        (chain, tuned), trace = run(key, chain.position, num_steps=config.num_warmup)
        leapfrogs = jnp.sum(trace.info.num_integration_steps)
        stats = ChainStats(
            acceptance_rate=jnp.mean(trace.info.acceptance_rate),
            integration_steps=leapfrogs,
            grad_evals=1 + leapfrogs,  # +1: `run` re-initialises the chain state (one value_and_grad)
            num_divergent=jnp.sum(trace.info.is_divergent),
        )
        parameters = {"step_size": tuned["step_size"], "inverse_mass_matrix": tuned["inverse_mass_matrix"]}
        return chain, parameters, stats

    def transition(key, chain, parameters):
        chain, info = nuts_step(
            key,
            chain,
            log_prob,
            parameters["step_size"],
            parameters["inverse_mass_matrix"],
            max_num_doublings=config.max_num_doublings,
        )
        steps = info.num_integration_steps
        return chain, ChainStats(info.acceptance_rate, steps, steps, info.is_divergent)

    return ChainKernel(lambda position: blackjax.nuts.init(position, log_prob), initial, warmup, transition)


def build_nuts(problem: Any, config: NUTSConfig) -> Method:
    """NUTS on `problem.target` (see the module docstring for the Method semantics)."""
    return build_chain_method(problem.target, config, _nuts_kernel)


# ---------------------------------------------------------------------------------------------
# MALA
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MALAConfig(ChainConfig):
    """blackjax MALA with dual-averaging step-size adaptation; the fields are `ChainConfig`'s.

    The proposal is blackjax's `x' = x + ε ∇log γ̃(x) + sqrt(2ε) ξ`, `ξ ~ N(0, I)` (so `ε` is half
    the variance of the Gaussian increment), followed by a Metropolis–Hastings correction; the
    first round starts dual averaging of `ε` from `initial_step_size`. The default acceptance
    target 0.574 is the optimal MALA acceptance rate for product targets in high dimension
    (Roberts & Rosenthal 1998). 64 chains by default (module docstring, "Chain count and budgets").
    """

    method_name: ClassVar[str] = "mala"

    num_chains: int = 64
    num_warmup: int = 1000
    target_acceptance_rate: float = 0.574


def _mala_kernel(log_prob: Callable, dim: int, config: MALAConfig) -> ChainKernel:
    del dim
    initial = {"step_size": jnp.asarray(config.initial_step_size, jnp.result_type(float))}
    mala_step = blackjax.mala.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(config.target_acceptance_rate)

    def warmup(key, chain, parameters):
        def one(carry, key):
            chain, da_state = carry
            chain, info = mala_step(key, chain, log_prob, jnp.exp(da_state.log_step_size))
            return (chain, da_update(da_state, info.acceptance_rate)), info.acceptance_rate

        keys = jax.random.split(key, config.num_warmup)
        (chain, da_state), acceptance = jax.lax.scan(one, (chain, da_init(parameters["step_size"])), keys)
        num = jnp.asarray(config.num_warmup, jnp.int32)
        stats = ChainStats(jnp.mean(acceptance), num, num, jnp.zeros((), jnp.int32))
        return chain, {"step_size": da_final(da_state)}, stats

    def transition(key, chain, parameters):
        chain, info = mala_step(key, chain, log_prob, parameters["step_size"])
        one = jnp.ones((), jnp.int32)
        return chain, ChainStats(info.acceptance_rate, one, one, jnp.zeros((), jnp.int32))

    return ChainKernel(lambda position: blackjax.mala.init(position, log_prob), initial, warmup, transition)


def build_mala(problem: Any, config: MALAConfig) -> Method:
    """MALA on `problem.target` (see the module docstring for the Method semantics)."""
    return build_chain_method(problem.target, config, _mala_kernel)
