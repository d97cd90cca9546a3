"""Tests of the Adjoint Schrödinger Bridge Sampler (`samplers.methods.asbs`).

- Registry and config: the reference stage schedule, the Adjoint Sampling recipe, errors naming choices.
- Dirac source: the bridge is Adjoint Sampling's bit for bit, the corrector's optimum is
  `-x/ν̃_1 = ∇log p^base_1` and the adjoint-matching target at it is Adjoint Sampling's.
- Stages: the first stage is adjoint matching with `h⁰ ≡ 0`; each stage moves only its own network.
- Training (`make test-slow`): from the Dirac source, the analytic cases' bars (`analytic.py`); from the
  Gaussian source of the fixed-point case, the trained corrector is `h*` within 15 % and `log Ẑ` is right.
- Fixed point on an analytic case: a Gaussian source and a Gaussian target with the Brownian reference,
  whose Schrödinger bridge is Gaussian (`gaussian_bridge`: the Gaussian IPF on the potentials' exponents
  in float64, checked against the closed-form entropic-OT coupling): at `(u*, h*)` the gradients of both
  losses w.r.t. an affine perturbation vanish within 3 SE over independent minibatches, and exceed 6 SE
  at a perturbed point. At `u*`, the path weights from the source have `E[w] = Z` and `log Ẑ` is unbiased.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers import estimators, sde
from samplers.base_processes import BrownianBase, LinearSchedule, SourceBrownianBase, VPBase
from samplers.methods import asbs
from samplers.methods import bridge_regression as br
from samplers.methods.common import config_network
from samplers.problem import sampling_problem
from targets.base import Target
from tests.samplers.methods import analytic
from tests.samplers.methods.fixed_point import affine_control, perturbation_gradients, z_scores

NUM_STEPS = 50  # EM steps of the test problems
SOURCE_VAR = 0.5  # μ = N(0, 0.5 I)
TARGET_MEAN = np.array([1.0, -0.5])
TARGET_VAR = np.array([0.8, 2.0])  # per coordinate: the bridge factorises over coordinates
SIGMA = 1.0  # linear schedule: ν̃_t = ν_t = t exactly


def _gaussian_target() -> Target:
    mean, var = jnp.asarray(TARGET_MEAN, jnp.float32), jnp.asarray(TARGET_VAR, jnp.float32)

    def log_prob(x):
        return -0.5 * jnp.sum((x - mean) ** 2 / var) - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var))

    def sample(key, n):
        return mean + jnp.sqrt(var) * jax.random.normal(key, (n, 2))

    return Target(name="diagonal_gaussian", dim=2, log_prob_fn=log_prob, log_Z=0.0, sample_fn=sample)


def _problem(source_var: float | None = SOURCE_VAR, num_steps: int = NUM_STEPS):
    schedule = LinearSchedule(SIGMA)
    base = (
        BrownianBase(2, schedule)
        if source_var is None
        else SourceBrownianBase(2, schedule, source_var=source_var)
    )
    return sampling_problem(_gaussian_target(), base, num_steps=num_steps)


# ---------------------------------------------------------------------------------------------
# the Gaussian Schrödinger bridge
# ---------------------------------------------------------------------------------------------


class GaussianBridge(NamedTuple):
    """The SB between `N(0, a)` and `N(m, b)` per coordinate, Brownian reference `X_1 | X_0 ~ N(X_0, ν)`.

    Potentials `φ̂_0 ∝ exp(-p x²/2 + q x)`, `φ_1 ∝ exp(-P x²/2 + Q x)`, `φ̂_1 = φ̂_0 * N(0, ν)`
    `∝ exp(-P̂ x²/2 + Q̂ x)`; all arrays of shape `(2,)` (float64).
    """

    p: np.ndarray
    q: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    P_hat: np.ndarray
    Q_hat: np.ndarray
    cross_cov: np.ndarray  # Cov(X_0, X_1) of the SB coupling


def _convolve(p, q, var):
    """`exp(-p x²/2 + q x) * N(0, var)` `∝ exp(-p' x²/2 + q' x)`: `(p, q)/(1 + p var)`."""
    return p / (1 + p * var), q / (1 + p * var)


def gaussian_bridge(a: float, mean, var, nu: float, iterations: int = 500) -> GaussianBridge:
    """The Gaussian SB by IPF on the exponents (float64): `φ̂_1 = φ̂_0 * k`, `φ_1 = p*/φ̂_1`,
    `φ_0 = φ_1 * k`, `φ̂_0 = μ/φ_0`, from `φ̂_0 = μ`."""
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    p, q = np.full_like(var, 1.0 / a), np.zeros_like(var)
    for _ in range(iterations):
        P_hat, Q_hat = _convolve(p, q, nu)
        P, Q = 1.0 / var - P_hat, mean / var - Q_hat
        p0, q0 = _convolve(P, Q, nu)
        p, q = 1.0 / a - p0, -q0
    P_hat, Q_hat = _convolve(p, q, nu)
    # the coupling ∝ φ̂_0(x0) k(x1 - x0) φ_1(x1): precision [[p + 1/ν, -1/ν], [-1/ν, P + 1/ν]]
    det = (p + 1 / nu) * (P + 1 / nu) - 1 / nu**2
    return GaussianBridge(p, q, P, Q, P_hat, Q_hat, cross_cov=(1 / nu) / det)


def _bridge_and_controls(problem):
    """The SB of the test problem and its `u*(params, x, t)`, `h*(params, x)` (float32 callables)."""
    bridge = asbs.increment_bridge(problem)
    nu1 = float(bridge.nu1)
    sb = gaussian_bridge(SOURCE_VAR, TARGET_MEAN, TARGET_VAR, nu1)
    P, Q = (jnp.asarray(v, jnp.float32) for v in (sb.P, sb.Q))
    P_hat, Q_hat = (jnp.asarray(v, jnp.float32) for v in (sb.P_hat, sb.Q_hat))

    def optimal_control(params, x, t):
        # u* = σ ∇log φ_t, φ_t = φ_1 * N(0, ν̃_1 - ν̃_t)
        c = bridge.coefficients(t)
        remaining = bridge.nu1 - c.nu
        return c.sigma * (Q - P * x) / (1 + P * remaining)

    def optimal_corrector(params, x):
        return Q_hat - P_hat * x  # h* = ∇log φ̂_1

    return sb, bridge, optimal_control, optimal_corrector


def _coupling_sampler(sb: GaussianBridge):
    """Exact draws of the SB coupling `(X_0, X_1)`: `X_0 ~ N(0, a)`, `X_1 | X_0` Gaussian."""
    cov = jnp.asarray(sb.cross_cov, jnp.float32)
    mean, var = jnp.asarray(TARGET_MEAN, jnp.float32), jnp.asarray(TARGET_VAR, jnp.float32)

    def sample(key, n):
        key_0, key_1 = jax.random.split(key)
        x0 = jnp.sqrt(SOURCE_VAR) * jax.random.normal(key_0, (n, 2))
        x1 = (
            mean
            + cov / SOURCE_VAR * x0
            + jnp.sqrt(var - cov**2 / SOURCE_VAR) * jax.random.normal(key_1, (n, 2))
        )
        return x0, x1

    return sample


def test_gaussian_bridge_matches_the_entropic_ot_closed_form():
    """IPF's coupling has the closed-form cross-covariance `c = (sqrt(ν² + 4ab) - ν)/2` (the precision's
    off-diagonal is `-1/ν`), the marginals `μ` and `p*`, and `h* = E[-(X_1 - X_0)/ν | X_1]`."""
    nu = 1.0
    sb = gaussian_bridge(SOURCE_VAR, TARGET_MEAN, TARGET_VAR, nu)
    np.testing.assert_allclose(
        sb.cross_cov, (np.sqrt(nu**2 + 4 * SOURCE_VAR * TARGET_VAR) - nu) / 2, rtol=1e-10
    )
    # marginal of X_1 under the coupling: φ_1 φ̂_1 = p*
    np.testing.assert_allclose(sb.P + sb.P_hat, 1 / TARGET_VAR, rtol=1e-10)
    np.testing.assert_allclose(sb.Q + sb.Q_hat, TARGET_MEAN / TARGET_VAR, rtol=1e-10)
    # h*(x) = -(x - E[X_0 | X_1 = x])/ν, E[X_0 | X_1 = x] = c (x - m)/b
    x = np.array([0.7, -1.3])
    expected = -(x - sb.cross_cov * (x - TARGET_MEAN) / TARGET_VAR) / nu
    np.testing.assert_allclose(sb.Q_hat - sb.P_hat * x, expected, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# registry, config, Dirac source
# ---------------------------------------------------------------------------------------------


def test_registered_with_the_reference_schedule_and_the_adjoint_sampling_recipe():
    spec = samplers.get("asbs")
    assert spec.bases == ("brownian", "brownian_source") and spec.family == "soc-regression"
    config = spec.make_config()
    assert (config.adjoint_epochs, config.corrector_epochs) == (200, 20)  # dw4_asbs.yaml
    assert config.loss_weighting == "score" and config.max_grad_norm_target == 100.0
    with pytest.raises(ValueError, match="importance_weights must be 'none'"):
        spec.make_config(importance_weights="resample")
    vp = sampling_problem(targets.get("gaussian_correlated"), VPBase(2), num_steps=4)
    assert "brownian_source" in spec.applicable(vp)
    with pytest.raises(ValueError, match="valid base kinds"):
        asbs.increment_bridge(vp)


def test_dirac_source_reduces_to_adjoint_sampling():
    """With `X_0 = 0`: the bridge is AS's (bit for bit), the corrector's optimum is `-x/ν̃_1` (the loss
    vanishes there exactly), and the adjoint-matching data `∇log γ - h*` is AS's `∇r`, so its loss is
    AS's loss."""
    problem = _problem(source_var=None)
    bridge = asbs.increment_bridge(problem)
    for a, b in zip(bridge, br.bridge_schedule(problem), strict=True):
        np.testing.assert_array_equal(a, b)
    x1 = problem.target.sample(jax.random.key(0), 64)
    x0 = jnp.zeros_like(x1)
    nu1 = bridge.nu1
    dirac_optimum = lambda params, x: -x / nu1
    assert float(asbs.corrector_loss(dirac_optimum, None, x0, x1, terminal_var=nu1)) == 0.0
    score = jax.vmap(bridge.gradient_data(problem, "score", 100.0))(x1)
    tilt = jax.vmap(br.endpoint_gradients(problem, "adjoint", 100.0))(x1)
    np.testing.assert_allclose(
        score - jax.vmap(dirac_optimum, in_axes=(None, 0))(None, x1), tilt, rtol=1e-5, atol=1e-5
    )
    control = lambda params, x, t: params * x
    common = dict(kind="adjoint", bridge=bridge, weighting="score")
    key = jax.random.key(1)
    as_loss = br.regression_loss(control, 0.3, key, x1, tilt, **common)
    asbs_loss = br.regression_loss(control, 0.3, key, x1, tilt, x_0=x0, **common)
    np.testing.assert_allclose(asbs_loss, as_loss, rtol=1e-6)


