"""Controlled Monte Carlo Diffusions (CMCD): `cmcd_kl` and `cmcd_lv`.

Vargas, Padhy, Blessing & Nüsken, "Transport meets Variational Inference: Controlled Monte Carlo
Diffusions", arXiv 2307.01050 (ICLR 2024); discrete scheme as in `DenisBless/variational_sampling_methods`
`algorithms/cmcd/cmcd_rnd.py` and `shreyaspadhy/CMCD` (methods.md §5, §10.9).

**Annealing path.** Geometric interpolation between a diagonal Gaussian `p_0 = N(μ, diag(s²))`
(learnable unless `learn_initial=False`) and the unnormalised target `γ`:

    log π̃_β(x) = β log γ(x) + (1 - β) log p_0(x),      0 = β_0 < β_1 < … < β_K = 1,

with a learnable monotone schedule `β_k = Σ_{j<k} softplus(a_j) / Σ_j softplus(a_j)` (the
official repositories' cumsum-of-softplus parametrisation; fixed, linear in k, when
`learn_schedule=False`). The grid is the problem's `t_0 < … < t_K` (`h_k = t_{k+1} - t_k`), shared
with every other method; the base process itself plays no role beyond the grid and `log γ̃`.

**Kernels** (continuous model `dX = σ_t²(∇log π̃_{β_t} + u_θ)(X, t) dt + sqrt(2) σ_t dW`). Step k
(`x_k → x_{k+1}`) uses the level `β_{k+1}` in *both* of its kernels (DenisBless's `betas(step)` with
a K-vector whose first entry is `1/K`, i.e. the AIS convention "move towards the next level"), and
the control at the step's two end times (methods.md §10.9):

    F_k(x_{k+1} | x_k) = N(x_k     + σ_k² h_k (∇log π̃_{β_{k+1}}(x_k)     + u_θ(x_k, t_k)),     V_k I)
    B_k(x_k | x_{k+1}) = N(x_{k+1} + σ_k² h_k (∇log π̃_{β_{k+1}}(x_{k+1}) - u_θ(x_{k+1}, t_{k+1})), V_k I)

with `V_k = 2σ_k² h_k`.

The sign flip of `u` in `B` is Nelson's relation (reverse drift = forward drift − 2σ²∇log π_t);
the official code's `NN` has the opposite sign (`fk_mean = z - ε∇U - ε NN`). `σ_k` is a learnable
per-step diffusion scale (initialised to `diffusion_scale`) unless `learn_diffusion_scale=False`.
`∇log γ` is clipped element-wise at `grad_target_clip` (CMCD's `gradU` clipping, methods.md §10.6;
the weights stay exact for the clipped kernels). The network sees `sg[clip(∇log γ(x))]` through
`mlp_control`'s grad-log-target feature, fed the gradient the drift computes at that point anyway
(`FeatureControl`: one `∇log γ` evaluation per point, not two); with `x` and `t` as inputs this
carries the same information as the detached `∇log π̃_β = β ∇log γ + (1 - β)∇log p_0` (the second
term is affine in x).

**Weights** (an exact Crooks-type ratio of the discrete chain, methods.md §5.2, §7.1):

    log w = log γ(x_K) + Σ_k log B_k(x_k | x_{k+1}) - log p_0(x_0) - Σ_k log F_k(x_{k+1} | x_k),

so `E_F[w] = Z` for every θ, and on backward paths (`x_K ~ π`, `x_k ~ B_k(·|x_{k+1})`)
`E_B[1/w] = 1/Z`. With `u = 0` this is ULA-MCD / AIS with ULA moves (Doucet et al. 2022). Sign
convention: `log w` is a log weight, the generalised work is `W = -log w`.

**Losses.**
- `cmcd_kl`: `-mean_i log w_θ(X^i)` (the negative ELBO) with reparametrised trajectories, i.e.
  gradients through every `x_k`, the initial draw `x_0 = μ + s ⊙ ε` and `∇log γ` inside the drift
  (Hessian-vector products of `log γ`).
- `cmcd_lv`: `Var_i[log w_θ(X^i)]` (ddof 0) with trajectories detached before and after every step
  (`mcd_cais_var.py`); θ enters only through the kernel means and variances and `log p_0(x_0)`.

**The flow base** (fine-tuning, methods.md §1.4, §5.3) [DERIVED]: the terminal law is known only through
the pretrained velocity. The chain anneals along the tilted path `p_t e^{β r}` of
`samplers.methods.tilted_path` (`GEOMETRIES["flow"]`, `_tilted_flow`): the learned schedule `β_k` is the
tilt's level, the start is the base's `p_{t_0}`, the noise is the base's own (`σ(t)² = 2(1 - t)/t`; the
learned `σ_k`, `p_0`, `initial_std` do not apply), the forward kernel is the base's EM step plus
`½σ(t)²(β_{k+1}∇r + u_θ)`, the backward kernel has the mean of the base's exact (data-free) reversal plus
Nelson's reversal of that term and the forward step's variance, and

    log w = log p_1(x_K) + r(x_K) + Σ_k (log B_k - log F_k) - log p_{t_0}(x_0),

with the model's own `log p_1` from its probability-flow ODE (`samplers.flow_likelihood`: exact
divergence, adaptive solve; its gradient, for `cmcd_kl`, is the base's data score at `t = 1`). The backward
measure is then normalised, so `E_F[w] = Z` and `E_B[1/w] = 1/Z` hold exactly for every control, with
`Z = ∫ p_1 e^r` of the model's ODE law (the task's `Z` for an exact velocity), the KL loss bounds `log Z`,
and on the tilted Gaussian flow both losses' gradients vanish at the chain's exact optimum over
per-grid-time constant controls (a float64 linear solve, methods.md §5.3). The continuous-time optimum
`u* = b̂*/ε_t` is singular at `t = 1` (`ε_t → 0`), so the chain's optimum is not `u*`. The grad-log-target
feature is `clip(∇r)`. The ODE adds `dim + 1` velocity evaluations per solver stage and end point.

**Particle systems** are handled on the working density of `samplers.baselines.common`
(`γ̃(x) = γ(x - centre) · N(√n·centre; 0, s² I)` with `s = initial_std`, `∫ γ̃ = Z` on `R^{n·d}`):
samples are projected to zero centre of mass on output, and target samples get an independent
centre of mass for backward simulation.

Cost per trajectory (`K` steps): 1 energy evaluation (`log γ(x_K)`), `K + 1` gradient evaluations
of `log γ` for the drifts (each point's `∇log γ` and `u_θ` serve both kernels that touch it), `K + 1`
more with the network's grad feature, and for `cmcd_kl` another `K + 2` (Hessian-vector products
through the drifts and `∇log γ(x_K)`); `K + 1` network evaluations; `K` SDE steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.baselines.common import complete_centre_of_mass, working_density
from samplers.fields import POSITIVE, field
from samplers.flow_likelihood import flow_log_prob
from samplers.learned import LearnedState, self_drawn
from samplers.method import Cost, Method, MethodSpec, Samples, sibling_specs
from samplers.methods.common import (
    ControlTrainingConfig,
    batch_log_Z,
    build_configured,
    config_network,
    path_weight_loss,
)
from samplers.methods.tilted_path import tilted_flow_path
from samplers.parallel import shard_batch
from samplers.problem import Problem
from samplers.types import Control, PyTree
from targets.registry import Registry

__all__ = [
    "SPECS",
    "FeatureControl",
    "CMCD_DETACH_MODES",
    "GEOMETRIES",
    "Annealing",
    "CMCDConfig",
    "CMCDInfo",
    "CMCDPath",
    "annealing",
    "build_cmcd_kl",
    "build_cmcd_lv",
    "cmcd_kl_loss",
    "cmcd_lv_loss",
    "init_annealing_params",
    "simulate_cmcd",
    "simulate_cmcd_backward",
]


CMCD_DETACH_MODES: dict[str, str] = {
    "none": "reparametrised: gradients through every state (cmcd_kl)",
    "states": "states stop-gradient before and after each step; θ enters via the kernels (cmcd_lv)",
    "all": "no gradient at all (evaluation)",
}


@dataclasses.dataclass(frozen=True)
class CMCDConfig(ControlTrainingConfig):
    """Hyper-parameters of `cmcd_kl` and `cmcd_lv`.

    Attributes (besides the shared optimiser and network fields of `ControlTrainingConfig`):
        grad_log_target_feature: feed `sg[clip(∇log γ)]` to the MLP (PISGRADNet feature).
        grad_target_clip: element-wise clip of `∇log γ` in the drifts and the feature (100, CMCD `gradU`).
        checkpoint_steps: rematerialise each chain step in the backward pass (`jax.checkpoint` on the
            scan body): the training step keeps the K states instead of every step's activations,
            memory O(n) instead of O(K·n) network activations. Measured per training step on lj13
            (EGNN, batch 256, K = 100): 32 GB without, 0.5 GB with; on funnel10 no measurable slow-down.
        reuse_drift_gradient: feed the feature the `∇log γ(x)` the drifts compute anyway
            (`FeatureControl`); False makes the network evaluate it a second time (the same numbers
            at twice the gradient cost: kept for the before/after measurement of `make perf`).
        initial_std: initial standard deviation `s` of `p_0` (and the centre-of-mass scale for particles);
            in the benchmark its default follows the problem's `sigma`. On the flow base `p_0` is the base's
            `p_{t_0}` and the noise the base's, so `initial_std`, `learn_initial`, `diffusion_scale` and
            `learn_diffusion_scale` do not apply there.
        learn_initial: learn the mean and diagonal std of `p_0`; False fixes `p_0 = N(0, initial_std² I)`.
        learn_schedule: learn the monotone `β` schedule; False fixes `β_k = k/K`.
        diffusion_scale: initial `σ_k` (all steps); the ULA step size is `σ_k² h_k`.
        learn_diffusion_scale: learn the per-step `σ_k` (log-parametrised).
    """

    grad_log_target_feature: bool = True
    grad_target_clip: float = field(100.0, POSITIVE)
    checkpoint_steps: bool = True
    reuse_drift_gradient: bool = True
    initial_std: float = field(1.0, POSITIVE, follows="sigma")
    learn_initial: bool = True
    learn_schedule: bool = True
    diffusion_scale: float = field(1.0, POSITIVE)
    learn_diffusion_scale: bool = True


class CMCDInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
        loss: the training loss of the batch.
        grad_norm: global norm of the parameter gradient (before clipping).
        elbo: `mean(log w)` of the batch.
        log_Z: `LSE(log w) - log n` of the batch.
        mean_diffusion_scale: mean of the `σ_k`.
    """

    loss: jax.Array
    grad_norm: jax.Array
    elbo: jax.Array
    log_Z: jax.Array
    mean_diffusion_scale: jax.Array


