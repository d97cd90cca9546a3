"""samplers.importance: the buffer ESS, tempering to an ESS floor, weighted draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers.importance import normalised_ess, temper_to_ess, weighted_indices

CAPACITY = 4096


def _buffer(log_w_filled: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """A capacity-4096 buffer with the given filled log-weights, the rest empty (`-inf`)."""
    log_w = np.full(CAPACITY, -np.inf, np.float32)
    log_w[: log_w_filled.size] = log_w_filled
    return jnp.asarray(log_w), jnp.asarray(log_w_filled.size, jnp.int32)


def test_one_dominant_weight_is_tempered_to_the_floor():
    """One weight e^60 above 4095 others (ESS ≈ 1/4096): β is chosen so the ESS meets the 5 % floor,
    and by bisection it is the largest such β (a slightly larger one falls below the floor)."""
    rng = np.random.default_rng(0)
    filled = rng.normal(0.0, 1.0, CAPACITY).astype(np.float32)
    filled[17] = 60.0
    log_w, num = _buffer(filled)
    out = temper_to_ess(log_w, num, 0.05)
    assert float(out.ess) < 1e-3
    assert float(out.ess_tempered) >= 0.05
    assert 0.0 < float(out.beta) < 1.0
    above = normalised_ess(jnp.where(jnp.isfinite(log_w), (float(out.beta) + 1e-6) * log_w, -jnp.inf), num)
    assert float(above) < 0.05 + 1e-4
    np.testing.assert_allclose(float(out.ess_tempered), 0.05, atol=1e-4)


def test_uniform_and_healthy_buffers_are_untouched():
    healthy = np.random.default_rng(1).normal(0, 0.5, 3000).astype(np.float32)
    for filled in (np.zeros(1000, np.float32), healthy):
        log_w, num = _buffer(filled)
        out = temper_to_ess(log_w, num, 0.05)
        assert float(out.beta) == 1.0
        np.testing.assert_array_equal(np.asarray(out.log_w), np.asarray(log_w))
        assert float(out.ess_tempered) == float(out.ess) > 0.05
    np.testing.assert_allclose(float(temper_to_ess(*_buffer(np.zeros(1000, np.float32)), 0.05).ess), 1.0)


def test_floor_none_is_off_and_empty_slots_stay_empty():
    filled = np.zeros(100, np.float32)
    filled[0] = 50.0
    log_w, num = _buffer(filled)
    off = temper_to_ess(log_w, num, None)
    assert float(off.beta) == 1.0 and off.log_w is log_w
    on = temper_to_ess(log_w, num, 0.5)
    assert np.all(np.isneginf(np.asarray(on.log_w)[100:]))
    assert float(on.ess_tempered) >= 0.5


@pytest.mark.parametrize("floor", [0.01, 0.05, 0.3])
def test_ess_is_monotone_in_beta_so_bisection_meets_any_floor(floor):
    filled = np.random.default_rng(2).normal(0.0, 8.0, 2000).astype(np.float32)  # heavy spread
    log_w, num = _buffer(filled)
    betas = jnp.linspace(0.0, 1.0, 21)
    ess = jax.vmap(lambda b: normalised_ess(jnp.where(jnp.isfinite(log_w), b * log_w, -jnp.inf), num))(betas)
    assert np.all(np.diff(np.asarray(ess)) <= 1e-6)
    assert float(temper_to_ess(log_w, num, floor).ess_tempered) >= floor


def test_weighted_indices_follow_the_weights_and_skip_empty_slots():
    log_w, _ = _buffer(np.log(np.asarray([1.0, 3.0], np.float32)))
    index = np.asarray(weighted_indices(jax.random.key(0), log_w, 20000))
    assert set(np.unique(index)) <= {0, 1}
    np.testing.assert_allclose(np.mean(index == 1), 0.75, atol=4 * np.sqrt(0.75 * 0.25 / 20000))
