"""The Method contract, checked for every registered method on every base it supports.

One case per (method, base): a tiny problem (a 2-D correlated Gaussian target for the Brownian and
VP bases (Brownian from a Dirac or from a Gaussian source), a linear-reward fine-tuning task on a
Gaussian flow for the flow base; `K` = 4 steps) and
the spec's default config with only its sizes shrunk (`TINY`, applied to whichever fields a config
has, at any depth of a composed config). Baselines declared for `"any"` base use only the target,
so they run once, on the Brownian problem; a few option sets with their own cost (`VARIANTS`) add
one case each. Each case compiles ONE program (`_program`, with `FAST_COMPILE`) that runs
`init`, `NUM_STEPS` training steps in a `lax.scan`, `sample` and, where it exists, `backward`; it is
run twice with the same key. Checked:

- one trace in total (the second call reuses the compiled program);
- the same key gives bit-identical states, infos, samples and backward log-weights;
- the state keeps its structure, shapes and dtypes across steps (a `lax.scan` carry);
- every training info, sample and log-weight is finite on the tiny problem (MCMC: `log_w = 0`);
- the `Cost` counters grow by what the method's cost model states (`EXPECTED_COST`, read off each
  builder; for learned samplers e.g. sampling `n` points costs `n·K` network evaluations and SDE
  steps), and by relations that hold whatever the data-dependent counts are for NUTS and SMC;
- `backward` maps `(n, dim)` target points to `(n,)` log-weights where it exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from samplers.base_processes import (
    BrownianBase,
    LinearSchedule,
    MemorylessFlowBase,
    SourceBrownianBase,
    VPBase,
    gaussian_log_prob,
)
from samplers.problem import finetuning_problem, sampling_problem

DIM = 2
K = 4  # SDE steps of every problem
NUM_STEPS = 3  # training steps per case
NUM_SAMPLES = 8  # points drawn by `sample` and started by `backward`
# XLA's CPU backend without its expensive LLVM passes, with its classic (non-MLIR) fusion emitters
# and with one LLVM module per program (no parallel-codegen split): about a fifth of the default
# compile time of these tiny programs, which is nearly all of this file's time (tests/conftest.py
# sets the same flags for every test). Only float rounding differs from the default.
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}

# Sizes only: every other field keeps the spec's default. A key applies wherever a config (or one of
# its sub-configs) has a field of that name.
TINY = {
    # learned samplers
    "batch_size": 4,
    "hidden": (8,),
    "time_embedding_dim": 4,
    "free_energy_hidden": (4,),
    "time_subsample": 2,
    "integrator": "scan",
    "buffer_size": 16,
    "resample_size": 8,
    "refresh_every": 2,
    "num_branches": 2,
    # MCMC / SMC / AIS
    "num_chains": 2,
    "num_warmup": 4,
    "max_num_doublings": 3,
    "max_tree_depth": 3,
    "num_levels": 4,
    "num_mcmc_steps": 1,
    "num_integration_steps": 2,
}


# ---------------------------------------------------------------------------------------------
# configs and problems
# ---------------------------------------------------------------------------------------------


def _shrunk(config: Any, overrides: dict | None = None) -> Any:
    """`config` with every field named in `TINY` (or in `overrides`, which win) replaced, recursively
    through sub-configs."""
    values = {**TINY, **(overrides or {})}
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in values:
            changes[field.name] = values[field.name]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[field.name] = _shrunk(value, overrides)
    return dataclasses.replace(config, **changes)


def _field(config: Any, name: str, default: Any = None) -> Any:
    """The value of the field `name` at any depth of a (composed) config, else `default`."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == name:
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found = _field(value, name, _MISSING)
            if found is not _MISSING:
                return found
    return default


_MISSING = object()


FLOW_DATA_MEAN, FLOW_DATA_VAR = 0.5, 0.8


def _flow_velocity(x, t):
    """Exact rectified-flow velocity of the data law `N(0.5, 0.8 I)` (`X̄_t = (1 - t) Z + t X`)."""
    mean, var = FLOW_DATA_MEAN, FLOW_DATA_VAR
    return mean + (t * var - (1 - t)) / ((1 - t) ** 2 + t**2 * var) * (x - t * mean)


def _problem(base_kind: str):
    if base_kind == "flow":
        # the data law's density: the bridge regressions need its score at t = 1
        data_log_prob = lambda x: gaussian_log_prob(x, FLOW_DATA_MEAN, FLOW_DATA_VAR, DIM)
        base = MemorylessFlowBase(DIM, velocity=_flow_velocity, t0=0.05, terminal_log_prob_fn=data_log_prob)
        reward = lambda x: jnp.sum(jnp.array([1.0, -0.5]) * x)
        return finetuning_problem(base, reward, 1.0, num_steps=K, grid="quadratic")
    bases = {
        "vp": lambda: VPBase(DIM, sigma0=1.5),
        "brownian": lambda: BrownianBase(DIM, LinearSchedule(1.5)),
        "brownian_source": lambda: SourceBrownianBase(DIM, LinearSchedule(1.5), source_var=0.5),
    }
    base = bases[base_kind]()
    return sampling_problem(targets.get("gaussian_correlated"), base, num_steps=K)