class CMCDPath(NamedTuple):
    """Output of `simulate_cmcd` / `simulate_cmcd_backward`.

    Attributes:
        x: end points `x_K` (forward) or the given target samples (backward), `(n, dim)`, projected
            to zero centre of mass for particle systems.
        log_w: path log-weights `(n,)` (`E_F[w] = Z`, `E_B[1/w] = 1/Z`).
        trajectory: `(K+1, n, dim)` when requested, else None.
        cost: evaluation counters of this call.
    """

    x: jax.Array
    log_w: jax.Array
    trajectory: jax.Array | None
    cost: Cost


class Annealing(NamedTuple):
    """The effective annealing quantities (fixed ones already stop-gradient).

    Attributes:
        betas: `β_0 = 0 < … < β_K = 1`, `(K+1,)`.
        sigmas: per-step diffusion scales `σ_k`, `(K,)`.
        initial_mean: `μ`, `(dim,)`.
        initial_std: `s`, `(dim,)`.
    """

    betas: jax.Array
    sigmas: jax.Array
    initial_mean: jax.Array
    initial_std: jax.Array


# ---------------------------------------------------------------------------------------------
# annealing parameters
# ---------------------------------------------------------------------------------------------


def init_annealing_params(problem: Problem, config: CMCDConfig) -> dict[str, Any]:
    """Initial annealing parameters: `p_0 = N(0, initial_std² I)`, linear `β`, constant `σ_k`.

    Returns:
        `{"initial_mean": (dim,), "initial_log_std": (dim,), "schedule_logits": (K,),
        "log_diffusion": (K,)}`; equal logits give the linear schedule `β_k = k/K`.
    """
    dim, k_steps = problem.dim, problem.num_steps
    return {
        "initial_mean": jnp.zeros((dim,), jnp.float32),
        "initial_log_std": jnp.full((dim,), math.log(config.initial_std), jnp.float32),
        "schedule_logits": jnp.zeros((k_steps,), jnp.float32),
        "log_diffusion": jnp.full((k_steps,), math.log(config.diffusion_scale), jnp.float32),
    }


