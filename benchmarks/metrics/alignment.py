"""Jittable permutation matching and rigid alignment of particle configurations (for `eq_w2`).

`linear_sum_assignment(cost)` is an EXACT jittable, vmappable Hungarian algorithm (the O(n³)
shortest-augmenting-path form with row/column potentials, as in Jonker-Volgenant / the "e-maxx"
formulation) written with `lax.fori_loop` / `lax.while_loop`. It returns the same optimum as
`scipy.optimize.linear_sum_assignment` (the permutation itself can differ only when two
assignments tie in cost); `tests/benchmarks/metrics/test_particles.py` checks this on random cases.
Each of the n augmentations visits at most n columns, so the loops are bounded; non-finite costs
are replaced by a large finite value so that the loops always terminate.

`kabsch_distance` is `min_R ‖X − Y R‖_F` over ORTHOGONAL `R` (Procrustes, `R = U Vᵀ` from the SVD
`Yᵀ X = U S Vᵀ`), WITHOUT the determinant correction, i.e. over O(D) (rotations AND reflections),
as in the peers' `find_rigid_alignment` (adjoint_samplers, DEM).

`aligned_distance` is the peers' per-pair heuristic for an E(D)×S_n-invariant distance: match the
particles of `y` to those of `x` by the assignment minimising `Σ_a ‖x_a − y_π(a)‖` on the
UNALIGNED (centred) coordinates, then Kabsch-align. It is not the joint optimum over permutations
and rotations (and it is not rotation invariant when the matching on raw coordinates goes wrong);
it is what `eq_w2` is defined with in `docs/targets.md` §4.4.

`frames="pca"` (not the peers' definition; opt-in) makes the matching step rotation-invariant: besides
the peers' candidate it also matches in the principal-axes frames of the two configurations, under
all `2^D` sign flips of the axes, Kabsch-aligns each candidate permutation and keeps the smallest
distance. The result is never larger than the peers' value, and is 0 for a rotated (or reflected)
and permuted copy whenever the principal moments are distinct. It costs `1 + 2^D` matchings.

Two engines compute `aligned_distance_matrix`, with the same definition: `"jax"` (the jitted,
vmapped Hungarian above, sharded over devices: the accelerator path) and `"scipy"` (per pair
`scipy.optimize.linear_sum_assignment`, a compiled Jonker-Volgenant, on a NumPy cost tensor, with the
Kabsch step as one batched SVD per row of the matrix). On a CPU the vmapped `while_loop`s of the JAX
Hungarian run every pair of a chunk for as many iterations as its slowest pair: measured side by side
on 2 cores, the jitted engine takes 1.6× the wall time and 2× the CPU time of SciPy on LJ13, 4.2× and
6.7× on LJ55. So for more particles than `BRUTE_FORCE_MAX` the default (`engine=None`) is `"scipy"` on
a CPU backend and `"jax"` otherwise;
up to `BRUTE_FORCE_MAX` (DW4) the JAX enumeration is used everywhere. Both are exact; they can differ
only where two matchings tie in cost, and by float32 rounding (`tests/benchmarks/metrics/
test_particles.py` compares them); `tiltbench perf --particle-metrics` times them side by side
(`results/perf/particle_metrics.md`).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa

from samplers import parallel
from samplers.parallel import shard_batch

__all__ = [
    "BRUTE_FORCE_MAX",
    "ENGINES",
    "FRAMES",
    "aligned_distance",
    "aligned_distance_matrix",
    "default_engine",
    "kabsch_distance",
    "linear_sum_assignment",
    "padded_rows",
]

FRAMES = ("peer", "pca")
ENGINES = ("jax", "scipy")

_BIG = 1e30  # stands in for non-finite costs; far below float32 max so sums of n of them stay finite


def linear_sum_assignment(cost: jax.Array) -> jax.Array:
    """Exact minimum-cost perfect matching of a square cost matrix (jittable, vmappable).

    Args:
        cost: `(n, n)` real costs.

    Returns:
        `perm`, shape `(n,)` int32, with row `a` assigned to column `perm[a]`, minimising
        `Σ_a cost[a, perm[a]]`.
    """
    cost = jnp.asarray(cost)
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"linear_sum_assignment takes a square matrix, got {cost.shape}")
    cost = jnp.where(jnp.isfinite(cost), cost, _BIG)
    a = jnp.zeros((n + 1, n + 1), cost.dtype).at[1:, 1:].set(cost)  # 1-based, column 0 is a dummy
    cols = jnp.arange(n + 1)
    inf = jnp.asarray(jnp.inf, cost.dtype)

    def add_row(i, carry):
        u, v, p, way = carry
        p = p.at[0].set(i)

        def search_cond(state):  # p is fixed during the search; it changes only when augmenting
            _, _, _, _, _, j0, count = state
            return (p[j0] != 0) & (count <= n)

        def search_body(state):
            u, v, way, minv, used, j0, count = state
            used = used.at[j0].set(True)
            i0 = p[j0]
            reduced = a[i0] - u[i0] - v
            free = ~used & (cols > 0)
            better = free & (reduced < minv)
            minv = jnp.where(better, reduced, minv)
            way = jnp.where(better, j0, way)
            masked = jnp.where(free, minv, inf)
            j1 = jnp.argmin(masked)
            delta = masked[j1]
            u = u.at[p].add(jnp.where(used, delta, 0.0))  # used columns hold distinct rows
            v = jnp.where(used, v - delta, v)
            minv = jnp.where(used, minv, minv - delta)
            return u, v, way, minv, used, j1, count + 1

        # the do-while of the textbook form: one search step, then loop while column j0 is taken
        state = search_body((u, v, way, jnp.full(n + 1, inf), jnp.zeros(n + 1, bool), jnp.int32(0), 0))
        u, v, way, _, _, j0, _ = jax.lax.while_loop(search_cond, search_body, state)

        def augment_body(state):
            p, j0, count = state
            j1 = way[j0]
            return p.at[j0].set(p[j1]), j1, count + 1

        p, _, _ = jax.lax.while_loop(lambda s: (s[1] != 0) & (s[2] <= n), augment_body, (p, j0, 0))
        return u, v, p, way

    init = (
        jnp.zeros(n + 1, cost.dtype),
        jnp.zeros(n + 1, cost.dtype),
        jnp.zeros(n + 1, jnp.int32),
        jnp.zeros(n + 1, jnp.int32),
    )
    _, _, p, _ = jax.lax.fori_loop(1, n + 1, add_row, init)
    # p[j] = row (1-based) assigned to column j; invert to row -> column
    return jnp.zeros(n, jnp.int32).at[p[1:] - 1].set(jnp.arange(n, dtype=jnp.int32))


def _polar_2x2(h: jax.Array) -> jax.Array:
    """The orthogonal polar factor `U Vᵀ` of a 2×2 `h = U S Vᵀ`, in closed form (no SVD).

    `Q = (h + s·cof(h)) / sqrt(|det(h + s·cof(h))|)` with `s = sign(det h)` and
    `cof([[a, b], [c, d]]) = [[d, −c], [−b, a]]`: a rotation when `det h > 0`, a reflection when
    `det h < 0` (the O(2) optimum); for a singular `h` either is optimal and the sign taken is +."""
    (a, b), (c, d) = h[0], h[1]
    s = jnp.where(a * d - b * c < 0, -1.0, 1.0).astype(h.dtype)
    m = jnp.stack([jnp.stack([a + s * d, b - s * c]), jnp.stack([c - s * b, d + s * a])])
    norm = jnp.sqrt(jnp.abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]))
    return jnp.where(norm > 0, m / jnp.where(norm > 0, norm, 1.0), jnp.eye(2, dtype=h.dtype))


def kabsch_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """`min_{R ∈ O(D)} ‖x − y R‖_F` for centred `(n, D)` point sets (no reflection correction).

    `R = U Vᵀ` from the SVD `yᵀx = U S Vᵀ`; in 2-D the same factor in closed form (`_polar_2x2`)."""
    h = y.T @ x
    if h.shape == (2, 2):
        r = _polar_2x2(h)
    else:
        u, _, vt = jnp.linalg.svd(h)
        r = u @ vt
    diff = x - y @ r
    return jnp.sqrt(jnp.sum(diff * diff))


BRUTE_FORCE_MAX = 5  # up to 5! = 120 permutations, enumerating them beats the Hungarian loops


def _match(x: jax.Array, y: jax.Array) -> jax.Array:
    """Permutation minimising `Σ_a ‖x_a − y_π(a)‖` (Euclidean, as `cdist` + Hungarian in the peers).

    Exact either way: up to `BRUTE_FORCE_MAX` particles (DW4) every permutation's cost is computed
    at once and the smallest taken (the first on a tie, where the Hungarian may pick another
    minimiser of the same cost); above it, the Hungarian `linear_sum_assignment`."""
    diff = x[:, None, :] - y[None, :, :]
    cost = jnp.sqrt(jnp.sum(diff * diff, -1))
    n = cost.shape[0]
    if n > BRUTE_FORCE_MAX:
        return linear_sum_assignment(cost)
    perms = jnp.asarray(list(itertools.permutations(range(n))), jnp.int32)  # (n!, n), static
    totals = jnp.sum(cost[jnp.arange(n), perms], axis=-1)
    return perms[jnp.argmin(totals)]


def _principal_frame(x: jax.Array) -> jax.Array:
    return x @ jnp.linalg.eigh(x.T @ x)[1]


def aligned_distance(x: jax.Array, y: jax.Array, frames: str = "peer") -> jax.Array:
    """Distance between two configurations `(n, D)`: centre, match particles, Kabsch-align over O(D).

    `frames="peer"`: one matching on the centred, unaligned coordinates (adjoint_samplers / DEM).
    `frames="pca"`: the minimum over that candidate and the `2^D` principal-frame candidates.
    """
    if frames not in FRAMES:
        raise ValueError(f"unknown frames {frames!r}; valid: {FRAMES}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    best = kabsch_distance(x, y[_match(x, y)])
    if frames == "pca":
        x_frame, y_frame = _principal_frame(x), _principal_frame(y)
        dim = x.shape[1]
        signs = jnp.asarray(list(itertools.product((1.0, -1.0), repeat=dim)), x.dtype)
        dists = jax.vmap(lambda s: kabsch_distance(x, y[_match(x_frame, y_frame * s)]))(signs)
        best = jnp.minimum(best, jnp.min(dists))
    return best


@functools.partial(jax.jit, static_argnames=("n_particles", "spatial_dim", "chunk_size", "frames", "shards"))
def _distance_matrix(x, y, *, n_particles: int, spatial_dim: int, chunk_size: int, frames: str, shards: int):
    # The B·B' pairs are processed in chunks of `chunk_size` (a scan over chunks, vmapped pairs
    # inside); with `shards` > 1 devices each chunk is split over them (`samplers.parallel`), so
    # every device matches chunk_size / shards pairs per scan step. `shards` is static so that a
    # change of mesh recompiles.
    xs = x.reshape(x.shape[0], n_particles, spatial_dim)
    ys = y.reshape(y.shape[0], n_particles, spatial_dim)
    num_pairs = x.shape[0] * y.shape[0]
    chunk_size = min(chunk_size, -(-num_pairs // shards) * shards)  # no wasted chunk for small B
    num_chunks = -(-num_pairs // chunk_size)
    flat_index = jnp.arange(num_chunks * chunk_size).reshape(num_chunks, chunk_size) % num_pairs
    ii, jj = flat_index // y.shape[0], flat_index % y.shape[0]
    if shards > 1:
        ii, jj = shard_batch((ii, jj), axis=1)
    pair_distance = lambda i, j: aligned_distance(xs[i], ys[j], frames)
    chunk = lambda ij: jax.vmap(pair_distance)(*ij)
    flat = jax.lax.map(chunk, (ii, jj))
    return flat.reshape(-1)[:num_pairs].reshape(x.shape[0], y.shape[0])


def padded_rows(b: int) -> int:
    """The row count the `"jax"` engine pads `b` rows to: the next power of two, at least 8 (so that
    calls with nearby sizes share one compilation)."""
    return max(8, 1 << (b - 1).bit_length())


def default_engine(n_particles: int) -> str:
    """`"scipy"` for more than `BRUTE_FORCE_MAX` particles on a CPU backend, else `"jax"` (module doc)."""
    return "scipy" if n_particles > BRUTE_FORCE_MAX and jax.default_backend() == "cpu" else "jax"


def _scipy_match(x: np.ndarray, ys: np.ndarray, x_key: np.ndarray | None = None, ys_key=None) -> np.ndarray:
    """`ys` `(B, n, D)` with each configuration's particles reordered by the assignment minimising
    `Σ_a ‖x_a − y_π(a)‖` (as `_match`; non-finite costs replaced by a large finite value); the costs
    are taken between `x_key` and `ys_key` when given (the principal frames), else `x` and `ys`."""
    a, b = (x, ys) if x_key is None else (x_key, ys_key)
    squared = (
        np.sum(a * a, -1)[None, :, None] + np.sum(b * b, -1)[:, None, :] - 2.0 * (b @ a.T).swapaxes(1, 2)
    )
    cost = np.sqrt(np.maximum(squared, 0.0))
    cost[~np.isfinite(cost)] = _BIG
    perms = np.empty(ys.shape[:2], np.intp)
    for k, c in enumerate(cost):
        perms[k] = scipy_lsa(c)[1]
    return np.take_along_axis(ys, perms[:, :, None], axis=1)


def _on_finite(fn, a: np.ndarray) -> np.ndarray:
    """`fn(a)` on the finite matrices of the stack `a` `(B, D, D)` (LAPACK raises on NaN), NaN elsewhere."""
    ok = np.all(np.isfinite(a), axis=(1, 2))
    out = np.full_like(a, np.nan)
    out[ok] = fn(a[ok])
    return out


def _scipy_kabsch(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`kabsch_distance(x, y)` for every `y` of `ys` `(B, n, D)`: one batched SVD (O(D), no reflection
    correction)."""

    def polar(h):
        u, _, vt = np.linalg.svd(h)
        return u @ vt

    diff = x[None] - ys @ _on_finite(polar, np.einsum("bnd,ne->bde", ys, x))
    return np.sqrt(np.sum(diff * diff, axis=(1, 2)))


