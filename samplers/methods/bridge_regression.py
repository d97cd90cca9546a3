"""Bridge-pair regression losses: Adjoint Sampling, Target / Conditional / Novel Score Matching.

All four methods of this module share ONE loss skeleton (`docs/methods.md` §1.3):

    L(u) = E_{t ~ U[t_lo, t_hi], X_1 ~ D, X_t ~ p^base(· | X_1)} [ w(t) |u_θ(X_t, t) - Y_t|² ],

with the squared norm summed over coordinates and averaged over the minibatch. Only `u_θ` carries a
gradient: the pairs `(X_t, X_1)`, the end-point data `D` and the regression target `Y_t` are all
computed without gradients (stop-gradient on everything but the network output). The control is in
the paper form (P1): `dX = (b + σ u) dt + σ dB` with `b = 0` for the Brownian base. The bridge
schedule, the four targets and their end-point gradient data live in `samplers.methods.bridge_targets`;
this module draws the pairs, defines the loss and binds it to a replay buffer and the training engine.

**Base.** Any base kind with a bridge schedule (`bridge_targets.BRIDGE_SCHEDULES`, one per kind:
`bases=("brownian", "flow", "vp")`).

- Brownian motion from the Dirac at 0. The methods work with the base *as its Euler–Maruyama chain on
  the problem's grid sees it*: a Brownian motion with piecewise-constant `σ̃(t) = σ(t_k)` on
  `[t_k, t_{k+1})`, hence `ν̃_t = s_k + σ(t_k)²(t - t_k)` with `s_k` the exact marginal variances of the
  chain (`DiscreteChain.marginal_vars`, `ν̃_1 = s_K`). This makes the bridge and the tilt
  `r = log γ - log N(0, s_K I)` of `samplers.problem.sampling_problem` mutually consistent (methods.md
  §10.7); for the linear schedule `ν̃ = ν` exactly. With `α_t = ν̃_t/ν̃_1` and `β_t² = ν̃_t (1 - α_t)`, the
  base bridge is `X_t | X_1 ~ N(α_t X_1, β_t² I)` (projected to zero centre of mass for particle systems)
  and `∇log p^base_t(x) = -x/ν̃_t`. The table below is for this base.
- The memoryless rectified-flow base of fine-tuning (`MemorylessFlowBase`, methods.md §1.5): the bridge
  `X_t | X_1 ~ N(t X_1, (1 - t)² I)` of the continuous process on `[t_0, 1]`, the base score
  `(t v(x, t) - x)/(1 - t)` from the velocity, and the data law's score at `t = 1` from the base's
  `terminal_log_prob_fn` or, with `terminal_score_from_velocity`, from the velocity at `t = 1` (needed by
  TSM, AS and NSM; CSM needs none). There AS and NSM regress on the
  exact `α_t`-mixture `t Y^TSM + (1 - t) Y^CSM`: their Brownian targets below are biased on this base.
  Regression times are drawn from `[max(t_min, t_0), 1 - t_min]`.
- The stationary VP/OU base (`VPBase`, methods.md §1.6): the continuous process's bridge
  `X_t | X_1 ~ N(φ_{t,1} X_1, σ_0²(1 - φ_{t,1}²) I)`, `∇log p^base_t = -x/σ_0²`, AS and NSM both
  `σ φ_{t,1} ∇r(X_1)` with `∇r = ∇log γ + x/σ_0²`; the EM chain matches the continuous bridge to O(h), and
  the base is not memoryless (the path weights correct both).

**Regression targets** `Y_t` on the Brownian base (P1, all satisfy `E[Y_t | X_t = x] = u*(x, t) =
σ(t)∇log h_t(x)` when `X_1 ~ p*`; methods.md §1.3, [DERIVED]; flow base: methods.md §1.5):

| method | `Y_t` | gradient data per end point |
|---|---|---|
| `adjoint_sampling` | `-σ(t) ∇g(X_1) = σ(t) ∇r(X_1)`, `g = -r` | `∇r(X_1)` (one `∇log γ`) |
| `target_score_matching` | `σ(t)[α_t^{-1} ∇log p*(X_1) - ∇log p^base_t(X_t)]` | `∇log p*(X_1) = ∇log γ` |
| `conditional_score_matching` | `σ(t)[-(X_t - α_t X_1)/β_t² - ∇log p^base_t(X_t)]` | none |
| `novel_score_matching` | `σ(t) a_t ∇r(X_1)`, `a_t = 1` (Brownian) | `∇r(X_1)` |

- TSM: the `α_t^{-1}` factor makes `Var(Y_t) ~ 1/ν̃_t²` as `t → 0` (not integrable).
- CSM: `(X_t - α_t X_1)/β_t² ~ Z/β_t`, so `Var(Y_t) ~ 1/β_t²` as `t → 1` (log-divergent integral).
- Mixture identity: `α_t Y^TSM + (1 - α_t) Y^CSM = Y^AS` exactly (tested), finite at both ends.
- NSM is the PDDS "Novel Score Matching" guidance loss (`angusphillips/particle_denoising_diffusion_
  sampler`, `pdds/sde.py`): regress the guidance `∇log h_t` on `a_t ∇r(X_1)`, `a_t` the coefficient
  of `x_t` in `E_base[X_1 | X_t = x_t]`. Its identification with the unified paper's (arXiv
  2605.00229) "Novel Score Matching" is a **[RECON]**: the paper's own equation was not available.
  For the Brownian base `a_t = 1`, so its target *coincides* with the Adjoint Sampling target; the two
  are kept as separate methods because they differ in how `X_1` is drawn (below) and in their
  conventions (AS: no importance weights, optional `1/σ²` "score" weighting of its code, §10.1).

**End points `X_1` (the data `D`)**: a FIFO replay buffer (`samplers.buffer`) of end points of the
*current model's* SDE, simulated without gradients (`samplers.sde.simulate`, `detach="all"`), with the
gradient data and the exact path log-weight `log w` of each end point stored once. Outer loop
(Adjoint Sampling, methods.md §3.3): every `refresh_every` gradient steps, `resample_size` new end
points are simulated and appended (the oldest are dropped beyond `buffer_size`), so the number of
energy and energy-gradient evaluations per epoch (`resample_size`) is much smaller than the number
of regression targets used (`refresh_every · batch_size`).

- `importance_weights="resample"` (default for TSM, CSM and NSM): minibatch end points are drawn
  from the buffer with probabilities `∝ w_i = exp(log w_i)`. Each `w_i` is the path weight of its own
  proposal (the model at the time it was simulated), with `E[w | x_K] ∝ p*(x_K)/q(x_K)`, so the
  weighted buffer is a self-normalised importance sample of `p*` and the regression is *consistent*
  (biased for a finite buffer, exact as the buffer grows): its minimiser is `u*` whatever the model
  that filled the buffer. This is what these losses need, since their targets are only unbiased for
  `X_1 ~ p*`.
- `importance_weights="none"` (default for AS): uniform draws from the buffer, i.e. the reciprocal
  projection of Adjoint Sampling, whose fixed point is `u*` only self-consistently (when the model
  samples `p*`).

**Stabilisation options** (named config fields, recorded with results; `docs/methods.md` §13). The
regression targets themselves are never clipped, so the variance behaviour the unified paper's claim
is about is not hidden; `adjoint_sampling`, `novel_score_matching` and `target_score_matching` default
to the Adjoint Sampling recipe (geometric VE schedule from the hyper-parameter table, `"score"`
weighting, energy-gradient clip 100; TSM with `"score_alpha2"`), CSM to the plain loss:

- `t_min`: times are drawn from `U[t_min, 1 - t_min]` (default 0, and 1e-3 for TSM/CSM). TSM and CSM
  targets are singular at `t = 0` and `t = 1` respectively; independently of `t_min`, times are clamped to
  `[TIME_EPS, 1 - TIME_EPS]` (`TIME_EPS = 1e-5`) only so that the float32 arithmetic never divides
  by exactly zero.
- `max_grad_norm_target`: per-particle norm clipping of `∇log γ` before it enters the stored gradient
  data (Adjoint Sampling clips per atom at 100, methods.md §10.6; on the flow base, of the stored
  `∇log p* = ∇log p_data + ∇r`); `None` = no clipping. It biases the fixed point where it is active.
- `loss_weighting` (`LOSS_WEIGHTINGS`): `"paper"` (`w = 1`, the P1 loss), `"score"` (`w = 1/σ(t)²`,
  the weighting the AS code trains with, methods.md §10.1), `"alpha2"` (`w = α_t²`) or
  `"score_alpha2"` (`w = α_t²/σ(t)²`). A weight of `t` alone leaves the minimiser `E[Y_t | X_t]`.
- `ess_floor` (with `importance_weights="resample"`, default 0.05): the path weights are tempered to
  `w^β`, the largest `β ≤ 1` keeping the buffer's normalised ESS at the floor
  (`samplers.importance.temper_to_ess`); `Info` reports the ESS before and after, and `β`.
- `optim.ema_decay`: sample with a moving average of the parameters (`samplers.learned`); off by default.
- `optim.grad_clip`: global-norm clipping of the loss gradient before Adam (default 10);
  `optim.decay_steps`: optional cosine decay of the learning rate.

References:
    Havens et al., "Adjoint Sampling", ICML 2025 (arXiv 2504.11713).
    De Bortoli et al., "Target Score Matching" (arXiv 2402.08667).
    Phillips et al., "Particle Denoising Diffusion Sampler", ICML 2024 (arXiv 2402.06320).
    Domingo-Enrich, Du, Albergo, the unified exponential-tilting paper (arXiv 2605.00229; abstract
    only, see methods.md §1 and §11).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers import sde
from samplers.buffer import BufferState, buffer_add, buffer_init
from samplers.fields import POSITIVE_OR_NONE, field, integer, one_of, within
from samplers.importance import Tempered, normalised_ess, temper_to_ess, weighted_indices
from samplers.learned import Batch, LearnedState, Training, sde_sampling
from samplers.method import Cost, Method, MethodSpec
from samplers.methods.bridge_targets import (
    BRIDGE_SCHEDULES,
    FLOW_REGRESSION_TARGETS,
    REGRESSION_TARGETS,
    TIME_EPS,
    BridgeCoefficients,
    BridgeSchedule,
    FlowBridgeSchedule,
    RegressionTarget,
    VPBridgeSchedule,
    bridge_schedule,
    check_choice,
    endpoint_gradients,
    regression_target,
    target_of,
    time_window,
)
from samplers.methods.common import (
    ControlTrainingConfig,
    NetworkConfig,
    build_configured,
    config_network,
)
from samplers.problem import Problem
from samplers.types import Control, PyTree

__all__ = [
    "BRIDGE_SCHEDULES",
    "FLOW_REGRESSION_TARGETS",
    "SPECS",
    "IMPORTANCE_WEIGHTS",
    "LOSS_WEIGHTINGS",
    "REGRESSION_TARGETS",
    "TIME_EPS",
    "AdjointSamplingConfig",
    "BridgeRegressionConfig",
    "BridgeRegressionInfo",
    "BridgeCoefficients",
    "BridgeSchedule",
    "BufferEntry",
    "FlowBridgeSchedule",
    "NovelScoreMatchingConfig",
    "RegressionTarget",
    "ScoreMatchingConfig",
    "TargetScoreMatchingConfig",
    "VPBridgeSchedule",
    "bridge_schedule",
    "buffered_training",
    "build",
    "endpoint_gradients",
    "regression_loss",
    "regression_pairs",
    "regression_target",
    "time_window",
]


class LossWeighting(NamedTuple):
    """A time weighting `w(t) > 0` of the regression loss.

    Attributes:
        fn: `BridgeCoefficients -> w` (elementwise in `t`).
        description: the weighting and where it comes from.
    """

    fn: Callable[[BridgeCoefficients], jax.Array]
    description: str


LOSS_WEIGHTINGS: dict[str, LossWeighting] = {
    "paper": LossWeighting(lambda c: jnp.ones_like(c.sigma), "w(t) = 1: the P1 loss E|u - Y|² of the papers"),
    "score": LossWeighting(
        lambda c: 1.0 / c.sigma**2,
        "w(t) = 1/σ(t)²: the score-form (P2) weighting of the Adjoint Sampling code (methods.md §10.1)",
    ),
    "alpha2": LossWeighting(
        lambda c: c.alpha**2,
        "w(t) = α_t²: cancels the α_t^{-2} growth of the TSM target's variance as t -> 0 (its paper uses "
        "the target score only in the low-noise regime, t near 1)",
    ),
    "score_alpha2": LossWeighting(
        lambda c: c.alpha**2 / c.sigma**2, "w(t) = α_t²/σ(t)²: the Adjoint Sampling weighting times α_t²"
    ),
}
IMPORTANCE_WEIGHTS: dict[str, str] = {
    "resample": "draw buffer end points with probability ∝ their path weight exp(log w) (consistent for p*)",
    "none": "draw buffer end points uniformly (on-policy reciprocal projection, Adjoint Sampling)",
}


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def regression_pairs(
    key: jax.Array,
    kind: str,
    bridge,
    x_1: jax.Array,
    grad_1: jax.Array,
    *,
    time_window: tuple[float, float] = (0.0, 1.0),
    project: Callable[[jax.Array], jax.Array] = lambda x: x,
    x_0: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw `t ~ U[time_window]` (clamped to `[max(TIME_EPS, t_start), 1 - TIME_EPS]`), `X_t ~` bridge:
    `(t, X_t, Y_t)`.

    Args:
        key: PRNG key.
        kind: one of `REGRESSION_TARGETS`.
        bridge: the base's bridge schedule (`bridge_schedule`: `BridgeSchedule`, `FlowBridgeSchedule`).
        x_1: end points `(n, dim)`.
        grad_1: their gradient data `(n, dim)` (`endpoint_gradients`).
        time_window: `(t_lo, t_hi)` with `0 <= t_lo <= t_hi <= 1` (`t_lo == t_hi` fixes the time).
        project: projection onto the state space (zero centre of mass for particles).
        x_0: start points `(n, dim)` of the bridges, `X_t ~ N(x_0 + α_t (x_1 - x_0), β_t² I)` (the Brownian
            bridge pinned at both ends, Adjoint Schrödinger Bridge Sampler); None: the Dirac at 0. Only the
            `"adjoint"` target, which does not depend on `X_t`, is defined for a general start.

    Returns:
        `t (n,)`, `X_t (n, dim)`, `Y_t (n, dim)`, all without gradient.
    """
    if x_0 is not None and kind != "adjoint":
        raise ValueError(f"bridges from a start x_0 are defined for the 'adjoint' target only, got {kind!r}")
    n, dim = x_1.shape
    key_t, key_x = jax.random.split(key)
    t_lo, t_hi = time_window
    t = jax.random.uniform(key_t, (n,), x_1.dtype, minval=t_lo, maxval=t_hi)
    t = jnp.clip(t, max(TIME_EPS, bridge.t_start), 1.0 - TIME_EPS)
    noise = project(jax.random.normal(key_x, (n, dim), x_1.dtype))
    c = bridge.coefficients(t)
    mean = c.alpha[:, None] * x_1 if x_0 is None else x_0 + c.alpha[:, None] * (x_1 - x_0)
    x_t = mean + jnp.sqrt(c.bridge_var)[:, None] * noise
    target = target_of(bridge, kind)
    y = jax.vmap(lambda c, t, x_t, x_1, g: target.fn(bridge, c, t, x_t, x_1, g))(c, t, x_t, x_1, grad_1)
    return sg(t), sg(x_t), sg(project(y))


