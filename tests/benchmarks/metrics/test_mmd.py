"""Unbiased MMD²: exactness against a dense float64 computation, null calibration, power under shifts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

import targets
from benchmarks import metrics
from benchmarks.metrics import mmd


def dense_mmd2(x, y, bandwidths):
    """Reference: dense float64 U-statistic with k = mean_b exp(-d²/(2ℓ_b²))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return np.mean([np.exp(-d2 / (2 * bw**2)) for bw in bandwidths], axis=0)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def dense_jackknife_se(x, y, bandwidths):
    n, m = len(x), len(y)
    loo_x = np.array([dense_mmd2(np.delete(x, i, 0), y, bandwidths) for i in range(n)])
    loo_y = np.array([dense_mmd2(x, np.delete(y, j, 0), bandwidths) for j in range(m)])
    var = (n - 1) / n * np.sum((loo_x - loo_x.mean()) ** 2) + (m - 1) / m * np.sum(
        (loo_y - loo_y.mean()) ** 2
    )
    return np.sqrt(var)


@pytest.mark.parametrize(
    "n, m, bandwidths, block_size",
    [
        (128, 128, (1.3,), 256),  # the shapes of the other tests (one padded block): shared compilation
        (37, 23, (0.4, 1.0, 2.5, 3.0, 4.0), 8),
    ],  # several blocks, the last one padded; n ≠ m
)
def test_blocked_estimator_and_jackknife_match_dense_reference(n, m, bandwidths, block_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (rng.normal(size=(m, 3)) + 0.3).astype(np.float32)
    got = mmd.mmd2_unbiased(x, y, bandwidths, block_size=block_size)
    assert got.mmd2 == pytest.approx(dense_mmd2(x, y, bandwidths), abs=2e-6)
    assert got.se == pytest.approx(dense_jackknife_se(x, y, bandwidths), rel=1e-3)


def test_median_distance_matches_pdist():
    z = np.random.default_rng(1).normal(size=(301, 4)).astype(np.float32)
    assert mmd.median_distance(z) == pytest.approx(np.median(pdist(z.astype(np.float64))), rel=1e-5)


def test_identical_distributions_give_zero_within_se_and_the_se_is_calibrated():
    rng = np.random.default_rng(2)
    n, repeats = 128, 24
    runs, v_stats = [], []
    for _ in range(repeats):
        x, y = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
        runs.append(mmd.mmd2_median(x, y))
        bw = runs[-1].bandwidths
        # diagonal-including V-statistic, the estimator Beyond-ELBOs uses: biased by ≈ 2(1 − E k)/n
        v_stats.append(runs[-1].mmd2 + _v_minus_u(x, y, bw))
    values, ses = np.array([r.mmd2 for r in runs]), np.array([r.se for r in runs])
    sd = values.std(ddof=1)
    assert abs(values.mean()) < 4 * sd / np.sqrt(repeats)
    assert 0.6 < ses.mean() / sd < 3.0  # jackknife: conservative in expectation (Efron-Stein)
    # power check: the same test rejects the biased V-statistic
    assert np.mean(v_stats) > 4 * np.std(v_stats, ddof=1) / np.sqrt(repeats)


def _v_minus_u(x, y, bandwidths):
    """V-statistic minus U-statistic, computed densely."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = lambda a, b: np.mean([np.exp(-cdist(a, b, "sqeuclidean") / (2 * bw**2)) for bw in bandwidths], 0)
    v = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    return v - dense_mmd2(x, y, bandwidths)


def test_mmd_grows_with_a_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(128, 3)).astype(np.float32)
    base = rng.normal(size=(128, 3)).astype(np.float32)
    scale = mmd.median_distance(base)
    previous = -np.inf
    for shift in (0.0, 0.5, 1.0, 2.0):
        y = base + np.float32(shift)
        med, multi = mmd.mmd2_median(x, y), mmd.mmd2_multi(x, y, scale)
        assert med.mmd2 > previous
        previous = med.mmd2
        if shift >= 1.0:
            assert med.mmd2 > 5 * med.se and multi.mmd2 > 5 * multi.se


def test_non_finite_samples_give_nan_and_small_samples_are_rejected():
    x = np.zeros((10, 2), np.float32)
    x[3, 1] = np.nan
    assert np.isnan(mmd.mmd2_median(x, np.ones((10, 2), np.float32)).mmd2)
    with pytest.raises(ValueError, match="at least|≥ 4"):
        mmd.mmd2_unbiased(np.zeros((3, 2)), np.zeros((10, 2)), (1.0,))


def test_mmd_metrics_report_noise_floor_and_scales():
    target = targets.Target(name="metrics_test_mmd", dim=3, log_prob_fn=lambda x: -0.5 * jnp.sum(x**2))
    keys = jax.random.split(jax.random.key(4), 3)
    x, ref, ref2 = (jax.random.normal(k, (128, 3)) for k in keys)
    values, skipped = metrics.evaluate(
        metrics.EvalContext(jax.random.key(5), target, x + 1.0, reference=ref, reference2=ref2),
        names=["mmd_rbf_median", "mmd_rbf_multi"],
    )
    assert skipped == {}
    assert values["mmd2/rbf_multi/scale"] == pytest.approx(mmd.median_distance(ref), rel=1e-6)
    for name in ("mmd2/rbf_median", "mmd2/rbf_multi"):
        floor, floor_se = values[f"{name}/noise_floor"], values[f"{name}/noise_floor_se"]
        assert abs(floor) < 4 * floor_se  # two exact sample sets
        assert values[name] > floor + 5 * values[f"{name}/se"]  # shifted model samples


@pytest.mark.slow
def test_memory_safe_at_2000_samples_in_dim_165():
    rng = np.random.default_rng(6)
    x, y = (rng.normal(size=(2000, 165)).astype(np.float32) for _ in range(2))
    out = mmd.mmd2_multi(x, y, mmd.median_distance(y))
    assert abs(out.mmd2) < 5 * out.se
