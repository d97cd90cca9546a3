"""Fine-tuning cells in the harness: problem construction, applicability, metrics, leaderboard, and the
exact optimal control of a task (log Ẑ and ESS of the memoryless flow base with u* = σ∇log h)."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from benchmarks.grid import hyperparams
from benchmarks.metrics import EvalContext, evaluate
from benchmarks.reports.leaderboard import build_leaderboard
from samplers import estimators, sde
from samplers.methods import bridge_targets as br
from targets.mixtures import GaussianMixture

TASK = "ft_gmm2d_linear"


def _problem(name=TASK, **overrides):
    settings = dataclasses.replace(hyperparams.resolve("adjoint_matching", name).problem, **overrides)
    return hyperparams.build_problem(targets.get(name), settings)


def test_build_problem_gives_the_flow_finetuning_problem():
    problem = _problem()
    task = targets.get(TASK).finetune_task
    assert problem.kind == "finetuning" and problem.base.kind == "flow"
    assert problem.log_Z == pytest.approx(task.log_Z) and problem.target.name == TASK
    assert problem.base.t_start == pytest.approx(0.01) and problem.num_steps == 200
    x = jnp.array([0.3, -0.7])
    assert float(problem.tilt(x)) == pytest.approx(task.lam * float(task.reward(x)), rel=1e-6)
    np.testing.assert_allclose(problem.grad_tilt(x), task.lam * task.grad_reward(x), rtol=1e-6)
    # the initial law is the flow marginal at t0, not the default N(0, (1 - t0)² I)
    assert float(problem.base.initial_log_prob(x)) == pytest.approx(float(task.marginal(0.01).log_prob(x)))
    # dds asks for a VP base; the base of a fine-tuning task is the pretrained flow regardless
    settings = hyperparams.resolve("dds", TASK).problem
    assert hyperparams.build_problem(targets.get(TASK), settings).base.kind == "flow"


def test_applicability_reasons_are_informative():
    problem = _problem()
    for name in ("adjoint_matching", "log_variance", "trajectory_balance", "adjoint_sampling"):
        assert samplers.get(name).applicable(problem) is None
    reason = samplers.get("pis").applicable(problem)
    assert "'flow'" in reason and "no Dirac start" in reason
    for name in ("nuts", "smc", "ais"):
        assert "data law's density" in samplers.get(name).applicable(problem)
    sampling = hyperparams.build_problem(targets.get("gmm9"), hyperparams.resolve("nuts", "gmm9").problem)
    assert samplers.get("nuts").applicable(sampling) is None


def test_finetune_metrics_on_known_answers():
    """Exact p* samples with synthetic log-weights `log w = λ r(x) - d`: kl_path = mean d, objective gap =
    log Z - mean log w, reward gap ≈ 0 within 5 SE, reward fraction ≈ 1."""
    target = targets.get(TASK)
    task = target.finetune_task
    x = target.sample(jax.random.key(0), 4000)
    d = 0.3 + 0.1 * np.random.default_rng(0).standard_normal(4000)
    log_w = task.lam * np.asarray(jax.vmap(task.reward)(x), np.float64) - d
    ctx = EvalContext(key=jax.random.key(1), target=target, x=x, log_w=jnp.asarray(log_w, jnp.float32))
    values, skipped = evaluate(ctx, ["finetune_reward", "finetune_kl"])
    assert not skipped
    assert values["finetune/kl_path"] == pytest.approx(d.mean(), abs=1e-5)
    assert values["finetune/objective_gap"] == pytest.approx(task.log_Z - log_w.mean(), abs=1e-5)
    assert values["finetune/kl_optimum"] == pytest.approx(task.reward_optimum.kl)
    assert abs(values["finetune/reward_gap"]) < 5 * values["finetune/reward_se"]
    span = task.reward_optimum.reward_mean - task.reward_optimum.base_reward_mean
    assert abs(values["finetune/reward_fraction"] - 1) < 5 * values["finetune/reward_se"] / span
    # a sampling target: the metrics say why they do not apply
    gmm = targets.get("gmm9")
    _, skipped = evaluate(
        EvalContext(jax.random.key(0), gmm, gmm.sample(jax.random.key(0), 10)), ["finetune_reward"]
    )
    assert "not a fine-tuning task" in skipped["finetune_reward"]


def test_exact_optimal_control_recovers_log_Z_and_full_ess():
    """`u* = σ(t)(∇log p*_t - ∇log p_t)` on the harness's problem: |log Ẑ - log Z| < 1e-2, ESS > 0.95,
    and the fine-tuning metrics sit at the exact optimum (reward gap within 5 SE, objective gap < 0.03)."""
    problem = _problem()
    target = problem.target
    task = target.finetune_task
    control = lambda params, x, t: problem.base.sigma(t) * task.optimal_guidance(x, t)
    path = sde.simulate(jax.random.key(0), problem, control, None, 2000, sde.SDEConfig(integrator="scan"))
    assert abs(float(estimators.log_Z(path.log_w).value) - task.log_Z) < 1e-2
    assert float(estimators.reverse_ess(path.log_w).value) > 0.95
    ctx = EvalContext(key=jax.random.key(1), target=target, x=path.x, log_w=path.log_w)
    values, _ = evaluate(ctx, ["finetune_reward", "finetune_kl"])
    assert abs(values["finetune/reward_gap"]) < 5 * values["finetune/reward_se"]
    # log Z − E[log w] ≈ Var(log w)/2: small but not 0 (t0 > 0 memorylessness bias, EM discretisation)
    assert -5 * values["finetune/objective_se"] < values["finetune/objective_gap"] < 0.03


@pytest.mark.slow
def test_uncontrolled_base_transports_p_t0_to_the_data_law():
    """Zero control: the memoryless flow SDE from p_{t0} ends at p_data (mean and covariance within 5 SE,
    second moments by the fourth-moment SE; 200 quadratic steps)."""
    problem = _problem()
    task = problem.target.finetune_task
    zero = lambda params, x, t: jnp.zeros_like(x)
    x = np.asarray(
        sde.simulate(jax.random.key(2), problem, zero, None, 4000, sde.SDEConfig(integrator="scan")).x,
        np.float64,
    )
    mean = np.exp(task.log_weights) @ task.means
    n = x.shape[0]
    z = (x.mean(0) - mean) / (x.std(0, ddof=1) / math.sqrt(n))
    assert np.all(np.abs(z) < 5), z
    cov = np.asarray(task.data.covariance(), np.float64)
    c = x - mean
    prods = np.stack([c[:, 0] ** 2, c[:, 1] ** 2, c[:, 0] * c[:, 1]], 1)
    exact = np.array([cov[0, 0], cov[1, 1], cov[0, 1]])
    se = prods.std(0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - exact) < 5 * se), (prods.mean(0), exact, se)


def _record(method, target, kind, metrics, status="ok"):
    return {
        "suite": "s",
        "method": method,
        "target": target,
        "budget": {"name": "b"},
        "seed": 0,
        "status": status,
        "commit": "abc",
        "hardware": {},
        "metrics": metrics,
        "problem_kind": kind,
    }


def test_leaderboard_puts_finetuning_records_in_their_own_table(tmp_path):
    runs = tmp_path / "runs" / "s"
    recs = [
        _record("pis", "gmm9", "sampling", {"logZ/error": 0.1}),
        _record(
            "adjoint_matching",
            TASK,
            "finetuning",
            {
                "logZ/error": 0.01,
                "finetune/reward_mean": 2.5,
                "finetune/objective_gap": 0.05,
                "finetune/reward_optimum": 2.87,
                "finetune/kl_optimum": 0.56,
                "finetune/reward_base": 0.44,
            },
        ),
    ]
    for i, r in enumerate(recs):
        path = runs / r["method"] / r["target"] / "b" / f"seed{i}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(r))
    build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"), figures=False)
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    sampling, finetuning = md.split("### Reward fine-tuning tasks")
    assert "### gmm9" in sampling and TASK not in sampling
    assert f"### {TASK}" in finetuning and "gmm9" not in finetuning
    assert "objective gap" in finetuning and "E*[r] = 2.87" in finetuning


@pytest.mark.slow
def test_short_adjoint_matching_run_moves_towards_the_optimum():
    """100 Adjoint Matching steps on the 2-D linear task (50 grid steps, batch 128) reduce the objective gap
    log Z − (λE[r] − KL) and the reward gap to the exact optimum, each by more than 5 SE."""
    from samplers.train import train

    problem = _problem(num_steps=50)
    target = problem.target
    spec = samplers.get("adjoint_matching")
    method = spec.build(problem, spec.make_config(batch_size=128, optim={"learning_rate": 3e-3}))

    def gaps(state):
        s = jax.jit(method.sample, static_argnums=2)(jax.random.key(7), state, 2000)
        ctx = EvalContext(key=jax.random.key(8), target=target, x=s.x, log_w=s.log_w)
        return evaluate(ctx, ["finetune_reward", "finetune_kl"])[0]

    before = gaps(method.init(jax.random.key(0)))
    after = gaps(train(jax.random.key(1), method, num_steps=100, chunk_size=100).state)
    for key, se in (
        ("finetune/objective_gap", "finetune/objective_se"),
        ("finetune/reward_gap", "finetune/reward_se"),
    ):
        assert after[key] < before[key] - 5 * math.hypot(after[se], before[se]), (
            key,
            before[key],
            after[key],
        )


# ---------------------------------------------------------------------------------------------
# honest inputs: a fine-tuning method sees the pretrained model and the reward, never the data density
# ---------------------------------------------------------------------------------------------

FLOW_METHODS = sorted(
    name
    for name in samplers.names()
    if samplers.get(name).bases != ("any",) and samplers.get(name).supports("flow")
)
_TINY = {"batch_size": 8, "buffer_size": 32, "resample_size": 16, "refresh_every": 2}


class DataDensityRead(AssertionError):
    """A fine-tuning method read the data law's density while training or sampling."""


