"""Gaussian mixtures: the general class, the GMM-40 / grid / MoG targets, shipped data and samplers."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from target_checks import (
    NUM_SAMPLES,
    P_VALUE_FLOOR,
    assert_moments_match,
    cached_cell_probabilities,
    cached_samples,
    cached_target,
    grid_chi_square_pvalue,
    projection_ks_pvalue,
)

import targets
from targets.mixtures import GMM40_MEANS, GMM40_STD, MOG_DATA_PATH, GaussianMixture, load_mog_parameters
from tests.scripts import load_script

pytestmark = pytest.mark.usefixtures("strict_promotion")

MIXTURES = ["gmm40", "gmm9", "gmm25", "mog2", "mog50"]
BOX = {
    "gmm40": ((-48.0, 48.0), (-48.0, 48.0)),
    "gmm9": ((-9.0, 9.0), (-9.0, 9.0)),
    "gmm25": ((-14.0, 14.0), (-14.0, 14.0)),
    "mog2": ((-30.0, 30.0), (-30.0, 30.0)),
}
BINS = 40


def _random_mixture_parameters(seed: int, num_components: int, dim: int):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(num_components, dim))
    factors = rng.normal(size=(num_components, dim, dim))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.5 * np.eye(dim)
    weights = rng.uniform(0.2, 3.0, size=num_components)  # unnormalised on purpose
    return weights, means, covariances


# -- GMM-40 -------------------------------------------------------------------------------------


def test_gmm40_means_reproduce_from_the_numpy_mt19937_recipe():
    words = np.random.RandomState(0).randint(0, 2**32, size=80, dtype=np.uint64)
    uniforms = ((words & 0xFFFFFF) * 2.0**-24).astype(np.float32)
    means = (((uniforms - np.float32(0.5)) * np.float32(2)) * np.float32(40)).reshape(40, 2)
    assert means.dtype == np.float32
    np.testing.assert_array_equal(means, GMM40_MEANS)


def test_gmm40_test_vectors_float64(x64):
    target = targets.get("gmm40")
    assert target.mixture.means.dtype == jnp.float64
    assert GMM40_STD == pytest.approx(1.3132617, abs=1e-7)
    assert float(target.log_prob(jnp.zeros(2))) == pytest.approx(-23.3163479, abs=1e-6)
    assert float(target.log_prob(jnp.asarray(GMM40_MEANS[0], jnp.float64))) == pytest.approx(
        -6.0717843, abs=1e-6
    )
    mean, covariance = target.ground_truth["mean"], target.ground_truth["covariance"]
    np.testing.assert_allclose(mean, [-2.140513, 1.240038], atol=1e-6)
    assert np.trace(covariance) + mean @ mean == pytest.approx(1071.36992, abs=1e-4)
    assert target.log_Z == 0.0


def test_gmm40_float32_matches_float64_vectors():
    target = cached_target("gmm40")
    value = target.log_prob(jnp.zeros(2, jnp.float32))
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(-23.3163479, rel=1e-6)


def test_grid_test_vectors(x64):
    gmm9, gmm25 = targets.get("gmm9"), targets.get("gmm25")
    assert float(gmm9.log_prob(jnp.zeros(2))) == pytest.approx(-2.8311288, abs=1e-6)
    assert float(gmm9.log_prob(jnp.full(2, 5.0))) == pytest.approx(-2.8311288, abs=1e-6)
    assert float(gmm25.log_prob(jnp.zeros(2))) == pytest.approx(-3.8527801, abs=1e-6)
    assert gmm9.mixture.num_components == 9 and gmm25.mixture.num_components == 25
    np.testing.assert_allclose(np.asarray(gmm25.mixture.scale_trils[3]), np.sqrt(0.3) * np.eye(2), rtol=1e-12)


# -- the general class --------------------------------------------------------------------------


def test_gaussian_mixture_matches_scipy_with_unnormalised_weights(x64):
    weights, means, covariances = _random_mixture_parameters(seed=1, num_components=4, dim=3)
    mixture = GaussianMixture.from_covariances(means, covariances, weights=weights)
    points = np.random.default_rng(2).normal(scale=3.0, size=(7, 3))
    components = np.stack(
        [
            scipy.stats.multivariate_normal(m, c).logpdf(points)
            for m, c in zip(means, covariances, strict=True)
        ],
        1,
    )
    expected = logsumexp(np.log(weights) + components, axis=1)
    evaluate = jax.jit(
        jax.vmap(
            lambda x: (mixture.log_prob(x), mixture.component_log_probs(x), mixture.log_responsibilities(x))
        )
    )
    log_probs, component_log_probs, log_responsibilities = evaluate(jnp.asarray(points))
    np.testing.assert_allclose(log_probs, expected, rtol=1e-10)
    np.testing.assert_allclose(component_log_probs, components, rtol=1e-10)
    np.testing.assert_allclose(
        np.exp(log_responsibilities), np.exp(components) * weights / np.exp(expected)[:, None], rtol=1e-9
    )
    assert float(mixture.log_Z) == pytest.approx(np.log(weights.sum()), rel=1e-12)

    # Moments by the law of total variance (a different formula from the implementation's).
    probabilities = weights / weights.sum()
    mean = probabilities @ means
    spread = means - mean
    covariance = (
        np.einsum("k,kij->ij", probabilities, covariances) + (probabilities[:, None] * spread).T @ spread
    )
    np.testing.assert_allclose(mixture.mean(), mean, rtol=1e-12)
    np.testing.assert_allclose(mixture.covariance(), covariance, rtol=1e-10)
    np.testing.assert_allclose(mixture.covariances(), covariances, rtol=1e-10)


def test_gaussian_mixture_samples_full_covariances():
    weights, means, covariances = _random_mixture_parameters(seed=3, num_components=3, dim=4)
    mixture = GaussianMixture.from_covariances(means, covariances, weights=weights)
    samples = jax.jit(mixture.sample, static_argnums=1)(jax.random.key(0), 40_000)
    assert samples.shape == (40_000, 4) and samples.dtype == jnp.float32
    assert_moments_match(
        samples, {"mean": np.asarray(mixture.mean()), "covariance": np.asarray(mixture.covariance())}
    )


def test_gaussian_mixture_is_a_pytree_through_tree_map_and_vmap():
    target = cached_target("gmm9")
    mixture = target.mixture
    point = np.array([0.3, -4.0], np.float32)
    rebuilt = jax.tree.map(lambda leaf: leaf, mixture)
    assert isinstance(rebuilt, GaussianMixture) and rebuilt.num_components == 9
    # Stacked mixtures vmap like any PyTree (e.g. a family of tilts): here weights, then means, change.
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), mixture)
    stacked = GaussianMixture(
        stacked.log_weights.at[1].set(jnp.log(jnp.eye(9)[4])), stacked.means, stacked.scale_trils
    )
    values = jax.jit(jax.vmap(lambda m, x: m.log_prob(x), in_axes=(0, None)))(stacked, point)
    single = scipy.stats.multivariate_normal(np.zeros(2), 0.3 * np.eye(2)).logpdf(
        point
    )  # component 4 at (0, 0)
    np.testing.assert_allclose(values, [float(target.log_prob(point)), single], rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    num_components=st.integers(1, 4),
    dim=st.integers(1, 4),
    extra=st.integers(1, 3),
    which=st.sampled_from(["means", "covariances", "weights", "stds"]),
)
def test_gaussian_mixture_rejects_inconsistent_shapes(num_components, dim, extra, which):
    means = np.zeros((num_components, dim))
    covariances = np.broadcast_to(np.eye(dim), (num_components, dim, dim))
    with pytest.raises(ValueError, match="shape"):
        if which == "means":
            GaussianMixture.from_covariances(np.zeros(num_components + extra), covariances)
        elif which == "covariances":
            GaussianMixture.from_covariances(
                means, np.broadcast_to(np.eye(dim + extra), (num_components,) + (dim + extra,) * 2)
            )
        elif which == "weights":
            GaussianMixture.from_covariances(means, covariances, weights=np.ones(num_components + extra))
        else:
            GaussianMixture.from_stds(means, np.ones((num_components + extra, dim + 1)))


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 4), max_size=3).map(tuple).filter(lambda s: s != (3,)))
def test_gaussian_mixture_log_prob_rejects_wrong_point_shapes(shape):
    mixture = GaussianMixture.from_stds(np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        mixture.log_prob(np.zeros(shape))


def test_gaussian_mixture_rejects_bad_parameters():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture.from_covariances(np.zeros((1, 2)), -np.eye(2)[None])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture.from_stds(np.zeros((2, 2)), [1.0, 0.0])
    with pytest.raises(ValueError, match="either"):
        GaussianMixture.from_stds(np.zeros((2, 2)), 1.0, weights=[1, 1], log_weights=[0, 0])


# -- targets: normalisation, moments, goodness of fit -------------------------------------------


@pytest.mark.parametrize("name", sorted(BOX))
def test_two_dimensional_mixtures_integrate_to_one(name):
    target = cached_target(name)
    assert target.log_Z == 0.0
    mass = cached_cell_probabilities(name, BOX[name], BINS).sum()
    assert mass == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_target_ground_truth_matches_the_mixture(name):
    target = cached_target(name)
    assert isinstance(target.mixture, GaussianMixture) and target.mixture.dim == target.dim
    scale = 1.0 + np.abs(target.ground_truth["covariance"]).max()
    np.testing.assert_allclose(target.mixture.mean(), target.ground_truth["mean"], atol=1e-5 * scale)
    np.testing.assert_allclose(
        target.mixture.covariance(), target.ground_truth["covariance"], atol=1e-5 * scale
    )


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_samples_match_closed_form_moments(name):
    samples = cached_samples(name)
    assert samples.shape == (NUM_SAMPLES, cached_target(name).dim)
    assert_moments_match(samples, cached_target(name).ground_truth)


@pytest.mark.parametrize("name", sorted(BOX))
def test_two_dimensional_mixture_samples_fit_log_prob(name):
    probabilities = cached_cell_probabilities(name, BOX[name], BINS)
    assert grid_chi_square_pvalue(probabilities, cached_samples(name), BOX[name]) > P_VALUE_FLOOR


def test_mixture_samples_fill_every_grid_mode():
    """Mode occupancy of gmm25 (well separated): multinomial χ² of the nearest-mean counts."""
    target = cached_target("gmm25")
    samples = cached_samples("gmm25")
    means = np.asarray(target.mixture.means, np.float64)
    nearest = np.argmin(((samples[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=25)
    assert scipy.stats.chisquare(counts).pvalue > P_VALUE_FLOOR


@pytest.mark.parametrize("name", ["gmm40", "mog50"])
def test_mixture_samples_match_an_independent_numpy_draw(name):
    """Two-sample KS on projections against an ancestral draw written separately in NumPy."""
    if name == "mog50":
        parameters = load_mog_parameters(50)
        means, factors = parameters["means"], np.linalg.cholesky(parameters["covariances"])
    else:
        means = GMM40_MEANS.astype(np.float64)
        factors = np.broadcast_to(GMM40_STD * np.eye(2), (40, 2, 2))
    rng = np.random.default_rng(5)
    components = rng.integers(0, means.shape[0], size=NUM_SAMPLES)
    noise = rng.normal(size=(NUM_SAMPLES, means.shape[1]))
    reference = np.empty_like(noise)
    for k in range(means.shape[0]):
        rows = components == k
        reference[rows] = means[k] + noise[rows] @ factors[k].T
    assert projection_ks_pvalue(cached_samples(name), reference) > P_VALUE_FLOOR


# -- shipped MoG data ---------------------------------------------------------------------------


def test_mog_data_matches_its_provenance_record():
    generator = load_script("generate_mog50")
    record = json.loads(MOG_DATA_PATH.with_suffix(".json").read_text())
    with np.load(MOG_DATA_PATH) as data:
        arrays = {key: data[key] for key in data.files}
    assert generator.content_sha256(arrays) == record["content_sha256"]
    assert {"command", "seed", "versions", "instances"} <= set(record)
    for dim in (2, 50):
        parameters = load_mog_parameters(dim)
        assert parameters["means"].shape == (10, dim) and parameters["covariances"].shape == (10, dim, dim)
        assert np.all(np.abs(parameters["means"]) <= 10.0)
        np.testing.assert_allclose(np.exp(parameters["log_weights"]), 0.1, rtol=1e-15)
        assert np.all(np.linalg.eigvalsh(parameters["covariances"]) > 0)
    with pytest.raises(ValueError, match="available dims"):
        load_mog_parameters(3)


def test_mog_generator_reproduces_the_shipped_arrays():
    record = json.loads(MOG_DATA_PATH.with_suffix(".json").read_text())
    if (record["versions"]["numpy"], record["versions"]["scipy"]) != (np.__version__, scipy.__version__):
        pytest.skip("installed numpy/scipy differ from the versions that generated the shipped file")
    generator = load_script("generate_mog50")
    built = generator.build(record["seed"])
    # Not bit for bit: scipy's Wishart draw multiplies matrices through BLAS, whose kernels (chosen by
    # CPU) round the 50-D covariances differently in the last bits (2.7e-15 relative between two
    # x86 machines); the random stream itself is frozen, so anything beyond rounding is a real change.
    with np.load(MOG_DATA_PATH) as shipped:
        assert sorted(built) == sorted(shipped.files)
        for name, value in built.items():
            np.testing.assert_allclose(value, shipped[name], rtol=1e-12, atol=1e-12, err_msg=name)
