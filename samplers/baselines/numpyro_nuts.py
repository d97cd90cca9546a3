"""NUTS from numpyro on a target given by its potential `U = -log γ̃`.

numpyro's `numpyro.infer.MCMC(NUTS(potential_fn=U))` is a stateful driver around the functional
kernel pair `numpyro.infer.hmc.hmc(potential_fn=U, algo="NUTS") -> (init_kernel, sample_kernel)`;
its `run` jits internally and moves draws to the host, so it cannot live inside the jitted
`lax.scan` of the shared training loop. This baseline therefore drives that same functional
kernel pair (the one `MCMC` drives) with the Method semantics of `samplers.baselines.mcmc`:

- `init(key)`: starting points from `N(0, init_scale² I)`, `U` and `∇U` there (1 evaluation
  each per chain);
- `step(key, state)`: ONE WARM-UP ROUND per chain of `num_warmup` iterations of numpyro's
  warm-up (Stan windows: dual averaging of the step size towards `target_accept_prob`, Welford
  estimates of a diagonal or dense inverse mass matrix), started at the current positions with
  the current step size and inverse mass matrix as initial values. `num_steps = 1` is numpyro's
  standard warm-up;
- `sample(key, state, num_samples)`: iterations with adaptation off (`num_warmup = 0`), draw-major
  layout, `log_w = 0`.

Cost: each leapfrog step of numpyro's velocity Verlet evaluates `U` and `∇U` together
(`value_and_grad`), so energy and gradient counts are both the sum of `HMCState.num_steps`
(leapfrog steps per iteration), plus one per chain for `init`. Re-entering a kernel between
rounds passes the cached `ParamInfo(z, U, ∇U)`, so it costs nothing.

Reference:
    Phan, Pradhan & Jankowiak, "Composable Effects for Flexible and Accelerated Probabilistic
    Programming in NumPyro", 2019.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer.hmc import hmc
from numpyro.infer.util import ParamInfo

from samplers.baselines.mcmc import (
    ChainConfig,
    ChainKernel,
    ChainStats,
    build_chain_method,
)
from samplers.fields import field, integer
from samplers.method import Method
from samplers.promotion import standard_promotion

__all__ = ["NumpyroChain", "NumpyroNUTSConfig", "build_numpyro_nuts"]


@dataclasses.dataclass(frozen=True)
class NumpyroNUTSConfig(ChainConfig):
    """numpyro NUTS with numpyro's windowed warm-up. The shared chain fields are `ChainConfig`'s
    (numpyro's and Stan's default warm-up is 1000 iterations; `target_acceptance_rate` is numpyro's
    `target_accept_prob`, default 0.8).

    Attributes:
        max_tree_depth: maximum tree depth (numpyro's default 10).
        dense_mass: adapt a dense (True) or diagonal inverse mass matrix.
    """

    method_name: ClassVar[str] = "numpyro_nuts"

    num_chains: int = 64  # as NUTS and MALA: enough chains that their count never bounds mode coverage
    max_tree_depth: int = field(10, integer(1))
    dense_mass: bool = False


class NumpyroChain(NamedTuple):
    """One chain between calls: position, potential `U = -log γ̃` and `∇U` there."""

    position: jax.Array
    potential_energy: jax.Array
    potential_grad: jax.Array


def _numpyro_kernel(log_prob, dim: int, config: NumpyroNUTSConfig) -> ChainKernel:
    float_dtype = jnp.result_type(float)
    mass = jnp.eye(dim, dtype=float_dtype) if config.dense_mass else jnp.ones(dim, float_dtype)
    initial = {"step_size": jnp.asarray(config.initial_step_size, float_dtype), "inverse_mass_matrix": mass}
    potential = lambda x: -log_prob(x)

    def init(position):
        energy, grad = jax.value_and_grad(potential)(position)
        return NumpyroChain(position, energy, grad)

    def run(key, chain, parameters, num_iterations, adapt):
        # A fresh `hmc()` per phase: numpyro binds the warm-up length in `init_kernel`'s closure.
        # numpyro's kernels promote dtypes implicitly inside (see samplers.promotion)
        init_kernel, sample_kernel = map(standard_promotion, hmc(potential_fn=potential, algo="NUTS"))
        state = init_kernel(
            ParamInfo(chain.position, chain.potential_energy, chain.potential_grad),
            num_warmup=num_iterations if adapt else 0,
            step_size=parameters["step_size"],
            inverse_mass_matrix=parameters["inverse_mass_matrix"],
            adapt_step_size=adapt,
            adapt_mass_matrix=adapt,
            dense_mass=config.dense_mass,
            target_accept_prob=config.target_acceptance_rate,
            max_tree_depth=config.max_tree_depth,
            rng_key=key,  # numpyro carries its own key inside HMCState from here on
        )

        def one(state, _):
            state = sample_kernel(state)
            return state, (state.accept_prob, state.num_steps, state.diverging)

        state, (accept, num_steps, diverging) = jax.lax.scan(one, state, None, length=num_iterations)
        chain = NumpyroChain(state.z, state.potential_energy, state.z_grad)
        leapfrogs = jnp.sum(num_steps)
        stats = ChainStats(jnp.mean(accept), leapfrogs, leapfrogs, jnp.sum(diverging))
        tuned = {
            "step_size": state.adapt_state.step_size,
            "inverse_mass_matrix": state.adapt_state.inverse_mass_matrix,
        }
        return chain, tuned, stats

    def warmup(key, chain, parameters):
        return run(key, chain, parameters, config.num_warmup, adapt=True)

    def transition(key, chain, parameters):
        chain, _, stats = run(key, chain, parameters, 1, adapt=False)
        return chain, stats

    return ChainKernel(init, initial, warmup, transition)


def build_numpyro_nuts(problem: Any, config: NumpyroNUTSConfig) -> Method:
    """numpyro NUTS on `problem.target` (see the module docstring for the Method semantics)."""
    return build_chain_method(problem.target, config, _numpyro_kernel)
