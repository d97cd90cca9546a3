"""Particle metrics: the jittable Hungarian and the peers' aligned distance against scipy references,
eq_w2 invariances and exact outer OT, distance TV, and energy W2 (with the clipped variant)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa
from scipy.spatial.distance import cdist

import targets
from benchmarks import metrics
from benchmarks.metrics import alignment, particles


# -- the jittable Hungarian ------------------------------------------------------------------------
def test_hungarian_matches_scipy_with_and_without_ties_and_survives_non_finite_costs():
    n = 13  # one batch, one compilation; n = 4 is covered by the DW4 aligned-distance test below
    rng = np.random.default_rng(0)
    continuous = rng.random((30, n, n))
    ties = rng.integers(0, 3, (30, n, n))
    bad = np.full((1, n, n), np.nan)
    costs = np.concatenate([continuous, ties, bad]).astype(np.float32)
    perms = np.asarray(jax.jit(jax.vmap(alignment.linear_sum_assignment))(costs))
    for cost, perm in zip(costs[:30], perms[:30], strict=True):
        np.testing.assert_array_equal(perm, scipy_lsa(cost)[1])  # continuous costs: unique optimum
    for cost, perm in zip(costs[30:60], perms[30:60], strict=True):  # ties: same optimal cost
        assert sorted(perm) == list(range(n))
        rows, cols = scipy_lsa(cost)
        assert cost[np.arange(n), perm].sum() == cost[rows, cols].sum()
    assert sorted(perms[60]) == list(range(n))  # NaN costs: terminates with a permutation


# -- the peers' per-pair distance ------------------------------------------------------------------
def peers_distance(x, y):
    """adjoint_samplers / DEM `dist_point_clouds` for one pair, in NumPy + SciPy (centred inputs)."""
    _, cols = scipy_lsa(cdist(x, y))
    y = y[cols]
    u, _, vt = np.linalg.svd(x.T @ y)  # H = Aᵀ B with A = x, B = reordered y; R = V Uᵀ; B R ≈ A
    r = vt.T @ u.T
    return np.linalg.norm(x - y @ r)


def centred_configs(rng, b, n, d, scale=1.5):
    x = rng.normal(size=(b, n, d)) * scale
    return (x - x.mean(1, keepdims=True)).reshape(b, n * d)


@pytest.mark.parametrize("n, d, engine", [(4, 2, "jax"), (13, 3, "jax"), (13, 3, "scipy")])
def test_aligned_distance_matrix_matches_the_peers_reference(n, d, engine):
    rng = np.random.default_rng(n)
    x, y = centred_configs(rng, 6, n, d), centred_configs(rng, 5, n, d)
    got = alignment.aligned_distance_matrix(x, y, n, d, engine=engine)
    expected = np.array([[peers_distance(a.reshape(n, d), b.reshape(n, d)) for b in y] for a in x])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # repeated rows (draws resampled by weight) are matched once and land in every position
    rows, cols = [3, 0, 3, 5, 0, 3], [4, 4, 1]
    repeated = alignment.aligned_distance_matrix(x[rows], y[cols], n, d, engine=engine)
    np.testing.assert_allclose(repeated, got[np.ix_(rows, cols)], rtol=1e-5, atol=1e-6)


def test_the_two_engines_agree_in_both_frames_and_on_non_finite_rows():
    """The SciPy engine (the CPU default above BRUTE_FORCE_MAX particles) against the jitted one:
    the same distances in the peers' and the principal-axes frames, NaN where a row is not finite,
    and a clear error for an unknown engine."""
    n, d = 7, 3
    rng = np.random.default_rng(5)
    x, y = centred_configs(rng, 4, n, d), centred_configs(rng, 3, n, d)
    x[1, 2] = np.nan
    assert alignment.default_engine(n) == "scipy" and alignment.default_engine(4) == "jax"  # CPU backend
    for frames in alignment.FRAMES:
        fast, jitted = (
            alignment.aligned_distance_matrix(x, y, n, d, frames=frames, engine=e) for e in ("scipy", "jax")
        )
        assert np.all(np.isnan(fast[1])) and np.all(np.isnan(jitted[1]))
        np.testing.assert_allclose(fast[[0, 2, 3]], jitted[[0, 2, 3]], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="valid"):
        alignment.aligned_distance_matrix(x, y, n, d, engine="numba")


def test_eq_w2_outer_transport_is_exact():
    n, d, b = 4, 2, 5
    rng = np.random.default_rng(1)
    x, y = centred_configs(rng, b, n, d), centred_configs(rng, b, n, d)
    m2 = np.array([[peers_distance(a.reshape(n, d), c.reshape(n, d)) ** 2 for c in y] for a in x])
    brute = min(np.mean(m2[np.arange(b), list(p)]) for p in itertools.permutations(range(b)))
    spec = targets.ParticleSpec(n, d)
    assert particles.eq_w2_squared(x, y, spec) == pytest.approx(brute, rel=1e-4)


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_eq_w2_invariances():
    n, d, b = 4, 2, 6
    rng = np.random.default_rng(2)
    x = centred_configs(rng, b, n, d)
    shaped = x.reshape(b, n, d)
    permuted = np.stack([c[rng.permutation(n)] for c in shaped]).reshape(b, n * d)
    rotated = np.stack([c[rng.permutation(n)] @ random_rotation(rng, d).T for c in shaped]).reshape(b, n * d)
    spec = targets.ParticleSpec(n, d)
    assert particles.eq_w2_squared(x, permuted, spec) == pytest.approx(0.0, abs=1e-8)
    assert particles.eq_w2_squared(x, rotated, spec, frames="pca") == pytest.approx(0.0, abs=1e-8)
    # the peers' matching on unaligned coordinates is NOT rotation invariant (documented)
    assert particles.eq_w2_squared(x, rotated, spec) > 0.01
    assert (
        particles.eq_w2_squared(x, x[::-1] * 1.3, spec, frames="pca")
        <= particles.eq_w2_squared(x, x[::-1] * 1.3, spec) + 1e-6
    )


# -- distances and energies --------------------------------------------------------------------------
def test_distance_tv():
    d = np.random.default_rng(3).uniform(1, 3, 5000)
    assert particles.distance_tv(d, d) == 0.0
    assert particles.distance_tv(d + 10.0, d) == pytest.approx(1.0)
    half_bad = np.concatenate([d[:2500], np.full(2500, np.nan)])
    assert particles.distance_tv(half_bad, d) == pytest.approx(0.5, abs=0.03)


@pytest.fixture(scope="module")
def dw4_context():
    target = targets.get("dw4")
    rng = np.random.default_rng(4)
    # 8 samples: eq_w2 then reuses the compilation of the 8×8 (padded) matrices of the tests above
    x, ref, ref2 = (jnp.asarray(centred_configs(rng, 8, 4, 2, scale=2.0), jnp.float32) for _ in range(3))
    return metrics.EvalContext(jax.random.key(5), target, x, reference=ref, reference2=ref2)


def test_particle_metrics_through_evaluate(dw4_context):
    values, skipped = metrics.evaluate(dw4_context, names=["energy_w2", "dist_w2", "eq_w2"])
    assert skipped == {}
    for key in ("energy_w2", "dist_w2", "eq_w2"):
        assert values[key] ** 2 == pytest.approx(values[f"{key}_squared"], rel=1e-9)
        assert f"{key}/noise_floor" in values and f"{key}_squared/noise_floor" in values
    assert values["eq_w2/num_samples"] == 8
    assert "dist_tv/noise_floor" in values
    x_nan = np.array(dw4_context.x)
    x_nan[0, 3] = np.nan
    assert np.isnan(particles.pooled_distances(dw4_context.target.particles, x_nan)[:6]).all()
    energies = particles.energies(dw4_context.target, dw4_context.x)
    assert energies.dtype == np.float64
    np.testing.assert_allclose(
        energies, -np.asarray(jax.vmap(dw4_context.target.log_prob)(dw4_context.x)), rtol=1e-5
    )
    _, skipped = metrics.evaluate(dw4_context._replace(reference2=None), names=["eq_w2"])
    assert "noise floor" in skipped["eq_w2"]


def test_exploded_samples_dominate_energy_w2_but_not_its_clipped_variant(dw4_context):
    base, _ = metrics.evaluate(dw4_context, names=["energy_w2"])
    x = np.array(dw4_context.x)
    x[0] *= 50.0  # one exploded configuration: E ~ 0.9 d⁴ ~ 1e9
    x[1] = np.nan
    values, _ = metrics.evaluate(dw4_context._replace(x=jnp.asarray(x)), names=["energy_w2"])
    assert values["energy_w2_squared"] > 1e6 * base["energy_w2_squared"] or np.isnan(values["energy_w2"])
    assert values["energy/clipped_fraction"] >= 2 / 8
    assert values["energy/nonfinite_fraction"] == pytest.approx(1 / 8)
    assert np.isfinite(values["energy_w2_clipped"])
    assert values["energy_w2_clipped"] < base["energy_w2_clipped"] + values["energy/clip_value"] / 2


@pytest.mark.parametrize("n", [3, 4, 5])
def test_small_systems_match_by_enumeration_with_the_hungarian_optimum(n):
    """Up to BRUTE_FORCE_MAX particles the matching enumerates the permutations: same optimal cost."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(64, n, 2)), rng.normal(size=(64, n, 2))
    got = jax.vmap(alignment._match)(jnp.asarray(x), jnp.asarray(y))
    cost = np.linalg.norm(x[:, :, None] - y[:, None], axis=-1)
    for c, perm in zip(cost, np.asarray(got), strict=True):
        rows, cols = scipy_lsa(c)
        assert c[np.arange(n), perm].sum() == pytest.approx(c[rows, cols].sum(), rel=1e-5)


def test_the_2d_polar_factor_is_the_svd_one_for_rotations_reflections_and_singular_matrices():
    rng = np.random.default_rng(3)
    hs = [rng.normal(size=(2, 2)) for _ in range(50)] + [np.array([[1.0, 2.0], [2.0, 4.0]]), np.zeros((2, 2))]
    for h in hs:
        q = np.asarray(alignment._polar_2x2(jnp.asarray(h, jnp.float32)))
        np.testing.assert_allclose(q @ q.T, np.eye(2), atol=1e-5)
        u, _, vt = np.linalg.svd(h)
        # the same optimum: tr(Qᵀh) is the nuclear norm (the value Kabsch maximises)
        assert np.trace(q.T @ h) == pytest.approx(np.linalg.svd(h, compute_uv=False).sum(), abs=1e-5)
        if abs(np.linalg.det(h)) > 1e-3:
            np.testing.assert_allclose(q, u @ vt, atol=1e-4)
