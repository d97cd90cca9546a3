"""Generate the DW4 / LJ13 / LJ55 reference sets with the suite's own MCMC (blackjax HMC).

Usage (from the repository root; writes `targets/data/{name}_reference.{npz,json}`):

    nohup nice -n 5 .venv/bin/python scripts/generate_reference_sets.py --target all > /tmp/refgen.log 2>&1 &
    .venv/bin/python scripts/generate_reference_sets.py --target lj13

Sampler. `num_chains` independent replica sets, each a ladder of inverse temperatures
`β_0 = 1 > β_1 > … > β_{K−1}` (K = 1 is plain HMC). Every replica makes one blackjax HMC transition
(identity mass matrix, `num_integration_steps` leapfrog steps, step size per temperature, jittered
uniformly by ±`step_size_jitter` per transition to avoid periodic trajectories) targeting
`exp(−β_k E)`, followed by one round of neighbour swaps (deterministic even/odd alternation),
accepted with probability `min(1, exp((β_k − β_{k+1})(E_k − E_{k+1})))`. Chains are `vmap`ped over
(temperature, chain) and steps are a `lax.scan`. The step size of each temperature is tuned during
a warm-up by blackjax's dual averaging on the acceptance rate averaged over chains, then frozen;
after a burn-in, the β = 1 replica of each chain is saved every `thinning` steps.

Centre of mass. Every energy is translation invariant (the LJ harmonic term is about the particle
mean `x̄`, so it does not pin the mean either): the density is flat along the centre of mass and the
target is its restriction to the zero-CoM subspace. Because `E(x + 1⊗c) = E(x)`, the HMC kernel is
translation equivariant, `K(x + 1⊗c, A + 1⊗c) = K(x, A)`, and so is the swap move; hence the
projected chain `P x_t` (`P` = subtract the particle mean, an orthogonal projection) is itself a
Markov chain, and it is exactly the HMC chain for `exp(−E)` on the subspace (the CoM part of the
momentum moves freely and cancels in the Hamiltonian difference because ∇E has zero CoM part).
We therefore project the positions after every transition (`remove_mean`), which leaves the law of
the centred chain unchanged and keeps the CoM from drifting (float32 precision).

Symmetries. The target is invariant under O(D) and particle permutations, which HMC explores only
slowly (rotational diffusion, exchanges). Each saved sample is mapped by an independent uniformly
random orthogonal matrix (Haar, reflections included) and particle permutation; for an invariant
target this is an exact Metropolis move with acceptance 1 and leaves every invariant statistic
(energies, distances) untouched.

Output. Samples are saved centred as float32 in a deterministic compressed `.npz` (`samples`
`(N, dim)`, `chain` `(N,)`), with a provenance JSON: the command, seeds, chains, temperatures, steps,
burn-in, thinning, step sizes, acceptance and swap rates, energy ESS and R-hat (blackjax
diagnostics), energy mean/sd, the noise floor (energy W2 and interatomic-distance W2² between the
two halves split by chain), a Stein-identity check of the sampled density, and the DEM/EquiFM data
statistics for comparison. The files are bit-for-bit reproducible for the same seeds and package
versions on the same platform (no timestamps are written; wall time goes to the log only).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import platform
import sys
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from samplers.promotion import standard_promotion  # noqa: E402
from targets.base import ParticleSpec, remove_mean  # noqa: E402
from targets.particles import (  # noqa: E402
    DATA_DIR,
    PARTICLE_SPECS,
    energy_fn,
    interatomic_distances,
    lennard_jones_energy,
)

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Everything that determines one reference set (recorded verbatim in the provenance).

    Attributes:
        target: particle target name (`dw4`, `lj13`, `lj55`).
        seed: master seed: `key(seed)` splits into (start, run) keys, `run` into (warm-up, burn-in,
            sampling); the per-sample symmetry key is `fold_in(key(seed), 3)`.
        num_chains: independent replica sets (chains at β = 1).
        betas: inverse temperatures, `betas[0] = 1` (the target), decreasing.
        num_integration_steps: leapfrog steps per HMC transition.
        initial_step_size: dual-averaging starting step size (all temperatures).
        target_acceptance: dual-averaging target for the chain-averaged HMC acceptance rate.
        step_size_jitter: per-transition step size is `ε·U(1 − j, 1 + j)`.
        num_warmup_steps: step-size adaptation steps (discarded).
        num_burnin_steps: further steps at the frozen step sizes (discarded).
        thinning: transitions between saved samples.
        num_samples_per_chain: saved samples per chain.
        start: `minimised_random` (each chain: random normal × `start_scale`, locally minimised) or
            `icosahedral` (LJ13 icosahedron / LJ55 Mackay icosahedron, locally minimised).
        start_scale: std of the random start (`minimised_random` only).
        start_noise: std of the Gaussian perturbation of each chain's start.
    """

    target: str
    seed: int
    num_chains: int
    betas: tuple[float, ...]
    num_integration_steps: int
    initial_step_size: float
    target_acceptance: float
    step_size_jitter: float
    num_warmup_steps: int
    num_burnin_steps: int
    thinning: int
    num_samples_per_chain: int
    start: str
    start_scale: float = 1.0
    start_noise: float = 0.05

    @property
    def num_samples(self) -> int:
        return self.num_chains * self.num_samples_per_chain