def test_stages_alternate_and_train_one_network_each():
    """Epochs of `refresh_every` steps: adjoint, adjoint, corrector, adjoint, … (2 + 1); the corrector
    starts at `h⁰ ≡ 0`; an adjoint step leaves the corrector (and its optimiser state) untouched and a
    corrector step the control."""
    problem = _problem(num_steps=4)
    spec = samplers.get("asbs")
    config = spec.make_config(
        batch_size=8,
        buffer_size=32,
        resample_size=16,
        refresh_every=2,
        adjoint_epochs=2,
        corrector_epochs=1,
        **{"network.hidden": (8,), "network.time_embedding_dim": 4, "sde.integrator": "scan"},
    )
    stages = [bool(asbs.stage_is_adjoint(jnp.int32(s), config)) for s in range(8)]
    assert stages == [True] * 4 + [False] * 2 + [True] * 2
    method = spec.build(problem, config)
    state = method.init(jax.random.key(0))
    x = problem.target.sample(jax.random.key(1), 5)
    net = config_network(problem, config)
    h0 = jax.vmap(net.apply, in_axes=(None, 0, None))(state.params["corrector"], x, 1.0)
    np.testing.assert_array_equal(h0, 0.0)
    step = jax.jit(method.step)
    for s in range(8):
        new_state, info = step(jax.random.key(10 + s), state)
        moved = {
            name: any(
                bool(jnp.any(a != b))
                for a, b in zip(
                    jax.tree.leaves(new_state.params[name]), jax.tree.leaves(state.params[name]), strict=True
                )
            )
            for name in ("control", "corrector")
        }
        assert float(info.adjoint_stage) == float(stages[s])
        assert moved == {"control": stages[s], "corrector": not stages[s]}, (s, moved)
        frozen = "corrector" if stages[s] else "control"
        jax.tree.map(np.testing.assert_array_equal, new_state.opt_state[frozen], state.opt_state[frozen])
        state = new_state


