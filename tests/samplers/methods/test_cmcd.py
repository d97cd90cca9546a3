"""Tests of Controlled Monte Carlo Diffusions (`cmcd_kl`, `cmcd_lv`).

- Exact weights: for any control and schedule (`u = 0`: ULA-MCD / AIS) the forward weights satisfy
  `E[w] = Z` and the backward weights `E[1/w] = 1/Z` within Monte-Carlo standard errors.
- Fixed point: with `p_0` equal to the (normalised) Gaussian target every level of the geometric path
  is `p_0`, `u* = 0` (continuous time), and `log w ≈ log Z`; the LV and KL gradients w.r.t. an affine
  control perturbation vanish within 3 standard errors there and are far from zero elsewhere.
- Flow base (docs/methods.md §5.3): with the model's own `log p_1` (its probability-flow ODE) the weights
  are exact Crooks weights for every control (forward and backward, within standard errors); on the exact
  tilted flow of Gaussian data with a linear reward the chain's optimum over per-grid-time constant controls
  is computed independently (`cmcd_flow_oracle`), and both losses' gradients vanish there.
- Schedule and learnability flags, conformance (jit, one compilation, finite outputs, costs),
  determinism, and training on a 2-D Gaussian and a 1-D bimodal mixture (`analytic.py`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers.base_processes import BrownianBase, LinearSchedule, MemorylessFlowBase, VPBase
from samplers.methods import cmcd
from samplers.problem import finetuning_problem, sampling_problem
from targets.base import Target
from tests.samplers.methods import analytic, cmcd_flow_oracle, fixed_point
from tests.samplers.methods.gaussian_flow import C2 as RSM_C2
from tests.samplers.methods.gaussian_flow import LAM as RSM_LAM
from tests.samplers.methods.gaussian_flow import LOG_Z as RSM_LOG_Z
from tests.samplers.methods.gaussian_flow import MU as RSM_MU
from tests.samplers.methods.gaussian_flow import W as RSM_W
from tests.samplers.methods.gaussian_flow import flow_problem as _rsm_flow_problem


def _problem(target: Target, num_steps: int):
    # CMCD uses only the grid and log γ of the problem; the base is irrelevant to it.
    return sampling_problem(target, BrownianBase(target.dim, LinearSchedule(1.0)), num_steps=num_steps)


def _ratio_mean_and_se(log_ratio) -> tuple[float, float]:
    values = np.exp(np.asarray(log_ratio, np.float64))
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


# ---------------------------------------------------------------------------------------------
# exact path weights
# ---------------------------------------------------------------------------------------------

CONTROLS = {
    "zero (ULA-AIS)": lambda params, x, t: jnp.zeros_like(x),
    "nonlinear": lambda params, x, t: 0.7 * jnp.sin(x) + t - 0.5,
}


@pytest.mark.slow  # E[w] = Z within standard errors; `scripts/analytic_checks.py` tabulates CMCD
@pytest.mark.parametrize("control_name", sorted(CONTROLS))
def test_forward_and_backward_weights_are_unbiased(control_name):
    target = targets.get("gaussian_correlated")
    # CMCD uses only the grid and log γ of a problem: a VP problem works like a Brownian one.
    problem = (
        _problem(target, 10)
        if control_name.startswith("zero")
        else sampling_problem(target, VPBase(2), num_steps=10)
    )
    config = cmcd.CMCDConfig(
        learn_initial=False, learn_schedule=False, learn_diffusion_scale=False, diffusion_scale=1.5
    )
    annealing = cmcd.init_annealing_params(problem, config)
    # A non-uniform schedule and p_0: the identity E[w] = Z holds for any kernels.
    annealing["schedule_logits"] = jnp.linspace(-1.0, 1.0, problem.num_steps)
    annealing["initial_mean"] = jnp.array([0.5, -0.5])
    params = {"control": None, "annealing": annealing}
    control = CONTROLS[control_name]
    n = 20_000

    @jax.jit
    def forward(key):
        return cmcd.simulate_cmcd(key, problem, control, params, n, config, save_trajectory=True)

    path = forward(jax.random.key(0))
    assert path.trajectory.shape == (11, n, 2) and np.all(np.isfinite(path.trajectory))
    np.testing.assert_array_equal(path.trajectory[-1], path.x)
    mean, se = _ratio_mean_and_se(path.log_w - target.log_Z)
    assert abs(mean - 1.0) < 4.0 * se, (mean, se)
    assert se < 0.05  # the check has power: the weights are not degenerate

    x_target = target.sample(jax.random.key(1), n)
    backward = jax.jit(
        lambda key: cmcd.simulate_cmcd_backward(key, problem, control, params, x_target, config)
    )(jax.random.key(2))
    mean, se = _ratio_mean_and_se(target.log_Z - backward.log_w)
    assert abs(mean - 1.0) < 4.0 * se, (mean, se)
    assert se < 0.05
    # Jensen on both sides: ELBO ≤ log Z ≤ EUBO.
    assert float(jnp.mean(path.log_w)) < target.log_Z < float(jnp.mean(backward.log_w))


def test_schedule_is_monotone_with_exact_end_points():
    target = targets.get("gaussian")
    problem = _problem(target, num_steps=12)
    config = cmcd.CMCDConfig()
    params = cmcd.init_annealing_params(problem, config)
    np.testing.assert_allclose(cmcd.annealing(params, config).betas, np.arange(13) / 12, atol=1e-6)
    params["schedule_logits"] = jax.random.normal(jax.random.key(0), (12,)) * 3.0
    betas = np.asarray(cmcd.annealing(params, config).betas)
    assert betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)


def test_learn_flags_stop_gradients():
    target = targets.get("gaussian_correlated")
    problem = _problem(target, num_steps=6)
    control = CONTROLS["nonlinear"]

    def annealing_grads(config):
        params = {"control": None, "annealing": cmcd.init_annealing_params(problem, config)}
        loss = lambda p: cmcd.cmcd_lv_loss(jax.random.key(0), problem, control, p, 64, config)[0]  # noqa: E731
        grads = jax.jit(jax.grad(loss))(params)  # one compilation instead of op-by-op dispatch
        return {name: float(jnp.sum(jnp.abs(g))) for name, g in grads["annealing"].items()}

    fixed = annealing_grads(
        cmcd.CMCDConfig(learn_initial=False, learn_schedule=False, learn_diffusion_scale=False)
    )
    learned = annealing_grads(cmcd.CMCDConfig())
    assert all(value == 0.0 for value in fixed.values()), fixed
    assert all(value > 0.0 for value in learned.values()), learned


# ---------------------------------------------------------------------------------------------
# fixed point: p_0 = target
# ---------------------------------------------------------------------------------------------


def fixed_point_z_scores(loss_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean / SE (16 batches of 512) of the loss gradient w.r.t. an affine control at `u = 0` with
    `p_0 = π` and at a perturbed control, and `std(log w)` at both (also used by
    scripts/analytic_checks.py)."""
    target = targets.get("gaussian", dim=2, mean=1.0, scale=1.5)  # γ = Z·N(1, 1.5² I)
    problem = _problem(target, num_steps=20)
    config = cmcd.CMCDConfig(learn_initial=False, learn_schedule=False, learn_diffusion_scale=False)
    annealing = cmcd.init_annealing_params(problem, config)
    annealing["initial_mean"] = jnp.full((2,), 1.0)
    annealing["initial_log_std"] = jnp.full((2,), math.log(1.5))
    loss = {"cmcd_lv": cmcd.cmcd_lv_loss, "cmcd_kl": cmcd.cmcd_kl_loss}[loss_name]
    control = fixed_point.affine_control(lambda params, x, t: jnp.zeros_like(x))  # u* = 0
    params_of = lambda theta: {"control": theta, "annealing": annealing}

    def gradient(theta, key):
        objective = lambda p: loss(key, problem, control, p, 512, config)[0]
        return jax.grad(objective)(params_of(theta))["control"]

    def spread(theta):
        path = cmcd.simulate_cmcd(jax.random.key(9), problem, control, params_of(theta), 4096, config)
        return jnp.std(path.log_w)

    grads, spreads = fixed_point.perturbation_gradients(gradient, num_batches=16, extra=spread)
    return fixed_point.z_scores(grads[0]), fixed_point.z_scores(grads[1]), np.asarray(spreads)