def annealing(params: dict[str, Any], config: CMCDConfig) -> Annealing:
    """Effective `β`, `σ_k` and `p_0` from the annealing parameters (fixed ones stop-gradient)."""
    increments = jax.nn.softplus(params["schedule_logits"])
    betas = jnp.concatenate([jnp.zeros((1,), increments.dtype), jnp.cumsum(increments) / jnp.sum(increments)])
    # Exact end points (the cumulative sum's last entry may round below 1).
    betas = betas.at[-1].set(1.0)
    sigmas = jnp.exp(params["log_diffusion"])
    mean, std = params["initial_mean"], jnp.exp(params["initial_log_std"])
    if not config.learn_schedule:
        betas = sg(betas)
    if not config.learn_diffusion_scale:
        sigmas = sg(sigmas)
    if not config.learn_initial:
        mean, std = sg(mean), sg(std)
    return Annealing(betas=betas, sigmas=sigmas, initial_mean=mean, initial_std=std)


# ---------------------------------------------------------------------------------------------
# simulation with exact path weights
# ---------------------------------------------------------------------------------------------


class _Target(NamedTuple):
    """The working target of one problem: `log γ̃`, clipped `∇log γ̃`, output projection."""

    log_prob: Callable[[jax.Array], jax.Array]
    grad_log_prob: Callable[[jax.Array], jax.Array]
    project: Callable[[jax.Array], jax.Array]


