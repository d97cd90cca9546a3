"""The digits fine-tuning experiment: model training and caching, metrics, one tiny fine-tuning step."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from benchmarks.experiments import digits as experiment
from benchmarks.experiments import digits_models
from targets import digits


def _tiny_flow(hidden=(16,)) -> digits.FrozenFlow:
    spec = digits.FlowSpec(hidden=hidden, num_time_features=2)
    module = digits.VelocityMLP(spec.hidden, spec.num_time_features)
    params = module.init(jax.random.key(0), np.zeros(64, np.float32), np.zeros((), np.float32))["params"]
    return digits.FrozenFlow(params, spec, {})


def _tiny_classifier() -> digits.FrozenClassifier:
    spec = digits.ClassifierSpec(hidden=())
    params = digits.ClassifierMLP(spec.hidden).init(jax.random.key(1), np.zeros(64, np.float32))["params"]
    return digits.FrozenClassifier(params, spec, {})


def test_flow_matching_loss_decreases_on_a_tiny_run():
    config = digits_models.FlowTrainConfig(
        spec=digits.FlowSpec(hidden=(32,), num_time_features=2), steps=100, batch_size=64, learning_rate=3e-3
    )
    _, info = digits_models.train_flow(config, digits.load_digits_data("train").images)
    losses = info["losses"]
    assert losses.shape == (100,) and np.all(np.isfinite(losses))
    # initial loss ~ E|X1 - X0|^2 ~ 64 + E|X1|^2 ~ 110; a 10-step mean has an SE of ~1-2, and 100 Adam
    # steps take it to ~80 (a broken gradient or optimiser stays at ~110)
    assert losses[-10:].mean() < 0.85 * losses[:10].mean(), losses[::10]


def test_saved_model_round_trips_with_complete_provenance(tmp_path):
    flow = _tiny_flow()
    provenance = {key: "x" for key in digits.PROVENANCE_KEYS}
    provenance["architecture"] = {"hidden": [16], "num_time_features": 2}
    written = digits_models.save_model(tmp_path / "flow.npz", flow.params, provenance)
    loaded = digits.load_flow(tmp_path / "flow.npz")
    assert set(digits.PROVENANCE_KEYS) <= set(loaded.provenance) and loaded.provenance == written
    assert loaded.spec == flow.spec
    assert written["num_parameters"] == sum(np.size(v) for v in jax.tree.leaves(flow.params))
    x = np.linspace(-1, 1, 64).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded.velocity(x, 0.3)), np.asarray(flow.velocity(x, 0.3)))


def test_reference_metrics_known_answers():
    lam = 2.0
    # constant reward: the tilt is trivial, log Z = λ r, KL = 0, ESS = 1
    ref = experiment.reference_metrics(np.full(100, -0.5), lam)
    assert ref["log_Z"] == pytest.approx(-1.0) and ref["kl"] == pytest.approx(0.0, abs=1e-12)
    assert ref["ess"] == pytest.approx(1.0)
    # two reward levels with frequencies 1/2: Z = (e^{λa} + e^{λb})/2
    a, b = -1.0, -3.0
    ref = experiment.reference_metrics(np.array([a, b] * 50), lam)
    z = 0.5 * (math.exp(lam * a) + math.exp(lam * b))
    assert ref["log_Z"] == pytest.approx(math.log(z))
    mean_r = (a * math.exp(lam * a) + b * math.exp(lam * b)) / (2 * z)
    assert ref["reward"] == pytest.approx(mean_r)
    assert ref["kl"] == pytest.approx(lam * mean_r - math.log(z))


def test_sample_metrics_of_the_base_have_zero_path_kl():
    classifier = digits.load_classifier()
    x = digits.load_digits_data("test").images[:40]
    lam = 3.0
    reward = np.asarray(jax.vmap(digits.class_log_prob_reward(classifier, 3))(x))
    m = experiment.sample_metrics(x, classifier, 3, lam=lam, log_w=lam * reward)
    assert m["kl_path"] == pytest.approx(0.0, abs=1e-5) and m["elbo"] == pytest.approx(
        lam * reward.mean(), rel=1e-5
    )
    assert 0.0 < m["ess"] <= 1.0 and m["class_entropy"] <= math.log(10) + 1e-12
    assert m["pairwise_dist"] > 0


def test_a_tiny_fine_tuning_step_runs_and_is_finite():
    import samplers
    from samplers.train import train

    classifier = _tiny_classifier()
    problem = experiment.digits_problem(_tiny_flow(), classifier, digit=3, lam=1.0, t0=0.05, num_steps=6)
    spec = samplers.get("adjoint_matching")
    method = spec.build(
        problem, spec.make_config(batch_size=4, network={"hidden": (8,)}, sde={"integrator": "scan"})
    )
    result = train(jax.random.key(0), method, num_steps=2, chunk_size=2)
    # one compiled chunk; its Info carries the loss and the simulated batch's path weights (ELBO, log Ẑ)
    for name in ("loss", "elbo", "log_Z", "grad_norm"):
        assert np.all(np.isfinite(result.history[name])), name
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(result.state.params))


def test_a_tiny_target_score_matching_step_runs_on_the_model_alone():
    """TSM needs the data law's score at t = 1: on the digits problem it is the velocity's
    `-(x + ∂_t v(x, 1))` (no data density exists there); two steps give a finite loss and parameters."""
    import samplers
    from samplers.train import train

    problem = experiment.digits_problem(
        _tiny_flow(), _tiny_classifier(), digit=3, lam=1.0, t0=0.05, num_steps=6
    )
    assert problem.base.terminal_log_prob_fn is None and problem.base.has_terminal_score
    spec = samplers.get("target_score_matching")
    config = spec.make_config(
        experiment.METHOD_CONFIGS["target_score_matching"],
        batch_size=4,
        buffer_size=16,
        resample_size=8,
        network={"hidden": (8,)},
        sde={"integrator": "scan"},
    )
    result = train(jax.random.key(0), spec.build(problem, config), num_steps=2, chunk_size=2)
    assert np.all(np.isfinite(result.history["loss"]))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(result.state.params))


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="digit"):
        experiment.DigitsConfig(digit=11)
    with pytest.raises(ValueError, match="lams"):
        experiment.DigitsConfig(lams=())


@pytest.mark.slow
def test_ensure_models_trains_and_caches_with_provenance(tmp_path):
    flow, classifier = digits_models.ensure_models(
        retrain=True,
        flow_config=digits_models.FlowTrainConfig(
            spec=digits.FlowSpec(hidden=(32,), num_time_features=2), steps=150, batch_size=64
        ),
        classifier_config=digits_models.ClassifierTrainConfig(
            spec=digits.ClassifierSpec(hidden=()), steps=150, batch_size=64, learning_rate=1e-2
        ),
        flow_path=tmp_path / "flow.npz",
        classifier_path=tmp_path / "classifier.npz",
        command="pytest",
        log=lambda message: None,
    )
    for model in (flow, classifier):
        assert set(digits.PROVENANCE_KEYS) <= set(model.provenance)
        assert model.provenance["command"] == "pytest"
    curve = flow.provenance["training"]["loss_curve"]
    assert curve["window_means"][-1] < 0.75 * curve["window_means"][0]
    # even a 150-step logistic regression is far above chance (0.1) on held-out images
    assert classifier.provenance["training"]["test_accuracy"] > 0.6


@pytest.mark.slow
def test_digits_quick_run_end_to_end(tmp_path):
    record = experiment.run_digits(
        experiment.DigitsConfig(
            lams=(1.0,),
            methods=("adjoint_matching",),
            train_steps=5,
            num_samples=32,
            num_reference=64,
            num_steps=10,
            seeds=(0, 1),
            method_lams=(),
        ),
        tmp_path,
        log=lambda message: None,
    )
    for path in record["files"].values():
        assert (tmp_path / path.split("/")[-1]).exists()
    method_rows = [r for r in record["rows"] if r["kind"] == "method"]
    assert [r["method"] for r in method_rows] == [
        m for m in ("adjoint_matching",) if m not in record["skipped"]
    ]  # the configured methods, not the defaults
    assert all(r["status"] == "ok" for r in method_rows), [r.get("message") for r in method_rows]
    assert [s["seed"] for s in method_rows[0]["seeds"]] == [0, 1] and "reward_se" in method_rows[0]["metrics"]


def test_default_methods_are_every_flow_capable_unified_loss():
    import samplers

    expected = {
        name
        for name in samplers.names()
        if samplers.get(name).family in experiment.UNIFIED_FAMILIES and "flow" in samplers.get(name).bases
    }
    assert set(experiment.DEFAULT_METHODS) == expected
    assert experiment.DEFAULT_METHODS[:3] == experiment.FIRST_METHODS  # their seed-0 keys unchanged
    assert {"adjoint_sampling", "target_score_matching", "reward_score_matching_zo"} <= expected
    assert not expected & {"mala", "nuts", "smc", "ais"}
    # every unified loss is either run or reported with the reason
    unified = {n for n in samplers.names() if samplers.get(n).family in experiment.UNIFIED_FAMILIES}
    assert unified == expected | set(experiment.flowless_methods())
    for name in experiment.DEFAULT_METHODS:  # the shared network, batch and learning rate
        overrides = experiment.method_overrides(name)
        assert overrides["network"] == {"hidden": (256, 256)} and overrides["batch_size"] == 64
    assert experiment.method_overrides("a_method_registered_later") == experiment.method_overrides(
        "log_variance"
    )


def test_config_seeds_and_per_method_lams():
    config = experiment.DigitsConfig()
    assert config.seeds == (0, 1, 2)
    assert config.lams == (1.0, 3.0, 10.0)  # reference rows at every λ, the methods at λ = 3
    assert all(config.lams_of(m) == (3.0,) for m in experiment.DEFAULT_METHODS)
    assert experiment.DigitsConfig(method_lams=()).lams_of("adjoint_matching") == (1.0, 3.0, 10.0)
    config = experiment.DigitsConfig(lams=(1.0,), method_lams={"adjoint_sampling": [3.0]})
    assert config.method_lams == (("adjoint_sampling", (3.0,)),) and config.lams_of("adjoint_sampling") == ()
    for bad in ((), (0, 0), (-1,), (True,)):
        with pytest.raises(ValueError, match="seeds"):
            experiment.DigitsConfig(seeds=bad)
    with pytest.raises(ValueError, match="method_lams"):
        experiment.DigitsConfig(method_lams={"adjoint_sampling": ()})


def test_seed_row_is_the_mean_and_standard_error_over_finished_seeds():
    def seed(value, status="ok"):
        if status != "ok":
            return {"status": status, "message": "boom"}
        return {"status": "ok", "train_time_s": 2 * value, "metrics": {"reward": value, "reward_se": 9.0}}

    row = experiment.seed_row("m", 3.0, [seed(1.0), seed(2.0), seed(6.0)])
    assert row["status"] == "ok" and row["num_seeds_ok"] == 3 and len(row["seeds"]) == 3
    assert row["metrics"]["reward"] == pytest.approx(3.0)
    # SE over seeds: std(ddof=1)/sqrt(3) = sqrt(7)/sqrt(3); the within-seed SE (9.0) is not used
    assert row["metrics"]["reward_se"] == pytest.approx(math.sqrt(7.0 / 3.0))
    assert row["train_time_s"] == pytest.approx(6.0)
    row = experiment.seed_row("m", 3.0, [seed(1.0), seed(0.0, "diverged")])
    assert row["num_seeds_ok"] == 1 and row["metrics"] == {"reward": 1.0}  # one seed: no spread
    row = experiment.seed_row("m", 3.0, [seed(0.0, "diverged"), seed(0.0, "failed")])
    assert row["status"] == "diverged" and row["message"] == "boom" and "metrics" not in row


def test_markdown_report_states_the_seeds_and_the_reduced_grids():
    from benchmarks.experiments.digits_report import markdown_report

    ok = {
        "status": "ok",
        "train_time_s": 1.0,
        "metrics": {
            "reward": -1.0,
            "kl_path": 2.0,
            "elbo": -5.0,
            "log_Z": -3.0,
            "ess": 0.5,
            "accuracy": 0.9,
            "pairwise_dist": 4.0,
            "class_entropy": 0.5,
        },
    }
    rows = [
        experiment.seed_row("adjoint_matching", 3.0, [ok, ok, ok]),
        experiment.seed_row("adjoint_sampling", 3.0, [ok, {"status": "diverged"}, ok]),
    ]
    record = {
        "config": {
            "digit": 3,
            "t0": 0.02,
            "num_steps": 40,
            "grid": "quadratic",
            "train_steps": 200,
            "num_samples": 512,
            "num_reference": 4096,
            "lams": [1.0, 3.0, 10.0],
            "methods": ["adjoint_matching", "adjoint_sampling"],
            "method_lams": [["adjoint_sampling", [3.0]]],
        },
        "hardware": {"cpu": "cpu", "backend": "cpu"},
        "models": {"flow": {"num_parameters": 1}, "classifier": {"num_parameters": 1}},
        "commit": "abc",
        "wall_time_s": 1.0,
        "seeds": [0, 1, 2],
        "rows": rows,
        "skipped": {"cmcd_kl": "does not support the 'flow' base"},
        "families": {"adjoint_matching": "soc-regression", "adjoint_sampling": "thermodynamic"},
        "files": {"grid": "g.png", "reward_kl": "r.png"},
    }
    text = markdown_report(record)
    assert "seeds 0, 1, 2" in text and "mean ± standard error over the 3 seeds" in text
    assert "`adjoint_sampling` at λ = 3 only" in text
    assert (
        "| adjoint_sampling (2/3 seeds) | 3 |" in text and "| adjoint_matching | 3 | -1.000 ± 0.000 |" in text
    )
    assert "`cmcd_kl` (does not support the 'flow' base)" in text
    record["config"]["method_lams"].append(["adjoint_matching", [3.0]])
    assert "Every method ran at λ = 3 only" in markdown_report(record)
    assert "For `adjoint_sampling` log w is the method's own path weight" in text


def test_cli_seeds_parse_and_bad_input_is_named(capsys):
    from types import SimpleNamespace

    from benchmarks.cli import main

    assert experiment.parse_seeds(SimpleNamespace(seeds=None, seed=None)) == (0, 1, 2)
    assert experiment.parse_seeds(SimpleNamespace(seeds="4, 5", seed=None)) == (4, 5)
    assert experiment.parse_seeds(SimpleNamespace(seeds=None, seed=7)) == (7,)
    assert main(["digits", "--seeds", "0,x"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err
    assert main(["digits", "--seeds", "0", "--seed", "1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["digits", "--seeds", "1,1"]) == 2
    assert "distinct" in capsys.readouterr().err


def test_reward_kl_figure_names_methods_outside_the_window_instead_of_plotting_them():
    from benchmarks.experiments.digits_report import off_scale

    def method(name, kl, reward):
        return {
            "kind": "method",
            "method": name,
            "lam": 3.0,
            "status": "ok",
            "metrics": {"kl_path": kl, "reward": reward},
        }

    rows = [
        {"kind": "base", "status": "ok", "metrics": {"reward": -3.8}},
        {"kind": "reference", "status": "ok", "metrics": {"kl": 3.1, "reward": -0.1}},
        method("fine", 4.0, -0.5),
        method("far_kl", 8.0e7, -0.5),  # window: KL ≤ 10 × 3.1
        method("low_reward", 2.0, -43.0),  # window: reward ≥ -3.8 - 1
        {"kind": "method", "method": "failed", "lam": 3.0, "status": "diverged"},
    ]
    assert off_scale(rows) == ["far_kl λ=3 (KL 8e+07, reward -0.5)", "low_reward λ=3 (KL 2, reward -43)"]
