"""The digits task's data and shipped models: splits, provenance, classifier accuracy, reward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from targets import digits


@pytest.fixture(scope="module")
def classifier():
    return digits.load_classifier()


def test_splits_are_disjoint_scaled_and_complete():
    train, test, everything = (digits.load_digits_data(s) for s in ("train", "test", "all"))
    assert train.images.shape == (1437, 64) and test.images.shape == (360, 64)
    assert everything.images.shape[0] == train.images.shape[0] + test.images.shape[0]
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    np.testing.assert_array_equal(test.images, everything.images[::5])
    with pytest.raises(ValueError, match="valid choices"):
        digits.load_digits_data("validation")


@pytest.mark.parametrize("path", [digits.FLOW_PATH, digits.CLASSIFIER_PATH], ids=["flow", "classifier"])
def test_shipped_model_provenance_is_complete(path):
    model = digits.load_flow(path) if path == digits.FLOW_PATH else digits.load_classifier(path)
    prov = model.provenance
    assert set(digits.PROVENANCE_KEYS) <= set(prov), set(digits.PROVENANCE_KEYS) - set(prov)
    for package in ("scikit-learn", "jax", "flax", "optax", "numpy"):
        assert prov["versions"][package], package
    curve = prov["training"]["loss_curve"]
    assert curve["final_mean_last_1pct"] < curve["initial"]
    assert prov["num_parameters"] == sum(np.size(v) for v in jax.tree.leaves(model.params))
    assert path.stat().st_size < 1_000_000  # shipped in the repository


def test_load_rejects_parameters_that_do_not_match_the_hash(tmp_path):
    import shutil

    for suffix in (".npz", ".json"):
        shutil.copy(digits.CLASSIFIER_PATH.with_suffix(suffix), tmp_path / f"c{suffix}")
    with np.load(tmp_path / "c.npz") as data:
        flat = {k: data[k] for k in data.files}
    first = sorted(flat)[0]
    flat[first] = flat[first] + 1.0
    np.savez(tmp_path / "c.npz", **flat)
    with pytest.raises(ValueError, match="content_sha256"):
        digits.load_classifier(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError, match="tiltbench digits --retrain"):
        digits.load_classifier(tmp_path / "missing.npz")


def test_classifier_beats_chance_by_a_wide_margin_on_held_out_data(classifier):
    test = digits.load_digits_data("test")
    logits = jax.vmap(classifier.logits)(jnp.asarray(test.images))
    accuracy = float(np.mean(np.asarray(jnp.argmax(logits, -1)) == test.labels))
    # chance is ~0.1; 360 held-out images give an SE of ~0.01 near 0.97
    assert accuracy > 0.9
    assert accuracy == pytest.approx(classifier.provenance["training"]["test_accuracy"], abs=1e-6)


def test_reward_is_a_log_probability(classifier):
    x = jnp.asarray(digits.load_digits_data("test").images[:50])
    x = jnp.concatenate([x, 3.0 * jax.random.normal(jax.random.key(0), (20, 64))])  # off-manifold too
    log_probs = jax.vmap(classifier.log_probs)(x)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(log_probs, axis=-1)), 0.0, atol=1e-5)
    for c in (0, 3, 9):
        reward = jax.vmap(digits.class_log_prob_reward(classifier, c))(x)
        assert np.all(np.asarray(reward) <= 0.0) and np.all(np.isfinite(np.asarray(reward)))
        np.testing.assert_allclose(np.asarray(reward), np.asarray(log_probs[:, c]), rtol=1e-6)
    with pytest.raises(ValueError, match="0..9"):
        digits.class_log_prob_reward(classifier, 10)


def test_initial_law_is_the_interpolant_marginal_of_the_images():
    images = digits.load_digits_data("test").images[:3]
    t0 = 0.1
    sample_fn, log_prob_fn = digits.initial_law(images, t0)
    # one image: the exact Gaussian N(t0 x, (1 - t0)^2 I)
    _, single = digits.initial_law(images[:1], t0)
    y = jnp.ones(64) * 0.3
    var = (1 - t0) ** 2
    expected = -0.5 * np.sum((0.3 - t0 * images[0]) ** 2) / var - 32 * np.log(2 * np.pi * var)
    assert float(jax.jit(single)(y)) == pytest.approx(expected, rel=1e-5)
    sample_fn, _ = digits.initial_law(images, 0.5)
    n = 2000
    x = np.asarray(sample_fn(jax.random.key(1), n))
    # E X_{t0} = t0 mean(images); per-pixel SD <= (1 - t0) + t0 (pick of the image) = 1, so 5 SE <= 0.11
    np.testing.assert_allclose(x.mean(0), 0.5 * images.mean(0), atol=5 / np.sqrt(n))
    # three images: (1/3) Σ_j N(y; t0 x_j, (1 - t0)^2 I)
    parts = [-0.5 * np.sum((0.3 - t0 * im) ** 2) / var - 32 * np.log(2 * np.pi * var) for im in images]
    assert float(jax.jit(log_prob_fn)(y)) == pytest.approx(np.logaddexp.reduce(parts) - np.log(3), rel=1e-5)
