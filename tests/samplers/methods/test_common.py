"""The shared optimizer of the learned methods (`samplers.methods.common.make_optimizer`): the optional
cosine learning-rate decay, and its validation in every config that offers it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import samplers
from samplers.methods.common import make_optimizer

DECAYING = ["adjoint_matching", "adjoint_sampling", "cmcd_lv", "dds", "pis", "trajectory_balance"]


def _effective_learning_rates(optimizer, steps: int) -> np.ndarray:
    """|update| of a unit gradient on one scalar, per step: Adam's step is ≈ the learning rate."""
    params = jnp.zeros(())
    state = optimizer.init(params)
    rates = []
    for _ in range(steps):
        updates, state = optimizer.update(jnp.ones(()), state, params)
        rates.append(float(-updates))
    return np.asarray(rates)


def test_cosine_decay_reaches_the_final_fraction_and_stays():
    rates = _effective_learning_rates(make_optimizer(1e-2, None, decay_steps=10, final_fraction=0.1), 15)
    np.testing.assert_allclose(rates[0], 1e-2, rtol=1e-3)
    assert np.all(np.diff(rates[:11]) < 0)
    np.testing.assert_allclose(rates[10:], 1e-3, rtol=1e-3)
    constant = _effective_learning_rates(make_optimizer(1e-2, None), 5)
    np.testing.assert_allclose(constant, 1e-2, rtol=1e-3)
    assert isinstance(make_optimizer(1e-2, 1.0, decay_steps=3), optax.GradientTransformation)


@pytest.mark.parametrize("name", DECAYING)
def test_configs_validate_the_decay(name):
    spec = samplers.get(name)
    assert spec.make_config(learning_rate_decay_steps=100).learning_rate_decay_steps == 100
    with pytest.raises(ValueError, match="learning_rate_decay_steps must be a positive integer or None"):
        spec.make_config(learning_rate_decay_steps=0)
    with pytest.raises(ValueError, match=r"learning_rate_final_fraction must lie in \[0, 1\]"):
        spec.make_config(learning_rate_decay_steps=10, learning_rate_final_fraction=1.5)
