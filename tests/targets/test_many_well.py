"""FAB many-well: quadrature log Z, test vectors, normalisation and exact samples."""

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
    assert_moments_match,
    cached_samples,
    cached_target,
    grid_cell_probabilities,
    projection_ks_pvalue,
)

import targets
from targets.many_well import double_well_quadrature, make_many_well

pytestmark = pytest.mark.usefixtures("strict_promotion")

LOG_Z_PER_BLOCK = 10.2934797070739  # targets.md §3.1 (recomputed independently there)
REFERENCE_LOG_Z = {8: 41.17391883, 16: 82.34783766, 32: 164.6956753, 64: 329.39135063}


def test_quadrature_constants_match_the_reference():
    quadrature = double_well_quadrature()
    assert quadrature.log_Z1 + 0.5 * math.log(2 * math.pi) == pytest.approx(LOG_Z_PER_BLOCK, abs=1e-11)
    assert math.exp(quadrature.log_Z1) == pytest.approx(11784.5092651278, rel=1e-11)
    assert quadrature.mean == pytest.approx(1.1879610, abs=1e-7)
    assert quadrature.second_moment == pytest.approx(2.9598061, abs=1e-7)
    assert quadrature.prob_deep == pytest.approx(0.8443071, abs=1e-7)
    assert quadrature.deep_mode == pytest.approx(1.7525, abs=1e-4)
    assert -4 * quadrature.deep_mode**3 + 12 * quadrature.deep_mode + 0.5 == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("dim", sorted(REFERENCE_LOG_Z))
def test_registered_log_Z(dim):
    target = targets.get(f"many_well{dim}")
    assert target.name == f"many_well{dim}" and target.dim == dim
    assert target.log_Z == pytest.approx(REFERENCE_LOG_Z[dim], abs=1e-6)
    assert target.log_Z == pytest.approx(dim / 2 * LOG_Z_PER_BLOCK, rel=1e-13)


def test_many_well32_test_vectors(x64):
    target = targets.get("many_well32")
    deep_mode = double_well_quadrature().deep_mode
    assert target.log_Z == pytest.approx(164.6956753, abs=1e-7)
    assert float(target.log_prob(jnp.zeros(32))) == 0.0
    assert float(target.log_prob(jnp.ones(32))) == pytest.approx(80.0, abs=1e-12)
    all_deep = jnp.tile(jnp.array([deep_mode, 0.0]), 16)  # x_{2i} at the deep maximiser, x_{2i+1} = 0
    assert float(target.log_prob(all_deep)) == pytest.approx(157.9387608, abs=1e-6)
    assert target.sample(jax.random.key(0), 3).dtype == jnp.float64


def test_many_well32_float32_test_vectors():
    target = cached_target("many_well32")
    deep_mode = double_well_quadrature().deep_mode
    all_deep = np.tile(np.array([deep_mode, 0.0], np.float32), 16)
    assert float(target.log_prob(all_deep)) == pytest.approx(157.9387608, rel=1e-6)
    assert float(target.log_prob(np.ones(32, np.float32))) == 80.0


def test_two_dimensional_block_integrates_to_exp_log_Z():
    target = make_many_well(2)
    assert target.log_Z == pytest.approx(LOG_Z_PER_BLOCK, rel=1e-14)
    mass = grid_cell_probabilities(target.log_prob, target.log_Z, ((-3.5, 3.5), (-9.0, 9.0)), bins=50).sum()
    assert mass == pytest.approx(1.0, abs=1e-5)


def test_many_well32_samples_match_well_statistics():
    samples = np.asarray(cached_samples("many_well32"), np.float64)
    wells, gaussians = samples[:, 0::2].ravel(), samples[:, 1::2].ravel()  # 16 independent copies each
    n = wells.size
    assert abs(wells.mean() - 1.1879610) < Z_TOLERANCE * wells.std(ddof=1) / math.sqrt(n)
    p_deep = 0.8443071
    assert abs((wells > 0).mean() - p_deep) < Z_TOLERANCE * math.sqrt(p_deep * (1 - p_deep) / n)
    assert scipy.stats.kstest(gaussians, "norm").pvalue > P_VALUE_FLOOR
    assert_moments_match(samples, cached_target("many_well32").ground_truth)


def test_many_well_well_coordinates_follow_log_prob():
    """KS of the double-well coordinates against a CDF tabulated from the target's own log_prob."""
    target = cached_target("many_well32")
    grid = np.linspace(-4.0, 4.0, 8001)
    points = np.zeros((grid.size, 32), np.float32)
    points[:, 0] = grid  # log_prob is separable: the slice through 0 is the x_0 marginal up to a constant
    log_density = np.asarray(jax.jit(jax.vmap(target.log_prob))(points), np.float64)
    density = np.exp(log_density - log_density.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    wells = np.asarray(cached_samples("many_well32"), np.float64)[:, 0::2].ravel()
    assert scipy.stats.kstest(wells, lambda x: np.interp(x, grid, cdf)).pvalue > P_VALUE_FLOOR


def _rejection_draw(rng: np.random.Generator, n: int) -> np.ndarray:
    """fab-jax / gfn-diffusion rejection sampler for one well coordinate (an independent algorithm).

    Proposal 0.2 N(-1.7, 0.5²) + 0.8 N(1.7, 0.5²), envelope k = 3 Z₁ (exp(f)/(k q) ≤ 0.864 < 1).
    """
    log_Z1 = double_well_quadrature().log_Z1
    accepted: list[np.ndarray] = []
    while sum(a.size for a in accepted) < n:
        m = 4 * n
        centres = np.where(rng.uniform(size=m) < 0.2, -1.7, 1.7)
        proposals = centres + 0.5 * rng.normal(size=m)
        log_q = np.logaddexp(
            np.log(0.2) + scipy.stats.norm(-1.7, 0.5).logpdf(proposals),
            np.log(0.8) + scipy.stats.norm(1.7, 0.5).logpdf(proposals),
        )
        log_ratio = -(proposals**4) + 6 * proposals**2 + 0.5 * proposals - (math.log(3.0) + log_Z1 + log_q)
        accepted.append(proposals[np.log(rng.uniform(size=m)) < log_ratio])
    return np.concatenate(accepted)[:n]


def test_many_well8_samples_match_an_independent_rejection_draw():
    target = cached_target("many_well8")
    samples = np.asarray(target.sample(jax.random.key(4), NUM_SAMPLES))
    rng = np.random.default_rng(8)
    reference = np.empty((NUM_SAMPLES, 8))
    reference[:, 0::2] = _rejection_draw(rng, 4 * NUM_SAMPLES).reshape(NUM_SAMPLES, 4)
    reference[:, 1::2] = rng.normal(size=(NUM_SAMPLES, 4))
    assert projection_ks_pvalue(samples, reference) > P_VALUE_FLOOR


@pytest.mark.parametrize("dim", [0, 1, 7, -2, 3.0, True])
def test_odd_or_invalid_dims_are_rejected(dim):
    with pytest.raises(ValueError, match="even integer"):
        make_many_well(dim)
