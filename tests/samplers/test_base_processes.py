"""Base processes: variance integrals, discrete chains, bridges, stationarity, particles, flow base."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from samplers.base_processes import (
    BASE_PROCESSES,
    SCHEDULES,
    BrownianBase,
    GeometricSchedule,
    LinearSchedule,
    MemorylessFlowBase,
    SourceBrownianBase,
    VPBase,
)
from samplers.problem import time_grid
from targets.base import ParticleSpec
from targets.registry import UnknownNameError

BASES = {
    "brownian_linear": BrownianBase(1, LinearSchedule(1.5)),
    "brownian_geometric": BrownianBase(1, GeometricSchedule(0.01, 2.0)),
    "brownian_source": SourceBrownianBase(1, GeometricSchedule(0.01, 2.0), source_var=0.6),
    "vp": VPBase(1, sigma0=1.3, beta_min=0.1, beta_max=8.0),
    "flow": MemorylessFlowBase(1, velocity=lambda x, t: -x, t0=0.02),
}


@pytest.mark.parametrize("name", sorted(BASES))
def test_nu_matches_quadrature_of_sigma_squared(name, x64):
    base = BASES[name]
    sigma2 = lambda s: float(base.sigma(np.float64(s))) ** 2  # float64 under the x64 fixture
    for t in (0.1, 0.37, 0.8, 1.0):
        quad, _ = integrate.quad(sigma2, base.t_start, t, limit=200, epsrel=1e-10)
        assert float(base.nu(np.float64(t))) == pytest.approx(quad, rel=1e-8)


def test_geometric_schedule_closed_form_nu1():
    # ν_1 = σ_max² - σ_min² (methods.md §3.1: the printed formula is right)
    schedule = GeometricSchedule(0.05, 3.0)
    assert float(schedule.nu(1.0)) == pytest.approx(3.0**2 - 0.05**2, rel=1e-6)
    assert float(schedule.sigma(0.0)) == pytest.approx(3.0 * np.sqrt(2 * np.log(60.0)), rel=1e-6)


def _simulate_base_chain(base, ts, num_samples, key):
    """Independent EM simulation of the uncontrolled base (numpy float64 noise)."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**30)))
    x = np.asarray(base.sample_initial(key, num_samples), np.float64)
    xs = [x]
    for k in range(len(ts) - 1):
        t, h = ts[k], ts[k + 1] - ts[k]
        drift = np.asarray(
            jax.vmap(base.drift, in_axes=(0, None))(jnp.asarray(x, jnp.float32), t), np.float64
        )
        noise = np.asarray(base.project(jnp.asarray(rng.normal(size=x.shape))), np.float64)
        x = x + h * drift + float(base.sigma(t)) * np.sqrt(h) * noise
        xs.append(x)
    return np.stack(xs)


@pytest.mark.parametrize("name", ["brownian_geometric", "brownian_source", "vp"])
def test_discrete_terminal_law_matches_simulation(name):
    base = BASES[name]
    ts = time_grid(5, "uniform")  # few steps: the discrete and continuous laws differ visibly
    xs = _simulate_base_chain(base, ts, 40000, jax.random.key(1))
    s = np.asarray(base.discretise(ts).marginal_vars, np.float64)
    for k in (1, 3, 5):
        var_hat = np.mean(xs[k, :, 0] ** 2)
        se = s[k] * np.sqrt(2.0 / xs.shape[1])
        assert abs(var_hat - s[k]) < 5 * se
    if name == "brownian_geometric":
        # the continuous ν_1 is not the law of the 5-step chain: the test can tell them apart
        assert abs(np.mean(xs[-1, :, 0] ** 2) - float(base.nu(1.0))) > 10 * s[-1] * np.sqrt(2.0 / xs.shape[1])


