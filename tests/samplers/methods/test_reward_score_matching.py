"""Tests of Reward Score Matching (`samplers.methods.reward_score_matching`, a RECONSTRUCTION).

- Guidance estimators against closed forms: on a Gaussian data law N(μ, c²I) with a linear reward under
  the memoryless flow base, `∇log h_t(x) = λ a_t w` with `a_t = t c²/((1-t)² + t²c²)` (the Jacobian of
  `E[X_1|X_t=x] = x + (1-t)v(x,t)`): the first-order `vjp` estimate is exact, the Jacobian-free one is not;
  the zeroth-order estimate (reward values only) matches the closed-form `∇log h_k` of a Gaussian target
  under the Brownian base within standard errors, both with one exact jump to `t = 1` and with a
  one-step branch followed by full rollouts under an arbitrary control (Girsanov-reweighted).
- Fixed point: the loss gradient w.r.t. an affine perturbation of the optimal control vanishes within
  3 SE over independent batches (flow/first-order, flow/zeroth-order on a grid fine enough for the O(h)
  branch-step bias to hide in the SE, Brownian/zeroth-order, Brownian/first-order full rollout = the
  Adjoint Matching target at its discrete optimum) and is far from zero when perturbed.
- Conformance: jit, one compilation, exact cost counters (zeroth order: no gradient evaluations),
  determinism, trust-region refresh schedule, bad options raise listing the valid choices.
- Training (slow): a short run raises the ELBO (lowers the KL-regularised objective) on the 2-D flow task.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers import sde
from samplers.base_processes import BrownianBase, LinearSchedule, VPBase
from samplers.gaussian_oracle import GaussianOracle
from samplers.methods import adjoint_matching as am
from samplers.methods import reward_score_matching as rsm
from samplers.problem import sampling_problem
from samplers.train import train
from tests.samplers.methods import gaussian_flow
from tests.samplers.methods.gaussian_flow import C2, LAM, MU, W

# the exact Gaussian flow (shared with the CMCD tests)
_gaussian_velocity, _a_t = gaussian_flow.velocity, gaussian_flow.a_t
_flow_problem, _flow_optimal_control = gaussian_flow.flow_problem, gaussian_flow.flow_optimal_control


def _brownian_problem(num_steps: int = 16):
    # A correlated Gaussian not far from the base's terminal law N(0, 1.5² I): the self-normalised
    # zeroth-order estimate has an O(1/B) bias whose constant grows with the spread of e^r over branches.
    target = targets.get("gaussian_correlated", mean=0.5, min_std=1.2, max_std=1.8)
    base = BrownianBase(2, LinearSchedule(1.5))
    problem = sampling_problem(target, base, num_steps=num_steps)
    truth = target.ground_truth
    oracle = GaussianOracle(truth["mean"], truth["covariance"], base, log_Z=target.log_Z)
    return problem, oracle


def _z_scores(grads: np.ndarray) -> np.ndarray:
    grads = np.asarray(grads, np.float64)
    se = grads.std(0, ddof=1) / np.sqrt(grads.shape[0])
    return grads.mean(0) / np.maximum(se, 1e-12)


def _wiggly_control(params, x, t):
    return 0.5 * jnp.sin(2.0 * x + 3.0 * t)


# ---------------------------------------------------------------------------------------------
# guidance estimators against closed forms
# ---------------------------------------------------------------------------------------------


def test_first_order_lookahead_is_exact_for_gaussian_data_and_linear_reward():
    problem = _flow_problem()
    x = jax.random.normal(jax.random.key(0), (5, 3, 2))
    k = jnp.broadcast_to(jnp.array([0, 4, 9]), (5, 3))
    expected = LAM * _a_t(problem.times[k])[..., None] * W
    config = rsm.RewardScoreMatchingConfig(jacobian="vjp")
    out = rsm.guidance_estimates(jax.random.key(1), problem, _wiggly_control, None, x, k, config)
    np.testing.assert_allclose(np.asarray(out.psi), np.asarray(expected), rtol=1e-4, atol=1e-6)
    assert float(out.cost.grad_evals) == 15 and float(out.cost.energy_evals) == 0
    # The Jacobian-free variant uses ∇r = λw itself: wrong by the factor a_t (far from 1 at low SNR).
    free = rsm.guidance_estimates(
        jax.random.key(1), problem, None, None, x, k, dataclasses.replace(config, jacobian="a_t")
    )
    np.testing.assert_allclose(np.asarray(free.psi), np.broadcast_to(LAM * W, x.shape), rtol=1e-6)
    clipped = rsm.guidance_estimates(
        jax.random.key(1), problem, None, None, x, k, dataclasses.replace(config, guidance_clip=0.1)
    )
    np.testing.assert_array_less(np.linalg.norm(np.asarray(clipped.psi), axis=-1), 0.1 + 1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(branch_span=None),  # one exact Gaussian jump of the Brownian chain to t = 1
        pytest.param(  # one grid step, then Girsanov-weighted rollouts under an arbitrary control
            dict(branch_span=1, lookahead_steps=None), marks=pytest.mark.slow
        ),
    ],
    ids=["jump", "rollout"],
)
def test_zeroth_order_matches_closed_form_grad_log_h(options):
    problem, oracle = _brownian_problem()
    x = jnp.array([[0.3, -0.5], [1.0, 1.0], [-1.0, 0.5], [0.2, 0.1]])
    k = jnp.array([4, 6, 10, 14])
    # Linear schedule: the EM variances s_k = σ²t_k equal ν(t_k), so the continuous formula is the chain's.
    exact = np.asarray(jax.vmap(lambda y, j: oracle.grad_log_h(y, problem.times[j]))(x, k))
    config = rsm.RewardScoreMatchingZOConfig(num_branches=512, **options)
    replicates = 32

    @jax.jit
    def estimates(keys):
        return jax.lax.map(
            lambda key: rsm.guidance_estimates(key, problem, _wiggly_control, None, x, k, config), keys
        )

    out = estimates(jax.random.split(jax.random.key(2), replicates))
    psi = np.asarray(out.psi, np.float64)
    z = (psi.mean(0) - exact) / (psi.std(0, ddof=1) / np.sqrt(replicates))
    assert np.max(np.abs(z)) < 3.5, z
    assert np.all(np.asarray(out.cost.grad_evals) == 0)
    assert np.all(np.asarray(out.cost.energy_evals) == 4 * 512)
    assert np.all((np.asarray(out.branch_ess) > 0) & (np.asarray(out.branch_ess) <= 1))


# ---------------------------------------------------------------------------------------------
# fixed point
# ---------------------------------------------------------------------------------------------


def _fixed_point_gradients(problem, optimal, config, num_batches=16, batch_size=256):
    """Per-batch gradients of `rsm_loss` w.r.t. `(A, c)` of `u = u* + A x + c`, at 0 and perturbed."""

    def control(theta, x, t):
        return optimal(None, x, t) + theta["A"] @ x + theta["c"]

    thetas = {
        "A": jnp.stack([jnp.zeros((2, 2)), 0.2 * jnp.eye(2)]),
        "c": jnp.stack([jnp.zeros(2), jnp.array([0.2, -0.1])]),
    }
    sim = sde.SDEConfig(integrator="scan", detach="all", save_trajectory=True)

    @jax.jit
    def gradients(thetas):
        def per_theta(theta):
            def per_batch(key):
                key_sim, key_times, key_guidance = jax.random.split(key, 3)
                path = sde.simulate(key_sim, problem, control, theta, batch_size, sim)
                idx = am.select_times(key_times, batch_size, problem.num_steps, config.time_subsample)
                x = path.trajectory[idx, jnp.arange(batch_size)[:, None]]
                psi = rsm.guidance_estimates(key_guidance, problem, control, theta, x, idx, config).psi
                g = jax.grad(
                    lambda th: rsm.rsm_loss(
                        problem, control, th, None, x, idx, psi, time_weight=config.time_weight
                    )[0]
                )(theta)
                return jnp.concatenate([g["A"].ravel(), g["c"]])

            return jax.lax.map(per_batch, jax.random.split(jax.random.key(0), num_batches))

        return jax.lax.map(per_theta, thetas)

    return np.asarray(gradients(thetas))


def test_loss_gradient_vanishes_at_optimal_control_flow_first_order():
    problem = _flow_problem()
    config = rsm.RewardScoreMatchingConfig(jacobian="vjp", time_subsample=4)
    grads = _fixed_point_gradients(problem, _flow_optimal_control, config, num_batches=8, batch_size=128)
    assert np.all(np.isfinite(grads))
    # The estimate is exact here, so the residual vanishes identically at u*.
    assert np.max(np.abs(grads[0])) < 1e-5 + 3 * np.max(grads[0].std(0)), grads[0]
    assert np.max(np.abs(_z_scores(grads[1]))) > 6.0
    # The Jacobian-free estimate has a different fixed point: clearly non-zero gradient at u*.
    free = _fixed_point_gradients(
        problem,
        _flow_optimal_control,
        dataclasses.replace(config, jacobian="a_t"),
        num_batches=8,
        batch_size=128,
    )
    assert np.max(np.abs(_z_scores(free[0]))) > 6.0


def flow_zeroth_order_fixed_point_z_scores() -> tuple[np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 64 on-policy trajectories x 4 loss times) of the zeroth-order loss gradient
    w.r.t. an affine perturbation of the closed-form `u*` of the exact tilted flow of `N(μ, c²I)` data with
    a linear reward, at the optimum and perturbed (also used by scripts/analytic_checks.py).

    The branch values are the one-step denoised look-ahead `e^{r(x̂_1(X'))}` (`lookahead_steps=0`),
    proportional to `h_{t'}(X')` here (`log h_t = λ w·x̂_1 + const` for Gaussian `X_1 | X_t`), so the
    estimate targets `∇log h_k` up to the one Euler–Maruyama branch step (O(h)) and the self-normalised
    ratio (O(1/B)). 256 quadratic steps and B = 512 branches put both below the SE: measured at u*, the
    largest |mean / SE| was 9.6 on 32 steps and 3.9 on 128 with B = 64, 17.6 on 32 and 2.6 on 128 with
    B = 512, and 1.1 on 256 with B = 512. (On ft_gmm2d_linear's mixture flow the denoised look-ahead is
    biased, `e^{r(x̂_1)} ≠ h`; the unbiased Girsanov rollouts, `lookahead_steps=None`, cost B·K network
    evaluations per loss point and still missed u* by 25 SE on 32 steps, 20 s per run.)"""
    problem = _flow_problem(num_steps=256)
    config = rsm.RewardScoreMatchingZOConfig(
        num_branches=512, lookahead_steps=0, branch_span=1, time_subsample=4
    )
    grads = _fixed_point_gradients(problem, _flow_optimal_control, config, num_batches=16, batch_size=64)
    assert np.all(np.isfinite(grads))
    return _z_scores(grads[0]), _z_scores(grads[1])


