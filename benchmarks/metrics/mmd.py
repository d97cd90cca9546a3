"""Maximum mean discrepancy with Gaussian kernels: the UNBIASED estimator of MMD², never its root.

For samples `x_1..x_n ~ P`, `y_1..y_m ~ Q` and a kernel `k`,

    MMD²_u = 1/(n(n−1)) Σ_{i≠i'} k(x_i, x_i') + 1/(m(m−1)) Σ_{j≠j'} k(y_j, y_j') − 2/(nm) Σ_{i,j} k(x_i, y_j),

an unbiased U-statistic of `MMD²(P, Q) = ‖μ_P − μ_Q‖²_H` (so it can be negative; its square root is
not reported because `sqrt` of an unbiased estimate is biased and undefined below 0). Peers differ
here (`docs/targets.md` §8): Beyond-ELBOs reports sqrt of the diagonal-including
(V-statistic) estimate, whose floor is ≈ 0.03 at N = 2000; DEM sums five fixed-bandwidth kernels.

Kernel `k(x, y) = mean_b exp(−‖x − y‖² / (2 ℓ_b²))` with two named bandwidth rules:
- `mmd2/rbf_median`: one bandwidth `ℓ` = median pairwise Euclidean distance of the POOLED set
  `x ∪ y` (median heuristic, as in Beyond-ELBOs / mmdfuse). It adapts to the model's samples, so
  values are comparable only at equal sample sizes and similar spreads.
- `mmd2/rbf_multi`: five bandwidths `ℓ_b = c_b · ℓ_ref`, `c = (0.25, 0.5, 1, 2, 4)`, with `ℓ_ref`
  the median pairwise distance WITHIN the reference set: the kernel depends on the target only,
  so values are comparable across methods.
Medians are computed on at most `median_max_points` rows (evenly strided) to bound memory.

Standard error: the two-sample jackknife (delete one `x` or one `y`), computed exactly in O(1)
per deletion from the kernel row sums. By the Efron-Stein inequality it is conservative in
expectation; when `P = Q` the estimator is degenerate and the jackknife overestimates the SD by
about √2. Kernel sums are accumulated over row blocks (`block_size` rows at a time), so memory is
O(block_size · m), e.g. a few MB for n = m = 2000 in dim 165. With several devices
(`samplers.parallel`) the m columns of each block are split over them and the row sums all-reduced;
the median-distance sort runs unsharded (at most `median_max_points` rows).

Each value is reported beside its noise floor: the same estimator between `reference` and
`reference2` (it fluctuates around 0; compare a model's value with the floor's magnitude and SE).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.metrics.base import EvalContext, metric, noise_floor
from samplers.parallel import shard_batch

__all__ = [
    "MMDConfig",
    "MMDEstimate",
    "median_distance",
    "mmd2_multi",
    "mmd2_median",
    "mmd2_unbiased",
    "rbf_median_metrics",
    "rbf_multi_metrics",
]


@dataclasses.dataclass(frozen=True)
class MMDConfig:
    """Configuration of the MMD metrics.

    Attributes:
        multipliers: bandwidth multipliers `c_b` of the multi-bandwidth kernel (times `ℓ_ref`).
        median_max_points: at most this many rows enter a median-distance computation.
        block_size: rows per block when accumulating kernel sums (memory O(block_size · m)).
    """

    multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    median_max_points: int = 1000
    block_size: int = 256


class MMDEstimate(NamedTuple):
    """Unbiased MMD² with its jackknife standard error and the bandwidths `ℓ_b` used."""

    mmd2: float
    se: float
    bandwidths: tuple[float, ...]


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """`‖a_i − b_j‖²` by the Gram expansion, clipped at 0 (inputs are centred by the caller)."""
    d2 = jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(d2, 0.0)


def _kernel_sums(a: jax.Array, b: jax.Array, gammas: jax.Array, *, block_size: int, same: bool):
    """Row sums `Σ_j k(a_i, b_j)` and column sums `Σ_i k(a_i, b_j)` of the kernel matrix.

    `k = mean_b exp(−γ_b d²)`; with `same=True` (a is b) the diagonal `i = j` is excluded.
    """
    n = a.shape[0]
    b = shard_batch(b)  # columns split over the devices (samplers.parallel); row sums all-reduced
    num_blocks = -(-n // block_size)
    pad = num_blocks * block_size - n
    a_blocks = jnp.pad(a, ((0, pad), (0, 0))).reshape(num_blocks, block_size, a.shape[1])
    cols = jnp.arange(b.shape[0])

    def body(col_sums, inputs):
        block, index = inputs
        rows = index * block_size + jnp.arange(block_size)
        d2 = _sq_dists(block, b)
        k = jnp.mean(jnp.exp(-gammas[:, None, None] * d2[None]), axis=0)
        mask = (rows < n)[:, None]
        if same:
            mask = mask & (rows[:, None] != cols[None, :])
        k = jnp.where(mask, k, 0.0)
        return col_sums + k.sum(0), k.sum(1)

    init = jnp.zeros(b.shape[0], a.dtype)
    col_sums, row_sums = jax.lax.scan(body, init, (a_blocks, jnp.arange(num_blocks)))
    return row_sums.reshape(-1)[:n], col_sums


@functools.partial(jax.jit, static_argnames=("block_size",))
def _mmd_row_sums(x: jax.Array, y: jax.Array, gammas: jax.Array, *, block_size: int):
    """Off-diagonal row sums of K_xx and K_yy, and row / column sums of K_xy (one compiled call)."""
    r_xx, _ = _kernel_sums(x, x, gammas, block_size=block_size, same=True)
    r_yy, _ = _kernel_sums(y, y, gammas, block_size=block_size, same=True)
    c_xy, d_xy = _kernel_sums(x, y, gammas, block_size=block_size, same=False)
    return r_xx, r_yy, c_xy, d_xy


def _strided_rows(a: np.ndarray | jax.Array, max_rows: int) -> jax.Array:
    a = jnp.asarray(a)
    if a.shape[0] <= max_rows:
        return a
    idx = np.linspace(0, a.shape[0] - 1, max_rows).round().astype(int)
    return a[idx]


@jax.jit
def _median_sq_dist(z: jax.Array) -> jax.Array:
    # The off-diagonal entries hold every pair twice, which leaves the median unchanged; the n
    # diagonal entries are set to -1 so that they sort first and are skipped.
    n = z.shape[0]
    z = z - z.mean(0)
    d2 = jnp.where(jnp.eye(n, dtype=bool), -1.0, _sq_dists(z, z))
    flat = jnp.sort(d2.reshape(-1))
    count = n * n - n
    return 0.5 * (flat[n + (count - 1) // 2] + flat[n + count // 2])


def median_distance(z: jax.Array, *, max_points: int = 1000) -> float:
    """Median of the pairwise Euclidean distances `‖z_i − z_j‖`, `i < j` (strided rows if large)."""
    z = _strided_rows(z, max_points)
    if z.shape[0] < 2:
        raise ValueError("the median distance needs at least 2 points")
    return float(jnp.sqrt(_median_sq_dist(z)))


def mmd2_unbiased(x: jax.Array, y: jax.Array, bandwidths, *, block_size: int = 256) -> MMDEstimate:
    """Unbiased MMD² between samples `x (n, d)` and `y (m, d)` for `k = mean_b exp(−‖·‖²/(2ℓ_b²))`.

    Args:
        x, y: samples (n, m ≥ 4 for the jackknife).
        bandwidths: the `ℓ_b` (one or several, > 0).
        block_size: rows per block of kernel evaluations.

    Returns:
        `MMDEstimate(mmd2, se, bandwidths)`; NaN if an input is non-finite.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    n, m = x.shape[0], y.shape[0]
    if n < 4 or m < 4:
        raise ValueError(f"the unbiased MMD² and its jackknife need ≥ 4 samples per set, got {n} and {m}")
    bandwidths = tuple(float(b) for b in np.atleast_1d(bandwidths))
    if not (all(np.isfinite(bandwidths)) and all(b > 0 for b in bandwidths)):
        return MMDEstimate(np.nan, np.nan, bandwidths)
    if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
        return MMDEstimate(np.nan, np.nan, bandwidths)
    shift = y.mean(0)  # translation invariance: centring reduces cancellation in the Gram expansion
    x, y = x - shift, y - shift
    gammas = jnp.asarray([0.5 / b**2 for b in bandwidths], x.dtype)
    sums = _mmd_row_sums(shard_batch(x), shard_batch(y), gammas, block_size=block_size)
    r_xx, r_yy, c_xy, d_xy = (np.asarray(v, np.float64) for v in sums)
    s_xx, s_yy, s_xy = r_xx.sum(), r_yy.sum(), c_xy.sum()
    value = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / (n * m)
    # leave-one-out statistics, exactly, from the row sums
    loo_x = (s_xx - 2 * r_xx) / ((n - 1) * (n - 2)) + s_yy / (m * (m - 1)) - 2 * (s_xy - c_xy) / ((n - 1) * m)
    loo_y = s_xx / (n * (n - 1)) + (s_yy - 2 * r_yy) / ((m - 1) * (m - 2)) - 2 * (s_xy - d_xy) / (n * (m - 1))
    var = (n - 1) / n * np.sum((loo_x - loo_x.mean()) ** 2) + (m - 1) / m * np.sum(
        (loo_y - loo_y.mean()) ** 2
    )
    return MMDEstimate(float(value), float(np.sqrt(var)), bandwidths)