def test_traced_and_concrete_discretisation_agree():
    base = VPBase(1, sigma0=1.3)
    ts = time_grid(7, "quadratic")
    concrete = base.discretise(ts)
    traced = jax.jit(base.discretise)(jnp.asarray(ts, jnp.float32))
    for a, b in zip(concrete, traced, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "base",
    [VPBase(2, sigma0=0.7), SourceBrownianBase(2, LinearSchedule(1.2), source_var=0.7)],
    ids=["vp", "source"],
)
def test_discrete_backward_kernel_is_exact_reversal(base):
    # p_0 Π F = p_K Π B for every path: compare the two path densities on simulated paths
    ts = time_grid(6, "quadratic")
    chain = base.discretise(ts)
    xs = jnp.asarray(_simulate_base_chain(base, ts, 50, jax.random.key(2)), jnp.float32)
    norm = lambda x, m, v: -0.5 * jnp.sum((x - m) ** 2, -1) / v - jnp.log(2 * jnp.pi * v)
    forward = norm(xs[0], 0.0, chain.marginal_vars[0])
    backward = norm(xs[-1], 0.0, chain.marginal_vars[-1])
    for k in range(6):
        forward += norm(xs[k + 1], chain.decays[k] * xs[k], chain.noise_vars[k])
        backward += norm(xs[k], chain.backward_coefs[k] * xs[k + 1], chain.backward_vars[k])
    np.testing.assert_allclose(forward, backward, atol=2e-4)


def test_brownian_bridge_moments():
    base = BrownianBase(1, GeometricSchedule(0.02, 2.0))
    key_a, key_b, key_c = jax.random.split(jax.random.key(3), 3)
    n, x0 = 100000, 0.4
    for t in (0.2, 0.6):
        # exact independent increments: X_t = x0 + sqrt(ν_t) z_1, X_1 = X_t + sqrt(ν_1 - ν_t) z_2
        nu_t, nu_1 = float(base.nu(t)), float(base.nu(1.0))
        xt = x0 + np.sqrt(nu_t) * np.asarray(jax.random.normal(key_a, (n,)), np.float64)
        x1 = xt + np.sqrt(nu_1 - nu_t) * np.asarray(jax.random.normal(key_b, (n,)), np.float64)
        mean, var = base.bridge(t, jnp.float32(x0), jnp.asarray(x1, jnp.float32))
        resid = xt - np.asarray(mean, np.float64)
        var = float(var)
        assert abs(resid.mean()) < 5 * np.sqrt(var / n)
        assert abs(np.mean(resid * x1)) < 5 * np.sqrt(var * np.mean(x1**2) / n)  # E[X_t | X_1] is right
        assert abs(np.mean(resid**2) - var) < 5 * var * np.sqrt(2.0 / n)
        key_a, key_b = jax.random.split(key_c)


def test_vp_bridge_moments_and_conditional_mean_coefficient():
    base = VPBase(1, sigma0=1.3)
    key_a, key_b, key_c = jax.random.split(jax.random.key(4), 3)
    n, t = 100000, 0.35
    s0 = base.sigma0
    phi = lambda s, u: float(jnp.exp(-0.5 * (base.beta_integral(u) - base.beta_integral(s))))
    normal = lambda key: np.asarray(jax.random.normal(key, (n,)), np.float64)
    x0 = s0 * normal(key_a)
    xt = phi(0, t) * x0 + s0 * np.sqrt(1 - phi(0, t) ** 2) * normal(key_b)
    x1 = phi(t, 1) * xt + s0 * np.sqrt(1 - phi(t, 1) ** 2) * normal(key_c)
    mean, var = base.bridge(t, jnp.asarray(x0, jnp.float32), jnp.asarray(x1, jnp.float32))
    resid, var = xt - np.asarray(mean, np.float64), float(var)
    for covariate in (x0, x1):
        assert abs(np.mean(resid * covariate)) < 5 * np.sqrt(var * np.mean(covariate**2) / n)
    assert abs(np.mean(resid**2) - var) < 5 * var * np.sqrt(2.0 / n)
    # a_t: regression coefficient of X_1 on X_t
    assert float(base.conditional_mean_coefficient(t)) == pytest.approx(
        np.mean(x1 * xt) / np.mean(xt**2), abs=0.01
    )