def _forbid_data_density(monkeypatch, allowed=None):
    """Every Gaussian-mixture density (the data law `p_data`, the tilted target `log p_data + λr`) raises,
    except that of `allowed`, the base's initial law `p_{t0}` (the pretrained model's own marginal, which
    the base gives every method: CMCD's weights and the flow's ODE likelihood use its density)."""

    def guard(name):
        original = getattr(GaussianMixture, name)

        def forbidden(self, *args, **kwargs):
            if allowed is not None and self is allowed:
                return original(self, *args, **kwargs)
            raise DataDensityRead("a fine-tuning method read a Gaussian-mixture density (the data law)")

        return forbidden

    for name in ("log_prob", "component_log_probs", "log_responsibilities"):
        monkeypatch.setattr(GaussianMixture, name, guard(name))


def test_finetuning_problem_gives_the_base_no_data_density():
    """The harness's fine-tuning base has the data score from the velocity only; it matches the data
    density's score (rtol 1e-4), which only the evaluation may read."""
    problem = _problem(num_steps=8)
    base, task = problem.base, targets.get(TASK).finetune_task
    assert base.terminal_log_prob_fn is None and base.terminal_score_from_velocity and base.has_terminal_score
    with pytest.raises(NotImplementedError, match="terminal law"):
        base.terminal_log_prob(jnp.zeros(2))
    x = task.data.sample(jax.random.key(0), 64)
    expected = jax.vmap(jax.grad(task.data.log_prob))(x)
    np.testing.assert_allclose(jax.vmap(base.terminal_score)(x), expected, rtol=1e-4, atol=1e-4)