# ---------------------------------------------------------------------------------------------
# the fixed point on the Gaussian Schrödinger bridge
# ---------------------------------------------------------------------------------------------


def fixed_point_z_scores(loss: str, num_batches: int = 200, batch_size: int = 256):
    """Mean / SE of the gradient of `L_AM` (`loss="adjoint"`) or `L_CM` (`"corrector"`) w.r.t. an affine
    perturbation of `u*` (resp. `h*`), over `num_batches` minibatches of exact SB pairs, at the optimum and
    at a perturbed point (`fixed_point.PERTURBATIONS`); also used by scripts/analytic_checks.py."""
    problem = _problem()
    sb, bridge, optimal_control, optimal_corrector = _bridge_and_controls(problem)
    sample_pairs = _coupling_sampler(sb)
    score = jax.vmap(bridge.gradient_data(problem, "score", 100.0))

    if loss == "adjoint":
        control = affine_control(optimal_control)

        def gradient(theta, key):
            key_x, key_loss = jax.random.split(key)
            x0, x1 = sample_pairs(key_x, batch_size)
            grad_1 = score(x1) - jax.vmap(optimal_corrector, in_axes=(None, 0))(None, x1)
            return jax.grad(br.regression_loss, argnums=1)(
                control, theta, key_loss, x1, grad_1, kind="adjoint", bridge=bridge, weighting="score", x_0=x0
            )

    else:
        corrector = affine_control(lambda params, x, t: optimal_corrector(params, x))

        def gradient(theta, key):
            x0, x1 = sample_pairs(key, batch_size)
            h = lambda params, x: corrector(params, x, 1.0)
            return jax.grad(asbs.corrector_loss, argnums=1)(h, theta, x0, x1, terminal_var=bridge.nu1)

    grads, _ = perturbation_gradients(gradient, num_batches)
    return z_scores(grads[0]), z_scores(grads[1])


