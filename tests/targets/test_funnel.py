"""Neal's funnel: test vectors, normalisation of the 2-D analogue, exact samples."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from target_checks import (
    NUM_SAMPLES,
    P_VALUE_FLOOR,
    Z_TOLERANCE,
    cached_samples,
    cached_target,
    mean_z_scores,
    projection_ks_pvalue,
)

import targets
from targets.funnel import make_funnel

pytestmark = pytest.mark.usefixtures("strict_promotion")


def test_funnel10_test_vectors(x64):
    target = targets.get("funnel10")
    assert target.dim == 10 and target.log_Z == 0.0
    assert float(target.log_prob(jnp.zeros(10))) == pytest.approx(-10.2879976, abs=1e-7)
    assert float(target.log_prob(jnp.ones(10))) == pytest.approx(-16.4990107, abs=1e-7)


def test_funnel10_float32_test_vectors_and_ground_truth():
    target = cached_target("funnel10")
    value = target.log_prob(np.zeros(10, np.float32))
    assert value.dtype == jnp.float32 and float(value) == pytest.approx(-10.2879976, rel=1e-6)
    assert float(target.log_prob(np.ones(10, np.float32))) == pytest.approx(-16.4990107, rel=1e-6)
    np.testing.assert_allclose(target.ground_truth["std"], [3.0] + [math.exp(9 / 4)] * 9, rtol=1e-12)
    assert math.exp(9 / 4) == pytest.approx(9.4877, abs=1e-4)


@pytest.mark.parametrize("v_std", [3.0, 1.0])
def test_two_dimensional_funnel_integrates_to_one(v_std):
    """∫∫ p(v, x) dx dv = ∫∫ p(v, e^{v/2} z) e^{v/2} dz dv on a (v, z) grid, using log_prob itself."""
    target = make_funnel(2, v_std)
    v = np.linspace(-10 * v_std, 10 * v_std, 801)
    z = np.linspace(-12.0, 12.0, 801)
    vv, zz = np.meshgrid(v, z, indexing="ij")
    points = np.stack([vv, np.exp(vv / 2) * zz], axis=-1).reshape(-1, 2)
    log_density = np.asarray(jax.jit(jax.vmap(target.log_prob))(points.astype(np.float32)), np.float64)
    integrand = np.exp(log_density.reshape(vv.shape) + vv / 2)
    mass = np.trapezoid(np.trapezoid(integrand, z, axis=1), v)
    assert mass == pytest.approx(math.exp(target.log_Z), abs=1e-5)


def test_funnel10_samples_have_the_right_v_and_conditional_laws():
    samples = np.asarray(cached_samples("funnel10"), np.float64)
    v = samples[:, 0]
    standard_error_mean = v.std(ddof=1) / math.sqrt(NUM_SAMPLES)
    standard_error_std = 3.0 / math.sqrt(2 * (NUM_SAMPLES - 1))  # normal-theory SE of a sample std
    assert abs(v.mean()) < Z_TOLERANCE * standard_error_mean
    assert abs(v.std(ddof=1) - 3.0) < Z_TOLERANCE * standard_error_std
    # Given v, x_i e^{-v/2} are iid N(0, 1) and independent of v: pool the 9 coordinates.
    whitened = (samples[:, 1:] * np.exp(-v[:, None] / 2)).ravel()
    assert scipy.stats.kstest(whitened, "norm").pvalue > P_VALUE_FLOOR
    assert np.max(np.abs(mean_z_scores(samples[:, 1:], np.zeros(9)))) < Z_TOLERANCE
    # log x_i² = v + log ε²: the least-squares slope of log x_i² on v is exactly 1.
    log_squares = np.log(samples[:, 1:] ** 2).ravel()
    v_repeated = np.repeat(v, 9)
    slope, intercept = np.polyfit(v_repeated, log_squares, 1)
    residual_std = np.std(log_squares - slope * v_repeated - intercept, ddof=2)
    standard_error_slope = residual_std / (v_repeated.std() * math.sqrt(v_repeated.size))
    assert abs(slope - 1.0) < Z_TOLERANCE * standard_error_slope, f"slope {slope:.4f}"


def test_funnel10_samples_match_an_independent_numpy_draw():
    rng = np.random.default_rng(7)
    v = 3.0 * rng.normal(size=(NUM_SAMPLES, 1))
    reference = np.concatenate([v, np.exp(v / 2) * rng.normal(size=(NUM_SAMPLES, 9))], axis=1)
    assert projection_ks_pvalue(cached_samples("funnel10"), reference) > P_VALUE_FLOOR


def test_make_funnel_names_and_validation():
    assert make_funnel(2).name == "funnel2"
    assert make_funnel(5, 1.0).name == "funnel5_vstd1"
    assert make_funnel(5, 1.5).name == "funnel5_vstd1p5"
    for dim in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="funnel dim must be an integer >= 2"):
            make_funnel(dim)
    for v_std in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="v_std"):
            make_funnel(10, v_std)