def _methods_never_read_the_data_density(name, monkeypatch, base_fields=None):
    """Build, init, two training steps and sampling of `name` on the harness's problem of `TASK` (8 grid
    steps; `base_fields` replace fields of its base), with every mixture density raising and without the
    problem's `target` and `log_Z`; then the evaluation, which may read them."""
    resolved = hyperparams.resolve(name, TASK)
    problem = hyperparams.build_problem(targets.get(TASK), dataclasses.replace(resolved.problem, num_steps=8))
    if base_fields:
        problem = dataclasses.replace(problem, base=dataclasses.replace(problem.base, **base_fields))
    spec = samplers.get(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    tiny = {k: v for k, v in _TINY.items() if k in fields}
    if "time_subsample" in fields:
        tiny["time_subsample"] = None
    config = spec.make_config(resolved.method, **tiny)
    with monkeypatch.context() as guard:
        _forbid_data_density(guard, allowed=getattr(problem.base.initial_log_prob_fn, "__self__", None))
        blind = dataclasses.replace(problem, target=None, log_Z=None)
        method = spec.build(blind, config)
        state = method.init(jax.random.key(0))
        for i in range(2):
            state, _ = method.step(jax.random.key(1 + i), state)
        s = method.sample(jax.random.key(3), state, 16)
    assert np.all(np.isfinite(np.asarray(s.x))) and not np.any(np.isnan(np.asarray(s.log_w)))
    ctx = EvalContext(key=jax.random.key(4), target=problem.target, x=s.x, log_w=s.log_w)
    values, skipped = evaluate(ctx, ["finetune_reward", "finetune_kl"])
    assert not skipped and np.isfinite(values["finetune/objective_gap"])


def test_the_data_score_of_the_bridge_regressions_reads_no_data_density(monkeypatch):
    """AS, TSM and NSM need the data law's score at t = 1 (their end-point gradient data, the one place
    where a flow-base method reads the base's terminal law): on the harness's problem it is built and
    traced with every mixture density raising; a base given the data density (the harness's former
    setting) trips the guard."""
    problem = _problem(num_steps=8)
    task = targets.get(TASK).finetune_task
    x = task.tilted().sample(jax.random.key(0), 16)
    with monkeypatch.context() as guard:
        _forbid_data_density(guard)
        for kind in ("adjoint", "tsm", "nsm"):
            grad = jax.vmap(br.endpoint_gradients(problem, kind))(x)
            assert np.all(np.isfinite(np.asarray(grad)))
        given = dataclasses.replace(
            problem, base=dataclasses.replace(problem.base, terminal_log_prob_fn=task.data.log_prob)
        )
        with pytest.raises(DataDensityRead):
            jax.vmap(br.endpoint_gradients(given, "tsm"))(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", FLOW_METHODS)
def test_flow_methods_never_read_the_data_density(name, monkeypatch):
    """Every flow-base method (the bridge regressions, Adjoint Matching, log-variance, trajectory balance,
    reward score matching) trains and samples with every mixture density raising, and the check trips for
    a base given the data density (Target Score Matching)."""
    _methods_never_read_the_data_density(name, monkeypatch)
    if name == "target_score_matching":
        data = targets.get(TASK).finetune_task.data
        with pytest.raises(DataDensityRead):
            _methods_never_read_the_data_density(name, monkeypatch, {"terminal_log_prob_fn": data.log_prob})
