"""The target registry: names, lookup errors, user registration round trip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from targets import UnknownNameError

pytestmark = pytest.mark.usefixtures("strict_promotion")

BUILT_INS = {
    "funnel10",
    "gaussian",
    "gaussian_correlated",
    "gmm9",
    "gmm25",
    "gmm40",
    "mog2",
    "mog50",
    "many_well8",
    "many_well16",
    "many_well32",
    "many_well64",
}
PARTICLE_TARGETS = {"dw4", "lj13", "lj55"}


def test_names_contain_every_built_in_and_are_sorted():
    names = targets.names()
    assert BUILT_INS <= set(names)
    assert names == sorted(names)
    assert all(name in targets.TARGETS for name in BUILT_INS)


def test_particle_targets_are_registered_once_available():
    if not PARTICLE_TARGETS & set(targets.names()):
        pytest.skip("targets/particles.py registers no targets yet")
    for name in PARTICLE_TARGETS & set(targets.names()):
        assert targets.get(name).is_particle_system


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as info:
        targets.get("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in BUILT_INS:
        assert name in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="Did you mean 'gmm40'"):
        targets.get("gmm4O")


def test_fixed_instances_reject_overrides_and_families_accept_them():
    with pytest.raises(TypeError, match="bogus"):
        targets.get("gmm40", bogus=1)
    assert targets.get("gaussian", dim=7).dim == 7
    assert targets.get("gaussian_correlated", dim=3).dim == 3


def test_registry_metadata_names_a_family():
    families = {targets.TARGETS.meta(name).get("family") for name in BUILT_INS}
    assert families == {"funnel", "gaussian", "mixture", "many_well"}


def test_register_target_round_trip_with_a_user_log_prob():
    name = "test_user_banana"

    def log_prob(x):
        return -0.5 * (x[0] ** 2 + (x[1] - x[0] ** 2) ** 2)

    try:
        target = targets.register_target(name, log_prob, dim=2, pretty_name="Banana")
        assert name in targets.names()
        fetched = targets.get(name)
        assert fetched is target and fetched.pretty_name == "Banana"
        assert not fetched.exact_samples and not fetched.log_Z_known
        assert float(fetched.log_prob(jnp.array([1.0, 1.0]))) == -0.5
        np.testing.assert_allclose(jax.grad(fetched.log_prob)(jnp.array([1.0, 1.0])), [-1.0, 0.0])
        with pytest.raises(NotImplementedError, match="no exact sampler"):
            fetched.sample(jax.random.key(0), 2)
        with pytest.raises(ValueError, match="already registered"):
            targets.register_target(name, log_prob, dim=2)
        replacement = targets.register_target(
            name,
            log_prob,
            dim=2,
            log_Z=1.5,
            sample=lambda key, n: jax.random.normal(key, (n, 2)),
            overwrite=True,
        )
        assert targets.get(name) is replacement and replacement.log_Z_source == "user supplied"
        assert replacement.sample(jax.random.key(0), 3).shape == (3, 2)
    finally:
        if name in targets.TARGETS:
            targets.TARGETS.unregister(name)
    assert name not in targets.names()


def test_wrong_shape_raises_with_the_expected_shape():
    target = targets.get("funnel10")
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        target.log_prob(np.zeros((4, 10)))
    with pytest.raises(ValueError, match="snake_case"):
        targets.register_target("Bad Name", lambda x: -x @ x, dim=2)


@pytest.mark.parametrize(
    ("log_prob", "dim", "match"),
    [
        (lambda x: -0.5 * x**2, 2, r"scalar of shape \(\) .* got shape \(2,\)"),
        (lambda x: -0.5 * (x[0] ** 2 + x[2] ** 2), 2, "reads a coordinate beyond dim=2"),
        (lambda x: jnp.nan * x[0], 2, "returns NaN"),
        (lambda x: x["a"], 2, "log_prob fails on a point of shape \\(2,\\)"),
        (lambda x: -x @ x, 0, "dim must be a positive integer"),
    ],
)
def test_register_target_checks_log_prob_once_and_names_the_target(log_prob, dim, match):
    with pytest.raises(ValueError, match=f"target 'user_bad'.*{match}"):
        targets.register_target("user_bad", log_prob, dim=dim)
    assert "user_bad" not in targets.names()


def test_register_target_accepts_log_zero_and_jax_only_code():
    name = "user_ok_checks"
    try:
        targets.register_target(name, lambda x: jnp.where(x[0] > 5.0, 0.0, -jnp.inf), dim=2)  # log 0 is fine
        targets.register_target(name, lambda x: -jnp.sum(x.at[0].set(0.0) ** 2), dim=2, overwrite=True)
    finally:
        targets.TARGETS.unregister(name)


def test_fingerprint_of_a_non_scalar_log_prob_says_so():
    target = targets.Target(name="vector_out", dim=2, log_prob_fn=lambda x: -0.5 * x**2)
    with pytest.raises(ValueError, match=r"target .vector_out.: log_prob must return a scalar .* \(2,\)"):
        target.fingerprint()
