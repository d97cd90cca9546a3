"""FAB many-well: `d/2` independent copies of the 2-D double well of Boltzmann generators.

The 2-D energy (Noé et al. 2019; bgflow `DoubleWellEnergy`, fab-jax `targets/many_well.py` with
`a = -0.5, b = -6, c = 1`) is `E(x₁, x₂) = a x₁ + b x₁² + c x₁⁴ + ½ x₂²`, so with 0-based pairs
`(x_{2i}, x_{2i+1})`

    log p̃(x) = Σ_{i=0}^{d/2-1} [ -x_{2i}⁴ + 6 x_{2i}² + ½ x_{2i} - ½ x_{2i+1}² ]      (unnormalised),
    log Z    = (d/2) · (log Z₁ + ½ log 2π),     Z₁ = ∫ exp(-x⁴ + 6x² + x/2) dx.

`Z₁` is computed here by adaptive quadrature (`scipy.integrate.quad`, float64) once per process;
`targets.md` §3.1 gives log Z₁ + ½ log 2π = 10.2934797070739 per 2-D block and
log Z = 164.6956753 for d = 32. The x₁ factor has a shallow well at -1.7108, a deep one at
+1.7525 (mass 0.8443071) and a saddle at -0.0417; the d-dimensional target has 2^{d/2} modes.

Exact samples: the double-well coordinates by inverse CDF on a fine float64 grid over
[-3.5, 3.5] (the mass outside is below e⁻⁸⁰), tabulated once and inverted with `jnp.interp`
(jittable), and `N(0, 1)` for the others.

Registered: `many_well8`, `many_well16`, `many_well32` (the FAB benchmark), `many_well64`;
`make_many_well(dim)` builds any even dimension.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate

from targets.base import Target, entry

__all__ = ["DoubleWellQuadrature", "double_well_log_density", "double_well_quadrature", "make_many_well"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

GRID_BOUND = 3.5
"""Inverse-CDF table support [-3.5, 3.5]: exp(-x⁴ + 6x² + x/2) < e^{-80} · max outside it."""
GRID_SIZE = 2**14 + 1
"""Table nodes (spacing 4.3e-4): the piecewise-uniform inverse-CDF density is off by O(h²) ≈ 1e-7."""


def double_well_log_density(x):
    """`-x⁴ + 6x² + x/2`, the unnormalised log density of one double-well coordinate (NumPy or JAX)."""
    return -(x**4) + 6.0 * x**2 + 0.5 * x


class DoubleWellQuadrature(NamedTuple):
    """Float64 facts about the 1-D factor `exp(-x⁴ + 6x² + x/2)`, all by quadrature.

    Attributes:
        log_Z1: `log ∫ exp(-x⁴ + 6x² + x/2) dx` (≈ 9.37454117387).
        mean: `E[x₁]` (≈ 1.1879610).
        second_moment: `E[x₁²]` (≈ 2.9598061).
        prob_deep: `P(x₁ > 0)`, the mass of the deep well (≈ 0.8443071).
        deep_mode: maximiser of the factor, root of `-4x³ + 12x + ½` (≈ 1.7525).
        grid: `(GRID_SIZE,)` nodes on [-3.5, 3.5] of the inverse-CDF table.
        cdf: `(GRID_SIZE,)` trapezoid CDF at the nodes, from 0 to 1.
    """

    log_Z1: float
    mean: float
    second_moment: float
    prob_deep: float
    deep_mode: float
    grid: np.ndarray
    cdf: np.ndarray


@functools.lru_cache(maxsize=1)
def double_well_quadrature() -> DoubleWellQuadrature:
    """Compute (once) the normaliser, moments and inverse-CDF table of the double-well factor."""
    critical_points = np.sort(np.roots([-4.0, 0.0, 12.0, 0.5]).real)  # d/dx (-x⁴ + 6x² + x/2) = 0
    deep_mode = float(critical_points[-1])
    log_peak = float(double_well_log_density(deep_mode))

    def integrate(moment: int, lower: float = -np.inf) -> float:
        integrand = lambda x: x**moment * math.exp(double_well_log_density(x) - log_peak)
        pieces = [(lower, -1.7), (-1.7, 0.0), (0.0, 1.75), (1.75, np.inf)]  # split at the wells
        total = 0.0
        for a, b in pieces:
            if b <= lower:
                continue
            value, _ = scipy.integrate.quad(integrand, max(a, lower), b, epsabs=0.0, epsrel=1e-13, limit=200)
            total += value
        return total

    mass = integrate(0)
    grid = np.linspace(-GRID_BOUND, GRID_BOUND, GRID_SIZE)
    density = np.exp(double_well_log_density(grid) - log_peak)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    grid.setflags(write=False)
    cdf.setflags(write=False)
    return DoubleWellQuadrature(
        log_Z1=log_peak + math.log(mass),
        mean=integrate(1) / mass,
        second_moment=integrate(2) / mass,
        prob_deep=integrate(0, lower=0.0) / mass,
        deep_mode=deep_mode,
        grid=grid,
        cdf=cdf,
    )


def _default_float() -> np.dtype:
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def make_many_well(dim: int = 32, *, name: str | None = None) -> Target:
    """FAB many-well in an even dimension `dim` (`dim/2` double-well / Gaussian pairs).

    Args:
        dim: even dimension ≥ 2.
        name: registry id, default `many_well{dim}`.

    Returns:
        The unnormalised `Target` with `log Z = (dim/2)(log Z₁ + ½ log 2π)` (quadrature), exact
        samples, and `ground_truth` holding `mean`, `covariance` (diagonal), `prob_deep` and
        `deep_mode` in float64.
    """
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2 or dim % 2:
        raise ValueError(f"many_well dim must be an even integer >= 2 (pairs of coordinates), got {dim!r}")
    dim = int(dim)
    num_wells = dim // 2
    quadrature = double_well_quadrature()
    log_Z = num_wells * (quadrature.log_Z1 + _HALF_LOG_2PI)
    grid = jnp.asarray(quadrature.grid, _default_float())
    cdf = jnp.asarray(quadrature.cdf, _default_float())

    def log_prob(x: jax.Array) -> jax.Array:
        pairs = x.reshape(num_wells, 2)
        return jnp.sum(double_well_log_density(pairs[:, 0]) - 0.5 * pairs[:, 1] ** 2)

    def sample(key: jax.Array, num_samples: int) -> jax.Array:
        key_well, key_gauss = jax.random.split(key)
        uniforms = jax.random.uniform(key_well, (num_samples, num_wells), dtype=grid.dtype)
        wells = jnp.interp(uniforms, cdf, grid)
        gauss = jax.random.normal(key_gauss, (num_samples, num_wells), dtype=grid.dtype)
        return jnp.stack([wells, gauss], axis=-1).reshape(num_samples, dim)

    variance_well = quadrature.second_moment - quadrature.mean**2
    mean = np.tile([quadrature.mean, 0.0], num_wells)
    variances = np.tile([variance_well, 1.0], num_wells)
    return Target(
        name=name or f"many_well{dim}",
        dim=dim,
        log_prob_fn=jax.jit(log_prob),
        pretty_name=f"Many-well ({dim}-D)",
        log_Z=log_Z,
        log_Z_source="quadrature: (d/2)(log Z1 + ½ log 2π), Z1 = ∫exp(-x⁴+6x²+x/2)dx by scipy.integrate.quad",
        sample_fn=jax.jit(sample, static_argnums=1),
        ground_truth={
            "mean": mean,
            "covariance": np.diag(variances),
            "prob_deep": quadrature.prob_deep,
            "deep_mode": quadrature.deep_mode,
        },
        description=(
            f"FAB many-well in {dim}-D: {num_wells} independent copies of the 2-D double well "
            "-x1^4 + 6 x1^2 + x1/2 - x2^2/2 (Noé et al. 2019; Midgley et al. 2023, FAB; "
            "fab-jax many_well.py), "
            f"2^{num_wells} modes, unnormalised with log Z = (d/2)(log Z1 + ½ log 2π) = {log_Z:.7f} "
            "by quadrature. "
            "Exact samples: inverse CDF on a grid for the double-well coordinates, N(0, 1) for the others."
        ),
    )


ENTRIES = tuple(
    entry(f"many_well{dim}", functools.partial(make_many_well, dim), family="many_well")
    for dim in (8, 16, 32, 64)
)