def _working_target(problem: Problem, config: CMCDConfig) -> _Target:
    """`log γ̃` and its clipped gradient; on the flow base, whose terminal law is known only through the
    model, the tilt `r` and `clip(∇r)` (the tilted geometry supplies the base's part)."""
    if problem.base.kind not in GEOMETRIES.names():
        raise ValueError(
            f"CMCD has no kernels for the {problem.base.kind!r} base; valid bases: {GEOMETRIES.names()}"
        )
    clip = config.grad_target_clip
    if not problem.has_log_target:
        return _Target(
            problem.tilt, lambda x: jnp.clip(problem.grad_tilt(x), -clip, clip), problem.base.project
        )
    if problem.particles is None:
        log_prob = problem.log_target
    else:
        if problem.target is None:
            raise ValueError("CMCD on a particle system needs a sampling problem (problem.target)")
        log_prob, _ = working_density(problem.target, config.initial_std)

    def grad_log_prob(x):
        return jnp.clip(jax.grad(log_prob)(x), -clip, clip)

    return _Target(log_prob, grad_log_prob, problem.base.project)


def _diag_log_prob(x, mean, std):
    """`log N(x; mean, diag(std²))` of ONE point."""
    z = (x - mean) / std
    return -0.5 * jnp.sum(z * z) - jnp.sum(jnp.log(std)) - 0.5 * x.shape[-1] * math.log(2.0 * math.pi)


def _iso_log_prob(x, mean, var):
    """`log N(x; mean, var·I)` of a batch `(n, dim)` -> `(n,)`."""
    dim = x.shape[-1]
    return -0.5 * jnp.sum((x - mean) ** 2, -1) / var - 0.5 * dim * jnp.log(2.0 * jnp.pi * var)


def _cost(num_samples: int, num_steps: int, grad_evals_per_control: float, detach: str) -> Cost:
    points = num_samples * (num_steps + 1)
    grads = points * (1.0 + grad_evals_per_control)
    if detach == "none":
        grads += points + num_samples  # Hessian-vector products through the drifts, ∇log γ(x_K)
    return Cost.of(
        energy_evals=num_samples, grad_evals=grads, network_evals=points, sde_steps=num_samples * num_steps
    )


class _Pieces(NamedTuple):
    """Per-point drift ingredients: `∇log γ` (clipped), `∇log p_0`, `u_θ(x, t)` for a batch (on the flow
    base: `∇r` (clipped), the pretrained velocity `v(x, t)`, `u_θ(x, t)`)."""

    grad_target: jax.Array
    grad_initial: jax.Array
    control: jax.Array


class FeatureControl(NamedTuple):
    """A control fed the drift's own clipped `∇log γ(x)`: `apply(params, x, t, grad) -> u` (e.g.
    `ControlNet.apply_with_grad`). The grad-log-target feature then reuses the gradient the CMCD
    drifts compute at every point anyway: one `∇log γ` evaluation per point instead of two."""

    apply: Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array]


def _apply_control(control: Control | FeatureControl, params, x, t, grad_target):
    if isinstance(control, FeatureControl):
        return jax.vmap(control.apply, in_axes=(None, 0, None, 0))(params, x, t, grad_target)
    return jax.vmap(control, in_axes=(None, 0, None))(params, x, t)


