"""Optimal-transport metrics: debiased Sinkhorn divergence, exact 1-D W2, Gaussian closed forms.

Cost `c(x, y) = ‖x − y‖²` throughout (so every value here is in SQUARED distance units unless the
key says `w2` without `_squared`).

Sinkhorn divergence (Feydy et al. 2019), via ott-jax:

    S_ε(μ, ν) = OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν),
    OT_ε(μ, ν) = min_π ⟨c, π⟩ + ε KL(π | μ⊗ν),

which is ≥ 0, is 0 iff μ = ν, and tends to W2² as ε → 0. ε is set RELATIVE TO THE COST SCALE OF
THE TARGET, `ε = relative_epsilon · c̄_ref` with `c̄_ref = mean_{j,j'} ‖y_j − y_j'‖² = 2 tr Cov(y)`
over the reference set, so the same ε is used for every method on a target (peers use an
absolute ε = 1e-3, or normalise the cost by its maximum: `docs/targets.md` §8). The ε used is recorded
(`sinkhorn/epsilon`), as is convergence of all the Sinkhorn solves (`sinkhorn/converged`, 1 or 0).

Closed forms for tests: `gaussian_w2_squared` (Bures-Wasserstein) and
`gaussian_sinkhorn_divergence` (Janati, Muzellec, Peyré, Cuturi 2020, "Entropic optimal transport
between unbalanced Gaussian measures has a closed form", Thm. 1 with ε = 2σ²).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ott.tools import sinkhorn_divergence as ott_sinkhorn_divergence

from benchmarks.metrics.base import EvalContext, metric, noise_floor
from samplers.promotion import standard_promotion

__all__ = [
    "SinkhornConfig",
    "SinkhornResult",
    "gaussian_sinkhorn_divergence",
    "gaussian_w2_squared",
    "reference_cost_scale",
    "sinkhorn_divergence",
    "sinkhorn_metrics",
    "w2_exact_1d_metrics",
    "w2_squared_1d",
]


@dataclasses.dataclass(frozen=True)
class SinkhornConfig:
    """Configuration of the Sinkhorn-divergence metric.

    Attributes:
        relative_epsilon: ε as a fraction of the reference cost scale `c̄_ref = 2 tr Cov(ref)`
            (0.05 is ott-jax's default relative ε).
        threshold: ott-jax stopping tolerance on the marginal error of each Sinkhorn solve.
        max_iterations: iteration cap of each solve; hitting it sets `converged = 0`.
        online_above: use ott's online (batched, O(n) memory) cost evaluation when `n·m` exceeds this.
    """

    relative_epsilon: float = 0.05
    threshold: float = 1e-3
    max_iterations: int = 2000
    online_above: int = 25_000_000


class SinkhornResult(NamedTuple):
    """`divergence` S_ε (squared-distance units), the `epsilon` used, and whether all solves converged."""

    divergence: float
    epsilon: float
    converged: bool


def reference_cost_scale(reference) -> float:
    """`c̄ = mean_{j,j'} ‖y_j − y_j'‖² = 2 · mean_j ‖y_j − ȳ‖²` (diagonal included), exactly, in O(m)."""
    y = np.asarray(reference, np.float64)
    return float(2.0 * np.mean(np.sum((y - y.mean(0)) ** 2, axis=1)))


def sinkhorn_divergence(x, y, *, epsilon: float, config: SinkhornConfig = SinkhornConfig()) -> SinkhornResult:
    """Debiased Sinkhorn divergence `S_ε` between the empirical measures of `x (n,d)` and `y (m,d)`.

    Args:
        x, y: samples (uniform weights).
        epsilon: ABSOLUTE entropic regularisation (see `reference_cost_scale` for the relative rule).
        config: solver tolerances.

    Returns:
        `SinkhornResult`; NaN divergence (and `converged=False`) if an input is non-finite.
    """
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))) or not np.isfinite(epsilon):
        return SinkhornResult(np.nan, float(epsilon), False)
    shift = y.mean(0)
    batch = 1024 if x.shape[0] * y.shape[0] > config.online_above else None
    div, out = _sinkdiv(
        x - shift,
        y - shift,
        jnp.float32(epsilon),
        threshold=config.threshold,
        max_iterations=config.max_iterations,
        batch_size=batch,
    )
    converged = bool(all(bool(c) for c in out.converged if c is not None))
    return SinkhornResult(float(div), float(epsilon), converged)


@functools.partial(jax.jit, static_argnames=("threshold", "max_iterations", "batch_size"))
@standard_promotion  # ott's Sinkhorn loop promotes dtypes implicitly inside
def _sinkdiv(x, y, epsilon, *, threshold, max_iterations, batch_size):
    return ott_sinkhorn_divergence.sinkdiv(
        x,
        y,
        epsilon=epsilon,
        batch_size=batch_size,
        solve_kwargs={"threshold": threshold, "max_iterations": max_iterations},
    )


def w2_squared_1d(x, y) -> float:
    """Exact squared 2-Wasserstein distance between two 1-D empirical measures (uniform weights).

    `W2² = ∫_0^1 (F_x^{-1}(u) − F_y^{-1}(u))² du`, evaluated exactly on the merged breakpoints
    `{i/n} ∪ {j/m}` of the two quantile functions (both piecewise constant), in float64. For
    `n = m` this is `mean((sort x − sort y)²)`. Equals POT's `emd2_1d` (squared metric).
    Returns NaN if an input contains NaN, `inf` if it contains ±inf.
    """
    xs = np.sort(np.asarray(x, np.float64).reshape(-1))
    ys = np.sort(np.asarray(y, np.float64).reshape(-1))
    n, m = xs.size, ys.size
    if n == 0 or m == 0:
        raise ValueError("w2_squared_1d needs non-empty samples")
    if np.isnan(xs).any() or np.isnan(ys).any():
        return np.nan
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return np.inf
    if n == m:
        return float(np.mean((xs - ys) ** 2))
    t = np.sort(np.concatenate([np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))
    t_prev = np.concatenate([[0.0], t[:-1]])
    mid = 0.5 * (t + t_prev)
    ix = np.minimum((mid * n).astype(np.int64), n - 1)
    iy = np.minimum((mid * m).astype(np.int64), m - 1)
    return float(np.sum((t - t_prev) * (xs[ix] - ys[iy]) ** 2))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (a + a.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def gaussian_w2_squared(mean1, cov1, mean2, cov2) -> float:
    """`W2²(N(m1,S1), N(m2,S2)) = ‖m1 − m2‖² + tr(S1 + S2 − 2 (S2^½ S1 S2^½)^½)` (float64)."""
    m1, m2 = np.atleast_1d(np.asarray(mean1, np.float64)), np.atleast_1d(np.asarray(mean2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    r2 = _psd_sqrt(s2)
    cross = _psd_sqrt(r2 @ s1 @ r2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross))


def gaussian_sinkhorn_divergence(mean1, cov1, mean2, cov2, epsilon: float) -> float:
    """Closed-form `S_ε(N(a,A), N(b,B))` for cost ‖x − y‖² and regulariser ε KL(π | μ⊗ν).

    With `σ² = ε/2` and `D_{AB} = (4 A^½ B A^½ + σ⁴ I)^½` (Janati et al. 2020, Thm. 1),
    `OT_ε = ‖a−b‖² + tr A + tr B − tr D_{AB} + dσ²(1 − log 2σ²) + σ² log det(D_{AB} + σ² I)`, hence

        S_ε = ‖a−b‖² + ½ tr D_AA + ½ tr D_BB − tr D_AB
              + σ² [log det(D_AB + σ²I) − ½ log det(D_AA + σ²I) − ½ log det(D_BB + σ²I)],

    which tends to `gaussian_w2_squared` as ε → 0 and equals ‖a − b‖² when A = B.
    """
    a, b = np.atleast_1d(np.asarray(mean1, np.float64)), np.atleast_1d(np.asarray(mean2, np.float64))
    big_a, big_b = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = a.size
    s2 = epsilon / 2.0
    eye = np.eye(d)

    def terms(p, q):
        rp = _psd_sqrt(p)
        dm = _psd_sqrt(4.0 * rp @ q @ rp + s2**2 * eye)
        return np.trace(dm), np.linalg.slogdet(dm + s2 * eye)[1]

    tr_ab, ld_ab = terms(big_a, big_b)
    tr_aa, ld_aa = terms(big_a, big_a)
    tr_bb, ld_bb = terms(big_b, big_b)
    return float(
        np.sum((a - b) ** 2) + 0.5 * tr_aa + 0.5 * tr_bb - tr_ab + s2 * (ld_ab - 0.5 * ld_aa - 0.5 * ld_bb)
    )


def sinkhorn_metrics(ctx: EvalContext, config: SinkhornConfig = SinkhornConfig()) -> dict[str, float]:
    """`sinkhorn/divergence`, `sinkhorn/divergence/noise_floor`, `sinkhorn/epsilon`, `sinkhorn/converged`."""
    epsilon = config.relative_epsilon * reference_cost_scale(ctx.reference)
    model = sinkhorn_divergence(ctx.x, ctx.reference, epsilon=epsilon, config=config)
    floor = noise_floor(sinkhorn_divergence, ctx.reference2, ctx.reference, epsilon=epsilon, config=config)
    return {
        "sinkhorn/divergence": model.divergence,
        "sinkhorn/divergence/noise_floor": floor.divergence,
        "sinkhorn/epsilon": epsilon,
        "sinkhorn/converged": float(model.converged and floor.converged),
    }


def w2_exact_1d_metrics(ctx: EvalContext) -> dict[str, float]:
    """`w2_exact_1d/w2`, `w2_exact_1d/w2_squared` and their noise floors (1-D targets only)."""
    model = w2_squared_1d(ctx.x, ctx.reference)
    floor = w2_squared_1d(ctx.reference2, ctx.reference)
    return {
        "w2_exact_1d/w2": float(np.sqrt(model)),
        "w2_exact_1d/w2_squared": model,
        "w2_exact_1d/w2/noise_floor": float(np.sqrt(floor)),
        "w2_exact_1d/w2_squared/noise_floor": floor,
    }


ENTRIES = (
    metric(
        "sinkhorn",
        sinkhorn_metrics,
        requires=("reference", "reference2"),
        description="debiased Sinkhorn divergence, cost ‖x−y‖², ε = 0.05 · 2 tr Cov(reference)",
    ),
    metric(
        "w2_exact_1d",
        w2_exact_1d_metrics,
        requires=("dim1", "reference", "reference2"),
        description="exact W2 (and W2²) between 1-D empirical measures",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
