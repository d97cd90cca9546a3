"""Reward Score Matching: regress the control on a value-guidance estimate, with a trust region.

**RECONSTRUCTION.** Reward Score Matching (Lee, Chang, Kim, Ye; arXiv 2604.17415, 2026;
`docs/methods.md` §12). Only the paper's project page was available: the displayed loss
below is the published one; every estimator, weight shape and default in this module is a
reconstruction from that loss and the tilting framework of methods.md §1, NOT the authors' code
(`jaylee2000/rsm` was not read).

The published loss, in the score parametrisation of a diffusion model,

    L(θ) = E_{t_i, x_{t_i}} [ C1(t_i) ‖s^θ − (s^ref + Ψ_t)‖² + C2(t_i) ‖s^θ − s^{θ†}‖² ],

with `Ψ_t ≈ ∇log h_t(x)`, `h_t(x) = E_base[e^{r(X_1)} | X_t = x]`, is written here in the control
parametrisation (P1) of the codebase, `dX = (b + σu) dt + σ dB`, `u = σ(t)(s^θ − s^ref)` (for the
memoryless flow base `u = 2(v^θ − v)/σ` and `s^θ − s^ref = (v^θ − v)/η_t = 2(v^θ − v)/σ²`, methods.md §2.2;
the optimal control is `u* = σ∇log h_t`, methods.md §1.2). The residuals become `u_θ − σΨ` and
`u_θ − u_{θ†}`; each score-form residual is the control-form one divided by `σ(t)`, a factor absorbed
into `C1, C2` (so `C1 ≡ 1` here is the score-form weight `σ(t)²`, the paper-form Adjoint Matching
weight). With trajectories `x_{0:K}` simulated under the stopped current control `sg[u_θ]`
(on-policy, as Adjoint Matching; `samplers.sde`, `detach="all"`) and `M` loss times `S_i` per
trajectory (`time_subsample`, uniform without replacement, `adjoint_matching.select_times`):

    ℓ_i = Σ_{k∈S_i} (K/M)·½h_k [ C1(t_k) ‖u_θ(x_k, t_k) − σ_k Ψ_k‖² + β C2(t_k) ‖u_θ − u_{θ†}‖²(x_k, t_k) ],

`L = mean_i ℓ_i`, the Riemann sum of `½∫(C1|u − σΨ|² + βC2|u − u†|²) dt` (the `dt` measure of
`adjoint_matching`, so that `C1 ≡ 1` with the full-rollout first-order guidance is the Adjoint
Matching regression with a fresh rollout per loss point). `Ψ` carries no gradient.

**Fixed point.** For any positive `C1` and an estimator with `E[Ψ_k | x_k] = ∇log h_k(x_k)`, the loss is
minimised by `u*_k = σ_k ∇log h_k`; the trust-region term has zero gradient at `θ = θ†` and only damps
the steps in between refreshes. Biased estimators (the one-step look-ahead) shift the fixed point, which
is why the time weight matters (the paper reports: first-order works best with guidance suppressed at
low SNR, zeroth-order with it suppressed at high SNR; used here as the defaults).

**Value-guidance estimators** (`guidance`, `GUIDANCES`), for ONE point `(x, k)` on the grid:

- `first_order` (uses `∇r`):
  * `lookahead_steps = 0`: `∇r` at the one-step denoised prediction `x̂_1(x, t) = E_base[X_1 | X_t = x]`:
    flow base `x + (1 − t) v(x, t)` (the memoryless schedule has the interpolant's joint law of
    `(X_t, X_1)`); Brownian base from 0: `x̂_1 = x` (the base's conditional mean: the "current control"
    is ignored in the look-ahead, a documented choice). `jacobian="vjp"`: `Ψ = ∇_x[r(x̂_1(x))]` (one VJP
    of the look-ahead map; EXACT when `r` is linear and `X_1 | X_t` Gaussian with x-independent
    covariance, e.g. Gaussian data law, since then `log h_t = r(x̂_1) + const`); `jacobian="a_t"`:
    `Ψ = a_t ∇r(x̂_1)` with the Jacobian replaced by `a_t`, the coefficient of `x` in `E_base[X_1|X_t]`
    (Brownian: 1, exact here; flow: 1 — the identity, a Jacobian-free approximation biased at low SNR,
    where the true Jacobian `t·Cov(X_1|X_t)/(1 − t)² → 0`).
  * `lookahead_steps = D ≥ 1` (or None: every remaining grid step): a stochastic rollout from
    `(x, t_k)` to `t = 1` under the stopped current control, on `D` steps at evenly spaced indices of
    the remaining grid `k … K`; `Ψ = ∇_x r(X_end)` through the Euler–Maruyama map with the noise and the
    control increments frozen (`"vjp"`: the lean adjoint of Adjoint Matching along the rollout) or
    `Ψ = ∇r(X_end)` (`"a_t"`, no Jacobian; identical for the Brownian base). For the Brownian base
    `E_{P^{u*}}[∇r(X_1) | X_t] = ∇log h_t` (martingale property), so the full rollout is unbiased at
    the optimum; short rollouts use coarser EM steps.
- `zeroth_order` (reward VALUES only; `grad_evals = 0`): from `x`, `B = num_branches` branches take
  one Gaussian step of the base over `branch_span` grid steps (None: to `t = 1`),

      X'_i = μ(x) + sqrt(V) ε_i,   μ(x) = x + Δ b(x, t_k),   Δ = t_{k'} − t_k,   V = Σ_{j=k}^{k'−1} σ_j² h_j,

  (the exact transition of the Brownian EM chain over `k → k'`; one EM step of the flow chain when
  `branch_span = 1`, an aggregated-Gaussian approximation for larger spans), followed by a look-ahead
  value `F_i`: `e^{r(X_end)}·w_Girsanov` of a rollout from `(X'_i, t_{k'})` to 1 under the stopped
  current control (`D` steps as above; the Girsanov factor `exp(−Σ(½Δ|u|² + sqrt(Δ) u·ε))` makes
  `F_i` an unbiased estimate of the chain's `h_{k'}(X'_i)` for ANY control), or, for `D = 0`,
  `e^{r(x̂_1(X'_i))}` (biased, cheap). The gradient uses the **Gaussian score-function (likelihood-
  ratio) identity** of the branch kernel: for `q_x = N(μ(x), V I)`,

      ∇_x log E_{q_x}[h_{k'}(X')] = J(x)^T E_{q_x}[h_{k'}(X') (X' − μ(x))/V] / E_{q_x}[h_{k'}(X')],
      J = ∂μ/∂x = I + Δ ∇_x b(x, t_k),

  and `E_{q_x}[h_{k'}] = h_k(x)` for the chain's own kernel, so the self-normalised estimate

      Ψ = J^T Σ_i (w_i − 1/B) ε_i / sqrt(V),     w_i = F_i / Σ_j F_j,

  is consistent for `∇log h_k(x)` as `B → ∞` (ratio of two unbiased means; the `−1/B` term is a
  control variate with zero mean, `E[ε] = 0`; bias `O(1/B)`). `jacobian="a_t"` drops `J` (`J = I` for
  the Brownian base). Tested against the closed-form `∇log h` of a Gaussian target.

**Time weights** (`time_weight` = C1, `trust_time_weight` = C2 shape; `TIME_WEIGHTS`), functions of
`τ = (t − t_start)/(1 − t_start) ∈ [0, 1]` (`τ = 0` the noise / low-SNR end, `τ = 1` the data / high-SNR
end): `uniform` 1; `suppress_low_snr` `0.1 + 0.9τ`; `suppress_high_snr` `1 − 0.9τ` (floors keep
every time in the loss). **Trust region**: `θ†` is a frozen copy of the parameters, set at init and
refreshed at the start of every `trust_refresh`-th step; `trust_refresh = 0` disables the term.
**Clipping**: `guidance_clip` clips the norm of `Ψ` (per particle for particle systems) before it
enters the loss (biases the fixed point; off by default).

**Cost** (per step, batch `n`, `K` grid steps, `M` loss times, `B` branches, rollout of `D_k` actual
steps from the loss point): the simulation `n·K` network evals and SDE steps and `n` energy evals
(reward at `x_K` for the path weight); the loss `n·M` network evals (`2n·M` with the trust region);
`first_order`: `n·M` grad evals, `Σ D_k` network evals and SDE steps for rollouts; `zeroth_order`:
`n·M·B` energy evals, NO gradient evals, `B·Σ D_k` network evals, `B·Σ(1 + D_k)` SDE steps.
Evaluations of the pretrained velocity (look-ahead, base-drift VJPs) are not counted (`Cost` has no
field for them; as in `adjoint_matching`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers import sde
from samplers.fields import NON_NEGATIVE, POSITIVE_OR_NONE, field, integer, one_of
from samplers.learned import Batch, LearnedState, Training, sde_sampling
from samplers.method import Cost, Method, MethodSpec
from samplers.methods.adjoint_matching import select_times
from samplers.methods.common import (
    ControlTrainingConfig,
    batch_log_Z,
    build_configured,
    config_network,
)
from samplers.methods.reward_guidance import (
    DENOISERS,
    GUIDANCES,
    JACOBIANS,
    GuidanceOutput,
    _check_choice,
    _denoiser,
    guidance_estimates,
    rollout,
)
from samplers.problem import Problem
from samplers.types import Control, PyTree

__all__ = [
    "SPECS",
    "DENOISERS",
    "GUIDANCES",
    "JACOBIANS",
    "TIME_WEIGHTS",
    "GuidanceOutput",
    "RewardScoreMatchingConfig",
    "RewardScoreMatchingInfo",
    "RewardScoreMatchingZOConfig",
    "build_reward_score_matching",
    "guidance_estimates",
    "rollout",
    "rsm_loss",
]


# ---------------------------------------------------------------------------------------------
# time weights (the look-ahead and Jacobian registries are in `reward_guidance`)
# ---------------------------------------------------------------------------------------------


class TimeWeight(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]  # τ ∈ [0, 1] -> weight
    description: str


TIME_WEIGHTS: dict[str, TimeWeight] = {
    "uniform": TimeWeight(lambda tau: jnp.ones_like(tau), "C(t) = 1"),
    "suppress_low_snr": TimeWeight(
        lambda tau: 0.1 + 0.9 * tau, "C = 0.1 + 0.9τ: small near the noise end t = t_start (low SNR)"
    ),
    "suppress_high_snr": TimeWeight(
        lambda tau: 1.0 - 0.9 * tau, "C = 1 - 0.9τ: small near the data end t = 1 (high SNR)"
    ),
}


# ---------------------------------------------------------------------------------------------
# config, state, info
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RewardScoreMatchingConfig(ControlTrainingConfig):
    """Hyper-parameters of `reward_score_matching` (RECONSTRUCTION; the grid comes from the Problem).

    Attributes (besides the shared `optim` and `network` sub-configs of `ControlTrainingConfig`):
        batch_size: on-policy trajectories per step (`n`).
        guidance: value-guidance estimator, `GUIDANCES` (`"first_order"`, `"zeroth_order"`).
        jacobian: `"vjp"` or `"a_t"` (`JACOBIANS`).
        lookahead_steps: rollout depth `D` after the loss point (first order) or the branch point
            (zeroth order): 0 = one-step denoised prediction, `D ≥ 1` = `D` EM steps on evenly spaced
            indices of the remaining grid, None = every remaining grid step.
        num_branches: `B`, branched rollouts per loss point (zeroth order).
        branch_span: grid steps spanned by the Gaussian branch step (zeroth order); None = to `t = 1`.
        time_subsample: loss times `M` per trajectory (distinct, uniform); None = all `K`.
        time_weight: `C1` shape (`TIME_WEIGHTS`).
        trust_weight: `β`, scale of the trust-region term.
        trust_time_weight: `C2` shape (`TIME_WEIGHTS`).
        trust_refresh: refresh `θ† ← θ` every this many steps; 0 disables the trust region.
        guidance_clip: norm clip of `Ψ` (per particle), or None.
        sde: the integrator of the on-policy simulation (`samplers.sde.SDEConfig`).
    """

    guidance: str = field("first_order", one_of(lambda: GUIDANCES))
    jacobian: str = field("vjp", one_of(JACOBIANS))
    lookahead_steps: int | None = field(0, integer(0, optional=True))
    num_branches: int = field(16, integer(2))
    branch_span: int | None = field(1, integer(1, optional=True))
    time_subsample: int | None = field(None, integer(1, optional=True))
    time_weight: str = field("suppress_low_snr", one_of(TIME_WEIGHTS))
    trust_weight: float = field(1.0, NON_NEGATIVE)
    trust_time_weight: str = field("uniform", one_of(TIME_WEIGHTS))
    trust_refresh: int = field(0, integer(0))
    guidance_clip: float | None = field(None, POSITIVE_OR_NONE)
    sde: sde.SDEConfig = field(sde.SDEConfig(), sde.USER_SDE)

    @property
    def trust_region(self) -> bool:
        return self.trust_refresh > 0 and self.trust_weight > 0


@dataclasses.dataclass(frozen=True)
class RewardScoreMatchingZOConfig(RewardScoreMatchingConfig):
    """`RewardScoreMatchingConfig` with the zeroth-order defaults (`reward_score_matching_zo`):
    reward values only, guidance suppressed at high SNR (the paper's reported finding)."""

    guidance: str = field("zeroth_order", one_of(lambda: GUIDANCES))
    time_weight: str = field("suppress_high_snr", one_of(TIME_WEIGHTS))


class RewardScoreMatchingInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
        loss: the RSM loss.
        grad_norm: global norm of the parameter gradient (before clipping).
        elbo: `mean(log w)` of the simulated batch (`= −J(u)`, the KL-regularised objective, up to sign).
        log_Z: `LSE(log w) − log n` of the batch.
        guidance_norm: `mean |Ψ|` over the loss points (after clipping).
        branch_ess: mean normalised ESS `1/(B Σ w_i²)` of the branch weights (1 for first order).
        trust_gap: `mean |u_θ − u_θ†|²` over the loss points.
    """

    loss: jax.Array
    grad_norm: jax.Array
    elbo: jax.Array
    log_Z: jax.Array
    guidance_norm: jax.Array
    branch_ess: jax.Array
    trust_gap: jax.Array


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def _tau(problem: Problem, t: jax.Array) -> jax.Array:
    t_start = float(problem.ts[0])
    return (t - t_start) / (1.0 - t_start)


def rsm_loss(
    problem: Problem,
    control: Control,
    params: PyTree,
    anchor: PyTree | None,
    x: jax.Array,
    k: jax.Array,
    psi: jax.Array,
    *,
    time_weight: str = "uniform",
    trust_weight: float = 0.0,
    trust_time_weight: str = "uniform",
) -> tuple[jax.Array, jax.Array]:
    """`mean_i Σ_m (K/M)·½h_k [C1|u_θ − σ_kΨ|² + βC2|u_θ − u_θ†|²]` over points `x (n, M, dim)`, `k (n, M)`.

    Only `u_θ` carries a gradient (`x`, `psi` and the anchor output are stopped). `anchor=None` or
    `trust_weight=0` drops the trust-region term.

    Returns:
        `(loss, trust_gap)` with `trust_gap = mean |u_θ − u_θ†|²` (0 without the term).
    """
    _check_choice(time_weight, TIME_WEIGHTS, "time_weight", "rsm_loss")
    _check_choice(trust_time_weight, TIME_WEIGHTS, "trust_time_weight", "rsm_loss")
    base = problem.base
    ts = problem.times
    num_steps = problem.num_steps
    m = k.shape[1]
    t = ts[k]
    h = jnp.diff(ts)[k]
    sigma = base.sigma(t)
    tau = _tau(problem, t)
    apply = jax.vmap(jax.vmap(control, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
    u = base.project(apply(params, sg(x), t))
    residual = u - sigma[..., None] * sg(psi)
    per_point = TIME_WEIGHTS[time_weight].fn(tau) * jnp.sum(residual * residual, axis=-1)
    trust_gap = jnp.zeros(())
    if anchor is not None and trust_weight > 0:
        u_anchor = sg(base.project(apply(anchor, sg(x), t)))
        gap = jnp.sum((u - u_anchor) ** 2, axis=-1)
        per_point = per_point + trust_weight * TIME_WEIGHTS[trust_time_weight].fn(tau) * gap
        trust_gap = jnp.mean(sg(gap))
    weights = (num_steps / m) * 0.5 * h
    return jnp.mean(jnp.sum(weights * per_point, axis=-1)), trust_gap


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def _check_problem(problem: Problem, config: RewardScoreMatchingConfig) -> None:
    if not isinstance(problem, Problem):
        raise TypeError(
            f"reward_score_matching needs a samplers.problem.Problem, got {type(problem).__name__}"
        )
    if not isinstance(config, RewardScoreMatchingConfig):
        raise TypeError(
            f"reward_score_matching needs a RewardScoreMatchingConfig, got {type(config).__name__}"
        )
    _denoiser(problem)  # raises for unsupported base kinds
    if config.time_subsample is not None and config.time_subsample > problem.num_steps:
        raise ValueError(
            f"reward_score_matching: time_subsample={config.time_subsample} exceeds the problem's "
            f"K={problem.num_steps} steps"
        )


def build_reward_score_matching(problem: Problem, config: RewardScoreMatchingConfig) -> Method:
    """Reward Score Matching (RECONSTRUCTION) bound to `problem` and `config`: `Method(init, step, sample,
    backward)`. `step` simulates `n` trajectories under `sg[u_θ]`, refreshes `θ†` when due, estimates `Ψ`
    at `M` times per trajectory and takes one Adam step on `rsm_loss`."""
    _check_problem(problem, config)
    net = config_network(problem, config)
    sde_config = dataclasses.replace(config.sde, detach="all", save_trajectory=True)
    n = config.batch_size
    num_steps = problem.num_steps
    m = num_steps if config.time_subsample is None else config.time_subsample
    trust = config.trust_region

    def draw(keys, state: LearnedState) -> Batch:
        """On-policy trajectories under `sg[u_θ]`, the anchor `θ†` (refreshed when due), `M` loss times
        per trajectory and the guidance `Ψ` there. `state.extra` is the anchor."""
        key_sim, key_times, key_guidance = keys
        path = sde.simulate(key_sim, problem, net.apply, sg(state.params["control"]), n, sde_config)
        if trust:
            refresh = (state.step % config.trust_refresh) == 0
            anchor = jax.tree.map(lambda a, p: jnp.where(refresh, p, a), state.extra, state.params)
        else:
            anchor = state.extra
        idx = select_times(key_times, n, num_steps, config.time_subsample)  # (n, M)
        x_sel = sg(path.trajectory)[idx, jnp.arange(n)[:, None]]  # (n, M, dim)
        guide = guidance_estimates(
            key_guidance, problem, net.apply, state.params["control"], x_sel, idx, config
        )
        data = (path.log_w, x_sel, idx, guide, anchor["control"] if trust else None)
        return Batch(data=data, extra=anchor, cost=(path.cost, guide.cost))

    def loss(params, key, data):
        _, x_sel, idx, guide, anchor = data
        return rsm_loss(
            problem,
            net.apply,
            params["control"],
            anchor,
            x_sel,
            idx,
            guide.psi,
            time_weight=config.time_weight,
            trust_weight=config.trust_weight,
            trust_time_weight=config.trust_time_weight,
        )

    def info(state, batch, loss, grad_norm, trust_gap) -> RewardScoreMatchingInfo:
        log_w, _, _, guide, _ = batch.data
        return RewardScoreMatchingInfo(
            loss=loss,
            grad_norm=grad_norm,
            elbo=jnp.mean(log_w),
            log_Z=batch_log_Z(log_w),
            guidance_norm=jnp.mean(jnp.linalg.norm(guide.psi, axis=-1)),
            branch_ess=jnp.mean(guide.branch_ess),
            trust_gap=trust_gap,
        )

    loss_evals = n * m * (2 if trust else 1)
    training = Training(
        init_params=lambda key: {"control": net.init(key)},
        draw=draw,
        loss=loss,
        info=info,
        split=lambda key: (tuple(jax.random.split(key, 3)), None),
        loss_cost=lambda batch, aux: (Cost.of(network_evals=loss_evals),),
        init_extra=lambda params: params,
    )
    sample, backward = sde_sampling(
        problem, net.apply, dataclasses.replace(sde_config, save_trajectory=False)
    )
    return build_configured(training, config, sample, backward)


_COST_MODEL = (
    "per step: n·K network evals and SDE steps (trajectories under sg[u]), n energy evals (path weight); "
    "first_order: n·M grad evals (∇r at the look-ahead), rollout network evals/SDE steps; zeroth_order: "
    "n·M·B energy evals (reward values of B branches), no grad evals, B·rollout network evals; "
    "n·M network evals for the loss (2n·M with the trust region); pretrained-velocity evals not counted"
)
_DESCRIPTION = (
    "Reward Score Matching (Lee, Chang, Kim, Ye 2026) — RECONSTRUCTION from the published loss (project "
    "page only): C1(t)|u_θ − σΨ|² + C2(t)|u_θ − u_θ†|² on on-policy trajectories (P1 control form, "
    "u = σ(s^θ − s^ref)), Ψ ≈ ∇log h_t a value-guidance estimate; θ† a frozen copy refreshed every "
    "trust_refresh steps."
)


def _spec(name: str, config_cls: type, guidance: str) -> MethodSpec:
    return MethodSpec(
        name=name,
        family="soc-regression",
        config_cls=config_cls,
        build=build_reward_score_matching,
        bases=("brownian", "flow"),
        cost_model=_COST_MODEL,
        description=_DESCRIPTION + " " + guidance,
    )


SPECS: tuple[MethodSpec, ...] = (
    _spec(
        "reward_score_matching",
        RewardScoreMatchingConfig,
        "First-order guidance: ∇r at the one-step denoised prediction (default).",
    ),
    _spec(
        "reward_score_matching_zo",
        RewardScoreMatchingZOConfig,
        "Zeroth-order guidance: reward values of branched rollouts, self-normalised, score-function "
        "identity of the branch noise (default).",
    ),
)