@pytest.mark.slow  # 16 x 64 trajectories x 4 times x 512 branches per perturbation, about 8 s
def test_loss_gradient_vanishes_at_optimal_control_flow_zeroth_order():
    z_optimal, z_perturbed = flow_zeroth_order_fixed_point_z_scores()
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


@pytest.mark.parametrize(
    "guidance",
    [
        dict(guidance="zeroth_order", branch_span=None, num_branches=1024, time_weight="suppress_high_snr"),
        pytest.param(
            dict(guidance="first_order", lookahead_steps=None, time_weight="uniform"), marks=pytest.mark.slow
        ),
    ],
    ids=["zeroth_order", "first_order_rollout"],
)
def test_loss_gradient_vanishes_at_optimal_control_brownian(guidance):
    problem, oracle = _brownian_problem()
    # Zeroth order targets ∇log h_k itself (σ_k∇log h_k = oracle.control on the linear schedule); the
    # full first-order rollout is the Adjoint Matching target, whose discrete fixed point is the
    # mean-matching control (samplers.gaussian_oracle).
    optimal = (
        oracle.control if guidance["guidance"] == "zeroth_order" else oracle.discrete_control(problem.ts)
    )
    config = rsm.RewardScoreMatchingConfig(time_subsample=4, **guidance)
    # 8 x 64 trajectories x 4 times: the zeroth-order O(1/B) bias at B = 1024 is ~0.4 SE here (it reaches
    # ~4 SE with B = 256 on 16 x 256 trajectories; the estimator is consistent, not unbiased).
    grads = _fixed_point_gradients(problem, optimal, config, num_batches=8, batch_size=64)
    z_optimal, z_perturbed = _z_scores(grads[0]), _z_scores(grads[1])
    assert np.all(np.isfinite(grads))
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


