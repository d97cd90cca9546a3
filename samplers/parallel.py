"""Data parallelism over the local devices: shard the particle batch, replicate the parameters.

One job (one benchmark cell) uses every local device through `jax.sharding`, with no change to the
methods' maths. The mesh is 1-D, `Mesh(devices, ("batch",))`, and

- the particle batch (the `n` paths a method simulates inside `step` or `sample`, the samples and
  reference sets of the O(B²) metrics) is split along its leading axis: device `d` holds rows
  `d·n/D … (d+1)·n/D − 1`;
- the method state (network parameters, optimiser state, cost counters) is replicated;
- every reduction over the batch (a loss mean, `LSE(log w)`, a kernel row sum) becomes a local
  partial reduction plus an all-reduce inserted by the compiler (GSPMD), and the parameter
  gradients, being such reductions, are all-reduced likewise: this is data-parallel SGD with the
  same global batch.

How: the batch is drawn INSIDE the jitted `step` from a key, so there is no host-side batch to
`device_put`. The places that create a batch (the initial draw and the Brownian increments of the
SDE integrators, `samplers.sde`, `samplers.methods.cmcd`, `samplers.methods.nets`, and the
particles / chains of the baselines) call `shard_batch(x)`, a `jax.lax.with_sharding_constraint`
to `P("batch")`; the compiler propagates that sharding through the vmapped network and energy
evaluations, so each device evaluates only its rows. `samplers.train` replicates the state and
constrains the chunk's output state to be replicated.

Identical results: JAX's `threefry` generator is partitionable (`jax_threefry_partitionable`, the
default since JAX 0.5), so `jax.random.normal(key, (n, d))` yields the same numbers whether the
output is sharded or not; only the order of floating-point summation in reductions changes (a
relative difference of order 1e-6 in float32). Same seed, same global batch: the same result on 1
and on D devices up to float tolerance (`tests/samplers/test_parallel.py` checks it on 4 virtual
CPU devices).

Selection: `active_mesh()` is, unless overridden with `use_mesh(...)`, a mesh over ALL local
devices when there are more than one and `None` (no constraints at all: the single-device
program) otherwise. `TILTBENCH_DATA_PARALLEL=0` in the environment switches the default off. A
batch axis that the device count does not divide is left unsharded (JAX refuses uneven shardings),
which is correct but not distributed: choose batch sizes divisible by the device count.

Caveat: the constraint is read when a function is TRACED. A function jitted and traced before a
`use_mesh` change keeps its old program if its argument shardings do not change; `samplers.train`
and the runner build a fresh `jax.jit` per call, so they always follow the active mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXIS",
    "active_mesh",
    "batch_sharding",
    "default_mesh",
    "make_mesh",
    "num_shards",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "use_mesh",
]

BATCH_AXIS = "batch"
_AUTO = "auto"
_MESH: contextvars.ContextVar[Any] = contextvars.ContextVar("tiltbench_mesh", default=_AUTO)


def make_mesh(devices: Sequence[jax.Device] | int | None = None) -> Mesh:
    """A 1-D mesh with axis `"batch"` over `devices` (a list, a count of local devices, or all local ones)."""
    local = jax.local_devices()
    if devices is None:
        devices = local
    elif isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(f"asked for {devices} devices; this process has {len(local)} local device(s)")
        devices = local[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("a mesh needs at least one device")
    return jax.make_mesh((len(devices),), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


@functools.cache
def default_mesh() -> Mesh | None:
    """All local devices when there are several (and `TILTBENCH_DATA_PARALLEL` is not `0`), else None."""
    if os.environ.get("TILTBENCH_DATA_PARALLEL", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    return make_mesh() if jax.local_device_count() > 1 else None


def active_mesh() -> Mesh | None:
    """The mesh batches are sharded over now (`use_mesh`), or `default_mesh()`; None: no sharding."""
    mesh = _MESH.get()
    return default_mesh() if mesh is _AUTO else mesh


@contextlib.contextmanager
def use_mesh(mesh: Mesh | int | str | None = _AUTO) -> Iterator[Mesh | None]:
    """Run a block with batches sharded over `mesh`.

    Args:
        mesh: a `Mesh` with a `"batch"` axis; an int (the first that many local devices; 1 means no
            sharding); `"auto"` (`default_mesh()`); or None (no sharding: the single-device program).

    Yields:
        The mesh now active (or None).
    """
    if isinstance(mesh, str):
        if mesh != _AUTO:
            raise ValueError(f"use_mesh takes a Mesh, an int, None or 'auto'; got {mesh!r}")
        resolved = default_mesh()
    elif isinstance(mesh, int):
        resolved = None if mesh == 1 else make_mesh(mesh)
    else:
        resolved = mesh
    if resolved is not None and BATCH_AXIS not in resolved.axis_names:
        raise ValueError(f"the mesh needs an axis named {BATCH_AXIS!r}; it has {resolved.axis_names}")
    if resolved is not None and resolved.size == 1:
        resolved = None
    token = _MESH.set(resolved)
    try:
        yield resolved
    finally:
        _MESH.reset(token)


def num_shards() -> int:
    """Number of devices the batch is split over now (1 without a mesh)."""
    mesh = active_mesh()
    return 1 if mesh is None else int(mesh.shape[BATCH_AXIS])


def batch_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """`NamedSharding` splitting axis `axis` of an `ndim`-array over `"batch"`, the rest replicated."""
    spec = [None] * ndim
    spec[axis] = BATCH_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """`NamedSharding` holding a full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def shard_batch(x: Any, axis: int = 0) -> Any:
    """Split axis `axis` of `x` (an array or a PyTree of arrays) over the active mesh.

    Inside `jit` this is `with_sharding_constraint`; outside, a `device_put`. A no-op without a
    mesh, for scalars, and for leaves whose axis the device count does not divide. Key arrays
    (`jax.random.split(key, n)`) shard like any other array.
    """
    mesh = active_mesh()
    if mesh is None:
        return x
    size = mesh.shape[BATCH_AXIS]

    def one(leaf):
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) <= axis or shape[axis] % size != 0:
            return leaf
        sharding = batch_sharding(mesh, len(shape), axis)
        if _is_tracer(leaf):
            return jax.lax.with_sharding_constraint(leaf, sharding)
        return jax.device_put(leaf, sharding)

    return jax.tree.map(one, x)


def replicate(tree: Any) -> Any:
    """A full copy of every array leaf of `tree` on each device of the active mesh (no-op without one)."""
    mesh = active_mesh()
    if mesh is None:
        return tree
    sharding = replicated_sharding(mesh)

    def one(leaf):
        if not hasattr(leaf, "shape"):
            return leaf
        if _is_tracer(leaf):
            return jax.lax.with_sharding_constraint(leaf, sharding)
        return jax.device_put(leaf, sharding)

    return jax.tree.map(one, tree)
