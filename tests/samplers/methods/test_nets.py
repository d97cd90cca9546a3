"""Tests of NETS (`nets_pinn`, `nets_action`; samplers/methods/nets.py).

- Closed-form Gaussian transport (float64): the PINN residual vanishes identically at the derived
  linear drift and free energy, so the PINN loss gradient w.r.t. a perturbation is ~0 there and many
  standard errors away from 0 at a perturbed drift; the action-matching gradient at `φ*` is within 3
  SE of zero over independent batches of exact `ρ_t` samples, and not at a perturbed potential.
- Weights with `b̂ = 0` are AIS weights: the Crooks form is exact (`E[w] = Z`, `E_B[1/w] = 1/Z` within
  SE at 8 steps), the left-point Jarzynski form is biased at 8 steps and within SE at 128.
- Hutchinson matches the exact divergence in expectation.
- ε re-tuning: new samples, consistent log Ẑ, no recompilation.
- Conformance and determinism; bad configs.
- Training: 2-D correlated Gaussian and 1-D bimodal mixture (`analytic.py`; seeds 0, 1, 2
  and a larger budget with both weight rules in `make test-slow`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers import estimators
from samplers.base_processes import BrownianBase, LinearSchedule, MemorylessFlowBase
from samplers.gaussian_oracle import GaussianTransport
from samplers.methods import nets
from samplers.networks import mlp_control
from samplers.problem import finetuning_problem, sampling_problem
from samplers.train import train
from targets.base import Target
from tests.samplers.methods import analytic
from tests.samplers.methods.tilted_flow import FLOW_T0, Transport, flow_case

METHODS = ("nets_pinn", "nets_action")


def _problem(target: Target, num_steps: int):
    return sampling_problem(target, BrownianBase(target.dim, LinearSchedule(1.0)), num_steps=num_steps)


def _z_scores(grads: np.ndarray) -> np.ndarray:
    """Mean over independent batches divided by its standard error, per component."""
    grads = np.asarray(grads, np.float64)
    return grads.mean(0) / (grads.std(0, ddof=1) / np.sqrt(grads.shape[0]))


# ---------------------------------------------------------------------------------------------
# closed-form Gaussian transport: PINN residual and action-matching fixed points
# ---------------------------------------------------------------------------------------------


def _gaussian_setup(s0: float = 1.0):
    target = targets.get("gaussian_correlated")  # mean 1, stds 2 and 0.5 rotated, log Z = log 2π
    truth = target.ground_truth
    transport = GaussianTransport.create(
        np.zeros(2), s0**2 * np.eye(2), truth["mean"], truth["covariance"], target.log_Z
    )
    annealing = nets.Annealing(2, s0, target.log_prob_fn)
    return target, transport, annealing


def test_gaussian_transport_closed_forms(x64):
    target, transport, annealing = _gaussian_setup(s0=1.3)
    x = 2.0 * jax.random.normal(jax.random.key(0), (64, 2), jnp.float64)

    @jax.jit
    def checks(t):
        u1, g1 = jax.vmap(annealing.u1_and_grad)(x)
        residual = jax.vmap(
            lambda x_, u_, g_: nets.pinn_residual(
                transport.drift, transport.free_energy, annealing, x_, t, (u_, g_)
            )
        )(x, u1, g1)
        mean, cov = transport.marginal(t)
        return dict(
            # ∂_tF = E_ρt[∂_tU] in closed form vs autodiff of F_t = -log Z_t.
            rate_gap=jax.grad(transport.free_energy)(t) - transport.free_energy_rate(t),
            residual=jnp.max(jnp.abs(residual)) / jnp.max(jnp.abs(u1)),
            # ∇φ* = b*.
            gradient_gap=jnp.max(
                jnp.abs(
                    jax.vmap(jax.grad(transport.potential), in_axes=(0, None))(x, t)
                    - jax.vmap(transport.drift, in_axes=(0, None))(x, t)
                )
            ),
            # ρ_t is the normalised Gaussian: log N(x; m_t, S_t) = -U_t(x) - log Z_t.
            marginal_gap=jnp.max(
                jnp.abs(
                    jax.scipy.stats.multivariate_normal.logpdf(x, mean, cov)
                    + jax.vmap(annealing.potential, in_axes=(0, None))(x, t)
                    + transport.log_Z(t)
                )
            ),
            log_Z=transport.log_Z(t),
        )

    results = jax.lax.map(checks, jnp.array([0.0, 0.25, 0.8, 1.0]))
    assert abs(float(results["log_Z"][0])) < 1e-12
    assert abs(float(results["log_Z"][-1]) - target.log_Z) < 1e-12
    assert float(jnp.max(jnp.abs(results["rate_gap"]))) < 1e-10, results["rate_gap"]
    assert float(jnp.max(results["residual"])) < 1e-12, results["residual"]
    assert float(jnp.max(results["gradient_gap"])) < 1e-12
    assert float(jnp.max(results["marginal_gap"])) < 1e-10


def _annealing_case() -> Transport:
    _, transport, annealing = _gaussian_setup()
    return Transport(
        annealing, transport.drift, transport.free_energy, transport.potential, transport.marginal, 0.0
    )


FIXED_POINT_CASES = {"annealing": _annealing_case, "flow": flow_case}


def test_flow_transport_closed_forms(x64):
    # On the tilted flow path, the closed-form b*, F* make the PINN residual vanish identically (the
    # rate D = λ̇r + λ∇r·v and the velocity-derived score are right), and F* is -log Z_t of ρ_t.
    case = flow_case()
    x = 2.0 * jax.random.normal(jax.random.key(0), (64, 2), jnp.float64)
    point = jax.vmap(case.path.point)(x)

    def largest_residual(t):
        residual = jax.vmap(
            lambda x_, p_: nets.pinn_residual(case.drift, case.free_energy, case.path, x_, t, p_)
        )(x, point)
        return jnp.max(jnp.abs(residual))

    largest = jax.jit(lambda ts: jax.lax.map(largest_residual, ts))(jnp.array([FLOW_T0, 0.3, 0.9, 1.0]))
    assert float(jnp.max(largest)) < 1e-9, largest
    assert abs(float(case.free_energy(jnp.float64(FLOW_T0)))) < 1e-12


def pinn_fixed_point_gradients(case: str = "annealing") -> tuple[np.ndarray, np.ndarray]:
    """PINN loss gradients (12 batches) at the exact transport and at a perturbed one (float64 only;
    also used by scripts/analytic_checks.py); `case` one of `FIXED_POINT_CASES`."""
    transport = FIXED_POINT_CASES[case]()
    path = transport.path
    num_batches, n, m = 12, 64, 4

    def gradient(theta, key):
        key_x, key_t = jax.random.split(key)
        x = 2.0 * jax.random.normal(key_x, (n, m, 2), jnp.float64)  # μ_t: any full-support law
        t = jax.random.uniform(key_t, (n, m), jnp.float64, transport.t_start, 1.0)
        point = jax.vmap(jax.vmap(path.point))(x)
        weights = jnp.full((n, m), 1.0 / m)

        def loss(theta):
            drift = lambda y, s: transport.drift(y, s) + theta["A"] @ y + theta["c"]
            free_energy = lambda s: transport.free_energy(s) + theta["f"] * s
            return nets.pinn_loss(drift, free_energy, path, x, t, point, weights, key)

        g = jax.grad(loss)(theta)
        return jnp.concatenate([g["A"].ravel(), g["c"], g["f"][None]])

    zero = {"A": jnp.zeros((2, 2)), "c": jnp.zeros(2), "f": jnp.float64(0.0)}
    perturbed = {"A": 0.1 * jnp.eye(2), "c": jnp.array([0.1, -0.05]), "f": jnp.float64(0.1)}
    keys = jax.random.split(jax.random.key(1), num_batches)
    thetas = jax.tree.map(lambda a, b: jnp.stack([a, b]), zero, perturbed)
    grads = jax.jit(jax.vmap(lambda th: jax.lax.map(lambda k: gradient(th, k), keys)))(thetas)
    return np.asarray(grads[0]), np.asarray(grads[1])


@pytest.mark.parametrize("case", sorted(FIXED_POINT_CASES))
def test_pinn_loss_gradient_vanishes_at_perfect_transport(x64, case):
    at_optimum, at_perturbed = pinn_fixed_point_gradients(case)
    # The residual is identically zero at the optimum: the gradient is zero up to round-off.
    assert np.max(np.abs(at_optimum)) < 1e-9, at_optimum
    # every component of the perturbation is detected on the annealing; on the flow path some directions
    # barely change the residual there (e.g. the drift's off-diagonal terms), the perturbation as a whole is
    detected = np.min if case == "annealing" else np.max
    assert detected(np.abs(_z_scores(at_perturbed))) > 6.0, _z_scores(at_perturbed)


def action_fixed_point_z_scores(case: str = "annealing") -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of exact ρ_t draws) of the action-matching gradient at `φ*` and at a
    perturbed potential (float64 only; also used by scripts/analytic_checks.py); `case` one of
    `FIXED_POINT_CASES`."""
    transport = FIXED_POINT_CASES[case]()
    path = transport.path
    num_batches, n, m = 16, 256, 8

    def features(y, s):
        return jnp.array([y[0], y[1], 0.5 * y @ y, s * y[0]])

    def gradient(theta, key):
        key_t, key_x = jax.random.split(key)
        t = jax.random.uniform(key_t, (m,), jnp.float64, transport.t_start, 1.0)

        def exact_draws(s, k):  # exact samples of ρ_s = N(m_s, S_s): uniform weights
            mean, cov = transport.marginal(s)
            return jax.random.multivariate_normal(k, mean, cov, (n,), dtype=jnp.float64)

        x = jax.vmap(exact_draws)(t, jax.random.split(key_x, m))
        point = jax.vmap(jax.vmap(path.point))(x)

        def loss(theta):
            potential = lambda y, s: transport.potential(y, s) + theta @ features(y, s)
            return nets.action_matching_loss(
                potential, path, x, t, point, jnp.zeros((m, n)), jnp.full((m,), 1.0 / m)
            )

        return jax.grad(loss)(theta)

    keys = jax.random.split(jax.random.key(2), num_batches)
    thetas = jnp.stack([jnp.zeros(4), jnp.array([0.3, -0.3, 0.2, 0.3])])
    grads = jax.jit(jax.vmap(lambda th: jax.lax.map(lambda k: gradient(th, k), keys)))(thetas)
    return _z_scores(np.asarray(grads[0])), _z_scores(np.asarray(grads[1]))


