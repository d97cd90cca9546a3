"""Adjoint Matching: regress the control on the lean adjoint of on-policy trajectories.

Adjoint Matching (Domingo-Enrich, Drozdzal, Karrer, Chen; arXiv 2409.08861; `docs/methods.md`
§2.3, §1.3). The controlled SDE is the paper form (P1) of `samplers.sde`,

    dX = (b(X, t) + σ(t) u_θ(X, t)) dt + σ(t) dB,      X_{t_0} ~ p_0,

and the target is the tilt `p* ∝ p^base_K e^r` of a `Problem` (sampling: `r = log γ - log p^base_K`,
fine-tuning: `r = λ·reward`). Sign convention: `r` is a *reward* (large is good), the terminal cost is
`g = -r`, and the adjoint is the gradient of the cost-to-go, so it starts at `ã_K = -∇r(x_K)`; the
optimal control is `u* = σ ∇log h` and the regression target is `-σ ã`.

**One training step** (methods.md §2.3, "Algorithm per iteration"):

1. simulate `n` trajectories `x_{0:K}` of the Euler–Maruyama chain with the control *stopped*
   (`sg[u_θ]`: `samplers.sde.simulate`, `detach="all"`, trajectory saved). No gradient flows through
   the simulation, nor through the adjoint;
2. integrate the **lean adjoint** backward with ONE vector-Jacobian product of the *base* drift per
   step (every control term of the full adjoint ODE is dropped; `lean_adjoint`):

       ã_K = -∇r(x_K),     ã_k = ã_{k+1} + h_k [∇_x b(x_k, t_k)]^T ã_{k+1},     k = K-1, …, 0,

   a `lax.scan` over steps, vectorised over the batch. **Evaluation point** (`adjoint_evaluation`,
   methods.md §2.3): `"left"` (default) evaluates the Jacobian at `(x_k, t_k)`, as
   `microsoft/soc-fine-tuning-sd` `am_trainer.py` does. This is the *exact* discrete adjoint of the
   Euler–Maruyama map: with the noise and the control increments frozen,
   `∂x_{k+1}/∂x_k = I + h_k ∇_x b(x_k, t_k)`, so `ã_k = -∇_{x_k} r(x_K)` holds to rounding (tested).
   `"right"` evaluates it at `(x_{k+1}, t_{k+1})` as `facebookresearch/adjoint_samplers`
   `AdjointMatcher._backward_simulate`; both are first-order approximations of the continuous ODE
   `dã/dt = -[∇_x b]^T ã`. For the Brownian base `b = 0`, so `ã_k = ã_K` for all k; for a linear drift
   `b = ℓ(t)x` (VP) `ã_k = Π_{j≥k}(1 + h_j ℓ(t_j)) ã_K` ("left") `→ exp(∫_t^1 ℓ) ã(1)`;
3. on a (sub-sampled) set of time indices per trajectory, evaluate `u_θ(x_k, t_k)` with gradient and
   take an optimiser step on the **loss**

       L(θ) = mean_i ℓ_i,   ℓ_i = Σ_{k ∈ S_i} c_k |u_θ(x^i_k, t_k) + σ(t_k) ã^i_k|²,

   squared norm summed over coordinates, `σ(t_k)` the diffusion coefficient the EM step `k` uses.
   - `time_subsample = M` (or None for all `K` control times `k = 0, …, K-1`; `t_K` carries no
     control): `S_i` is a uniform draw of `M` *distinct* indices from `{0, …, K-1}`, independently
     per trajectory. (The SD1.5 code draws 2 of the first 60% and 2 of the last 40% of 50 steps;
     uniform sampling is used here.)
   - `time_weighting="dt"` (default): `c_k = (K/M)·½ h_k`, so that `E_S[ℓ_i] = ½ Σ_k h_k |·|²`, the
     Riemann sum of the paper's `½∫_0^1 |u + σã|² dt` (the SD code's `h·|u + σã|²` up to the ½).
     `"uniform"`: `c_k = 1/M` (every time step weighted equally, the Adjoint Sampling convention of
     `t ~ U`, which differs from `"dt"` on non-uniform grids only by the per-step factor).
   - `loss_clip_quantile = q` (off by default): per-trajectory losses above the batch `q`-quantile are
     masked out (the mean is over kept trajectories). `microsoft/soc-fine-tuning-sd` masks above an
     EMA of the 0.9-quantile; here the threshold is the current batch's quantile (no EMA state).
   - `max_grad_norm_target` (off by default): the norm of `∇log γ̃` (sampling) or of `∇r` (when the
     base has no closed-form terminal law) is clipped, per particle for particle systems, before it
     enters `ã_K`. It biases the fixed point.

   **Buffered variant** (`passes_per_batch = P > 1`): the simulated trajectories and their adjoints are
   reused for `P` optimiser steps, each with fresh time indices (`BufferAMTrainer` of
   `microsoft/soc-fine-tuning-sd`, `passes_per_buffer`). Passes after the first are off-policy (the
   trajectories come from the control before the update), an approximation the SD code makes too.

**Fixed point.** For a memoryless base the minimiser of the on-policy loss is `u* = σ∇log h_t`: under
`P^{u*}`, `E[-ã(t) | X_t = x] = ∇log h_t(x)` (for the Brownian base `E[∇r(X_1) | X_t]` by the
martingale property of `∇log h`). For a Gaussian target and the Brownian base this holds *exactly for
the discrete chain* with the mean-matching control of `samplers.gaussian_oracle` (all conditional
means are affine, so the EM chain with that control has the optimal chain's conditional means); the
tests check that the loss gradient vanishes there. For a base that is not memoryless (VP) the
minimiser is the SOC optimum, whose terminal law is `p*` only up to the value-function bias
`e^{r(X_1)}/h_0(X_0)` (methods.md §1.2, §2): the path weights `Samples.log_w` stay exact
(`E[w] = Z`), only the ESS pays for the bias.

**Path weights.** `sample` and `backward` are `samplers.sde` with the learned control: exact
discrete-chain log-weights (kernel form for the Brownian and VP bases, Girsanov form for the flow
base), `E[w] = Z`.

**Cost** (per training step, batch `n`, `K` grid steps, `M` loss times, `P` passes):
simulation `n·K` network evaluations and SDE steps and `n` energy evaluations (`log γ̃(x_K)` of the
path weight, reported in `Info`); `n` gradient evaluations for `∇r(x_K)` (one `∇log γ`); the adjoint
costs `n·K` VJPs of the *base* drift (free for the linear Brownian / VP bases; for the flow base these
are evaluations of the pretrained model, for which `Cost` has no field: they are NOT counted); the
loss `P·n·M` network evaluations. With the grad-log-target feature every network evaluation costs one
more gradient evaluation.

Reconstruction status: the loss, the stop-gradients and the discrete recursion are [CODE]
(`microsoft/soc-fine-tuning-sd`); the ½ and the time weighting/subsampling rule are documented
choices (the paper's exact normalisation is unverified, methods.md §11).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers import sde
from samplers.fields import POSITIVE, POSITIVE_OR_NONE, field, integer, one_of, within
from samplers.learned import Batch, LearnedState, Training, sde_sampling
from samplers.method import Cost, Method, MethodSpec
from samplers.methods.common import (
    ControlTrainingConfig,
    batch_log_Z,
    build_configured,
    clip_norm,
    config_network,
    grad_log_target_fn,
)
from samplers.problem import Problem
from samplers.types import Control, PyTree

__all__ = [
    "SPECS",
    "ADJOINT_EVALUATIONS",
    "TIME_WEIGHTINGS",
    "AdjointMatchingConfig",
    "AdjointMatchingInfo",
    "LossAux",
    "adjoint_matching_loss",
    "build_adjoint_matching",
    "lean_adjoint",
    "select_times",
    "simulate_with_adjoint",
    "terminal_adjoint_fn",
]


ADJOINT_EVALUATIONS: dict[str, str] = {
    "left": "Jacobian of b at (x_k, t_k): the exact adjoint of the EM map (soc-fine-tuning-sd am_trainer)",
    "right": "Jacobian of b at (x_{k+1}, t_{k+1}) (adjoint_samplers AdjointMatcher._backward_simulate)",
}
TIME_WEIGHTINGS: dict[str, str] = {
    "dt": "c_k = (K/M)·½h_k: unbiased for ½Σ_k h_k|u + σã|² ≈ ½∫|u + σã|² dt (paper form)",
    "uniform": "c_k = 1/M: mean over the selected time steps",
}


# ---------------------------------------------------------------------------------------------
# config, state, info
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdjointMatchingConfig(ControlTrainingConfig):
    """Hyper-parameters of `adjoint_matching` (the SDE grid comes from the Problem).

    Attributes (besides the shared optimiser and network fields of `ControlTrainingConfig`):
        grad_log_target_feature: add the PIS feature `NN₂(t) ⊙ sg[clip(∇log γ̃(x))]` to the MLP control
            (off by default: plain Adjoint Matching; each network call then costs a gradient evaluation).
        grad_target_clip: element-wise clip of that feature.
        max_grad_norm_target: norm clip (per particle for particle systems) of `∇log γ̃` (or of `∇r`
            without a terminal law) in `ã_K`; None = off.
        time_subsample: number `M` of distinct time indices per trajectory in the loss, drawn uniformly
            from `{0, …, K-1}`; None = all `K`.
        time_weighting: `"dt"` or `"uniform"` (`TIME_WEIGHTINGS`).
        adjoint_evaluation: `"left"` or `"right"` (`ADJOINT_EVALUATIONS`).
        loss_clip_quantile: mask trajectories whose loss exceeds this batch quantile (in (0, 1]); None = off.
        passes_per_batch: optimiser steps per simulated batch (buffered variant when > 1).
        sde: the integrator (`sde.integrator`: `"diffrax"` or `"scan"`, same maths), `samplers.sde.SDEConfig`.
    """

    grad_log_target_feature: bool = False
    grad_target_clip: float = field(100.0, POSITIVE)
    max_grad_norm_target: float | None = field(None, POSITIVE_OR_NONE)
    time_subsample: int | None = field(None, integer(1, optional=True))
    time_weighting: str = field("dt", one_of(TIME_WEIGHTINGS))
    adjoint_evaluation: str = field("left", one_of(ADJOINT_EVALUATIONS))
    loss_clip_quantile: float | None = field(None, within(0, 1, closed="right", optional=True))
    passes_per_batch: int = field(1, integer(1))
    sde: sde.SDEConfig = field(sde.SDEConfig(), sde.USER_SDE)


class AdjointMatchingInfo(NamedTuple):
    """Per-step diagnostics (means over the `passes_per_batch` passes where relevant).

    Attributes:
        loss: the Adjoint Matching loss.
        grad_norm: global norm of the parameter gradient (before clipping).
        elbo: `mean(log w)` of the simulated batch.
        log_Z: `LSE(log w) - log n` of the simulated batch.
        adjoint_max: `max_{i,k} |ã^i_k|` over the batch and the grid.
        terminal_grad_norm: `mean_i |ã^i_K| = mean_i |∇r(x^i_K)|` (after any clipping).
        kept_fraction: fraction of trajectories kept by `loss_clip_quantile` (1 when off).
    """

    loss: jax.Array
    grad_norm: jax.Array
    elbo: jax.Array
    log_Z: jax.Array
    adjoint_max: jax.Array
    terminal_grad_norm: jax.Array
    kept_fraction: jax.Array


class LossAux(NamedTuple):
    """Auxiliary output of `adjoint_matching_loss`.

    Attributes:
        per_sample: `ℓ_i`, `(n,)`.
        kept: `(n,)` float mask of the trajectories in the mean.
        network_evals: number of network evaluations (`n·M`).
    """

    per_sample: jax.Array
    kept: jax.Array
    network_evals: int


# ---------------------------------------------------------------------------------------------
# the lean adjoint
# ---------------------------------------------------------------------------------------------


def terminal_adjoint_fn(problem: Problem, max_grad_norm_target: float | None = None) -> Callable:
    """`x (dim,) -> ã_K = -∇r(x)` of ONE point (projected to zero centre of mass for particles).

    Without clipping this is `-problem.grad_tilt`. With `max_grad_norm_target`, for problems with a
    closed-form terminal law `∇r = clip(∇log γ̃) - ∇log p^base_K` (the energy part is clipped, as
    Adjoint Sampling clips `∇E`); otherwise `∇r` itself is clipped.
    """
    base = problem.base
    if max_grad_norm_target is None:
        return lambda x: -problem.grad_tilt(x)
    if problem.has_log_target:
        score = grad_log_target_fn(problem)
        terminal_var = problem.chain.marginal_vars[-1]

        def adjoint(x):
            # ∇log p^base_K(x) = -x/s_K (projected): ∇r = ∇log γ̃ + x/s_K.
            clipped = clip_norm(score(x), max_grad_norm_target, problem.particles)
            return -base.project(clipped + base.project(x) / terminal_var)

        return adjoint
    return lambda x: -base.project(clip_norm(problem.grad_tilt(x), max_grad_norm_target, problem.particles))


def lean_adjoint(
    problem: Problem, trajectory: jax.Array, terminal: jax.Array, *, evaluation: str = "left"
) -> jax.Array:
    """Integrate the lean adjoint backward along stored trajectories (one base-drift VJP per step).

    `ã_K = terminal`; `ã_k = ã_{k+1} + h_k [∇_x b(y_k, s_k)]^T ã_{k+1}` with `(y_k, s_k) = (x_k, t_k)`
    (`"left"`, the exact adjoint of the EM map) or `(x_{k+1}, t_{k+1})` (`"right"`), projected to zero
    centre of mass for particle systems. A `lax.scan` over `k = K-1, …, 0`, vmapped over the batch.

    Args:
        problem: the problem (base drift `problem.base.drift`, grid `problem.times`).
        trajectory: `(K+1, n, dim)` states (treated as constants: wrapped in `stop_gradient`).
        terminal: `ã_K`, `(n, dim)` (e.g. `-∇r(x_K)`).
        evaluation: `"left"` or `"right"` (`ADJOINT_EVALUATIONS`).

    Returns:
        `ã`, `(K+1, n, dim)`, with `ã[K] = terminal`.
    """
    if evaluation not in ADJOINT_EVALUATIONS:
        raise ValueError(
            f"unknown adjoint evaluation {evaluation!r}; valid choices: {sorted(ADJOINT_EVALUATIONS)}"
        )
    trajectory = sg(trajectory)
    if trajectory.shape[0] != problem.num_steps + 1:
        raise ValueError(
            f"trajectory has {trajectory.shape[0]} time points, the grid has {problem.num_steps + 1}"
        )
    base = problem.base
    ts = problem.times.astype(trajectory.dtype)  # the grid in the trajectory's precision
    step_sizes = jnp.diff(ts)
    shift = 0 if evaluation == "left" else 1

    def vjp_one(x, t, a):
        _, pullback = jax.vjp(lambda y: base.drift(y, t), x)
        return pullback(a)[0]

    def body(a_next, k):
        x = trajectory[k + shift]
        t = ts[k + shift]
        a = a_next + step_sizes[k] * base.project(jax.vmap(vjp_one, in_axes=(0, None, 0))(x, t, a_next))
        return a, a

    terminal = base.project(sg(terminal))
    _, earlier = jax.lax.scan(body, terminal, jnp.arange(problem.num_steps - 1, -1, -1))
    return jnp.concatenate([earlier[::-1], terminal[None]], axis=0)


def simulate_with_adjoint(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    num_samples: int,
    sde_config: sde.SDEConfig | None = None,
    *,
    evaluation: str = "left",
    max_grad_norm_target: float | None = None,
    grad_evals_per_control: float = 0.0,
) -> tuple[sde.PathOutput, jax.Array]:
    """Simulate `num_samples` trajectories under `sg[u]` and their lean adjoints (steps 1-2 above).

    Args:
        key: PRNG key.
        problem: the problem.
        control: `control(params, x, t) -> (dim,)` of ONE example.
        params: control parameters (stopped).
        num_samples: number of trajectories `n`.
        sde_config: integrator options (`detach="all"` and `save_trajectory=True` are imposed).
        evaluation: Jacobian evaluation point of the adjoint recursion.
        max_grad_norm_target: clip of the terminal gradient (see `terminal_adjoint_fn`).
        grad_evals_per_control: `∇log γ̃` evaluations inside one control call (cost).

    Returns:
        `(path, adjoints)`: the `PathOutput` (trajectory `(K+1, n, dim)`, exact log-weights; its cost
        includes the `n` gradient evaluations of `∇r(x_K)`) and `ã`, `(K+1, n, dim)`.
    """
    config = dataclasses.replace(sde_config or sde.SDEConfig(), detach="all", save_trajectory=True)
    path = sde.simulate(
        key, problem, control, sg(params), num_samples, config, grad_evals_per_control=grad_evals_per_control
    )
    terminal = jax.vmap(terminal_adjoint_fn(problem, max_grad_norm_target))(path.trajectory[-1])
    adjoints = lean_adjoint(problem, path.trajectory, terminal, evaluation=evaluation)
    return path._replace(cost=path.cost + Cost.of(grad_evals=num_samples)), adjoints


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def select_times(key: jax.Array, num_samples: int, num_steps: int, time_subsample: int | None) -> jax.Array:
    """Loss time indices `(n, M)`: all `0 … K-1` (None or `M = K`), else `M` distinct uniform draws."""
    if time_subsample is None or time_subsample == num_steps:
        return jnp.broadcast_to(jnp.arange(num_steps), (num_samples, num_steps))
    if time_subsample > num_steps:
        raise ValueError(f"time_subsample={time_subsample} exceeds the number of grid steps K={num_steps}")
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: jax.random.choice(k, num_steps, (time_subsample,), replace=False))(keys)


def adjoint_matching_loss(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    trajectory: jax.Array,
    adjoints: jax.Array,
    *,
    time_subsample: int | None = None,
    time_weighting: str = "dt",
    loss_clip_quantile: float | None = None,
) -> tuple[jax.Array, LossAux]:
    """The Adjoint Matching loss `mean_i Σ_{k∈S_i} c_k |u_θ(x^i_k, t_k) + σ(t_k) ã^i_k|²` (module docstring).

    Only `u_θ` carries a gradient: the trajectory and the adjoints are wrapped in `stop_gradient`.

    Args:
        key: PRNG key of the time sub-sampling.
        problem: the problem (grid, `σ`, projection).
        control: `control(params, x, t)` of ONE example (any callable: tests plug in closed forms).
        params: differentiated parameters.
        trajectory: `(K+1, n, dim)`.
        adjoints: `ã`, `(K+1, n, dim)`.
        time_subsample: `M` or None (all K control times).
        time_weighting: `"dt"` or `"uniform"`.
        loss_clip_quantile: per-trajectory quantile mask, or None.

    Returns:
        `(loss, LossAux)`.
    """
    if time_weighting not in TIME_WEIGHTINGS:
        raise ValueError(
            f"unknown time_weighting {time_weighting!r}; valid choices: {sorted(TIME_WEIGHTINGS)}"
        )
    base = problem.base
    num_steps = problem.num_steps
    n = trajectory.shape[1]
    ts = problem.times
    step_sizes = jnp.diff(ts)
    sigmas = base.sigma(ts[:-1])
    idx = select_times(key, n, num_steps, time_subsample)  # (n, M)
    m = idx.shape[1]
    rows = jnp.arange(n)[:, None]
    x_sel = sg(trajectory)[idx, rows]  # (n, M, dim)
    a_sel = sg(adjoints)[idx, rows]
    t_sel = ts[idx]
    if time_subsample is None or time_subsample == num_steps:
        # All K times: one time per grid row, so the network's time features are computed K times
        # (t unbatched inside the inner vmap), not n·K times; the same values as the gather below.
        per_time = jax.vmap(control, in_axes=(None, 0, None))
        u = jnp.swapaxes(jax.vmap(per_time, in_axes=(None, 0, 0))(params, sg(trajectory)[:-1], ts[:-1]), 0, 1)
    else:
        u = jax.vmap(jax.vmap(control, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(params, x_sel, t_sel)
    residual = base.project(u) + sigmas[idx][..., None] * a_sel
    squared = jnp.sum(residual * residual, axis=-1)  # (n, M)
    if time_weighting == "dt":
        weights = (num_steps / m) * 0.5 * step_sizes[idx]
    else:
        weights = jnp.full(idx.shape, 1.0 / m, squared.dtype)
    per_sample = jnp.sum(weights * squared, axis=-1)
    if loss_clip_quantile is None:
        kept = jnp.ones_like(per_sample)
    else:
        threshold = jnp.quantile(sg(per_sample), loss_clip_quantile)
        kept = (sg(per_sample) <= threshold).astype(per_sample.dtype)
    loss = jnp.sum(kept * per_sample) / jnp.maximum(jnp.sum(kept), 1.0)
    return loss, LossAux(per_sample=per_sample, kept=kept, network_evals=n * m)


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def _check_problem(problem: Problem, config: AdjointMatchingConfig) -> None:
    if not isinstance(problem, Problem):
        raise TypeError(f"adjoint_matching needs a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, AdjointMatchingConfig):
        raise TypeError(f"adjoint_matching needs an AdjointMatchingConfig, got {type(config).__name__}")
    if config.time_subsample is not None and config.time_subsample > problem.num_steps:
        raise ValueError(
            f"adjoint_matching: time_subsample={config.time_subsample} exceeds the problem's "
            f"K={problem.num_steps} steps"
        )


def build_adjoint_matching(problem: Problem, config: AdjointMatchingConfig) -> Method:
    """Adjoint Matching bound to `problem` and `config`: `Method(init, step, sample, backward)`.

    `step` simulates one batch under `sg[u_θ]`, computes the lean adjoint and takes
    `config.passes_per_batch` Adam steps on `adjoint_matching_loss` (fresh time indices per pass).
    """
    _check_problem(problem, config)
    grad_fn = grad_log_target_fn(problem) if config.grad_log_target_feature else None
    net = config_network(problem, config, grad_log_target=grad_fn)
    per_control = float(net.grad_evals_per_apply)
    sde_config = config.sde
    n = config.batch_size
    m = problem.num_steps if config.time_subsample is None else config.time_subsample
    loss_evals = config.passes_per_batch * n * m

    def draw(key: jax.Array, state: LearnedState) -> Batch:
        path, adjoints = simulate_with_adjoint(
            key,
            problem,
            net.apply,
            state.params["control"],
            n,
            sde_config,
            evaluation=config.adjoint_evaluation,
            max_grad_norm_target=config.max_grad_norm_target,
            grad_evals_per_control=per_control,
        )
        return Batch(data=(path, adjoints), extra=state.extra, cost=(path.cost,))

    def loss(params, key, data):
        path, adjoints = data
        value, aux = adjoint_matching_loss(
            key,
            problem,
            net.apply,
            params["control"],
            path.trajectory,
            adjoints,
            time_subsample=config.time_subsample,
            time_weighting=config.time_weighting,
            loss_clip_quantile=config.loss_clip_quantile,
        )
        return value, jnp.mean(aux.kept)

    def info(state, batch, losses, grad_norms, kept) -> AdjointMatchingInfo:
        path, adjoints = batch.data
        norms = jnp.linalg.norm(adjoints, axis=-1)  # (K+1, n)
        return AdjointMatchingInfo(
            loss=jnp.mean(losses),
            grad_norm=jnp.mean(grad_norms),
            elbo=jnp.mean(path.log_w),
            log_Z=batch_log_Z(path.log_w),
            adjoint_max=jnp.max(norms),
            terminal_grad_norm=jnp.mean(norms[-1]),
            kept_fraction=jnp.mean(kept),
        )

    training = Training(
        init_params=lambda key: {"control": net.init(key)},
        draw=draw,
        loss=loss,
        info=info,
        loss_cost=lambda batch, aux: (
            Cost.of(network_evals=loss_evals, grad_evals=loss_evals * per_control),
        ),
        passes=config.passes_per_batch,
    )
    sample, backward = sde_sampling(problem, net.apply, sde_config, grad_evals_per_control=per_control)
    return build_configured(training, config, sample, backward)


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="adjoint_matching",
        family="soc-regression",
        config_cls=AdjointMatchingConfig,
        build=build_adjoint_matching,
        bases=("brownian", "vp", "flow"),
        cost_model=(
            "per step: n·K network evals and SDE steps (trajectories under sg[u]), "
            "n energy evals (path weight), "
            "n grad evals (∇r(x_K)), n·K base-drift VJPs (not counted; free for linear bases), "
            "passes·n·M network evals (loss); no backprop through the SDE"
        ),
        description=(
            "Adjoint Matching (Domingo-Enrich et al. 2024): regress u_θ(x_k,t_k) on -σ(t_k)ã_k, "
            "the lean adjoint ã_K=-∇r(x_K), ã_k=ã_{k+1}+h_k[∇b(x_k,t_k)]^Tã_{k+1} (base drift only), "
            "on trajectories simulated "
            "under sg[u_θ]; loss ½Σ_k h_k|u+σã|² (time-subsampled), no gradient through the simulation."
        ),
    ),
)
