"""Exactly solvable reward fine-tuning tasks: a Gaussian-mixture "pretrained flow" and a simple reward.

A fine-tuning task tilts the law of a pretrained generative model by a reward (methods.md §1.1, §2):

    p*(x) = p_data(x) e^{λ r(x)} / Z,          Z = E_{p_data}[e^{λ r}].

Here the "pretrained model" is the exact rectified flow of a Gaussian mixture, so everything a
benchmark needs is known in closed form.

**The pretrained flow.** Linear interpolant `X_t = (1 - t) X_0 + t X_1`, `X_0 ~ N(0, I)` independent
of `X_1 ~ p_data = Σ_j w_j N(μ_j, Σ_j)`. Given the component `j`, `(X_t, X_1 - X_0)` is jointly Gaussian:

    X_t | j ~ N(t μ_j, C_j(t)),              C_j(t) = t² Σ_j + (1 - t)² I,
    E[X_1 - X_0 | j] = μ_j,                  Cov(X_1 - X_0, X_t | j) = t Σ_j - (1 - t) I,

so the marginal `p_t = Σ_j w_j N(t μ_j, C_j(t))` (`FinetuneTask.marginal`) and the flow-matching
velocity is the posterior mixture of the per-component Gaussian regressions [DERIVED here; tested
against a Monte-Carlo estimate of `E[X_1 - X_0 | X_t = x]`]:

    v(x, t) = E[X_1 - X_0 | X_t = x] = Σ_j π_j(x, t) [μ_j + (t Σ_j - (1 - t) I) C_j(t)^{-1} (x - t μ_j)],
    π_j(x, t) = w_j N(x; t μ_j, C_j) / p_t(x).

Its ends are right: `v(x, 0) = E[X_1] - x` and `v(x, 1) = x` (`E[X_1 - X_0 | X_1 = x] = x`). The score is
`∇log p_t(x) = -Σ_j π_j C_j^{-1}(x - t μ_j)`, and the two satisfy the rectified-flow identity of
methods.md §2.1, `∇log p_t = (t v - x)/(1 - t)` (per component: `t v_j - x = -(1 - t) C_j^{-1}(x - t μ_j)`).
With the eigen-decompositions `Σ_j = U_j diag(s_j) U_jᵀ` (computed once, in float64),
`C_j = U_j diag(t² s_j + (1 - t)²) U_jᵀ`, so no matrix is factorised at run time.

**Rewards** (`REWARDS`, one class per kind, each with the Gaussian integral that tilts a component):

- `linear`: `r(x) = a·x`. `N(μ, Σ) e^{λ a·x} = e^{λ a·μ + ½λ² aᵀΣa} N(μ + λ Σ a, Σ)`: every mode is
  shifted by `λ Σ_j a` and re-weighted by `exp(λ a·μ_j + ½ λ² aᵀ Σ_j a)`.
- `quadratic`: `r(x) = -|x - c|²/(2 s²)` (λ > 0). With `τ = s²/λ`, `e^{λ r} = (2πτ)^{d/2} N(x; c, τ I)` and
  `N(x; μ, Σ) N(x; c, τI) = N(μ; c, Σ + τI) N(x; μ', Σ')`, `Σ' = (Σ^{-1} + I/τ)^{-1}`,
  `μ' = Σ'(Σ^{-1} μ + c/τ)`: every mode contracts towards `c`, re-weighted by
  `(2πτ)^{d/2} N(μ_j; c, Σ_j + τ I)`.

**Exact answers** (all closed form, float64): the tilted mixture `p*` (`tilted`), `log Z` (`log_Z`, a
log-sum-exp of the component integrals), and the optimal reward-versus-KL point of this λ
(`reward_optimum`): `E_{p*}[r]` from the component moments and, because `log p* - log p_data = λ r - log Z`
exactly, `KL(p* || p_data) = λ E_{p*}[r] - log Z`. The KL-regularised objective in tilting units,
`J(q) = λ E_q[r] - KL(q || p_data)`, is maximised by `p*` with `J* = log Z`. `frontier(task, lams)`
gives the optimal (reward, KL) curve over λ.

**Optimal control.** `h_t(x) = E[e^{λ r(X_1)} | X_t = x]` under the interpolant's posterior (which is the
memoryless base's, see `samplers.base_processes.MemorylessFlowBase`), and by Bayes
`p_t h_t = Z p*_t`, with `p*_t` the interpolant marginal of the tilted mixture. Hence
`∇log h_t = ∇log p*_t - ∇log p_t` exactly (`optimal_guidance`), and the optimal control of the (P1)
form is `u* = σ(t) ∇log h_t`. (The O(t_0²) memorylessness bias of a base started at `t_0 > 0` is in
the terminal law and the path weights, not in this formula.)

**Registry.** `FINETUNE_TASKS` maps a task name to its factory; `get_task(name)` builds it. Each task's
tilted law is also registered in the target registry under the task name (`Target.finetune_task`
set, capability `finetune`), so `tiltbench targets` lists it with its exact `log Z` and the harness
knows the cell is a fine-tuning cell. The Target's `log_prob` is `log p_data + λ r` (unnormalised),
its `log_Z` the tilt's normaliser, its samples exact draws of `p*`.

Shipped tasks (constants in this file, no PRNG):
- `ft_gmm2d_linear`: 4 full-covariance modes in 2-D, `r = x_1 + ½ x_2`, λ = ½;
- `ft_gmm2d_quadratic`: the same data, `r = -|x - (1.5, 0.5)|²/2`, λ = 1;
- `ft_gmm16_quadratic`: 6 diagonal-covariance modes in 16-D (DCT-basis means of norm 4),
  `r = -|x - c|²/(2·2²)` with `c` between two modes, λ = 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from targets.base import Target, entry
from targets.mixtures import GaussianMixture, mixture_moments
from targets.registry import Registry

__all__ = [
    "FINETUNE_TASKS",
    "REWARDS",
    "FinetuneTask",
    "LinearReward",
    "QuadraticReward",
    "RewardOptimum",
    "flow_score",
    "flow_velocity",
    "frontier",
    "get_task",
    "task_names",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------------------


class _Components(NamedTuple):
    """float64 mixture parameters: `log_weights (K,)` (not necessarily normalised), `means (K, d)`,
    `covariances (K, d, d)`."""

    log_weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray


def _check_vector(owner: str, name: str, value: tuple[float, ...]) -> None:
    v = np.asarray(value, np.float64)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"{owner}: {name} must be a finite non-empty vector, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LinearReward:
    """`r(x) = a·x` (`a = direction`). Tilting: mean shift `λ Σ a`, log-weight `+ λ a·μ + ½λ² aᵀΣa`."""

    direction: tuple[float, ...]
    kind: ClassVar[str] = "linear"

    def __post_init__(self):
        _check_vector("LinearReward", "direction", self.direction)

    @property
    def dim(self) -> int:
        return len(self.direction)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.dot(jnp.asarray(self.direction, x.dtype), x)

    def grad(self, x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(self.direction, x.dtype), x.shape)

    def tilt(self, lam: float, comps: _Components) -> _Components:
        a = np.asarray(self.direction, np.float64)
        sigma_a = comps.covariances @ a  # (K, d)
        log_weights = comps.log_weights + lam * comps.means @ a + 0.5 * lam**2 * sigma_a @ a
        return _Components(log_weights, comps.means + lam * sigma_a, comps.covariances)

    def component_means(self, comps: _Components) -> np.ndarray:
        """`E_{N(μ_k, Σ_k)}[r]`, `(K,)`."""
        return comps.means @ np.asarray(self.direction, np.float64)


@dataclasses.dataclass(frozen=True)
class QuadraticReward:
    """`r(x) = -|x - c|²/(2 s²)` (`c = centre`, `s = scale`); needs `λ > 0` to tilt (see module doc)."""

    centre: tuple[float, ...]
    scale: float
    kind: ClassVar[str] = "quadratic"

    def __post_init__(self):
        _check_vector("QuadraticReward", "centre", self.centre)
        if not self.scale > 0:
            raise ValueError(f"QuadraticReward: scale must be positive, got {self.scale!r}")

    @property
    def dim(self) -> int:
        return len(self.centre)

    def __call__(self, x: jax.Array) -> jax.Array:
        diff = x - jnp.asarray(self.centre, x.dtype)
        return -0.5 * jnp.sum(diff * diff) / self.scale**2

    def grad(self, x: jax.Array) -> jax.Array:
        return -(x - jnp.asarray(self.centre, x.dtype)) / self.scale**2

    def tilt(self, lam: float, comps: _Components) -> _Components:
        if not lam > 0:
            raise ValueError(f"a quadratic reward tilts to a normalisable law only for lam > 0, got {lam!r}")
        c = np.asarray(self.centre, np.float64)
        dim = c.size
        tau = self.scale**2 / lam
        eye = np.eye(dim)
        log_weights, means, covariances = [], [], []
        for log_w, mu, cov in zip(comps.log_weights, comps.means, comps.covariances, strict=True):
            # (2πτ)^{d/2} N(μ; c, Σ + τI) is the component's Gaussian integral of e^{λr}.
            joint = cov + tau * eye
            diff = mu - c
            _, logdet_joint = np.linalg.slogdet(joint)
            log_n = -0.5 * diff @ np.linalg.solve(joint, diff) - 0.5 * logdet_joint - 0.5 * dim * _LOG_2PI
            log_weights.append(log_w + 0.5 * dim * (_LOG_2PI + math.log(tau)) + log_n)
            # Σ' = Σ - Σ(Σ + τI)^{-1}Σ, μ' = μ + Σ(Σ + τI)^{-1}(c - μ) (no inverse of Σ needed).
            gain = np.linalg.solve(joint, cov).T  # Σ(Σ + τI)^{-1} (both symmetric)
            new_cov = cov - gain @ cov
            covariances.append(0.5 * (new_cov + new_cov.T))
            means.append(mu + gain @ (c - mu))
        return _Components(np.asarray(log_weights), np.asarray(means), np.asarray(covariances))

    def component_means(self, comps: _Components) -> np.ndarray:
        """`E_{N(μ_k, Σ_k)}[r] = -(tr Σ_k + |μ_k - c|²)/(2 s²)`, `(K,)`."""
        c = np.asarray(self.centre, np.float64)
        trace = np.trace(comps.covariances, axis1=-2, axis2=-1)
        return -(trace + np.sum((comps.means - c) ** 2, axis=-1)) / (2.0 * self.scale**2)


REWARDS: Registry[Any] = Registry("reward kind")
REWARDS.register("linear", LinearReward)
REWARDS.register("quadratic", QuadraticReward)


# ---------------------------------------------------------------------------------------------
# the flow of a Gaussian mixture
# ---------------------------------------------------------------------------------------------


class FlowConstants(NamedTuple):
    """A mixture in eigen form for the flow formulas (jnp arrays): `Σ_j = U_j diag(s_j) U_jᵀ`.

    Attributes:
        log_weights: `(K,)`.
        means: `(K, d)`.
        eigvals: `s_j`, `(K, d)`.
        eigvecs: `U_j`, `(K, d, d)` (columns are eigenvectors).
    """

    log_weights: jax.Array
    means: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array


def _flow_constants(comps: _Components) -> FlowConstants:
    eigvals, eigvecs = np.linalg.eigh(np.asarray(comps.covariances, np.float64))
    with jax.ensure_compile_time_eval():
        f = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
        return FlowConstants(f(comps.log_weights), f(comps.means), f(eigvals), f(eigvecs))


def _posterior_terms(c: FlowConstants, x: jax.Array, t: jax.Array):
    """Per-component `log w_j N(x; tμ_j, C_j)`, `U_jᵀ C_j^{-1}(x - tμ_j)` (eigen coordinates) and `C_j`'s
    eigenvalues."""
    t = jnp.asarray(t, x.dtype)
    cov_eig = t * t * c.eigvals + (1.0 - t) ** 2  # (K, d)
    proj = jnp.einsum("kde,kd->ke", c.eigvecs, x[None, :] - t * c.means)  # U_jᵀ(x - tμ_j)
    dim = x.shape[-1]
    log_joint = (
        c.log_weights - 0.5 * jnp.sum(proj * proj / cov_eig + jnp.log(cov_eig), -1) - 0.5 * dim * _LOG_2PI
    )
    return log_joint, proj / cov_eig, cov_eig


def flow_velocity(c: FlowConstants, x: jax.Array, t: jax.Array) -> jax.Array:
    """`v(x, t) = E[X_1 - X_0 | X_t = x]` of ONE point for the mixture `c` (module docstring)."""
    log_joint, white, _ = _posterior_terms(c, x, t)
    t = jnp.asarray(t, x.dtype)
    resp = jax.nn.softmax(log_joint)
    # (tΣ_j - (1-t)I) C_j^{-1}(x - tμ_j) = U_j [(t s_j - (1 - t)) ⊙ white_j]
    regress = jnp.einsum("kde,ke->kd", c.eigvecs, (t * c.eigvals - (1.0 - t)) * white)
    return resp @ (c.means + regress)


def flow_score(c: FlowConstants, x: jax.Array, t: jax.Array) -> jax.Array:
    """`∇log p_t(x) = -Σ_j π_j C_j^{-1}(x - tμ_j)` of ONE point."""
    log_joint, white, _ = _posterior_terms(c, x, t)
    resp = jax.nn.softmax(log_joint)
    return -resp @ jnp.einsum("kde,ke->kd", c.eigvecs, white)


# ---------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------


class RewardOptimum(NamedTuple):
    """The optimal point of the KL-regularised fine-tuning problem for one λ (closed form, float64).

    Attributes:
        lam: λ.
        reward_mean: `E_{p*}[r]`.
        kl: `KL(p* || p_data) = λ E_{p*}[r] - log Z`.
        log_Z: `log E_{p_data}[e^{λ r}]` (= the optimal objective `J* = λ E_{p*}[r] - KL`).
        base_reward_mean: `E_{p_data}[r]` (the pretrained model's reward).
        method: how the numbers were obtained ("closed form").
    """

    lam: float
    reward_mean: float
    kl: float
    log_Z: float
    base_reward_mean: float
    method: str = "closed form"


def _log_normalise(log_weights: np.ndarray) -> np.ndarray:
    return log_weights - np.logaddexp.reduce(log_weights)


@dataclasses.dataclass(frozen=True, eq=False)
class FinetuneTask:
    """A reward fine-tuning task with an exactly known pretrained flow and tilted law (module docstring).

    Args:
        name: registry id (also the id of its tilted `Target`).
        log_weights: `(K,)` data mixture log weights (normalised on construction).
        means: `(K, d)` data mixture means.
        covariances: `(K, d, d)` data mixture covariances (symmetric positive definite).
        reward_kind: a name from `REWARDS` (`"linear"`, `"quadratic"`).
        reward_params: the reward's parameters (`direction`; `centre`, `scale`).
        lam: the reward multiplier λ (> 0 for the quadratic reward).
        pretty_name: name for tables.
        description: one paragraph stating the task.
    """

    name: str
    log_weights: Any
    means: Any
    covariances: Any
    reward_kind: str
    reward_params: Mapping[str, Any]
    lam: float
    pretty_name: str = ""
    description: str = ""

    def __post_init__(self):
        means = np.asarray(self.means, np.float64)
        if means.ndim != 2:
            raise ValueError(f"task {self.name!r}: means must have shape (K, d), got {means.shape}")
        k, d = means.shape
        log_weights = np.asarray(self.log_weights, np.float64)
        covariances = np.asarray(self.covariances, np.float64)
        if log_weights.shape != (k,) or covariances.shape != (k, d, d):
            raise ValueError(
                f"task {self.name!r}: need log_weights (K,) = ({k},) and covariances (K, d, d) = "
                f"({k}, {d}, {d}), "
                f"got {log_weights.shape} and {covariances.shape}"
            )
        if np.any(np.linalg.eigvalsh(covariances) <= 0):
            raise ValueError(f"task {self.name!r}: covariances must be positive definite")
        object.__setattr__(self, "log_weights", _log_normalise(log_weights))
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covariances", covariances)
        object.__setattr__(self, "reward_params", dict(self.reward_params))
        object.__setattr__(self, "lam", float(self.lam))
        if self.reward_model.dim != d:
            raise ValueError(f"task {self.name!r}: the reward has dim {self.reward_model.dim}, the data {d}")
        _ = self._tilted_components  # fail early (e.g. a quadratic reward with lam <= 0)
        if not self.pretty_name:
            object.__setattr__(self, "pretty_name", self.name)

    # -- shapes and parameters ----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @functools.cached_property
    def reward_model(self):
        """The reward object (`REWARDS[reward_kind](**reward_params)`)."""
        return REWARDS.get(self.reward_kind, **self.reward_params)

    @functools.cached_property
    def _data_components(self) -> _Components:
        return _Components(self.log_weights, self.means, self.covariances)

    @functools.cached_property
    def _tilted_components(self) -> _Components:
        tilted = self.reward_model.tilt(self.lam, self._data_components)
        return tilted

    @functools.cached_property
    def data(self) -> GaussianMixture:
        """The data law `p_data` the pretrained flow generates (float32 `GaussianMixture`)."""
        return GaussianMixture.from_covariances(self.means, self.covariances, log_weights=self.log_weights)

    @functools.cached_property
    def _data_flow(self) -> FlowConstants:
        return _flow_constants(self._data_components)

    @functools.cached_property
    def _tilted_flow(self) -> FlowConstants:
        comps = self._tilted_components
        return _flow_constants(comps._replace(log_weights=_log_normalise(comps.log_weights)))

    # -- the pretrained flow ------------------------------------------------------------------
    def velocity(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Exact flow-matching velocity `v(x, t)` of ONE point `(dim,)` (module docstring)."""
        return flow_velocity(self._data_flow, x, t)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`∇log p_t(x)` of the pretrained flow's marginal, ONE point."""
        return flow_score(self._data_flow, x, t)

    def marginal(self, t: float) -> GaussianMixture:
        """The flow marginal `p_t = Σ_j w_j N(t μ_j, t² Σ_j + (1 - t)² I)` (concrete `t ∈ [0, 1]`).

        At `t_0` this is the initial law of the memoryless base (`initial_sample_fn`, `initial_log_prob_fn`).
        """
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"marginal: t must lie in [0, 1], got {t!r}")
        covs = t * t * self.covariances + (1.0 - t) ** 2 * np.eye(self.dim)
        return GaussianMixture.from_covariances(t * self.means, covs, log_weights=self.log_weights)

    # -- the reward ---------------------------------------------------------------------------
    def reward(self, x: jax.Array) -> jax.Array:
        """`r(x)` of ONE point (the raw reward, without λ)."""
        return self.reward_model(x)

    def grad_reward(self, x: jax.Array) -> jax.Array:
        """`∇r(x)` of ONE point (closed form)."""
        return self.reward_model.grad(x)

    # -- exact answers ------------------------------------------------------------------------
    def tilted(self) -> GaussianMixture:
        """The tilted law `p* ∝ p_data e^{λ r}` as a normalised float32 `GaussianMixture`."""
        comps = self._tilted_components
        return GaussianMixture.from_covariances(
            comps.means, comps.covariances, log_weights=_log_normalise(comps.log_weights)
        )

    def tilted_parameters(self) -> dict[str, np.ndarray]:
        """float64 `log_weights` (normalised), `means`, `covariances` of `p*`."""
        comps = self._tilted_components
        return {
            "log_weights": _log_normalise(comps.log_weights),
            "means": comps.means.copy(),
            "covariances": comps.covariances.copy(),
        }

    @property
    def log_Z(self) -> float:
        """`log E_{p_data}[e^{λ r}] = logsumexp_j(log w_j + log ∫N(μ_j, Σ_j) e^{λr})` (closed form)."""
        return float(np.logaddexp.reduce(self._tilted_components.log_weights))

    def tilted_score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`∇log p*_t(x)`: the score of the interpolant applied to the tilted mixture, ONE point."""
        return flow_score(self._tilted_flow, x, t)

    def optimal_guidance(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`∇log h_t(x) = ∇log p*_t(x) - ∇log p_t(x)`; the optimal (P1) control is `σ(t)` times this."""
        return self.tilted_score(x, t) - self.score(x, t)

    @property
    def reward_optimum(self) -> RewardOptimum:
        """The optimal (reward, KL) point of this λ: `E_{p*}[r]`, `KL(p*||p_data)`, `log Z` (closed form)."""
        return _optimum(self, self.lam)

    def target(self) -> Target:
        """The tilted law as a `Target`: `log_prob = log p_data + λ r`, its `log_Z`, exact samples of `p*`."""
        data, reward, lam = self.data, self.reward_model, self.lam
        tilted = self.tilted()
        params = self.tilted_parameters()
        optimum = self.reward_optimum
        return Target(
            name=self.name,
            dim=self.dim,
            log_prob_fn=jax.jit(lambda x: data.log_prob(x) + lam * reward(x)),
            pretty_name=self.pretty_name,
            log_Z=self.log_Z,
            log_Z_source=(
                f"closed form: log E_data[exp(λ r)], λ = {lam:g}, {self.reward_kind} reward "
                "(Gaussian integrals)"
            ),
            sample_fn=jax.jit(tilted.sample, static_argnums=1),
            mixture=tilted,
            ground_truth={
                **mixture_moments(params["log_weights"], params["means"], params["covariances"]),
                "reward_mean": optimum.reward_mean,
                "kl": optimum.kl,
            },
            description=self.description,
            finetune_task=self,
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (recorded with results)."""
        opt = self.reward_optimum
        return {
            "name": self.name,
            "dim": self.dim,
            "num_components": self.num_components,
            "reward_kind": self.reward_kind,
            "reward_params": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.reward_params.items()
            },
            "lam": self.lam,
            "log_Z": opt.log_Z,
            "reward_optimum": opt.reward_mean,
            "kl_optimum": opt.kl,
            "base_reward_mean": opt.base_reward_mean,
        }


def _optimum(task: FinetuneTask, lam: float) -> RewardOptimum:
    reward = task.reward_model
    data = task._data_components
    tilted = reward.tilt(float(lam), data)
    log_z = float(np.logaddexp.reduce(tilted.log_weights))
    probs = np.exp(_log_normalise(tilted.log_weights))
    reward_mean = float(probs @ reward.component_means(tilted))
    base_reward = float(np.exp(data.log_weights) @ reward.component_means(data))
    return RewardOptimum(float(lam), reward_mean, float(lam) * reward_mean - log_z, log_z, base_reward)


def frontier(task: FinetuneTask, lams: Sequence[float]) -> list[RewardOptimum]:
    """The optimal reward-versus-KL frontier: `reward_optimum` of `task` at each λ in `lams` (closed form).

    Each point maximises `E_q[r] - KL(q || p_data)/λ`; along the curve `dKL/dE[r] = λ`.
    """
    return [_optimum(task, float(lam)) for lam in lams]


# ---------------------------------------------------------------------------------------------
# shipped tasks
# ---------------------------------------------------------------------------------------------

GMM2D_WEIGHTS = np.array([0.3, 0.3, 0.25, 0.15])
GMM2D_MEANS = np.array([[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0], [3.0, 2.5]])
GMM2D_COVARIANCES = np.array(
    [
        [[0.4, 0.1], [0.1, 0.3]],
        [[0.3, -0.1], [-0.1, 0.4]],
        [[0.25, 0.0], [0.0, 0.25]],
        [[0.2, 0.0], [0.0, 0.5]],
    ]
)
"""The 2-D "pretrained" data law: 4 full-covariance modes with unequal weights."""

GMM16_DIM = 16
GMM16_WEIGHTS = np.array([0.25, 0.2, 0.2, 0.15, 0.1, 0.1])


def _gmm16_parameters() -> tuple[np.ndarray, np.ndarray]:
    """16-D data law: means = 4 × the DCT-II basis vectors k = 1..6 (orthogonal, norm 4, pairwise
    distance 4√2), diagonal variances `0.5 + 0.25 cos(π(i + 2j)/8) ∈ [0.25, 0.75]` (formulas, no PRNG)."""
    d, k = GMM16_DIM, GMM16_WEIGHTS.size
    i = np.arange(d)
    basis = np.stack([np.cos(np.pi * (j + 1) * (2 * i + 1) / (2 * d)) for j in range(k)])
    means = 4.0 * basis / np.linalg.norm(basis, axis=1, keepdims=True)
    variances = np.stack([0.5 + 0.25 * np.cos(np.pi * (i + 2 * j) / 8.0) for j in range(k)])
    return means, np.einsum("kd,de->kde", variances, np.eye(d))


def _gmm16_centre() -> tuple[float, ...]:
    means, _ = _gmm16_parameters()
    return tuple(float(v) for v in 0.6 * means[1] + 0.2 * means[3])


def ft_gmm2d_linear() -> FinetuneTask:
    return FinetuneTask(
        name="ft_gmm2d_linear",
        log_weights=np.log(GMM2D_WEIGHTS),
        means=GMM2D_MEANS,
        covariances=GMM2D_COVARIANCES,
        reward_kind="linear",
        reward_params={"direction": (1.0, 0.5)},
        lam=0.5,
        pretty_name="FT GMM-4 linear (2-D)",
        description=(
            "Fine-tuning task: the pretrained model is the exact rectified flow of a 4-mode full-covariance "
            "Gaussian mixture in 2-D (weights 0.3/0.3/0.25/0.15), run with the memoryless schedule; reward "
            "r(x) = x_1 + 0.5 x_2, lambda = 0.5. The tilted law is the mixture with every mode shifted by "
            "lambda Sigma_j a and re-weighted by exp(lambda a.mu_j + lambda^2 a'Sigma_j a/2): the lightest "
            "mode becomes the heaviest. log Z, the tilted law, E_p*[r] and KL(p*||p_data) are closed form."
        ),
    )


def ft_gmm2d_quadratic() -> FinetuneTask:
    return FinetuneTask(
        name="ft_gmm2d_quadratic",
        log_weights=np.log(GMM2D_WEIGHTS),
        means=GMM2D_MEANS,
        covariances=GMM2D_COVARIANCES,
        reward_kind="quadratic",
        reward_params={"centre": (1.5, 0.5), "scale": 1.0},
        lam=1.0,
        pretty_name="FT GMM-4 quadratic (2-D)",
        description=(
            "Fine-tuning task: the same 2-D 4-mode pretrained flow as ft_gmm2d_linear, with the quadratic "
            "reward r(x) = -|x - (1.5, 0.5)|^2/2 and lambda = 1: every mode contracts towards the centre and "
            "is re-weighted by its Gaussian integral (the far-left mode almost vanishes). Closed-form log Z, "
            "tilted law, E_p*[r] and KL(p*||p_data)."
        ),
    )


def ft_gmm16_quadratic() -> FinetuneTask:
    means, covariances = _gmm16_parameters()
    return FinetuneTask(
        name="ft_gmm16_quadratic",
        log_weights=np.log(GMM16_WEIGHTS),
        means=means,
        covariances=covariances,
        reward_kind="quadratic",
        reward_params={"centre": _gmm16_centre(), "scale": 2.0},
        lam=1.0,
        pretty_name="FT GMM-6 quadratic (16-D)",
        description=(
            "Fine-tuning task in 16-D: the pretrained flow of a 6-mode diagonal-covariance Gaussian mixture "
            "(means 4 x the first six non-constant DCT-II basis vectors, variances in [0.25, 0.75], weights "
            "0.25/0.2/0.2/0.15/0.1/0.1), reward r(x) = -|x - c|^2/(2 * 2^2) with c = 0.6 mu_2 + 0.2 mu_4, "
            "lambda = 1. Closed-form log Z, tilted law, E_p*[r] and KL(p*||p_data)."
        ),
    )


FINETUNE_TASKS: Registry[FinetuneTask] = Registry("fine-tuning task")
FINETUNE_TASKS.register("ft_gmm2d_linear", ft_gmm2d_linear)
FINETUNE_TASKS.register("ft_gmm2d_quadratic", ft_gmm2d_quadratic)
FINETUNE_TASKS.register("ft_gmm16_quadratic", ft_gmm16_quadratic)


@functools.cache
def get_task(name: str) -> FinetuneTask:
    """The shipped task `name` (built once); unknown names raise with the list of valid ones."""
    return FINETUNE_TASKS.get(name)


def task_names() -> list[str]:
    """The shipped fine-tuning task names, sorted."""
    return FINETUNE_TASKS.names()


def _task_target(name: str) -> Target:
    return get_task(name).target()


ENTRIES = tuple(
    entry(name, functools.partial(_task_target, name), family="finetune") for name in FINETUNE_TASKS.names()
)
