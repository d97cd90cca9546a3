"""Equal evaluation budgets: suite parsing, baselines scaled to a budget, learned samplers stopped at
it, and the accuracy-versus-cost figure."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest

import samplers
import targets
from benchmarks.grid.cell import train_cell
from benchmarks.grid.records import atomic_write_json
from benchmarks.grid.suites import Budget, load_suite
from benchmarks.reports.leaderboard import build_leaderboard
from samplers.baselines import budget as budget_rules
from samplers.method import Cost, Method, MethodSpec, Samples
from samplers.problem import sampling_problem

# ---------------------------------------------------------------------------------------------
# a toy learned method with a known cost: every step costs STEP_COST energy evaluations, every
# sample one energy evaluation (importance sampling from N(0, 2² I), exact weights)
# ---------------------------------------------------------------------------------------------

STEP_COST = 100.0


@dataclasses.dataclass(frozen=True)
class _Config:
    scale: float = 2.0


class _State(NamedTuple):
    params: jax.Array
    cost: Cost


class _Info(NamedTuple):
    loss: jax.Array


def _build(problem, config: _Config) -> Method:
    target = problem.target

    def init(key):
        return _State(jnp.zeros(()), Cost.zero())

    def step(key, state):
        return _State(state.params + 1.0, state.cost + Cost.of(energy_evals=STEP_COST)), _Info(jnp.zeros(()))

    def sample(key, state, num_samples):
        x = config.scale * jax.random.normal(key, (num_samples, target.dim))
        log_q = jax.vmap(lambda v: jax.scipy.stats.norm.logpdf(v, scale=config.scale).sum())(x)
        return Samples(x, jax.vmap(target.log_prob)(x) - log_q, Cost.of(energy_evals=num_samples))

    return Method(init, step, sample)


@pytest.fixture(autouse=True, scope="module")
def _toy_learned():
    """Register the toy method for this module only (the method registry is process-global)."""
    samplers.register(
        MethodSpec(name="toy_costly", family="test", config_cls=_Config, build=_build), overwrite=True
    )
    yield
    samplers.METHODS.unregister("toy_costly")


def _suite_file(tmp_path: Path, budgets: dict, **overrides) -> Path:
    suite = {
        "name": "eb",
        "description": "equal-budget test",
        "methods": ["toy_costly"],
        "targets": ["gaussian"],
        "seeds": [0],
        "budgets": budgets,
        "eval": {"num_samples": 200},
    }
    suite.update(overrides)
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    return path


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


def test_per_target_budgets_parse(tmp_path):
    budgets = {
        "one": {"train_steps": 5, "chunk_size": 1, "max_evals": 1e4},
        "map": {"train_steps": 5, "chunk_size": 1, "max_evals": {"gaussian": 2e4, "*": 3e4}},
        "none": {"train_steps": 5, "chunk_size": 1},
    }
    suite = load_suite(str(_suite_file(tmp_path, budgets, targets=["gaussian", "gmm9"])))
    assert suite.budget("one").evals_for("gmm9") == 1e4
    assert suite.budget("map").evals_for("gaussian") == 2e4
    assert suite.budget("map").evals_for("gmm9") == 3e4
    assert suite.budget("none").evals_for("gaussian") is None
    assert suite.budget("map").for_target("gmm9")["max_evals"] == 3e4


@pytest.mark.parametrize(
    ("max_evals", "match"),
    [
        (0, "positive number"),
        (-5.0, "positive number"),
        ("1e6", "positive number"),
        (True, "positive number"),
        ({"gaussian": 1e4, "nope": 1e4}, r"not in the suite.*'gaussian', 'gmm9'"),
        ({"gaussian": 1e4}, r"no budget for target\(s\) \['gmm9'\].*'\*'"),
        ({"gaussian": 1e4, "gmm9": -1}, r"max_evals of \['gmm9'\] must be positive"),
    ],
)
def test_bad_budgets_fail_clearly(tmp_path, max_evals, match):
    budgets = {"b": {"train_steps": 5, "chunk_size": 1, "max_evals": max_evals}}
    with pytest.raises(ValueError, match=match):
        load_suite(str(_suite_file(tmp_path, budgets, targets=["gaussian", "gmm9"])))


def test_exclude_triples_drop_cells_at_one_budget(tmp_path):
    budgets = {"low": {"train_steps": 1, "chunk_size": 1}, "high": {"train_steps": 1, "chunk_size": 1}}
    path = _suite_file(tmp_path, budgets, methods=["toy_costly", "ais"], exclude=[["toy_costly", "*", "low"]])
    cells = {(c.method, c.budget) for c in load_suite(str(path)).cells()}
    assert cells == {("toy_costly", "high"), ("ais", "low"), ("ais", "high")}
    for bad, match in (([["toy_costly", "*", "nope"]], "unknown budget 'nope'"), ([["a"]], "pairs or")):
        with pytest.raises(ValueError, match=match):
            load_suite(str(_suite_file(tmp_path, budgets, exclude=bad)))


def test_shipped_equal_budget_suite_has_a_budget_for_every_target():
    suite = load_suite("equal_budget")
    assert len(suite.budgets) >= 3
    for b in suite.budgets:
        assert all(b.evals_for(t) is not None for t in suite.targets)


# ---------------------------------------------------------------------------------------------
# baselines scaled to a budget
# ---------------------------------------------------------------------------------------------


def _problem():
    from samplers.base_processes import BrownianBase, LinearSchedule

    target = targets.get("gaussian")
    return sampling_problem(target, BrownianBase(target.dim, LinearSchedule(2.0)), num_steps=10)


def _spend(name: str, max_evals: float, num_samples: int, **overrides) -> tuple[float, dict]:
    """Plan, then run init + the spec's training steps + sampling; the evaluations spent."""
    spec = samplers.get(name)
    problem = _problem()
    config = spec.make_config(init_scale=2.0, **overrides)
    plan = spec.plan_budget(jax.random.key(1), problem, config, max_evals, num_samples)
    method = spec.build(problem, plan.config)
    state = method.init(jax.random.key(2))
    for i in range(spec.train_steps):
        state, info = jax.jit(method.step)(jax.random.key(3 + i), state)
    if spec.replan_sampling is not None:  # as the harness does after the warm-up
        remaining = max_evals - budget_rules.evals(state.cost + plan.cost)
        replan = spec.replan_sampling(jax.random.key(4), problem, plan.config, state, remaining, num_samples)
        method, state = spec.build(problem, replan.config), state._replace(cost=state.cost + replan.cost)
    samples = jax.jit(method.sample, static_argnums=2)(jax.random.key(9), state, num_samples)
    return budget_rules.evals(state.cost + samples.cost + plan.cost), plan.notes


