"""FLOP counts of the control networks and the machine's float32 matmul peak.

- `matmul_peak(n)`: FLOP/s of a jitted `(n, n) @ (n, n)` float32 matmul (`2n³` FLOPs), the best of
  a few calls: the practical ceiling of dense float32 arithmetic on this device, measured in the
  same process as the throughputs it normalises.
- `network_flops(net, params, batch)`: FLOPs of ONE evaluation `u_θ(x, t)`, from XLA's own count
  (`jax.jit(vmap(apply)).lower(...).compile().cost_analysis()["flops"]` divided by the batch) when
  the backend reports it; otherwise counted analytically as `Σ 2·fan_in·fan_out` over the dense
  kernels in `params` (multiply-adds of the matmuls only; activations, the EGNN message sums and
  any `∇log γ` feature are not counted). The record says which (`source`).
- `network_train_flops(net, params, batch)`: FLOPs of ONE forward + backward pass (the gradient in the
  parameters of the summed output, one time per example, as in a regression loss), from XLA's count
  the same way; otherwise 3× the analytic forward count.
- `program_flops(fn, *args)`: XLA's FLOP count of the lowered (not yet optimised) program
  `jit(fn)(*args)`, no compilation: a deterministic count of the arithmetic two programs ask for,
  to set beside their timed ratio (a loop body counts once, whatever its trip count).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["analytic_flops", "matmul_peak", "network_flops", "network_train_flops", "program_flops"]


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """`{"flops_per_s", "n", "seconds"}` of the fastest of `repeats` float32 `(n, n) @ (n, n)` matmuls."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a, b))
        best = min(best, time.perf_counter() - start)
    return {"flops_per_s": 2.0 * n**3 / best, "n": n, "seconds": best}


def analytic_flops(params: Any) -> float:
    """`Σ 2·fan_in·fan_out` over every 2-D `kernel` leaf of a flax parameter tree."""
    total = 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if getattr(path[-1], "key", None) == "kernel" and jnp.ndim(leaf) == 2:
            total += 2.0 * leaf.shape[0] * leaf.shape[1]
    return total


def _flops_of(analysis) -> float | None:
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and analysis.get("flops", 0) > 0 else None


def program_flops(fn, *args) -> float | None:
    """XLA's FLOP count of the lowered `jit(fn)(*args)` (no compilation), or None where there is none."""
    try:
        return _flops_of(jax.jit(fn).lower(*args).cost_analysis())
    except Exception:  # noqa: BLE001 - some backends do not implement cost_analysis
        return None


def _xla_flops(fn, *args) -> float | None:
    """XLA's FLOP count of the compiled `jit(fn)(*args)`, or None where the backend gives none."""
    try:
        return _flops_of(jax.jit(fn).lower(*args).compile().cost_analysis())
    except Exception:  # noqa: BLE001 - some backends do not implement cost_analysis
        return None


def network_flops(apply, params: Any, dim: int, batch: int = 256) -> dict[str, Any]:
    """FLOPs of one network evaluation: `{"flops": float, "source": "xla cost_analysis" | "analytic"}`."""
    x = jnp.zeros((batch, dim), jnp.float32)
    t = jnp.full((), 0.5, jnp.float32)
    flops = _xla_flops(jax.vmap(apply, in_axes=(None, 0, None)), params, x, t)
    if flops is not None:
        return {"flops": flops / batch, "source": "xla cost_analysis"}
    return {"flops": analytic_flops(params), "source": "analytic (dense kernels)"}


def network_train_flops(apply, params: Any, dim: int, batch: int = 256) -> dict[str, Any]:
    """FLOPs of one forward + backward pass of one example (`∇_θ Σ u_θ(x_i, t_i)`, a time per example):
    `{"flops", "source"}`; analytic fallback: 3× the dense kernels' forward count."""
    x = jnp.zeros((batch, dim), jnp.float32)
    t = jnp.full((batch,), 0.5, jnp.float32)
    grad = jax.grad(lambda p, x, t: jnp.sum(jax.vmap(apply, in_axes=(None, 0, 0))(p, x, t)))
    flops = _xla_flops(grad, params, x, t)
    if flops is not None:
        return {"flops": flops / batch, "source": "xla cost_analysis"}
    return {"flops": 3.0 * analytic_flops(params), "source": "analytic (dense kernels, 3x forward)"}
