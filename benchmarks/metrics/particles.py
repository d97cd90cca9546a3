"""Metrics for particle systems (DW4, LJ13, LJ55): energy, interatomic-distance and equivariant W2.

Definitions (`docs/targets.md` §4.4, `methods.md` §3.5; peers disagree on square roots,
so every key here says which it is). All 1-D W2 are exact (`ot.w2_squared_1d`, = POT `emd2_1d`).

- `energy_w2_squared` = W2²(E_model, E_ref) between the 1-D empirical laws of the energies
  `E = −target.log_prob(x)`, evaluated in float64 (scoped `jax.enable_x64`); `energy_w2` is its
  square root (adjoint_samplers' "energy_w2"; DEM logs the square under the same name). A few
  exploded samples (LJ: one pair at r = 0.1 contributes ~10¹²) dominate it, so a robust variant
  is also reported: `energy_w2_clipped` (a W2, not squared), the same after replacing every energy
  above `U = max(E_ref)` (the reference set's MAXIMUM energy, `energy/clip_value`) and every
  non-finite energy by U. `energy/clipped_fraction` is the fraction of model samples so replaced.
- `dist_w2_squared` = W2² between the pooled interatomic distances `{‖x_a − x_b‖ : a < b}` of all
  samples (what both DEM and adjoint_samplers call "dist_w2", without a root); `dist_w2` = its root.
- `dist_tv` = ½ Σ_b |h_model,b − h_ref,b| + ½ (model mass outside the bins): 200 equal bins whose
  edges span [min, max] of the reference distances, each histogram normalised by its TOTAL count
  (so out-of-range and non-finite model distances count as discrepancy; DEM's histogram silently
  drops them).
- `eq_w2` = sqrt of the exact OT cost on the B×B matrix `M²`, `M_ij` = `alignment.aligned_distance`
  (centre, Hungarian matching of particles on the unaligned coordinates, Kabsch over O(D) without
  reflection correction) between B model and B reference samples (adjoint_samplers' "eq_w2"; DEM's
  "Eq-EMD2" is the OT cost of the UNSQUARED M, a W1). The per-pair matching is exact: SciPy's
  Hungarian per pair on a CPU above 5 particles, else the jittable one of `alignment` (all pairs
  vmapped; `alignment.default_engine`); the outer OT is exact
  (`scipy.optimize.linear_sum_assignment`, exact for uniform weights and equal sizes). `eq_w2_squared`
  is its square. The peers' matching is done on UNALIGNED coordinates, so `eq_w2` is NOT invariant
  to rotating one configuration (measured: a randomly rotated and permuted copy of a 13-particle
  configuration with N(0, I) positions is typically at distance ≈ 4, not 0). `eq_w2_invariant`
  (not a peer metric) uses `frames="pca"` matching, which is 0 on such copies, at `1 + 2^D` times
  the cost and a smaller B.

Every value comes with `<key>/noise_floor`: the same estimator between `reference2` and `reference`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from benchmarks.metrics.alignment import aligned_distance_matrix
from benchmarks.metrics.base import EvalContext, metric, noise_floor
from benchmarks.metrics.ot import w2_squared_1d
from targets.particles import interatomic_distances

__all__ = [
    "EqW2Config",
    "dist_metrics",
    "distance_tv",
    "energies",
    "energy_metrics",
    "eq_w2_invariant_metrics",
    "eq_w2_metrics",
    "eq_w2_squared",
    "pooled_distances",
]

NUM_DIST_BINS = 200  # DEM's interatomic-distance histogram


@dataclasses.dataclass(frozen=True)
class EqW2Config:
    """Configuration of `eq_w2`.

    Attributes:
        max_samples: B, the number of model (and reference) samples compared; `None` means 1000
            (adjoint_samplers' eval batch) for up to `large_system` particles and 128 (DEM's LJ55
            eval batch) above, because the cost is O(B² n³); with `frames="pca"` (1 + 2^D times
            the work) 250 and 64. Measured on 2 shared CPU cores, one matrix: DW4 B=1000 ≈ 1.5 s
            (matching by enumeration and the closed-form 2-D alignment of `alignment`; 10 s with the
            Hungarian and the SVD, same machine and load); with the SciPy engine (`alignment`, the CPU
            default above 5 particles), projected from `tiltbench perf --particle-metrics` on a quiet
            machine, LJ13 B=1000 ≈ 11 s (the jitted engine 19.5 s on both cores), LJ13 `frames="pca"`
            B=250 ≈ 6 s (10 s), LJ55 B=128 ≈ 1.6 s (6.8 s). The noise floor is computed once per
            reference pair (memoised).
        large_system: particle count above which the smaller default B applies.
        frames: `"peer"` (the published definition) or `"pca"` (rotation-invariant matching, opt-in,
            `1 + 2^D` times the cost; see `alignment`).
        chunk_size: pairs per vmapped chunk (`None`: `alignment.aligned_distance_matrix` default).
    """

    max_samples: int | None = None
    large_system: int = 20
    frames: str = "peer"
    chunk_size: int | None = None

    def num_samples(self, n_particles: int) -> int:
        """B for a system of `n_particles` (see `max_samples`)."""
        if self.max_samples is not None:
            return int(self.max_samples)
        small, large = (1000, 128) if self.frames == "peer" else (250, 64)
        return small if n_particles <= self.large_system else large


@functools.lru_cache(maxsize=16)
def _batched_log_prob(target):
    return jax.jit(jax.vmap(target.log_prob))


@functools.lru_cache(maxsize=16)
def _batched_distances(spec):
    return jax.jit(jax.vmap(lambda p: interatomic_distances(p, spec)))


def _finite_rows(x) -> np.ndarray:
    return np.all(np.isfinite(np.asarray(x)), axis=-1)


def energies(target, x) -> np.ndarray:
    """`E = −target.log_prob(x)` per sample, float64 (computed under a scoped `jax.enable_x64`).

    Samples with a non-finite coordinate get `E = NaN` explicitly (a NaN-safe square root in the
    energy can otherwise turn a NaN configuration into a finite energy).
    """
    with jax.enable_x64(True):
        values = _batched_log_prob(target)(jnp.asarray(np.asarray(x, np.float64)))
        return np.where(_finite_rows(x), -np.asarray(values, np.float64), np.nan)


def pooled_distances(spec, x) -> np.ndarray:
    """All interatomic distances `‖x_a − x_b‖`, `a < b`, of all samples, flattened (float64).

    Distances of samples with a non-finite coordinate are NaN.
    """
    d = np.asarray(_batched_distances(spec)(jnp.asarray(x, jnp.float32)), np.float64)
    return np.where(_finite_rows(x)[:, None], d, np.nan).reshape(-1)


def distance_tv(d_model, d_ref, num_bins: int = NUM_DIST_BINS) -> float:
    """TV of binned distance laws, edges from the reference, out-of-range mass counted (module doc)."""
    d_model = np.asarray(d_model, np.float64)
    d_ref = np.asarray(d_ref, np.float64)
    d_ref = d_ref[np.isfinite(d_ref)]
    edges = np.linspace(d_ref.min(), d_ref.max(), num_bins + 1)
    h_ref = np.histogram(d_ref, edges)[0] / d_ref.size
    finite = d_model[np.isfinite(d_model)]
    h_model = np.histogram(finite, edges)[0] / d_model.size
    return float(0.5 * (np.abs(h_model - h_ref).sum() + (1.0 - h_model.sum())))


def _clipped(e: np.ndarray, upper: float) -> np.ndarray:
    return np.where(np.isfinite(e), np.minimum(e, upper), upper)


def energy_metrics(ctx: EvalContext) -> dict[str, float]:
    """`energy_w2`, `energy_w2_squared`, `energy_w2_clipped` (+ noise floors) and diagnostics."""
    e_model = energies(ctx.target, ctx.x)
    e_ref = energies(ctx.target, ctx.reference)
    e_ref2 = energies(ctx.target, ctx.reference2)
    w2sq, floor = w2_squared_1d(e_model, e_ref), w2_squared_1d(e_ref2, e_ref)
    upper = float(np.max(e_ref[np.isfinite(e_ref)]))
    clip, clip_floor = (w2_squared_1d(_clipped(e, upper), _clipped(e_ref, upper)) for e in (e_model, e_ref2))
    return {
        "energy_w2": float(np.sqrt(w2sq)),
        "energy_w2/noise_floor": float(np.sqrt(floor)),
        "energy_w2_squared": w2sq,
        "energy_w2_squared/noise_floor": floor,
        "energy_w2_clipped": float(np.sqrt(clip)),
        "energy_w2_clipped/noise_floor": float(np.sqrt(clip_floor)),
        "energy/clip_value": upper,
        "energy/clipped_fraction": float(np.mean(~(e_model <= upper))),
        "energy/nonfinite_fraction": float(np.mean(~np.isfinite(e_model))),
    }


def dist_metrics(ctx: EvalContext) -> dict[str, float]:
    """`dist_w2_squared`, `dist_w2`, `dist_tv` and their noise floors."""
    spec = ctx.target.particles
    d_model, d_ref, d_ref2 = (pooled_distances(spec, a) for a in (ctx.x, ctx.reference, ctx.reference2))
    w2sq, floor = w2_squared_1d(d_model, d_ref), w2_squared_1d(d_ref2, d_ref)
    return {
        "dist_w2_squared": w2sq,
        "dist_w2_squared/noise_floor": floor,
        "dist_w2": float(np.sqrt(w2sq)),
        "dist_w2/noise_floor": float(np.sqrt(floor)),
        "dist_tv": distance_tv(d_model, d_ref),
        "dist_tv/noise_floor": distance_tv(d_ref2, d_ref),
    }


def eq_w2_squared(x, y, spec, *, frames: str = "peer", chunk_size: int | None = None) -> float:
    """Exact OT cost `min_σ (1/B) Σ_i M_{iσ(i)}²` between equal-size sets (NaN if non-finite)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"eq_w2 compares equal-size sets, got {x.shape[0]} and {y.shape[0]}")
    m2 = (
        aligned_distance_matrix(
            x, y, spec.n_particles, spec.spatial_dim, frames=frames, chunk_size=chunk_size
        )
        ** 2
    )
    if not np.all(np.isfinite(m2)):
        return np.nan
    rows, cols = optimize.linear_sum_assignment(m2)
    return float(m2[rows, cols].mean())