def test_vp_stationarity():
    base = VPBase(1, sigma0=1.3, beta_min=0.1, beta_max=8.0)
    # continuous time: σ² = -2ℓ σ_0², the OU variance ODE s' = 2ℓ s + σ² has s ≡ σ_0² as solution
    t = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(
        base.sigma(t) ** 2, -2 * base.linear_drift_coefficient(t) * base.sigma0**2, rtol=1e-6
    )
    # the EM chain is stationary up to O(h): the deviation halves when h halves
    deviation = [
        float(jnp.max(jnp.abs(base.discretise(time_grid(k, "uniform")).marginal_vars - base.sigma0**2)))
        for k in (100, 200)
    ]
    assert 0 < deviation[1] < deviation[0] < 0.05
    assert 1.7 < deviation[0] / deviation[1] < 2.3


def test_particles_project_noise_and_count_dof():
    spec = ParticleSpec(n_particles=3, spatial_dim=2)
    base = VPBase(6, sigma0=1.0, particles=spec)
    assert base.dof == 4
    x = base.sample_initial(jax.random.key(5), 20000)
    centre = x.reshape(-1, 3, 2).mean(1)
    np.testing.assert_allclose(centre, 0.0, atol=1e-5)
    # E|x|² = dof·σ_0² on the zero centre-of-mass subspace
    sq = np.sum(np.asarray(x, np.float64) ** 2, -1)
    assert abs(sq.mean() - 4.0) < 5 * sq.std() / np.sqrt(sq.size)
    with pytest.raises(ValueError, match="particles"):
        BrownianBase(5, particles=spec)


# -- the memoryless flow base with Gaussian data N(μ, c²) (closed-form velocity) --------------
MU, C2, T0 = 1.5, 0.25**2, 0.02


def _gaussian_velocity(x, t):
    # X̄_t = (1-t)Z + tX, v = E[X - Z | X̄_t = x] = μ + (t c² - (1-t))/((1-t)² + t² c²) (x - t μ)
    return MU + (t * C2 - (1 - t)) / ((1 - t) ** 2 + t**2 * C2) * (x - t * MU)


@pytest.fixture(scope="module")
def flow_paths():
    var0 = (1 - T0) ** 2 + T0**2 * C2  # exact flow marginal at t_0
    base = MemorylessFlowBase(
        1,
        velocity=_gaussian_velocity,
        t0=T0,
        initial_sample_fn=lambda key, n: T0 * MU + np.sqrt(var0) * jax.random.normal(key, (n, 1)),
    )
    ts = time_grid(400, "quadratic", start=T0)
    tsj = jnp.asarray(ts, jnp.float32)
    n = 40000

    def run(key):
        key_init, key_noise = jax.random.split(key)
        x0 = base.sample_initial(key_init, n)

        def step(x, k):
            t, h = tsj[k], tsj[k + 1] - tsj[k]
            eps = jax.random.normal(jax.random.fold_in(key_noise, k), x.shape)
            x = x + h * jax.vmap(base.drift, in_axes=(0, None))(x, t) + base.sigma(t) * jnp.sqrt(h) * eps
            return x, x

        _, xs = jax.lax.scan(step, x0, jnp.arange(len(ts) - 1))
        return jnp.concatenate([x0[None], xs])[:, :, 0]

    return base, ts, np.asarray(jax.jit(run)(jax.random.key(6)), np.float64)