def _scipy_distance_matrix(x: np.ndarray, y: np.ndarray, n_particles: int, spatial_dim: int, frames: str):
    """The `"scipy"` engine: `aligned_distance` for every pair, one row of the matrix at a time."""
    xs = x.reshape(x.shape[0], n_particles, spatial_dim).astype(np.float64)
    ys = y.reshape(y.shape[0], n_particles, spatial_dim).astype(np.float64)
    xs, ys = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    if frames == "pca":
        principal = lambda a: a @ _on_finite(lambda g: np.linalg.eigh(g)[1], np.swapaxes(a, -1, -2) @ a)  # noqa: E731
        x_frames, y_frames = principal(xs), principal(ys)
        signs = np.asarray(list(itertools.product((1.0, -1.0), repeat=spatial_dim)))
        y_signed = [y_frames * s for s in signs]  # the 2^D sign flips of every y's frame, once
    out = np.empty((xs.shape[0], ys.shape[0]))
    with np.errstate(invalid="ignore", over="ignore"):
        for i, xi in enumerate(xs):
            best = _scipy_kabsch(xi, _scipy_match(xi, ys))
            if frames == "pca":
                for y_frame in y_signed:  # matched in the frames, aligned in the centred coordinates
                    matched = _scipy_match(xi, ys, x_frames[i], y_frame)
                    best = np.minimum(best, _scipy_kabsch(xi, matched))
            out[i] = best
    return out