def mmd2_median(x: jax.Array, y: jax.Array, config: MMDConfig = MMDConfig()) -> MMDEstimate:
    """Unbiased MMD² with one Gaussian kernel, bandwidth = median distance of the pooled `x ∪ y`."""
    half = config.median_max_points // 2
    pooled = jnp.concatenate([_strided_rows(x, half), _strided_rows(y, half)])
    if not bool(jnp.all(jnp.isfinite(pooled))):
        return MMDEstimate(np.nan, np.nan, (np.nan,))
    bandwidth = median_distance(pooled, max_points=config.median_max_points)
    return mmd2_unbiased(x, y, (bandwidth,), block_size=config.block_size)


def mmd2_multi(x: jax.Array, y: jax.Array, scale: float, config: MMDConfig = MMDConfig()) -> MMDEstimate:
    """Unbiased MMD² with the mean of Gaussian kernels at bandwidths `c_b · scale`."""
    return mmd2_unbiased(x, y, tuple(c * scale for c in config.multipliers), block_size=config.block_size)


def rbf_median_metrics(ctx: EvalContext, config: MMDConfig = MMDConfig()) -> dict[str, float]:
    """`mmd2/rbf_median` (+ `/se`, `/bandwidth`, `/noise_floor`, `/noise_floor_se`)."""
    model = mmd2_median(ctx.x, ctx.reference, config)
    floor = noise_floor(mmd2_median, ctx.reference2, ctx.reference, config)
    return {
        "mmd2/rbf_median": model.mmd2,
        "mmd2/rbf_median/se": model.se,
        "mmd2/rbf_median/bandwidth": model.bandwidths[0],
        "mmd2/rbf_median/noise_floor": floor.mmd2,
        "mmd2/rbf_median/noise_floor_se": floor.se,
    }