@pytest.mark.parametrize("loss", ["adjoint", "corrector"])
def test_fixed_point_on_the_gaussian_schrodinger_bridge(loss):
    z_opt, z_perturbed = fixed_point_z_scores(loss)
    assert np.all(np.abs(z_opt) < 3.0), f"{loss}: gradient at the optimum is not zero: z = {z_opt}"
    assert np.max(np.abs(z_perturbed)) > 6.0, f"{loss}: perturbed gradient not detected: z = {z_perturbed}"


@pytest.mark.slow  # E[w] = Z within standard errors over 20,000 paths
def test_path_weights_from_the_source_are_unbiased_at_the_optimum():
    """At `u*`, simulated from `μ`: `E[w] = Z = 1` within 3 SE and `log Ẑ` within 3 of its delta-method
    SE of 0. The weights are NOT constant at the optimum (reverse ESS 0.68 here, 20 000 paths): on a base
    that is not memoryless, `w = Z φ_0(x_0) φ̂_1(x_K)/p^base_K(x_K)` (up to constants and the EM grid's
    error): the base's reversal from `x_K` is not the bridge's (methods.md §3.6)."""
    problem = _problem()
    _, _, optimal_control, _ = _bridge_and_controls(problem)
    out = jax.jit(lambda key: sde.simulate(key, problem, optimal_control, None, 20000))(jax.random.key(3))
    w = np.exp(np.asarray(out.log_w, np.float64))
    se = w.std(ddof=1) / np.sqrt(w.size)
    assert abs(w.mean() - 1.0) < 3 * se, (w.mean(), se)
    log_Z = estimators.log_Z(out.log_w)
    assert abs(float(log_Z.value)) < 3 * se / w.mean() + 1e-4, float(log_Z.value)
    assert 0.5 < float(estimators.reverse_ess(out.log_w).value) < 0.9


