"""Statistical helpers shared by the target tests (float64 NumPy; tolerances come from standard errors)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import scipy.stats

import targets

Z_TOLERANCE = 5.0
"""Two-sided z threshold: a correct sampler fails a single check with probability 5.7e-7."""
P_VALUE_FLOOR = 1e-4
"""Goodness-of-fit p-value below which a check fails (fixed seeds; one such test per target)."""
NUM_SAMPLES = 20_000
"""Exact draws per target shared by the statistical tests (one sampler compilation per target)."""


# Compiling a sampler or a batched log_prob costs ~0.3-1 s of CPU, far more than running it; the
# caches below build each target, each draw and each batched evaluation once per test session.
@functools.cache
def cached_target(name: str) -> targets.Target:
    """`targets.get(name)` built once (float32); its jitted functions are then compiled once."""
    return targets.get(name)


@functools.cache
def cached_samples(name: str, seed: int = 0) -> np.ndarray:
    """`NUM_SAMPLES` exact draws of `name` with `jax.random.key(seed)` (read-only float32 array)."""
    samples = np.asarray(cached_target(name).sample(jax.random.key(seed), NUM_SAMPLES))
    samples.setflags(write=False)
    return samples


@functools.cache
def batched_value_and_grad(name: str):
    """Jitted `(n, dim) -> ((n,), (n, dim))` log_prob values and gradients of `name`."""
    return jax.jit(jax.vmap(jax.value_and_grad(cached_target(name).log_prob)))


def mean_z_scores(samples, mean) -> np.ndarray:
    """`(sample mean - mean) / (sample std / √n)` per coordinate."""
    samples = np.asarray(samples, np.float64)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return (samples.mean(axis=0) - np.asarray(mean, np.float64)) / standard_error


def covariance_z_scores(samples, mean, covariance) -> np.ndarray:
    """z-scores of the empirical `E[(x - μ)(x - μ)ᵀ]` (known mean) against `covariance`, `(d, d)`.

    The standard error of entry (i, j) is `sqrt(Var[c_i c_j] / n)` with `c = x - μ`, estimated as
    `mean(c_i² c_j²) - mean(c_i c_j)²` (matrix products, so no `n × d × d` array).
    """
    centred = np.asarray(samples, np.float64) - np.asarray(mean, np.float64)
    n = centred.shape[0]
    second = centred.T @ centred / n
    fourth = (centred**2).T @ (centred**2) / n
    standard_error = np.sqrt(np.maximum(fourth - second**2, 1e-300) / n)
    return (second - np.asarray(covariance, np.float64)) / standard_error


def assert_moments_match(samples, ground_truth, *, covariance: bool = True, z: float = Z_TOLERANCE) -> None:
    """Sample mean (and covariance) within `z` standard errors of the closed-form ground truth."""
    mean_z = mean_z_scores(samples, ground_truth["mean"])
    assert np.max(np.abs(mean_z)) < z, f"mean z-scores {np.round(mean_z, 2)}"
    if covariance:
        cov_z = covariance_z_scores(samples, ground_truth["mean"], ground_truth["covariance"])
        worst = np.unravel_index(np.argmax(np.abs(cov_z)), cov_z.shape)
        assert np.max(np.abs(cov_z)) < z, f"covariance z-score {cov_z[worst]:.2f} at entry {worst}"


def grid_cell_probabilities(log_prob, log_Z: float, bounds, bins: int, refine: int = 8) -> np.ndarray:
    """Probabilities `∫_cell exp(log_prob) / Z` of a `bins × bins` grid over `bounds` in 2-D.

    Midpoint rule with `refine × refine` sub-cells per cell; `log_prob` acts on one point.
    """
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    fine = bins * refine
    hx, hy = (x_hi - x_lo) / fine, (y_hi - y_lo) / fine
    xs = x_lo + hx * (np.arange(fine) + 0.5)
    ys = y_lo + hy * (np.arange(fine) + 0.5)
    points = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    values = np.asarray(jax.jit(jax.vmap(log_prob))(points.astype(np.float32)), np.float64)
    density = np.exp(values - log_Z).reshape(fine, fine) * hx * hy
    return density.reshape(bins, refine, bins, refine).sum(axis=(1, 3))


@functools.cache
def cached_cell_probabilities(name: str, bounds, bins: int) -> np.ndarray:
    """`grid_cell_probabilities` of the cached target `name` (computed once per session)."""
    target = cached_target(name)
    return grid_cell_probabilities(target.log_prob, target.log_Z, bounds, bins)


def grid_chi_square_pvalue(probabilities, samples, bounds) -> float:
    """Pearson χ² p-value of 2-D `samples` against the cell `probabilities` `(bins, bins)` over `bounds`.

    Cells with an expected count below 5 are pooled with the mass outside the box.
    """
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    bins = probabilities.shape[0]
    probabilities = probabilities.ravel()
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=bins, range=[[x_lo, x_hi], [y_lo, y_hi]])
    counts = counts.ravel()
    keep = probabilities * n >= 5
    observed = np.append(counts[keep], n - counts[keep].sum())
    expected = np.append(probabilities[keep] * n, n * (1.0 - probabilities[keep].sum()))
    if expected[-1] < 5:  # fold a negligible remainder into the last kept cell
        observed, expected = observed[:-1], expected[:-1]
        observed[-1] += n - observed.sum()
        expected[-1] += n - expected.sum()
    return float(scipy.stats.chisquare(observed, expected).pvalue)


def projection_ks_pvalue(x, y, num_directions: int = 6, seed: int = 0) -> float:
    """Bonferroni-corrected two-sample KS p-value over random unit projections (plus coordinate 0)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(num_directions, x.shape[1]))
    directions[0] = np.eye(x.shape[1])[0]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    pvalues = [scipy.stats.ks_2samp(x @ u, y @ u).pvalue for u in directions]
    return float(min(1.0, num_directions * min(pvalues)))