def regression_loss(
    control: Control,
    params: PyTree,
    key: jax.Array,
    x_1: jax.Array,
    grad_1: jax.Array,
    *,
    kind: str,
    bridge,
    time_window: tuple[float, float] = (0.0, 1.0),
    weighting: str = "paper",
    project: Callable[[jax.Array], jax.Array] = lambda x: x,
    x_0: jax.Array | None = None,
) -> jax.Array:
    """The minibatch loss `mean_i w(t_i) |u_θ(X_{t_i}, t_i) - Y_{t_i}|²` of the family (module docstring).

    Works for any control callable (the network, or the closed-form optimum plus a perturbation in
    the fixed-point tests and the gradient-variance claim); only `params` is differentiated.

    Args:
        control: `control(params, x, t) -> (dim,)` for ONE example.
        params: its parameters.
        key: PRNG key (times and bridge noise).
        x_1: end points `(n, dim)`.
        grad_1: gradient data `(n, dim)` for `kind` (`endpoint_gradients`).
        kind: one of `REGRESSION_TARGETS`.
        bridge: the base's bridge schedule (`bridge_schedule`).
        time_window: `(t_lo, t_hi)`, see `regression_pairs`.
        weighting: one of `LOSS_WEIGHTINGS`.
        project: projection onto the state space.
        x_0: start points of the bridges (`regression_pairs`), or None (the Dirac at 0).

    Returns:
        Scalar loss.
    """
    check_choice(weighting, LOSS_WEIGHTINGS, "loss weighting")
    x_0 = None if x_0 is None else sg(x_0)
    t, x_t, y = regression_pairs(
        key, kind, bridge, sg(x_1), sg(grad_1), time_window=time_window, project=project, x_0=x_0
    )
    u = project(jax.vmap(control, in_axes=(None, 0, 0))(params, x_t, t))
    w = LOSS_WEIGHTINGS[weighting].fn(bridge.coefficients(t))
    return jnp.mean(w * jnp.sum((u - y) ** 2, axis=-1))


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BridgeRegressionConfig(ControlTrainingConfig):
    """Hyper-parameters shared by the four bridge-pair regression methods.

    Attributes (besides the shared `optim` and `network` sub-configs of `ControlTrainingConfig`; the
    network defaults to three hidden layers of 64):
        batch_size: regression pairs per gradient step.
        buffer_size: replay-buffer capacity (end points).
        resample_size: end points simulated per refresh (one epoch), `<= buffer_size`.
        refresh_every: gradient steps per epoch (a refresh happens at steps 0, R, 2R, ...).
        t_min: times are drawn from `U[t_min, 1 - t_min]`.
        loss_weighting: one of `LOSS_WEIGHTINGS`.
        importance_weights: one of `IMPORTANCE_WEIGHTS`.
        max_grad_norm_target: per-particle norm clip of `∇log γ` in the gradient data (`None`: off).
        sde: the integrator of refreshes and sampling (`samplers.sde.SDEConfig`).
        ess_floor: with `importance_weights="resample"`, the buffer's path weights are tempered to
            `w^β`, `β` the largest in `[0, 1]` keeping the buffer's normalised ESS `≥ ess_floor`
            (`samplers.importance.temper_to_ess`; `β = 1`, untouched, when the ESS is already above it);
            `None`: off. Ignored for uniform draws.
    """

    network: NetworkConfig = field(NetworkConfig(hidden=(64, 64, 64)))
    batch_size: int = field(256, integer(1))
    buffer_size: int = field(4096, integer(1))
    resample_size: int = field(512, integer(1))
    refresh_every: int = field(20, integer(1))
    t_min: float = field(0.0, within(0, 0.5, closed="left"))
    loss_weighting: str = field("paper", one_of(LOSS_WEIGHTINGS))
    importance_weights: str = field("resample", one_of(IMPORTANCE_WEIGHTS))
    max_grad_norm_target: float | None = field(None, POSITIVE_OR_NONE)
    sde: sde.SDEConfig = field(sde.SDEConfig(), sde.USER_SDE)
    ess_floor: float | None = field(0.05, within(0, 1, closed="right", optional=True))

    def check(self) -> None:
        if self.resample_size > self.buffer_size:
            raise ValueError(
                f"{type(self).__name__}: resample_size ({self.resample_size}) must not exceed buffer_size "
                f"({self.buffer_size})"
            )