# Geometric β ladders. DW4: pair barriers of 4.44 kT, crossed easily at the hottest T = 4. LJ13 / LJ55 at
# T = 1 are liquid-like (E ≈ E_min + 40 / + 166) and equilibrate from the minimum within a few hundred
# transitions; LJ13 keeps a short ladder as insurance, LJ55 (pilot: energy autocorrelation ≈ 24
# transitions at L = 10, R-hat 1.01 after 300 steps) uses plain HMC to stay within the time budget.
CONFIGS: dict[str, GenerationConfig] = {
    "dw4": GenerationConfig(
        target="dw4",
        seed=20240401,
        num_chains=128,
        betas=tuple(np.geomspace(1.0, 0.25, 6).round(6)),
        num_integration_steps=8,
        initial_step_size=0.1,
        target_acceptance=0.75,
        step_size_jitter=0.2,
        num_warmup_steps=1000,
        num_burnin_steps=2000,
        thinning=25,
        num_samples_per_chain=80,
        start="minimised_random",
        start_scale=2.0,
    ),
    "lj13": GenerationConfig(
        target="lj13",
        seed=20240413,
        num_chains=128,
        betas=tuple(np.geomspace(1.0, 0.5, 4).round(6)),
        num_integration_steps=10,
        initial_step_size=0.01,
        target_acceptance=0.75,
        step_size_jitter=0.2,
        num_warmup_steps=500,
        num_burnin_steps=1000,
        thinning=25,
        num_samples_per_chain=80,
        start="icosahedral",
    ),
    "lj55": GenerationConfig(
        target="lj55",
        seed=20240455,
        num_chains=32,
        betas=(1.0,),
        num_integration_steps=10,
        initial_step_size=0.01,
        target_acceptance=0.75,
        step_size_jitter=0.2,
        num_warmup_steps=400,
        num_burnin_steps=600,
        thinning=25,
        num_samples_per_chain=64,
        start="icosahedral",
    ),
}

# DEM / EquiFM data statistics (targets.md §4.2, recomputed there from DEM's test splits).
DEM_STATISTICS: dict[str, dict[str, float]] = {
    "dw4": {
        "energy_mean": -22.45,
        "energy_sd": 1.90,
        "energy_min": -25.75,
        "distance_mean": 3.97,
        "distance_sd": 1.34,
    },
    "lj13": {"energy_mean": -43.13, "energy_sd": 7.02, "distance_min": 0.83, "distance_mean": 1.64},
    "lj55": {},
}

# Minimum energies for validating the start: LJ13 iDEM-convention minimum (targets.md §4.1, recomputed
# there) and the Σ_{i<j} LJ global minima (Cambridge Cluster Database).
KNOWN_MINIMA = {
    "lj13": {"idem": -83.0896, "pair_sum_single_count": -44.326801},
    "lj55": {"pair_sum_single_count": -279.248470},
}


# ---------------------------------------------------------------------------------------------
# Starting configurations
# ---------------------------------------------------------------------------------------------


