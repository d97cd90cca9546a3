"""Tests for the particle targets DW4 / LJ13 / LJ55 and their shipped reference sets.

Energies are checked against known values (DW4 square, LJ13 icosahedral minimum), against an
independent numpy float64 implementation written from the formulas in `targets.md` §4.1 (ordered
pairs `i ≠ j` for LJ, a full distance matrix), for their symmetries, and for finite gradients at
close contacts. Reference sets are checked for shape, centring, finite energies and agreement
between their two chain halves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import scipy.stats

import targets
from targets import ParticleSpec, particles
from tests.scripts import load_script

EVALUATION_TARGETS = ["dw4", "lj13", "lj55"]
MIN_REFERENCE_SIZE = {"dw4": 10_000, "lj13": 10_000, "lj55": 2_000}


# ---------------------------------------------------------------------------------------------
# Independent numpy float64 reference implementation (full matrices, ordered pairs for LJ)
# ---------------------------------------------------------------------------------------------


def _np_distance_matrix(x: np.ndarray, spec: ParticleSpec) -> np.ndarray:
    pos = np.asarray(x, np.float64).reshape(spec.n_particles, spec.spatial_dim)
    return np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))


def _np_dw4(x: np.ndarray) -> float:
    d = _np_distance_matrix(x, particles.DW4_SPEC)[np.triu_indices(4, 1)]
    return float(np.sum(0.9 * (d - 4) ** 4 - 4 * (d - 4) ** 2))


def _np_lj_idem(x: np.ndarray, spec: ParticleSpec) -> float:
    """DEM `LennardJonesPotential`: Σ_{i≠j} (r⁻¹² − 2r⁻⁶) + ½ Σ_i ‖x_i − x̄‖²."""
    d = _np_distance_matrix(x, spec)
    off = ~np.eye(spec.n_particles, dtype=bool)
    lj = np.sum(d[off] ** -12 - 2 * d[off] ** -6)
    pos = np.asarray(x, np.float64).reshape(spec.n_particles, spec.spatial_dim)
    return float(lj + 0.5 * np.sum((pos - pos.mean(0)) ** 2))


def _np_energy(name: str, x: np.ndarray) -> float:
    return _np_dw4(x) if name == "dw4" else _np_lj_idem(x, particles.PARTICLE_SPECS[name])


def _random_orthogonal(rng: np.random.Generator, dim: int, det: float) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))
    if np.sign(np.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def reference_sets() -> dict[str, np.ndarray]:
    sets = {}
    for name in EVALUATION_TARGETS:
        target = targets.get(name)
        assert target.reference is not None, f"{name}: reference set missing from targets/data/"
        sets[name] = target.reference.load()
    return sets


@pytest.fixture(scope="module")
def reference_energies(reference_sets) -> dict[str, np.ndarray]:
    """Float64 energies of every reference sample (scoped x64)."""
    out = {}
    with jax.enable_x64(True):
        for name, samples in reference_sets.items():
            energy = jax.jit(jax.vmap(particles.energy_fn(name)))
            out[name] = np.asarray(energy(jnp.asarray(samples, jnp.float64)))
    return out


# ---------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------


def test_dw4_square_of_side_four():
    # Four sides d = 4 contribute 0; two diagonals d = 4√2: 0.9 u⁴ − 4 u², u = 4√2 − 4 (targets.md §4.1).
    x = jnp.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0])
    assert float(jax.jit(particles.dw4_energy)(x)) == pytest.approx(-8.3966425, rel=1e-6)
    assert float(jax.jit(targets.get("dw4").log_prob)(x)) == pytest.approx(8.3966425, rel=1e-6)


def _lj13_minimum(pair_factor: float, oscillator_scale: float) -> tuple[np.ndarray, float]:
    """Minimise from a centred icosahedron (nearest-neighbour distance ≈ 1) in float64."""
    phi = (1 + 5**0.5) / 2
    vertices = np.array([[0, s1, s2 * phi] for s1 in (-1, 1) for s2 in (-1, 1)], float)
    vertices = np.concatenate([vertices, np.roll(vertices, 1, axis=1), np.roll(vertices, 2, axis=1)])
    x0 = np.concatenate([np.zeros((1, 3)), vertices / np.linalg.norm(vertices[0])]).ravel()

    def energy(x):
        return particles.lennard_jones_energy(
            x, particles.LJ13_SPEC, pair_factor=pair_factor, oscillator_scale=oscillator_scale
        )

    with jax.enable_x64(True):
        value_and_grad = jax.jit(jax.value_and_grad(energy))
        result = scipy.optimize.minimize(
            lambda x: tuple(np.asarray(v, np.float64) for v in value_and_grad(jnp.asarray(x))),
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 5000},
        )
    return result.x, float(result.fun)


def test_lj13_icosahedral_minimum():
    # Primary check, an external literature value: the Σ_{i<j} LJ13 global minimum −44.326801
    # (Cambridge Cluster Database, ε = r_m = 1, no confinement). It pins φ and the pair geometry.
    _, pair_only = _lj13_minimum(pair_factor=1.0, oscillator_scale=0.0)
    assert pair_only == pytest.approx(-44.326801, abs=2e-6)
    # iDEM convention (pair factor 2, harmonic ½Σ‖x−x̄‖²): −83.0896, pair part −44.3221, harmonic
    # 5.554 (targets.md §4.1, recomputed independently there); pins the factor 2 and the harmonic term.
    x_min, idem = _lj13_minimum(pair_factor=2.0, oscillator_scale=1.0)
    assert idem == pytest.approx(-83.0896, abs=1e-4)
    assert _np_lj_idem(x_min, particles.LJ13_SPEC) == pytest.approx(idem, abs=1e-9)
    harmonic = float(np.sum((x_min.reshape(13, 3) - x_min.reshape(13, 3).mean(0)) ** 2) / 2)
    assert harmonic == pytest.approx(5.554, abs=1e-3)
    assert (idem - harmonic) / 2 == pytest.approx(-44.3221, abs=1e-3)


@pytest.mark.parametrize("name", EVALUATION_TARGETS)
def test_energy_matches_independent_numpy(name):
    spec = particles.PARTICLE_SPECS[name]
    rng = np.random.default_rng(1)
    # Spread-out configurations (nearest pairs ~0.5-1) so every LJ term is moderate.
    scale = {"dw4": 2.0, "lj13": 1.2, "lj55": 2.0}[name]
    xs = rng.normal(size=(4, spec.n_particles * spec.spatial_dim)) * scale
    with jax.enable_x64(True):
        ours = np.asarray(jax.jit(jax.vmap(particles.energy_fn(name)))(jnp.asarray(xs)))
    expected = np.array([_np_energy(name, x) for x in xs])
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    log_prob = jax.jit(jax.vmap(targets.get(name).log_prob))  # the float32 library default
    np.testing.assert_allclose(log_prob(jnp.asarray(xs, jnp.float32)), -expected, rtol=1e-4)


def test_interatomic_distances_pair_order():
    spec = particles.LJ13_SPEC
    x = np.random.default_rng(2).normal(size=spec.n_particles * spec.spatial_dim)
    distances = jax.jit(particles.interatomic_distances, static_argnums=1)
    ours = np.asarray(distances(jnp.asarray(x, jnp.float32), spec))
    expected = scipy.spatial.distance.pdist(x.reshape(13, 3))  # i < j, row-major
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    assert ours.shape == (78,)


# ---------------------------------------------------------------------------------------------
# Symmetries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EVALUATION_TARGETS)
def test_energy_invariances(name, reference_sets):
    spec = particles.PARTICLE_SPECS[name]
    n, d = spec.n_particles, spec.spatial_dim
    rng = np.random.default_rng(3)
    x = reference_sets[name][:3].astype(np.float64)
    energy = jax.jit(jax.vmap(particles.energy_fn(name)))
    with jax.enable_x64(True):
        base = np.asarray(energy(jnp.asarray(x)))
        pos = x.reshape(-1, n, d)
        moved = {
            "translation": pos + rng.normal(size=(1, 1, d)) * 5,
            "rotation": pos @ _random_orthogonal(rng, d, det=1.0).T,
            "reflection": pos @ _random_orthogonal(rng, d, det=-1.0).T,
            "permutation": pos[:, rng.permutation(n)],
        }
        for kind, y in moved.items():
            value = np.asarray(energy(jnp.asarray(y.reshape(x.shape))))
            np.testing.assert_allclose(value, base, rtol=1e-10, atol=1e-10, err_msg=kind)
    # And in float32, the library default (tolerance relative to the energy scale).
    value32 = np.asarray(energy(jnp.asarray(moved["rotation"].reshape(x.shape), jnp.float32)))
    np.testing.assert_allclose(value32, base, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Numerics: close contacts, soft core, bad input
# ---------------------------------------------------------------------------------------------


def _with_close_pair(name: str, r: float) -> jax.Array:
    """A reference-like configuration with particle 1 moved to distance `r` from particle 0."""
    spec = particles.PARTICLE_SPECS[name]
    pos = np.random.default_rng(4).normal(size=(spec.n_particles, spec.spatial_dim)) * 3.0
    pos[1] = pos[0] + r * np.eye(spec.spatial_dim)[0]
    return jnp.asarray(pos.ravel(), jnp.float32)


@pytest.mark.parametrize("name", ["dw4", "lj13", "lj55", "lj13_softcore", "lj55_softcore"])
def test_gradients_finite_at_close_pairs(name):
    target = targets.get(name)
    x = _with_close_pair(name.split("_")[0], 0.05)
    value, grad = jax.jit(jax.value_and_grad(target.log_prob))(x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("name", ["dw4", "lj13_softcore"])
def test_gradients_finite_at_coincident_particles(name):
    # DW4 and the soft core are finite at d = 0; the safe square root gives a zero pair gradient there.
    target = targets.get(name)
    value, grad = jax.jit(jax.value_and_grad(target.log_prob))(_with_close_pair(name.split("_")[0], 0.0))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


def test_lj_coincident_particles_have_infinite_energy():
    # Not reachable by a sampler with finite energies: log_prob = −∞ exactly.
    assert float(jax.jit(targets.get("lj13").log_prob)(_with_close_pair("lj13", 0.0))) == -np.inf


def test_softcore_matches_exact_above_cutoff_and_is_c1():
    cutoff = particles.LJ_SOFTCORE_CUTOFF

    def pair_of_r(r, softcore):
        return particles.lennard_jones_pair(r * r, cutoff if softcore else None)

    with jax.enable_x64(True):
        pair = jax.jit(jax.vmap(jax.value_and_grad(pair_of_r), in_axes=(0, None)), static_argnums=1)
        r = jnp.asarray([cutoff - 1e-7, cutoff + 1e-7, cutoff + 1e-3, 0.9, 1.0, 1.5, 3.0, 0.5, 0.0])
        soft, soft_slope = map(np.asarray, pair(r, True))
        exact, exact_slope = map(np.asarray, pair(r, False))
    # Identical above the cutoff.
    np.testing.assert_allclose(soft[1:7], exact[1:7], rtol=1e-12)
    # Value and slope continuous across r_c (soft branch just below, exact just above).
    assert soft[0] == pytest.approx(exact[1], abs=1e-4)
    assert soft_slope[0] == pytest.approx(exact_slope[1], rel=1e-5)
    # Linear below the cutoff: finite, bounded and repulsive down to r = 0.
    assert np.isfinite(soft[-1]) and soft[-1] > soft[-2] > soft[0]
    assert soft_slope[-2] == pytest.approx(soft_slope[0], rel=1e-6)
    assert targets.TARGETS.meta("lj13_softcore")["training_only"] is True
    assert targets.get("lj13_softcore").reference is None
    with pytest.raises(ValueError, match="cutoff"):
        targets.get("lj13_softcore", cutoff=1.5)


def test_single_count_variant_halves_the_pair_energy():
    x = _with_close_pair("lj13", 1.0)
    full, single = targets.get("lj13"), targets.get("lj13_single_count")
    harmonic = float(jax.jit(particles.harmonic_energy, static_argnums=1)(x, particles.LJ13_SPEC))
    e_full, e_single = (-float(jax.jit(t.log_prob)(x)) for t in (full, single))
    assert e_full - harmonic == pytest.approx(2 * (e_single - harmonic), rel=1e-5)


def test_wrong_shape_and_unknown_names_raise():
    with pytest.raises(ValueError, match=r"\(8,\)"):
        particles.dw4_energy(jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"\(39,\)"):
        particles.lj13_energy(jnp.zeros(38))
    with pytest.raises(ValueError, match="vmap"):
        targets.get("lj55").log_prob(jnp.zeros((2, 165)))
    with pytest.raises(ValueError, match="dw4, lj13, lj55"):
        particles.energy_fn("lj38")
    with pytest.raises(ValueError, match="lj13"):
        targets.get("lj31")


@pytest.mark.parametrize("name", EVALUATION_TARGETS)
def test_target_contract(name):
    target = targets.get(name)
    spec = particles.PARTICLE_SPECS[name]
    assert target.particles == spec and target.dim == spec.n_particles * spec.spatial_dim
    assert target.log_Z is None and not target.exact_samples
    assert set(target.capabilities) == {"reference_set", "particles"}
    assert target.reference.provenance["target"] == name


# ---------------------------------------------------------------------------------------------
# Reference sets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EVALUATION_TARGETS)
def test_reference_set_shape_centring_energies(name, reference_sets, reference_energies):
    samples, energies = reference_sets[name], reference_energies[name]
    spec = particles.PARTICLE_SPECS[name]
    provenance = targets.get(name).reference.provenance
    assert samples.dtype == np.float32
    assert samples.shape[1] == spec.n_particles * spec.spatial_dim
    assert samples.shape[0] >= MIN_REFERENCE_SIZE[name] and samples.shape[0] == provenance["num_samples"]
    centre = samples.reshape(-1, spec.n_particles, spec.spatial_dim).mean(axis=1)
    assert np.abs(centre).max() < 1e-5 * max(1.0, np.abs(samples).max())
    assert np.all(np.isfinite(energies))
    stats = provenance["statistics"]
    assert energies.mean() == pytest.approx(stats["energy_mean"], abs=1e-4)
    assert energies.std(ddof=1) == pytest.approx(stats["energy_sd"], rel=1e-4)
    assert provenance["diagnostics"]["energy_rhat"] < 1.05


@pytest.mark.parametrize("name", EVALUATION_TARGETS)
def test_reference_set_halves_agree(name, reference_energies):
    """Chains split in two halves give the same energy law, within the recorded noise floor."""
    target = targets.get(name)
    provenance = target.reference.provenance
    with np.load(target.reference.path) as data:
        chain = np.asarray(data["chain"])
    energies = reference_energies[name]
    num_chains = provenance["config"]["num_chains"]
    first = energies[chain < num_chains // 2]
    second = energies[(chain >= num_chains // 2) & (chain < 2 * (num_chains // 2))]
    w2 = float(np.sqrt(np.mean((np.sort(first) - np.sort(second)) ** 2)))
    floor = provenance["noise_floor"]["energy_w2"]
    sd = provenance["statistics"]["energy_sd"]
    # The recorded noise floor is reproduced from the shipped file and is small against the spread.
    assert w2 == pytest.approx(floor, rel=1e-3)
    assert w2 < 1.5 * floor and floor < 0.25 * sd
    # Means of the halves agree within 5 standard errors (ESS of each half: half the recorded ESS).
    ess_half = provenance["diagnostics"]["energy_ess"] / 2
    assert abs(first.mean() - second.mean()) < 5 * sd * np.sqrt(2 / ess_half)
    # And their distributions: two-sample KS at p > 1e-4 (uses the ESS, not the raw size, via thinning).
    stride = max(1, int(round(first.size / ess_half)))
    assert scipy.stats.ks_2samp(first[::stride], second[::stride]).pvalue > 1e-4


@pytest.mark.slow
def test_generation_script_is_deterministic(tmp_path, monkeypatch):
    """A tiny DW4 run of scripts/generate_reference_sets.py twice gives byte-identical files."""
    import dataclasses
    import sys

    # dataclasses resolve their module by name
    register = lambda name, module: monkeypatch.setitem(sys.modules, name, module)
    module = load_script("generate_reference_sets", register)
    config = dataclasses.replace(
        module.CONFIGS["dw4"],
        num_chains=4,
        num_warmup_steps=20,
        num_burnin_steps=10,
        thinning=2,
        num_samples_per_chain=8,
    )
    for run in ("a", "b"):
        module.generate(config, tmp_path / run, log=lambda s: None)
    for suffix in ("npz", "json"):
        first = (tmp_path / "a" / f"dw4_reference.{suffix}").read_bytes()
        assert first == (tmp_path / "b" / f"dw4_reference.{suffix}").read_bytes()
    with np.load(tmp_path / "a" / "dw4_reference.npz") as data:
        assert data["samples"].shape == (32, 8) and data["chain"].shape == (32,)


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_nan_configuration_gives_nan_energy(name):
    target = targets.get(name)
    x = jnp.zeros(target.dim).at[0].set(jnp.nan)
    assert bool(jnp.isnan(target.log_prob(x)))
