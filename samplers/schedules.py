"""Noise schedules `σ(t)` of the Brownian base, with their variance integrals `ν_t = ∫_0^t σ(s)² ds`
(`samplers.base_processes.BrownianBase`; time convention of `docs/methods.md` §0)."""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from samplers.promotion import float_dtype
from targets.registry import Registry

__all__ = ["SCHEDULES", "AbstractNoiseSchedule", "GeometricSchedule", "LinearSchedule"]


class AbstractNoiseSchedule(abc.ABC):
    """A diffusion coefficient `σ(t)` on `[0, 1]` with its variance integral `ν_t = ∫_0^t σ(s)² ds`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def sigma(self, t: jax.Array) -> jax.Array:
        """Diffusion coefficient `σ(t)` (elementwise in `t`)."""

    @abc.abstractmethod
    def nu(self, t: jax.Array) -> jax.Array:
        """Variance integral `ν_t = ∫_0^t σ(s)² ds` (elementwise in `t`)."""


@dataclasses.dataclass(frozen=True)
class LinearSchedule(AbstractNoiseSchedule):
    """Constant diffusion: `σ(t) = σ`, `ν_t = σ² t` (PIS; AS "linear" schedule).

    Args:
        sigma_value: the constant `σ > 0`.
    """

    sigma_value: float = 1.0
    name: ClassVar[str] = "linear"

    def __post_init__(self):
        if not self.sigma_value > 0:
            raise ValueError(f"LinearSchedule: sigma_value must be > 0, got {self.sigma_value!r}")

    def sigma(self, t):
        return jnp.full_like(jnp.asarray(t, float_dtype(t)), self.sigma_value)

    def nu(self, t):
        return self.sigma_value**2 * jnp.asarray(t, float_dtype(t))


@dataclasses.dataclass(frozen=True)
class GeometricSchedule(AbstractNoiseSchedule):
    """Geometric (VE) schedule of Adjoint Sampling, large noise at `t = 0`.

    With `ρ = σ_max/σ_min`:

        σ(t) = σ_min ρ^{1-t} sqrt(2 log ρ),
        ν_t  = ∫_0^t σ² = σ_min² ρ² 2 log ρ ∫_0^t ρ^{-2s} ds = σ_max² (1 - ρ^{-2t}),
        ν_1  = σ_max² - σ_min².

    The `ν_t` of `docs/methods.md` §3.1 was re-derived here: it is correct as printed, and
    `tests/samplers/test_base_processes.py` checks it by quadrature.
    Source: `facebookresearch/adjoint_sampling` `GeometricNoiseSchedule`; `adjoint_samplers` `VESDE`.

    Args:
        sigma_min: noise scale at `t = 1` (> 0).
        sigma_max: noise scale at `t = 0` (> sigma_min).
    """

    sigma_min: float = 1e-3  # AS configs (methods.md §3.3)
    sigma_max: float = 1.0
    name: ClassVar[str] = "geometric"

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                "GeometricSchedule: need 0 < sigma_min < sigma_max, "
                f"got {self.sigma_min!r}, {self.sigma_max!r}"
            )

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        t = jnp.asarray(t, float_dtype(t))
        lr = self._log_ratio
        return self.sigma_min * jnp.exp((1.0 - t) * lr) * math.sqrt(2.0 * lr)

    def nu(self, t):
        t = jnp.asarray(t, float_dtype(t))
        return self.sigma_max**2 * -jnp.expm1(-2.0 * t * self._log_ratio)


SCHEDULES: Registry[AbstractNoiseSchedule] = Registry("noise schedule")
SCHEDULES.register("linear", LinearSchedule)
SCHEDULES.register("geometric", GeometricSchedule)