def icosahedron_vertices() -> np.ndarray:
    """The 12 vertices `(0, ±1, ±φ)` and cyclic permutations, scaled to unit radius."""
    phi = (1.0 + 5.0**0.5) / 2.0
    base = []
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            base += [(0.0, s1, s2 * phi), (s1, s2 * phi, 0.0), (s2 * phi, 0.0, s1)]
    v = np.asarray(base)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def mackay_icosahedron(num_shells: int) -> np.ndarray:
    """Mackay icosahedron: centre plus shells k = 1..num_shells (vertices, edge and face points).

    Shell `k` puts `k − 1` points on each of the 30 edges and `(k − 1)(k − 2)/2` on each of the 20 faces
    of an icosahedron of radius `k`: 1, 13, 55, 147 atoms for 0, 1, 2, 3 shells. Unit nearest-neighbour
    radial spacing (rescale before use).
    """
    v = icosahedron_vertices()
    edge = np.min([np.linalg.norm(v[0] - w) for w in v[1:]])
    edges = [(a, b) for a in range(12) for b in range(a + 1, 12) if np.linalg.norm(v[a] - v[b]) < edge * 1.01]
    faces = [
        (a, b, c)
        for a in range(12)
        for b in range(a + 1, 12)
        for c in range(b + 1, 12)
        if {(a, b), (a, c), (b, c)} <= set(edges)
    ]
    points = [np.zeros(3)]
    for k in range(1, num_shells + 1):
        points += list(k * v)
        for a, b in edges:
            points += [(k - m) * v[a] + m * v[b] for m in range(1, k)]
        for a, b, c in faces:
            points += [(k - m - n) * v[a] + m * v[b] + n * v[c] for m in range(1, k) for n in range(1, k - m)]
    return np.asarray(points)


@functools.cache
def _jitted_value_and_grad(energy):
    return jax.jit(jax.value_and_grad(energy))


def minimise(energy, x0: np.ndarray) -> tuple[np.ndarray, float]:
    """Local minimisation (scipy L-BFGS-B, float64 under a scoped x64 switch) from `x0` `(dim,)`."""
    value_and_grad = _jitted_value_and_grad(energy)
    with jax.enable_x64(True):

        def fun(x):
            e, g = value_and_grad(jnp.asarray(x, dtype=jnp.float64))
            return float(e), np.asarray(g, dtype=np.float64)

        result = scipy.optimize.minimize(
            fun,
            np.asarray(x0, np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "gtol": 1e-9, "ftol": 1e-15},
        )
    return result.x, float(result.fun)