@pytest.mark.parametrize("name", ["ais", "mala"])
def test_exact_budget_rules_spend_the_budget(name):
    # AIS and MALA have deterministic costs: the spend equals the prediction and is within one
    # unit of work (one AIS level of every path / one MALA iteration of every chain) below B.
    max_evals, n = 30_000.0, 100
    spent, notes = _spend(name, max_evals, n)
    assert notes["feasible"]
    assert spent == pytest.approx(notes["predicted_evals"])
    assert max_evals - 2 * n <= spent <= max_evals


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smc", "nuts", "numpyro_nuts"])
def test_pilot_budget_rules_spend_near_the_budget(name):
    # SMC (stage count) and NUTS (leapfrog steps) are planned from a pilot: within 20 %. NUTS runs
    # 4 chains: the pilot costs ~ 2 C (50 L̄_w + 50 L̄_s) ≈ 860 C evaluations here, so the default
    # 64 chains would spend ~ 55k of the 60k budget on the pilot alone (infeasible plan).
    max_evals, n = 60_000.0, 200
    spent, notes = _spend(name, max_evals, n, **({} if name == "smc" else {"num_chains": 4}))
    assert notes["feasible"] and notes["pilot_evals"] > 0
    assert abs(spent / max_evals - 1) < 0.2, (spent, notes)