# Option sets whose cost differs from the defaults' (one extra case each, on one base):
# (method, base, overrides on top of TINY).
VARIANTS = {
    "options": (
        "adjoint_matching",
        "vp",
        dict(
            passes_per_batch=2,
            grad_log_target_feature=True,
            loss_clip_quantile=0.5,
            max_grad_norm_target=1.0,
            adjoint_evaluation="right",
            time_weighting="uniform",
        ),
    ),
    "hutchinson": ("nets_pinn", "brownian", dict(exact_div_max_dim=1)),
    "stages": ("asbs", "brownian_source", dict(adjoint_epochs=1, corrector_epochs=1)),
    "trust_region": ("reward_score_matching", "brownian", dict(trust_refresh=2, trust_weight=0.5)),
    "lookahead": (
        "reward_score_matching_zo",
        "flow",
        dict(time_subsample=None, lookahead_steps=2, branch_span=2),
    ),
}


def _cases() -> list:
    cases = []
    for name in samplers.names():
        spec = samplers.get(name)
        bases = ("brownian",) if "any" in spec.bases else spec.bases
        cases += [pytest.param(name, base, {}, id=f"{name}-{base}") for base in bases]
    cases += [pytest.param(*case, id=f"{case[0]}-{case[1]}-{v}") for v, case in VARIANTS.items()]
    return cases


# ---------------------------------------------------------------------------------------------
# what each method's cost model states
# ---------------------------------------------------------------------------------------------


class Case(NamedTuple):
    """What an expected cost depends on."""

    name: str
    config: Any
    step: int  # 0-based index of the training step whose cost increment is asked for

    def get(self, field: str, default: Any = None) -> Any:
        return _field(self.config, field, default)

    @property
    def n(self) -> int:
        return self.get("batch_size")

    @property
    def m(self) -> int:
        """Loss times per path (`time_subsample`, all `K` steps when None)."""
        return self.get("time_subsample") or K

    @property
    def feature(self) -> int:
        """`∇log γ` evaluations per control call (the grad-log-target network feature)."""
        return int(bool(self.get("grad_log_target_feature", False)))


def _cost(energy=0, grad=0, network=0, sde=0) -> tuple[float, float, float, float]:
    return (float(energy), float(grad), float(network), float(sde))


def _simulation(c: Case, n: int) -> tuple:
    """`samplers.sde.simulate` of `n` paths: the tilt at `x_K`, `K` control calls and steps per path."""
    return _cost(n, n * K * c.feature, n * K, n * K)


def _adjoint_matching(c: Case):
    loss_points = c.get("passes_per_batch") * c.n * c.m
    n = c.n
    return _cost(n, n + c.feature * (n * K + loss_points), n * K + loss_points, n * K)


def _path_kl(c: Case):
    reparametrised = c.name in ("pis", "dds")  # backprop through log γ(x_K): one gradient per path
    return _cost(c.n, c.n * K * c.feature + (c.n if reparametrised else 0), c.n * K, c.n * K)


def _bridge_regression(c: Case):
    batch, new = c.n, c.get("resample_size")
    if c.step % c.get("refresh_every"):
        return _cost(network=batch)
    gradients = 0 if c.name == "conditional_score_matching" else new
    return _cost(new, gradients, new * K + batch, new * K)


def _asbs(c: Case):
    """A refresh simulates `resample_size` pairs; an adjoint-matching one also evaluates `∇log γ` and the
    corrector at their end points."""
    batch, new, every = c.n, c.get("resample_size"), c.get("refresh_every")
    if c.step % every:
        return _cost(network=batch)
    epoch, adjoint_epochs = c.step // every, c.get("adjoint_epochs")
    adjoint = epoch % (adjoint_epochs + c.get("corrector_epochs")) < adjoint_epochs
    return _cost(new, new if adjoint else 0, new * K + (new if adjoint else 0) + batch, new * K)


def _cmcd(c: Case):
    points = c.n * (K + 1)  # one drift (∇log γ, control) per point; the grad feature reuses ∇log γ
    backprop = points + c.n if c.name == "cmcd_kl" else 0  # Hessian-vector products, ∇log γ(x_K)
    return _cost(c.n, points + backprop, points, c.n * K)


def _cmcd_sample(c: Case):
    points = NUM_SAMPLES * (K + 1)
    return _cost(NUM_SAMPLES, points, points, NUM_SAMPLES * K)


