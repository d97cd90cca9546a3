"""Mode-coverage metrics on exact mixture samples, single-mode samples and hand-made counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from benchmarks import metrics
from benchmarks.metrics import modes
from targets.mixtures import GaussianMixture

N = 2000


@pytest.fixture(scope="module")
def gmm25():
    return targets.get("gmm25")


def test_exact_samples_cover_every_mode(gmm25):
    x = gmm25.sample(jax.random.key(0), N)
    values, skipped = metrics.evaluate(metrics.EvalContext(jax.random.key(1), gmm25, x), names=["modes"])
    assert skipped == {}
    k = 25
    assert values["modes/num_modes"] == k
    assert values["modes/hit_fraction"] == 1.0
    # Multinomial counts: E[log K − H(ĥ)] ≈ (K − 1) / (2N), so EMC falls short of 1 by ≈ 0.002.
    assert 1.0 - values["modes/emc"] < 5 * (k - 1) / (2 * N * np.log(k))
    assert values["modes/emc_truth"] == pytest.approx(1.0, abs=1e-6)
    # the TV of an exact sampler is one draw of the quantity whose mean is the noise floor
    rng = np.random.default_rng(0)
    draws = 0.5 * np.abs(rng.multinomial(N, np.full(k, 1 / k), size=400) / N - 1 / k).sum(-1)
    # 256 Monte-Carlo draws in the metric, 400 here: 4 SE of the difference of the two means
    se = draws.std() * np.sqrt(1 / 256 + 1 / 400)
    assert values["modes/weight_tv/noise_floor"] == pytest.approx(draws.mean(), abs=4 * se)
    assert abs(values["modes/weight_tv"] - draws.mean()) < 4 * draws.std()


def test_single_mode_samples_cover_one_mode_in_k(gmm25):
    mixture = gmm25.mixture
    x = mixture.means[7] + 0.5 * jax.random.normal(jax.random.key(2), (N, 2))
    values, _ = metrics.evaluate(metrics.EvalContext(jax.random.key(3), gmm25, x), names=["modes"])
    assert values["modes/hit_fraction"] == pytest.approx(1 / 25)
    assert values["modes/emc"] == pytest.approx(0.0, abs=1e-12)
    assert values["modes/weight_tv"] == pytest.approx(1 - 1 / 25)
    assert values["modes/weight_tv"] > values["modes/weight_tv/noise_floor"] + 0.5


def test_statistics_from_hand_made_counts():
    weights = np.array([0.6, 0.3, 0.1])
    out = modes.mode_statistics([60, 40, 0], 100, weights, hit_threshold=0.1)
    assert out["modes/hit_fraction"] == pytest.approx(2 / 3)
    h = np.array([0.6, 0.4])
    assert out["modes/emc"] == pytest.approx(-np.sum(h * np.log(h)) / np.log(3))
    assert out["modes/emc_truth"] == pytest.approx(-np.sum(weights * np.log(weights)) / np.log(3))
    assert out["modes/weight_tv"] == pytest.approx(0.5 * (0.0 + 0.1 + 0.1))
    # threshold: the 0.1-weight mode needs 0.1 · 100 · 0.1 = 1 sample
    assert modes.mode_statistics([60, 39, 1], 100, weights)["modes/hit_fraction"] == 1.0
    # unassigned (non-finite) samples count as missing mass
    assert modes.mode_statistics([50, 30, 10], 100, weights)["modes/weight_tv"] == pytest.approx(0.1)


def test_assignment_is_the_posterior_argmax_and_skips_non_finite_samples():
    mixture = GaussianMixture.from_stds(np.array([[-2.0], [2.0]]), 1.0, weights=np.array([0.8, 0.2]))
    # at x = 0.3 the densities favour component 1, the posterior (with weights) favours component 0
    assert mixture.component_log_probs(jnp.array([0.3]))[1] > mixture.component_log_probs(jnp.array([0.3]))[0]
    x = jnp.array([[0.3], [2.5], [jnp.nan], [-3.0]])
    np.testing.assert_array_equal(modes.mode_counts(mixture, x), [2.0, 1.0])


def test_non_mixture_target_is_skipped_with_reason():
    target = targets.Target(name="metrics_test_modes", dim=2, log_prob_fn=lambda x: -0.5 * jnp.sum(x**2))
    _, skipped = metrics.evaluate(
        metrics.EvalContext(jax.random.key(0), target, jnp.zeros((4, 2))), names=["modes"]
    )
    assert skipped == {"modes": "requires mixture: the target is not a Gaussian mixture"}
