"""Unnormalised Gaussian targets: the analytic test bed for every loss and estimator.

A Gaussian `N(μ, Σ)` with `Σ = L Lᵀ` (`L` lower-triangular, `scale_tril`) is exposed as the
*unnormalised* density

    log γ(x) = -½ (x - μ)ᵀ Σ⁻¹ (x - μ) = -½ ‖L⁻¹(x - μ)‖²,
    log Z    = (d/2) log 2π + ½ log det Σ = (d/2) log 2π + Σ_i log L_ii,

on purpose: the normaliser is omitted so that `log Z` is a non-trivial closed form (an estimator
that returns 0 is not accidentally right). Samples are exact, `x = μ + L ε`.

Registered families (both accept keyword overrides through `targets.get(name, **kwargs)`):

- `gaussian`: isotropic `N(μ, s² I)`, `dim=2`, `mean=0.0`, `scale=1.0` by default, so
  `log Z = (d/2) log(2π s²)`.
- `gaussian_correlated`: anisotropic, correlated `Σ = R diag(λ) Rᵀ` built deterministically: the
  standard deviations `√λ` are log-spaced from `min_std` to `max_std` and `R` is the product of
  Givens rotations by `angle` in the planes (0, 1), (1, 2), …, (d-2, d-1); defaults `dim=2`,
  `mean=1.0`, `min_std=0.5`, `max_std=2.0`, `angle=π/6`.

`Target.ground_truth` carries `mean`, `covariance` and `precision` as float64 arrays; the
`Gaussian` class offers the same as JAX arrays, plus normalised densities and sampling.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from targets.base import Target, entry

__all__ = [
    "Gaussian",
    "correlated_gaussian",
    "gaussian",
    "gaussian_correlated",
    "givens_rotation",
    "isotropic_gaussian",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _default_float() -> np.dtype:
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Gaussian:
    """A `d`-dimensional Gaussian `N(mean, scale_tril scale_trilᵀ)` (a JAX PyTree).

    Args:
        mean: `(d,)` mean `μ`.
        scale_tril: `(d, d)` lower-triangular Cholesky factor `L` of the covariance, positive diagonal.

    Example:
        >>> import jax.numpy as jnp
        >>> g = Gaussian.from_covariance(jnp.zeros(2), jnp.eye(2))
        >>> float(g.unnormalised_log_prob(jnp.ones(2)))
        -1.0
    """

    mean: jax.Array
    scale_tril: jax.Array

    def __post_init__(self):
        # PyTree transformations rebuild the class with placeholder leaves: validate arrays only.
        # Leading batch axes are allowed (stacked Gaussians for `jax.vmap`).
        if not all(isinstance(a, np.ndarray | jax.Array) for a in (self.mean, self.scale_tril)):
            return
        if self.mean.ndim < 1 or self.scale_tril.shape != self.mean.shape + self.mean.shape[-1:]:
            raise ValueError(
                "mean must have shape (d,) and scale_tril (d, d); "
                f"got {self.mean.shape} and {self.scale_tril.shape}"
            )

    @classmethod
    def from_covariance(cls, mean, covariance, *, dtype=None) -> Gaussian:
        """Gaussian from a mean `(d,)` and a symmetric positive-definite covariance `(d, d)`.

        The Cholesky factor is computed in float64 NumPy, then cast to `dtype` (default: jax's
        canonical float, float32 unless x64 is enabled).
        """
        mean64 = np.asarray(mean, np.float64)
        covariance64 = np.asarray(covariance, np.float64)
        if mean64.ndim != 1 or covariance64.shape != (mean64.shape[0],) * 2:
            raise ValueError(
                "mean must have shape (d,) and covariance (d, d); "
                f"got {mean64.shape} and {covariance64.shape}"
            )
        try:
            scale_tril = np.linalg.cholesky(0.5 * (covariance64 + covariance64.T))
        except np.linalg.LinAlgError as error:
            raise ValueError("covariance must be positive definite") from error
        dtype = dtype or _default_float()
        return cls(mean=jnp.asarray(mean64, dtype), scale_tril=jnp.asarray(scale_tril, dtype))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def covariance(self) -> jax.Array:
        """`Σ = L Lᵀ`, shape `(d, d)`."""
        return self.scale_tril @ self.scale_tril.T

    def precision(self) -> jax.Array:
        """`Σ⁻¹ = L⁻ᵀ L⁻¹`, shape `(d, d)`."""
        inverse_tril = solve_triangular(
            self.scale_tril, jnp.eye(self.dim, dtype=self.scale_tril.dtype), lower=True
        )
        return inverse_tril.T @ inverse_tril

    def log_normaliser(self) -> jax.Array:
        """`log Z = (d/2) log 2π + Σ_i log L_ii`, the log integral of `exp(unnormalised_log_prob)`."""
        return 0.5 * self.dim * _LOG_2PI + jnp.sum(jnp.log(jnp.diagonal(self.scale_tril)))

    def unnormalised_log_prob(self, x: jax.Array) -> jax.Array:
        """`-½ (x - μ)ᵀ Σ⁻¹ (x - μ)` of ONE point `(d,)` (normaliser omitted)."""
        if jnp.shape(x) != (self.dim,):
            raise ValueError(
                f"Gaussian takes one point of shape ({self.dim},), got {jnp.shape(x)}; batch with jax.vmap"
            )
        x = jnp.asarray(x)  # the parameters in the precision of x (float32, or float64 under x64)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        scale_tril, mean = jnp.asarray(self.scale_tril, dtype), jnp.asarray(self.mean, dtype)
        whitened = solve_triangular(scale_tril, jnp.asarray(x, dtype) - mean, lower=True)
        return -0.5 * jnp.sum(whitened**2)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Normalised log density `log N(x; μ, Σ)` of ONE point `(d,)`."""
        value = self.unnormalised_log_prob(x)
        return value - jnp.asarray(self.log_normaliser(), value.dtype)

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """Exact samples `μ + L ε`, `ε ~ N(0, I)`, shape `(num_samples, d)`."""
        noise = jax.random.normal(key, (num_samples, self.dim), dtype=self.mean.dtype)
        return self.mean[None, :] + noise @ self.scale_tril.T


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def _check_mean(mean, dim: int) -> np.ndarray:
    mean64 = np.asarray(mean, np.float64)
    if mean64.ndim == 0:
        mean64 = np.full(dim, float(mean64))
    if mean64.shape != (dim,):
        raise ValueError(f"mean must be a scalar or have shape (dim,) = ({dim},), got shape {mean64.shape}")
    if not np.all(np.isfinite(mean64)):
        raise ValueError("mean must be finite")
    return mean64


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def givens_rotation(dim: int, angle: float) -> np.ndarray:
    """The orthogonal `(dim, dim)` matrix `G_{d-2,d-1}(θ) ⋯ G_{1,2}(θ) G_{0,1}(θ)` in float64.

    `G_{i,i+1}(θ)` rotates the (i, i+1) coordinate plane by `θ`; for `dim = 2` this is the plain
    rotation `[[cos θ, -sin θ], [sin θ, cos θ]]`, for `dim = 1` the identity. Deterministic: no PRNG.
    """
    dim = _check_dim(dim)
    rotation = np.eye(dim)
    cos, sin = math.cos(angle), math.sin(angle)
    for i in range(dim - 1):
        givens = np.eye(dim)
        givens[i : i + 2, i : i + 2] = [[cos, -sin], [sin, cos]]
        rotation = givens @ rotation
    return rotation


