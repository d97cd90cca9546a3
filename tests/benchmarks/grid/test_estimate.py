"""`tiltbench benchmark --estimate`: cells still to run, projected from the rates the records on disk
measured (per-step seconds and fixed seconds per cell), unmeasured cells listed, nothing run."""

from __future__ import annotations

import pytest

from benchmarks import cli
from benchmarks.grid.estimate import Rate, _projected, estimate_suite, measured_rates, tuning_rates
from benchmarks.grid.records import atomic_write_json
from benchmarks.grid.runner import _Inputs, select_cells
from benchmarks.grid.suites import load_suite
from tests.benchmarks import toy_method

pytestmark = pytest.mark.usefixtures("toy_methods")


def _record(method, target, seed, *, train_s, steps, wall, backend="cpu"):
    return {
        "suite": "measured",
        "method": method,
        "target": target,
        "seed": seed,
        "status": "ok",
        "budget": {"name": "b", "train_steps": steps, "chunk_size": 1, "max_evals": None},
        "commit": "abc",
        "hardware": {"backend": backend},
        "trace": [],
        "metrics": {"time/train_s": train_s, "cost/train_steps": float(steps)},
        "wall_time_s": wall,
    }


def test_estimate_projects_fixed_plus_steps_times_the_measured_rate(tmp_path, capsys):
    runs = tmp_path / "runs"
    # toy_is on gaussian: 0.5 s/step and 10 s fixed (median of three records; a GPU record is ignored)
    for seed, (train_s, wall) in enumerate([(5.0, 15.0), (5.0, 15.0), (50.0, 100.0)]):
        atomic_write_json(
            runs / "measured" / f"r{seed}.json",
            _record("toy_is", "gaussian", seed, train_s=train_s, steps=10, wall=wall),
        )
    atomic_write_json(
        runs / "measured" / "gpu.json",
        _record("toy_is", "gaussian", 9, train_s=0.1, steps=10, wall=1.0, backend="gpu"),
    )
    rate = measured_rates(runs, "cpu")[("toy_is", "gaussian")]
    assert (rate.seconds_per_step, rate.fixed_s, rate.records, rate.other_hardware) == (0.5, 10.0, 3, False)

    path = toy_method.write_suite(
        tmp_path,
        targets=["gaussian", "gmm9"],
        seeds=[0, 1],
        budgets={"b": {"train_steps": 100, "chunk_size": 10}},
    )
    suite = load_suite(str(path))
    cells = select_cells(suite)
    done = _record("toy_is", "gaussian", 0, train_s=1.0, steps=100, wall=60.0)
    done["inputs"] = _Inputs(suite)(cells[0])  # what the run compares on resume
    atomic_write_json(cells[0].path(runs, suite.name), done)
    est = estimate_suite(suite, cells, runs)
    assert (est.selected, est.done, est.to_run, est.unmeasured) == (4, 1, 3, 2)
    assert est.reasons == " (3 new)"
    # the estimate plans as the run does: forced, or with a record whose inputs changed, the cell runs
    assert estimate_suite(suite, cells, runs, force=True).to_run == 4
    stale = {**done, "inputs": {**done["inputs"], "num_samples": 1}}
    atomic_write_json(cells[0].path(runs, suite.name), stale)
    assert estimate_suite(suite, cells, runs).reasons == " (1 inputs changed, 3 new)"
    atomic_write_json(cells[0].path(runs, suite.name), done)
    # a corrupt record: reported by name, counted to run, left in place (the run moves it aside)
    corrupt = cells[1].path(runs, suite.name)
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_text('{"suite": ')
    warnings: list[str] = []
    assert estimate_suite(suite, cells, runs, log=warnings.append).reasons == " (1 corrupt record, 2 new)"
    assert len(warnings) == 1 and str(corrupt) in warnings[0] and corrupt.exists()
    corrupt.unlink()
    # the done cell's own record joins the rates: median over 4 records of (0.5, 0.5, 5, 0.01) s/step
    assert est.projected_s == pytest.approx(
        measured_rates(runs, "cpu")[("toy_is", "gaussian")].fixed_s + 100 * 0.5
    )
    assert cli.main(["benchmark", "--suite", str(path), "--out", str(runs), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "| toy_is | gmm9 | 2 | — | — | unmeasured |" in out
    assert "4 cells selected, 1 done, 3 to run (3 new); 1 with measured rates project to" in out
    assert not (runs / "t" / "toy_is" / "gmm9").exists(), "the estimate runs nothing"


def test_an_unrecorded_pair_is_projected_from_its_timed_tuning_trials(tmp_path, capsys):
    tuned = tmp_path / "tuned"
    trial = {"status": "ok", "train_steps": 10.0, "train_s": 2.0, "train_evals": 100.0, "wall_s": 7.0}
    atomic_write_json(
        tuned / "toy_is__gmm9.json",
        {
            "method": "toy_is",
            "target": "gmm9",
            "hardware": {"backend": "cpu"},
            "trials": [trial, {**trial, "train_s": 4.0, "wall_s": 9.0}, {"status": "error"}],
        },
    )
    atomic_write_json(
        tuned / "toy_is__gaussian.json",
        {
            "method": "toy_is",
            "target": "gaussian",
            "trials": [
                {"status": "ok", "evals": 1.0}  # written before trials were timed: no rate
            ],
        },
    )
    rates = tuning_rates(tuned, "cpu")
    assert set(rates) == {("toy_is", "gmm9")}
    rate = rates[("toy_is", "gmm9")]
    assert (rate.seconds_per_step, rate.evals_per_step, rate.fixed_s, rate.source) == (
        pytest.approx(0.3),
        10.0,
        5.0,
        "tuning trials",
    )
    path = toy_method.write_suite(
        tmp_path, targets=["gaussian", "gmm9"], budgets={"b": {"train_steps": 100, "chunk_size": 10}}
    )
    suite = load_suite(str(path))
    est = estimate_suite(suite, select_cells(suite), tmp_path / "runs", tuned_dir=tuned)
    assert est.unmeasured == 1 and est.projected_s == pytest.approx(5.0 + 100 * 0.3)
    assert "(from tuning trials)" in "\n".join(est.lines())


class _CappedBudget:
    """A budget of 200 steps in chunks of 50 under a 150 s wall cap and no evaluation budget."""

    train_steps, chunk_size = 200, 50

    def evals_for(self, target):
        return None

    def train_cap_for(self, target):
        return 150.0


@pytest.mark.parametrize(
    ("s_per_step", "steps"),
    [
        (45.0, 50),  # one chunk outlasts the cap, and it still runs whole
        (1.0, 200),  # the third boundary falls on the cap, not past it: the fourth chunk runs
        (0.5, 200),  # the cap is never reached
        (2.0, 100),  # boundaries at 100 s and 200 s: training stops after the second chunk
    ],
)
def test_a_wall_cap_stops_at_the_first_chunk_boundary_past_it(s_per_step, steps):
    rate = Rate(s_per_step, 1.0, 10.0, 0.0, 1, False, "records")
    assert _projected(rate, _CappedBudget(), "t") == pytest.approx(10.0 + steps * s_per_step)
