"""The Adjoint Schrödinger Bridge Sampler (ASBS): Adjoint Sampling from a source law, with a corrector.

ASBS (Liu et al., arXiv 2506.22565; code `facebookresearch/adjoint_samplers`) solves the Schrödinger
bridge between a source `μ` and the target `p* = γ/Z` with the Brownian reference `dX = σ(t) dB`
(`docs/methods.md` §3.6). With `X_0 ~ μ` the reference is not memoryless, so the terminal tilt of
Adjoint Sampling is replaced by the SB potentials: the optimal control (P1 form, `dX = σ u dt + σ dB`) is

    u*(x, t) = σ(t) ∇log φ_t(x),   φ_t(x) = E_base[φ_1(X_1) | X_t = x],   φ_1 = p*/φ̂_1,
    φ̂_1(x_1) = ∫ φ̂_0(x_0) p^base(x_1 | x_0) dx_0,                        μ = φ_0 φ̂_0,

and the method learns two networks, the control `u_θ` and a **corrector** `h_φ(x) ≈ ∇log φ̂_1(x)`, by
alternating two regressions on pairs `(X_0, X_1)` simulated under the current control:

- **adjoint-matching stage** (the Adjoint Sampling loss of `samplers.methods.bridge_regression`, its
  `"adjoint"` target, bridge, `1/σ²` "score" weighting, energy-gradient clip and replay buffer reused):

      L_AM(θ) = E_{t ~ U[0,1], (X_0, X_1) ~ buffer, X_t ~ bridge(X_0, X_1)} w(t) |u_θ(X_t, t) - Y|²,
      Y = -σ(t)(∇E + h_φ)(X_1) = σ(t)(∇log γ(X_1) - h_φ(X_1)),

  the terminal gradient of the code's `CorrectorGradTermCost` (`adjoint_samplers/components/
  term_cost.py`: `grad_E(x1) + corrector(1, x1)`, the model output regressed on its negative), stored
  with each end point when it is simulated (as the code's `AdjointVEMatcher.populate_buffer`);
- **corrector-matching stage** (the code's `CorrectorMatcher`):

      L_CM(φ) = E_{(X_0, X_1) ~ buffer} |h_φ(X_1) - ∇_{x_1} log p^base(X_1 | X_0)|²,
      ∇_{x_1} log p^base(x_1 | x_0) = -(x_1 - x_0)/ν̃_1,

  whose minimiser is `E[∇_{x_1} log p^base(X_1 | X_0) | X_1] = ∇log φ̂_1` under the SB coupling.

At the SB `(u*, h*)` both gradients vanish: the fixed point of the alternation (tested on a Gaussian
source and target, where the SB is Gaussian). With a Dirac source `X_0 = 0` the corrector's optimum is
`-x_1/ν̃_1 = ∇log p^base_1` and `Y` is Adjoint Sampling's target `σ ∇r(X_1)`: ASBS reduces to AS.

**Base.** `"brownian_source"` (`SourceBrownianBase`: the source `μ = N(0, v I)`, the Gaussian or harmonic
prior of the code) or `"brownian"` (the Dirac source). Pairs are regressed on with the Brownian motion
as its Euler–Maruyama chain sees it (`bridge_targets.BridgeSchedule`, methods.md §10.7) measured from the
start: `ν̃_t = s_k - s_0 + σ(t_k)²(t - t_k)`, so that `X_K | x_0 ~ N(x_0, ν̃_1 I)` holds exactly for the
simulated chain and the bridge is `X_t | x_0, x_1 ~ N(x_0 + α_t (x_1 - x_0), β_t² I)`.

**Stages** (the code's `adjoint_samplers/utils/train_utils.py`, `determine_stage` with
`init_stage: adjoint`): one epoch is `refresh_every` gradient steps and begins with `resample_size` new
pairs in the buffer of the current stage (the code's epoch: `train_itr_per_epoch` iterations after
`resample_size` new samples); `adjoint_epochs` adjoint-matching epochs alternate with
`corrector_epochs` corrector epochs, starting with adjoint matching. Each stage has its own FIFO buffer
(the code's two matchers' buffers), drawn uniformly. The corrector starts at `h⁰ ≡ 0` (the network's
zero-initialised output layer), so the first stage regresses on `σ ∇log γ` alone, the code's
"IPF init" (`AdjointMatcher._compute_adjoint1`). Both networks share one Adam configuration (`optim`),
with one optimiser state per network; a network whose gradient is identically zero in a step (the one
the stage does not train) keeps its parameters and its optimiser state (`stagewise`), as torch's Adam
skips parameters without a gradient in the code's two parameter groups.

**Sampling and weights.** `X_0 ~ μ`, then the controlled EM chain (`samplers.sde`); the kernel-form path
weight

    log w = log γ(x_K) + Σ_k log B_k(x_k | x_{k+1}) - log μ(x_0) - Σ_k log F^θ_k(x_{k+1} | x_k),

with `B_k` the exact reversal of the base's chain started at `μ`, has `E[w] = Z` for every control:
`μ(x_0) Π F^base_k = p^base_K(x_K) Π B_k` makes `w` the Radon–Nikodym derivative of the target path law
`γ(x_K) Π B_k` with respect to the simulated one.

References:
    Liu, Choi, Chen, Miller, Chen, "Adjoint Schrödinger Bridge Sampler" (arXiv 2506.22565).
    Havens et al., "Adjoint Sampling", ICML 2025 (arXiv 2504.11713).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.lax import stop_gradient as sg

from samplers import sde
from samplers.buffer import buffer_add, buffer_init
from samplers.fields import field, integer
from samplers.learned import Batch, LearnedState, sde_sampling
from samplers.method import Cost, Method, MethodSpec
from samplers.methods.bridge_regression import AdjointSamplingConfig, buffered_training, regression_loss
from samplers.methods.bridge_targets import BridgeSchedule, time_window
from samplers.methods.common import build_configured, config_network, config_optimizer
from samplers.problem import Problem
from samplers.types import PyTree

__all__ = [
    "ASBS_BASES",
    "SPECS",
    "ASBSConfig",
    "ASBSInfo",
    "PairEntry",
    "build",
    "corrector_loss",
    "corrector_target",
    "increment_bridge",
    "stage_is_adjoint",
    "stagewise",
]

ASBS_BASES = ("brownian", "brownian_source")
"""The base kinds of ASBS: Brownian motion from a Dirac at 0 or from a Gaussian source."""


@dataclasses.dataclass(frozen=True)
class ASBSConfig(AdjointSamplingConfig):
    """ASBS: Adjoint Sampling's settings (buffer, refresh, `"score"` weighting, energy-gradient clip at
    100, network, optimiser, SDE) plus the stage schedule.

    Attributes (besides those of `AdjointSamplingConfig`; `importance_weights` must stay `"none"`, the
    uniform draws of the code's buffers, so `ess_floor` is unused; `t_min` bounds the adjoint-matching
    times as for Adjoint Sampling):
        adjoint_epochs: epochs (of `refresh_every` steps) per adjoint-matching stage.
        corrector_epochs: epochs per corrector-matching stage.

    Defaults: `configs/experiment/dw4_asbs.yaml` of `facebookresearch/adjoint_samplers`
    (`adj_num_epochs_per_stage: 200`, `ctr_num_epochs_per_stage: 20`; LJ13 and LJ55 take 300 and 20).
    """

    adjoint_epochs: int = field(200, integer(1))
    corrector_epochs: int = field(20, integer(1))

    def check(self) -> None:
        super().check()
        if self.importance_weights != "none":
            raise ValueError(
                f"ASBSConfig: importance_weights must be 'none' (ASBS draws its buffers uniformly), got "
                f"{self.importance_weights!r}"
            )


class PairEntry(NamedTuple):
    """One replay-buffer entry of either stage.

    Attributes:
        x0: the path's start `x_0 ~ μ`, `(dim,)`.
        x1: its end point `x_K`, `(dim,)`.
        grad: adjoint-matching buffer: `∇log γ(x_K) - h_φ(x_K)` (clipped `∇log γ`, the corrector at the
            time of simulation); corrector buffer: zeros.
    """

    x0: jax.Array
    x1: jax.Array
    grad: jax.Array


class ASBSInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
        loss: the minibatch loss of the stage (`L_AM` or `L_CM`).
        grad_norm: global norm of the loss gradient (before clipping).
        adjoint_stage: 1.0 in an adjoint-matching step, 0.0 in a corrector step.
        refreshed: 1.0 when this step simulated new pairs, else 0.0.
    """

    loss: jax.Array
    grad_norm: jax.Array
    adjoint_stage: jax.Array
    refreshed: jax.Array