# ---------------------------------------------------------------------------------------------
# trust region, options (the Method contract: tests/samplers/test_method_contract.py)
# ---------------------------------------------------------------------------------------------

TINY = {"batch_size": 8, "network.hidden": (8,), "network.time_embedding_dim": 4, "sde.integrator": "scan"}


def test_trust_region_anchor_is_set_at_init_and_refreshed():
    """θ† is θ at init and is refreshed at the start of steps 0, 2, 4, ... (`trust_refresh=2`); a step
    with the same key and state is bit-identical."""
    problem, _ = _brownian_problem(num_steps=6)
    spec = samplers.get("reward_score_matching")
    assert spec.family == "soc-regression" and spec.supports("brownian") and spec.supports("flow")
    assert not spec.supports("vp") and "RECONSTRUCTION" in spec.description
    config = spec.make_config(**TINY, time_subsample=3, trust_refresh=2, trust_weight=0.5, guidance_clip=5.0)
    method = spec.build(problem, config)
    step = jax.jit(method.step)
    leaves = lambda tree: np.concatenate([np.ravel(v) for v in jax.tree.leaves(tree)])
    s0 = method.init(jax.random.key(5))
    s1, info1 = step(jax.random.key(6), s0)
    s1_again, info1_again = step(jax.random.key(6), s0)
    np.testing.assert_array_equal(leaves((s1, info1)), leaves((s1_again, info1_again)))
    s2, _ = step(jax.random.key(7), s1)
    s3, _ = step(jax.random.key(8), s2)
    np.testing.assert_array_equal(leaves(s2.extra), leaves(s0.params))
    np.testing.assert_array_equal(leaves(s3.extra), leaves(s2.params))
    assert not np.array_equal(leaves(s3.extra), leaves(s0.params))


