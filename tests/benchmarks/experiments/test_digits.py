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
