"""OT metrics: exact 1-D W2 against a linear program, Gaussian closed forms, Sinkhorn via ott-jax.

Every Sinkhorn call uses n = m = N so that ott-jax compiles once for the whole module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, optimize

import targets
from benchmarks import metrics
from benchmarks.metrics import ot

N = 512


def lp_w2_squared(x, y):
    """Reference: the transport linear program between two 1-D empirical measures."""
    n, m = len(x), len(y)
    cost = (x[:, None] - y[None, :]) ** 2
    a_eq = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    b_eq = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
    return optimize.linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs").fun


@pytest.mark.parametrize("n, m", [(7, 5), (6, 6), (1, 4), (9, 12)])
def test_w2_1d_matches_the_linear_program(n, m):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.normal(size=n), rng.normal(size=m) * 2 + 0.3
    assert ot.w2_squared_1d(x, y) == pytest.approx(lp_w2_squared(x, y), rel=1e-7, abs=1e-10)


def test_w2_1d_between_gaussian_samples_matches_closed_form():
    # W2²(N(0,1), N(1,2²)) = 1 + (2 − 1)² = 2. Tolerance: 4 SE over repeats plus the positive
    # finite-sample bias, bounded by the noise floor (W2² between two samples of the same law).
    rng = np.random.default_rng(0)
    values, floors = [], []
    for _ in range(10):
        x, y, y2 = rng.normal(size=2000), rng.normal(1, 2, size=2000), rng.normal(1, 2, size=2000)
        values.append(ot.w2_squared_1d(x, y))
        floors.append(ot.w2_squared_1d(y2, y))
    exact = ot.gaussian_w2_squared([0.0], [[1.0]], [1.0], [[4.0]])
    assert exact == pytest.approx(2.0)
    assert abs(np.mean(values) - exact) < 4 * np.std(values, ddof=1) / np.sqrt(10) + np.mean(floors)


def test_w2_1d_non_finite():
    assert np.isnan(ot.w2_squared_1d([0.0, np.nan], [1.0, 2.0]))
    assert ot.w2_squared_1d([0.0, np.inf], [1.0, 2.0]) == np.inf


def test_gaussian_w2_closed_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    d1, d2 = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    commuting = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert ot.gaussian_w2_squared(m1, np.diag(d1), m2, np.diag(d2)) == pytest.approx(commuting, rel=1e-10)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    r2 = linalg.sqrtm(s2)
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(r2 @ s1 @ r2)))
    assert ot.gaussian_w2_squared(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    assert ot.gaussian_w2_squared(m2, s2, m1, s1) == pytest.approx(expected, rel=1e-8)
    assert ot.gaussian_w2_squared(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-10)


def test_gaussian_sinkhorn_closed_form_limits():
    a, big_a = np.array([0.0, 0.0]), np.diag([1.0, 2.0])
    b, big_b = np.array([0.5, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    w2 = ot.gaussian_w2_squared(a, big_a, b, big_b)
    assert ot.gaussian_sinkhorn_divergence(a, big_a, b, big_b, 1e-7) == pytest.approx(w2, rel=1e-5)
    values = [ot.gaussian_sinkhorn_divergence(a, big_a, b, big_b, eps) for eps in (0.01, 0.1, 1.0, 10.0)]
    assert all(v > 0 for v in values) and np.all(np.diff(values) < 0)  # blurring shrinks the divergence
    assert ot.gaussian_sinkhorn_divergence(a, big_a, b, big_a, 3.0) == pytest.approx(np.sum((a - b) ** 2))


def test_sinkhorn_of_a_translated_copy_is_the_squared_shift():
    # S_ε(μ, τ_δ μ) = ‖δ‖² exactly for the entropic problem with the KL(π | μ⊗ν) regulariser.
    x = np.random.default_rng(2).normal(size=(N, 2))
    delta = np.array([0.7, -0.4])
    res = ot.sinkhorn_divergence(x, x + delta, epsilon=0.05 * ot.reference_cost_scale(x))
    assert res.converged
    assert res.divergence == pytest.approx(np.sum(delta**2), rel=5e-3)


def test_sinkhorn_between_gaussian_samples_matches_closed_form():
    # Tolerance: 4 SE over repeats plus the finite-sample bias, bounded by the mean noise floors of
    # both laws (Sinkhorn divergence between two independent samples of the same law). ε is large
    # enough that S_ε differs from W2² by more than the tolerance, so the ε-dependence is tested.
    rng = np.random.default_rng(3)
    a, big_a = np.zeros(2), np.eye(2)
    b, big_b = np.array([0.5, 0.5]), np.diag([2.0, 0.25])
    sample = lambda mean, cov: rng.multivariate_normal(mean, cov, size=N)
    eps = 4.0
    values, floors = [], []
    for _ in range(8):
        y = sample(b, big_b)
        values.append(ot.sinkhorn_divergence(sample(a, big_a), y, epsilon=eps).divergence)
        floors.append(ot.sinkhorn_divergence(sample(b, big_b), y, epsilon=eps).divergence)
        floors.append(ot.sinkhorn_divergence(sample(a, big_a), sample(a, big_a), epsilon=eps).divergence)
    exact = ot.gaussian_sinkhorn_divergence(a, big_a, b, big_b, eps)
    tolerance = 4 * np.std(values, ddof=1) / np.sqrt(len(values)) + np.mean(floors)
    assert abs(np.mean(values) - exact) < tolerance
    assert abs(np.mean(values) - ot.gaussian_w2_squared(a, big_a, b, big_b)) > tolerance


def test_sinkhorn_and_w2_metrics_through_evaluate():
    target2 = targets.Target(name="metrics_test_ot2", dim=2, log_prob_fn=lambda x: -0.5 * jnp.sum(x**2))
    keys = jax.random.split(jax.random.key(0), 3)
    x, ref, ref2 = (jax.random.normal(k, (N, 2)) for k in keys)
    values, skipped = metrics.evaluate(
        metrics.EvalContext(jax.random.key(1), target2, x + 2.0, reference=ref, reference2=ref2),
        names=["sinkhorn", "w2_exact_1d"],
    )
    assert "not one-dimensional" in skipped["w2_exact_1d"]
    assert values["sinkhorn/epsilon"] == pytest.approx(0.05 * ot.reference_cost_scale(ref), rel=1e-6)
    assert values["sinkhorn/converged"] == 1.0
    assert values["sinkhorn/divergence"] > 5.0 > 0.2 > values["sinkhorn/divergence/noise_floor"]

    target1 = targets.Target(name="metrics_test_ot1", dim=1, log_prob_fn=lambda x: -0.5 * jnp.sum(x**2))
    values, skipped = metrics.evaluate(
        metrics.EvalContext(
            jax.random.key(1), target1, x[:, :1] + 1.0, reference=ref[:, :1], reference2=ref2[:, :1]
        ),
        names=["w2_exact_1d"],
    )
    assert skipped == {}
    assert values["w2_exact_1d/w2"] ** 2 == pytest.approx(values["w2_exact_1d/w2_squared"])
    assert values["w2_exact_1d/w2_squared"] == pytest.approx(ot.w2_squared_1d(x[:, 0] + 1.0, ref[:, 0]))
    assert values["w2_exact_1d/w2/noise_floor"] < 0.2 < values["w2_exact_1d/w2"]