def isotropic_gaussian(dim: int = 2, mean=0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Float64 `(mean (d,), covariance (d, d))` of `N(mean, scale² I)`."""
    dim = _check_dim(dim)
    scale = _check_positive("scale", scale)
    return _check_mean(mean, dim), scale**2 * np.eye(dim)


def correlated_gaussian(
    dim: int = 2, mean=1.0, min_std: float = 0.5, max_std: float = 2.0, angle: float = math.pi / 6
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 `(mean (d,), covariance (d, d))` with `Σ = R diag(λ) Rᵀ`.

    `√λ = geomspace(max_std, min_std, d)` (so the condition number is `(max_std/min_std)²`) and
    `R = givens_rotation(d, angle)`. For `d = 1` the std is `max_std`.
    """
    dim = _check_dim(dim)
    min_std = _check_positive("min_std", min_std)
    max_std = _check_positive("max_std", max_std)
    if min_std > max_std:
        raise ValueError(f"min_std must not exceed max_std, got {min_std} > {max_std}")
    stds = np.geomspace(max_std, min_std, dim)
    rotation = givens_rotation(dim, angle)
    covariance = rotation @ np.diag(stds**2) @ rotation.T
    return _check_mean(mean, dim), 0.5 * (covariance + covariance.T)


def _gaussian_target(
    name: str, mean: np.ndarray, covariance: np.ndarray, *, pretty_name: str, description: str
) -> Target:
    gaussian_ = Gaussian.from_covariance(mean, covariance)
    dim = mean.shape[0]
    # log Z = (d/2) log 2π + ½ log det Σ, evaluated in float64 from the shipped covariance.
    log_Z = 0.5 * dim * _LOG_2PI + 0.5 * float(np.linalg.slogdet(covariance)[1])
    return Target(
        name=name,
        dim=dim,
        log_prob_fn=jax.jit(gaussian_.unnormalised_log_prob),
        pretty_name=pretty_name,
        log_Z=log_Z,
        log_Z_source="closed form: (d/2) log 2π + ½ log det Σ (log_prob omits the Gaussian normaliser)",
        sample_fn=jax.jit(gaussian_.sample, static_argnums=1),
        ground_truth={"mean": mean, "covariance": covariance, "precision": np.linalg.inv(covariance)},
        description=description,
    )


def gaussian(dim: int = 2, mean=0.0, scale: float = 1.0) -> Target:
    """Unnormalised isotropic Gaussian `exp(-‖x - μ‖² / (2 s²))`, `log Z = (d/2) log(2π s²)`.

    Args:
        dim: dimension `d`.
        mean: `μ`, a scalar (every coordinate) or a `(d,)` array.
        scale: the standard deviation `s > 0` of every coordinate.
    """
    mean64, covariance = isotropic_gaussian(dim, mean, scale)
    return _gaussian_target(
        "gaussian",
        mean64,
        covariance,
        pretty_name=f"Gaussian ({mean64.shape[0]}-D, s={float(scale):g})",
        description=(
            f"Unnormalised isotropic Gaussian in {mean64.shape[0]}-D: log p(x) = -|x - mu|^2 / (2 s^2) with "
            f"s = {float(scale):g}, the normaliser omitted on purpose so that log Z = (d/2) log(2 pi s^2) is "
            "a non-trivial closed form. Analytic test bed of the suite; exact samples."
        ),
    )


def gaussian_correlated(
    dim: int = 2, mean=1.0, min_std: float = 0.5, max_std: float = 2.0, angle: float = math.pi / 6
) -> Target:
    """Unnormalised correlated Gaussian `exp(-½ (x - μ)ᵀ Σ⁻¹ (x - μ))`; see `correlated_gaussian`.

    Args:
        dim: dimension `d`.
        mean: `μ`, a scalar (every coordinate) or a `(d,)` array.
        min_std, max_std: smallest and largest standard deviation along the principal axes.
        angle: Givens rotation angle (radians) of every consecutive coordinate plane.
    """
    mean64, covariance = correlated_gaussian(dim, mean, min_std, max_std, angle)
    return _gaussian_target(
        "gaussian_correlated",
        mean64,
        covariance,
        pretty_name=f"Correlated Gaussian ({mean64.shape[0]}-D)",
        description=(
            f"Unnormalised correlated Gaussian in {mean64.shape[0]}-D: "
            "log p(x) = -(x - mu)^T Sigma^-1 (x - mu) / 2 "
            "with Sigma = R diag(lambda) R^T, principal stds log-spaced from "
            f"{float(max_std):g} to {float(min_std):g} and R a product of Givens rotations by "
            f"{float(angle):.4g} rad "
            "in consecutive coordinate planes (deterministic). Normaliser omitted on purpose: "
            "log Z = (d/2) log 2 pi + (1/2) log det Sigma. Analytic test bed of the suite; exact samples."
        ),
    )


ENTRIES = (
    entry("gaussian", gaussian, family="gaussian"),
    entry("gaussian_correlated", gaussian_correlated, family="gaussian"),
)