def _nets_divergence_evals(c: Case) -> int:
    """Drift evaluations per divergence: `dim` JVPs (exact) or one (Hutchinson)."""
    return DIM if DIM <= c.get("exact_div_max_dim") else 1


def _nets(c: Case):
    points = c.n * (K + 1)
    if c.name == "nets_pinn":  # path without weights, then per loss point: divergence + F̂
        network = points + c.n * c.m * (_nets_divergence_evals(c) + 1)
    else:  # Jarzynski path (divergence at every point), then one potential per loss point
        network = points * _nets_divergence_evals(c) + c.m * c.n
    return _cost(points, points, network, c.n * K)


def _nets_sample(c: Case):
    points = NUM_SAMPLES * (K + 1)
    return _cost(points, points, points * _nets_divergence_evals(c), NUM_SAMPLES * K)


def _reward_score_matching(c: Case):
    n, m = c.n, c.m
    trust = c.get("trust_refresh") > 0 and c.get("trust_weight") > 0
    loss = n * m * (2 if trust else 1)  # θ and the trust-region anchor θ† at every loss point
    depth = c.get("lookahead_steps")
    if c.get("guidance") == "first_order":  # ∇r at the denoised prediction of each loss point
        assert depth == 0, "first-order look-ahead rollouts are not in this cost model"
        return _cost(n, n * m, n * K + loss, n * K)
    # Zeroth order: per loss point at step k, B branches of one noise step to k' = min(k + span, K),
    # each followed by min(depth, K - k') rollout steps and one reward value.
    branches = n * m * c.get("num_branches")
    if depth == 0:
        rollout = 0
    else:
        assert c.get("time_subsample") is None, "with look-ahead, the cost is exact only when M = K"
        span = c.get("branch_span")
        rollout = n * c.get("num_branches") * sum(min(depth, K - min(k + span, K)) for k in range(K))
    return _cost(n + branches, 0, n * K + loss + rollout, n * K + branches + rollout)


def _mcmc_sample_iterations(c: Case) -> int:
    num_chains = c.get("num_chains")
    return num_chains * math.ceil(NUM_SAMPLES / num_chains) * c.get("thinning")


class Expected(NamedTuple):
    """`step(case)`: the cost increment of one training step; `sample(case)`: the cost of drawing
    `NUM_SAMPLES` points; `init(case)`: the cost of `init`. `None` means "checked by `relation`"."""

    step: Callable[[Case], tuple] | None
    sample: Callable[[Case], tuple] | None
    init: Callable[[Case], tuple] = lambda c: _cost()
    relation: Callable[[Case, np.ndarray, np.ndarray], None] | None = None


def _leapfrog_relation(c: Case, steps: np.ndarray, sample: np.ndarray) -> None:
    """NUTS: `log γ` and its gradient come together, at least one leapfrog step per iteration."""
    for cost in (*steps, sample):
        assert cost[0] == cost[1] and cost[2] == cost[3] == 0, cost
    assert np.all(steps[:, 1] >= c.get("num_chains") * c.get("num_warmup")), steps
    assert sample[1] >= _mcmc_sample_iterations(c), sample


def _smc_relation(c: Case, steps: np.ndarray, sample: np.ndarray) -> None:
    """Per particle and stage: 3 + m·L energies and 1 + m·L gradients (m MCMC steps of L leapfrogs)."""
    assert np.all(steps == 0), steps
    mcmc = c.get("num_mcmc_steps") * (c.get("num_integration_steps") if c.get("kernel") == "hmc" else 1)
    stages = sample[1] / (NUM_SAMPLES * (1 + mcmc))
    assert stages >= 1 and stages == int(stages), sample
    np.testing.assert_array_equal(sample, _cost(NUM_SAMPLES * stages * (3 + mcmc), sample[1]))


_SDE = Expected(None, lambda c: _simulation(c, NUM_SAMPLES))
_MCMC_INIT = lambda c: _cost(c.get("num_chains"), c.get("num_chains"))

