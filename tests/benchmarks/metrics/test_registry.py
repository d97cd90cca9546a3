"""The metric registry, `evaluate`, skip reasons, context validation and the cost pass-through."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from benchmarks import metrics
from samplers.method import Cost

DIM = 2


@pytest.fixture(scope="module")
def gaussian_target():
    """A user target N(0, I) in 2-D with unknown log Z and no sampler (only what a user registers)."""
    return targets.Target(name="metrics_test_gaussian", dim=DIM, log_prob_fn=lambda x: -0.5 * jnp.sum(x**2))


def test_every_builtin_metric_is_registered_with_a_description():
    expected = {
        "log_z",
        "log_z_error",
        "log_z_backward",
        "log_z_bar",
        "ess_reverse",
        "ess_forward",
        "mmd_rbf_median",
        "mmd_rbf_multi",
        "sinkhorn",
        "w2_exact_1d",
        "modes",
        "energy_w2",
        "dist_w2",
        "eq_w2",
        "eq_w2_invariant",
    }
    assert expected <= set(metrics.names())
    for row in metrics.describe():
        assert row["description"], row["name"]
        assert set(row["requires"]) <= set(metrics.REQUIREMENTS)


def test_skipped_metrics_give_reasons(gaussian_target):
    x = jax.random.normal(jax.random.key(0), (50, DIM))
    values, skipped = metrics.evaluate(metrics.EvalContext(jax.random.key(1), gaussian_target, x))
    assert values == {}  # nothing applies: no weights, no reference, no log Z, not a mixture/particles
    assert set(skipped) == set(metrics.names())
    assert "no path log-weights" in skipped["log_z"]
    assert "log Z is unknown" in skipped["log_z_error"]
    assert "no reference samples" in skipped["mmd_rbf_median"]
    assert "not a particle system" in skipped["eq_w2"]
    assert "not a Gaussian mixture" in skipped["modes"]
    assert "not one-dimensional" in skipped["w2_exact_1d"]


def test_applicable_metrics_run_and_values_are_floats(gaussian_target):
    keys = jax.random.split(jax.random.key(2), 4)
    x, ref, ref2 = (jax.random.normal(k, (64, DIM)) for k in keys[:3])
    log_w = jnp.zeros(64)
    values, skipped = metrics.evaluate(
        metrics.EvalContext(keys[3], gaussian_target, x, log_w=log_w, reference=ref, reference2=ref2),
        names=["log_z", "ess_reverse", "log_z_error", "modes"],
    )
    assert set(skipped) == {"log_z_error", "modes"}
    assert values["ess/reverse"] == pytest.approx(1.0)
    assert values["ess/num_samples"] == 64
    assert values["logZ/estimate"] == pytest.approx(0.0, abs=1e-6)
    assert all(isinstance(v, float) for v in values.values())


def test_unknown_metric_name_lists_valid_names(gaussian_target):
    ctx = metrics.EvalContext(jax.random.key(0), gaussian_target, jnp.zeros((4, DIM)))
    with pytest.raises(ValueError, match="Valid metrics: .*log_z"):
        metrics.evaluate(ctx, names=["logz"])


def test_register_metric_rejects_unknown_requirement():
    with pytest.raises(ValueError, match="valid: .*reference"):
        metrics.register_metric("bogus_metric", lambda ctx: {}, requires=("refrence",))
    assert "bogus_metric" not in metrics.names()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("x", np.zeros((5, 3)), r"x must have shape \(n, 2\)"),
        ("log_w", np.zeros(4), r"log_w must have shape \(5,\)"),
        ("reference", np.zeros((6, 1)), r"reference must have shape \(m, 2\)"),
        ("backward_log_w", np.zeros(6), "without the reference"),
    ],
)
def test_malformed_context_is_rejected(gaussian_target, field, value, message):
    ctx = metrics.EvalContext(jax.random.key(0), gaussian_target, np.zeros((5, DIM)))
    ctx = ctx._replace(**{field: value})
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(ctx)


def test_metric_errors_raise_or_are_reported(gaussian_target):
    def broken(ctx):
        raise RuntimeError("boom")

    metrics.register_metric("broken_metric_for_test", broken)
    try:
        ctx = metrics.EvalContext(jax.random.key(0), gaussian_target, jnp.zeros((4, DIM)))
        with pytest.raises(RuntimeError, match="boom"):
            metrics.evaluate(ctx, names=["broken_metric_for_test"])
        values, skipped = metrics.evaluate(ctx, names=["broken_metric_for_test"], on_error="report")
        assert values == {} and skipped == {"broken_metric_for_test": "error: RuntimeError: boom"}
    finally:
        metrics.METRICS.unregister("broken_metric_for_test")


def test_each_metric_gets_its_own_key_independent_of_the_others(gaussian_target):
    seen = {}

    def record(name):
        def fn(ctx):
            seen[name] = np.asarray(jax.random.key_data(ctx.key))
            return {f"{name}/value": 0.0}

        return fn

    for name in ("key_probe_a", "key_probe_b"):
        metrics.register_metric(name, record(name))
    try:
        ctx = metrics.EvalContext(jax.random.key(7), gaussian_target, jnp.zeros((4, DIM)))
        metrics.evaluate(ctx, names=["key_probe_a", "key_probe_b"])
        both = dict(seen)
        metrics.evaluate(ctx, names=["key_probe_b"])
        assert not np.array_equal(both["key_probe_a"], both["key_probe_b"])
        np.testing.assert_array_equal(seen["key_probe_b"], both["key_probe_b"])
    finally:
        metrics.METRICS.unregister("key_probe_a")
        metrics.METRICS.unregister("key_probe_b")


def test_cost_metrics_names_and_validation():
    out = metrics.cost_metrics(Cost.of(10, 20, 30, 40), 1.5, 0.25, 3.0)
    assert out == {
        "cost/energy_evals": 10.0,
        "cost/grad_evals": 20.0,
        "cost/network_evals": 30.0,
        "cost/sde_steps": 40.0,
        "time/train_s": 1.5,
        "time/sample_s": 0.25,
        "time/compile_s": 3.0,
    }
    with pytest.raises(ValueError, match="sde_steps"):
        metrics.cost_metrics({"energy_evals": 1, "grad_evals": 1, "network_evals": 1}, 0, 0, 0)


def test_noise_floors_are_computed_once_per_reference_pair():
    """The floor between the two reference sets is memoised on their values: the weighted pass and
    the other cells of a grid process reuse it; different reference values recompute it."""
    from benchmarks.metrics.base import noise_floor

    calls = []

    def floor(a, b, *, scale):
        calls.append(1)
        return float(np.sum(a) - np.sum(b)) * scale

    a, b = np.arange(6.0).reshape(3, 2), np.ones((3, 2))
    first = noise_floor(floor, a, jnp.asarray(b), scale=2.0)
    assert noise_floor(floor, a.copy(), jnp.asarray(b), scale=2.0) == first and len(calls) == 1
    assert noise_floor(floor, a + 1, jnp.asarray(b), scale=2.0) == first + 12.0 and len(calls) == 2
    assert noise_floor(floor, a, jnp.asarray(b), scale=3.0) == 1.5 * first and len(calls) == 3


def test_noise_floors_are_computed_at_the_size_of_the_comparison(gaussian_target):
    """Reference sets of different sizes raise; fewer model draws than reference rows raise (the floor
    would be at a larger size); more draws are cut to the reference size for the floored metrics."""
    keys = jax.random.split(jax.random.key(2), 3)
    ref, ref2 = (jax.random.normal(k, (16, DIM)) for k in keys[:2])
    x = jax.random.normal(keys[2], (32, DIM)) + 0.5
    ctx = metrics.EvalContext(jax.random.key(3), gaussian_target, x, reference=ref, reference2=ref2)
    with pytest.raises(ValueError, match="noise floor must be computed at the sample size"):
        metrics.evaluate(ctx._replace(reference2=ref2[:8]), ["mmd_rbf_median"])
    with pytest.raises(ValueError, match="8 model draws against 16 reference rows"):
        metrics.evaluate(ctx._replace(x=x[:8]), ["mmd_rbf_median"])
    cut, _ = metrics.evaluate(ctx._replace(x=x[:16]), ["mmd_rbf_median"])
    full, _ = metrics.evaluate(ctx, ["mmd_rbf_median"])
    assert full == cut
