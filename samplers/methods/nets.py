"""NETS, the Non-Equilibrium Transport Sampler: `nets_pinn` and `nets_action`.

Albergo & Vanden-Eijnden, "NETS: A Non-Equilibrium Transport Sampler", arXiv 2410.02711 (ICML 2025);
`docs/methods.md` §6 and §1.4. **No code exists for NETS: everything here is a
[RECON]struction from the paper's equations, with the signs re-derived [DERIVED]** (methods.md §6,
§11: the loss normalisations, the weighting of the action-matching expectations and the training
schedule are not verified against the paper).

The annealing path `U_t = (1 - t) U_0 - t log γ̃`, the Langevin SDE `dX = (-ε_t∇U_t + b̂) dt + sqrt(2ε_t) dW`
from `ρ_0 = N(0, s0² I)` and its three weight forms are `samplers.methods.nets_path`; the PINN and
action-matching losses are `samplers.methods.nets_losses`. This module binds them to networks and to
the training engine (`samplers.learned`): one step simulates a detached batch under the current drift,
draws the loss times and takes one optimiser step (the losses are off-policy on detached trajectories,
so no backpropagation through the SDE).

**Bases.** On the Brownian and VP bases the path is that linear path of potentials (the base supplies only
the grid and `γ̃`). On the memoryless flow base of fine-tuning it is the tilted path `ρ̃_t = p_t e^{λ_t r}`,
`λ_t = (t - t_0)/(1 - t_0)`, of `samplers.methods.tilted_path` (methods.md §1.4): the dynamics are the
pretrained model's memoryless SDE plus the tilt's Langevin term plus `b̂`, `ε_t = ε·schedule(t)·½σ(t)²`,
the start is the base's `p_{t_0}`, and the weights need only the velocity and `r`. The path's score has a
`1/(1 - t)` factor; it is used only at grid points, with the terminal limit for `t > 1 - TIME_EPS` (the
window of the other flow-base methods). `PATHS` maps a base kind to its path (`path_for`). On the flow base
the `"crooks"` weights take `log p_{t'}(x') - log p_t(x)` by quadrature from the velocity and are exact only
up to O(h), like the Jarzynski forms (`samplers.methods.tilted_path`).

**ε is re-tunable after training**: the state's `extra` holds `ε` (`with_epsilon`, `tune_epsilon`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from samplers.baselines.common import complete_centre_of_mass, working_density
from samplers.estimators import reverse_ess
from samplers.fields import (
    INTEGER,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_OR_NONE,
    WIDTHS,
    field,
    integer,
    one_of,
)
from samplers.learned import Batch, LearnedState, Training
from samplers.method import Cost, Method, MethodSpec, Samples, sibling_specs
from samplers.methods.common import ControlTrainingConfig, build_configured, config_network
from samplers.methods.nets_losses import (
    action_matching_loss,
    pinn_loss,
    pinn_residual,
    time_points,
    trapezoid_weights,
)
from samplers.methods.nets_path import (
    DIVERGENCES,
    EPSILON_SCHEDULES,
    PATHS,
    WEIGHT_FORMS,
    Annealing,
    Drift,
    NETSPath,
    Path,
    annealing_for,
    drift_and_divergence,
    path_for,
    simulate_nets,
    simulate_nets_backward,
)
from samplers.networks import scalar_net
from samplers.problem import Problem
from samplers.types import PyTree

__all__ = [
    "SPECS",
    "DIVERGENCES",
    "EPSILON_SCHEDULES",
    "WEIGHT_FORMS",
    "ActionInfo",
    "Annealing",
    "Langevin",
    "NETSConfig",
    "NETSPath",
    "PINNInfo",
    "action_matching_loss",
    "PATHS",
    "Path",
    "annealing_for",
    "build_nets_action",
    "build_nets_pinn",
    "drift_and_divergence",
    "path_for",
    "pinn_loss",
    "pinn_residual",
    "simulate_nets",
    "simulate_nets_backward",
    "time_points",
    "trapezoid_weights",
    "tune_epsilon",
    "with_epsilon",
]


# ---------------------------------------------------------------------------------------------
# config, state, infos
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NETSConfig(ControlTrainingConfig):
    """Hyper-parameters of `nets_pinn` and `nets_action`.

    Attributes (besides the shared `optim` and `network` sub-configs of `ControlTrainingConfig`; the
    optimiser trains all networks):
        batch_size: detached trajectories simulated per training step.
        network: the drift network `b̂` (PINN: `network.kind` `"auto"`, `"mlp"` or `"egnn"`) and the
            potential `φ̂` (action matching: always a `scalar_net` MLP of widths `network.hidden`, not
            permutation invariant). No grad-log-target input feature: it is stop-gradient inside the
            network, so a forward-mode divergence would miss its Jacobian and the Jarzynski weights
            would be wrong.
        free_energy_hidden: hidden widths of `F̂(t)` (PINN).
        s0: standard deviation of `ρ_0 = N(0, s0² I)` (and the centre-of-mass scale of particle systems);
            in the benchmark its default follows the problem's `sigma`. Unused on the flow base, whose
            path starts at the base's `p_{t_0}`.
        epsilon: the Langevin rate `ε` (re-tunable after training: `with_epsilon`); on the flow base a
            multiplier of the base's `½σ(t)²` (`ε = 1`: the pretrained model's own noise).
        epsilon_schedule: `ε_t = ε · schedule(t)`, one of `EPSILON_SCHEDULES`.
        weights: `"jarzynski"` (the paper's left-point `A`, O(h) bias), `"jarzynski_trapezoid"` (the
            same `A` by the trapezoid rule) or `"crooks"` (exact, has `backward`), see `WEIGHT_FORMS`.
        exact_div_max_dim: exact divergence for `dim ≤` this, Hutchinson above.
        time_subsample: loss time points per trajectory (PINN) or per batch (AM), drawn `∝` trapezoid
            weights; None uses every grid point.
        max_grad_norm_target: norm clip of `∇U_1 = -∇log γ̃` in the Langevin drift, or None (see
            `Annealing`: keeps `"crooks"` exact, biases `"jarzynski"`).
    """

    free_energy_hidden: tuple[int, ...] = field((32, 32), WIDTHS)
    s0: float = field(1.0, POSITIVE, follows="sigma")
    epsilon: float = field(1.0, NON_NEGATIVE)
    epsilon_schedule: str = field("constant", one_of(EPSILON_SCHEDULES))
    weights: str = field("jarzynski", one_of(WEIGHT_FORMS))
    exact_div_max_dim: int = field(16, INTEGER)
    time_subsample: int | None = field(8, integer(1, optional=True))
    max_grad_norm_target: float | None = field(None, POSITIVE_OR_NONE)

    def check(self) -> None:
        if self.weights == "crooks" and not self.epsilon > 0:
            who = type(self).__name__
            raise ValueError(f"{who}: weights='crooks' needs epsilon > 0 (the kernels are Gaussian)")


class Langevin(NamedTuple):
    """The `extra` state of the NETS methods.

    Attributes:
        epsilon: `()` float32, the Langevin rate used by `sample`, `backward` and training (`with_epsilon`).
    """

    epsilon: jax.Array


class PINNInfo(NamedTuple):
    """Per-step diagnostics of `nets_pinn`.

    Attributes:
        loss: the PINN loss of the batch.
        grad_norm: global norm of the parameter gradient (before clipping).
        log_Z_free_energy: `F̂(t_0) - F̂(1)`, the learned estimate of `log Z - log Z_{t_0} = log Z`.
    """

    loss: jax.Array
    grad_norm: jax.Array
    log_Z_free_energy: jax.Array


class ActionInfo(NamedTuple):
    """Per-step diagnostics of `nets_action`.

    Attributes:
        loss: the action-matching loss of the batch (not bounded below by 0; its minimum is `-const`).
        grad_norm: global norm of the parameter gradient (before clipping).
        log_Z: `LSE(log w) - log n` of the training batch's terminal weights.
        ess: normalised reverse ESS of the training batch.
    """

    loss: jax.Array
    grad_norm: jax.Array
    log_Z: jax.Array
    ess: jax.Array


def with_epsilon(state: LearnedState, epsilon: float | jax.Array) -> LearnedState:
    """The same trained state with the Langevin rate `ε` replaced (no retraining, no recompilation).

    `method.sample(key, with_epsilon(state, 0.5), n)` draws NETS samples with `ε = 0.5`; the weights
    stay valid for any `ε ≥ 0` (exactly with `"crooks"`, up to the O(h) EM bias with `"jarzynski"`).
    """
    if not isinstance(state, LearnedState) or not isinstance(state.extra, Langevin):
        raise TypeError(
            f"with_epsilon takes the LearnedState of nets_pinn / nets_action, got {type(state).__name__}"
        )
    epsilon = jnp.asarray(epsilon, jnp.float32)
    if epsilon.shape != ():
        raise ValueError(f"epsilon must be a scalar, got shape {epsilon.shape}")
    return state._replace(extra=Langevin(epsilon))


def tune_epsilon(
    key: jax.Array, method: Method, state: LearnedState, candidates, num_samples: int = 1024
) -> tuple[LearnedState, jax.Array]:
    """Pick the `ε` of largest reverse ESS among `candidates` (NETS' post-training re-tuning).

    Each candidate samples `num_samples` paths with the same key. The chosen state's own estimates
    should be recomputed with a fresh key (selecting on the same samples biases them).

    Returns:
        `(state with the best ε, ESS per candidate)`.
    """
    candidates = jnp.asarray(candidates, jnp.float32)
    if candidates.ndim != 1 or candidates.shape[0] < 1:
        raise ValueError(f"candidates must be a non-empty 1-D list of epsilons, got shape {candidates.shape}")

    def ess_of(epsilon):
        draws = method.sample(key, with_epsilon(state, epsilon), num_samples)
        return reverse_ess(draws.log_w).value

    ess = jax.lax.map(ess_of, candidates)
    return with_epsilon(state, candidates[jnp.argmax(ess)]), ess


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


class _Setup(NamedTuple):
    path: Path
    ts: jax.Array
    epsilon_profile: jax.Array  # (K,) schedule(t_k), multiplied by state.extra.epsilon
    divergence: str
    project: Callable[[jax.Array], jax.Array]
    complete: Callable[[jax.Array, jax.Array], jax.Array]


def _setup(problem: Problem, config: NETSConfig, name: str) -> _Setup:
    if not isinstance(problem, Problem):
        raise TypeError(f"{name}: expected a samplers.problem.Problem, got {type(problem).__name__}")
    if not isinstance(config, NETSConfig):
        raise TypeError(f"{name} needs a NETSConfig, got {type(config).__name__}")
    path = path_for(problem, config.s0, config.max_grad_norm_target)
    if abs(float(problem.ts[0]) - path.t_start) > 1e-12:
        raise ValueError(
            f"{name} anneals t from {path.t_start!r} to 1; the problem's grid starts at "
            f"{float(problem.ts[0])!r}"
        )
    ts = problem.times
    profile = EPSILON_SCHEDULES[config.epsilon_schedule](ts[:-1]) * path.noise_profile(ts[:-1])
    divergence = "exact" if problem.dim <= config.exact_div_max_dim else "hutchinson"
    target = problem.target
    if problem.particles is not None and target is not None:
        _, project = working_density(target, config.s0)
        complete = lambda key, x: complete_centre_of_mass(key, x, target, config.s0)
    else:
        project = lambda x: x
        complete = lambda key, x: x
    return _Setup(path, ts, profile, divergence, project, complete)


def _simulate(setup: _Setup, drift_of: Callable[[PyTree], Drift], state: LearnedState, key, num, **options):
    """`simulate_nets` under the state's stopped drift and Langevin rate `ε_t = ε·schedule(t)`."""
    epsilons = state.extra.epsilon * setup.epsilon_profile
    return simulate_nets(key, setup.path, drift_of(sg(state.params)), setup.ts, epsilons, num, **options)


def _sampler(setup: _Setup, config: NETSConfig, drift_of: Callable[[PyTree], Drift]):
    """`(sample, backward or None)` for a drift built from the state's parameters."""

    def sample(key: jax.Array, state: LearnedState, num_samples: int) -> Samples:
        path = _simulate(
            setup, drift_of, state, key, num_samples, weights=config.weights, divergence=setup.divergence
        )
        return Samples(x=setup.project(path.x), log_w=path.log_w, cost=path.cost)

    def backward(key: jax.Array, state: LearnedState, x_target: jax.Array) -> jax.Array:
        key_com, key_path = jax.random.split(key)
        x_end = setup.complete(key_com, jnp.asarray(x_target, jnp.float32))
        path = simulate_nets_backward(
            key_path,
            setup.path,
            drift_of(sg(state.params)),
            setup.ts,
            state.extra.epsilon * setup.epsilon_profile,
            x_end,
        )
        return path.log_w

    return sample, (backward if config.weights == "crooks" else None)


def _build(
    setup: _Setup, config: NETSConfig, drift_of: Callable[[PyTree], Drift], training: Training
) -> Method:
    """The engine with the NETS sampler, the Langevin rate as extra state and Adam on all networks."""
    sample, backward = _sampler(setup, config, drift_of)
    langevin = lambda params: Langevin(jnp.asarray(config.epsilon, jnp.float32))
    training = training._replace(init_extra=langevin)
    return build_configured(training, config, sample, backward)


def build_nets_pinn(problem: Problem, config: NETSConfig) -> Method:
    """`nets_pinn`: the PINN loss (`pinn_loss`) with a learned drift `b̂` and free energy `F̂(t)`."""
    setup = _setup(problem, config, "nets_pinn")
    net = config_network(problem, config)
    free = scalar_net(hidden=config.free_energy_hidden, input="t")
    drift_of = lambda params: lambda x, t: net.apply(params["drift"], x, t)
    n = config.batch_size
    per_point = problem.dim if setup.divergence == "exact" else 1

    def init_params(key: jax.Array):
        key_drift, key_free = jax.random.split(key)
        return {"drift": net.init(key_drift), "free_energy": free.init(key_free)}

    def draw(keys, state: LearnedState) -> Batch:
        """A detached batch without weights; `time_subsample` grid points per trajectory."""
        key_sim, key_time = keys
        path = _simulate(setup, drift_of, state, key_sim, n, weights="none", save_path=True)
        index, weight = time_points(key_time, setup.ts, (n,), config.time_subsample)
        rows = jnp.arange(n)[:, None]
        x, point = (
            jax.tree.map(lambda leaf: sg(leaf)[index, rows], part) for part in (path.trajectory, path.point)
        )
        cost = path.cost + Cost.of(network_evals=index.size * (per_point + 1))
        return Batch(data=(x, setup.ts[index], point, weight), extra=state.extra, cost=(cost,))

    def loss(params, key, data):
        x, t, point, weight = data
        free_energy = lambda s: free.apply(params["free_energy"], s)
        path, divergence = setup.path, setup.divergence
        return pinn_loss(drift_of(params), free_energy, path, x, t, point, weight, key, divergence), ()

    def info(state, batch, loss, grad_norm, aux) -> PINNInfo:
        free_energy = lambda s: free.apply(state.params["free_energy"], s)
        log_Z_free = free_energy(setup.ts[0]) - free_energy(jnp.float32(1.0))
        return PINNInfo(loss=loss, grad_norm=grad_norm, log_Z_free_energy=log_Z_free)

    def split(key):
        key_sim, key_time, key_loss = jax.random.split(key, 3)
        return (key_sim, key_time), key_loss

    training = Training(init_params=init_params, draw=draw, loss=loss, info=info, split=split)
    return _build(setup, config, drift_of, training)


def build_nets_action(problem: Problem, config: NETSConfig) -> Method:
    """`nets_action`: the action-matching loss (`action_matching_loss`) with `b̂ = ∇_x φ̂`."""
    setup = _setup(problem, config, "nets_action")
    potential = scalar_net(
        hidden=config.network.hidden,
        input="xt",
        dim=problem.dim,
        time_embedding_dim=config.network.time_embedding_dim,
    )
    potential_of = lambda params: lambda x, t: potential.apply(params["potential"], x, t)
    drift_of = lambda params: jax.grad(potential_of(params))
    n = config.batch_size

    def draw(keys, state: LearnedState) -> Batch:
        """A detached weighted batch; `time_subsample` grid times shared by the batch."""
        key_sim, key_time = keys
        options = dict(weights=config.weights, divergence=setup.divergence, save_path=True)
        path = _simulate(setup, drift_of, state, key_sim, n, **options)
        index, weight = time_points(key_time, setup.ts, (), config.time_subsample)
        x, point, log_w = (
            jax.tree.map(lambda leaf: sg(leaf)[index], part)
            for part in (path.trajectory, path.point, path.running_log_w)
        )
        cost = path.cost + Cost.of(network_evals=index.size * n)
        data = (x, setup.ts[index], point, log_w, weight, sg(path.log_w))
        return Batch(data=data, extra=state.extra, cost=(cost,))

    def loss(params, key, data):
        x, t, point, log_w, weight, _ = data
        return action_matching_loss(potential_of(params), setup.path, x, t, point, log_w, weight), ()

    def info(state, batch, loss, grad_norm, aux) -> ActionInfo:
        terminal = batch.data[-1]
        return ActionInfo(
            loss=loss,
            grad_norm=grad_norm,
            log_Z=jax.nn.logsumexp(terminal) - math.log(n),
            ess=reverse_ess(terminal).value,
        )

    training = Training(
        init_params=lambda key: {"potential": potential.init(key)},
        draw=draw,
        loss=loss,
        info=info,
        split=lambda key: (tuple(jax.random.split(key)), None),
    )
    return _build(setup, config, drift_of, training)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_COST = (
    "per path of K steps: K+1 energy and gradient evals of log γ̃, K SDE steps, K+1 drift evals "
    "(×dim with the exact divergence of the Jarzynski weights; no divergence with 'crooks'); "
    "no backprop through the SDE"
)

SPECS: tuple[MethodSpec, ...] = sibling_specs(
    "thermodynamic",
    NETSConfig,
    ("brownian", "vp", "flow"),
    _COST,
    {
        "nets_pinn": (
            build_nets_pinn,
            "; loss: time_subsample points per path, each dim (exact) or 1 drift evals + 1 F̂ eval",
            "NETS [RECON from arXiv 2410.02711, no code]: annealed Langevin dX = (-ε∇U_t + b̂)dt + sqrt(2ε)dW "
            "along U_t = (1-t)U_0 - t log γ̃ with Jarzynski weights dA = (∇·b̂ - ∇U·b̂ - ∂_tU)dt; b̂ and F̂(t) "
            "trained by the PINN loss E|∂_tF̂ + ∇·b̂ - ∇U·b̂ - ∂_tU|² on detached samples. The Brownian / VP "
            "base supplies only the grid; on the flow base the path is p_t e^{λ_t r} [DERIVED]: the "
            "pretrained memoryless SDE + ½σ²λ_t∇r + b̂, dA = (λ̇r + λ∇r·v + ∇·b̂ + (s_t + λ∇r)·b̂)dt.",
        ),
        "nets_action": (
            build_nets_action,
            "; loss: time_subsample times × batch potential evals",
            "NETS [RECON from arXiv 2410.02711, no code] with a gradient-field drift b̂ = ∇φ̂ trained by "
            "action matching ∫ E_ρt[½|∇φ̂|²] + Cov_ρt(φ̂, ∂_tU) dt, ρ_t-expectations by self-normalised "
            "running Jarzynski weights of detached trajectories; on the flow base ∇φ̂ corrects the pretrained "
            "velocity along p_t e^{λ_t r} [DERIVED].",
        ),
    },
)
