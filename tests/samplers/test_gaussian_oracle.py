"""The Gaussian oracle: formulas against autodiff and independent Monte Carlo, and the analytic
Gaussian check of the whole pipeline (optimal control ⇒ near-constant weights, exact log Z, BAR)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers import estimators as est
from samplers.base_processes import BrownianBase, GeometricSchedule, LinearSchedule
from samplers.gaussian_oracle import GaussianOracle
from samplers.problem import sampling_problem
from samplers.sde import SDEConfig, simulate
from targets.base import Target
from tests.samplers.test_sde import forward_backward_summary

MEAN = jnp.asarray([0.6, -0.4], jnp.float32)
COV = jnp.asarray([[0.7, 0.25], [0.25, 1.2]], jnp.float32)
LOG_Z = 0.9


def gaussian_log_density(x, mean, cov):
    diff = x - mean
    return -0.5 * diff @ jnp.linalg.solve(cov, diff) - 0.5 * jnp.linalg.slogdet(2 * jnp.pi * cov)[1]


def gaussian_target(mean, cov) -> Target:
    return Target(
        name="oracle_gaussian",
        dim=mean.shape[0],
        log_prob_fn=lambda x: LOG_Z + gaussian_log_density(x, mean, cov),
        log_Z=LOG_Z,
        sample_fn=lambda key, n: jax.random.multivariate_normal(key, mean, cov, (n,)),
    )


ORACLES = {
    "full_geometric": GaussianOracle(MEAN, COV, BrownianBase(2, GeometricSchedule(0.1, 2.0)), log_Z=LOG_Z),
    "diagonal_linear": GaussianOracle(MEAN, jnp.diag(COV), BrownianBase(2, LinearSchedule(1.3)), log_Z=LOG_Z),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_formulas_match_autodiff(name):
    oracle = ORACLES[name]
    base = oracle.base
    x = jnp.asarray([0.3, -1.1], jnp.float32)

    @jax.jit
    def quantities(t):
        mean_t, cov_t = oracle.marginal(t)
        score_difference = jax.grad(gaussian_log_density)(x, mean_t, cov_t) + x / base.nu(t)
        return (
            score_difference,
            oracle.grad_log_h(x, t),
            jax.grad(oracle.log_h)(x, t),
            oracle.control(None, x, t),
        )

    for t in (0.2, 0.7, 1.0):
        # ∇log h = ∇log p*_t - ∇log p^base_t, and u* = σ ∇log h
        expected, grad_log_h, autodiff, control = quantities(jnp.float32(t))
        np.testing.assert_allclose(grad_log_h, expected, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(autodiff, expected, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(control, base.sigma(t) * expected, rtol=2e-4)
    # t = 1: u* = σ(1)(∇log π + x/ν_1)
    score_target = jax.grad(gaussian_log_density)(x, oracle.mean, oracle.cov)
    np.testing.assert_allclose(
        oracle.grad_log_h(x, 1.0), score_target + x / base.nu(1.0), rtol=2e-4, atol=2e-5
    )
    # t = 0 (p*_0 = p^base_0 = δ_0): finite, = (D x + ν_1 m)/ν_1² with D = S - ν_1 I
    nu1 = base.nu(1.0)
    expected = ((oracle.cov - nu1 * jnp.eye(2)) @ x + nu1 * oracle.mean) / nu1**2
    np.testing.assert_allclose(oracle.grad_log_h(x, 0.0), expected, rtol=1e-5)


def test_value_function_by_monte_carlo():
    # h_t(x) = E_base[e^{r(X_1)} | X_t = x], r = log γ - log N(0, ν_1 I), X_1 = x + sqrt(ν_1 - ν_t) z
    oracle = ORACLES["full_geometric"]
    base = oracle.base
    nu1 = float(base.nu(1.0))
    log_gamma = lambda y: LOG_Z + gaussian_log_density(y, oracle.mean, oracle.cov)
    tilt = lambda y: log_gamma(y) + 0.5 * jnp.sum(y * y) / nu1 + jnp.log(2 * jnp.pi * nu1)
    n = 200000

    @jax.jit
    def mc(key, x, t):
        z = jax.random.normal(key, (n, 2))
        h = jnp.exp(jax.vmap(tilt)(x + jnp.sqrt(nu1 - base.nu(t)) * z))
        return jnp.mean(h), jnp.std(h) / jnp.sqrt(n), oracle.log_h(x, t)

    for i, (x, t) in enumerate([([0.2, 0.1], 0.5), ([1.0, -0.5], 0.8), ([-0.3, 0.4], 0.95)]):
        mean, se, log_h = mc(jax.random.key(i), jnp.asarray(x, jnp.float32), jnp.float32(t))
        assert abs(float(mean) - float(jnp.exp(log_h))) < 5 * float(se)


@pytest.mark.slow  # statistical (a weighted simulation at every step): `make test-slow`
def test_discrete_tilted_marginals_by_weighted_simulation():
    # E_{P^u}[w f(x_k)]/E[w] = E_{P*}[f(x_k)] exactly for the discrete chain; P*'s step-k marginal is
    # discrete_marginal(k). The discrete mean-matching control keeps the weights nearly uniform.
    oracle = ORACLES["full_geometric"]
    problem = sampling_problem(gaussian_target(MEAN, COV), oracle.base, num_steps=40)
    control = oracle.discrete_control(problem.ts)
    n, k = 20000, 12
    out = jax.jit(
        lambda key: simulate(
            key, problem, control, None, n, SDEConfig(integrator="scan", save_trajectory=True)
        )
    )(jax.random.key(7))
    w = np.asarray(jax.nn.softmax(out.log_w), np.float64)
    n_eff = n * float(est.reverse_ess(out.log_w).value)
    assert n_eff > 0.5 * n
    for step in (k, 40):
        x = np.asarray(out.trajectory[step], np.float64)
        mean, cov = (np.asarray(v, np.float64) for v in oracle.discrete_marginal(problem.ts, step))
        weighted_mean = w @ x
        np.testing.assert_array_less(np.abs(weighted_mean - mean), 5 * np.sqrt(np.diag(cov) / n_eff))
        diff = x - mean
        weighted_cov = (w[:, None] * diff).T @ diff
        # Var of a Gaussian sample covariance entry: (Σ_ii Σ_jj + Σ_ij²)/n
        se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_eff)
        np.testing.assert_array_less(np.abs(weighted_cov - cov), 5 * se_cov)


@pytest.fixture(scope="module")
def one_dim():
    mean, cov = jnp.asarray([0.5], jnp.float32), jnp.asarray([[0.7]], jnp.float32)
    base = BrownianBase(1, LinearSchedule(1.0))
    return gaussian_target(mean, cov), GaussianOracle(mean, cov, base, log_Z=LOG_Z), base


@pytest.mark.slow  # statistical (65,536 paths of 100 diffrax steps): `make test-slow`
def test_optimal_control_gives_nearly_constant_weights_and_exact_log_Z(one_dim):
    target, oracle, base = one_dim
    results = {}
    for steps, n, integrator in ((25, 4096, "scan"), (100, 65536, "diffrax")):
        problem = sampling_problem(target, base, num_steps=steps)
        config = SDEConfig(integrator=integrator)
        log_w = jax.jit(
            lambda key, p=problem, n=n, c=config: simulate(key, p, oracle.control, None, n, c).log_w
        )(jax.random.key(steps))
        results[steps] = (float(jnp.std(log_w)), est.log_Z(log_w), est.reverse_ess(log_w))
    std_25, std_100 = results[25][0], results[100][0]
    # the weights are constant up to the O(sqrt h) EM covariance mismatch: 4x the steps, half the spread
    assert std_100 < 0.05
    assert 1.6 < std_25 / std_100 < 2.5
    log_z, ess = results[100][1], results[100][2]
    assert float(log_z.se) < 2.5e-4  # the 1e-3 check below is at least 4 standard errors wide
    assert abs(float(log_z.value) - LOG_Z) < 1e-3
    assert float(ess.value) > 0.99


def test_crooks_bar_and_jarzynski_agree_on_the_gaussian(one_dim):
    target, oracle, base = one_dim
    problem = sampling_problem(target, base, num_steps=30)
    half = lambda params, x, t: 0.5 * oracle.control(params, x, t)  # deliberately sub-optimal
    out = forward_backward_summary(jax.random.key(11), problem, half, None, 20000)
    jarzynski, bar = out["log_Z"], out["bar_log_Z"]
    assert float(out["elbo"].value) + 0.01 < LOG_Z < float(out["eubo"].value) - 0.01  # a real gap
    for name in ("log_Z", "log_Z_backward", "bar_log_Z"):
        assert abs(float(out[name].value) - LOG_Z) < 5 * float(out[name].se), name
    assert abs(float(jarzynski.value) - float(bar.value)) < 5 * float(jnp.hypot(jarzynski.se, bar.se))
    assert float(bar.se) < float(jarzynski.se)


def test_input_validation():
    base = BrownianBase(2)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianOracle(MEAN, jnp.asarray([[1.0, 2.0], [2.0, 1.0]]), base)
    with pytest.raises(ValueError, match="mean must be"):
        GaussianOracle(jnp.zeros(3), COV, base)
    with pytest.raises(TypeError, match="BrownianBase"):
        GaussianOracle(MEAN, COV, object())