@pytest.mark.parametrize("case", sorted(FIXED_POINT_CASES))
def test_action_matching_gradient_vanishes_at_optimal_potential(x64, case):
    z_optimum, z_perturbed = action_fixed_point_z_scores(case)
    assert np.max(np.abs(z_optimum)) < 3.0, z_optimum
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


# ---------------------------------------------------------------------------------------------
# weights with b̂ = 0 (AIS), backward paths, divergence estimator
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # statistical (8000 paths at several step counts): `make test-slow`
def test_zero_drift_weights_are_ais_weights_with_em_bias():
    target = targets.get("gaussian", dim=1, mean=1.0, scale=0.5)
    annealing = nets.Annealing(1, 1.0, target.log_prob)
    zero = lambda x, t: jnp.zeros_like(x)
    n = 8000

    def estimate(num_steps, weights, key=jax.random.key(0)):
        ts = jnp.linspace(0.0, 1.0, num_steps + 1)
        path = nets.simulate_nets(key, annealing, zero, ts, jnp.ones(num_steps), n, weights=weights)
        value, se = estimators.log_Z(path.log_w)
        return float(value) - target.log_Z, float(se)

    error, se = estimate(8, "crooks")  # exact for the discrete chain
    assert abs(error) < 3.5 * se, (error, se)
    error, se = estimate(8, "jarzynski")  # left point: O(h) bias, ≈ -1.25/K here
    assert error < -5.0 * se, (error, se)
    error, se = estimate(128, "jarzynski")
    assert abs(error) < 3.0 * se + 1e-3, (error, se)

    # Backward (Crooks) paths from exact target samples: E_B[1/w] = 1/Z.
    ts = jnp.linspace(0.0, 1.0, 9)
    x_end = target.sample(jax.random.key(1), n)
    backward = nets.simulate_nets_backward(jax.random.key(2), annealing, zero, ts, jnp.ones(8), x_end)
    value, se = estimators.log_Z_backward(backward.log_w)
    assert abs(float(value) - target.log_Z) < 3.5 * float(se), (float(value), float(se))
    assert float(estimators.eubo(backward.log_w).value) > target.log_Z