# statistical (16 batches of 512 paths per perturbation): `make test-slow`, and tabulated for both losses
# by scripts/analytic_checks.py in results/analytic_checks.md
@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["cmcd_lv", "cmcd_kl"])
def test_loss_gradient_vanishes_when_initial_law_is_the_target(loss_name):
    z_optimal, z_perturbed, spread = fixed_point_z_scores(loss_name)
    assert np.max(np.abs(z_optimal)) < 3.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed
    # log w ≈ log Z at u = 0 up to the ULA discretisation; a perturbation spreads it out.
    assert float(spread[0]) < 0.05 < float(spread[1])


# ---------------------------------------------------------------------------------------------
# the flow base: exact Crooks weights with the model's own log p_1, and the chain's exact optimum over
# per-grid-time constant controls on the tilted Gaussian flow (docs/methods.md §5.3)
# ---------------------------------------------------------------------------------------------

FLOW_STEPS = 16


def _flow_chain(num_steps: int = FLOW_STEPS):
    """The exact flow of `N(μ, c²I)` data with the linear reward `λ w·x` (`gaussian_flow`), CMCD's levels
    fixed at `β_k = k/K` (the oracle's), and a control that is a table of per-grid-time constants."""
    problem = _rsm_flow_problem(num_steps)
    config = cmcd.CMCDConfig(learn_initial=False, learn_schedule=False, learn_diffusion_scale=False)
    annealing = cmcd.init_annealing_params(problem, config)
    ts = jnp.asarray(problem.ts)

    def control(table, x, t):
        return table[jnp.argmin(jnp.abs(ts - t))] + 0.0 * x

    return problem, config, annealing, control