def _check_detach(detach: str) -> None:
    if detach not in CMCD_DETACH_MODES:
        raise ValueError(f"unknown detach mode {detach!r}; valid choices: {sorted(CMCD_DETACH_MODES)}")


class _Geometry(NamedTuple):
    """The kernels of one base kind (`GEOMETRIES`), as functions of the annealing `a`, the step `k` and its
    times `t = t_k`, `t' = t_{k+1}`, `h = t' - t`:

    - `initial(key, n, a) -> x_0`, `initial_log_w(x_0, a) -> (n,)`: the start and its log-weight term;
    - `pieces(params, x, t) -> _Pieces`: the per-point ingredients of both kernels that touch `x`;
    - `forward(a, k, t, t', x, here) -> (mean, var)`, `backward(a, k, t, t', x', there) -> (mean, var)`;
    - `terminal_log_w(x_K) -> (n,)`.
    """

    initial: Callable
    initial_log_w: Callable
    pieces: Callable
    forward: Callable
    backward: Callable
    terminal_log_w: Callable


def _geometric(target: _Target, control, a: Annealing, problem: Problem) -> _Geometry:
    """Geometric annealing from the learned diagonal Gaussian `p_0` to `γ` (module docstring), Brownian
    and VP bases (the base supplies only the grid)."""

    def initial(key, num_samples, a):
        x0 = jax.random.normal(key, (num_samples, problem.dim), jnp.float32)
        return a.initial_mean + a.initial_std * shard_batch(x0)  # batch over the devices (samplers.parallel)

    def initial_log_w(x0, a):
        return -jax.vmap(_diag_log_prob, in_axes=(0, None, None))(x0, a.initial_mean, a.initial_std)

    def pieces(params, x, t):
        grad_target = jax.vmap(target.grad_log_prob)(x)
        grad_initial = -(x - a.initial_mean) / a.initial_std**2
        return _Pieces(grad_target, grad_initial, _apply_control(control, params, x, t, grad_target))

    def mean(a, k, h, x, pieces, sign):
        """`x + σ_k² h (β_{k+1} ∇log γ + (1 - β_{k+1}) ∇log p_0 + sign·u)`, sign +1 (F) or -1 (B)."""
        beta = a.betas[k + 1]
        score = beta * pieces.grad_target + (1.0 - beta) * pieces.grad_initial
        return x + a.sigmas[k] ** 2 * h * (score + sign * pieces.control)

    def kernel(sign):
        def fn(a, k, t, t_next, x, pieces):
            h = t_next - t
            return mean(a, k, h, x, pieces, sign), 2.0 * a.sigmas[k] ** 2 * h

        return fn

    terminal = jax.vmap(target.log_prob)
    return _Geometry(initial, initial_log_w, pieces, kernel(1.0), kernel(-1.0), terminal)