def aligned_distance_matrix(
    x: jax.Array,
    y: jax.Array,
    n_particles: int,
    spatial_dim: int,
    *,
    frames: str = "peer",
    chunk_size: int | None = None,
    engine: str | None = None,
) -> np.ndarray:
    """`M[i, j] = aligned_distance(x_i, y_j, frames)` for flattened `x (B, n·D)`, `y (B', n·D)`.

    Repeated rows (e.g. draws resampled by weight) are matched once. `engine` (`ENGINES`; `None`:
    `default_engine(n_particles)`): with `"jax"` the distinct pairs are vmapped in chunks of
    `chunk_size` (default: about 4M matrix entries of work memory, `2**22 // n²` pairs, at least 256),
    rows zero-padded to the next power of two (at least 8) so that calls with nearby sizes share one
    compilation (padded pairs are dropped), and with several devices (`samplers.parallel`) each chunk of
    pairs is split over them; with `"scipy"` each pair is matched by SciPy (module doc).
    """
    if frames not in FRAMES:
        raise ValueError(f"unknown frames {frames!r}; valid: {FRAMES}")
    engine = default_engine(n_particles) if engine is None else engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {ENGINES}")
    # repeated rows (draws resampled by weight) are matched once
    (x, x_index), (y, y_index) = (_unique_rows(np.asarray(a, np.float32)) for a in (x, y))
    if engine == "scipy":
        out = _scipy_distance_matrix(x, y, n_particles, spatial_dim, frames)
        return out[np.ix_(x_index, y_index)]
    if chunk_size is None:
        chunk_size = max(256, 2**22 // n_particles**2)
    shards = parallel.num_shards()
    chunk_size = -(-int(chunk_size) // shards) * shards  # a multiple of the device count
    pad = lambda a: np.pad(a, ((0, padded_rows(a.shape[0]) - a.shape[0]), (0, 0)))
    out = _distance_matrix(
        jnp.asarray(pad(x)),
        jnp.asarray(pad(y)),
        n_particles=n_particles,
        spatial_dim=spatial_dim,
        chunk_size=int(chunk_size),
        frames=frames,
        shards=shards,
    )
    return np.asarray(out, np.float64)[np.ix_(x_index, y_index)]


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(rows, index)` with `rows[index] == a`: each distinct row once, in first-seen order."""
    _, first, inverse = np.unique(a, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep first-seen order, so distinct input rows keep their positions
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return a[first[order]], rank[inverse.reshape(-1)]