def random_orthogonal(key: jax.Array, dim: int) -> jax.Array:
    """Haar-distributed `O(dim)` matrix (QR of a Gaussian with the sign fix; det ±1 equally likely)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def random_symmetry(key: jax.Array, x: jax.Array, spec: ParticleSpec) -> jax.Array:
    """Apply an independent uniform O(D) element and particle permutation to ONE configuration."""
    key_rotation, key_permutation = jax.random.split(key)
    pos = x.reshape(spec.n_particles, spec.spatial_dim)
    pos = pos @ random_orthogonal(key_rotation, spec.spatial_dim).T
    pos = pos[jax.random.permutation(key_permutation, spec.n_particles)]
    return pos.reshape(x.shape)


def start_minimum(config: GenerationConfig, key: jax.Array) -> tuple[np.ndarray, dict]:
    """Per-chain starting points `(num_chains, dim)` (centred) and a record of the minima found."""
    name, spec = config.target, PARTICLE_SPECS[config.target]
    energy = energy_fn(name)
    dim = spec.n_particles * spec.spatial_dim
    key_random, key_symmetry, key_noise = jax.random.split(key, 3)
    record: dict = {"kind": config.start}
    if config.start == "icosahedral":
        num_shells = {13: 1, 55: 2}[spec.n_particles]
        x0 = mackay_icosahedron(num_shells).reshape(-1)
        pair_only = lambda x: lennard_jones_energy(x, spec, pair_factor=1.0, oscillator_scale=0.0)
        _, e_pair = minimise(pair_only, x0)
        x_min, e_min = minimise(energy, x0)
        record.update(
            energy_minimum=e_min,
            pair_sum_single_count_minimum=e_pair,
            known_minima=KNOWN_MINIMA.get(name, {}),
        )
        minima = np.broadcast_to(x_min, (config.num_chains, dim))
    elif config.start == "minimised_random":
        x_rand = np.asarray(jax.random.normal(key_random, (config.num_chains, dim)), np.float64)
        found = [minimise(energy, config.start_scale * x) for x in x_rand]
        minima = np.stack([m for m, _ in found])
        energies = np.asarray([e for _, e in found])
        record.update(
            energy_minimum=float(energies.min()),
            start_energies_distinct=sorted({round(float(e), 4) for e in energies}),
        )
    else:
        raise ValueError(f"unknown start {config.start!r}; valid: icosahedral, minimised_random")
    keys = jax.random.split(key_symmetry, config.num_chains)
    starts = jax.vmap(lambda k, x: random_symmetry(k, x, spec))(keys, jnp.asarray(minima, jnp.float32))
    starts = starts + config.start_noise * jax.random.normal(key_noise, starts.shape)
    return np.asarray(remove_mean(starts, spec)), record


# ---------------------------------------------------------------------------------------------
# Parallel-tempering HMC (pure functions; vmap over temperatures and chains, scan over steps)
# ---------------------------------------------------------------------------------------------


class TemperedState(NamedTuple):
    """Replica positions and their energies / energy gradients, all `(K, C, ...)`."""

    position: jax.Array
    energy: jax.Array
    energy_grad: jax.Array


class TransitionInfo(NamedTuple):
    """Per-transition diagnostics: HMC acceptance `(K, C)`, swap attempted / accepted `(K − 1, C)`."""

    acceptance_rate: jax.Array
    swap_attempted: jax.Array
    swap_accepted: jax.Array


def build_transition(
    energy, spec: ParticleSpec, betas: jax.Array, num_integration_steps: int, step_size_jitter: float
):
    """One PT-HMC transition `(key, state, step_sizes (K,), parity) -> (state, info)`."""
    hmc_kernel = blackjax.mcmc.hmc.build_kernel()
    energy_and_grad = jax.value_and_grad(energy)
    num_temperatures = betas.shape[0]

    def hmc_one(key, position, e, g, beta, step_size):
        def log_prob(x):
            return -beta * energy(x)

        key_jitter, key_hmc = jax.random.split(key)
        jitter = jax.random.uniform(key_jitter, minval=1.0 - step_size_jitter, maxval=1.0 + step_size_jitter)
        state = blackjax.mcmc.hmc.HMCState(position, -beta * e, -beta * g)
        new, info = hmc_kernel(
            key_hmc, state, log_prob, step_size * jitter, jnp.ones_like(position), num_integration_steps
        )
        centred = remove_mean(new.position, spec)
        return centred, -new.logdensity / beta, -new.logdensity_grad / beta, info.acceptance_rate

    hmc_all = jax.vmap(jax.vmap(hmc_one, in_axes=(0, 0, 0, 0, None, None)), in_axes=(0, 0, 0, 0, 0, 0))

    def transition(key, state: TemperedState, step_sizes, parity):
        key_hmc, key_swap = jax.random.split(key)
        num_chains = state.position.shape[1]
        keys = jax.random.split(key_hmc, num_temperatures * num_chains).reshape(num_temperatures, num_chains)
        position, e, g, acceptance = hmc_all(
            keys, state.position, state.energy, state.energy_grad, betas, step_sizes
        )
        # Exact energies after the projection (invariance makes them equal up to rounding).
        del e, g
        e, g = jax.vmap(jax.vmap(energy_and_grad))(position)
        if num_temperatures == 1:
            empty = jnp.zeros((0, num_chains), bool)
            return TemperedState(position, e, g), TransitionInfo(acceptance, empty, empty)
        # Swap (k, k+1) for k of the given parity: log α = (β_k − β_{k+1})(E_k − E_{k+1}).
        log_alpha = (betas[:-1, None] - betas[1:, None]) * (e[:-1] - e[1:])
        pair = jnp.arange(num_temperatures - 1)[:, None]
        attempted = jnp.broadcast_to(pair % 2 == parity, log_alpha.shape)
        log_u = jnp.log(jax.random.uniform(key_swap, log_alpha.shape))
        accepted = attempted & (log_u < log_alpha)
        false_row = jnp.zeros((1, num_chains), bool)
        up = jnp.concatenate([accepted, false_row])[..., None]  # slot k takes k+1
        down = jnp.concatenate([false_row, accepted])[..., None]  # slot k takes k-1

        def swap(a):
            extra = a.ndim - 2
            u = up.reshape(up.shape[:2] + (1,) * extra)
            d = down.reshape(down.shape[:2] + (1,) * extra)
            return jnp.where(u, jnp.roll(a, -1, axis=0), jnp.where(d, jnp.roll(a, 1, axis=0), a))

        new = TemperedState(swap(position), swap(e), swap(g))
        return new, TransitionInfo(acceptance, attempted, accepted)

    return transition


def run(config: GenerationConfig, starts: np.ndarray, key: jax.Array, *, log=print) -> dict:
    """Warm-up (dual averaging), burn-in and sampling. Returns samples, energies and diagnostics."""
    spec = PARTICLE_SPECS[config.target]
    energy = energy_fn(config.target)
    betas = jnp.asarray(config.betas, jnp.float32)
    num_temperatures = betas.shape[0]
    transition = build_transition(energy, spec, betas, config.num_integration_steps, config.step_size_jitter)
    position = jnp.broadcast_to(jnp.asarray(starts, jnp.float32), (num_temperatures, *starts.shape))
    e, g = jax.vmap(jax.vmap(jax.value_and_grad(energy)))(position)
    state = TemperedState(position, e, g)
    key_warmup, key_burnin, key_sample = jax.random.split(key, 3)

    da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(
        config.target_acceptance
    )

    @jax.jit
    def warmup(key, state):
        da_state = jax.vmap(da_init)(jnp.full((num_temperatures,), config.initial_step_size, jnp.float32))

        def body(carry, inputs):
            state, da_state = carry
            key, parity = inputs
            step_sizes = jnp.exp(da_state.log_step_size)
            state, info = transition(key, state, step_sizes, parity)
            da_state = jax.vmap(da_update)(da_state, info.acceptance_rate.mean(axis=1))
            return (state, da_state), info.acceptance_rate.mean(axis=1)

        keys = jax.random.split(key, config.num_warmup_steps)
        parities = jnp.arange(config.num_warmup_steps) % 2
        (state, da_state), _ = jax.lax.scan(body, (state, da_state), (keys, parities))
        return state, jax.vmap(da_final)(da_state)

    def chunk(key, state, step_sizes, num_steps):
        def body(state, inputs):
            key, parity = inputs
            state, info = transition(key, state, step_sizes, parity)
            return state, info

        keys = jax.random.split(key, num_steps)
        state, info = jax.lax.scan(body, state, (keys, jnp.arange(num_steps) % 2))
        stats = (
            info.acceptance_rate.mean(axis=(0, 2)),
            info.swap_attempted.sum(axis=(0, 2)),
            info.swap_accepted.sum(axis=(0, 2)),
        )
        return state, stats

    @jax.jit
    def burnin(key, state, step_sizes):
        return chunk(key, state, step_sizes, config.num_burnin_steps)

    @jax.jit
    def sample(key, state, step_sizes):
        def body(state, key):
            state, stats = chunk(key, state, step_sizes, config.thinning)
            return state, (state.position[0], state.energy[0], stats)

        keys = jax.random.split(key, config.num_samples_per_chain)
        state, (positions, energies, stats) = jax.lax.scan(body, state, keys)
        return (
            positions,
            energies,
            jax.tree.map(lambda s: s.mean(axis=0) if s.dtype.kind == "f" else s.sum(axis=0), stats),
        )

    t0 = time.perf_counter()
    state, step_sizes = warmup(key_warmup, state)
    jax.block_until_ready(state)
    log(f"[{config.target}] warm-up {time.perf_counter() - t0:.1f}s, step sizes {np.asarray(step_sizes)}")
    t0 = time.perf_counter()
    state, (burn_acc, _, _) = burnin(key_burnin, state, step_sizes)
    jax.block_until_ready(state)
    log(f"[{config.target}] burn-in {time.perf_counter() - t0:.1f}s, acceptance {np.asarray(burn_acc)}")
    t0 = time.perf_counter()
    positions, energies, (acceptance, swap_attempted, swap_accepted) = sample(key_sample, state, step_sizes)
    jax.block_until_ready(positions)
    log(f"[{config.target}] sampling done in {time.perf_counter() - t0:.1f}s")
    swap_rate = np.asarray(swap_accepted, np.float64) / np.maximum(np.asarray(swap_attempted, np.float64), 1)
    return {
        # (S, C, dim) -> chain-major (C, S, dim)
        "positions": np.asarray(jnp.swapaxes(positions, 0, 1)),
        "energies": np.asarray(energies.T, np.float64),
        "step_sizes": np.asarray(step_sizes, np.float64),
        "acceptance_rate": np.asarray(acceptance, np.float64),
        "swap_acceptance_rate": swap_rate,
    }


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


def wasserstein_1d_squared(a: np.ndarray, b: np.ndarray) -> float:
    """Squared 1-D W2 between two empirical laws of equal size (sorted matching)."""
    a, b = np.sort(np.asarray(a, np.float64).ravel()), np.sort(np.asarray(b, np.float64).ravel())
    if a.shape != b.shape:
        raise ValueError(f"equal sizes expected, got {a.shape} and {b.shape}")
    return float(np.mean((a - b) ** 2))


def energies_float64(name: str, samples: np.ndarray) -> np.ndarray:
    """Energies of `(N, dim)` samples evaluated in float64 (scoped x64)."""
    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(energy_fn(name)))(jnp.asarray(samples, jnp.float64)))


def distances_float64(name: str, samples: np.ndarray) -> np.ndarray:
    spec = PARTICLE_SPECS[name]
    with jax.enable_x64(True):
        return np.asarray(
            jax.jit(jax.vmap(lambda x: interatomic_distances(x, spec)))(jnp.asarray(samples, jnp.float64))
        )


def stein_features(name: str):
    """`(φ, Δφ, true coefficients, labels)` with `E = c_1 φ_1 + c_2 φ_2`, for the Stein check.

    Each `φ_a` is a pair sum `Σ_{i<j} f(r_ij)` (or the harmonic term), whose Laplacian in `R^{n·D}` is
    analytic: `Δ f(‖x_i − x_j‖) = 2 [f''(r) + (D − 1) f'(r) / r]` (both particles contribute), and
    `Δ ½Σ‖x_i − x̄‖² = (n − 1) D`. This avoids materialising Hessians (165 × 165 for LJ55).
    """
    spec = PARTICLE_SPECS[name]
    d = spec.spatial_dim

    def pair_laplacian(r, f1, f2):
        return jnp.sum(2.0 * (f2 + (d - 1) * f1 / r))

    if name == "dw4":

        def phi(x):
            u = interatomic_distances(x, spec) - 4.0
            return jnp.stack([jnp.sum(u**4), jnp.sum(u**2)])

        def laplacian(x):
            r = interatomic_distances(x, spec)
            u = r - 4.0
            return jnp.stack(
                [
                    pair_laplacian(r, 4.0 * u**3, 12.0 * u**2),
                    pair_laplacian(r, 2.0 * u, jnp.full_like(u, 2.0)),
                ]
            )

        return phi, laplacian, (0.9, -4.0), ("quartic", "quadratic")

    def phi(x):
        pair = lennard_jones_energy(x, spec, pair_factor=1.0, oscillator_scale=0.0)
        harmonic = lennard_jones_energy(x, spec, pair_factor=0.0, oscillator_scale=1.0)
        return jnp.stack([pair, harmonic])

    def laplacian(x):
        r = interatomic_distances(x, spec)
        # f = r⁻¹² − 2r⁻⁶: f' = −12 r⁻¹³ + 12 r⁻⁷, f'' = 156 r⁻¹⁴ − 84 r⁻⁸.
        lj = pair_laplacian(r, -12.0 * r**-13 + 12.0 * r**-7, 156.0 * r**-14 - 84.0 * r**-8)
        return jnp.stack([lj, jnp.full_like(lj, (spec.n_particles - 1) * d)])

    return phi, laplacian, (2.0, 1.0), ("pair_factor", "oscillator_scale")


def stein_check(name: str, samples: np.ndarray, num_groups: int = 8) -> dict:
    """Recover the energy coefficients from the samples alone by Stein's identity.

    For `p ∝ exp(−E)` with `E = Σ_a c_a φ_a`, `E_p[∇E·∇φ_b] = E_p[Δφ_b]`, i.e. the linear system
    `Σ_a c_a E_p[∇φ_a·∇φ_b] = E_p[Δφ_b]` (valid on the zero-CoM subspace: the φ are translation
    invariant, so their gradients lie in it and their full-space Laplacian equals the subspace one).
    Solving it with sample averages checks that the samples follow `exp(−E)` at T = 1.
    """
    phi, laplacian, truth, labels = stein_features(name)
    with jax.enable_x64(True):
        x = jnp.asarray(samples, jnp.float64)

        def one(x):
            jac = jax.jacrev(phi)(x)  # (2, dim)
            return jac @ jac.T, laplacian(x)

        gram, lap = jax.lax.map(jax.jit(one), x, batch_size=256)
        gram, lap = np.asarray(gram), np.asarray(lap)
    coefficients = np.linalg.solve(gram.mean(axis=0), lap.mean(axis=0))
    # Standard error by batch means over `num_groups` contiguous groups (rows are chain-major, so
    # groups are sets of whole chains, independent of each other). The LJ estimator is heavy tailed
    # (Δ r⁻¹² ~ r⁻¹⁴ at close contacts), so treat its SE as indicative.
    groups = np.array_split(np.arange(x.shape[0]), num_groups)
    per_group = np.stack([np.linalg.solve(gram[g].mean(axis=0), lap[g].mean(axis=0)) for g in groups])
    se = per_group.std(axis=0, ddof=1) / np.sqrt(num_groups)
    return {
        "coefficients": dict(zip(labels, map(float, coefficients), strict=True)),
        "standard_error": dict(zip(labels, map(float, se), strict=True)),
        "true": dict(zip(labels, truth, strict=True)),
    }


def summarise(config: GenerationConfig, result: dict, start_record: dict) -> tuple[np.ndarray, dict]:
    name = config.target
    spec = PARTICLE_SPECS[name]
    positions = result["positions"]  # (C, S, dim), centred
    num_chains, num_per_chain, dim = positions.shape
    # Symmetry randomisation is part of the deterministic pipeline (key derived from the seed); all
    # statistics below are computed on exactly the float32 samples that are shipped.
    key_symmetry = jax.random.fold_in(jax.random.key(config.seed), 3)
    keys = jax.random.split(key_symmetry, num_chains * num_per_chain)
    flat = jax.vmap(lambda k, x: random_symmetry(k, x, spec))(keys, jnp.asarray(positions.reshape(-1, dim)))
    samples = np.asarray(remove_mean(flat, spec), np.float32)
    flat = samples
    energies = energies_float64(name, flat).reshape(num_chains, num_per_chain)
    distances = distances_float64(name, flat).reshape(num_chains, num_per_chain, -1)
    ess = float(blackjax.diagnostics.effective_sample_size(jnp.asarray(energies, jnp.float32)))
    rhat_classic = float(blackjax.diagnostics.potential_scale_reduction(jnp.asarray(energies, jnp.float32)))
    # blackjax's rank normalisation divides int32 ranks by Python floats (implicit promotion)
    rhat_rank = float(standard_promotion(blackjax.diagnostics.rhat)(jnp.asarray(energies, jnp.float32)))
    half = num_chains // 2
    energy_w2_sq = wasserstein_1d_squared(energies[:half], energies[half : 2 * half])
    dist_w2_sq = wasserstein_1d_squared(distances[:half], distances[half : 2 * half])
    stats = {
        "energy_mean": float(energies.mean()),
        "energy_sd": float(energies.std(ddof=1)),
        "energy_mean_se": float(energies.std(ddof=1) / np.sqrt(ess)),
        "energy_min": float(energies.min()),
        "energy_max": float(energies.max()),
        "distance_mean": float(distances.mean()),
        "distance_sd": float(distances.std(ddof=1)),
        "distance_min": float(distances.min()),
    }
    diagnostics = {
        "energy_ess": ess,
        "energy_rhat": rhat_classic,
        "energy_rhat_rank_split": rhat_rank,
        "hmc_acceptance_rate": result["acceptance_rate"].tolist(),
        "swap_acceptance_rate": result["swap_acceptance_rate"].tolist(),
    }
    if name == "dw4":
        # Well occupancy: number of pairs in the short well (d < 4) per sample; a slowly mixing
        # discrete variable that the energy alone can miss.
        short = (distances < 4.0).sum(axis=-1).astype(np.float64)
        diagnostics["short_pairs_mean"] = float(short.mean())
        short_j = jnp.asarray(short, jnp.float32)
        diagnostics["short_pairs_ess"] = float(blackjax.diagnostics.effective_sample_size(short_j))
        diagnostics["short_pairs_rhat"] = float(blackjax.diagnostics.potential_scale_reduction(short_j))
    noise_floor = {
        "split": f"chains [0, {half}) vs [{half}, {2 * half}), {half * num_per_chain} samples each",
        "energy_w2": float(np.sqrt(energy_w2_sq)),
        "energy_w2_squared": energy_w2_sq,
        "interatomic_distance_w2_squared": dist_w2_sq,
        "energy_mean_difference": float(energies[:half].mean() - energies[half : 2 * half].mean()),
    }
    provenance = {
        "target": name,
        "command": f"python scripts/generate_reference_sets.py --target {name}",
        "description": "PT-HMC (blackjax) reference set, zero-CoM subspace, centred, float32; "
        "see the docstring of scripts/generate_reference_sets.py",
        "config": dataclasses.asdict(config),
        "num_samples": int(samples.shape[0]),
        "dim": dim,
        "step_sizes": result["step_sizes"].tolist(),
        "start": start_record,
        "statistics": stats,
        "diagnostics": diagnostics,
        "noise_floor": noise_floor,
        "stein_check": stein_check(name, samples),
        "dem_statistics": DEM_STATISTICS[name],
        "symmetrisation": "each saved sample mapped by an independent Haar O(D) matrix and particle "
        "permutation (exact for the invariant target)",
        "samples_sha256": hashlib.sha256(samples.tobytes()).hexdigest(),
        "versions": {
            "jax": jax.__version__,
            "blackjax": blackjax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.machine(),
        },
    }
    return samples, provenance


# ---------------------------------------------------------------------------------------------
# I/O and entry point
# ---------------------------------------------------------------------------------------------


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """`np.savez_compressed` without timestamps, so identical arrays give identical bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, payload.getvalue(), compresslevel=9)
    path.write_bytes(buffer.getvalue())


