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

import samplers
from samplers import sde
from samplers.method import Cost, Method, MethodSpec, Samples
from samplers.methods.common import (
    NETWORKS,
    batch_log_Z,
    build_control_network,
    check_learning_rate_decay,
    grad_log_target_fn,
    make_optimizer,
)
from samplers.networks import ControlNet
from samplers.problem import Problem

__all__ = [
    "PathKLConfig",
    "PathKLInfo",
    "PathKLState",
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

PyTree = Any
Control = Callable[[PyTree, jax.Array, jax.Array], jax.Array]

# ---------------------------------------------------------------------------------------------
# configs, states, infos
# ---------------------------------------------------------------------------------------------


def _check_common(config: Any, who: str) -> None:
    if isinstance(config.hidden, list):  # e.g. from a JSON config: keep the frozen config hashable
        object.__setattr__(config, "hidden", tuple(config.hidden))
    if config.network not in NETWORKS:
        raise ValueError(f"{who}: unknown network {config.network!r}; valid choices: {sorted(NETWORKS)}")
    if config.integrator not in sde.INTEGRATORS:
        raise ValueError(
            f"{who}: unknown integrator {config.integrator!r}; valid choices: {sorted(sde.INTEGRATORS)}"
        )
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size < 2:
        raise ValueError(f"{who}: batch_size must be an integer >= 2, got {config.batch_size!r}")
    if not config.learning_rate > 0:
        raise ValueError(f"{who}: learning_rate must be positive, got {config.learning_rate!r}")
    check_learning_rate_decay(config.learning_rate_decay_steps, config.learning_rate_final_fraction, who)
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise ValueError(f"{who}: grad_clip must be positive or None, got {config.grad_clip!r}")
    if not config.grad_target_clip > 0:
        raise ValueError(f"{who}: grad_target_clip must be positive, got {config.grad_target_clip!r}")
    if not config.hidden or any(not isinstance(w, int) or w < 1 for w in config.hidden):
        raise ValueError(f"{who}: hidden must be a non-empty tuple of positive widths, got {config.hidden!r}")


@dataclasses.dataclass(frozen=True)
class PathKLConfig:
    """Hyper-parameters of `pis`, `dds` and `log_variance`.

    Attributes:
        learning_rate: Adam learning rate of the control network.
        learning_rate_decay_steps: if set, the learning rate follows a cosine decay from `learning_rate`
            to `learning_rate_final_fraction · learning_rate` over this many steps, then stays there
            (reduces the final-iterate noise of small budgets; `None`: constant, the default).
        learning_rate_final_fraction: see `learning_rate_decay_steps`.
        batch_size: trajectories per training step.
        hidden: hidden widths of the control MLP (for `egnn`: width `hidden[0]`, `len(hidden)` layers).
        network: `"auto"`, `"mlp"` or `"egnn"` (`NETWORKS`).
        time_embedding_dim: number of sinusoidal time features of the network.
        grad_log_target_feature: add the PIS/DDS feature `NN₂(t) ⊙ sg[clip(∇log γ̃(x))]` to the MLP
            control (`γ̃ = p^base_K e^r`, `= γ` for sampling problems; `∇r` when the base has no
            closed-form terminal law). Ignored by `egnn`.
        grad_target_clip: element-wise clip `c` of `∇log γ̃` in that feature (100 as PIS's
            `lgv_clip` and CMCD's `gradU` clipping, methods.md §10.6).
        grad_clip: global-norm clip of the parameter gradient (optax), or None.
        integrator: `"diffrax"` or `"scan"` (`samplers.sde.INTEGRATORS`); same maths.
        checkpoints: diffrax recursive-checkpoint count for backpropagation through the SDE
            (`pis`/`dds` only); None stores every step.
    """

    learning_rate: float = 1e-3
    learning_rate_decay_steps: int | None = None
    learning_rate_final_fraction: float = 0.1
    batch_size: int = 256
    hidden: tuple[int, ...] = (64, 64)
    network: str = "auto"
    time_embedding_dim: int = 32
    grad_log_target_feature: bool = True
    grad_target_clip: float = 100.0
    grad_clip: float | None = 10.0
    integrator: str = "diffrax"
    checkpoints: int | None = None

    def __post_init__(self):
        _check_common(self, type(self).__name__)


@dataclasses.dataclass(frozen=True)
class TrajectoryBalanceConfig(PathKLConfig):
    """Hyper-parameters of `trajectory_balance`: those of `PathKLConfig` plus the learned `log Z_φ`.

    Attributes:
        log_Z_learning_rate: Adam learning rate of the scalar `log Z_φ` (gfn-diffusion `lr_flow`
            is 1e-2; larger values track `log Z` faster on small budgets).
        log_Z_init: initial value of `log Z_φ`.
    """

    log_Z_learning_rate: float = 5e-2
    log_Z_init: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not self.log_Z_learning_rate > 0:
            raise ValueError(f"log_Z_learning_rate must be positive, got {self.log_Z_learning_rate!r}")


class PathKLState(NamedTuple):
    """Training state.

    Attributes:
        params: `{"control": network parameters}` (plus `"log_Z": ()` for trajectory balance).
        opt_state: optax state.
        cost: cumulative training cost.
    """

    params: PyTree
    opt_state: optax.OptState
    cost: Cost


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


def path_kl_loss(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    batch_size: int,
    sde_config: sde.SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> tuple[jax.Array, sde.PathOutput]:
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
    """
    config = dataclasses.replace(sde_config or sde.SDEConfig(), detach="none")
    path = sde.simulate(
        key, problem, control, params, batch_size, config, grad_evals_per_control=grad_evals_per_control
    )
    path = path._replace(cost=path.cost + Cost.of(grad_evals=batch_size))
    return -jnp.mean(path.log_w), path


def log_variance_loss(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    batch_size: int,
    sde_config: sde.SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
) -> tuple[jax.Array, sde.PathOutput]:
    """Log-variance loss `Var_i[log w_θ(X^i)]` (ddof 0) on detached trajectories `X ~ P^{sg[θ]}`.

    The states are stop-gradient (`detach="states"`) and `log w` is the kernel form at those fixed
    points, so θ enters only through the forward-kernel means `u_θ(x_k, t_k)` (methods.md §8.1).

    Arguments and returns as `path_kl_loss`.
    """
    config = dataclasses.replace(sde_config or sde.SDEConfig(), detach="states")
    path = sde.simulate(
        key, problem, control, params, batch_size, config, grad_evals_per_control=grad_evals_per_control
    )
    return jnp.var(path.log_w), path


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
    config = dataclasses.replace(sde_config or sde.SDEConfig(), detach="states")
    path = sde.simulate(
        key, problem, control, params, batch_size, config, grad_evals_per_control=grad_evals_per_control
    )
    return 0.5 * jnp.mean((log_Z_param - path.log_w) ** 2), path


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


class _Bound(NamedTuple):
    """What every method of this module shares once bound to a problem and a config."""

    net: ControlNet
    sde_config: sde.SDEConfig
    sample: Callable[[jax.Array, PathKLState, int], Samples]
    backward: Callable[[jax.Array, PathKLState, jax.Array], jax.Array] | None


def _bind(problem: Problem, config: PathKLConfig) -> _Bound:
    if not isinstance(problem, Problem):
        raise TypeError(f"expected a samplers.problem.Problem, got {type(problem).__name__}")
    grad_fn = grad_log_target_fn(problem) if config.grad_log_target_feature else None
    net = build_control_network(
        problem,
        network=config.network,
        hidden=config.hidden,
        time_embedding_dim=config.time_embedding_dim,
        grad_log_target=grad_fn,
        grad_target_clip=config.grad_target_clip,
    )
    sde_config = sde.SDEConfig(integrator=config.integrator, checkpoints=config.checkpoints)
    per_control = float(net.grad_evals_per_apply)

    sample, backward = sde.evaluation_functions(
        problem,
        net.apply,
        lambda state: state.params["control"],
        sde_config,
        grad_evals_per_control=per_control,
    )
    return _Bound(net, sde_config, sample, backward)


def _control_loss_method(problem: Problem, config: PathKLConfig, loss_fn: Callable) -> Method:
    """A method that trains only the control with `loss_fn(key, problem, control, params, n, ...)`."""
    bound = _bind(problem, config)
    optimizer = make_optimizer(
        config.learning_rate,
        config.grad_clip,
        config.learning_rate_decay_steps,
        config.learning_rate_final_fraction,
    )
    per_control = float(bound.net.grad_evals_per_apply)

    def init(key: jax.Array) -> PathKLState:
        params = {"control": bound.net.init(key)}
        return PathKLState(params=params, opt_state=optimizer.init(params), cost=Cost.zero())

    def objective(params, key):
        return loss_fn(
            key,
            problem,
            bound.net.apply,
            params["control"],
            config.batch_size,
            bound.sde_config,
            grad_evals_per_control=per_control,
        )

    def step(key: jax.Array, state: PathKLState) -> tuple[PathKLState, PathKLInfo]:
        (loss, path), grads = jax.value_and_grad(objective, has_aux=True)(state.params, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = PathKLState(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            cost=state.cost + path.cost,
        )
        log_w = jax.lax.stop_gradient(path.log_w)
        info = PathKLInfo(
            loss=loss, grad_norm=optax.tree.norm(grads), elbo=jnp.mean(log_w), log_Z=batch_log_Z(log_w)
        )
        return new_state, info

    return Method(init=init, step=step, sample=bound.sample, backward=bound.backward)


def _check_config(config: Any, cls: type, name: str) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"{name} needs a {cls.__name__}, got {type(config).__name__}")


def _check_base(problem: Problem, bases: tuple[str, ...], name: str) -> None:
    if problem.base.kind not in bases:
        raise ValueError(f"{name} supports the base(s) {list(bases)}, got a {problem.base.kind!r} base")


def build_pis(problem: Problem, config: PathKLConfig) -> Method:
    """PIS: the path-KL loss (`path_kl_loss`) on the Brownian base."""
    _check_config(config, PathKLConfig, "pis")
    _check_base(problem, ("brownian",), "pis")
    return _control_loss_method(problem, config, path_kl_loss)


def build_dds(problem: Problem, config: PathKLConfig) -> Method:
    """DDS: the path-KL loss (`path_kl_loss`) on the VP base started from its stationary Gaussian."""
    _check_config(config, PathKLConfig, "dds")
    _check_base(problem, ("vp",), "dds")
    return _control_loss_method(problem, config, path_kl_loss)


def build_log_variance(problem: Problem, config: PathKLConfig) -> Method:
    """Log-variance loss (`log_variance_loss`) on detached on-policy trajectories, any base."""
    _check_config(config, PathKLConfig, "log_variance")
    return _control_loss_method(problem, config, log_variance_loss)


def build_trajectory_balance(problem: Problem, config: TrajectoryBalanceConfig) -> Method:
    """Trajectory balance (`trajectory_balance_loss`) with a learned `log Z_φ`, any base.

    The control and `log Z_φ` have separate Adam optimisers (`learning_rate`, `log_Z_learning_rate`);
    the gradient clip and the learning-rate decay apply to the control only.
    """
    _check_config(config, TrajectoryBalanceConfig, "trajectory_balance")
    bound = _bind(problem, config)
    per_control = float(bound.net.grad_evals_per_apply)
    optimizer = optax.multi_transform(
        {
            "control": make_optimizer(
                config.learning_rate,
                config.grad_clip,
                config.learning_rate_decay_steps,
                config.learning_rate_final_fraction,
            ),
            "log_Z": optax.adam(config.log_Z_learning_rate),
        },
        lambda params: {"control": jax.tree.map(lambda _: "control", params["control"]), "log_Z": "log_Z"},
    )

    def init(key: jax.Array) -> PathKLState:
        params = {"control": bound.net.init(key), "log_Z": jnp.asarray(config.log_Z_init, jnp.float32)}
        return PathKLState(params=params, opt_state=optimizer.init(params), cost=Cost.zero())

    def objective(params, key):
        return trajectory_balance_loss(
            key,
            problem,
            bound.net.apply,
            params["control"],
            params["log_Z"],
            config.batch_size,
            bound.sde_config,
            grad_evals_per_control=per_control,
        )

    def step(key: jax.Array, state: PathKLState) -> tuple[PathKLState, TrajectoryBalanceInfo]:
        (loss, path), grads = jax.value_and_grad(objective, has_aux=True)(state.params, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        log_w = jax.lax.stop_gradient(path.log_w)
        info = TrajectoryBalanceInfo(
            loss=loss,
            grad_norm=optax.tree.norm(grads["control"]),
            elbo=jnp.mean(log_w),
            log_Z=batch_log_Z(log_w),
            log_Z_param=state.params["log_Z"],
        )
        return PathKLState(params=params, opt_state=opt_state, cost=state.cost + path.cost), info

    return Method(init=init, step=step, sample=bound.sample, backward=bound.backward)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_SIM_COST = (
    "per step: n·K network evals and SDE steps, n energy evals at x_K, n·K grad evals with the grad feature"
)

samplers.register(
    MethodSpec(
        name="pis",
        family="path-kl",
        config_cls=PathKLConfig,
        build=build_pis,
        bases=("brownian",),
        cost_model=_SIM_COST + "; +n grad evals (backprop through log γ(x_K)); backprop through the SDE",
        description=(
            "Path Integral Sampler: minimise -mean(log w) = KL(P^θ||P*) - log Z with reparametrised "
            "Euler–Maruyama trajectories of the Brownian base from 0 (exact kernel-form path weights)."
        ),
    )
)
samplers.register(
    MethodSpec(
        name="dds",
        family="path-kl",
        config_cls=PathKLConfig,
        build=build_dds,
        bases=("vp",),
        cost_model=_SIM_COST + "; +n grad evals (backprop through log γ(x_K)); backprop through the SDE",
        description=(
            "Denoising Diffusion Sampler: the path-KL loss -mean(log w) on the VP (OU) base started from "
            "its stationary Gaussian; Euler–Maruyama discretisation (the paper: an exponential integrator)."
        ),
    )
)
samplers.register(
    MethodSpec(
        name="log_variance",
        family="path-kl",
        config_cls=PathKLConfig,
        build=build_log_variance,
        bases=("brownian", "vp", "flow"),
        cost_model=_SIM_COST + "; no backprop through the SDE",
        description=(
            "Log-variance loss Var(log w) on detached on-policy trajectories, log w recomputed at the fixed "
            "points so θ enters only through the forward kernels (Richter & Berner 2023)."
        ),
    )
)
samplers.register(
    MethodSpec(
        name="trajectory_balance",
        family="path-kl",
        config_cls=TrajectoryBalanceConfig,
        build=build_trajectory_balance,
        bases=("brownian", "vp", "flow"),
        cost_model=_SIM_COST + "; no backprop through the SDE",
        description=(
            "Trajectory balance: mean ½(log Z_φ - log w)² on detached on-policy trajectories with a learned "
            "scalar log Z_φ (GFlowNet TB, Sendera et al. 2024)."
        ),
    )
)
