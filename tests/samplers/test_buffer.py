"""Tests for samplers.buffer: FIFO wrap-around order, sampling from filled entries only
(uniformity by a chi-square test), sampling without replacement, jit/scan compatibility, errors."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from samplers.buffer import (
    BufferState,
    buffer_add,
    buffer_capacity,
    buffer_init,
    buffer_ordered,
    buffer_sample,
    size,
)


class Entry(NamedTuple):
    x: jax.Array  # (2,)
    grad: jax.Array  # (2,)
    index: jax.Array  # ()


def entries(start, count):
    """`count` entries numbered start, start + 1, …; every leaf encodes the number."""
    idx = start + jnp.arange(count, dtype=jnp.int32)
    x = jnp.stack([idx, -idx], axis=1).astype(jnp.float32)
    return Entry(x=x, grad=2.0 * x, index=idx)


def empty(capacity):
    return buffer_init(Entry(jnp.zeros(2), jnp.zeros(2), jnp.zeros((), jnp.int32)), capacity)


def test_init():
    buf = empty(5)
    assert isinstance(buf, BufferState) and buffer_capacity(buf) == 5 and int(size(buf)) == 0
    assert buf.data.x.shape == (5, 2) and buf.data.index.dtype == jnp.int32


def test_fifo_wrap_around_order():
    capacity = 5
    buf, added, add = empty(capacity), 0, jax.jit(buffer_add)
    for batch_size in (3, 3, 1, 7, 2, 5):  # wraps several times, once with batch_size > capacity
        buf = add(buf, entries(added, batch_size))
        added += batch_size
        held = min(added, capacity)
        assert int(size(buf)) == held and int(buf.position) == added % capacity
        ordered = buffer_ordered(buf)
        expected = np.arange(added - held, added)  # the `held` most recent entries, oldest first
        np.testing.assert_array_equal(ordered.index[:held], expected)
        np.testing.assert_array_equal(ordered.x[:held, 1], -expected)
        np.testing.assert_array_equal(ordered.grad[:held, 0], 2 * expected)
        # raw layout: entry k lives in slot k mod capacity
        np.testing.assert_array_equal(buf.data.index[expected % capacity], expected)


def test_sampling_is_uniform_over_filled_entries_only():
    buf = buffer_add(empty(100), entries(1, 10))  # entries 1..10 in slots 0..9, 90 empty slots
    num_samples = 5000
    sample = jax.jit(buffer_sample, static_argnums=2)(jax.random.key(0), buf, num_samples)
    values = np.asarray(sample.index)
    assert set(values.tolist()) <= set(range(1, 11))
    np.testing.assert_array_equal(np.asarray(sample.x[:, 0]), values)  # leaves stay aligned
    counts = np.bincount(values, minlength=11)[1:]
    chi2 = np.sum((counts - num_samples / 10) ** 2 / (num_samples / 10))
    assert chi2 < stats.chi2.ppf(0.9999, df=9), counts


def test_sampling_without_replacement():
    buf = buffer_add(empty(16), entries(0, 20))  # full, holds entries 4..19
    sample = buffer_sample(jax.random.key(1), buf, 16, replace=False)
    assert sorted(np.asarray(sample.index).tolist()) == list(range(4, 20))
    partial = buffer_add(empty(16), entries(100, 6))
    draws = np.stack(
        [np.asarray(buffer_sample(jax.random.key(k), partial, 4, replace=False).index) for k in range(20)]
    )
    assert all(len(set(row)) == 4 for row in draws) and set(draws.ravel()) == set(range(100, 106))


def test_works_inside_scan_under_jit():
    capacity, batch_size, rounds = 16, 4, 10

    @jax.jit
    def fill_and_draw(key):
        def body(buf, r):
            buf = buffer_add(buf, entries(r * batch_size, batch_size))
            # size is traced here: draws must still come only from the filled slots
            draw = buffer_sample(jax.random.fold_in(key, r), buf, 8)
            return buf, (draw.index, size(buf))

        return jax.lax.scan(body, empty(capacity), jnp.arange(rounds))

    buf, (draws, sizes) = fill_and_draw(jax.random.key(2))
    assert np.asarray(sizes).tolist() == [min(batch_size * (r + 1), capacity) for r in range(rounds)]
    draws = np.asarray(draws)
    for r in range(rounds):
        newest = batch_size * (r + 1)
        oldest = max(0, newest - capacity)
        assert np.all((draws[r] >= oldest) & (draws[r] < newest)), (r, draws[r])
    total = rounds * batch_size
    np.testing.assert_array_equal(buffer_ordered(buf).index, np.arange(total - capacity, total))


def test_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        buffer_init(jnp.zeros(2), 0)
    buf = empty(4)
    with pytest.raises(ValueError, match="empty"):
        buffer_sample(jax.random.key(0), buf, 2)
    with pytest.raises(ValueError, match="structure"):
        buffer_add(buf, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="does not match"):
        buffer_add(buf, Entry(jnp.zeros((3, 3)), jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32)))
    with pytest.raises(ValueError, match="different batch sizes"):
        buffer_add(buf, Entry(jnp.zeros((3, 2)), jnp.zeros((2, 2)), jnp.zeros(3, jnp.int32)))
    filled = buffer_add(buf, entries(0, 2))
    with pytest.raises(ValueError, match="without replacement"):
        buffer_sample(jax.random.key(0), filled, 3, replace=False)
    with pytest.raises(ValueError, match="positive integer"):
        buffer_sample(jax.random.key(0), filled, 0)
