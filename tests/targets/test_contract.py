"""Conformance of every registered target to the `Target` contract, one parametrised case per target.

Parametrised over `targets.names()`, so targets added later (the particle systems, user targets
registered at import) are covered automatically. Statistical checks use the exact sampler where
one exists: the Stein identities `E_p[∇log p] = 0` and `E_p[x·∇log p] = -d` tie `sample` to
`log_prob` (and hold whatever log Z is), and the sample mean is compared with `ground_truth`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from target_checks import (
    NUM_SAMPLES,
    Z_TOLERANCE,
    batched_value_and_grad,
    cached_samples,
    cached_target,
    mean_z_scores,
)

import targets
from targets.base import remove_mean

pytestmark = pytest.mark.usefixtures("strict_promotion")

NAMES = targets.names()
if not NAMES:  # pragma: no cover - the built-ins always register
    pytest.skip("no targets registered", allow_module_level=True)


def _exact(name: str) -> targets.Target:
    target = cached_target(name)
    if not target.exact_samples:
        pytest.skip(f"{name} has no exact sampler")
    return target


NUM_RANDOM_POINTS = 64


def _evaluation_points(name: str) -> list[np.ndarray]:
    """Random N(0, 2²) points (mean-free for particle systems), plus the exact samples if any.

    Exact targets get `NUM_SAMPLES` of each, so the batched evaluation compiles for one shape only
    (shared with the Stein test); the others get `NUM_RANDOM_POINTS` random points.
    """
    target = cached_target(name)
    size = NUM_SAMPLES if target.exact_samples else NUM_RANDOM_POINTS
    points = 2.0 * np.random.default_rng(0).normal(size=(size, target.dim)).astype(np.float32)
    if target.particles is not None:
        points = np.asarray(remove_mean(jnp.asarray(points), target.particles))
    return [points, cached_samples(name)] if target.exact_samples else [points]


@pytest.mark.parametrize("name", NAMES)
def test_target_is_described(name):
    target = cached_target(name)
    assert isinstance(target, targets.Target)
    assert target.name == name
    assert isinstance(target.dim, int) and target.dim >= 1
    assert target.pretty_name and target.description
    summary = target.summary()
    assert summary["name"] == name and summary["dim"] == target.dim
    if target.log_Z_known:
        assert math.isfinite(target.log_Z) and target.log_Z_se >= 0 and target.log_Z_source
    fingerprint = target.fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_and_gradient_are_finite_float32(name):
    target = cached_target(name)
    for points in _evaluation_points(name):
        values, gradients = batched_value_and_grad(name)(points)
        assert values.shape == (len(points),) and gradients.shape == (len(points), target.dim)
        assert values.dtype == jnp.float32 and gradients.dtype == jnp.float32
        assert np.all(np.isfinite(values)), f"{np.sum(~np.isfinite(values))} non-finite log_prob values"
        assert np.all(np.isfinite(gradients)), "non-finite gradients"
        single = float(target.log_prob(points[0]))  # one point: unbatched, op by op
        np.testing.assert_allclose(single, values[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_rejects_wrong_shapes(name):
    dim = cached_target(name).dim

    @settings(max_examples=15, deadline=None)
    @given(shape=st.lists(st.integers(0, dim + 2), max_size=3).map(tuple).filter(lambda s: s != (dim,)))
    def check(shape):
        with pytest.raises(ValueError, match=rf"\({dim},\)"):
            cached_target(name).log_prob(np.zeros(shape, np.float32))

    check()


@pytest.mark.parametrize("name", NAMES)
def test_exact_sampler_contract(name):
    target = _exact(name)
    samples = cached_samples(name)
    assert samples.shape == (NUM_SAMPLES, target.dim) and samples.dtype == np.float32
    assert np.all(np.isfinite(samples))
    again = np.asarray(target.sample(jax.random.key(0), NUM_SAMPLES))
    np.testing.assert_array_equal(again, samples)  # same key, same draw
    other = np.asarray(target.sample(jax.random.key(1), NUM_SAMPLES))
    assert not np.array_equal(other, samples)
    with pytest.raises(ValueError, match="positive integer"):
        target.sample(jax.random.key(0), 0)


@pytest.mark.parametrize("name", NAMES)
def test_stein_identities_tie_samples_to_log_prob(name):
    """`E_p[∇log p(x)] = 0` and `E_p[x·∇log p(x)] = -d` (integration by parts), within 5 SE."""
    target = _exact(name)
    samples = cached_samples(name)
    _, gradients = batched_value_and_grad(name)(samples)
    gradients = np.asarray(gradients, np.float64)
    assert np.max(np.abs(mean_z_scores(gradients, np.zeros(target.dim)))) < Z_TOLERANCE
    virial = np.sum(np.asarray(samples, np.float64) * gradients, axis=1)
    z = (virial.mean() + target.dim) / (virial.std(ddof=1) / math.sqrt(NUM_SAMPLES))
    assert abs(z) < Z_TOLERANCE, f"E[x·∇log p] = {virial.mean():.4f}, expected {-target.dim}"


@pytest.mark.parametrize("name", NAMES)
def test_sample_mean_matches_ground_truth(name):
    target = _exact(name)
    if "mean" not in target.ground_truth:
        pytest.skip(f"{name} has no closed-form mean")
    assert np.shape(target.ground_truth["mean"]) == (target.dim,)
    z = mean_z_scores(cached_samples(name), target.ground_truth["mean"])
    assert np.max(np.abs(z)) < Z_TOLERANCE, f"mean z-scores {np.round(z, 2)}"