def test_bad_options_raise_with_valid_choices():
    for field in (
        "guidance",
        "jacobian",
        "time_weight",
        "trust_time_weight",
        "network.kind",
        "sde.integrator",
    ):
        with pytest.raises(ValueError, match="valid choices"):
            samplers.get("reward_score_matching").make_config({field: "nonsense"})
    with pytest.raises(ValueError, match="num_branches"):
        rsm.RewardScoreMatchingConfig(num_branches=1)
    with pytest.raises(ValueError, match="lookahead_steps"):
        rsm.RewardScoreMatchingConfig(lookahead_steps=-1)
    with pytest.raises(ValueError, match="trust_refresh"):
        rsm.RewardScoreMatchingConfig(trust_refresh=-1)
    with pytest.raises(ValueError, match="branch_span"):
        rsm.RewardScoreMatchingConfig(branch_span=0)
    with pytest.raises(ValueError, match="valid fields"):
        samplers.get("reward_score_matching").make_config(num_steps=3)
    vp_problem = sampling_problem(targets.get("gaussian", dim=2), VPBase(2), num_steps=4)
    with pytest.raises(ValueError, match="valid choices"):
        rsm.build_reward_score_matching(vp_problem, rsm.RewardScoreMatchingConfig())
    with pytest.raises(ValueError, match="exceeds"):
        rsm.build_reward_score_matching(_flow_problem(4), rsm.RewardScoreMatchingConfig(time_subsample=5))
    with pytest.raises(ValueError, match="valid choices"):
        rsm.rsm_loss(_flow_problem(4), None, None, None, None, None, None, time_weight="log")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rsm.RewardScoreMatchingConfig().guidance = "zeroth_order"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reward_score_matching", "reward_score_matching_zo"])
def test_training_lowers_the_kl_regularised_objective(name):
    """`J(u) = E[½∫|u|² - r(X_1)] = -E[log w]` (Girsanov form): training raises the batch ELBO towards
    `log Z` and the final control is close to the closed-form optimum."""
    problem = _flow_problem(num_steps=16)
    spec = samplers.get(name)
    config = spec.make_config(
        batch_size=64,
        network={"hidden": (32, 32)},
        optim={"learning_rate": 3e-3},
        time_subsample=4,
        num_branches=16,
    )
    method = spec.build(problem, config)
    state0 = method.init(jax.random.key(0))
    sample = jax.jit(method.sample, static_argnums=2)
    elbo0 = float(jnp.mean(sample(jax.random.key(1), state0, 4096).log_w))
    result = train(jax.random.key(0), method, num_steps=300, chunk_size=100)
    draws = sample(jax.random.key(1), result.state, 4096)
    elbo1 = float(jnp.mean(draws.log_w))
    se = float(jnp.std(draws.log_w)) / np.sqrt(4096)
    assert elbo1 > elbo0 + 10 * se, (elbo0, elbo1, se)
    # Optimum: the tilted law of N(μ, c²I) by e^{λ w·x} is N(μ + λc²w, c²I).
    np.testing.assert_allclose(np.asarray(draws.x.mean(0)), MU + LAM * C2 * np.asarray(W), atol=0.1)
