"""Path-space divergence losses: PIS (path KL), log-variance, trajectory balance and DDS.

All four train a control `u_θ(x, t)` of the controlled SDE of `samplers.sde` (paper form P1,
`docs/methods.md` §0):

    dX = (b(X, t) + σ(t) u_θ(X, t)) dt + σ(t) dB,    X_{t_0} ~ p_0,

discretised by Euler–Maruyama on the problem's grid, with the exact discrete path log-weight
(methods.md §7.1, kernel form)

    log w(x_{0:K}) = log γ̃(x_K) + Σ_k log B_k(x_k | x_{k+1}) - log p_0(x_0) - Σ_k log F^θ_k(x_{k+1} | x_k),

`F^θ_k = N(x_k + h_k(b + σ_k u_θ), σ_k² h_k I)` the controlled forward kernel and `B_k` the base's
exact reversal of its own EM chain, so that `E_{F^θ}[w] = Z` for every θ. Sign convention: `log w`
is a log *weight* (large is good); the generalised work is `W = -log w`. The losses:

- `pis` (Path Integral Sampler, Zhang & Chen, arXiv 2111.15141; methods.md §7.1, §8.2 `pis`):
  `L = -mean_i log w_θ(X^i)` with *reparametrised* trajectories (gradients flow through every
  `x_k`, `detach="none"`), i.e. `KL(P^θ || P*) - log Z` estimated by Monte Carlo; Brownian base
  from the Dirac at 0.
- `dds` (Denoising Diffusion Sampler, Vargas, Grathwohl & Doucet, arXiv 2302.13834; methods.md
  §7.1): the same path-KL loss on the variance-preserving OU base started from its stationary
  Gaussian `N(0, σ_0² I)`. Here the VP SDE is discretised by Euler–Maruyama like every other base;
  the DDS paper and `DenisBless/variational_sampling_methods` use an exponential integrator
  `x' = αx + β²u + βσ_0 ε` instead (same continuous-time model, different discrete chain).
- `log_variance` (Richter & Berner, arXiv 2307.01198; methods.md §8.1):
  `L = Var_i[log w_θ(X^i)]` (ddof 0) on *detached* trajectories `X ~ P^{sg[θ]}` (`detach="states"`):
  `log w` is recomputed in kernel form at the fixed points, so θ enters only through the
  forward-kernel means `x_k + h_k(b + σ_k u_θ(x_k, t_k))`; no backpropagation through the SDE.
  Invariant to `log Z`; on-policy its expected gradient is proportional to the KL gradient.
- `trajectory_balance` (GFlowNet TB, Malkin et al. 2022; Sendera et al., arXiv 2402.05098;
  methods.md §8.2): `L = mean_i ½ (log Z_φ - log w_θ(X^i))²` on detached trajectories, with a
  learned scalar `log Z_φ` (its own learning rate). In gfn-diffusion's notation the residual is
  `log Z_φ + Σ log P_F - Σ log P_B - log R` (`= log Z_φ - log w`). At the optimum `log w ≡ log Z`
  and `log Z_φ = log Z`. Replacing `log Z_φ` by the batch mean of `log w` gives ½ the
  log-variance loss (VarGrad).

At the optimal control the path weight is constant, `log w ≡ log Z` (continuous time; on a finite
grid only up to the EM covariance mismatch, see `samplers.gaussian_oracle`), so the KL, LV and TB
losses are all minimised there; LV and TB additionally vanish with their gradients. For `dds` the
start `p_0 = N(0, σ_0² I)` is fixed and the VP base is not memoryless, so even the optimal control
leaves `log w = log h_0(x_0) + …` (a small floor `Var_{p_0}[log h_0]`); the gradients still vanish
there (`samplers.gaussian_oracle.DiscreteChainOracle`, which gives the exact optimum of the EM chain).

Every loss is a pure function of any control callable `control(params, x, t)` (`path_kl_loss`,
`log_variance_loss`, `trajectory_balance_loss`), so the tests can plug in the closed-form optimal
control; the methods bind them to a network (`mlp_control`, optionally with the PIS/DDS
grad-log-target feature `NN₂(t) ⊙ sg[clip(∇log γ̃)]`, or `egnn_control` for particle systems).

Cost accounting (per training step, batch `n`, `K` steps): `n·K` network evaluations and SDE steps,
`n` energy evaluations (`log γ̃(x_K)`), `n·K` gradient evaluations for the grad-log-target feature
when it is on, and for the reparametrised losses (`pis`, `dds`) `n` more gradient evaluations
(backpropagation through `log γ̃(x_K)`). Backward passes through the network are not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from samplers import sde
from samplers.fields import POSITIVE, field
from samplers.learned import sde_sampling, self_drawn
from samplers.method import Cost, Method, MethodSpec
from samplers.methods.common import (
    ControlTrainingConfig,
    batch_log_Z,
    build_configured,
    config_network,
    config_optimizer,
    grad_log_target_fn,
    path_weight_loss,
)
from samplers.problem import Problem
from samplers.types import Control, PyTree

__all__ = [
    "SPECS",
    "PathKLConfig",
    "PathKLInfo",
    "TrajectoryBalanceConfig",
    "TrajectoryBalanceInfo",
    "build_dds",
    "build_log_variance",
    "build_pis",
    "build_trajectory_balance",
    "log_variance_loss",
    "path_kl_loss",
    "trajectory_balance_loss",
]


# ---------------------------------------------------------------------------------------------
# configs, states, infos
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PathKLConfig(ControlTrainingConfig):
    """Hyper-parameters of `pis`, `dds` and `log_variance`.

    Attributes (besides the shared optimiser and network fields of `ControlTrainingConfig`):
        grad_log_target_feature: add the PIS/DDS feature `NN₂(t) ⊙ sg[clip(∇log γ̃(x))]` to the MLP
            control (`γ̃ = p^base_K e^r`, `= γ` for sampling problems; `∇r` when the base has no
            closed-form terminal law). Ignored by `egnn`.
        grad_target_clip: element-wise clip `c` of `∇log γ̃` in that feature (100 as PIS's
            `lgv_clip` and CMCD's `gradU` clipping, methods.md §10.6).
        sde: the integrator (`samplers.sde.SDEConfig`): `sde.integrator` `"diffrax"` or `"scan"` (same
            maths); `sde.checkpoints` the diffrax recursive-checkpoint count for backpropagation through
            the SDE (`pis`/`dds` only; None stores every step).
    """

    grad_log_target_feature: bool = True
    grad_target_clip: float = field(100.0, POSITIVE)
    sde: sde.SDEConfig = field(sde.SDEConfig(), sde.USER_SDE)


@dataclasses.dataclass(frozen=True)
class TrajectoryBalanceConfig(PathKLConfig):
    """Hyper-parameters of `trajectory_balance`: those of `PathKLConfig` plus the learned `log Z_φ`.

    Attributes:
        log_Z_learning_rate: Adam learning rate of the scalar `log Z_φ` (gfn-diffusion `lr_flow`
            is 1e-2; larger values track `log Z` faster on small budgets).
        log_Z_init: initial value of `log Z_φ`.
    """

    log_Z_learning_rate: float = field(5e-2, POSITIVE)
    log_Z_init: float = 0.0


class PathKLInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
        loss: the training loss of the batch.
        grad_norm: global norm of the parameter gradient (before clipping).
        elbo: `mean(log w)` of the batch (a lower bound on `log Z` in expectation).
        log_Z: `LSE(log w) - log n` of the batch (importance-sampling estimate of `log Z`).
    """

    loss: jax.Array
    grad_norm: jax.Array
    elbo: jax.Array
    log_Z: jax.Array


class TrajectoryBalanceInfo(NamedTuple):
    """Per-step diagnostics of trajectory balance: those of `PathKLInfo` plus `log_Z_param` (`log Z_φ`)."""

    loss: jax.Array
    grad_norm: jax.Array
    elbo: jax.Array
    log_Z: jax.Array
    log_Z_param: jax.Array


# ---------------------------------------------------------------------------------------------
# the losses (pure functions of any control)
# ---------------------------------------------------------------------------------------------


def _paths(key, problem, control, params, batch_size, sde_config, detach, grad_evals_per_control):
    """A batch of `batch_size` paths simulated with `detach` (`samplers.sde.simulate`)."""
    config = dataclasses.replace(sde_config or sde.SDEConfig(), detach=detach)
    return sde.simulate(
        key, problem, control, params, batch_size, config, grad_evals_per_control=grad_evals_per_control
    )


def _path_loss(detach: str, reduce: Callable[[jax.Array], jax.Array], backprop_terminal: bool, doc: str):
    """A loss `reduce(log w)` on a batch simulated with `detach`; `backprop_terminal` counts the `n`
    gradient evaluations of the backward pass through `log γ̃(x_K)`."""

    def simulate(key, problem, control, params, batch_size, sde_config, grad_evals_per_control):
        path = _paths(key, problem, control, params, batch_size, sde_config, detach, grad_evals_per_control)
        if backprop_terminal:
            path = path._replace(cost=path.cost + Cost.of(grad_evals=batch_size))
        return path

    return path_weight_loss(simulate, reduce, doc)


path_kl_loss = _path_loss(
    "none",
    lambda log_w: -jnp.mean(log_w),
    True,
    """Path-KL (PIS / DDS) loss `-mean_i log w_θ(X^i)` on reparametrised trajectories.

    `E[-log w_θ] = KL(P^θ || P*) - log Z`, minimised by the optimal control. Gradients flow through
    every state (`detach="none"`), the controls and `log γ̃(x_K)`.

    Args:
        key: PRNG key of the batch.
        problem: the problem.
        control: `control(params, x, t) -> (dim,)` of ONE example.
        params: control parameters (differentiated).
        batch_size: number of trajectories `n`.
        sde_config: integrator options (`detach` is overridden to `"none"`).
        grad_evals_per_control: `∇log γ̃` evaluations inside one control call (cost).

    Returns:
        `(loss, path)`: the scalar loss and the `PathOutput` (log-weights, cost incl. the `n`
        gradient evaluations of the backward pass through `log γ̃(x_K)`).
    """,
)
log_variance_loss = _path_loss(
    "states",
    jnp.var,
    False,
    """Log-variance loss `Var_i[log w_θ(X^i)]` (ddof 0) on detached trajectories `X ~ P^{sg[θ]}`.

    The states are stop-gradient (`detach="states"`) and `log w` is the kernel form at those fixed
    points, so θ enters only through the forward-kernel means `u_θ(x_k, t_k)` (methods.md §8.1).

    Arguments and returns as `path_kl_loss`.
    """,
)


def trajectory_balance_loss(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    log_Z_param: jax.Array,
    batch_size: int,
    sde_config: sde.SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> tuple[jax.Array, sde.PathOutput]:
    """Trajectory-balance loss `mean_i ½ (log Z_φ - log w_θ(X^i))²` on detached trajectories.

    Trajectories as in `log_variance_loss`; `log Z_φ` is a learned scalar (differentiable).

    Arguments as `path_kl_loss`, plus `log_Z_param` (`log Z_φ`, shape `()`); returns `(loss, path)`.
    """
    path = _paths(key, problem, control, params, batch_size, sde_config, "states", grad_evals_per_control)
    return 0.5 * jnp.mean((log_Z_param - path.log_w) ** 2), path


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


def _check_config(config: Any, cls: type, name: str) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"{name} needs a {cls.__name__}, got {type(config).__name__}")


def _check_base(problem: Problem, bases: tuple[str, ...], name: str) -> None:
    if problem.base.kind not in bases:
        raise ValueError(f"{name} supports the base(s) {list(bases)}, got a {problem.base.kind!r} base")


def _path_loss_method(
    problem: Problem,
    config: PathKLConfig,
    loss_fn: Callable,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learned_log_Z: bool = False,
) -> Method:
    """A method trained on `loss_fn(key, problem, control, params, n, sde_config, ...)`, which simulates
    its own batch (`no_draw`): the path-KL and log-variance losses, and trajectory balance with a learned
    `log Z_φ` (`learned_log_Z`: a second parameter, its own optimiser, `TrajectoryBalanceInfo`)."""
    if not isinstance(problem, Problem):
        raise TypeError(f"expected a samplers.problem.Problem, got {type(problem).__name__}")
    grad_fn = grad_log_target_fn(problem) if config.grad_log_target_feature else None
    net = config_network(problem, config, grad_log_target=grad_fn)
    sde_config = config.sde
    per_control = float(net.grad_evals_per_apply)
    log_Z_args = (lambda params: (params["log_Z"],)) if learned_log_Z else (lambda params: ())

    def init_params(key: jax.Array):
        params = {"control": net.init(key)}
        if learned_log_Z:
            params["log_Z"] = jnp.asarray(config.log_Z_init, jnp.float32)
        return params

    def loss(params, key, data):
        return loss_fn(
            key,
            problem,
            net.apply,
            params["control"],
            *log_Z_args(params),
            config.batch_size,
            sde_config,
            grad_evals_per_control=per_control,
        )

    def info(state, batch, loss, grad_norm, path):
        log_w = jax.lax.stop_gradient(path.log_w)
        common = (loss, grad_norm, jnp.mean(log_w), batch_log_Z(log_w))
        if learned_log_Z:
            return TrajectoryBalanceInfo(*common, log_Z_param=state.params["log_Z"])
        return PathKLInfo(*common)

    training = self_drawn(
        init_params,
        loss,
        info,
        grad_norm=(lambda grads: optax.tree.norm(grads["control"])) if learned_log_Z else optax.tree.norm,
    )
    sample, backward = sde_sampling(problem, net.apply, sde_config, grad_evals_per_control=per_control)
    return build_configured(training, config, sample, backward, optimizer)


def build_pis(problem: Problem, config: PathKLConfig) -> Method:
    """PIS: the path-KL loss (`path_kl_loss`) on the Brownian base."""
    _check_config(config, PathKLConfig, "pis")
    _check_base(problem, ("brownian",), "pis")
    return _path_loss_method(problem, config, path_kl_loss)


def build_dds(problem: Problem, config: PathKLConfig) -> Method:
    """DDS: the path-KL loss (`path_kl_loss`) on the VP base started from its stationary Gaussian."""
    _check_config(config, PathKLConfig, "dds")
    _check_base(problem, ("vp",), "dds")
    return _path_loss_method(problem, config, path_kl_loss)


def build_log_variance(problem: Problem, config: PathKLConfig) -> Method:
    """Log-variance loss (`log_variance_loss`) on detached on-policy trajectories, any base."""
    _check_config(config, PathKLConfig, "log_variance")
    return _path_loss_method(problem, config, log_variance_loss)


def build_trajectory_balance(problem: Problem, config: TrajectoryBalanceConfig) -> Method:
    """Trajectory balance (`trajectory_balance_loss`) with a learned `log Z_φ`, any base.

    The control and `log Z_φ` have separate Adam optimisers (`learning_rate`, `log_Z_learning_rate`);
    the gradient clip and the learning-rate decay apply to the control only.
    """
    _check_config(config, TrajectoryBalanceConfig, "trajectory_balance")
    optimizer = optax.multi_transform(
        {"control": config_optimizer(config), "log_Z": optax.adam(config.log_Z_learning_rate)},
        lambda params: {"control": jax.tree.map(lambda _: "control", params["control"]), "log_Z": "log_Z"},
    )
    return _path_loss_method(
        problem, config, trajectory_balance_loss, optimizer=optimizer, learned_log_Z=True
    )


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_SIM_COST = (
    "per step: n·K network evals and SDE steps, n energy evals at x_K, n·K grad evals with the grad feature"
)

_REPARAMETRISED = "; +n grad evals (backprop through log γ(x_K)); backprop through the SDE"
_DETACHED = "; no backprop through the SDE"


def _spec(name, config_cls, build, bases, cost_tail, description) -> MethodSpec:
    return MethodSpec(
        name=name,
        family="path-kl",
        config_cls=config_cls,
        build=build,
        bases=bases,
        cost_model=_SIM_COST + cost_tail,
        description=description,
    )


SPECS: tuple[MethodSpec, ...] = (
    _spec(
        "pis",
        PathKLConfig,
        build_pis,
        ("brownian",),
        _REPARAMETRISED,
        "Path Integral Sampler: minimise -mean(log w) = KL(P^θ||P*) - log Z with reparametrised "
        "Euler–Maruyama trajectories of the Brownian base from 0 (exact kernel-form path weights).",
    ),
    _spec(
        "dds",
        PathKLConfig,
        build_dds,
        ("vp",),
        _REPARAMETRISED,
        "Denoising Diffusion Sampler: the path-KL loss -mean(log w) on the VP (OU) base started from "
        "its stationary Gaussian; Euler–Maruyama discretisation (the paper: an exponential integrator).",
    ),
    _spec(
        "log_variance",
        PathKLConfig,
        build_log_variance,
        ("brownian", "vp", "flow"),
        _DETACHED,
        "Log-variance loss Var(log w) on detached on-policy trajectories, log w recomputed at the fixed "
        "points so θ enters only through the forward kernels (Richter & Berner 2023).",
    ),
    _spec(
        "trajectory_balance",
        TrajectoryBalanceConfig,
        build_trajectory_balance,
        ("brownian", "vp", "flow"),
        _DETACHED,
        "Trajectory balance: mean ½(log Z_φ - log w)² on detached on-policy trajectories with a learned "
        "scalar log Z_φ (GFlowNet TB, Sendera et al. 2024).",
    ),
)