def _tilted_flow(target: _Target, control, a: Annealing, problem: Problem) -> _Geometry:
    """The tilted path `p_t e^{β r}` on the memoryless flow base (`samplers.methods.tilted_path`, methods.md
    §1.4, §5.3) [DERIVED]: the learned schedule `β_k` is the tilt's level, the noise is the base's own
    (`ε_t = ½σ(t)²`; the learned `σ_k` and `p_0` do not apply), the start is the base's `p_{t_0}`:

        F_k(x' | x) = N(x + h (b(x, t) + ε_t (β_{k+1} ∇r(x) + u_θ(x, t))),           σ(t)² h I)
        B_k(x | x') = N((t/t') x' + h ε_t (β_{k+1} ∇r(x') - u_θ(x', t')),             σ(t)² h I)

    with `b = 2v - x/t`, the mean of `B_k` the base's exact reversal's plus Nelson's reversal of the tilt and
    control, its variance the forward step's (as CMCD's two kernels on the other bases), and the exact Crooks
    weight of this chain, `log w = log p_1(x_K) + r(x_K) + Σ_k (log B_k - log F_k) - log p_{t_0}(x_0)`,
    whose `log p_1` is the model's own (its probability-flow ODE, `samplers.flow_likelihood`):
    `E_F[w] = Z` and `E_B[1/w] = 1/Z` for every control, with `Z = ∫ p_1 e^r` of the model's ODE law."""
    path = tilted_flow_path(problem, needs_score=False)
    base = path.base
    if base.initial_sample_fn is not None and base.initial_log_prob_fn is None:
        raise ValueError(
            "CMCD on the flow base needs the density of the base's initial law: pass initial_log_prob_fn "
            "with initial_sample_fn (the weights contain log p_{t_0}(x_0))"
        )
    log_p1 = jax.vmap(flow_log_prob(base))
    log_p0 = jax.vmap(base.initial_log_prob)

    def initial(key, num_samples, a):
        return shard_batch(path.sample_initial(key, num_samples))

    def initial_log_w(x0, a):
        return -log_p0(x0)

    def pieces(params, x, t):
        grad_tilt = jax.vmap(target.grad_log_prob)(x)
        velocity = jax.vmap(base.velocity, in_axes=(0, None))(x, t)
        return _Pieces(grad_tilt, velocity, _apply_control(control, params, x, t, grad_tilt))

    def forward(a, k, t, t_next, x, here):
        h, eps = t_next - t, path.noise_profile(t)
        drift = 2.0 * here.grad_initial - x / t + eps * (a.betas[k + 1] * here.grad_target + here.control)
        return x + h * drift, base.sigma(t) ** 2 * h

    def backward(a, k, t, t_next, x_next, there):
        h, eps = t_next - t, path.noise_profile(t)
        tilt = eps * (a.betas[k + 1] * there.grad_target - there.control)
        return (t / t_next) * x_next + h * tilt, base.sigma(t) ** 2 * h

    def terminal(x):
        return jax.vmap(target.log_prob)(x) + log_p1(x)

    return _Geometry(initial, initial_log_w, pieces, forward, backward, terminal)


GEOMETRIES: Registry[_Geometry] = Registry("CMCD geometry")
"""The CMCD kernels of each base kind: geometric annealing on the Brownian and VP bases, the tilted path
on the flow base."""
GEOMETRIES.register("brownian", _geometric)
GEOMETRIES.register("vp", _geometric)
GEOMETRIES.register("flow", _tilted_flow)


class _Chain(NamedTuple):
    """What both directions of the chain share: the working target, the annealing, the base kind's
    kernels, the grid, the control parameters and the stop-gradient of the states."""

    target: Any
    annealing: Any
    geometry: _Geometry
    ts: jax.Array
    control_params: PyTree
    stop: Callable[[jax.Array], jax.Array]


def _chain(problem: Problem, control: Control, params: PyTree, config: CMCDConfig, detach: str) -> _Chain:
    _check_detach(detach)
    if detach == "all":
        params = sg(params)
    target = _working_target(problem, config)
    a = annealing(params["annealing"], config)
    stop = (lambda v: v) if detach == "none" else sg
    geometry = GEOMETRIES.get(problem.base.kind, target=target, control=control, a=a, problem=problem)
    return _Chain(target, a, geometry, problem.times, params["control"], stop)


def simulate_cmcd(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    num_samples: int,
    config: CMCDConfig,
    *,
    detach: str = "all",
    save_trajectory: bool = False,
    grad_evals_per_control: float = 0.0,
) -> CMCDPath:
    """Simulate the CMCD forward chain from `p_0` and return the path log-weights.

    Args:
        key: PRNG key.
        problem: the problem (grid `ts`, `log γ̃` or the flow base and `r`, particles).
        control: `control(params, x, t) -> (dim,)` of ONE example.
        params: `{"control": ..., "annealing": ...}` (see `CMCDState`).
        num_samples: number of paths `n`.
        config: `CMCDConfig` (clip, which annealing parameters are learned).
        detach: one of `CMCD_DETACH_MODES`.
        save_trajectory: also return `(K+1, n, dim)` states.
        grad_evals_per_control: `∇log γ` evaluations inside one control call (cost).

    Returns:
        `CMCDPath`.
    """
    target, a, geometry, ts, control_params, stop = _chain(problem, control, params, config, detach)
    key_init, key_noise = jax.random.split(key)
    x0 = stop(geometry.initial(key_init, num_samples, a))
    log_w0 = geometry.initial_log_w(x0, a)

    def body(carry, k):
        x, here, log_w = carry
        t, t_next = ts[k], ts[k + 1]
        mean_forward, var = geometry.forward(a, k, t, t_next, x, here)
        noise = shard_batch(jax.random.normal(jax.random.fold_in(key_noise, k), x.shape, x.dtype))
        x_next = stop(mean_forward + jnp.sqrt(var) * noise)
        there = geometry.pieces(control_params, x_next, t_next)
        mean_backward, var_backward = geometry.backward(a, k, t, t_next, x_next, there)
        d_log_w = _iso_log_prob(x, mean_backward, var_backward) - _iso_log_prob(x_next, mean_forward, var)
        return (x_next, there, log_w + d_log_w), (x_next if save_trajectory else None)

    init = (x0, geometry.pieces(control_params, x0, ts[0]), log_w0)
    remat = config.checkpoint_steps and detach != "all"  # only a differentiated chain stores activations
    step = jax.checkpoint(body) if remat else body
    (x_end, _, log_w), xs = jax.lax.scan(step, init, jnp.arange(problem.num_steps))
    log_w = log_w + geometry.terminal_log_w(x_end)
    trajectory = jnp.concatenate([x0[None], xs]) if save_trajectory else None
    return CMCDPath(
        x=target.project(x_end),
        log_w=log_w,
        trajectory=trajectory,
        cost=_cost(num_samples, problem.num_steps, grad_evals_per_control, detach),
    )