@pytest.mark.slow  # 20,000 forward and backward paths at two controls, ODE likelihoods included, ~20 s
def test_flow_weights_are_exact_crooks_weights():
    """With the model's `log p_1` (its probability-flow ODE) in the weight the chain's backward measure is
    normalised: `E_F[w] = Z` and `E_B[1/w] = 1/Z` within standard errors for the zero control and for the
    chain's optimum, and ELBO ≤ log Z ≤ EUBO."""
    problem, config, annealing, control = _flow_chain()
    optimum, _ = cmcd_flow_oracle.optimal_controls(np.asarray(problem.ts), "kl")
    tilted = RSM_MU + RSM_LAM * RSM_C2 * np.asarray(RSM_W, np.float64)
    n = 20_000
    x_target = tilted + math.sqrt(RSM_C2) * np.asarray(jax.random.normal(jax.random.key(5), (n, 2)))
    for table in (jnp.zeros((FLOW_STEPS + 1, 2)), jnp.asarray(optimum)):
        params = {"control": table, "annealing": annealing}
        forward = jax.jit(lambda key, p=params: cmcd.simulate_cmcd(key, problem, control, p, n, config))
        log_w = forward(jax.random.key(0)).log_w
        mean, se = _ratio_mean_and_se(log_w - RSM_LOG_Z)
        assert abs(mean - 1.0) < 4.0 * se and se < 0.05, (mean, se)
        backward = jax.jit(
            lambda key, p=params: cmcd.simulate_cmcd_backward(key, problem, control, p, x_target, config)
        )(jax.random.key(2)).log_w
        mean, se = _ratio_mean_and_se(RSM_LOG_Z - backward)
        assert abs(mean - 1.0) < 4.0 * se and se < 0.05, (mean, se)
        assert float(jnp.mean(log_w)) < RSM_LOG_Z < float(jnp.mean(backward))


