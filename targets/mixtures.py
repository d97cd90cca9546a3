"""Gaussian mixtures: a general `GaussianMixture` and the mixture targets of the benchmark.

A mixture with (possibly unnormalised) weights `w_k = exp(log_weights[k])`, means `μ_k` and
covariances `Σ_k = L_k L_kᵀ` (`L_k` lower-triangular, `scale_trils[k]`) has the density

    γ(x) = Σ_k w_k N(x; μ_k, Σ_k),     log γ(x) = logsumexp_k [log w_k + log N(x; μ_k, Σ_k)],

with normaliser `Z = Σ_k w_k` (so `log Z = 0` when the weights sum to one). `logsumexp` is used
because a naive `log Σ exp` underflows to `-inf` some 50 nats away from every mode.

Registered targets (all 2-D except `mog50`; uniform weights, `log Z = 0`, exact ancestral samples):

- `gmm40`: the fab-torch / iDEM GMM-40 (Midgley et al. 2023, "Flow Annealed Importance Sampling
  Bootstrap"; Akhound-Sadegh et al. 2024, "Iterated Denoising Energy Matching"): 40 isotropic
  components, per-dimension std `softplus(1) = 1.3132617`, means hard-coded below. Three other,
  incompatible "GMM-40"s circulate and this is none of them: fab-jax `gmm_v0` / Beyond-ELBOs
  `gmm40` (means `jax.random.uniform(PRNGKey(0), (40, 2), -1, 1) * 40`, std 1), CMCD `many_gmm`
  (same JAX means, std `softplus(0.1) = 0.7444`) and sde_sampler `GMM(name="fab")` (torch seed 42,
  std `softplus(1)`). The JAX-PRNG means also depend on `jax_threefry_partitionable`.
- `gmm9`, `gmm25`: 3×3 and 5×5 grids with spacing 5 and variance 0.3 (DGFS / gfn-diffusion).
- `mog2`, `mog50`: 10 full-covariance components in d = 2 and d = 50 following the Beyond-ELBOs
  recipe (Blessing et al. 2024), with parameters generated once by `scripts/generate_mog50.py` and
  shipped in `targets/data/mog50.npz`.

Definitions, constants and test values: `docs/targets.md` §1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from targets.base import Target, entry

__all__ = [
    "GMM40_MEANS",
    "GMM40_STD",
    "GRID_VARIANCE",
    "MOG_DATA_PATH",
    "GaussianMixture",
    "gmm9",
    "gmm25",
    "gmm40",
    "grid_mixture",
    "load_mog_parameters",
    "mixture_moments",
    "mixture_target",
    "mog2",
    "mog50",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


def _default_float() -> np.dtype:
    """float32, or float64 when `jax_enable_x64` is on (jax's canonical float dtype)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _as_float_array(value, dtype) -> jax.Array:
    return jnp.asarray(np.asarray(value, dtype=np.float64), dtype=dtype or _default_float())


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A mixture of `K` full-covariance Gaussians in `d` dimensions (a JAX PyTree).

    `log_prob(x) = logsumexp_k [log_weights[k] + log N(x; means[k], scale_trils[k] scale_trils[k]ᵀ)]`.
    The weights need not be normalised: the density then integrates to `exp(log_Z)` with
    `log_Z = logsumexp(log_weights)` (useful for tilted mixtures, whose weights change).

    Build it with `GaussianMixture.from_covariances` or `GaussianMixture.from_stds`; the raw
    constructor takes the arrays as they are (no dtype conversion), so that the class can be a
    PyTree passed through `jax.jit` / `jax.vmap`.

    Args:
        log_weights: `(K,)` log mixture weights `log w_k`.
        means: `(K, d)` component means `μ_k`.
        scale_trils: `(K, d, d)` lower-triangular Cholesky factors `L_k` with positive diagonal,
            `Σ_k = L_k L_kᵀ`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> mix = GaussianMixture.from_stds(jnp.array([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
        >>> float(mix.log_Z)
        0.0
        >>> mix.sample(jax.random.key(0), 3).shape
        (3, 2)
    """

    log_weights: jax.Array
    means: jax.Array
    scale_trils: jax.Array

    def __post_init__(self):
        # PyTree transformations rebuild the class with placeholder leaves (None, sentinels,
        # batching specs), so only validate when every field is an actual array. Leading batch
        # axes are allowed (stacked mixtures for `jax.vmap`); the methods act on one mixture.
        arrays = (self.log_weights, self.means, self.scale_trils)
        if not all(isinstance(a, np.ndarray | jax.Array) for a in arrays):
            return
        if self.means.ndim < 2:
            raise ValueError(f"means must have shape (K, d), got {self.means.shape}")
        *_, num_components, dim = self.means.shape
        if self.log_weights.shape != self.means.shape[:-1]:
            raise ValueError(
                f"log_weights must have shape (K,) = ({num_components},) to match means {self.means.shape}, "
                f"got {self.log_weights.shape}"
            )
        if self.scale_trils.shape != self.means.shape + (dim,):
            raise ValueError(
                f"scale_trils must have shape (K, d, d) = ({num_components}, {dim}, {dim}), "
                f"got {self.scale_trils.shape}"
            )

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_covariances(
        cls, means, covariances, *, weights=None, log_weights=None, dtype=None
    ) -> GaussianMixture:
        """Mixture from means `(K, d)` and full covariances `(K, d, d)` (symmetric positive definite).

        Weights default to uniform; give either `weights` (non-negative, `(K,)`) or `log_weights`.
        The Cholesky factors are computed in float64 NumPy, then everything is cast to `dtype`
        (default: jax's canonical float, float32 unless x64 is enabled).

        Raises:
            ValueError: on inconsistent shapes or a covariance that is not positive definite.
        """
        means64 = _checked_means(means)
        num_components, dim = means64.shape
        covariances64 = np.asarray(covariances, dtype=np.float64)
        if covariances64.shape != (num_components, dim, dim):
            raise ValueError(
                f"covariances must have shape (K, d, d) = ({num_components}, {dim}, {dim}), "
                f"got {covariances64.shape}"
            )
        if not np.allclose(covariances64, np.swapaxes(covariances64, -1, -2), rtol=1e-10, atol=1e-12):
            raise ValueError("covariances must be symmetric")
        try:
            scale_trils = np.linalg.cholesky(covariances64)
        except np.linalg.LinAlgError as error:
            raise ValueError("covariances must be positive definite") from error
        return cls._build(
            _checked_log_weights(num_components, weights, log_weights), means64, scale_trils, dtype
        )

    @classmethod
    def from_stds(cls, means, stds, *, weights=None, log_weights=None, dtype=None) -> GaussianMixture:
        """Mixture of axis-aligned Gaussians from means `(K, d)` and standard deviations.

        Args:
            means: `(K, d)` component means.
            stds: a scalar (every component isotropic with that std), `(K,)` (one isotropic std
                per component) or `(K, d)` (per component, per dimension); all positive.
            weights, log_weights: as in `from_covariances`.
            dtype: as in `from_covariances`.
        """
        means64 = _checked_means(means)
        num_components, dim = means64.shape
        stds64 = np.asarray(stds, dtype=np.float64)
        if stds64.ndim == 0:
            stds64 = np.full((num_components, dim), float(stds64))
        elif stds64.shape == (num_components,):
            stds64 = np.repeat(stds64[:, None], dim, axis=1)
        elif stds64.shape != (num_components, dim):
            raise ValueError(
                f"stds must be a scalar, shape (K,) = ({num_components},) or "
                f"(K, d) = ({num_components}, {dim}), "
                f"got {stds64.shape}"
            )
        if not np.all(np.isfinite(stds64) & (stds64 > 0)):
            raise ValueError("stds must be finite and positive")
        scale_trils = np.einsum("kd,de->kde", stds64, np.eye(dim))
        return cls._build(
            _checked_log_weights(num_components, weights, log_weights), means64, scale_trils, dtype
        )

    @classmethod
    def _build(cls, log_weights, means, scale_trils, dtype) -> GaussianMixture:
        return cls(
            log_weights=_as_float_array(log_weights, dtype),
            means=_as_float_array(means, dtype),
            scale_trils=_as_float_array(scale_trils, dtype),
        )

    # -- shapes and parameters ----------------------------------------------------------------
    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def log_Z(self) -> jax.Array:
        """`log Σ_k w_k`, the log normaliser of `log_prob` (0 for normalised weights)."""
        return logsumexp(self.log_weights)

    @property
    def weights(self) -> jax.Array:
        """Normalised mixing probabilities `π_k = w_k / Σ_j w_j`, shape `(K,)`."""
        return jax.nn.softmax(self.log_weights)

    def covariances(self) -> jax.Array:
        """Component covariances `Σ_k = L_k L_kᵀ`, shape `(K, d, d)`."""
        return self.scale_trils @ jnp.swapaxes(self.scale_trils, -1, -2)

    # -- densities ----------------------------------------------------------------------------
    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """Normalised component log densities `log N(x; μ_k, Σ_k)` of ONE point, shape `(K,)`.

        `log N = -½‖L_k⁻¹(x - μ_k)‖² - Σ_i log (L_k)_ii - (d/2) log 2π`. Weights are not included.

        `L_k⁻¹` is formed once per call from the factors alone (`inverse_scale_trils`), so under
        `jax.vmap` over points it is computed once for the whole batch and the whitening is one
        matrix product, where a solve of `L_k w = x - μ_k` batches into one small triangular solve
        per point and component. `make perf` times the two side by side
        (`benchmarks/perf/target_evals.py`). Over 31 interleaved rounds on a 2-core CPU the product is
        1.5x faster on `gmm40` (40 components, 2-D) and within noise on `mog50` (10 components,
        50-D: medians 4.1 and 4.2 ms for 512 points, per-round ratios 0.87-0.92).
        """
        self._check_point(x)
        whitened = jnp.einsum("kij,kj->ki", self.inverse_scale_trils(), x[None, :] - self.means)
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.scale_trils, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * jnp.sum(whitened**2, axis=-1) - log_det - 0.5 * self.dim * _LOG_2PI

    def inverse_scale_trils(self) -> jax.Array:
        """`L_k⁻¹` (lower-triangular), shape `(K, d, d)`, by triangular solves against the identity."""
        eye = jnp.eye(self.dim, dtype=self.scale_trils.dtype)
        return jax.vmap(lambda scale_tril: solve_triangular(scale_tril, eye, lower=True))(self.scale_trils)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """`log Σ_k w_k N(x; μ_k, Σ_k)` of ONE point `(d,)` (normalised iff the weights are)."""
        return logsumexp(self.log_weights + self.component_log_probs(x))

    def log_responsibilities(self, x: jax.Array) -> jax.Array:
        """Posterior component log probabilities `log P(k | x)` of ONE point, shape `(K,)`."""
        joint = self.log_weights + self.component_log_probs(x)
        return joint - logsumexp(joint)

    def _check_point(self, x: jax.Array) -> None:
        if jnp.shape(x) != (self.dim,):
            raise ValueError(
                f"GaussianMixture takes one point of shape ({self.dim},), got {jnp.shape(x)}; "
                "batch with jax.vmap"
            )

    # -- sampling and moments -----------------------------------------------------------------
    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """Exact ancestral samples `(num_samples, d)`: `k ~ Categorical(π)`, `x = μ_k + L_k ε`.

        Memory is `O(num_samples · d)`: the components are visited by a `lax.scan`, which costs
        `K · num_samples · d²` flops instead of gathering one `d × d` factor per sample.
        """
        key_component, key_noise = jax.random.split(key)
        components = jax.random.categorical(key_component, self.log_weights, shape=(num_samples,))
        noise = jax.random.normal(key_noise, (num_samples, self.dim), dtype=self.means.dtype)

        def add_component(samples, component):
            index, mean, scale_tril = component
            draws = mean[None, :] + noise @ scale_tril.T
            return jnp.where((components == index)[:, None], draws, samples), None

        indices = jnp.arange(self.num_components)
        samples, _ = jax.lax.scan(
            add_component, jnp.zeros_like(noise), (indices, self.means, self.scale_trils)
        )
        return samples

    def mean(self) -> jax.Array:
        """`E[x] = Σ_k π_k μ_k`, shape `(d,)`."""
        return self.weights @ self.means

    def covariance(self) -> jax.Array:
        """`Cov[x] = Σ_k π_k (Σ_k + μ_k μ_kᵀ) - E[x] E[x]ᵀ`, shape `(d, d)`."""
        mean = self.mean()
        second = jnp.einsum("k,kij->ij", self.weights, self.covariances())
        second = second + jnp.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - jnp.outer(mean, mean)


def _checked_means(means) -> np.ndarray:
    means64 = np.asarray(means, dtype=np.float64)
    if means64.ndim != 2 or 0 in means64.shape:
        raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {means64.shape}")
    if not np.all(np.isfinite(means64)):
        raise ValueError("means must be finite")
    return means64


def _checked_log_weights(num_components: int, weights, log_weights) -> np.ndarray:
    if weights is not None and log_weights is not None:
        raise ValueError("give either weights or log_weights, not both")
    if weights is None and log_weights is None:
        return np.full(num_components, -np.log(num_components))
    if weights is not None:
        weights64 = np.asarray(weights, dtype=np.float64)
        if weights64.shape != (num_components,) or not np.all(weights64 >= 0) or not weights64.sum() > 0:
            raise ValueError(
                f"weights must be non-negative with shape ({num_components},) and a positive sum, "
                f"got {weights!r}"
            )
        with np.errstate(divide="ignore"):
            return np.log(weights64)
    log_weights64 = np.asarray(log_weights, dtype=np.float64)
    if log_weights64.shape != (num_components,) or np.any(np.isnan(log_weights64)):
        raise ValueError(f"log_weights must have shape ({num_components},) without NaN, got {log_weights!r}")
    return log_weights64


def mixture_moments(log_weights, means, covariances) -> dict[str, np.ndarray]:
    """Closed-form mean `(d,)` and covariance `(d, d)` of a mixture, in float64 NumPy.

    Used for `Target.ground_truth`, so that reference statistics do not inherit float32 rounding.
    """
    log_weights = np.asarray(log_weights, np.float64)
    probabilities = np.exp(log_weights - log_weights.max())
    probabilities /= probabilities.sum()
    means = np.asarray(means, np.float64)
    mean = probabilities @ means
    second = np.einsum("k,kij->ij", probabilities, np.asarray(covariances, np.float64))
    second += np.einsum("k,ki,kj->ij", probabilities, means, means)
    return {"mean": mean, "covariance": second - np.outer(mean, mean)}


def mixture_target(
    name: str, log_weights, means, covariances, *, pretty_name: str, description: str, stds=None
) -> Target:
    """A normalised-mixture `Target` (`log Z = log Σ w_k`, exact samples, closed-form moments).

    Args:
        name: registry id.
        log_weights, means, covariances: float64 parameters `(K,)`, `(K, d)`, `(K, d, d)`.
        pretty_name, description: as in `Target`.
        stds: when given, the mixture is built with `GaussianMixture.from_stds` (exactly diagonal
            factors) instead of a Cholesky decomposition of `covariances`.
    """
    if stds is None:
        mixture = GaussianMixture.from_covariances(means, covariances, log_weights=log_weights)
    else:
        mixture = GaussianMixture.from_stds(means, stds, log_weights=log_weights)
    log_Z = float(np.logaddexp.reduce(np.asarray(log_weights, np.float64)))
    if abs(log_Z) < 1e-12:  # K copies of -log K sum to 1 up to float64 rounding: report the exact 0
        log_Z = 0.0
    return Target(
        name=name,
        dim=mixture.dim,
        log_prob_fn=jax.jit(mixture.log_prob),
        pretty_name=pretty_name,
        log_Z=log_Z,
        log_Z_source="closed form: log Σ_k w_k (normalised Gaussian components)",
        sample_fn=jax.jit(mixture.sample, static_argnums=1),
        mixture=mixture,
        ground_truth=mixture_moments(log_weights, means, covariances),
        description=description,
    )


# -- GMM-40 -------------------------------------------------------------------------------------

GMM40_STD = float(np.log1p(np.e))
"""Per-dimension std of every GMM-40 component: softplus(1) = 1.3132617 (fab-torch `log_var_scaling: 1.0`
feeds `scale_tril = diag(softplus(log_var))`, which is a std despite the name)."""

GMM40_MEANS = np.array(
    [
        [-0.2994728, 21.457745],
        [-32.921806, -29.437561],
        [-15.406175, 10.7262945],
        [-0.7925272, 31.71558],
        [-3.5497618, 10.584502],
        [-12.088523, -7.8626156],
        [-38.21394, -26.491283],
        [-16.488924, 1.4817429],
        [15.813408, 24.000912],
        [-27.117643, -17.418514],
        [14.528685, 33.21552],
        [-8.232007, 29.93247],
        [-6.4473343, 4.232564],
        [36.219048, -37.106815],
        [-25.181519, -10.12661],
        [-15.591998, 34.56003],
        [-25.927185, -18.413315],
        [-27.945618, -37.46244],
        [-23.349619, 34.383923],
        [17.848736, 19.386902],
        [2.1036625, -20.50734],
        [6.7673874, -37.34779],
        [-28.902649, -20.6212],
        [25.237518, 23.45285],
        [-17.739801, -1.4432955],
        [25.582428, 39.765324],
        [15.875287, 5.403714],
        [26.819454, -23.552094],
        [7.453761, -31.01222],
        [-27.723446, -20.663342],
        [18.098923, 16.086416],
        [-23.6941, 12.084284],
        [21.958881, -5.0486946],
        [1.5272617, 9.268188],
        [24.815063, 38.407764],
        [-30.824944, -14.65879],
        [15.720396, 33.141975],
        [34.808292, 35.29427],
        [7.960582, -34.783306],
        [3.6797, -25.024214],
    ],
    dtype=np.float32,
)
"""The 40 GMM-40 means (float32, row = component) of fab-torch `GMM(dim=2, n_mixes=40, loc_scaling=40)`.

fab-torch draws them as `torch.manual_seed(0); (torch.rand((40, 2)) - 0.5) * 2 * 40` in float32.
Without torch: `u = RandomState(0).randint(0, 2**32, size=80, dtype=uint64)`,
`u = ((u & 0xFFFFFF) * 2**-24).astype(float32)`, `μ = ((u - 0.5) * 2) * 40` in float32, reshaped
row-major to (40, 2) (legacy NumPy `RandomState` is MT19937 with torch's seeding); the tests
check that this recipe reproduces these constants bit for bit."""


def gmm40() -> Target:
    """GMM-40, the fab-torch / iDEM instance (`targets.md` §1.1)."""
    means = GMM40_MEANS.astype(np.float64)
    num_components, dim = means.shape
    covariances = np.broadcast_to(GMM40_STD**2 * np.eye(dim), (num_components, dim, dim))
    return mixture_target(
        "gmm40",
        np.full(num_components, -np.log(num_components)),
        means,
        covariances,
        stds=GMM40_STD,
        pretty_name="GMM-40 (2-D)",
        description=(
            "Uniform mixture of 40 isotropic Gaussians in 2-D with per-dimension std softplus(1) = 1.3132617 "
            "and means in [-40, 40]^2: the fab-torch GMM (Midgley et al. 2023, FAB) that iDEM/DEM "
            "(Akhound-Sadegh et al. 2024) import, means drawn by torch.manual_seed(0); (torch.rand((40, 2)) "
            "- 0.5) * 2 * 40 and shipped as float32 constants. log Z = 0. NOT the three other circulating "
            "GMM-40 variants: fab-jax gmm_v0 / Beyond-ELBOs 'GMM40' (means from "
            "jax.random.uniform(PRNGKey(0)) "
            "* 40, std 1.0), CMCD many_gmm (same JAX means, std softplus(0.1) = 0.7444) and sde_sampler "
            "GMM(name='fab') (torch seed 42, std softplus(1)). Two pairs of means nearly coincide "
            "(rows 22/29 "
            "at distance 1.18, 9/16 at 1.55), so fewer than 40 modes are separated."
        ),
    )


# -- grids ---------------------------------------------------------------------------------------

GRID_VARIANCE = 0.3
"""Per-dimension variance of the grid mixtures (DGFS / gfn-diffusion: std √0.3 = 0.5477222)."""


def grid_mixture(
    name: str,
    num_per_side: int,
    *,
    spacing: float = 5.0,
    variance: float = GRID_VARIANCE,
    pretty_name: str = "",
    description: str = "",
) -> Target:
    """Uniform mixture of `num_per_side²` isotropic Gaussians on a centred square grid in 2-D.

    Means are `{-(n-1)/2, …, (n-1)/2}² · spacing` (row-major: the second coordinate varies
    fastest), covariance `variance · I`, `log Z = 0`.
    """
    if not isinstance(num_per_side, int) or num_per_side < 1:
        raise ValueError(f"num_per_side must be a positive integer, got {num_per_side!r}")
    axis = (np.arange(num_per_side) - (num_per_side - 1) / 2) * spacing
    means = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    num_components = means.shape[0]
    covariances = np.broadcast_to(variance * np.eye(2), (num_components, 2, 2))
    return mixture_target(
        name,
        np.full(num_components, -np.log(num_components)),
        means,
        covariances,
        stds=float(np.sqrt(variance)),
        pretty_name=pretty_name or name,
        description=description,
    )


def gmm9() -> Target:
    """3×3 grid mixture of DGFS / gfn-diffusion `9gmm` / fab-jax `gmm_v1` (`targets.md` §1.2)."""
    return grid_mixture(
        "gmm9",
        3,
        pretty_name="GMM-9 grid (2-D)",
        description=(
            "Uniform mixture of 9 isotropic Gaussians in 2-D, means {-5, 0, 5}^2, variance 0.3 per dimension "
            "(std 0.5477222); log Z = 0. As in DGFS 'gm', gfn-diffusion energies/nine_gmm.py, fab-jax "
            "targets/gmm_v1.py and sde_sampler 'grid'."
        ),
    )


def gmm25() -> Target:
    """5×5 grid mixture of gfn-diffusion `25gmm` (`targets.md` §1.3)."""
    return grid_mixture(
        "gmm25",
        5,
        pretty_name="GMM-25 grid (2-D)",
        description=(
            "Uniform mixture of 25 isotropic Gaussians in 2-D, means {-10, -5, 0, 5, 10}^2, "
            "covariance 0.3 I; "
            "log Z = 0. As in gfn-diffusion energies/twenty_five_gmm.py."
        ),
    )


# -- MoG (Beyond ELBOs recipe, our own frozen instance) -------------------------------------------

MOG_DATA_PATH = Path(__file__).resolve().parent / "data" / "mog50.npz"
"""Shipped MoG parameters (`mog2_*` and `mog50_*` arrays); provenance in `mog50.json` next to it."""


@functools.cache
def load_mog_parameters(dim: int) -> dict[str, np.ndarray]:
    """The shipped float64 MoG parameters for `dim` ∈ {2, 50}: `log_weights`, `means`, `covariances`.

    Read from `targets/data/mog50.npz` (written once by `scripts/generate_mog50.py`); nothing is
    drawn from a PRNG at run time. The returned arrays are read-only.
    """
    with np.load(MOG_DATA_PATH) as data:
        available = sorted({int(key.split("_")[0][3:]) for key in data.files})
        if dim not in available:
            raise ValueError(f"no shipped MoG instance for dim={dim}; available dims: {available}")
        parameters = {
            field: np.array(data[f"mog{dim}_{field}"], dtype=np.float64)
            for field in ("log_weights", "means", "covariances")
        }
    for array in parameters.values():
        array.setflags(write=False)
    return parameters


def _mog_provenance() -> dict:
    return json.loads(MOG_DATA_PATH.with_suffix(".json").read_text())


def _mog_target(dim: int) -> Target:
    parameters = load_mog_parameters(dim)
    seed = _mog_provenance()["instances"][f"mog{dim}"]["random_state_seed"]
    return mixture_target(
        f"mog{dim}",
        parameters["log_weights"],
        parameters["means"],
        parameters["covariances"],
        pretty_name=f"MoG-10 ({dim}-D)",
        description=(
            f"Uniform mixture of 10 full-covariance Gaussians in {dim}-D following the Beyond-ELBOs "
            "MoG recipe "
            "(Blessing et al. 2024, targets/gaussian_mixture.py): means ~ U[-10, 10]^d, covariances ~ "
            "Wishart(df = d + 2, scale = I) (covariances, not precisions); log Z = 0. Parameters were drawn "
            f"ONCE by scripts/generate_mog50.py (NumPy RandomState({seed}) + scipy.stats.wishart) and are "
            "shipped in targets/data/mog50.npz. This is our own frozen instance: Beyond-ELBOs draws its "
            "parameters from the JAX PRNG at run time (which changed with jax_threefry_partitionable), so "
            "its numbers are not comparable instance-for-instance."
        ),
    )


def mog2() -> Target:
    """10-component full-covariance MoG in 2-D (`targets.md` §1.4; shipped parameters)."""
    return _mog_target(2)


def mog50() -> Target:
    """10-component full-covariance MoG in 50-D (`targets.md` §1.4; shipped parameters)."""
    return _mog_target(50)


ENTRIES = (
    entry("gmm40", gmm40, family="mixture"),
    entry("gmm9", gmm9, family="mixture"),
    entry("gmm25", gmm25, family="mixture"),
    entry("mog2", mog2, family="mixture"),
    entry("mog50", mog50, family="mixture"),
)