def test_nuts_replans_its_thinning_from_a_calibration_after_the_warmup():
    spec = samplers.get("nuts")
    problem = _problem()
    config = spec.make_config(num_chains=4, num_warmup=100, thinning=9, init_scale=2.0)
    method = spec.build(problem, config)
    state, _ = jax.jit(method.step)(jax.random.key(1), method.init(jax.random.key(0)))
    plan = spec.replan_sampling(jax.random.key(2), problem, config, state, 50_000.0, 100)
    notes = plan.notes
    leap = notes["calibration_leapfrogs"]  # 5 iterations of each of the 4 chains, counted
    assert budget_rules.evals(plan.cost) == pytest.approx(2 * 4 * 5 * leap)
    # 100 samples over 4 chains: 25 draws each, t = floor((R - calibration) / (2 * 4 * 25 * leap))
    assert plan.config.thinning == int((50_000.0 - 2 * 4 * 5 * leap) // (2 * 4 * 25 * leap))
    assert notes["feasible"] and plan.config.num_chains == 4
    small = spec.replan_sampling(jax.random.key(2), problem, config, state, 10.0, 100)
    assert small.config.thinning == 1 and not small.notes["feasible"]  # the minimum, and says so
    assert samplers.get("mala").replan_sampling is None  # one gradient per iteration: planned exactly


def test_too_small_budget_runs_the_minimum_and_says_so():
    plan = budget_rules.plan_ais(jax.random.key(0), None, samplers.get("ais").make_config(), 100.0, 1000)
    assert plan.config.num_levels == 1 and not plan.notes["feasible"]
    with pytest.raises(ValueError, match="max_evals"):
        budget_rules.plan_ais(jax.random.key(0), None, samplers.get("ais").make_config(), 0.0, 10)


# ---------------------------------------------------------------------------------------------
# learned samplers stop at the budget
# ---------------------------------------------------------------------------------------------


def test_learned_method_stops_before_the_budget():
    # chunk = 3 steps = 300 evals, sampling 200: training goes on while E + 300 + 200 <= 5000, so
    # it stops at E = 4800 (16 chunks, 48 steps), and training + sampling spend exactly 5000.
    problem = _problem()
    method = _build(problem, _Config())
    budget = Budget("b", train_steps=1000, chunk_size=3, max_evals_per_target=(("gaussian", 5000.0),))
    key, k_trace = jax.random.split(jax.random.key(0))
    trained = train_cell(key, method, problem, budget, k_trace, max_evals=5000.0, num_samples=200)
    assert trained.steps == 48 and float(trained.state.cost.energy_evals) == 4800.0
    assert trained.trace[-1]["evals"] == 4800.0 and trained.trace[-1]["evals_sample"] == 200.0
    # a first chunk dearer than the budget (30 steps = 3000 evals) is cut to the 18 steps that fit:
    # 1800 + 200 = 2000, where running the whole chunk would have spent 3200
    long = Budget("b", train_steps=1000, chunk_size=30, max_evals_per_target=(("gaussian", 2000.0),))
    trained = train_cell(key, method, problem, long, k_trace, max_evals=2000.0, num_samples=200)
    assert trained.steps == 18 and float(trained.state.cost.energy_evals) == 1800.0
    # a budget that only pays for the final sampling trains nothing
    trained = train_cell(key, method, problem, budget, k_trace, max_evals=150.0, num_samples=200)
    assert trained.steps == 0 and "no training" in trained.note


# ---------------------------------------------------------------------------------------------
# the accuracy-versus-cost figure
# ---------------------------------------------------------------------------------------------


def _record(method, family, budget, spent, err, mmd):
    return {
        "suite": "eb",
        "method": method,
        "target": "gaussian",
        "seed": 0,
        "status": "ok",
        "method_family": family,
        "budget": {"name": budget, "train_steps": 10, "chunk_size": 1, "max_evals": spent},
        "commit": "abc",
        "hardware": {"backend": "cpu", "device_kind": "cpu", "cpu": "x", "cpu_count": 2},
        "metrics": {
            "logZ/error": err,
            "mmd2/rbf_median": mmd,
            "mmd2/rbf_median/noise_floor": 1e-4,
            "budget/max_evals": spent,
            "budget/spent_evals": spent,
        },
        "trace": [{"step": 1, "evals": spent / 2, "evals_sample": 10.0, "logZ": 0.0, "logZ_error": err * 2}]
        if family == "test"
        else [],
    }


def test_budget_figure_from_toy_records(tmp_path):
    runs = tmp_path / "runs" / "eb"
    for i, (budget, spent) in enumerate((("low", 1e4), ("mid", 1e5), ("high", 1e6))):
        for method, family in (("learned", "test"), ("smc", "smc")):
            rec = _record(method, family, budget, spent, 1.0 / (i + 1), 0.01 / (i + 1))
            atomic_write_json(runs / method / budget / "seed0.json", rec)
    build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"))
    fig = tmp_path / "out" / "figures" / "eb" / "gaussian_budget.png"
    assert fig.exists() and fig.stat().st_size > 10_000
    assert not (fig.parent / "gaussian_cost.png").exists()
    assert "(figures/eb/gaussian_budget.png)" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_budget_figure_with_one_budget_point_draws_without_a_singular_axis_warning(tmp_path):
    """Every point of a target at one x (one budget, no training trace): the log x axis gets a window
    around it instead of matplotlib's 'identical low and high xlims' warning."""
    runs = tmp_path / "runs" / "eb"
    atomic_write_json(runs / "smc" / "low" / "seed0.json", _record("smc", "smc", "low", 1e4, 0.5, 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "figures" / "eb" / "gaussian_budget.png").exists()
