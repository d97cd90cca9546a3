"""Tests of Adjoint Matching (`samplers.methods.adjoint_matching`).

- Lean adjoint: closed form on the linear VP drift (discrete products, and first-order convergence to
  `exp(∫_t^1 ℓ) ã(1)`); constant for the Brownian base; equal (float64, to rounding) to the gradient of
  `r(x_K)` w.r.t. `x_k` through the Euler–Maruyama map with frozen increments, on the Brownian, VP and a
  non-linear memoryless-flow base, and NOT equal for the "right" evaluation on the non-linear base.
- Loss: the `dt` / `uniform` weightings and the quantile mask against direct numpy formulas; time
  sub-sampling draws distinct in-range indices.
- Fixed point: with the closed-form (discrete-grid) optimal control of a Gaussian target under the
  Brownian base, the loss gradient w.r.t. an affine perturbation `u = u* + A x + c` is within 3 standard
  errors of zero over independent batches (all times and sub-sampled times), and far from zero at a
  perturbed control; the same with the closed-form continuous-time optimum of an exact tilted flow (the
  memoryless flow base of ft_gmm2d_linear), on a grid fine enough for the O(h) bias to hide in the SE.
- Conformance and determinism: jit, one compilation across chunks, finite outputs, exact cost counters,
  identical histories and samples for the same seed, every named option exercised, bad configs raise.
- Training: the 2-D correlated Gaussian and the 1-D bimodal mixture (Brownian base, `analytic.py`)
  reach `|log Ẑ - log Z| < 0.05` and reverse ESS > 0.8 (seeds 0, 1, 2 in `make test-slow`).
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
from samplers.gaussian_oracle import GaussianOracle
from samplers.methods import adjoint_matching as am
from samplers.problem import sampling_problem
from samplers.train import train
from tests.samplers.methods import analytic, fixed_point
from tests.samplers.methods.gaussian_flow import nonlinear_flow_problem


def _problem(kind: str, num_steps: int, dim: int = 2):
    if kind == "flow":
        return nonlinear_flow_problem(num_steps)
    target = targets.get("gaussian_correlated", dim=dim)
    base = VPBase(dim, sigma0=2.0) if kind == "vp" else BrownianBase(dim, LinearSchedule(1.5))
    return sampling_problem(target, base, num_steps=num_steps)


def _wiggly_control(params, x, t):
    return 0.5 * jnp.sin(2.0 * x + 3.0 * t)


# ---------------------------------------------------------------------------------------------
# the lean adjoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("evaluation", ["left", "right"])
def test_lean_adjoint_linear_drift_discrete_closed_form(evaluation):
    problem = _problem("vp", 20)
    trajectory = jax.random.normal(jax.random.key(0), (21, 5, 2))  # irrelevant for a linear drift
    terminal = jax.random.normal(jax.random.key(1), (5, 2))
    adjoints = am.lean_adjoint(problem, trajectory, terminal, evaluation=evaluation)
    ts = np.asarray(problem.times, np.float64)
    h = np.diff(ts)
    ell = -0.5 * np.asarray(problem.base.beta(ts), np.float64)
    ell_used = ell[:-1] if evaluation == "left" else ell[1:]
    factors = np.append(np.cumprod((1.0 + h * ell_used)[::-1])[::-1], 1.0)  # Π_{j≥k}(1 + h_j ℓ_j)
    expected = factors[:, None, None] * np.asarray(terminal, np.float64)[None]
    np.testing.assert_allclose(np.asarray(adjoints), expected, rtol=2e-5, atol=1e-7)


def test_lean_adjoint_linear_drift_converges_to_exponential():
    base = VPBase(1, sigma0=1.0)
    exact = float(np.exp(-0.5 * (base.beta_integral(1.0) - base.beta_integral(0.0))))  # exp(∫_0^1 ℓ)
    errors = []
    for num_steps in (100, 200, 400):
        problem = sampling_problem(targets.get("gaussian", dim=1), base, num_steps=num_steps)
        adjoints = am.lean_adjoint(problem, jnp.zeros((num_steps + 1, 1, 1)), jnp.ones((1, 1)))
        errors.append(abs(float(adjoints[0, 0, 0]) - exact) / exact)
    assert errors[-1] < 0.02, errors
    assert 1.7 < errors[0] / errors[1] < 2.3 and 1.7 < errors[1] / errors[2] < 2.3, errors  # first order


def test_lean_adjoint_is_constant_for_brownian_base():
    problem = _problem("brownian", 16)
    path, adjoints = am.simulate_with_adjoint(
        jax.random.key(2), problem, _wiggly_control, None, 64, sde.SDEConfig(integrator="scan")
    )
    expected = -jax.vmap(problem.grad_tilt)(path.trajectory[-1])
    np.testing.assert_array_equal(np.asarray(adjoints), np.broadcast_to(np.asarray(expected), adjoints.shape))
    assert float(jnp.max(jnp.abs(expected))) > 0.1  # a non-trivial tilt


def _vjp_reference(problem, trajectory):
    """`∇_{x_k} r(x_K)` through `x_{j+1} = x_j + h_j b(x_j, t_j) + δ_j` with the increments δ frozen.

    Differentiating w.r.t. additive perturbations `e_k` of every state (at 0) gives all `k` at once.
    """
    base, ts = problem.base, problem.times.astype(trajectory.dtype)
    h = jnp.diff(ts)
    drift = jax.vmap(lambda x, t: jax.vmap(base.drift, in_axes=(0, None))(x, t))(trajectory[:-1], ts[:-1])
    deltas = trajectory[1:] - trajectory[:-1] - h[:, None, None] * drift  # noise + σ h u, frozen

    def reward_of_perturbations(e, x0, d):
        def body(x, inputs):
            k, e_k, d_k = inputs
            x = x + e_k
            return x + h[k] * base.drift(x, ts[k]) + d_k, None

        x_end, _ = jax.lax.scan(body, x0, (jnp.arange(problem.num_steps), e[:-1], d))
        return problem.tilt(x_end + e[-1])

    zeros = jnp.zeros((trajectory.shape[1], *trajectory.shape[::2]), trajectory.dtype)  # (n, K+1, dim)
    grads = jax.vmap(jax.grad(reward_of_perturbations), in_axes=(0, 0, 1))(zeros, trajectory[0], deltas)
    return jnp.swapaxes(grads, 0, 1)  # (K+1, n, dim)


@pytest.mark.parametrize("kind", ["brownian", "vp", "flow"])
def test_lean_adjoint_equals_gradient_through_discrete_flow_map(kind):
    problem = _problem(kind, 12)
    config = sde.SDEConfig(integrator="scan", save_trajectory=True)
    path = sde.simulate(jax.random.key(3), problem, _wiggly_control, None, 16, config)  # float32 simulation
    with jax.enable_x64(True):  # scoped: the identity is then checked to float64 rounding
        trajectory = jnp.asarray(path.trajectory, jnp.float64)
        terminal = -jax.vmap(problem.grad_tilt)(trajectory[-1])
        adjoints = am.lean_adjoint(problem, trajectory, terminal, evaluation="left")
        assert adjoints.dtype == jnp.float64
        reference = -_vjp_reference(problem, trajectory)
        np.testing.assert_allclose(np.asarray(adjoints), np.asarray(reference), rtol=1e-10, atol=1e-12)
        if (
            kind == "flow"
        ):  # the "right" evaluation point is only a first-order approximation of that gradient
            right = am.lean_adjoint(problem, trajectory, terminal, evaluation="right")
            assert float(jnp.max(jnp.abs(right - reference))) > 1e-3


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def test_loss_weightings_and_quantile_mask_match_direct_formulas():
    problem = _problem("vp", 6)
    k_steps, n, dim = 6, 10, 2
    trajectory = jax.random.normal(jax.random.key(4), (k_steps + 1, n, dim))
    adjoints = jax.random.normal(jax.random.key(5), (k_steps + 1, n, dim))
    control = lambda theta, x, t: theta * x + t
    ts = np.asarray(problem.times, np.float64)
    h, sig = np.diff(ts), np.asarray(problem.base.sigma(problem.times[:-1]), np.float64)
    x, a = np.asarray(trajectory, np.float64), np.asarray(adjoints, np.float64)
    residual = 0.7 * x[:-1] + ts[:-1, None, None] + sig[:, None, None] * a[:-1]  # (K, n, dim)
    squared = np.sum(residual**2, -1)  # (K, n)

    loss, aux = am.adjoint_matching_loss(jax.random.key(0), problem, control, 0.7, trajectory, adjoints)
    per_sample = np.sum(0.5 * h[:, None] * squared, 0)
    np.testing.assert_allclose(np.asarray(aux.per_sample), per_sample, rtol=1e-5)
    np.testing.assert_allclose(float(loss), per_sample.mean(), rtol=1e-5)
    assert aux.network_evals == n * k_steps

    loss_u, _ = am.adjoint_matching_loss(
        jax.random.key(0), problem, control, 0.7, trajectory, adjoints, time_weighting="uniform"
    )
    np.testing.assert_allclose(float(loss_u), squared.mean(0).mean(), rtol=1e-5)

    loss_q, aux_q = am.adjoint_matching_loss(
        jax.random.key(0), problem, control, 0.7, trajectory, adjoints, loss_clip_quantile=0.5
    )
    kept = per_sample <= np.quantile(per_sample, 0.5)
    np.testing.assert_array_equal(np.asarray(aux_q.kept) > 0, kept)
    np.testing.assert_allclose(float(loss_q), per_sample[kept].mean(), rtol=1e-5)
    assert float(loss_q) < float(loss)

    grad = jax.grad(
        lambda th: am.adjoint_matching_loss(jax.random.key(0), problem, control, th, trajectory, adjoints)[0]
    )
    expected_grad = np.sum(0.5 * h[:, None, None] * 2 * residual * x[:-1], (0, 2)).mean()
    np.testing.assert_allclose(float(grad(0.7)), expected_grad, rtol=1e-4)


def test_select_times_draws_distinct_indices():
    idx = np.asarray(am.select_times(jax.random.key(0), 500, 10, 4))
    assert idx.shape == (500, 4) and idx.min() >= 0 and idx.max() <= 9
    assert all(len(set(row)) == 4 for row in idx)
    counts = np.bincount(idx.ravel(), minlength=10)  # uniform: each index in 4/10 of the rows
    assert np.all(np.abs(counts - 200) < 5 * np.sqrt(500 * 0.4 * 0.6)), counts
    full = np.asarray(am.select_times(jax.random.key(0), 3, 10, None))
    np.testing.assert_array_equal(full, np.tile(np.arange(10), (3, 1)))
    with pytest.raises(ValueError, match="exceeds"):
        am.select_times(jax.random.key(0), 3, 10, 11)


# ---------------------------------------------------------------------------------------------
# fixed point
# ---------------------------------------------------------------------------------------------


def fixed_point_z_scores(time_subsample=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 256) of the loss gradient w.r.t. an affine perturbation of `u*`, at the
    optimum and at a perturbed control (also used by scripts/analytic_checks.py)."""
    target = targets.get("gaussian_correlated")
    base = BrownianBase(2, LinearSchedule(1.5))
    problem = sampling_problem(target, base, num_steps=32)
    truth = target.ground_truth
    optimal = GaussianOracle(truth["mean"], truth["covariance"], base, log_Z=target.log_Z).discrete_control(
        problem.ts
    )
    config = sde.SDEConfig(integrator="scan")
    control = fixed_point.affine_control(optimal)

    def gradient(theta, key):
        key_sim, key_loss = jax.random.split(key)
        path, adjoints = am.simulate_with_adjoint(key_sim, problem, control, theta, 256, config)
        return jax.grad(
            lambda th: am.adjoint_matching_loss(
                key_loss, problem, control, th, path.trajectory, adjoints, time_subsample=time_subsample
            )[0]
        )(theta)

    grads, _ = fixed_point.perturbation_gradients(gradient, num_batches=16)
    return fixed_point.z_scores(grads[0]), fixed_point.z_scores(grads[1])