@pytest.mark.slow  # a Monte Carlo mean within standard errors (the contract runs the estimator: `hutchinson`)
def test_hutchinson_divergence_is_unbiased():
    net = mlp_control(3, hidden=(16,), time_embedding_dim=4, zero_init_output=False)
    params = net.init(jax.random.key(0))
    drift = lambda x, t: net.apply(params, x, t)
    x = jax.random.normal(jax.random.key(1), (3,))
    t = jnp.float32(0.4)
    _, exact = nets.drift_and_divergence(drift, x, t)
    np.testing.assert_allclose(exact, jnp.trace(jax.jacfwd(drift)(x, t)), rtol=1e-5, atol=1e-6)
    keys = jax.random.split(jax.random.key(2), 4000)
    values, estimates = jax.jit(jax.vmap(lambda k: nets.drift_and_divergence(drift, x, t, k, "hutchinson")))(
        keys
    )
    np.testing.assert_allclose(values[0], drift(x, t), rtol=1e-5)
    mean, se = float(jnp.mean(estimates)), float(jnp.std(estimates) / jnp.sqrt(keys.shape[0]))
    assert se > 0  # a non-diagonal Jacobian: single probes are noisy
    assert abs(mean - float(exact)) < 4.0 * se, (mean, float(exact), se)
    with pytest.raises(ValueError, match="valid choices"):
        nets.drift_and_divergence(drift, x, t, None, "skilling")