def generate(config: GenerationConfig, out_dir: Path, *, log=print) -> dict:
    """Generate, diagnose and write one reference set; returns its provenance record."""
    t_start = time.perf_counter()
    key = jax.random.key(config.seed)
    key_start, key_run = jax.random.split(key)
    starts, start_record = start_minimum(config, key_start)
    log(f"[{config.target}] start: {start_record}")
    result = run(config, starts, key_run, log=log)
    samples, provenance = summarise(config, result, start_record)
    chain = np.repeat(np.arange(config.num_chains, dtype=np.int16), config.num_samples_per_chain)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz_deterministic(out_dir / f"{config.target}_reference.npz", samples=samples, chain=chain)
    (out_dir / f"{config.target}_reference.json").write_text(json.dumps(provenance, indent=2) + "\n")
    log(
        f"[{config.target}] wrote {samples.shape} in {time.perf_counter() - t_start:.1f}s wall: "
        + json.dumps({k: provenance[k] for k in ("statistics", "diagnostics", "noise_floor", "stein_check")})
    )
    return provenance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run (8 chains, few steps) to check the pipeline; never ship its output",
    )
    args = parser.parse_args(argv)
    for name in list(CONFIGS) if args.target == "all" else [args.target]:
        config = CONFIGS[name]
        if args.smoke:
            config = dataclasses.replace(
                config,
                num_chains=8,
                num_warmup_steps=50,
                num_burnin_steps=50,
                thinning=2,
                num_samples_per_chain=10,
            )
        generate(config, args.out_dir, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
