"""Tests of the path-space divergence losses: `pis`, `log_variance`, `trajectory_balance`, `dds`.

- Fixed point: with the (mean-matching, discrete-grid) optimal control of a Gaussian target plugged in
  (Brownian base: `GaussianOracle.discrete_control`; VP base of `dds`: `DiscreteChainOracle`), the batch
  gradient of each loss w.r.t. an affine perturbation `u = u* + A x + c` vanishes within 3 standard
  errors (over independent batches), and is many standard errors away from zero at a perturbed control.
- Oracles: the discrete-chain oracle reproduces the Brownian one and `log Z`; under it the simulated
  `log w` has the closed-form mean and variance (EM covariance mismatch, plus the VP start's
  `Var_{p_0}[log h_0]`), within standard errors.
- Conformance: jit, one compilation across chunks, finite outputs, honest cost counters, bad config.
- Determinism: same key, identical history and samples.
- Training: a 2-D correlated Gaussian and a 1-D bimodal mixture reach `|log Ẑ - log Z| < 0.05` and
  reverse ESS > 0.8 with 4000 samples (seeds 0, 1 and 2 in `make test-slow`; `analytic.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers import estimators, sde
from samplers.base_processes import BrownianBase, LinearSchedule, VPBase
from samplers.gaussian_oracle import DiscreteChainOracle, GaussianOracle
from samplers.methods import path_kl
from samplers.problem import sampling_problem
from targets.mixtures import GaussianMixture
from tests.samplers.methods import analytic, fixed_point

METHOD_BASES = {"pis": "brownian", "log_variance": "brownian", "trajectory_balance": "brownian", "dds": "vp"}


def _base(kind: str, dim: int):
    # σ = 1.5: wide enough to reach both modes of the bimodal target, small enough that the EM
    # covariance mismatch (the floor of the ESS on a finite grid) stays small on 32 steps.
    return VPBase(dim, sigma0=1.5) if kind == "vp" else BrownianBase(dim, LinearSchedule(1.5))


# ---------------------------------------------------------------------------------------------
# fixed point
# ---------------------------------------------------------------------------------------------


def _discrete_chain_oracle(truth, base, ts, log_Z):
    return DiscreteChainOracle(truth["mean"], truth["covariance"], base, ts, log_Z=log_Z).control


def _brownian_oracle(truth, base, ts, log_Z):
    return GaussianOracle(truth["mean"], truth["covariance"], base, log_Z=log_Z).discrete_control(ts)


# the optimal EM control of each base: u(params, x, t) at the grid times
ORACLES = {"brownian": _brownian_oracle, "vp": _discrete_chain_oracle}


def _oracle_problem(kind: str = "brownian"):
    target = targets.get("gaussian_correlated")  # mean 1, stds 0.5..2, rotated; log Z = log 2π
    problem = sampling_problem(target, _base(kind, 2), num_steps=32)
    optimal = ORACLES[kind](target.ground_truth, problem.base, problem.ts, target.log_Z)
    return problem, optimal, target.log_Z


def _loss_call(name, log_Z):
    if name == "trajectory_balance":
        return lambda key, problem, control, theta, n, config: path_kl.trajectory_balance_loss(
            key, problem, control, theta, jnp.float32(log_Z), n, config
        )
    return {
        "pis": path_kl.path_kl_loss,
        "dds": path_kl.path_kl_loss,
        "log_variance": path_kl.log_variance_loss,
    }[name]


@pytest.fixture(scope="module")
def oracle_problems():
    """`get(kind)` -> `(problem, optimal control, log Z)`, built once per base kind."""
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = _oracle_problem(kind)
        return cache[kind]

    return get


def fixed_point_z_scores(name: str, oracle_problem=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 256) of the loss gradient w.r.t. an affine perturbation of `u*`, at the
    optimum and at a perturbed control, on the method's base (also used by scripts/analytic_checks.py)."""
    problem, optimal, log_Z = oracle_problem or _oracle_problem(METHOD_BASES[name])
    loss = _loss_call(name, log_Z)
    config = sde.SDEConfig(integrator="scan")
    control = fixed_point.affine_control(optimal)
    gradient = lambda theta, key: jax.grad(lambda th: loss(key, problem, control, th, 256, config)[0])(theta)
    grads, _ = fixed_point.perturbation_gradients(gradient, num_batches=16)
    return fixed_point.z_scores(grads[0]), fixed_point.z_scores(grads[1])


