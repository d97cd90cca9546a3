"""The Target contract: an unnormalised density with its ground truth and capabilities.

A target is `γ(x) = exp(log_prob(x))` on R^dim with normaliser `Z = ∫ γ`. `log_prob` acts on ONE
point of shape `(dim,)` (batch with `jax.vmap`) and is differentiable with `jax.grad`.
Parameters are shipped as constants (never drawn from a PRNG at run time, see
`docs/targets.md` §7). Ground truth is either exact (`log_Z_se == 0`,
`sample` available) or a reference value / reference set with a standard error and provenance.

Particle systems (DW4, LJ) declare a `ParticleSpec`: `x` is `n_particles × spatial_dim`
flattened particle-major, and everything lives on the zero centre-of-mass subspace, so Gaussian
normalisers count `(n_particles - 1) · spatial_dim` degrees of freedom.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ParticleSpec", "ReferenceSet", "Target", "TargetEntry", "entry", "remove_mean"]


@dataclasses.dataclass(frozen=True)
class ParticleSpec:
    """`n_particles` points in `spatial_dim` dimensions, flattened particle-major."""

    n_particles: int
    spatial_dim: int

    @property
    def dof(self) -> int:
        """Degrees of freedom on the zero centre-of-mass subspace: `(n - 1) · d`."""
        return (self.n_particles - 1) * self.spatial_dim


def remove_mean(x: jax.Array, spec: ParticleSpec) -> jax.Array:
    """Project flattened configurations `(..., n·d)` onto the zero centre-of-mass subspace."""
    shaped = x.reshape(*x.shape[:-1], spec.n_particles, spec.spatial_dim)
    return (shaped - shaped.mean(axis=-2, keepdims=True)).reshape(x.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Reference samples without an exact sampler, loaded lazily from `targets/data/`.

    Args:
        path: `.npz` file holding an array `samples` of shape `(n, dim)` (and optional extras).
        provenance: the record written by the generating script (command, seeds, chains,
            thinning, ESS / R-hat of the energy, acceptance, noise floor).
    """

    path: str
    provenance: Mapping[str, Any]

    def load(self) -> np.ndarray:
        with np.load(self.path) as data:
            return np.asarray(data["samples"])


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """An unnormalised target density `γ = exp(log_prob)` with ground truth and capabilities.

    Args:
        name: registry id (snake_case).
        dim: dimension of one point.
        log_prob_fn: `(dim,) -> ()` unnormalised log density of ONE point.
        pretty_name: name for tables.
        log_Z: `log ∫ γ` if known (exact or reference), else `None`.
        log_Z_se: standard error of `log_Z` (0 for an exact value).
        log_Z_source: how `log_Z` was obtained (closed form, quadrature, SMC run, ...).
        sample_fn: `(key, n) -> (n, dim)` exact sampler, if one exists.
        reference: reference samples with provenance, when no exact sampler exists.
        particles: particle layout for particle systems.
        mixture: the `targets.mixtures.GaussianMixture` for mixture targets (mode metrics).
        ground_truth: named closed-form statistics, e.g. `{"mean": ..., "covariance": ...}`.
        description: one paragraph stating the definition and its source.
        finetune_task: for the tilted law of a reward fine-tuning task, its
            `targets.finetuning.FinetuneTask` (the harness then builds a fine-tuning Problem and runs
            the fine-tuning metrics); None for sampling targets.
    """

    name: str
    dim: int
    log_prob_fn: Callable[[jax.Array], jax.Array]
    pretty_name: str = ""
    log_Z: float | None = None
    log_Z_se: float = 0.0
    log_Z_source: str = ""
    sample_fn: Callable[[jax.Array, int], jax.Array] | None = None
    reference: ReferenceSet | None = None
    particles: ParticleSpec | None = None
    mixture: Any = None
    ground_truth: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    finetune_task: Any = None

    def __post_init__(self):
        if not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"target {self.name!r}: dim must be a positive integer, got {self.dim!r}")
        if self.particles is not None and self.particles.n_particles * self.particles.spatial_dim != self.dim:
            raise ValueError(f"target {self.name!r}: particles {self.particles} do not match dim {self.dim}")
        if not self.pretty_name:
            object.__setattr__(self, "pretty_name", self.name)

    # -- capability flags (the harness filters on these, never on hasattr) -------------------
    @property
    def exact_samples(self) -> bool:
        """True when `sample` draws exact, independent samples."""
        return self.sample_fn is not None

    @property
    def log_Z_known(self) -> bool:
        return self.log_Z is not None

    @property
    def is_particle_system(self) -> bool:
        return self.particles is not None

    @property
    def capabilities(self) -> tuple[str, ...]:
        caps = []
        if self.exact_samples:
            caps.append("exact_samples")
        elif self.reference is not None:
            caps.append("reference_set")
        if self.log_Z_known:
            caps.append("log_Z_known" if self.log_Z_se == 0 else "log_Z_reference")
        if self.is_particle_system:
            caps.append("particles")
        if self.mixture is not None:
            caps.append("mixture")
        if self.finetune_task is not None:
            caps.append("finetune")
        return tuple(caps)

    # -- the contract ------------------------------------------------------------------------
    def log_prob(self, x: jax.Array) -> jax.Array:
        """Unnormalised log density of ONE point `x` of shape `(dim,)`."""
        shape = jnp.shape(x)
        if shape != (self.dim,):
            raise ValueError(
                f"target {self.name!r}: log_prob takes one point of shape ({self.dim},), got {shape}; "
                "batch with jax.vmap"
            )
        return self.log_prob_fn(jnp.asarray(x))

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """Exact samples of shape `(num_samples, dim)`."""
        if self.sample_fn is None:
            raise NotImplementedError(
                f"target {self.name!r} has no exact sampler (capabilities: {', '.join(self.capabilities)}); "
                "use reference_samples()"
                if self.reference is not None
                else f"target {self.name!r} has no exact sampler and no reference set"
            )
        if not isinstance(num_samples, int | np.integer) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self.sample_fn(key, int(num_samples))

    def reference_samples(self, key: jax.Array | None = None, num_samples: int | None = None) -> jax.Array:
        """Target samples for metrics: exact draws when possible, else the shipped reference set.

        With a reference set, `num_samples` rows are drawn without replacement using `key`
        (all rows, in file order, when `num_samples` is None).
        """
        if self.sample_fn is not None:
            if key is None or num_samples is None:
                raise ValueError(f"target {self.name!r} samples exactly: pass key and num_samples")
            return self.sample(key, num_samples)
        if self.reference is None:
            raise NotImplementedError(f"target {self.name!r} has no exact sampler and no reference set")
        data = jnp.asarray(self.reference.load())
        if num_samples is None:
            return data
        if num_samples > data.shape[0]:
            raise ValueError(
                f"target {self.name!r}: asked for {num_samples} reference samples, "
                f"the set has {data.shape[0]}"
            )
        if key is None:
            raise ValueError("pass a key to subsample the reference set")
        idx = jax.random.choice(key, data.shape[0], (num_samples,), replace=False)
        return data[idx]

    def fingerprint(self) -> str:
        """A short hash of the definition: name, dim, log Z and `log_prob` at fixed points.

        Recorded with every result so that a silently changed target is detectable.
        """
        points = np.random.default_rng(12345).normal(size=(8, self.dim)) * 1.5
        if self.particles is not None:
            points = np.asarray(remove_mean(jnp.asarray(points), self.particles))
        values = np.asarray(jax.vmap(self.log_prob_fn)(jnp.asarray(points, dtype=jnp.float32)), np.float64)
        if values.shape != (len(points),):
            raise ValueError(
                f"target {self.name!r}: log_prob must return a scalar for one point of shape ({self.dim},), "
                f"got shape {values.shape[1:]}"
            )
        text = f"{self.name}|{self.dim}|{self.log_Z}|" + ",".join(f"{v:.4g}" for v in values)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """One row for `tiltbench targets` and the README table."""
        return {
            "name": self.name,
            "pretty_name": self.pretty_name,
            "dim": self.dim,
            "log_Z": self.log_Z,
            "log_Z_se": self.log_Z_se,
            "log_Z_source": self.log_Z_source,
            "capabilities": list(self.capabilities),
        }


class TargetEntry(NamedTuple):
    """A built-in target's registry entry: each target module lists its entries in `ENTRIES`, and
    `targets/__init__.py` registers them all in one place (no module registers itself on import).

    Attributes:
        name: registry id.
        factory: `(**overrides) -> Target`.
        meta: registry metadata (`family`, and e.g. `training_only`, `evaluate_on`, `variant_of`).
    """

    name: str
    factory: Callable[..., Target]
    meta: Mapping[str, Any]


def entry(name: str, factory: Callable[..., Target], **meta: Any) -> TargetEntry:
    """`TargetEntry(name, factory, meta)`."""
    return TargetEntry(name, factory, meta)