def increment_bridge(problem: Problem) -> BridgeSchedule:
    """The Brownian base's EM chain measured from its start (module docstring): `ν̃_t = s(t) - s_0`, so
    `ν̃_1 = s_K - s_0` is the variance of `X_K | X_0` (`BridgeSchedule`; the Dirac start has `s_0 = 0`
    and this is Adjoint Sampling's schedule, bit for bit).

    Raises:
        ValueError: a base other than `ASBS_BASES`, naming them.
    """
    kind = problem.base.kind
    if kind not in ASBS_BASES:
        raise ValueError(f"asbs needs a Brownian base, got {kind!r}; valid base kinds: {list(ASBS_BASES)}")
    chain = problem.chain
    return BridgeSchedule(
        ts=chain.ts, sigmas=chain.sigmas, marginal_vars=chain.marginal_vars - chain.marginal_vars[0]
    )


def corrector_target(x_0: jax.Array, x_1: jax.Array, terminal_var) -> jax.Array:
    """`∇_{x_1} log p^base(x_1 | x_0) = -(x_1 - x_0)/ν̃_1` (elementwise; batch or one point)."""
    return -(x_1 - x_0) / terminal_var


def corrector_loss(
    corrector: Callable,
    params: PyTree,
    x_0: jax.Array,
    x_1: jax.Array,
    *,
    terminal_var,
    project: Callable[[jax.Array], jax.Array] = lambda x: x,
) -> jax.Array:
    """`L_CM = mean_i |h_φ(x_1^i) - ∇_{x_1} log p^base(x_1^i | x_0^i)|²` (module docstring).

    Args:
        corrector: `corrector(params, x) -> (dim,)` for ONE point.
        params: its parameters (the only differentiated input).
        x_0, x_1: pairs `(n, dim)`.
        terminal_var: `ν̃_1`, the variance of `X_1 | X_0` per coordinate.
        project: projection onto the state space.
    """
    h = project(jax.vmap(corrector, in_axes=(None, 0))(params, sg(x_1)))
    target = project(corrector_target(sg(x_0), sg(x_1), terminal_var))
    return jnp.mean(jnp.sum((h - target) ** 2, axis=-1))