def eq_w2_metrics(
    ctx: EvalContext, config: EqW2Config = EqW2Config(), *, name: str = "eq_w2"
) -> dict[str, float]:
    """`<name>` (a W2), `<name>_squared`, their noise floors and `<name>/num_samples` (= B)."""
    spec = ctx.target.particles
    b = min(
        config.num_samples(spec.n_particles),
        np.shape(ctx.x)[0],
        np.shape(ctx.reference)[0],
        np.shape(ctx.reference2)[0],
    )
    k_model, k_ref, k_ref2 = jax.random.split(ctx.key, 3)
    pick = lambda key, a: np.asarray(a)[np.asarray(jax.random.permutation(key, np.shape(a)[0])[:b])]
    x, ref, ref2 = pick(k_model, ctx.x), pick(k_ref, ctx.reference), pick(k_ref2, ctx.reference2)
    model = eq_w2_squared(x, ref, spec, frames=config.frames, chunk_size=config.chunk_size)
    floor = noise_floor(eq_w2_squared, ref2, ref, spec, frames=config.frames, chunk_size=config.chunk_size)
    return {
        name: float(np.sqrt(model)),
        f"{name}/noise_floor": float(np.sqrt(floor)),
        f"{name}_squared": model,
        f"{name}_squared/noise_floor": floor,
        f"{name}/num_samples": float(b),
    }