def test_flow_base_scores():
    """`score` is `(t v - x)/(1 - t)` = the exact Gaussian flow score; `terminal_score` is the data law's,
    from its density or, without it, from the velocity at t = 1 (`-(x + ∂_t v(x, 1))`), else it raises."""
    x = jnp.linspace(-3.0, 3.0, 7)[:, None]
    exact = lambda x, t: -(x - t * MU) / ((1 - t) ** 2 + t**2 * C2)
    base = MemorylessFlowBase(1, velocity=_gaussian_velocity, t0=T0, terminal_score_from_velocity=True)
    for t in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(jax.vmap(base.score, (0, None))(x, t), exact(x, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(base.terminal_score)(x), exact(x, 1.0), rtol=1e-5, atol=1e-5)
    data_log_prob = lambda x: -0.5 * jnp.sum((x - MU) ** 2) / C2
    with_density = MemorylessFlowBase(
        1, velocity=_gaussian_velocity, t0=T0, terminal_log_prob_fn=data_log_prob
    )
    np.testing.assert_allclose(jax.vmap(with_density.terminal_score)(x), exact(x, 1.0), rtol=1e-6, atol=1e-6)
    assert base.has_terminal_score and with_density.has_terminal_score
    without = MemorylessFlowBase(1, velocity=_gaussian_velocity, t0=T0)
    assert not without.has_terminal_score
    with pytest.raises(NotImplementedError, match="terminal law"):
        without.terminal_score(x[0])


def test_flow_base_reaches_the_data_law(flow_paths):
    _, _, xs = flow_paths
    x1 = xs[-1]
    n = x1.size
    assert abs(x1.mean() - MU) < 5 * np.sqrt(C2 / n) + 0.01  # + O(h) EM bias allowance
    assert abs(x1.var() - C2) < 5 * C2 * np.sqrt(2 / n) + 0.01 * C2


def test_flow_bridge_matches_simulation(flow_paths):
    base, ts, xs = flow_paths
    x0, x1 = xs[0], xs[-1]
    for k in (100, 250):
        t, xt = ts[k], xs[k]
        mean, var = base.bridge(jnp.float32(t), jnp.asarray(x0, jnp.float32), jnp.asarray(x1, jnp.float32))
        resid, var = xt - np.asarray(mean, np.float64), float(var)
        n = resid.size
        for covariate in (x0 - x0.mean(), x1 - x1.mean()):
            assert abs(np.mean(resid * covariate)) < 5 * np.sqrt(var * np.mean(covariate**2) / n) + 0.01 * var
        assert abs(np.mean(resid**2) - var) < 5 * var * np.sqrt(2 / n) + 0.02 * var


def test_registries_and_errors():
    assert set(BASE_PROCESSES.names()) == {"brownian", "brownian_source", "flow", "vp"}
    with pytest.raises(ValueError, match="source_var"):
        SourceBrownianBase(2, source_var=0.0)
    assert isinstance(SCHEDULES.get("geometric", sigma_min=0.1, sigma_max=1.0), GeometricSchedule)
    with pytest.raises(UnknownNameError, match="linear"):
        SCHEDULES.get("cosine")
    with pytest.raises(ValueError, match="sigma_min"):
        GeometricSchedule(1.0, 0.5)
    with pytest.raises(TypeError, match="schedule"):
        BrownianBase(2, schedule="linear")
    with pytest.raises(ValueError, match="t0"):
        MemorylessFlowBase(1, velocity=lambda x, t: x, t0=0.0)
    with pytest.raises(NotImplementedError, match="discrete chain"):
        BASES["flow"].discretise(time_grid(4, start=0.02))
    with pytest.raises(NotImplementedError, match="no density"):
        BASES["brownian_linear"].initial_log_prob(jnp.zeros(1))


def test_source_base_laws():
    """`X_0 ~ N(0, v I)`, `X_1 ~ N(0, (v + ν_1) I)`; the bridge and the noise schedule are the Dirac
    base's; not memoryless; the Dirac base is unchanged (its chain starts at variance 0)."""
    schedule = GeometricSchedule(0.01, 2.0)
    source, dirac = SourceBrownianBase(2, schedule, source_var=0.6), BrownianBase(2, schedule)
    x = jnp.array([0.3, -1.1])
    assert not source.memoryless and dirac.memoryless and source.kind == "brownian_source"
    nu1 = float(schedule.nu(1.0))
    norm = lambda v: float(-0.5 * jnp.sum(x**2) / v - jnp.log(2 * jnp.pi * v))
    assert float(source.initial_log_prob(x)) == pytest.approx(norm(0.6), rel=1e-6)
    assert float(source.terminal_log_prob(x)) == pytest.approx(norm(0.6 + nu1), rel=1e-6)
    for a, b in zip(source.bridge(0.3, x, -x), dirac.bridge(0.3, x, -x), strict=True):
        np.testing.assert_array_equal(a, b)
    ts = time_grid(5)
    np.testing.assert_allclose(
        source.discretise(ts).marginal_vars - 0.6, dirac.discretise(ts).marginal_vars, rtol=1e-6
    )
    assert float(dirac.discretise(ts).marginal_vars[0]) == 0.0