@pytest.mark.slow  # a statistical training bar: scripts/analytic_checks.py tabulates it
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
def test_training_reaches_log_Z_and_ess(target_name):
    """|log Ẑ - log Z| < 0.05 and reverse ESS > 0.8 (4000 samples), seed 0, from the Dirac source."""
    analytic.check_fast("asbs", target_name)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["gaussian", "bimodal"])
def test_training_reaches_log_Z_and_ess_more_seeds(target_name):
    analytic.check_slow("asbs", target_name)


@pytest.mark.slow  # a statistical training bar
@pytest.mark.parametrize("seed", [0, 1])
def test_training_from_a_gaussian_source_reaches_the_schrodinger_bridge(seed):
    """From `μ = N(0, 0.5 I)` to the diagonal Gaussian (32 EM steps; the analytic cases' buffer settings,
    stages of 10 + 5 epochs, 1400 steps): |log Ẑ - log Z| < 0.05, reverse ESS > 0.6 (the weights are not
    constant at the bridge: 0.68 at `(u*, h*)` with 50 steps), and the corrector within 15 % (RMS,
    relative) of `h* = ∇log φ̂_1` on target samples. Measured, seeds 0 / 1: log Ẑ error -0.001 / +0.002,
    ESS 0.72 / 0.70, corrector error 8 % / 6 %, sample means (0.95, -0.48) / (1.00, -0.50) for (1, -0.5)."""
    problem = _problem(num_steps=32)
    _, _, _, optimal_corrector = _bridge_and_controls(problem)
    spec = samplers.get("asbs")
    steps = 1400
    config = spec.make_config(
        **{**analytic._BRIDGE, **analytic._decayed(steps)}, adjoint_epochs=10, corrector_epochs=5
    )
    method = spec.build(problem, config)

    @jax.jit
    def run(key):
        key_init, key_steps, key_sample = jax.random.split(key, 3)
        step = lambda i, state: method.step(jax.random.fold_in(key_steps, i), state)[0]
        state = jax.lax.fori_loop(0, steps, step, method.init(key_init))
        return state, method.sample(key_sample, state, 4000).log_w

    state, log_w = run(jax.random.key(seed))
    assert abs(float(estimators.log_Z(log_w).value)) < analytic.LOG_Z_TOLERANCE
    assert float(estimators.reverse_ess(log_w).value) > 0.6
    y = problem.target.sample(jax.random.key(9), 2000)
    net = config_network(problem, config)
    h = jax.vmap(net.apply, in_axes=(None, 0, None))(state.params["corrector"], y, 1.0)
    h_star = jax.vmap(optimal_corrector, in_axes=(None, 0))(None, y)
    assert float(jnp.sqrt(jnp.mean((h - h_star) ** 2) / jnp.mean(h_star**2))) < 0.15
