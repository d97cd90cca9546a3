"""Statistical and contract tests of the MCMC / SMC / AIS baselines (samplers/baselines).

Targets are built directly from `targets.base.Target` with closed-form moments and log Z.
Tolerances are K_SE standard errors: MCMC standard errors from the chains' autocorrelation ESS,
SMC from the spread over independent seeds, AIS from the delta method on the importance weights.
"""

from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc.ess import ess_solver, log_ess
from blackjax.smc.solver import dichotomy

import samplers
from samplers.baselines import (
    AISConfig,
    MALAConfig,
    NumpyroNUTSConfig,
    NUTSConfig,
    SMCConfig,
    diagnostics,
    monte_carlo_standard_error,
    run_smc,
)
from samplers.baselines.ais import beta_schedule
from samplers.baselines.common import chains_from_samples, complete_centre_of_mass, working_density
from targets.base import ParticleSpec, Target

K_SE = 5.0  # tolerance in standard errors; fixed seeds, so a pass is reproducible


def gaussian_target(mean, std, log_offset: float) -> tuple[Target, float]:
    """`γ(x) = exp(log_offset) · N(x; mean, diag(std²)) · (2π)^{d/2} Π std`, i.e. log Z below."""
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    log_prob = lambda x: log_offset - 0.5 * jnp.sum(((x - mean) / std) ** 2)
    log_Z = log_offset + 0.5 * mean.size * math.log(2 * math.pi) + float(np.sum(np.log(np.asarray(std))))
    return Target(name="test_gaussian", dim=int(mean.size), log_prob_fn=log_prob, log_Z=log_Z), log_Z


MEAN, STD = np.array([1.0, -2.0, 0.5]), np.array([1.0, 0.5, 1.5])
GAUSS, GAUSS_LOG_Z = gaussian_target(MEAN, STD, log_offset=2.5)


def problem(target):
    return types.SimpleNamespace(target=target)


def check_moments(x: jax.Array, num_chains: int, mean: np.ndarray, std: np.ndarray) -> None:
    """Means and variances of every coordinate within K_SE Monte-Carlo standard errors."""
    chains = chains_from_samples(x, num_chains)
    centred_sq = (chains - mean) ** 2
    se_mean = np.asarray(monte_carlo_standard_error(chains))
    se_var = np.asarray(monte_carlo_standard_error(centred_sq))
    est_mean = np.asarray(chains.mean(axis=(0, 1)))
    est_var = np.asarray(centred_sq.mean(axis=(0, 1)))
    assert np.all(np.isfinite(se_mean)) and np.all(se_mean > 0)
    np.testing.assert_array_less(np.abs(est_mean - mean), K_SE * se_mean)
    np.testing.assert_array_less(np.abs(est_var - std**2), K_SE * se_var)


# ---------------------------------------------------------------------------------------------
# registry and configs
# ---------------------------------------------------------------------------------------------