# ---------------------------------------------------------------------------------------------
# ε re-tuning
# ---------------------------------------------------------------------------------------------


def test_epsilon_retuning_changes_samples_not_log_Z():
    target = targets.get("gaussian", dim=1, mean=1.0, scale=0.5)
    problem = _problem(target, 16)
    spec = samplers.get("nets_pinn")
    method = spec.build(
        problem, spec.make_config(weights="crooks", network={"hidden": (8,), "time_embedding_dim": 4})
    )
    state = method.init(jax.random.key(0))  # b̂ = 0: AIS, exact Crooks weights for every ε
    sample = jax.jit(method.sample, static_argnums=2)
    low = sample(jax.random.key(1), nets.with_epsilon(state, 0.3), 8000)
    high = sample(jax.random.key(1), nets.with_epsilon(state, 3.0), 8000)
    assert sample._cache_size() == 1  # ε lives in the state: no recompilation
    assert float(jnp.mean(jnp.abs(low.x - high.x))) > 0.1
    estimates = [estimators.log_Z(d.log_w) for d in (low, high)]
    for value, se in estimates:
        assert abs(float(value) - target.log_Z) < 3.5 * float(se), (float(value), float(se))
    # More Langevin mixing gives better AIS weights on this target.
    assert float(estimators.reverse_ess(high.log_w).value) > float(estimators.reverse_ess(low.log_w).value)
    best, ess = nets.tune_epsilon(jax.random.key(3), method, state, [0.3, 3.0], 512)
    assert float(best.extra.epsilon) == 3.0 and ess.shape == (2,)
    # Crooks weights have backward paths: E_B[1/w] = 1/Z.
    log_w_backward = jax.jit(method.backward)(jax.random.key(4), best, target.sample(jax.random.key(5), 8000))
    value, se = estimators.log_Z_backward(log_w_backward)
    assert abs(float(value) - target.log_Z) < 3.5 * float(se), (float(value), float(se))
    with pytest.raises(TypeError, match="LearnedState"):
        nets.with_epsilon(state.params, 1.0)


# ---------------------------------------------------------------------------------------------
# fine-tuning problems, configs (the Method contract: tests/samplers/test_method_contract.py)
# ---------------------------------------------------------------------------------------------

TINY = {
    "batch_size": 8,
    "network.hidden": (8,),
    "network.time_embedding_dim": 4,
    "free_energy_hidden": (4,),
    "time_subsample": 3,
}
TINY_STEPS = 6


def test_finetuning_problem():
    # Fine-tuning: U_1 = -(λ reward + log p^base_K); the base supplies only the grid and γ̃.
    base = BrownianBase(2, LinearSchedule(1.0))
    problem = finetuning_problem(base, lambda x: -jnp.sum((x - 1.0) ** 2), 0.5, num_steps=4)
    annealing = nets.annealing_for(problem, 1.0)
    x = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(annealing.u1_and_grad(x)[0], -problem.log_target(x), rtol=1e-6)
    spec = samplers.get("nets_pinn")
    method = spec.build(problem, spec.make_config(TINY))
    draws = jax.jit(method.sample, static_argnums=2)(jax.random.key(2), method.init(jax.random.key(3)), 16)
    assert draws.x.shape == (16, 2) and np.all(np.isfinite(draws.log_w))


