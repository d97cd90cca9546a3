"""Unnormalised Gaussian targets: closed-form log Z, helpers, exact samples, input validation."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import target_checks as tc
from hypothesis import given, settings
from hypothesis import strategies as st

import targets
from targets.gaussian import Gaussian, correlated_gaussian, givens_rotation

pytestmark = pytest.mark.usefixtures("strict_promotion")

CORRELATED_BOX = ((-9.0, 11.0), (-9.0, 11.0))


@functools.cache
def _correlated6():
    return targets.get("gaussian_correlated", dim=6, mean=np.linspace(-2.0, 3.0, 6), max_std=3.0)


def test_default_log_Z_is_log_two_pi_and_not_zero():
    target = tc.cached_target("gaussian")
    assert target.dim == 2
    assert target.log_Z == pytest.approx(math.log(2 * math.pi), rel=1e-15)
    assert float(target.log_prob(np.zeros(2, np.float32))) == 0.0  # the normaliser is omitted
    assert float(target.log_prob(np.ones(2, np.float32))) == -1.0


@pytest.mark.parametrize(
    "name, kwargs",
    [("gaussian", {"mean": [1.0, -2.0], "scale": 1.5}), ("gaussian_correlated", {})],
)
def test_two_dimensional_gaussians_integrate_to_exp_log_Z(name, kwargs):
    target = targets.get(name, **kwargs)
    bounds = ((-15.0, 17.0), (-15.0, 17.0))
    mass = tc.grid_cell_probabilities(target.log_prob, target.log_Z, bounds, bins=40).sum()
    assert mass == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("gaussian", {"dim": 5, "mean": 0.3, "scale": 0.7}),
        ("gaussian_correlated", {"dim": 6, "mean": np.linspace(-2.0, 3.0, 6), "max_std": 3.0}),
    ],
)
def test_log_prob_differs_from_scipy_logpdf_by_exactly_log_Z(x64, name, kwargs):
    target = targets.get(name, **kwargs)
    mean, covariance = target.ground_truth["mean"], target.ground_truth["covariance"]
    points = np.random.default_rng(0).normal(scale=2.0, size=(9, target.dim)) + mean
    values = np.asarray(jax.vmap(target.log_prob)(jnp.asarray(points)))
    reference = scipy.stats.multivariate_normal(mean, covariance).logpdf(points)
    np.testing.assert_allclose(values - reference, target.log_Z, rtol=1e-10)


def test_correlated_ground_truth_helpers_are_consistent():
    target = _correlated6()
    truth = target.ground_truth
    np.testing.assert_allclose(truth["covariance"] @ truth["precision"], np.eye(6), atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(truth["covariance"]), np.geomspace(0.5, 3.0, 6) ** 2, rtol=1e-10
    )
    assert np.max(np.abs(truth["covariance"] - np.diag(np.diag(truth["covariance"])))) > 0.1  # correlated
    assert target.log_Z == pytest.approx(
        3 * math.log(2 * math.pi) + np.log(np.geomspace(0.5, 3.0, 6)).sum(), rel=1e-12
    )
    rotation = givens_rotation(6, 0.4)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(6), atol=1e-14)
    np.testing.assert_allclose(
        givens_rotation(2, 0.4), [[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]], rtol=1e-14
    )
    mean, covariance = correlated_gaussian(dim=1)
    np.testing.assert_allclose(covariance, [[4.0]])


def test_gaussian_class_matches_scipy_and_exposes_arrays(x64):
    mean, covariance = correlated_gaussian(dim=3, mean=[0.5, -1.0, 2.0])
    gaussian = Gaussian.from_covariance(mean, covariance)
    points = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(
        jax.vmap(gaussian.log_prob)(jnp.asarray(points)),
        scipy.stats.multivariate_normal(mean, covariance).logpdf(points),
        rtol=1e-12,
    )
    np.testing.assert_allclose(gaussian.covariance(), covariance, rtol=1e-12)
    np.testing.assert_allclose(gaussian.precision(), np.linalg.inv(covariance), rtol=1e-10)
    assert float(gaussian.log_normaliser()) == pytest.approx(
        1.5 * math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(covariance)[1], rel=1e-12
    )
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), gaussian)
    assert jax.vmap(lambda g: g.log_normaliser())(stacked).shape == (2,)


def test_correlated_samples_match_moments_and_mahalanobis_law():
    target = _correlated6()
    samples = np.asarray(target.sample(jax.random.key(3), tc.NUM_SAMPLES), np.float64)
    tc.assert_moments_match(samples, target.ground_truth)
    centred = samples - target.ground_truth["mean"]
    squared_distances = np.einsum("ni,ij,nj->n", centred, target.ground_truth["precision"], centred)
    assert scipy.stats.kstest(squared_distances, scipy.stats.chi2(df=6).cdf).pvalue > tc.P_VALUE_FLOOR


def test_default_samples_fit_log_prob_in_two_dimensions():
    for name in ("gaussian", "gaussian_correlated"):
        samples = tc.cached_samples(name)
        tc.assert_moments_match(samples, tc.cached_target(name).ground_truth)
        probabilities = tc.cached_cell_probabilities(name, CORRELATED_BOX, 30)
        assert tc.grid_chi_square_pvalue(probabilities, samples, CORRELATED_BOX) > tc.P_VALUE_FLOOR


@pytest.mark.parametrize("dim", [0, -1, 2.5, True, "3", None])
def test_invalid_dim_is_rejected(dim):
    for name in ("gaussian", "gaussian_correlated"):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            targets.get(name, dim=dim)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        targets.get("gaussian", scale=0.0)
    with pytest.raises(ValueError, match="min_std must not exceed max_std"):
        targets.get("gaussian_correlated", min_std=3.0, max_std=1.0)
    with pytest.raises(ValueError, match="finite"):
        targets.get("gaussian", mean=float("nan"))
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian.from_covariance(np.zeros(2), np.diag([1.0, -1.0]))


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 6), mean_length=st.integers(0, 8))
def test_mean_must_be_scalar_or_of_length_dim(dim, mean_length):
    mean = np.arange(mean_length, dtype=float)
    if mean_length == dim:
        assert targets.get("gaussian", dim=dim, mean=mean).dim == dim
    else:
        with pytest.raises(ValueError, match=rf"\({dim},\)"):
            targets.get("gaussian", dim=dim, mean=mean)