def flow_fixed_point_z_scores(loss_name: str, num_batches: int = 16, batch: int = 512):
    """z-scores (mean / SE over `num_batches` batches) of the CMCD loss gradient w.r.t. the per-grid-time
    control table, at the chain's exact optimum `c*` (`cmcd_flow_oracle`, float64) and at `c* + 0.3`
    (also used by scripts/analytic_checks.py)."""
    problem, config, annealing, control = _flow_chain()
    optimum, _ = cmcd_flow_oracle.optimal_controls(np.asarray(problem.ts), loss_name.removeprefix("cmcd_"))
    loss = {"cmcd_lv": cmcd.cmcd_lv_loss, "cmcd_kl": cmcd.cmcd_kl_loss}[loss_name]

    def gradient(table, key):
        params = {"control": table, "annealing": annealing}
        return jax.grad(lambda p: loss(key, problem, control, p, batch, config)[0])(params)["control"]

    @jax.jit
    def batches(table):
        return jax.lax.map(lambda key: gradient(table, key), jax.random.split(jax.random.key(0), num_batches))

    tables = (jnp.asarray(optimum), jnp.asarray(optimum) + 0.3)
    return tuple(fixed_point.z_scores(np.asarray(batches(t)).reshape(num_batches, -1)) for t in tables)


@pytest.mark.parametrize("loss_name", ["cmcd_kl", "cmcd_lv"])
def test_flow_loss_gradient_vanishes_at_the_chains_exact_optimum(loss_name):
    """docs/methods.md §5.3: on the tilted Gaussian flow, over controls constant in `x` at each grid time,
    the KL loss is a quadratic in the controls and the LV loss's detached gradient is affine in them, so the
    chain's optimum is one linear solve (`cmcd_flow_oracle`, written from the kernels' definitions). There
    every component of the implementation's loss gradient is within 4 SE of zero (34 components, 16
    batches of 512 paths; measured max |z| 2.7 / 2.1), and at `c* + 0.3` it is not (measured 22 / 28). The
    two losses share this optimum (the LV gradient on detached paths is the gradient of the KL)."""
    z_optimal, z_perturbed = flow_fixed_point_z_scores(loss_name)
    assert np.max(np.abs(z_optimal)) < 4.0, z_optimal
    assert np.max(np.abs(z_perturbed)) > 6.0, z_perturbed


@pytest.mark.slow  # 8192 paths with ODE likelihoods, and the oracle, ~15 s
def test_flow_oracle_matches_the_chain_at_its_optimum():
    """The oracle's exact `E[log w]` at its optimum is the implementation's mean `log w` within 4 SE, below
    `log Z` (the chain's best constant-in-x control leaves a gap)."""
    problem, config, annealing, control = _flow_chain()
    optimum, elbo = cmcd_flow_oracle.optimal_controls(np.asarray(problem.ts), "kl")
    params = {"control": jnp.asarray(optimum), "annealing": annealing}
    log_w = np.asarray(cmcd.simulate_cmcd(jax.random.key(3), problem, control, params, 8192, config).log_w)
    assert abs(log_w.mean() - elbo) < 4.0 * log_w.std() / math.sqrt(log_w.size), (log_w.mean(), elbo)
    assert elbo < RSM_LOG_Z


# ---------------------------------------------------------------------------------------------
# configs (the Method contract: tests/samplers/test_method_contract.py)
# ---------------------------------------------------------------------------------------------


def test_bad_configs_and_problems_raise():
    for bad, match in (
        ({"network": {"kind": "resnet"}}, "valid choices"),
        ({"diffusion_scale": 0.0}, "diffusion_scale"),
    ):
        with pytest.raises(ValueError, match=match):
            cmcd.CMCDConfig(**bad)
    with pytest.raises(ValueError, match="valid fields"):
        samplers.get("cmcd_lv").make_config(num_steps=10)
    with pytest.raises(TypeError, match="CMCDConfig"):
        cmcd.build_cmcd_lv(_problem(targets.get("gaussian"), 4), object())
    flow = MemorylessFlowBase(dim=1, velocity=lambda x, t: -x)
    problem = finetuning_problem(flow, lambda x: -jnp.sum(x**2), 1.0, num_steps=4)
    # the flow base has its own kernels (the tilted path); they need only the velocity and r
    assert cmcd.GEOMETRIES.names() == ["brownian", "flow", "vp"]
    cmcd.build_cmcd_lv(problem, cmcd.CMCDConfig())
    with pytest.raises(ValueError, match="valid choices"):
        cmcd.simulate_cmcd(
            jax.random.key(0),
            _problem(targets.get("gaussian"), 4),
            CONTROLS["nonlinear"],
            {},
            4,
            cmcd.CMCDConfig(),
            detach="some",
        )


