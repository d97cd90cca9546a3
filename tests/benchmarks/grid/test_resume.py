"""Resume re-runs exactly the cells whose inputs changed (target fingerprint, settings), and `retry`
re-runs failed ones; the `only` filters name what they select or fail listing the valid values."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import pytest

import targets
from benchmarks.grid.cell import changed_inputs
from benchmarks.grid.records import RETRY, iter_records, read_record
from benchmarks.grid.runner import parse_only, plan_cells, run_suite, select_cells
from benchmarks.grid.suites import load_suite
from tests.benchmarks import toy_method

TARGET = "resume_user_target"


@pytest.fixture(autouse=True, scope="module")
def _user_target(toy_methods):
    yield
    if TARGET in targets.TARGETS:
        targets.TARGETS.unregister(TARGET)


def _suite(tmp_path: Path, methods=("toy_is",)):
    return load_suite(
        str(toy_method.write_suite(tmp_path, "resume", methods=list(methods), targets=[TARGET]))
    )


def _register(scale: float) -> None:
    targets.register_target(TARGET, lambda x: -0.5 * jnp.sum(x**2) / scale**2, dim=2, overwrite=True)


def test_a_fixed_target_is_rerun_not_reported_as_done(tmp_path):
    _register(1.0)
    suite, out = _suite(tmp_path), tmp_path / "runs"
    assert len(run_suite(suite, out, progress=False, log=lambda s: None)) == 1
    first = read_record(next(out.rglob("seed0.json")))
    lines: list[str] = []
    assert run_suite(suite, out, progress=False, log=lines.append) == []  # unchanged: resumed
    assert "1 already done, 0 to run" in lines[0]
    _register(2.0)  # the user fixes the target
    lines.clear()
    rerun = run_suite(suite, out, progress=False, log=lines.append)
    assert len(rerun) == 1 and "1 inputs changed" in lines[0]
    assert any("inputs changed: target_fingerprint" in line for line in lines), lines
    second = read_record(next(out.rglob("seed0.json")))
    assert second["target_fingerprint"] != first["target_fingerprint"]
    assert second["inputs"]["target_fingerprint"] == second["target_fingerprint"]
    assert len(list(iter_records(out))) == 1


def test_changed_settings_are_detected_and_added_fields_are_not():
    record = {
        "target_fingerprint": "f",
        "config": {"problem": {"num_steps": 10}, "method": {"lr": 0.1}},
        "budget": {"name": "b"},
        "num_samples": 64,
    }
    current = {
        "target_fingerprint": "f",
        "problem": {"num_steps": 10},
        "method": {"lr": 0.1, "added_later": 1},
        "budget": {"name": "b"},
        "num_samples": 64,
    }
    assert changed_inputs(record, current) == []  # a field the record predates is a code change
    assert changed_inputs(record, {**current, "method": {"lr": 0.2}}) == ["method"]
    assert changed_inputs(record, {**current, "num_samples": 128}) == ["num_samples"]
    assert changed_inputs({**record, "target_fingerprint": None}, current) == ["target_fingerprint"]
    # ... unless the table or suite sets the added field away from its default: the record ran without it
    defaults = {"method": {"lr": 1e-3, "added_later": 1, "network": {"clip": None, "width": 8}}}
    assert changed_inputs(record, current, defaults) == []  # added, at its default
    assert changed_inputs(record, {**current, "method": {"lr": 0.1, "added_later": 2}}, defaults) == [
        "method"
    ]
    nested = {**record, "config": {**record["config"], "method": {"lr": 0.1, "network": {"width": 8}}}}
    at_default = {**current, "method": {"lr": 0.1, "network": {"width": 8, "clip": None}}}
    assert changed_inputs(nested, at_default, defaults) == []
    set_away = {**current, "method": {"lr": 0.1, "network": {"width": 8, "clip": 1e4}}}
    assert changed_inputs(nested, set_away, defaults) == ["method"]


def test_failed_cells_are_kept_unless_retried(tmp_path):
    _register(1.0)
    suite, out = _suite(tmp_path, methods=("toy_error", "toy_nan")), tmp_path / "runs"
    first = run_suite(suite, out, progress=False, log=lambda s: None)
    assert sorted(r["status"] for r in first) == ["diverged", "error"]
    assert plan_cells(suite, out, select_cells(suite), log=lambda s: None) == []  # kept by default
    todo = plan_cells(suite, out, select_cells(suite), retry=RETRY["failed"], log=lambda s: None)
    assert sorted(p.why for p in todo) == ["retry diverged", "retry error"]
    assert len(run_suite(suite, out, retry=RETRY["failed"], progress=False, log=lambda s: None)) == 2


@pytest.mark.parametrize(
    ("only", "match"),
    [
        (["method=typo"], "method=typo matches no method of suite 'resume'; valid methods: toy_is"),
        (["target=typo"], f"valid targets: {TARGET}"),
        (["seed=7"], "valid seeds: 0"),
        (["budget=b,nope"], "budget=nope matches no budget"),
    ],
)
def test_only_values_that_match_nothing_list_the_valid_ones(tmp_path, only, match):
    _register(1.0)
    with pytest.raises(ValueError, match=match):
        select_cells(_suite(tmp_path), only=parse_only(only))


def test_inputs_read_back_from_a_record_equal_the_present_ones(tmp_path):
    from benchmarks.grid.cell import _canonical
    from benchmarks.grid.records import atomic_write_json

    inputs = _canonical({"method": {"clip": float("inf"), "hidden": (64, 64)}, "num_samples": 64})
    atomic_write_json(tmp_path / "r.json", {"inputs": inputs})
    stored = json.loads((tmp_path / "r.json").read_text())["inputs"]
    assert stored == inputs  # else every resume would re-run a config holding inf or a tuple
