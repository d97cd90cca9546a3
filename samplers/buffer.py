"""A fixed-capacity FIFO replay buffer of PyTrees: NamedTuple state plus pure, jittable functions.

Used by Adjoint Sampling (`docs/methods.md` §3.3: keep the last `buffer_size`
`(x0, x1, ∇E(x1))` triples, train on minibatches drawn from them) and by other score-matching
losses that reuse expensive energy evaluations.

An entry is any PyTree of arrays (e.g. a NamedTuple `(x1, grad)`); the buffer stores each leaf
with a leading axis of length `capacity`. Writes go to slots `position, position + 1, …`
(mod `capacity`), so once the buffer is full every new entry overwrites the oldest one. The
capacity and the batch sizes are static (array shapes), positions and sizes are traced int32
scalars, so `buffer_add` and `buffer_sample` work inside `jit` and `lax.scan`.

    >>> import jax, jax.numpy as jnp
    >>> buf = buffer_init(jnp.zeros(2), capacity=4)
    >>> buf = buffer_add(buf, jnp.arange(12.0).reshape(6, 2))   # 6 entries into 4 slots
    >>> int(size(buf)), buf.data[:, 0].tolist()                  # entries 2..5 kept
    (4, [8.0, 10.0, 4.0, 6.0])
    >>> buffer_sample(jax.random.key(0), buf, 3).shape
    (3, 2)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplers.types import PyTree

__all__ = [
    "BufferState",
    "buffer_add",
    "buffer_capacity",
    "buffer_init",
    "buffer_ordered",
    "buffer_sample",
    "size",
]


class BufferState(NamedTuple):
    """State of a FIFO replay buffer.

    Attributes:
        data: the entries, a PyTree whose leaves have shape `(capacity, *entry_shape)`; slots
            `>= size` hold zeros (never sampled).
        position: int32 `()`, the slot the next entry is written to (the oldest entry's slot
            once the buffer is full).
        size: int32 `()`, number of filled slots, `min(entries added, capacity)`.
    """

    data: PyTree
    position: jax.Array
    size: jax.Array


def buffer_init(example: PyTree, capacity: int) -> BufferState:
    """An empty buffer for entries shaped like `example` (ONE entry, no batch axis).

    Args:
        example: a PyTree of arrays with the shape and dtype of one entry (values are ignored).
        capacity: maximum number of entries (positive).

    Returns:
        A `BufferState` with zeroed storage, `position = size = 0`.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    leaves = jax.tree.leaves(example)
    if not leaves:
        raise ValueError("buffer_init needs an example entry with at least one array leaf")
    data = jax.tree.map(lambda leaf: jnp.zeros((capacity, *jnp.shape(leaf)), jnp.result_type(leaf)), example)
    return BufferState(data=data, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def buffer_capacity(buf: BufferState) -> int:
    """The (static) capacity of the buffer."""
    return jax.tree.leaves(buf.data)[0].shape[0]


def size(buf: BufferState) -> jax.Array:
    """Number of filled entries, int32 `()`."""
    return buf.size


def buffer_add(buf: BufferState, batch: PyTree) -> BufferState:
    """Append a batch of entries, overwriting the oldest ones once full (FIFO).

    Entry `i` of the batch goes to slot `(position + i) mod capacity`. When the batch is larger
    than the capacity only its last `capacity` entries are kept (as if added one by one).

    Args:
        buf: the buffer.
        batch: a PyTree with the buffer's structure whose leaves have shape
            `(batch_size, *entry_shape)`; `batch_size` is the same for every leaf. Leaves are cast
            to the buffer's dtypes.

    Returns:
        The updated buffer (`position ← (position + batch_size) mod capacity`,
        `size ← min(size + batch_size, capacity)`).
    """
    cap = buffer_capacity(buf)
    batch_leaves, batch_def = jax.tree.flatten(batch)
    data_leaves, data_def = jax.tree.flatten(buf.data)
    if batch_def != data_def:
        raise ValueError(f"buffer_add: batch structure {batch_def} does not match the buffer's {data_def}")
    batch_size = None
    for leaf, stored in zip(batch_leaves, data_leaves, strict=True):
        shape = jnp.shape(leaf)
        if len(shape) != stored.ndim or shape[1:] != stored.shape[1:]:
            raise ValueError(
                f"buffer_add: batch leaf of shape {shape} does not match entries of shape {stored.shape[1:]} "
                "with a leading batch axis"
            )
        if batch_size is None:
            batch_size = shape[0]
        elif shape[0] != batch_size:
            raise ValueError(f"buffer_add: leaves have different batch sizes {batch_size} and {shape[0]}")
    if batch_size == 0:
        return buf
    kept = min(batch_size, cap)
    # Writing only the last `kept` entries avoids duplicate scatter indices (whose order is unspecified).
    first_slot = buf.position + (batch_size - kept)
    slots = (first_slot + jnp.arange(kept, dtype=jnp.int32)) % cap
    new_leaves = [
        stored.at[slots].set(jnp.asarray(leaf)[batch_size - kept :].astype(stored.dtype))
        for leaf, stored in zip(batch_leaves, data_leaves, strict=True)
    ]
    return BufferState(
        data=jax.tree.unflatten(data_def, new_leaves),
        position=((buf.position + batch_size) % cap).astype(jnp.int32),
        size=jnp.minimum(buf.size + batch_size, cap).astype(jnp.int32),
    )


def buffer_sample(key: jax.Array, buf: BufferState, num_samples: int, *, replace: bool = True) -> PyTree:
    """Draw `num_samples` entries uniformly from the filled slots.

    With `replace=True` indices are i.i.d. uniform on the filled slots `{0, …, size - 1}`; with
    `replace=False` they are a uniformly random subset of them, which needs
    `num_samples <= size`: checked when `size` is concrete; under `jit`, the surplus entries
    would come from unfilled (zero) slots.

    Sampling an empty buffer is an error outside `jit`; under `jit` (where it cannot be
    checked) it returns the zero-filled slot 0.

    Args:
        key: PRNG key.
        buf: the buffer.
        num_samples: number of entries (static).
        replace: sample with or without replacement.

    Returns:
        A PyTree like one batch: leaves of shape `(num_samples, *entry_shape)`.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    cap = buffer_capacity(buf)
    if not isinstance(buf.size, jax.core.Tracer):
        filled = int(buf.size)
        if filled == 0:
            raise ValueError("buffer_sample: the buffer is empty; add entries first")
        if not replace and num_samples > filled:
            raise ValueError(
                f"buffer_sample: {num_samples} entries without replacement from a buffer of {filled}"
            )
    if replace:
        indices = jax.random.randint(key, (num_samples,), 0, jnp.maximum(buf.size, 1))
    else:
        if num_samples > cap:
            raise ValueError(f"buffer_sample: {num_samples} entries without replacement from capacity {cap}")
        # Uniform random order of the filled slots (Gumbel top-k on a mask): the first entries are
        # a uniform random subset of the filled slots.
        scores = jax.random.uniform(key, (cap,))
        scores = jnp.where(jnp.arange(cap) < buf.size, scores, -1.0)
        indices = jax.lax.top_k(scores, num_samples)[1]
    return jax.tree.map(lambda leaf: leaf[indices], buf.data)


def buffer_ordered(buf: BufferState) -> PyTree:
    """The storage rolled so that entries run from oldest to newest (filled entries first).

    Entry `i < size` of the result is the `i`-th oldest entry still held; the remaining
    `capacity - size` rows are the unfilled (zero) slots. Jittable.
    """
    cap = buffer_capacity(buf)
    oldest = jnp.where(buf.size < cap, 0, buf.position)
    order = (oldest + jnp.arange(cap)) % cap
    return jax.tree.map(lambda leaf: leaf[order], buf.data)