@dataclasses.dataclass(frozen=True)
class AdjointSamplingConfig(BridgeRegressionConfig):
    """Adjoint Sampling: uniform draws from the buffer (reciprocal projection), full time range.

    The buffer defaults follow the spirit of the AS configs (methods.md §3.3: buffer ≫ resample size,
    many SGD steps per epoch), scaled down for small problems. The stabilisers are the authors' recipe,
    on every target as in their code (facebookresearch/adjoint_samplers, `configs/train.yaml`,
    `configs/experiment/{dw4,lj13,lj55}_as.yaml`, `adjoint_samplers/components/term_cost.py`):
    `loss_weighting="score"` (the `1/σ(t)²`-weighted regression loss) and `max_grad_norm_target=100`
    (the energy gradient clipped to norm 100 per particle; per sample for targets without particles).
    The third part of the recipe, the geometric VE noise schedule (σ_max the target's scale,
    σ_min = 1e-3), is a property of the base and set in the hyper-parameter table.
    """

    importance_weights: str = field("none", one_of(IMPORTANCE_WEIGHTS))
    loss_weighting: str = field("score", one_of(LOSS_WEIGHTINGS))
    max_grad_norm_target: float | None = field(100.0, POSITIVE_OR_NONE)


@dataclasses.dataclass(frozen=True)
class ScoreMatchingConfig(BridgeRegressionConfig):
    """Target / Conditional Score Matching: importance-resampled buffer, `t ∈ [t_min, 1 - t_min]`.

    `t_min = 1e-3` keeps away from the singular end points (TSM at 0, CSM at 1) without hiding the
    growth of the target variance near them.
    """

    t_min: float = field(1e-3, within(0, 0.5, closed="left"))