def test_registered_with_specs():
    expected = {"nuts": False, "mala": False, "numpyro_nuts": False, "smc": True, "ais": True}
    for name, weighted in expected.items():
        spec = samplers.get(name)
        assert spec.weighted is weighted
        assert spec.cost_model and spec.description
        spec.make_config()  # every field has a default


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("smc", {"kernel": "rwm"}, r"valid choices: \['hmc', 'mala'\]"),
        ("smc", {"resampling": "foo"}, "multinomial"),
        ("smc", {"target_ess": 1.5}, "target_ess"),
        ("ais", {"schedule": "cosine"}, r"\['geometric', 'linear'\]"),
        ("ais", {"transition": "hmc"}, r"\['mala', 'ula'\]"),
        ("ais", {"num_levels": 0}, "num_levels"),
        ("nuts", {"num_chains": 0}, "num_chains"),
        ("mala", {"target_acceptance_rate": 1.2}, "target_acceptance_rate"),
        ("numpyro_nuts", {"initial_step_size": -1.0}, "initial_step_size"),
        ("nuts", {"no_such_field": 1}, "valid fields"),
    ],
)
def test_bad_configs_name_valid_choices(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        samplers.get(name).make_config(**overrides)


# ---------------------------------------------------------------------------------------------
# MCMC
# ---------------------------------------------------------------------------------------------


def run_mcmc(name: str, config, target, num_samples: int, seed: int = 0):
    method = samplers.get(name).build(problem(target), config)
    key_init, key_step, key_sample = jax.random.split(jax.random.key(seed), 3)
    state0 = jax.jit(method.init)(key_init)
    state, info = jax.jit(method.step)(key_step, state0)
    sample = jax.jit(method.sample, static_argnums=2)
    return state0, state, info, sample, key_sample, sample(key_sample, state, num_samples)


@pytest.fixture(scope="module")
def nuts_run():
    config = NUTSConfig(num_chains=4, num_warmup=200)
    return config, *run_mcmc("nuts", config, GAUSS, 2000)


def test_nuts_moments_within_standard_errors(nuts_run):
    config, _, state, info, _, _, samples = nuts_run
    assert samples.x.shape == (2000, GAUSS.dim)
    np.testing.assert_array_equal(samples.log_w, 0.0)
    check_moments(samples.x, config.num_chains, MEAN, STD)
    diag = diagnostics(samples.x, config.num_chains, GAUSS)
    assert diag["mcmc/rhat_max"] < 1.05 and diag["mcmc/rhat_log_prob"] < 1.05
    assert diag["mcmc/ess_bulk_min"] > 200 and diag["mcmc/num_draws"] == 500
    assert diag["mcmc/ess_bulk_per_chain_min"] == diag["mcmc/ess_bulk_min"] / config.num_chains
    assert 0.6 < float(info.acceptance_rate) < 0.95  # dual averaging aims at 0.8


def test_nuts_costs_are_consistent(nuts_run):
    config, state0, state, info, _, _, samples = nuts_run
    # init: one value_and_grad per chain; a round: +1 per chain (re-init) and one per leapfrog step.
    assert float(state0.cost.grad_evals) == config.num_chains
    leapfrogs = float(info.num_integration_steps) * config.num_chains * config.num_warmup
    np.testing.assert_allclose(float(state.cost.grad_evals), 2 * config.num_chains + leapfrogs, rtol=1e-5)
    for cost in (state.cost, samples.cost):
        assert float(cost.energy_evals) == float(cost.grad_evals) > 0
        assert float(cost.network_evals) == 0.0
    assert float(samples.cost.grad_evals) >= 2000  # at least one leapfrog step per draw
    assert int(state.num_rounds) == 1


def test_nuts_same_key_same_result(nuts_run):
    *_, state, _, sample, key, samples = nuts_run
    again = sample(key, state, 2000)
    np.testing.assert_array_equal(again.x, samples.x)
    other = sample(jax.random.key(123), state, 2000)
    assert not np.allclose(other.x, samples.x)


def test_mala_moments_and_adaptation():
    config = MALAConfig(num_chains=4, num_warmup=500, thinning=4)
    _, state, info, _, _, samples = run_mcmc("mala", config, GAUSS, 2000, seed=1)
    check_moments(samples.x, config.num_chains, MEAN, STD)
    assert abs(float(info.acceptance_rate) - config.target_acceptance_rate) < 0.1
    # MALA: exactly one value_and_grad per iteration and per chain, plus one per chain at init.
    assert float(state.cost.grad_evals) == config.num_chains * (1 + config.num_warmup)
    assert float(samples.cost.grad_evals) == 2000 * config.thinning


@pytest.mark.slow  # two more NUTS compilations (~10 s CPU); `make test-slow`
def test_numpyro_nuts_moments_within_standard_errors():
    config = NumpyroNUTSConfig(num_chains=4, num_warmup=200)
    state0, state, info, _, _, samples = run_mcmc("numpyro_nuts", config, GAUSS, 2000, seed=2)
    check_moments(samples.x, config.num_chains, MEAN, STD)
    assert 0.6 < float(info.acceptance_rate) < 0.95
    assert float(state0.cost.grad_evals) == config.num_chains
    assert float(state.cost.grad_evals) > config.num_chains * (1 + config.num_warmup)
    assert float(samples.cost.energy_evals) == float(samples.cost.grad_evals) >= 2000


def test_chain_layout_is_draw_major():
    x = jnp.arange(10.0)[:, None]  # 5 draws of 2 chains, interleaved
    chains = chains_from_samples(x, 2)
    np.testing.assert_array_equal(chains[0, :, 0], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(chains[1, :, 0], [1, 3, 5, 7, 9])
    assert chains_from_samples(x[:9], 2).shape == (2, 4, 1)  # only complete draws


# ---------------------------------------------------------------------------------------------
# SMC
# ---------------------------------------------------------------------------------------------


def test_ess_solver_sign_matches_weight_update():
    """blackjax #914: the tempering increment δ must give ESS(exp(+δ ℓ)) = target on skewed ℓ."""
    log_likelihood = -jax.random.exponential(jax.random.key(0), (1000,)) * 3.0  # skewed
    solve = jax.jit(lambda ll: ess_solver(lambda x: x[:, 0], ll[:, None], 0.5, 1.0, dichotomy))
    delta = solve(log_likelihood)
    assert 0.0 < float(delta) < 1.0
    relative_ess = lambda lw: float(jnp.exp(log_ess(lw))) / 1000
    np.testing.assert_allclose(relative_ess(delta * log_likelihood), 0.5, atol=0.01)
    assert abs(relative_ess(-delta * log_likelihood) - 0.5) > 0.05  # the pre-fix sign would miss


def mixture_log_prob(x, log_weights, means, stds, log_offset):
    """`log_offset + log Σ_k w_k N(x; μ_k, diag(σ_k²))` in 2-D: log Z = log_offset."""
    comps = jnp.sum(-0.5 * ((x - means) / stds) ** 2 - jnp.log(stds) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return log_offset + jax.scipy.special.logsumexp(comps + log_weights)


# (log weights, means, stds, log offset); the first is one anisotropic Gaussian (weight 0 on the
# second component), the second is asymmetric: unequal weights, widths and distances from 0.
SMC_TARGETS = {
    "gaussian": (np.array([0.0, -np.inf]), [[1.0, -2.0], [0.0, 0.0]], [[1.0, 0.5], [1.0, 1.0]], 2.5),
    "mixture": (np.log([0.2, 0.8]), [[-1.5, 0.5], [2.0, -1.0]], [[0.6, 0.6], [1.0, 1.0]], -1.3),
}
SMC_CONFIG = SMCConfig(kernel="hmc", num_mcmc_steps=5, num_integration_steps=3)


@functools.partial(jax.jit, static_argnums=2)
def smc_over_seeds(keys, params, num_particles):
    """The `smc` Method on the mixture `params`, one run per key (one compilation for all targets)."""
    target = Target(name="test_mixture", dim=2, log_prob_fn=lambda x: mixture_log_prob(x, *params))
    method = samplers.get("smc").build(problem(target), SMC_CONFIG)
    state, _ = method.step(keys[0], method.init(keys[0]))
    return state, jax.vmap(lambda key: method.sample(key, state, num_particles))(keys)


@pytest.mark.parametrize("name", sorted(SMC_TARGETS))
def test_smc_log_Z_moments_cost_and_same_key(name):
    log_weights, means, stds, log_Z_true = SMC_TARGETS[name]
    params = tuple(jnp.asarray(v, jnp.float32) for v in (log_weights, means, stds, log_Z_true))
    keys = jax.random.split(jax.random.key(3), 16)
    num_particles = 300
    state, samples = smc_over_seeds(keys, params, num_particles)
    assert float(state.cost.energy_evals) == 0.0  # nothing to train
    assert samples.x.shape == (16, num_particles, 2) and samples.log_w.shape == (16, num_particles)
    # log Ẑ = LSE(log_w) - log N per seed; standard error from the spread over seeds.
    log_Z = np.asarray(jax.scipy.special.logsumexp(samples.log_w, axis=1), np.float64)
    log_Z -= math.log(num_particles)
    se = log_Z.std(ddof=1) / math.sqrt(log_Z.size)
    assert np.all(np.isfinite(log_Z)) and 0 < se < 0.2
    assert abs(log_Z.mean() - log_Z_true) < K_SE * se
    # Self-normalised weighted means target the mixture mean Σ w_k μ_k.
    weighted_means = np.asarray(jnp.einsum("sn,snd->sd", jax.nn.softmax(samples.log_w, axis=1), samples.x))
    true_mean = np.exp(log_weights) @ np.asarray(means)
    se_mean = weighted_means.std(0, ddof=1) / math.sqrt(len(keys))
    np.testing.assert_array_less(np.abs(weighted_means.mean(0) - true_mean), K_SE * se_mean)
    # cost: per particle per stage 3 + S·L energies and 1 + S·L gradients, S·L = 5·3.
    stages = np.asarray(samples.cost.energy_evals, np.float64) / (num_particles * (3 + 15))
    np.testing.assert_allclose(stages, np.round(stages))
    assert np.all(stages >= 2)
    np.testing.assert_allclose(samples.cost.grad_evals, num_particles * stages * (1 + 15))
    _, again = smc_over_seeds(keys, params, num_particles)
    np.testing.assert_array_equal(again.log_w, samples.log_w)
    np.testing.assert_array_equal(again.x, samples.x)


@pytest.mark.slow  # another SMC compilation (~5 s CPU)
def test_smc_mala_kernel_log_Z_and_weight_identity():
    log_weights, means, stds, log_Z_true = (jnp.asarray(v, jnp.float32) for v in SMC_TARGETS["mixture"])
    target = Target(
        name="test_mixture",
        dim=2,
        log_prob_fn=lambda x: mixture_log_prob(x, log_weights, means, stds, log_Z_true),
    )
    config = SMCConfig(kernel="mala", num_mcmc_steps=5, step_size=0.2)
    run = jax.jit(jax.vmap(lambda key: run_smc(key, target, config, 300)))
    out = run(jax.random.split(jax.random.key(7), 16))
    log_Z = np.asarray(out.log_Z, np.float64)
    se = log_Z.std(ddof=1) / math.sqrt(log_Z.size)
    assert np.all(np.isfinite(log_Z)) and 0 < se < 0.2
    assert abs(log_Z.mean() - float(log_Z_true)) < K_SE * se
    # log_w = log Ẑ + log(N W): LSE(log_w) - log N reproduces the increments' log Ẑ.
    lse = jax.scipy.special.logsumexp(out.log_w, axis=1) - math.log(300)
    np.testing.assert_allclose(lse, out.log_Z, atol=1e-4)
    assert np.all(np.asarray(out.num_stages) >= 2) and np.all(np.asarray(out.acceptance_rate) > 0.3)


# ---------------------------------------------------------------------------------------------
# AIS
# ---------------------------------------------------------------------------------------------


def log_mean_exp_with_se(log_w: np.ndarray) -> tuple[float, float]:
    """`log mean exp(log_w)` and its delta-method standard error `sd(w) / (mean(w) sqrt(n))`."""
    log_w = np.asarray(log_w, np.float64)
    w = np.exp(log_w - log_w.max())
    return float(log_w.max() + np.log(w.mean())), float(w.std(ddof=1) / w.mean() / math.sqrt(w.size))


TARGET_2D, LOG_Z_2D = gaussian_target(MEAN[:2], STD[:2], log_offset=2.5)


@pytest.mark.parametrize("transition", ["mala", "ula"])
def test_ais_log_Z_forward_backward_and_same_key(transition):
    config = AISConfig(num_levels=32, transition=transition, step_size=0.1)
    method = samplers.get("ais").build(problem(TARGET_2D), config)
    state, _ = method.step(jax.random.key(0), method.init(jax.random.key(1)))
    assert float(state.cost.energy_evals) == 0.0
    sample = jax.jit(method.sample, static_argnums=2)
    samples = sample(jax.random.key(4), state, 4000)
    estimate, se = log_mean_exp_with_se(samples.log_w)
    assert 0 < se < 0.1
    assert abs(estimate - LOG_Z_2D) < K_SE * se
    # Backward paths from exact target samples: E_π[exp(-log w)] = 1/Z.
    x_target = jnp.asarray(MEAN[:2] + STD[:2] * np.random.default_rng(0).normal(size=(4000, 2)), jnp.float32)
    log_w_back = jax.jit(method.backward)(jax.random.key(5), state, x_target)
    minus_upper, se_back = log_mean_exp_with_se(-np.asarray(log_w_back))
    assert 0 < se_back < 0.1
    assert abs(-minus_upper - LOG_Z_2D) < K_SE * se_back
    # ELBO <= log Z <= EUBO, with the gap a real one (not a zero-variance accident).
    assert float(jnp.mean(samples.log_w)) < LOG_Z_2D < float(jnp.mean(log_w_back))
    # cost: one value_and_grad at x_0 and one per transition, per path.
    assert float(samples.cost.energy_evals) == float(samples.cost.grad_evals) == 4000 * (1 + 32)
    again = sample(jax.random.key(4), state, 4000)
    np.testing.assert_array_equal(again.x, samples.x)
    np.testing.assert_array_equal(again.log_w, samples.log_w)


def test_ais_beta_schedules():
    betas = np.asarray(beta_schedule(AISConfig(num_levels=4, schedule="geometric", beta_min=1e-2)))
    np.testing.assert_allclose(betas, [0.0, 1e-2, 10 ** (-4 / 3), 10 ** (-2 / 3), 1.0], rtol=1e-5)
    np.testing.assert_allclose(beta_schedule(AISConfig(num_levels=4)), [0.0, 0.25, 0.5, 0.75, 1.0])


# ---------------------------------------------------------------------------------------------
# particle systems: the centre-of-mass completion
# ---------------------------------------------------------------------------------------------


def test_working_density_of_particle_system_integrates_to_Z():
    """Two particles on a line, γ = exp(-(x1 - x2)²/2): Z on the 1-D CoM-free subspace is √π."""
    spec = ParticleSpec(n_particles=2, spatial_dim=1)
    target = Target(name="test_pair", dim=2, log_prob_fn=lambda x: -0.5 * (x[0] - x[1]) ** 2, particles=spec)
    log_prob, project = working_density(target, scale=0.7)
    grid = np.linspace(-8, 8, 321)  # Riemann sums of smooth, fast-decaying integrands converge fast
    xx = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(np.asarray(jax.jit(jax.vmap(log_prob))(jnp.asarray(xx, jnp.float32)), np.float64))
    integral = density.sum() * (grid[1] - grid[0]) ** 2
    np.testing.assert_allclose(integral, math.sqrt(math.pi), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(project(jnp.array([[1.0, 3.0]]))), [[-1.0, 1.0]])
    completed = complete_centre_of_mass(jax.random.key(0), jnp.zeros((20000, 2)), target, 0.7)
    # √n · centre ~ N(0, 0.7²)
    np.testing.assert_allclose(float(jnp.std(math.sqrt(2) * completed.mean(-1))), 0.7, rtol=0.03)


@pytest.mark.parametrize("name", ["nuts", "mala"])
def test_chain_baselines_default_to_enough_chains_for_mode_coverage(name):
    """4 chains could never visit more than about 4 isolated modes; the default is 64."""
    assert samplers.get(name).make_config().num_chains >= 64