EXPECTED_COST: dict[str, Expected] = {
    "adjoint_matching": _SDE._replace(step=_adjoint_matching),
    "adjoint_sampling": _SDE._replace(step=_bridge_regression),
    "asbs": _SDE._replace(step=_asbs),
    "conditional_score_matching": _SDE._replace(step=_bridge_regression),
    "novel_score_matching": _SDE._replace(step=_bridge_regression),
    "target_score_matching": _SDE._replace(step=_bridge_regression),
    "pis": _SDE._replace(step=_path_kl),
    "dds": _SDE._replace(step=_path_kl),
    "log_variance": _SDE._replace(step=_path_kl),
    "trajectory_balance": _SDE._replace(step=_path_kl),
    "reward_score_matching": _SDE._replace(step=_reward_score_matching),
    "reward_score_matching_zo": _SDE._replace(step=_reward_score_matching),
    "cmcd_kl": Expected(_cmcd, _cmcd_sample),
    "cmcd_lv": Expected(_cmcd, _cmcd_sample),
    "nets_pinn": Expected(_nets, _nets_sample),
    "nets_action": Expected(_nets, _nets_sample),
    "mala": Expected(
        lambda c: _cost(c.get("num_chains") * c.get("num_warmup"), c.get("num_chains") * c.get("num_warmup")),
        lambda c: _cost(_mcmc_sample_iterations(c), _mcmc_sample_iterations(c)),
        init=_MCMC_INIT,
    ),
    "nuts": Expected(None, None, init=_MCMC_INIT, relation=_leapfrog_relation),
    "numpyro_nuts": Expected(None, None, init=_MCMC_INIT, relation=_leapfrog_relation),
    "smc": Expected(lambda c: _cost(), None, relation=_smc_relation),
    "ais": Expected(
        lambda c: _cost(),
        lambda c: _cost(*(2 * [NUM_SAMPLES * (1 + c.get("num_levels") * c.get("num_mcmc_steps"))])),
    ),
}


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------


def _program(method: samplers.Method, x_target: jax.Array):
    """One jitted program: init, `NUM_STEPS` steps (`lax.scan`), sample, backward; counts its traces."""
    traces = []

    @jax.jit(compiler_options=FAST_COMPILE)
    def run(key):
        traces.append(1)
        key_init, key_steps, key_sample, key_backward = jax.random.split(key, 4)
        state_0 = method.init(key_init)

        def body(state, key_step):
            state, info = method.step(key_step, state)
            return state, (state.cost, info)

        state, (costs, infos) = jax.lax.scan(body, state_0, jax.random.split(key_steps, NUM_STEPS))
        samples = method.sample(key_sample, state, NUM_SAMPLES)
        log_w_backward = None if method.backward is None else method.backward(key_backward, state, x_target)
        return state_0, state, costs, infos, samples, log_w_backward

    return run, traces


def _as_array(cost) -> np.ndarray:
    return np.stack([np.asarray(v, np.float64) for v in cost], -1)


@pytest.mark.parametrize(("name", "base_kind", "overrides"), _cases())
def test_method_contract(name, base_kind, overrides):
    spec = samplers.get(name)
    assert spec.supports(base_kind)
    config = _shrunk(spec.make_config(), overrides)
    problem = _problem(base_kind)
    method = spec.build(problem, config)
    if problem.target is not None and problem.target.sample_fn is not None:
        x_target = problem.target.sample(jax.random.key(1), NUM_SAMPLES)
    else:
        x_target = jax.random.normal(jax.random.key(1), (NUM_SAMPLES, DIM))

    run, traces = _program(method, x_target)
    first = run(jax.random.key(0))
    second = run(jax.random.key(0))
    assert len(traces) == 1, "the program was traced more than once"
    jax.tree.map(np.testing.assert_array_equal, first, second)  # bit-identical under the same key

    state_0, state, costs, infos, samples, log_w_backward = first
    describe = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)
    assert jax.tree.structure(state_0) == jax.tree.structure(state)
    assert describe(state_0) == describe(state)

    for leaf in jax.tree.leaves(infos):
        assert np.all(np.isfinite(np.asarray(leaf))), infos
    assert samples.x.shape == (NUM_SAMPLES, DIM) and samples.log_w.shape == (NUM_SAMPLES,)
    assert np.all(np.isfinite(samples.x)) and np.all(np.isfinite(samples.log_w))
    if not spec.weighted:
        np.testing.assert_array_equal(samples.log_w, 0.0)
    if log_w_backward is not None:
        assert log_w_backward.shape == (NUM_SAMPLES,) and np.all(np.isfinite(log_w_backward))

    expected = EXPECTED_COST[name]
    init_cost = _as_array(state_0.cost)
    cumulative = _as_array(costs)
    steps = np.diff(np.concatenate([init_cost[None], cumulative]), axis=0)
    sample_cost = _as_array(samples.cost)
    np.testing.assert_array_equal(init_cost, expected.init(Case(name, config, 0)), err_msg="init cost")
    if expected.step is not None:
        for s in range(NUM_STEPS):
            np.testing.assert_array_equal(
                steps[s], expected.step(Case(name, config, s)), err_msg=f"cost of step {s}"
            )
    if expected.sample is not None:
        expected_sample = expected.sample(Case(name, config, 0))
        np.testing.assert_array_equal(sample_cost, expected_sample, err_msg="sample cost")
    if expected.relation is not None:
        expected.relation(Case(name, config, 0), steps, sample_cost)


def test_every_method_has_a_cost_model():
    assert sorted(EXPECTED_COST) == samplers.names()