def eq_w2_invariant_metrics(ctx: EvalContext) -> dict[str, float]:
    """`eq_w2_invariant`: `eq_w2` with the rotation-invariant `frames="pca"` matching (not a peer metric)."""
    return eq_w2_metrics(ctx, EqW2Config(frames="pca"), name="eq_w2_invariant")


_PARTICLE_REQS = ("particles", "reference", "reference2")


ENTRIES = (
    metric(
        "energy_w2",
        energy_metrics,
        requires=_PARTICLE_REQS,
        description="W2 (and W2²) of 1-D energy laws, E = −log_prob in float64; clipped at max E_ref",
    ),
    metric(
        "dist_w2",
        dist_metrics,
        requires=_PARTICLE_REQS,
        description="W2² (and W2) of pooled interatomic distances; 200-bin histogram TV",
    ),
    metric(
        "eq_w2",
        eq_w2_metrics,
        requires=_PARTICLE_REQS,
        description="sqrt exact OT on M², M = Hungarian-matched, Kabsch-aligned (O(D)) distance",
    ),
    metric(
        "eq_w2_invariant",
        eq_w2_invariant_metrics,
        requires=_PARTICLE_REQS,
        description="eq_w2 with matching also tried in principal-axes frames (rotation invariant)",
    ),
)
"""The metrics of this module, registered by `benchmarks/metrics/__init__.py`."""
