"""The cell pipeline: a typed record that passes the record schema, samples returned beside it,
progress reported after every training chunk, and the applicability check of the method spec."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks.grid.cell import CellRecord, Monitor, _unusable_draws, resolve_cell, run_cell, train_cell
from benchmarks.grid.records import validate_record
from benchmarks.grid.suites import Budget, Cell, load_suite
from benchmarks.metrics.accuracy import assess
from benchmarks.perf.cells import build_cell
from tests.benchmarks import toy_method

pytestmark = pytest.mark.usefixtures("toy_methods")


def test_run_cell_returns_a_typed_record_and_the_samples_beside_it(tmp_path):
    path = toy_method.write_suite(tmp_path, budgets={"b": {"train_steps": 3, "chunk_size": 1}})
    seen: list[tuple] = []

    class Progress:
        def phase(self, name):
            seen.append(name)

        def chunk(self, step, num_steps, loss):
            seen.append((step, num_steps, loss))

    result = run_cell(Cell("toy_is", "gaussian", "b", 0), load_suite(str(path)), progress=Progress())
    assert isinstance(result.record, CellRecord) and result.record.status == "ok", result.record.message
    # the toy method's loss is 0
    assert seen == ["resolving", "training", (1, 3, 0.0), (2, 3, 0.0), (3, 3, 0.0), "sampling", "scoring"]
    assert result.samples.shape == (64, 2)
    record = result.record.to_dict()
    validate_record(record)
    assert "_samples" not in record and "message" not in record
    assert record["inputs"]["target_fingerprint"] == record["target_fingerprint"]
    # the Info history's summary and findings, and which parameters sampled
    assert record["train"]["info"]["loss"]["last"] == 0.0 and record["train"]["findings"] == []
    assert record["train"]["sampled_params"] in ("ema", "trained", "none")
    # a weighted sampler's sample metrics on raw draws and on draws resampled by weight
    assert "mmd2/rbf_median" in record["metrics"] and "weighted/mmd2/rbf_median" in record["metrics"]
    assert "weighted/mmd2/rbf_median/noise_floor" not in record["metrics"]
    # the accuracy status beside the run status: assess of the record's own metrics
    judged = assess(record["metrics"])
    assert record["accuracy"] == {
        "status": judged.accuracy,
        "reasons": list(judged.reasons),
        "warnings": list(judged.warnings),
    }
    # where the wall time went: the phases add up to it, every metric is timed, both passes
    time = record["time"]
    assert set(time["phases_s"]) >= {"resolving", "training", "sampling", "reference", "metrics"}
    assert abs(sum(time["phases_s"].values()) + time["unaccounted_s"] - record["wall_time_s"]) < 1e-6
    assert 0 <= time["unaccounted_s"] < 0.01 * record["wall_time_s"]
    assert {"mmd_rbf_median", "weighted/mmd_rbf_median"} <= set(time["metrics_s"])
    assert set(time["training"]) == {
        "steps_run_s",
        "steps_compile_s",
        "probe_s",
        "probe_first_call_s",
        "other_s",
    }
    assert set(time["sampling"]) == {"compile_s", "run_s"}


def test_applicability_is_the_method_specs_answer():
    resolved = resolve_cell("nuts", "ft_gmm2d_linear")
    assert "data law's density" in resolved.spec.applicable(resolved.problem)
    with pytest.raises(ValueError, match="nuts on ft_gmm2d_linear: .*data law's density"):
        build_cell("nuts", "ft_gmm2d_linear")


def test_a_monitor_replaces_the_probe_and_the_budget_stop():
    """A caller's monitor sees every chunk's state and stops training where it says (the
    cost-to-accuracy cells use this); it cannot be combined with an evaluation budget."""
    resolved = resolve_cell("toy_is", "gaussian")
    method = resolved.spec.build(resolved.problem, resolved.config)
    seen: list[int] = []
    monitor = Monitor(lambda state: seen.append(len(seen)) or {"n": len(seen)}, lambda state: len(seen) >= 2)
    key = jax.random.key(0)
    trained = train_cell(key, method, resolved.problem, Budget("b", 10**7, 4), key, monitor=monitor)
    assert seen == [0, 1] and trained.steps == 8 and trained.trace == []
    assert trained.history["step"].tolist() == [4, 8] and trained.history["eval/n"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="monitor replaces the budget stop"):
        train_cell(key, method, resolved.problem, Budget("b", 8, 4), key, monitor=monitor, max_evals=1e3)


def test_a_wall_cap_stops_training_at_a_chunk_boundary_and_says_so(tmp_path):
    path = toy_method.write_suite(  # a per-target cap, as max_evals takes it
        tmp_path, budgets={"b": {"train_steps": 5, "chunk_size": 1, "max_train_s": {"gaussian": 1e-9}}}
    )
    record = run_cell(Cell("toy_is", "gaussian", "b", 0), load_suite(str(path))).record
    assert record.status == "ok" and record.metrics["cost/train_steps"] == 1
    assert record.budget_plan == {"note": "training stopped at the wall cap of 1e-09 s after 1 steps"}
    assert record.budget["max_train_s"] == 1e-9
    bad = toy_method.write_suite(
        tmp_path, name="bad", budgets={"b": {"train_steps": 5, "chunk_size": 1, "max_train_s": -1}}
    )
    with pytest.raises(ValueError, match="max_train_s must be a positive number"):
        load_suite(str(bad))


def test_a_step_cap_replaces_the_wall_cap_of_its_pair_and_is_recorded(tmp_path):
    path = toy_method.write_suite(
        tmp_path,
        targets=["gaussian", "gmm9"],
        budgets={
            "b": {
                "train_steps": 5,
                "chunk_size": 1,
                "max_train_s": 1e-9,
                "step_caps": {"toy_is/gaussian": 3, "_derived": ["a note"]},
            }
        },
    )
    suite = load_suite(str(path))
    record = run_cell(Cell("toy_is", "gaussian", "b", 0), suite).record
    assert record.status == "ok" and record.metrics["cost/train_steps"] == 3
    assert "max_train_s" not in record.budget and (
        record.budget["train_steps"],
        record.budget["step_cap"],
    ) == (3, 3)
    assert not record.budget_plan  # no wall-cap note: the cap did not apply
    # a pair without a step cap keeps the wall cap, and its record's budget has no step_cap
    other = suite.budget("b").for_cell("toy_is", "gmm9")
    assert (other.train_steps, other.max_train_s, other.for_target("gmm9").get("step_cap")) == (5, 1e-9, None)
    for caps, match in [
        ({"toy_is/nowhere": 3}, "not '<method>/<target>' of the suite"),
        ({"toy_is": 3}, "not '<method>/<target>' of the suite"),
        ({"toy_is/gaussian": 0}, "must be an integer >= 1"),
        ([3], "step_caps must be an object"),
    ]:
        bad = toy_method.write_suite(
            tmp_path, name="bad", budgets={"b": {"train_steps": 5, "chunk_size": 1, "step_caps": caps}}
        )
        with pytest.raises(ValueError, match=match):
            load_suite(str(bad))


def test_unusable_draws_are_counted_in_the_diverged_message():
    x = np.zeros((6, 2, 3))
    assert _unusable_draws(x, np.full(6, -np.inf)) is None  # weight-0 draws are allowed
    x[1, 0, 2], x[4, 1, 1] = np.nan, np.inf
    log_w = np.array([0.0, np.nan, 0.0, 0.0, 0.0, np.nan])
    assert _unusable_draws(x, log_w).endswith("2 of 6 draws non-finite, 2 of 6 log-weights NaN")