def rbf_multi_metrics(ctx: EvalContext, config: MMDConfig = MMDConfig()) -> dict[str, float]:
    """`mmd2/rbf_multi` (+ `/se`, `/scale` = ℓ_ref, `/noise_floor`, `/noise_floor_se`)."""
    scale = median_distance(ctx.reference, max_points=config.median_max_points)
    model = mmd2_multi(ctx.x, ctx.reference, scale, config)
    floor = noise_floor(mmd2_multi, ctx.reference2, ctx.reference, scale, config)
    return {
        "mmd2/rbf_multi": model.mmd2,
        "mmd2/rbf_multi/se": model.se,
        "mmd2/rbf_multi/scale": scale,
        "mmd2/rbf_multi/noise_floor": floor.mmd2,
        "mmd2/rbf_multi/noise_floor_se": floor.se,
    }


ENTRIES = (
    metric(
        "mmd_rbf_median",
        rbf_median_metrics,
        requires=("reference", "reference2"),
        description="unbiased MMD² (not its root), Gaussian kernel, median bandwidth of x ∪ y",
    ),
    metric(
        "mmd_rbf_multi",
        rbf_multi_metrics,
        requires=("reference", "reference2"),
        description="unbiased MMD², mean Gaussian kernel at (0.25..4)× the reference median distance",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