@dataclasses.dataclass(frozen=True)
class TargetScoreMatchingConfig(ScoreMatchingConfig):
    """Target Score Matching with the Adjoint Sampling recipe and the `α_t²` weighting.

    The TSM target `σ(t) α_t^{-1} ∇log p*(X_1) + …` has variance `~ α_t^{-2}` as `t → 0`; the TSM
    paper (De Bortoli et al., arXiv 2402.08667) uses the target score in the low-noise regime only
    (`α_t ≈ 1`). `loss_weighting="score_alpha2"` (`w = α_t²/σ(t)²`) keeps the loss there and keeps AS's
    `1/σ²` form; `max_grad_norm_target=100` is AS's energy-gradient clip (per particle, or per sample);
    with the geometric VE schedule of the hyper-parameter table it is the AS recipe plus `α_t²`.
    """

    loss_weighting: str = field("score_alpha2", one_of(LOSS_WEIGHTINGS))
    max_grad_norm_target: float | None = field(100.0, POSITIVE_OR_NONE)


@dataclasses.dataclass(frozen=True)
class NovelScoreMatchingConfig(BridgeRegressionConfig):
    """Novel Score Matching [RECON]: importance-resampled buffer, full time range.

    Its target is Adjoint Sampling's for the Brownian base, so it takes the same recipe as its defaults:
    `loss_weighting="score"` and the energy-gradient clip at 100 (facebookresearch/adjoint_samplers,
    `configs/train.yaml`, `adjoint_samplers/components/term_cost.py`), with the geometric VE schedule of
    the hyper-parameter table; the buffer's path weights are tempered to the `ess_floor`.
    """

    loss_weighting: str = field("score", one_of(LOSS_WEIGHTINGS))
    max_grad_norm_target: float | None = field(100.0, POSITIVE_OR_NONE)


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