@pytest.mark.parametrize("name", ["pis", "log_variance", "trajectory_balance", "dds"])
def test_loss_gradient_vanishes_at_optimal_control(oracle_problems, name):
    z_optimal, z_perturbed = fixed_point_z_scores(name, oracle_problems(METHOD_BASES[name]))
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


def flow_initial_kl(task, num_samples: int = 100_000) -> float:
    """`KL(p_{t_0} ‖ p*_{t_0})` of an ft_* task's flow at `FLOW_T0` by Monte Carlo on exact draws of the
    base's start law (both laws are Gaussian mixtures: `p*_t` is the law of `t X_1 + (1 - t) Z`, `X_1 ~
    p*`); SE about 1e-4 here."""
    t0 = fixed_point.FLOW_T0
    start = task.marginal(t0)
    tilted = task.tilted_parameters()
    tilted_start = GaussianMixture.from_covariances(
        t0 * tilted["means"],
        t0 * t0 * tilted["covariances"] + (1.0 - t0) ** 2 * np.eye(task.dim),
        log_weights=tilted["log_weights"],
    )
    x = start.sample(jax.random.key(3), num_samples)
    log_ratio = jax.jit(jax.vmap(lambda y: start.log_prob(y) - tilted_start.log_prob(y)))(x)
    return float(np.mean(np.asarray(log_ratio, np.float64)))