def simulate_cmcd_backward(
    key: jax.Array,
    problem: Problem,
    control: Control,
    params: PyTree,
    x_target: jax.Array,
    config: CMCDConfig,
    *,
    detach: str = "all",
    grad_evals_per_control: float = 0.0,
) -> CMCDPath:
    """Simulate the backward kernels `B_k` from target samples and return the same `log w`.

    `x_K = x_target` (for particle systems, with an independent centre of mass drawn from the
    working density's centre-of-mass factor), `x_k ~ B_k(·|x_{k+1})` for `k = K-1, …, 0`;
    `log w = log γ̃(x_K) + Σ log B_k - log p_0(x_0) - Σ log F_k` as on forward paths, so that
    `E_B[e^{-log w}] = 1/Z` and `E_B[log w] = EUBO` (methods.md §7.2).

    Arguments as `simulate_cmcd`, with `x_target` `(n, dim)` target samples instead of `num_samples`.
    """
    target, a, geometry, ts, control_params, stop = _chain(problem, control, params, config, detach)
    key_com, key_noise = jax.random.split(key)
    x_target = jnp.asarray(x_target, jnp.float32)
    if x_target.ndim != 2 or x_target.shape[1] != problem.dim:
        raise ValueError(f"x_target must have shape (n, {problem.dim}), got {x_target.shape}")
    num_samples = x_target.shape[0]
    if problem.particles is not None:
        x_target = complete_centre_of_mass(key_com, x_target, problem.target, config.initial_std)
    x_end = stop(shard_batch(x_target))

    def body(carry, k):
        x_next, there, log_w = carry
        t, t_next = ts[k], ts[k + 1]
        mean_backward, var_backward = geometry.backward(a, k, t, t_next, x_next, there)
        noise = shard_batch(jax.random.normal(jax.random.fold_in(key_noise, k), x_next.shape, x_next.dtype))
        x = stop(mean_backward + jnp.sqrt(var_backward) * noise)
        here = geometry.pieces(control_params, x, t)
        mean_forward, var = geometry.forward(a, k, t, t_next, x, here)
        d_log_w = _iso_log_prob(x, mean_backward, var_backward) - _iso_log_prob(x_next, mean_forward, var)
        return (x, here, log_w + d_log_w), None

    k_steps = problem.num_steps
    init = (x_end, geometry.pieces(control_params, x_end, ts[-1]), geometry.terminal_log_w(x_end))
    (x0, _, log_w), _ = jax.lax.scan(body, init, jnp.arange(k_steps - 1, -1, -1))
    log_w = log_w + geometry.initial_log_w(x0, a)
    return CMCDPath(
        x=target.project(x_end),
        log_w=log_w,
        trajectory=None,
        cost=_cost(num_samples, k_steps, grad_evals_per_control, detach),
    )


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def _chain_loss(detach: str, reduce: Callable[[jax.Array], jax.Array], doc: str) -> Callable:
    """A CMCD loss: `reduce(log w)` over a batch simulated by `simulate_cmcd` with `detach`."""

    def simulate(key, problem, control, params, batch_size, config, grad_evals_per_control):
        return simulate_cmcd(
            key,
            problem,
            control,
            params,
            batch_size,
            config,
            detach=detach,
            grad_evals_per_control=grad_evals_per_control,
        )

    return path_weight_loss(simulate, reduce, doc)