class BufferEntry(NamedTuple):
    """One replay-buffer entry.

    Attributes:
        x1: end point `x_K (dim,)` of the model's chain.
        grad: gradient data at `x1` for the method's target (`endpoint_gradients`).
        log_w: its exact path log-weight `()` (`E[w] = Z`).
    """

    x1: jax.Array
    grad: jax.Array
    log_w: jax.Array


class BridgeRegressionInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
        loss: minibatch loss.
        grad_norm: global norm of the loss gradient (before clipping).
        buffer_ess: normalised ESS `(Σw)²/(N Σw²)` of the buffer's path weights, in `[1/N, 1]`.
        refreshed: 1.0 when this step simulated new end points, else 0.0.
        buffer_ess_tempered: normalised ESS of the weights the minibatch is drawn with (after the
            `ess_floor` tempering; equal to `buffer_ess` when nothing was tempered, 1 for uniform draws).
        temper_beta: the tempering exponent `β` of the path weights (1: untouched).
    """

    loss: jax.Array
    grad_norm: jax.Array
    buffer_ess: jax.Array
    refreshed: jax.Array
    buffer_ess_tempered: jax.Array
    temper_beta: jax.Array


def _buffer_log_weights(buffer: BufferState) -> jax.Array:
    """Stored log-weights with unfilled slots (and non-finite values) at `-inf`."""
    log_w = buffer.data.log_w
    filled = jnp.arange(log_w.shape[0]) < buffer.size
    return jnp.where(filled & jnp.isfinite(log_w), log_w, -jnp.inf)


def _refresh_draw_and_loss_keys(key: jax.Array):
    key_refresh, key_draw, key_loss = jax.random.split(key, 3)
    return (key_refresh, key_draw), key_loss


def buffered_training(init_params, draw, loss, info, init_extra, batch_size: int) -> Training:
    """The `Training` of a regression on a replay buffer: the step key split into `(refresh, draw)` keys
    for `draw` and a loss key, and `batch_size` network evaluations per step for the loss."""
    return Training(
        init_params=init_params,
        draw=draw,
        loss=loss,
        info=info,
        split=_refresh_draw_and_loss_keys,
        loss_cost=lambda batch, aux: (Cost.of(network_evals=batch_size),),
        init_extra=init_extra,
    )


def build(problem: Problem, config: BridgeRegressionConfig, *, kind: str) -> Method:
    """Bind a bridge-pair regression method (`kind` in `REGRESSION_TARGETS`) to a problem.

    Args:
        problem: a problem whose base kind has a bridge schedule (`BRIDGE_SCHEDULES`: Brownian, flow).
        config: a `BridgeRegressionConfig` (or subclass).
        kind: `"adjoint"`, `"tsm"`, `"csm"` or `"nsm"`.

    Returns:
        `Method(init, step, sample, backward)`; `sample` and `backward` go through `samplers.sde`
        with exact kernel-form path weights.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, BridgeRegressionConfig):
        raise TypeError(f"config must be a BridgeRegressionConfig, got {type(config).__name__}")
    check_choice(kind, REGRESSION_TARGETS, "regression target")
    bridge = bridge_schedule(problem)
    base = problem.base
    net = config_network(problem, config)
    control = net.apply
    gradient = endpoint_gradients(problem, kind, config.max_grad_norm_target)
    needs_gradient = target_of(bridge, kind).gradient != "none"
    sde_config = dataclasses.replace(config.sde, detach="all")
    window = time_window(bridge, config.t_min)
    resample_size, batch_size = config.resample_size, config.batch_size

    def init_buffer(params) -> BufferState:
        point = jnp.zeros((problem.dim,), jnp.float32)
        return buffer_init(BufferEntry(point, point, jnp.zeros((), jnp.float32)), config.buffer_size)

    def refresh(key, params, buffer):
        out = sde.simulate(key, problem, control, sg(params), resample_size, sde_config)
        log_w = jnp.where(jnp.isnan(out.log_w), -jnp.inf, out.log_w)
        entry = BufferEntry(out.x, jax.vmap(gradient)(out.x), log_w)
        cost = out.cost + Cost.of(grad_evals=resample_size if needs_gradient else 0)
        return buffer_add(buffer, entry), cost

    def keep(key, params, buffer):
        return buffer, Cost.zero()

    def draw(keys, state: LearnedState) -> Batch:
        """Refresh the buffer when due (every `refresh_every` steps), then a minibatch of end points
        (by the path weights tempered to the ESS floor, or uniformly)."""
        key_refresh, key_draw = keys
        refreshed = state.step % config.refresh_every == 0
        buffer, refresh_cost = jax.lax.cond(refreshed, refresh, keep, key_refresh, state.params, state.extra)
        log_w = _buffer_log_weights(buffer)
        if config.importance_weights == "resample":
            weights = temper_to_ess(log_w, buffer.size, config.ess_floor)
            index = weighted_indices(key_draw, weights.log_w, batch_size)
        else:
            ess = normalised_ess(log_w, buffer.size)
            weights = Tempered(log_w, jnp.ones((), log_w.dtype), ess, jnp.ones((), log_w.dtype))
            index = jax.random.randint(key_draw, (batch_size,), 0, jnp.maximum(buffer.size, 1))
        data = (buffer.data.x1[index], buffer.data.grad[index], refreshed, weights)
        return Batch(data=data, extra=buffer, cost=(refresh_cost,))

    def loss(params, key, data):
        x_1, grad_1, _, _ = data
        value = regression_loss(
            control,
            params,
            key,
            x_1,
            grad_1,
            kind=kind,
            bridge=bridge,
            time_window=window,
            weighting=config.loss_weighting,
            project=base.project,
        )
        return value, ()

    def info(state, batch, loss, grad_norm, aux) -> BridgeRegressionInfo:
        _, _, refreshed, weights = batch.data
        return BridgeRegressionInfo(
            loss=loss,
            grad_norm=grad_norm,
            buffer_ess=weights.ess,
            refreshed=refreshed.astype(jnp.float32),
            buffer_ess_tempered=weights.ess_tempered,
            temper_beta=weights.beta,
        )

    training = buffered_training(net.init, draw, loss, info, init_buffer, batch_size)
    sample, backward = sde_sampling(problem, control, sde_config, params_of=lambda state: state.params)
    return build_configured(training, config, sample, backward)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_COST_MODEL = (
    "per epoch (refresh_every gradient steps): resample_size SDE paths of K steps (K network evals each), "
    "resample_size energy evals (path weights){grad}; per gradient step: batch_size network evals (and, on "
    "the flow base, batch_size pretrained-velocity evals for the targets, not counted)"
)
_WITH_GRADIENTS = " and resample_size energy-gradient evals"