# ---------------------------------------------------------------------------------------------
# training on analytic targets: budgets in tests/samplers/methods/analytic.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a statistical training bar: scripts/analytic_checks.py tabulates it
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", ["cmcd_kl", "cmcd_lv"])
def test_training_reaches_log_Z_and_ess(name, target_name):
    """|log Ẑ - log Z| < 0.05 and reverse ESS > 0.8 (4000 samples), seed 0, one compilation."""
    analytic.check_fast(name, target_name)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
@pytest.mark.parametrize("name", ["cmcd_kl", "cmcd_lv"])
def test_training_reaches_log_Z_and_ess_more_seeds(name, target_name):
    analytic.check_slow(name, target_name)


def test_feature_control_reuses_the_drift_gradient_exactly():
    """`FeatureControl(net.apply_with_grad)` (the feature fed the drift's clipped ∇log γ) gives the
    same paths, weights and parameter gradients as `net.apply` evaluating ∇log γ itself."""
    from samplers.methods.common import build_control_network

    target = targets.get("gaussian_correlated")
    problem = _problem(target, 6)
    config = cmcd.CMCDConfig(grad_target_clip=0.5)  # a clip that binds: both sides must clip alike
    net = build_control_network(
        problem, hidden=(8,), grad_log_target=jax.grad(target.log_prob), grad_target_clip=0.5
    )
    params = {
        "control": jax.tree.map(lambda p: p + 0.1, net.init(jax.random.key(0))),  # non-zero output
        "annealing": cmcd.init_annealing_params(problem, config),
    }

    def loss(params, control):
        path = cmcd.simulate_cmcd(jax.random.key(1), problem, control, params, 32, config, detach="none")
        return jnp.mean(path.log_w), path.log_w

    # jitted (one compilation each instead of op-by-op dispatch of the whole chain and its gradient)
    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, lw_a), g_a = grad(params, net.apply)
    (_, lw_b), g_b = grad(params, cmcd.FeatureControl(net.apply_with_grad))
    np.testing.assert_allclose(lw_a, lw_b, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_a, g_b)


@pytest.mark.parametrize(
    "name",
    # four compilations of a CMCD step per pair; the fast suite keeps the reparametrised chain
    ["cmcd_kl", pytest.param("cmcd_lv", marks=pytest.mark.slow)],
)
def test_checkpointed_chain_gives_the_same_loss_and_gradient(name):
    """`checkpoint_steps` (jax.checkpoint per chain step) changes memory, not maths: the same loss and
    parameter gradient for the reparametrised (cmcd_kl) and the detached-state (cmcd_lv) losses."""
    target = targets.get("gaussian_correlated")
    problem = _problem(target, 5)
    spec = samplers.get(name)
    results, state = [], None
    for remat in (True, False):
        config = spec.make_config(batch_size=16, network={"hidden": (8,)}, checkpoint_steps=remat)
        method = spec.build(problem, config)
        if state is None:  # one initial state for both (init does not depend on checkpointing)
            state = method.init(jax.random.key(0))
            state = state._replace(params=jax.tree.map(lambda p: p + 0.05, state.params))
        new_state, info = jax.jit(method.step)(jax.random.key(1), state)
        results.append((float(info.loss), float(info.grad_norm), new_state.params))
    (loss_a, norm_a, params_a), (loss_b, norm_b, params_b) = results
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(norm_a, norm_b, rtol=1e-4, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_a, params_b)