def flow_fixed_point_z_scores(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 64 on-policy paths) of the `log_variance` or `trajectory_balance` loss
    gradient w.r.t. an affine perturbation of the closed-form `u*` of ft_gmm2d_linear's exact tilted flow
    (docs/methods.md §1.5, "Optimal control"), at the optimum and perturbed (also used by
    scripts/analytic_checks.py). Trajectory balance also reports the gradient in `log Z_φ` (a seventh
    component), held at its fixed point `log Z - KL(p_{t_0} ‖ p*_{t_0})` (docs/methods.md §8.3).

    On this base the Girsanov weight at `u*` is not constant, `log w = log h_{t_0}(X_{t_0}) + O(h)` (the
    start `p_{t_0}` is not `p*_{t_0}`), but its fluctuation is independent of the noise that `∂_θ log w =
    -Σ_k sqrt(h_k) ∂_θu·ε_k` is made of, so the gradients still vanish in continuous time; the chain's
    O(h) remainder does not. Measured at u* (64 batches of 256, where the SE is 4x smaller than tested
    against), the largest |mean / SE| of log-variance was 7.7 on 64 quadratic steps, 5.2 on 128 and 4.6
    on 256 (mean gradients about 0.006 against SEs 0.0013): 256 steps and 16 x 64 paths put that bias at
    about 1.2 SE. The chain's `E[log w]` at u* was 0.847 on 64 steps and 0.862 ± 0.001 on 256, against
    `log Z - KL = 0.8686` (`log Z = 0.8755`, KL = 0.0069): TB's `log Z_φ` gradient at the true `log Z`
    would be 0.013 = 2.8 SE, at `log Z - KL` it is 0.006 = 1.4 SE."""
    task, problem = fixed_point.flow_problem(num_steps=256)
    control = fixed_point.affine_control(fixed_point.flow_optimal_control(task, problem.base))
    config = sde.SDEConfig(integrator="scan")
    num_paths = 64

    if name == "trajectory_balance":
        log_Z_star = jnp.float32(task.log_Z - flow_initial_kl(task))

        def gradient(theta, key):
            def loss(args):
                th, log_Z = args
                return path_kl.trajectory_balance_loss(key, problem, control, th, log_Z, num_paths, config)[0]

            g_theta, g_log_Z = jax.grad(loss)((theta, log_Z_star))
            return {**g_theta, "log_Z": g_log_Z[None]}

    else:
        loss = _loss_call(name, None)

        def gradient(theta, key):
            return jax.grad(lambda th: loss(key, problem, control, th, num_paths, config)[0])(theta)

    grads, _ = fixed_point.perturbation_gradients(gradient, num_batches=16)
    return fixed_point.z_scores(grads[0]), fixed_point.z_scores(grads[1])


@pytest.mark.slow  # 16 x 64 paths of 256 steps per perturbation, about 4 s each
@pytest.mark.parametrize("name", ["log_variance", "trajectory_balance"])
def test_loss_gradient_vanishes_at_optimal_control_on_the_exact_flow(name):
    z_optimal, z_perturbed = flow_fixed_point_z_scores(name)
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


@pytest.mark.parametrize("kind", ["brownian", "vp"])
def test_discrete_chain_oracle_reproduces_brownian_oracle_and_log_Z(kind):
    """On the Brownian base (a_k = 1, Dirac start) the backward recursion gives the discrete control of
    `GaussianOracle`; on both bases `log E_{p_0}[h_0] = log Z`, `log h_K = r`, and only the VP start
    (not memoryless) adds a variance floor `Var_{p_0}[log h_0] > 0`."""
    target = targets.get("gaussian_correlated")
    truth = target.ground_truth
    problem = sampling_problem(target, _base(kind, 2), num_steps=16)
    oracle = DiscreteChainOracle(truth["mean"], truth["covariance"], problem.base, problem.ts, target.log_Z)
    assert oracle.log_Z_chain == pytest.approx(target.log_Z, abs=1e-6)
    assert oracle.log_weight_mean < target.log_Z  # the ELBO of the best EM control
    assert (oracle.initial_log_weight_var > 0) == (kind == "vp")
    x = 2.0 * jax.random.normal(jax.random.key(0), (8, 2))
    np.testing.assert_allclose(
        jax.vmap(lambda y: oracle.log_h(y, problem.num_steps))(x), jax.vmap(problem.tilt)(x), rtol=1e-4
    )
    if kind == "brownian":
        reference = _brownian_oracle(truth, problem.base, problem.ts, target.log_Z)
        controls = jax.jit(jax.vmap(jax.vmap(oracle.control, (None, 0, None)), (None, None, 0)))
        expected = jax.jit(jax.vmap(jax.vmap(reference, (None, 0, None)), (None, None, 0)))
        np.testing.assert_allclose(
            controls(None, x, problem.times[:-1]), expected(None, x, problem.times[:-1]), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(TypeError, match="brownian"):
        DiscreteChainOracle(truth["mean"], truth["covariance"], kind, problem.ts)


@pytest.mark.parametrize("kind", ["brownian", "vp"])
def test_optimal_control_log_weights_nearly_constant(oracle_problems, kind):
    """At u* the LV loss itself is small and the batch log Ẑ is right (log w ≈ log Z up to EM mismatch);
    the mean and variance of log w are the closed forms of `DiscreteChainOracle` within 4 SE."""
    problem, optimal, log_Z = oracle_problems(kind)
    path = sde.simulate(
        jax.random.key(1), problem, optimal, None, 4096, sde.SDEConfig(integrator="scan", detach="all")
    )
    zero = sde.simulate(
        jax.random.key(1),
        problem,
        lambda p, x, t: jnp.zeros_like(x),
        None,
        4096,
        sde.SDEConfig(integrator="scan", detach="all"),
    )
    estimate = estimators.log_Z(path.log_w)
    assert abs(float(estimate.value) - log_Z) < 4.0 * float(estimate.se) + 0.01
    assert float(jnp.std(path.log_w)) < 0.5 * float(jnp.std(zero.log_w))
    truth = problem.target.ground_truth
    oracle = DiscreteChainOracle(truth["mean"], truth["covariance"], problem.base, problem.ts, log_Z)
    log_w = np.asarray(path.log_w, np.float64)
    n, centred = log_w.size, log_w - log_w.mean()
    assert abs(log_w.mean() - oracle.log_weight_mean) < 4.0 * log_w.std() / np.sqrt(n)
    assert abs(log_w.var() - oracle.log_weight_var) < 4.0 * np.std(centred**2) / np.sqrt(n)


# ---------------------------------------------------------------------------------------------
# trajectory balance's log Z, configs (the Method contract: tests/samplers/test_method_contract.py)
# ---------------------------------------------------------------------------------------------

TINY = {"batch_size": 16, "network.hidden": (8,), "network.time_embedding_dim": 4}
TINY_STEPS = 8


def _tiny_method(name):
    target = targets.get("gaussian_correlated")
    problem = sampling_problem(target, _base(METHOD_BASES[name], 2), num_steps=TINY_STEPS)
    spec = samplers.get(name)
    return spec, problem, spec.build(problem, spec.make_config(**TINY))


@pytest.mark.slow  # a training run
def test_trajectory_balance_learns_log_Z_parameter():
    spec, _, method = _tiny_method("trajectory_balance")
    state = method.init(jax.random.key(0))
    assert set(state.params) == {"control", "log_Z"}
    new_state, info = jax.jit(method.step)(jax.random.key(1), state)
    # ½ mean (log Z_φ - log w)²: the gradient in log Z_φ is log Z_φ - mean(log w), and Adam's first
    # step has size log_Z_learning_rate, so log Z_φ moves by exactly that towards the batch ELBO.
    assert float(info.log_Z_param) == 0.0
    step_size = spec.make_config().log_Z_learning_rate
    expected = step_size * np.sign(float(info.elbo))
    assert float(new_state.params["log_Z"]) == pytest.approx(expected, rel=1e-3)


def test_bad_configs_and_bases_raise():
    with pytest.raises(ValueError, match="valid choices"):
        path_kl.PathKLConfig(network={"kind": "transformer"})
    with pytest.raises(ValueError, match="valid choices"):
        path_kl.PathKLConfig(sde={"integrator": "rk4"})
    with pytest.raises(ValueError, match="batch_size"):
        path_kl.PathKLConfig(batch_size=1)
    with pytest.raises(ValueError, match="valid fields"):
        samplers.get("pis").make_config(num_steps=3)
    target = targets.get("gaussian")
    with pytest.raises(ValueError, match="brownian"):
        samplers.get("pis").build(
            sampling_problem(target, _base("vp", 2), num_steps=4), path_kl.PathKLConfig()
        )
    with pytest.raises(ValueError, match="vp"):
        samplers.get("dds").build(
            sampling_problem(target, _base("brownian", 2), num_steps=4), path_kl.PathKLConfig()
        )
    with pytest.raises(TypeError, match="TrajectoryBalanceConfig"):
        path_kl.build_trajectory_balance(
            sampling_problem(target, _base("brownian", 2), num_steps=4), path_kl.PathKLConfig()
        )


# ---------------------------------------------------------------------------------------------
# training on analytic targets: budgets in tests/samplers/methods/analytic.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a statistical training bar: scripts/analytic_checks.py tabulates it
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", sorted(METHOD_BASES))
def test_training_reaches_log_Z_and_ess(name, target_name):
    """|log Ẑ - log Z| < 0.05 and reverse ESS > 0.8 (4000 samples), seed 0, one compilation."""
    for figures in analytic.check_fast(name, target_name):
        if name == "trajectory_balance":
            # log Z_φ minimises E[½(log Z_φ - log w)²] on-policy: it tracks the ELBO E[log w] ≤ log Z.
            assert abs(float(figures.state.params["log_Z"]) - figures.elbo) < 0.05, figures


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", sorted(METHOD_BASES))
def test_training_reaches_log_Z_and_ess_more_seeds(name, target_name):
    analytic.check_slow(name, target_name)


def test_config_is_frozen_and_recorded():
    config = samplers.get("trajectory_balance").make_config(log_Z_learning_rate=0.1)
    assert isinstance(config, path_kl.TrajectoryBalanceConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 3  # type: ignore[misc]
    assert dataclasses.asdict(config)["log_Z_learning_rate"] == 0.1