def _spec(name: str, kind: str, config_cls: type, description: str) -> MethodSpec:
    """The registry entry of the bridge regression with target `kind`, on every base kind with a bridge
    schedule (`BRIDGE_SCHEDULES`)."""
    needs_gradient = REGRESSION_TARGETS[kind].gradient != "none"
    return MethodSpec(
        name=name,
        family="soc-regression",
        config_cls=config_cls,
        build=lambda problem, config: build(problem, config, kind=kind),
        bases=tuple(BRIDGE_SCHEDULES.names()),
        cost_model=_COST_MODEL.format(grad=_WITH_GRADIENTS if needs_gradient else " (no gradient evals)"),
        description=description,
    )


SPECS: tuple[MethodSpec, ...] = (
    _spec(
        "adjoint_sampling",
        "adjoint",
        AdjointSamplingConfig,
        "Adjoint Sampling / reciprocal adjoint matching (Havens et al. 2025): regress u(X_t,t) on "
        "-σ(t)∇g(X_1), g = -r, with X_1 from a replay buffer of model end points (uniform draws) and X_t "
        "from the Brownian bridge; ∇g computed once per end point. "
        "[CODE] facebookresearch/adjoint_samplers. On the flow base: the exact mixture "
        "t Y^TSM + (1 - t) Y^CSM (methods.md §1.5).",
    ),
    _spec(
        "target_score_matching",
        "tsm",
        TargetScoreMatchingConfig,
        "Target Score Matching in the tilting setting: regress u on "
        "σ(t)[α_t^{-1}∇log p*(X_1) - ∇log p^base_t(X_t)], X_1 from the importance-resampled buffer, "
        "X_t from the bridge. [DERIVED] from the target "
        "score identity (methods.md §1.3, §4); variance ~ 1/ν_t² as t -> 0.",
    ),
    _spec(
        "conditional_score_matching",
        "csm",
        ScoreMatchingConfig,
        "Conditional (denoising) Score Matching in the tilting setting: regress u on "
        "σ(t)[-(X_t - α_t X_1)/β_t² - ∇log p^base_t(X_t)], X_1 from the importance-resampled buffer. "
        "[DERIVED] (methods.md §1.3); "
        "variance ~ 1/β_t² as t -> 1.",
    ),
    _spec(
        "novel_score_matching",
        "nsm",
        NovelScoreMatchingConfig,
        "Novel Score Matching [RECON]: the PDDS guidance loss, regress u on σ(t) a_t ∇r(X_1) "
        "(a_t = 1 for "
        "the Brownian base, where the target coincides with Adjoint Sampling's), X_1 from the "
        "importance-resampled buffer. Identification with arXiv 2605.00229 unconfirmed (methods.md §1.3). "
        "On the flow base: Adjoint Sampling's mixture target (methods.md §1.5).",
    ),
)