def test_bad_configs_and_problems_raise():
    with pytest.raises(ValueError, match="valid choices"):
        nets.NETSConfig(weights="girsanov")
    with pytest.raises(ValueError, match="valid choices"):
        nets.NETSConfig(network={"kind": "transformer"})
    with pytest.raises(ValueError, match="valid choices"):
        nets.NETSConfig(epsilon_schedule="cosine")
    with pytest.raises(ValueError, match="epsilon > 0"):
        nets.NETSConfig(weights="crooks", epsilon=0.0)
    with pytest.raises(ValueError, match="time_subsample"):
        nets.NETSConfig(time_subsample=0)
    with pytest.raises(ValueError, match="valid fields"):
        samplers.get("nets_pinn").make_config(num_steps=3)
    with pytest.raises(TypeError, match="NETSConfig"):
        nets.build_nets_pinn(_problem(targets.get("gaussian"), 4), object())
    flow = MemorylessFlowBase(2, velocity=lambda x, t: -x, t0=0.05)
    problem = finetuning_problem(flow, lambda x: -jnp.sum(x**2), 1.0, num_steps=4)
    # the flow base's path needs the data law's score at t = 1, from the velocity or the density
    with pytest.raises(ValueError, match="terminal_score_from_velocity"):
        nets.build_nets_action(problem, nets.NETSConfig())
    config = samplers.get("nets_action").make_config(epsilon=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epsilon = 2.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# training on analytic targets: budgets in tests/samplers/methods/analytic.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a statistical training bar: scripts/analytic_checks.py tabulates it
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", METHODS)
def test_training_reaches_log_Z_and_ess(name, target_name):
    """|log Ẑ - log Z| < 0.05 and reverse ESS > 0.8 (4000 samples, trapezoid weights), seed 0."""
    analytic.check_fast(name, target_name)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", METHODS)
def test_training_reaches_log_Z_and_ess_more_seeds(name, target_name):
    analytic.check_slow(name, target_name)


# A larger budget, checked with both weight rules and (nets_pinn) the learned free energy. The grid has
# 64 steps: the default left-point Jarzynski weights carry an O(h) quadrature bias (about -1.9/K on the
# Gaussian with a near-perfect drift), which the trapezoid rule removes.
TRAIN = {
    "gaussian": dict(
        num_steps=400, grid_steps=64, config={"network.hidden": (32, 32), "optim.learning_rate": 3e-3}
    ),
    "bimodal": dict(
        num_steps=400,
        grid_steps=64,
        config={"network.hidden": (32, 32), "optim.learning_rate": 3e-3, "s0": 2.0},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", METHODS)
def test_training_both_weight_rules_and_free_energy(name, target_name, seed):
    target = analytic.TARGETS[target_name]()
    setup = TRAIN[target_name]
    problem = _problem(target, setup["grid_steps"])
    spec = samplers.get(name)
    method = spec.build(problem, spec.make_config(**setup["config"]))
    result = train(
        jax.random.key(seed), method, num_steps=setup["num_steps"], chunk_size=setup["num_steps"] // 2
    )
    assert result.num_compilations == 1
    for weights in ("jarzynski", "jarzynski_trapezoid"):
        sampler = spec.build(problem, spec.make_config(**setup["config"], weights=weights))
        draws = jax.jit(sampler.sample, static_argnums=2)(jax.random.key(100 + seed), result.state, 4000)
        log_Z = estimators.log_Z(draws.log_w)
        ess = estimators.reverse_ess(draws.log_w)
        figures = (weights, float(log_Z.value) - target.log_Z, float(ess.value))
        assert abs(float(log_Z.value) - target.log_Z) < 0.05, figures
        assert float(ess.value) > 0.8, figures
    if name == "nets_pinn":
        # The learned free energy is a second estimate: F̂(0) - F̂(1) ≈ log Z.
        assert abs(float(result.history["log_Z_free_energy"][-1]) - target.log_Z) < 0.05