cmcd_kl_loss = _chain_loss(
    "none",
    lambda log_w: -jnp.mean(log_w),
    '`-mean_i log w_θ(X^i)` (negative ELBO) with reparametrised trajectories (`detach="none"`).',
)
cmcd_lv_loss = _chain_loss(
    "states",
    jnp.var,
    '`Var_i[log w_θ(X^i)]` (ddof 0) on detached trajectories (`detach="states"`).',
)


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


def _build(problem: Problem, config: CMCDConfig, loss_fn: Callable, name: str) -> Method:
    if not isinstance(problem, Problem):
        raise TypeError(f"{name}: expected a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, CMCDConfig):
        raise TypeError(f"{name} needs a CMCDConfig, got {type(config).__name__}")
    target = _working_target(problem, config)
    net = config_network(
        problem,
        config,
        grad_log_target=jax.grad(target.log_prob) if config.grad_log_target_feature else None,
    )
    # the feature reuses the drift's clipped ∇log γ(x) (same clip): no second evaluation per point
    reuse = config.reuse_drift_gradient and net.apply_with_grad is not None
    control = FeatureControl(net.apply_with_grad) if reuse else net.apply
    per_control = 0.0 if reuse else float(net.grad_evals_per_apply)

    def loss(params, key, data):
        return loss_fn(
            key, problem, control, params, config.batch_size, config, grad_evals_per_control=per_control
        )

    def info(state, batch, loss, grad_norm, path) -> CMCDInfo:
        log_w = sg(path.log_w)
        return CMCDInfo(
            loss=loss,
            grad_norm=grad_norm,
            elbo=jnp.mean(log_w),
            log_Z=batch_log_Z(log_w),
            mean_diffusion_scale=jnp.mean(jnp.exp(state.params["annealing"]["log_diffusion"])),
        )

    def sample(key: jax.Array, state: LearnedState, num_samples: int) -> Samples:
        path = simulate_cmcd(
            key, problem, control, state.params, num_samples, config, grad_evals_per_control=per_control
        )
        return Samples(x=path.x, log_w=path.log_w, cost=path.cost)

    def backward(key: jax.Array, state: LearnedState, x_target: jax.Array) -> jax.Array:
        path = simulate_cmcd_backward(
            key, problem, control, state.params, x_target, config, grad_evals_per_control=per_control
        )
        return path.log_w

    def init_params(key: jax.Array):
        return {"control": net.init(key), "annealing": init_annealing_params(problem, config)}

    training = self_drawn(init_params, loss, info)
    return build_configured(training, config, sample, backward)


def build_cmcd_kl(problem: Problem, config: CMCDConfig) -> Method:
    """CMCD trained with the reparametrised negative ELBO (`cmcd_kl_loss`)."""
    return _build(problem, config, cmcd_kl_loss, "cmcd_kl")


def build_cmcd_lv(problem: Problem, config: CMCDConfig) -> Method:
    """CMCD trained with the log-variance loss on detached trajectories (`cmcd_lv_loss`)."""
    return _build(problem, config, cmcd_lv_loss, "cmcd_lv")


_COST = (
    "per step and path: 1 energy eval, K+1 grad evals (drifts; the grad feature reuses them), "
    "K+1 network evals, K SDE steps"
)

SPECS: tuple[MethodSpec, ...] = sibling_specs(
    "thermodynamic",
    CMCDConfig,
    ("brownian", "vp", "flow"),
    _COST,
    {
        "cmcd_kl": (
            build_cmcd_kl,
            "; +K+2 Hessian-vector products (backprop through the drifts)",
            "Controlled Monte Carlo Diffusion: annealed Langevin on the geometric path from a learned "
            "diagonal Gaussian with a learned control, monotone schedule and step sizes; exact Crooks-type "
            "weights; negative ELBO with reparametrised paths (the base supplies only the grid and log γ; on "
            "the flow base the path is p_t e^{β r} with the base's kernels and the model's ODE log p_1: "
            "exact weights [DERIVED]).",
        ),
        "cmcd_lv": (
            build_cmcd_lv,
            "; no backprop through the chain",
            "Controlled Monte Carlo Diffusion trained with the log-variance loss Var(log w) on detached "
            "trajectories (Vargas et al. 2024); the base only supplies the grid and log γ (on the flow base: "
            "the tilted path p_t e^{β r} with the base's kernels and the model's ODE log p_1 [DERIVED]).",
        ),
    },
)