@pytest.mark.parametrize(
    "time_subsample",
    # subsampling the loss times does not move the fixed point: the fast suite checks all times
    [None, pytest.param(8, marks=pytest.mark.slow)],
)
def test_loss_gradient_vanishes_at_optimal_control(time_subsample):
    z_optimal, z_perturbed = fixed_point_z_scores(time_subsample)
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


def flow_fixed_point_z_scores() -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 256 on-policy trajectories, all loss times) of the loss gradient w.r.t.
    an affine perturbation of the closed-form `u*` of ft_gmm2d_linear's exact tilted flow (docs/methods.md
    §1.5, "Optimal control"), at the optimum and perturbed (also used by scripts/analytic_checks.py).

    `u*` is the continuous-time optimum; the loss's fixed point is that of the Euler–Maruyama chain (the
    lean adjoint is the gradient through the discrete map), O(h) away. 256 quadratic steps put that bias
    below the standard error tested against: measured at u*, the largest |mean / SE| was 22.7 on 8 steps,
    5.3 on 32, 2.3 on 128 and 0.6 on 256 (16 batches); on 64 batches, 2.1 on 256 steps (mean gradients
    ≤ 0.03 against SEs 0.01-0.04)."""
    task, problem = fixed_point.flow_problem(num_steps=256)
    control = fixed_point.affine_control(fixed_point.flow_optimal_control(task, problem.base))
    config = sde.SDEConfig(integrator="scan")

    def gradient(theta, key):
        key_sim, key_loss = jax.random.split(key)
        path, adjoints = am.simulate_with_adjoint(key_sim, problem, control, theta, 256, config)
        return jax.grad(
            lambda th: am.adjoint_matching_loss(key_loss, problem, control, th, path.trajectory, adjoints)[0]
        )(theta)

    grads, _ = fixed_point.perturbation_gradients(gradient, num_batches=16)
    return fixed_point.z_scores(grads[0]), fixed_point.z_scores(grads[1])


@pytest.mark.slow  # 16 x 256 trajectories of 256 steps per perturbation, about 5 s
def test_loss_gradient_vanishes_at_optimal_control_on_the_exact_flow():
    z_optimal, z_perturbed = flow_fixed_point_z_scores()
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


# ---------------------------------------------------------------------------------------------
# one step on a fixed batch, configs (the Method contract: tests/samplers/test_method_contract.py)
# ---------------------------------------------------------------------------------------------

TINY = {"batch_size": 16, "network.hidden": (8,), "network.time_embedding_dim": 4, "sde.integrator": "scan"}


def test_training_step_decreases_the_loss_on_a_fixed_batch():
    """One Adam step on a fixed batch lowers that batch's loss (the gradient has the right sign)."""
    problem = _problem("brownian", 8)
    spec = samplers.get("adjoint_matching")
    method = spec.build(problem, spec.make_config(TINY, optim={"learning_rate": 1e-2}, passes_per_batch=3))
    state, info = jax.jit(method.step)(jax.random.key(7), method.init(jax.random.key(8)))
    assert np.isfinite(float(info.loss)) and float(info.grad_norm) > 0
    assert float(info.terminal_grad_norm) > 0 and float(info.adjoint_max) >= float(info.terminal_grad_norm)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="valid choices"):
        am.AdjointMatchingConfig(network={"kind": "transformer"})
    with pytest.raises(ValueError, match="valid choices"):
        am.AdjointMatchingConfig(time_weighting="log")
    with pytest.raises(ValueError, match="valid choices"):
        am.AdjointMatchingConfig(adjoint_evaluation="middle")
    with pytest.raises(ValueError, match="batch_size"):
        am.AdjointMatchingConfig(batch_size=1)
    with pytest.raises(ValueError, match="passes_per_batch"):
        am.AdjointMatchingConfig(passes_per_batch=0)
    with pytest.raises(ValueError, match="loss_clip_quantile"):
        am.AdjointMatchingConfig(loss_clip_quantile=1.5)
    with pytest.raises(ValueError, match="time_subsample"):
        am.AdjointMatchingConfig(time_subsample=0)
    with pytest.raises(ValueError, match="valid fields"):
        samplers.get("adjoint_matching").make_config(num_steps=3)
    with pytest.raises(ValueError, match="exceeds"):
        am.build_adjoint_matching(_problem("brownian", 4), am.AdjointMatchingConfig(time_subsample=5))
    with pytest.raises(ValueError, match="valid choices"):
        am.lean_adjoint(_problem("brownian", 4), jnp.zeros((5, 1, 2)), jnp.zeros((1, 2)), evaluation="mid")
    config = samplers.get("adjoint_matching").make_config(time_subsample=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# training on analytic targets: budgets in tests/samplers/methods/analytic.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a statistical training bar: scripts/analytic_checks.py tabulates it
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", ["adjoint_matching"])
def test_training_reaches_log_Z_and_ess(name, target_name):
    """|log Ẑ - log Z| < 0.05 and reverse ESS > 0.8 (4000 samples), seed 0, one compilation."""
    analytic.check_fast(name, target_name)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", ["adjoint_matching"])
def test_training_reaches_log_Z_and_ess_more_seeds(name, target_name):
    analytic.check_slow(name, target_name)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_training_on_the_vp_base(seed):
    """AM with a non-zero (linear) base drift: VP base, σ_0 = 1.5, 2-D correlated Gaussian."""
    target = targets.get("gaussian_correlated")
    problem = sampling_problem(target, VPBase(2, sigma0=1.5), num_steps=32)
    spec = samplers.get("adjoint_matching")
    config = spec.make_config(
        {"batch_size": 256, "network.hidden": (32, 32), "optim.learning_rate": 5e-3, "sde.integrator": "scan"}
    )
    method = spec.build(problem, config)
    result = train(jax.random.key(seed), method, num_steps=400, chunk_size=200)
    assert result.num_compilations == 1
    draws = jax.jit(method.sample, static_argnums=2)(jax.random.key(100 + seed), result.state, 4000)
    log_Z, ess = estimators.log_Z(draws.log_w), estimators.reverse_ess(draws.log_w)
    assert abs(float(log_Z.value) - target.log_Z) < 0.05, (float(log_Z.value), float(ess.value))
    assert float(ess.value) > 0.8, float(ess.value)