def stage_is_adjoint(step: jax.Array, config: ASBSConfig) -> jax.Array:
    """Whether gradient step `step` (0-based) is in an adjoint-matching stage: epoch `e = step //
    refresh_every`, adjoint when `e mod (adjoint_epochs + corrector_epochs) < adjoint_epochs`."""
    epoch = step // config.refresh_every
    return epoch % (config.adjoint_epochs + config.corrector_epochs) < config.adjoint_epochs


def _broadcast(flag: jax.Array, tree: PyTree) -> PyTree:
    return jax.tree.map(lambda _: flag, tree)


def _zeros(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)


def stagewise(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` on each top-level group of a dict of parameters, with its own state; a group whose
    gradient is identically zero (the network the current stage does not train) gets a zero update and
    keeps its state (torch's Adam skips parameters whose gradient is None)."""

    def init(params):
        return {name: optimizer.init(group) for name, group in params.items()}

    def update(grads, state, params=None):
        updates, new_state = {}, {}
        for name, group in grads.items():
            update_, next_state = optimizer.update(
                group, state[name], None if params is None else params[name]
            )
            active = jnp.any(jnp.stack([jnp.any(g != 0) for g in jax.tree.leaves(group)]))
            updates[name] = jax.tree.map(jnp.where, _broadcast(active, update_), update_, _zeros(update_))
            new_state[name] = jax.tree.map(jnp.where, _broadcast(active, next_state), next_state, state[name])
        return updates, new_state

    return optax.GradientTransformation(init, update)


def build(problem: Problem, config: ASBSConfig) -> Method:
    """Bind ASBS to a problem on a Brownian base (`ASBS_BASES`).

    Returns:
        `Method(init, step, sample, backward)`; the state's `params` are `{"control": θ, "corrector": φ}`,
        its `extra` the two buffers `(adjoint-matching, corrector)`; `sample` and `backward` go through
        `samplers.sde` from the source with exact kernel-form path weights.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, ASBSConfig):
        raise TypeError(f"config must be an ASBSConfig, got {type(config).__name__}")
    bridge = increment_bridge(problem)
    base = problem.base
    net = config_network(problem, config)
    control = net.apply
    corrector = lambda params, x: net.apply(params, x, jnp.ones((), x.dtype))  # h_φ(x) = net(x, t = 1)
    score = bridge.gradient_data(problem, "score", config.max_grad_norm_target)  # clipped ∇log γ
    terminal_var = bridge.nu1
    sde_config = dataclasses.replace(config.sde, detach="all")
    window = time_window(bridge, config.t_min)
    resample_size, batch_size = config.resample_size, config.batch_size

    def init_params(key):
        key_control, key_corrector = jax.random.split(key)
        return {"control": net.init(key_control), "corrector": net.init(key_corrector)}

    def init_buffers(params):
        point = jnp.zeros((problem.dim,), jnp.float32)
        empty = buffer_init(PairEntry(point, point, point), config.buffer_size)
        return empty, empty

    def simulate(key, params):
        out = sde.simulate(key, problem, control, sg(params["control"]), resample_size, sde_config)
        return sde.initial_points(key, problem, resample_size), out

    def refresh_adjoint(key, params, buffer):
        x0, out = simulate(key, params)
        h = jax.vmap(corrector, in_axes=(None, 0))(sg(params["corrector"]), out.x)
        grad = base.project(jax.vmap(score)(out.x) - h)
        cost = out.cost + Cost.of(grad_evals=resample_size, network_evals=resample_size)
        return buffer_add(buffer, PairEntry(x0, out.x, grad)), cost

    def refresh_corrector(key, params, buffer):
        x0, out = simulate(key, params)
        return buffer_add(buffer, PairEntry(x0, out.x, jnp.zeros_like(out.x))), out.cost

    def keep(key, params, buffer):
        return buffer, Cost.zero()

    def draw(keys, state: LearnedState) -> Batch:
        """Refresh the current stage's buffer at the start of each epoch, then a uniform minibatch of it."""
        key_refresh, key_draw = keys
        adjoint = stage_is_adjoint(state.step, config)
        refreshed = state.step % config.refresh_every == 0
        adjoint_buffer, corrector_buffer = state.extra
        args = (key_refresh, state.params)
        adjoint_buffer, adjoint_cost = jax.lax.cond(
            refreshed & adjoint, refresh_adjoint, keep, *args, adjoint_buffer
        )
        corrector_buffer, corrector_cost = jax.lax.cond(
            refreshed & ~adjoint, refresh_corrector, keep, *args, corrector_buffer
        )
        # uniform draws from the current stage's buffer (the other one may still be empty)
        filled = jnp.where(adjoint, adjoint_buffer.size, corrector_buffer.size)
        index = jax.random.randint(key_draw, (batch_size,), 0, jnp.maximum(filled, 1))
        pairs = jax.tree.map(
            lambda a, c: jnp.where(adjoint, a[index], c[index]), adjoint_buffer.data, corrector_buffer.data
        )
        return Batch(
            data=(adjoint, refreshed, pairs),
            extra=(adjoint_buffer, corrector_buffer),
            cost=(adjoint_cost, corrector_cost),
        )

    def loss(params, key, data):
        adjoint, _, pairs = data

        def adjoint_matching():
            return regression_loss(
                lambda p, x, t: control(p["control"], x, t),
                params,
                key,
                pairs.x1,
                pairs.grad,
                kind="adjoint",
                bridge=bridge,
                time_window=window,
                weighting=config.loss_weighting,
                project=base.project,
                x_0=pairs.x0,
            )

        def corrector_matching():
            return corrector_loss(
                corrector,
                params["corrector"],
                pairs.x0,
                pairs.x1,
                terminal_var=terminal_var,
                project=base.project,
            )

        return jax.lax.cond(adjoint, adjoint_matching, corrector_matching), ()

    def info(state, batch, loss, grad_norm, aux) -> ASBSInfo:
        adjoint, refreshed, _ = batch.data
        return ASBSInfo(
            loss=loss,
            grad_norm=grad_norm,
            adjoint_stage=adjoint.astype(jnp.float32),
            refreshed=refreshed.astype(jnp.float32),
        )

    training = buffered_training(init_params, draw, loss, info, init_buffers, batch_size)
    sample, backward = sde_sampling(problem, control, sde_config)
    return build_configured(training, config, sample, backward, optimizer=stagewise(config_optimizer(config)))


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="asbs",
        family="soc-regression",
        config_cls=ASBSConfig,
        build=build,
        bases=ASBS_BASES,
        cost_model=(
            "per epoch (refresh_every gradient steps): resample_size SDE paths of K steps from the source "
            "(K network evals each) and resample_size energy evals (path weights); in an adjoint-matching "
            "epoch also resample_size energy-gradient evals and resample_size corrector evals; per "
            "gradient step: batch_size network evals (the control or the corrector)"
        ),
        description=(
            "Adjoint Schrödinger Bridge Sampler (Liu et al. 2025): Adjoint Sampling from a source μ "
            "(Gaussian or harmonic prior), the terminal score of the base replaced by a learned corrector "
            "h ≈ ∇log φ̂_1; adjoint-matching stages regress u(X_t,t) on σ(t)(∇log γ - h)(X_1) over "
            "Brownian bridges between buffer pairs (X_0, X_1), corrector stages regress h(X_1) on "
            "-(X_1 - X_0)/ν_1. [CODE] facebookresearch/adjoint_samplers (methods.md §3.6). With a Dirac "
            "source it is Adjoint Sampling."
        ),
    ),
)
