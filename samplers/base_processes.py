"""Base (reference) processes of the exponential-tilting framework (their noise schedules:
`samplers.schedules`, re-exported here).

A base process is an SDE on `[t_start, 1]` (time convention of `docs/methods.md` §0:
`t = 0` is the noise end, `t = 1` the data end)

    dX = b(X, t) dt + σ(t) dB,        X_{t_start} ~ p_0,

with terminal law `p^base_1`. A task tilts it, `p*(x) ∝ p^base_1(x) exp(r(x))` (methods.md §1.1),
and a learned control `u_θ` is added in the paper form (P1): `dX = (b + σ u) dt + σ dB`.

Four kinds are provided (`BaseProcess.kind`):

- `"brownian"`: Brownian motion from a Dirac at 0 (`b = 0`), with a `LinearSchedule`
  (`σ` constant) or a `GeometricSchedule` (the VE schedule of Adjoint Sampling, methods.md §3.1).
  Memoryless: `X_0` is a constant, so `X_0 ⊥ X_1` trivially.
- `"brownian_source"`: the same Brownian motion started at a Gaussian source `N(0, v I)`
  (`SourceBrownianBase`, the reference process of ASBS, methods.md §3.6). Not memoryless.
- `"vp"`: the variance-preserving OU process `b = -½β(t) x`, `σ(t) = σ_0 sqrt(β(t))`, started at
  its stationary law `N(0, σ_0² I)` (the DDS reference, methods.md §7.1). Not memoryless.
- `"flow"`: the memoryless SDE of a rectified-flow model (methods.md §2.1), `b = 2v(x, t) - x/t`,
  `σ(t) = sqrt(2(1 - t)/t)`, started at `t_0 > 0`.

The Brownian and VP bases have a linear drift `b = ℓ(t) x` and a Gaussian (or Dirac) initial
law, so their Euler–Maruyama (EM) chain on a grid `t_0 < … < t_K` is a Gaussian AR(1) chain
`x_{k+1} = a_k x_k + c_k ε_k` (`a_k = 1 + h_k ℓ(t_k)`, `c_k = σ(t_k) sqrt(h_k)`) whose marginals
`N(0, s_k I)` and exact time reversal are known in closed form (`DiscreteChain`). This is what
makes the path weights of `samplers.sde` exact for the *discrete* chain (methods.md §7.1, §10.7).

Particle systems: with `particles` set, states live on the zero centre-of-mass subspace
(`targets.base.remove_mean`); noise, drifts and controls are projected onto it, and every
isotropic Gaussian density counts `(n - 1)·d` degrees of freedom (methods.md §0, §10.8).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers.promotion import float_dtype
from samplers.schedules import SCHEDULES, AbstractNoiseSchedule, GeometricSchedule, LinearSchedule
from targets.base import ParticleSpec, remove_mean
from targets.registry import Registry

__all__ = [
    "BASE_PROCESSES",
    "SCHEDULES",
    "AbstractBaseProcess",
    "AbstractBrownianBase",
    "AbstractLinearGaussianBase",
    "AbstractNoiseSchedule",
    "BrownianBase",
    "DiscreteChain",
    "GeometricSchedule",
    "LinearSchedule",
    "MemorylessFlowBase",
    "SourceBrownianBase",
    "VPBase",
    "gaussian_log_prob",
    "project",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def gaussian_log_prob(x: jax.Array, mean: jax.Array, var: jax.Array, dof: int) -> jax.Array:
    """Log density of the isotropic Gaussian `N(mean, var·I)` with `dof` degrees of freedom.

    `log N = -½|x - mean|²/var - (dof/2) log(2π var)`. For a particle system `x - mean` lies in
    the zero centre-of-mass subspace and `dof = (n - 1)·d` (the density is with respect to
    Lebesgue measure on that subspace); otherwise `dof = dim`.

    Args:
        x: one point `(dim,)`.
        mean: `(dim,)` (or broadcastable).
        var: scalar variance, > 0.
        dof: degrees of freedom.

    Returns:
        Scalar log density.
    """
    return -0.5 * jnp.sum((x - mean) ** 2) / var - 0.5 * dof * jnp.log(2.0 * jnp.pi * var)


def project(x: jax.Array, particles: ParticleSpec | None) -> jax.Array:
    """Project `(..., dim)` onto the zero centre-of-mass subspace (identity without particles)."""
    return x if particles is None else remove_mean(x, particles)


def _check_dim(dim, particles: ParticleSpec | None, who: str) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"{who}: dim must be a positive integer, got {dim!r}")
    if particles is not None and particles.n_particles * particles.spatial_dim != dim:
        raise ValueError(f"{who}: particles {particles} do not match dim {dim}")


# ---------------------------------------------------------------------------------------------
# base processes
# ---------------------------------------------------------------------------------------------


class DiscreteChain(NamedTuple):
    """The EM chain of a linear-Gaussian base on a grid, `x_{k+1} = a_k x_k + c_k ε_k`.

    Marginals are `N(0, s_k I)` with `s_{k+1} = a_k² s_k + c_k²` (`s_0` the initial variance,
    0 for a Dirac). The exact reversal of one step (Gaussian conditioning) is

        B_k(x_k | x_{k+1}) = N(m_k x_{k+1}, v_k I),   m_k = a_k s_k / s_{k+1},   v_k = s_k c_k² / s_{k+1},

    so that `p_0(x_0) Π_k F_k = p_K(x_K) Π_k B_k` holds exactly for every path. For a Dirac start
    `B_0` is the point mass at 0 (`m_0 = v_0 = 0`; its log density is defined as 0, methods.md §7.1).

    Attributes:
        ts: grid `(K+1,)`.
        step_sizes: `h_k = t_{k+1} - t_k`, `(K,)`.
        sigmas: `σ(t_k)`, `(K,)` (left end points, as in EM).
        decays: `a_k = 1 + h_k ℓ(t_k)`, `(K,)`.
        noise_vars: `c_k² = σ(t_k)² h_k`, `(K,)`.
        marginal_vars: `s_k`, `(K+1,)`.
        backward_coefs: `m_k`, `(K,)`.
        backward_vars: `v_k`, `(K,)`.
    """

    ts: jax.Array
    step_sizes: jax.Array
    sigmas: jax.Array
    decays: jax.Array
    noise_vars: jax.Array
    marginal_vars: jax.Array
    backward_coefs: jax.Array
    backward_vars: jax.Array


class AbstractBaseProcess(abc.ABC):
    """A base SDE `dX = b(X, t) dt + σ(t) dB` on `[t_start, 1]` with initial law `p_0`.

    Concrete subclasses are frozen dataclasses with fields `dim` and `particles`. All point-wise
    methods act on ONE point `x` of shape `(dim,)` and a scalar `t`; batch with `jax.vmap`.

    Attributes:
        kind: `"brownian"`, `"brownian_source"`, `"vp"` or `"flow"` (what `MethodSpec.bases` refers to).
        memoryless: whether `X_{t_start} ⊥ X_1` under the base path law (then the optimal control
            of the tilted problem reaches `p*` exactly, methods.md §1.2).
    """

    kind: ClassVar[str]
    memoryless: ClassVar[bool]
    dim: int
    particles: ParticleSpec | None

    # -- geometry --------------------------------------------------------------------------
    @property
    def dof(self) -> int:
        """Degrees of freedom: `(n - 1)·d` for particle systems, else `dim`."""
        return self.dim if self.particles is None else self.particles.dof

    @property
    def t_start(self) -> float:
        """Initial time of the process (0, or `t_0 > 0` for singular schedules)."""
        return 0.0

    def project(self, x: jax.Array) -> jax.Array:
        """Project onto the state space (zero centre of mass for particles)."""
        return project(x, self.particles)

    # -- SDE coefficients --------------------------------------------------------------------
    @abc.abstractmethod
    def drift(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Base drift `b(x, t)` of ONE point, `(dim,)`."""

    @abc.abstractmethod
    def sigma(self, t: jax.Array) -> jax.Array:
        """Scalar diffusion coefficient `σ(t)` (elementwise in `t`)."""

    @abc.abstractmethod
    def nu(self, t: jax.Array) -> jax.Array:
        """Variance integral `ν_t = ∫_{t_start}^t σ(s)² ds` (elementwise in `t`)."""

    def linear_drift_coefficient(self, t: jax.Array) -> jax.Array | None:
        """`ℓ(t)` with `b(x, t) = ℓ(t) x` when the drift is linear, else `None`."""
        return None

    # -- initial law -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def initial_is_dirac(self) -> bool:
        """True when `p_0` is a point mass (then `initial_log_prob` is not defined)."""

    @abc.abstractmethod
    def sample_initial(self, key: jax.Array, num_samples: int) -> jax.Array:
        """`num_samples` draws of `X_{t_start} ~ p_0`, `(num_samples, dim)`."""

    def initial_log_prob(self, x: jax.Array) -> jax.Array:
        """`log p_0(x)` of ONE point (raises for a Dirac initial law)."""
        raise NotImplementedError(f"{type(self).__name__}: the initial law has no density")

    # -- terminal law ------------------------------------------------------------------------
    def terminal_log_prob(self, x: jax.Array) -> jax.Array:
        """`log p^base_1(x)` of the continuous-time process, when known."""
        raise NotImplementedError(f"{type(self).__name__}: the terminal law is not known in closed form")

    def discretise(self, ts) -> DiscreteChain:
        """The EM chain on the grid `ts` (only for linear-Gaussian bases)."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.kind!r}) has no closed-form discrete chain; only linear-Gaussian "
            "bases ('brownian', 'vp') do"
        )

    @property
    def has_discrete_chain(self) -> bool:
        """True when `discretise` (exact discrete marginals and reversal) is available."""
        return False

    # -- conditionals ------------------------------------------------------------------------
    def bridge(self, t, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Gaussian bridge `p(x_t | X_{t_start} = x0, X_1 = x1) = N(mean, var·I)`: returns `(mean, var)`."""
        raise NotImplementedError(f"{type(self).__name__}: no Gaussian bridge")

    def conditional_mean_coefficient(self, t) -> jax.Array:
        """`a_t`: the coefficient of `x_t` in `E_base[X_1 | X_t = x_t]` (linear bases only)."""
        raise NotImplementedError(f"{type(self).__name__}: E_base[X_1 | X_t] is not linear in X_t")

    def summary(self) -> dict:
        """A JSON-able description (recorded with results)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        out = {"kind": self.kind, "memoryless": self.memoryless}
        for name, value in fields.items():
            if isinstance(value, int | float | str | bool) or value is None:
                out[name] = value
            elif isinstance(value, AbstractNoiseSchedule | ParticleSpec):
                out[name] = {"type": type(value).__name__, **dataclasses.asdict(value)}
            else:
                out[name] = type(value).__name__
        return out


class AbstractLinearGaussianBase(AbstractBaseProcess):
    """A base with linear drift `b = ℓ(t) x` and initial law `N(0, s_0 I)` (`s_0 = 0`: Dirac at 0).

    Provides the exact discrete chain (`DiscreteChain`) of its EM discretisation.
    """

    @property
    @abc.abstractmethod
    def initial_variance(self) -> float:
        """`s_0` (0 for the Dirac at the origin)."""

    @abc.abstractmethod
    def linear_drift_coefficient(self, t: jax.Array) -> jax.Array:
        """`ℓ(t)` with `b(x, t) = ℓ(t) x`."""

    def drift(self, x, t):
        return self.linear_drift_coefficient(t) * x

    @property
    def initial_is_dirac(self) -> bool:
        return self.initial_variance == 0.0

    def sample_initial(self, key, num_samples):
        shape = (int(num_samples), self.dim)
        if self.initial_is_dirac:
            return jnp.zeros(shape, jnp.float32)
        return self.project(math.sqrt(self.initial_variance) * jax.random.normal(key, shape, jnp.float32))

    def initial_log_prob(self, x):
        if self.initial_is_dirac:
            return super().initial_log_prob(x)
        return gaussian_log_prob(x, 0.0, self.initial_variance, self.dof)

    @property
    def has_discrete_chain(self) -> bool:
        return True

    def discretise(self, ts) -> DiscreteChain:
        """The EM chain on `ts`. A concrete grid (numpy, as `Problem.ts`, or a concrete jax array) is
        processed eagerly in float64 numpy and returned as float32 constants (no tracing, no
        compilation); a traced grid goes through a `lax.scan` over the variance recursion."""
        if not isinstance(ts, jax.core.Tracer):
            return self._discretise_numpy(np.asarray(ts, np.float64))
        ts = jnp.asarray(ts, float_dtype(ts))
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"the time grid must be one-dimensional with at least 2 points, got shape {ts.shape}"
            )
        t_left = ts[:-1]
        h = jnp.diff(ts)
        sigmas = self.sigma(t_left)
        decays = 1.0 + h * self.linear_drift_coefficient(t_left)
        noise_vars = sigmas**2 * h

        def step(s, ac):
            a, c2 = ac
            return a * a * s + c2, a * a * s + c2

        s0 = jnp.asarray(self.initial_variance, ts.dtype)
        _, s_rest = jax.lax.scan(step, s0, (decays, noise_vars))
        marginal_vars = jnp.concatenate([s0[None], s_rest])
        return self._chain(ts, h, sigmas, decays, noise_vars, marginal_vars, jnp)

    def _discretise_numpy(self, ts: np.ndarray) -> DiscreteChain:
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"the time grid must be one-dimensional with at least 2 points, got shape {ts.shape}"
            )
        t_left, h = ts[:-1], np.diff(ts)
        with jax.ensure_compile_time_eval():  # concrete even when called while tracing a jit
            sigmas = np.asarray(self.sigma(t_left), np.float64)
            decays = 1.0 + h * np.asarray(self.linear_drift_coefficient(t_left), np.float64)
        noise_vars = sigmas**2 * h
        marginal_vars = np.empty_like(ts)
        marginal_vars[0] = self.initial_variance
        for k in range(h.shape[0]):
            marginal_vars[k + 1] = decays[k] ** 2 * marginal_vars[k] + noise_vars[k]
        chain = self._chain(ts, h, sigmas, decays, noise_vars, marginal_vars, np)
        with jax.ensure_compile_time_eval():
            return DiscreteChain(*(jnp.asarray(v, jnp.float32) for v in chain))

    @staticmethod
    def _chain(ts, h, sigmas, decays, noise_vars, marginal_vars, xp) -> DiscreteChain:
        s_left, s_right = marginal_vars[:-1], marginal_vars[1:]
        return DiscreteChain(
            ts=ts,
            step_sizes=h,
            sigmas=sigmas,
            decays=decays,
            noise_vars=noise_vars,
            marginal_vars=marginal_vars,
            backward_coefs=decays * s_left / s_right,
            backward_vars=s_left * noise_vars / s_right,
        )


class AbstractBrownianBase(AbstractLinearGaussianBase):
    """Brownian motion `dX = σ(t) dB` (`b = 0`) on `[0, 1]` with a noise schedule, from a Dirac at 0
    (`BrownianBase`) or a Gaussian source (`SourceBrownianBase`): what the two share.

    - `ν_t = ∫_0^t σ²` is the variance of the increment `X_t - X_0`, whatever the start.
    - Bridge: `X_t | X_0 = x0, X_1 = x1 ~ N(x0 + α_t (x1 - x0), ν_1 α_t (1 - α_t) I)`, `α_t = ν_t/ν_1`.
    - `E[X_1 | X_t] = X_t` (a martingale), so `a_t = 1`.
    """

    dim: int
    schedule: AbstractNoiseSchedule

    def __post_init__(self):
        who = type(self).__name__
        _check_dim(self.dim, self.particles, who)
        if not isinstance(self.schedule, AbstractNoiseSchedule):
            raise TypeError(
                f"{who}: schedule must be an AbstractNoiseSchedule (one of {SCHEDULES.names()}), "
                f"got {self.schedule!r}"
            )

    def linear_drift_coefficient(self, t):
        return jnp.zeros_like(jnp.asarray(t, float_dtype(t)))

    def sigma(self, t):
        return self.schedule.sigma(t)

    def nu(self, t):
        return self.schedule.nu(t)

    def bridge(self, t, x0, x1):
        nu1 = self.nu(1.0)
        alpha = self.nu(t) / nu1
        return x0 + alpha * (x1 - x0), nu1 * alpha * (1.0 - alpha)

    def conditional_mean_coefficient(self, t):
        return jnp.ones_like(jnp.asarray(t, float_dtype(t)))


@dataclasses.dataclass(frozen=True)
class BrownianBase(AbstractBrownianBase):
    """Brownian motion from a Dirac at 0: `dX = σ(t) dB`, `X_0 = 0` (PIS, Adjoint Sampling).

    - Marginals `p^base_t = N(0, ν_t I)`, `p^base_1 = N(0, ν_1 I)`; the EM chain has the exact
      terminal law `N(0, Σ_k σ(t_k)² h_k I)` (methods.md §10.7: use this, not `ν_1`, for weights).
    - Bridge: `X_t | X_0 = x0, X_1 = x1 ~ N(x0 + α_t (x1 - x0), ν_1 α_t (1 - α_t) I)`, `α_t = ν_t/ν_1`.
    - `E[X_1 | X_t] = X_t`, so `a_t = 1`. Memoryless (the start is deterministic).

    Args:
        dim: dimension.
        schedule: `LinearSchedule` or `GeometricSchedule` (any `AbstractNoiseSchedule`).
        particles: particle layout (noise projected to zero centre of mass), or None.
    """

    dim: int
    schedule: AbstractNoiseSchedule = dataclasses.field(default_factory=LinearSchedule)
    particles: ParticleSpec | None = None
    kind: ClassVar[str] = "brownian"
    memoryless: ClassVar[bool] = True

    @property
    def initial_variance(self) -> float:
        return 0.0

    def terminal_log_prob(self, x):
        return gaussian_log_prob(x, 0.0, self.nu(1.0), self.dof)


@dataclasses.dataclass(frozen=True)
class SourceBrownianBase(AbstractBrownianBase):
    """Brownian motion from a Gaussian source: `dX = σ(t) dB`, `X_0 ~ μ = N(0, v I)` (ASBS's base).

    The reference process of the Adjoint Schrödinger Bridge Sampler (`samplers.methods.asbs`,
    methods.md §3.6): the source `μ` is an isotropic Gaussian on the state space (on the zero
    centre-of-mass subspace for particle systems, where both the "meanfree" Gaussian and the harmonic
    prior of the ASBS code are of this form, with `v = scale²` and `v = 2 scale²/3`).

    - Marginals `p^base_t = N(0, (v + ν_t) I)`; the EM chain's marginals `N(0, s_k I)` start at `s_0 = v`
      (`DiscreteChain`), its reversal kernels are Gaussian down to `x_0` (no point mass).
    - Given `X_0 = x0`: `X_1 | x0 ~ N(x0, ν_1 I)`, so `∇_{x1} log p^base(x1 | x0) = -(x1 - x0)/ν_1`; the
      bridge `X_t | x0, x1` is the Brownian bridge of `BrownianBase` (it does not depend on the start's law).
    - Not memoryless (`Cov(X_0, X_1) = v I`): tilting the terminal law alone does not give a
      path law with source `μ` and terminal law `p*`; that is the Schrödinger bridge problem ASBS solves.

    Args:
        dim: dimension.
        schedule: the noise schedule (`LinearSchedule`, `GeometricSchedule`).
        source_var: `v > 0`, the source's variance per coordinate.
        particles: particle layout, or None.
    """

    dim: int
    schedule: AbstractNoiseSchedule = dataclasses.field(default_factory=LinearSchedule)
    source_var: float = 1.0
    particles: ParticleSpec | None = None
    kind: ClassVar[str] = "brownian_source"
    memoryless: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.source_var, bool) or not (
            isinstance(self.source_var, int | float | np.floating) and 0 < self.source_var < math.inf
        ):
            raise ValueError(
                f"SourceBrownianBase: source_var must be a finite positive number, got {self.source_var!r} "
                "(use BrownianBase for a Dirac start)"
            )

    @property
    def initial_variance(self) -> float:
        return float(self.source_var)

    def terminal_log_prob(self, x):
        return gaussian_log_prob(x, 0.0, self.initial_variance + self.nu(1.0), self.dof)


@dataclasses.dataclass(frozen=True)
class VPBase(AbstractLinearGaussianBase):
    """Variance-preserving OU base (DDS): `dX = -½β(t) X dt + σ_0 sqrt(β(t)) dB`, `X_0 ~ N(0, σ_0² I)`.

    `β(t) = β_min + (β_max - β_min)(1 - t)` (large at the noise end `t = 0`), `B(t) = ∫_0^t β`.

    - Stationary: `p^base_t = N(0, σ_0² I)` for all t (continuous time). The EM chain is only
      stationary up to O(h); its exact marginals `N(0, s_k I)` come from `discretise`.
    - `ν_t = ∫_0^t σ² = σ_0² B(t)`.
    - Transition: `X_t | X_s ~ N(φ_{s,t} X_s, σ_0²(1 - φ_{s,t}²) I)`, `φ_{s,t} = exp(-½(B(t) - B(s)))`.
    - Bridge (Gaussian conditioning): with `V_{s,t} = σ_0²(1 - φ_{s,t}²)`,
      `mean = [φ_{0,t} V_{t,1} x0 + φ_{t,1} V_{0,t} x1] / V_{0,1}`, `var = V_{0,t} V_{t,1} / V_{0,1}`.
    - `a_t = φ_{t,1} = exp(-½∫_t^1 β)` (matches the VP lean adjoint, methods.md §1.3).
    - Not memoryless (`Corr(X_0, X_1) = φ_{0,1} > 0`).

    Args:
        dim: dimension.
        sigma0: stationary standard deviation `σ_0`.
        beta_min: `β(1)` (data end).
        beta_max: `β(0)` (noise end).
        particles: particle layout, or None.
    """

    dim: int
    sigma0: float = 1.0
    beta_min: float = 0.1
    beta_max: float = 10.0
    particles: ParticleSpec | None = None
    kind: ClassVar[str] = "vp"
    memoryless: ClassVar[bool] = False

    def __post_init__(self):
        _check_dim(self.dim, self.particles, "VPBase")
        if not self.sigma0 > 0:
            raise ValueError(f"VPBase: sigma0 must be > 0, got {self.sigma0!r}")
        if not 0 < self.beta_min <= self.beta_max:
            raise ValueError(
                f"VPBase: need 0 < beta_min <= beta_max, got {self.beta_min!r}, {self.beta_max!r}"
            )

    @property
    def initial_variance(self) -> float:
        return float(self.sigma0) ** 2

    def beta(self, t):
        """`β(t) = β_min + (β_max - β_min)(1 - t)`."""
        t = jnp.asarray(t, float_dtype(t))
        return self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)

    def beta_integral(self, t):
        """`B(t) = ∫_0^t β = β_min t + (β_max - β_min)(t - t²/2)`."""
        t = jnp.asarray(t, float_dtype(t))
        return self.beta_min * t + (self.beta_max - self.beta_min) * (t - 0.5 * t * t)

    def linear_drift_coefficient(self, t):
        return -0.5 * self.beta(t)

    def sigma(self, t):
        return self.sigma0 * jnp.sqrt(self.beta(t))

    def nu(self, t):
        return self.sigma0**2 * self.beta_integral(t)

    def terminal_log_prob(self, x):
        return gaussian_log_prob(x, 0.0, self.initial_variance, self.dof)

    def _phi(self, s, t):
        return jnp.exp(-0.5 * (self.beta_integral(t) - self.beta_integral(s)))

    def bridge(self, t, x0, x1):
        var = lambda s, u: (
            self.initial_variance * -jnp.expm1(-(self.beta_integral(u) - self.beta_integral(s)))
        )
        v0t, vt1, v01 = var(0.0, t), var(t, 1.0), var(0.0, 1.0)
        mean = (self._phi(0.0, t) * vt1 * x0 + self._phi(t, 1.0) * v0t * x1) / v01
        return mean, v0t * vt1 / v01

    def conditional_mean_coefficient(self, t):
        return self._phi(t, 1.0)


@dataclasses.dataclass(frozen=True)
class MemorylessFlowBase(AbstractBaseProcess):
    """The memoryless SDE of a rectified-flow model (Adjoint Matching, methods.md §2.1).

    Interpolant `X̄_t = (1 - t) X̄_0 + t X̄_1`, `X̄_0 ~ N(0, I)`, velocity `v(x, t) = E[X̄_1 - X̄_0 | X̄_t = x]`.
    With `η_t = (1 - t)/t` and the memoryless choice `σ(t) = sqrt(2η_t)`:

        dX = [2 v(X, t) - X/t] dt + sqrt(2(1 - t)/t) dB,     t ∈ [t_0, 1],

    which has the same marginals `p_t` as the flow. The drift and `σ` are singular at `t = 0`, so the
    process starts at `t_0 > 0` (use a grid refined near `t_0`, e.g. `"quadratic"`, so that EM is
    stable: the step must satisfy roughly `h/t_0 ≲ 1`).

    **Initial law `p_0`.** We take `p_0 := p_{t_0}`, the flow marginal at `t_0`, i.e. the law of
    `(1 - t_0) Z + t_0 X̄_1`. Pass it as `initial_sample_fn` / `initial_log_prob_fn` when known (for a
    Gaussian-mixture data law it is a Gaussian mixture with components `N(t_0 μ_j, t_0² Σ_j + (1-t_0)² I)`);
    the default is `N(0, (1 - t_0)² I)`, which drops the `t_0 X̄_1` term (an O(t_0) error in the law of
    `X_1`). **Memorylessness is approximate:** under the base path law, `X_{t_0} | X_1 ~ N(t_0 X_1,
    (1 - t_0)² I)` (exact for the memoryless schedule), so `X_{t_0}` and `X_1` are dependent, with
    mutual information `½ log det(I + t_0² Cov(X_1)/(1 - t_0)²) = O(t_0²)`. The optimal control of the
    tilted problem therefore reaches `p*` only up to this O(t_0²) value-function bias (methods.md §1.2);
    the path weights `E[w] = Z` remain exact for the simulated chain.

    **Bridge.** Conditioned on `X_1 = y`, the base is the linear SDE
    `dX = [2y - (1 + t)X/t] dt/(1 - t) + σ dB` (h-transform; independent of the data law), a Gaussian
    process with mean `t y` and `Cov(X_s, X_t | y) = s(1 - t)²/t` for `s ≤ t`. Hence, for
    `s = t_0 < t < 1`, with `ρ = s(1 - t)²/(t(1 - s)²)`:

        p(x_t | x_s, y) = N(t y + ρ (x_s - s y), (1 - t)²[1 - s²(1 - t)²/(t²(1 - s)²)] I).

    This holds when `v` is the exact velocity of the interpolant for some data law [DERIVED here].

    Marginalising the start, `X_t | X_1 = y ~ N(t y, (1 - t)² I)` for every `t ∈ [t_0, 1]` (the
    interpolant's conditional; exact for the continuous-time process started at `p_{t_0}`): the bridge
    of the regression losses (`samplers.methods.bridge_targets`, methods.md §1.5).

    **Scores.** `∇log p_t(x) = (t v(x, t) - x)/(1 - t)` (`score`, methods.md §2.1), and at `t = 1` the
    data law's score (`terminal_score`): `∇ terminal_log_prob_fn` when that is given, else, with
    `terminal_score_from_velocity`, the `t → 1` limit of the formula above, `-(x + ∂_t v(x, 1))`
    (`t v(x, t) - x` vanishes at `t = 1` because `v(x, 1) = x`; one forward-mode derivative in `t`;
    exact for the exact velocity, methods.md §1.5).

    `ν_t = ∫_{t_0}^t σ² = 2 log(t/t_0) - 2(t - t_0)`. `E[X_1 | X_t] = x + (1 - t) v(x, t)` is not linear,
    so `conditional_mean_coefficient` is not available; no closed-form discrete chain either (use the
    Girsanov form of the path weights).

    Args:
        dim: dimension.
        velocity: `v(x, t)` of ONE point, `(dim,)`.
        t0: start time `t_0 ∈ (0, 1)`.
        initial_sample_fn: `(key, n) -> (n, dim)` draws of `p_{t_0}`; default `N(0, (1-t_0)² I)`.
        initial_log_prob_fn: `x -> log p_{t_0}(x)`; default the same Gaussian.
        terminal_log_prob_fn: `x -> log p_1(x)` (the data law) when known.
        particles: particle layout, or None.
        terminal_score_from_velocity: without `terminal_log_prob_fn`, take the data law's score from the
            velocity at `t = 1` (`terminal_score`); False: it is not available.
    """

    dim: int
    velocity: Callable[[jax.Array, jax.Array], jax.Array]
    t0: float = 0.01
    initial_sample_fn: Callable[[jax.Array, int], jax.Array] | None = None
    initial_log_prob_fn: Callable[[jax.Array], jax.Array] | None = None
    terminal_log_prob_fn: Callable[[jax.Array], jax.Array] | None = None
    particles: ParticleSpec | None = None
    terminal_score_from_velocity: bool = False
    kind: ClassVar[str] = "flow"
    memoryless: ClassVar[bool] = True  # approximately; see the class docstring

    def __post_init__(self):
        _check_dim(self.dim, self.particles, "MemorylessFlowBase")
        if not 0.0 < self.t0 < 1.0:
            raise ValueError(f"MemorylessFlowBase: t0 must lie in (0, 1), got {self.t0!r}")
        if not callable(self.velocity):
            raise TypeError("MemorylessFlowBase: velocity must be a callable v(x, t) -> (dim,)")

    @property
    def t_start(self) -> float:
        return float(self.t0)

    def drift(self, x, t):
        return 2.0 * self.velocity(x, t) - x / t

    def sigma(self, t):
        t = jnp.asarray(t, float_dtype(t))
        return jnp.sqrt(2.0 * (1.0 - t) / t)

    def nu(self, t):
        t = jnp.asarray(t, float_dtype(t))
        return 2.0 * jnp.log(t / self.t0) - 2.0 * (t - self.t0)

    @property
    def initial_is_dirac(self) -> bool:
        return False

    def sample_initial(self, key, num_samples):
        if self.initial_sample_fn is not None:
            return self.project(self.initial_sample_fn(key, int(num_samples)))
        x = (1.0 - self.t0) * jax.random.normal(key, (int(num_samples), self.dim), jnp.float32)
        return self.project(x)

    def initial_log_prob(self, x):
        if self.initial_log_prob_fn is not None:
            return self.initial_log_prob_fn(x)
        return gaussian_log_prob(x, 0.0, (1.0 - self.t0) ** 2, self.dof)

    def terminal_log_prob(self, x):
        if self.terminal_log_prob_fn is None:
            return super().terminal_log_prob(x)
        return self.terminal_log_prob_fn(x)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`∇log p_t(x) = (t v(x, t) - x)/(1 - t)` of ONE point, `t ∈ [t_0, 1)` (methods.md §2.1)."""
        t = jnp.asarray(t, x.dtype)
        return (t * self.velocity(x, t) - x) / (1.0 - t)

    @property
    def has_terminal_score(self) -> bool:
        """Whether `terminal_score` is available (`terminal_log_prob_fn`, `terminal_score_from_velocity`)."""
        return self.terminal_log_prob_fn is not None or bool(self.terminal_score_from_velocity)

    def terminal_score(self, x: jax.Array) -> jax.Array:
        """`∇log p_1(x)`, the score of the data law, of ONE point: `∇ terminal_log_prob_fn`, else (with
        `terminal_score_from_velocity`) `-(x + ∂_t v(x, 1))`; raises when neither is available."""
        if self.terminal_log_prob_fn is not None:
            return jax.grad(self.terminal_log_prob_fn)(x)
        if not self.terminal_score_from_velocity:
            return super().terminal_log_prob(x)  # raises: the terminal law is not known
        one = jnp.ones((), x.dtype)
        _, dv_dt = jax.jvp(lambda t: self.velocity(x, t), (one,), (one,))
        return -(x + dv_dt)

    def bridge(self, t, x0, x1):
        s = self.t0
        t = jnp.asarray(t, float_dtype(t))
        rho = s * (1.0 - t) ** 2 / (t * (1.0 - s) ** 2)
        mean = t * x1 + rho * (x0 - s * x1)
        var = (1.0 - t) ** 2 * (1.0 - (s * (1.0 - t) / (t * (1.0 - s))) ** 2)
        return mean, var


BASE_PROCESSES: Registry[AbstractBaseProcess] = Registry("base process")
BASE_PROCESSES.register("brownian", BrownianBase)
BASE_PROCESSES.register("brownian_source", SourceBrownianBase)
BASE_PROCESSES.register("vp", VPBase)
BASE_PROCESSES.register("flow", MemorylessFlowBase)
