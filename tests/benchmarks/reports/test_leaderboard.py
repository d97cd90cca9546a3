"""Leaderboard aggregation, bootstrap intervals, and the record files it reads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.grid.records import atomic_write_json, iter_records, read_record
from benchmarks.reports.leaderboard import aggregate, bootstrap_ci, build_leaderboard


def _record(method, target, seed, status="ok", **metrics):
    return {
        "suite": "s",
        "method": method,
        "target": target,
        "seed": seed,
        "status": status,
        "budget": {"name": "b", "train_steps": 1, "chunk_size": 1, "max_evals": None},
        "commit": "abc",
        "hardware": {"backend": "cpu", "device_kind": "cpu", "cpu": "x", "cpu_count": 2},
        "metrics": metrics,
        "trace": [],
        "message": "boom" if status != "ok" else "",
    }


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.normal(3.0, 1.0, size=5)
    big = rng.normal(3.0, 1.0, size=500)
    m1, lo1, hi1 = bootstrap_ci(small)
    m2, lo2, hi2 = bootstrap_ci(big)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert hi2 - lo2 < hi1 - lo1
    # the 95% interval of the mean is about ±1.96 σ/√n
    assert abs((hi2 - lo2) / 2 - 1.96 / math.sqrt(500)) < 0.03
    assert bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def test_atomic_json_round_trips_non_finite_values(tmp_path):
    path = tmp_path / "a" / "r.json"
    rec = _record("m", "t", 0, **{"logZ/error": float("nan"), "x": float("inf")})
    rec["trace"] = [{"evals": 10.0, "logZ_error": float("nan")}]  # a NaN trace point (seen in a real run)
    atomic_write_json(path, rec)
    rec = read_record(path)
    assert math.isnan(rec["metrics"]["logZ/error"]) and rec["metrics"]["x"] == math.inf
    assert math.isnan(rec["trace"][0]["logZ_error"])
    json.loads(path.read_text())  # strict JSON on disk
    assert not list(tmp_path.rglob("*.tmp"))


def test_aggregate_and_tables(tmp_path):
    runs = tmp_path / "runs" / "s"
    for seed, err in enumerate([0.1, 0.3]):
        atomic_write_json(runs / f"good_{seed}.json", _record("good", "g", seed, **{"logZ/error": err}))
        atomic_write_json(runs / f"bad_{seed}.json", _record("bad", "g", seed, **{"logZ/error": 5.0}))
    diverged = _record("bad", "g", 2, status="diverged")
    diverged["train"] = {"info": {}, "findings": ["buffer ESS 0.0004 < 1% of the buffer at step 300"]}
    atomic_write_json(runs / "div.json", diverged)
    agg = aggregate(list(iter_records(tmp_path / "runs")))
    good = agg[("s", "g", "good", "b")]
    assert good["stats"]["logZ/error"][0] == pytest.approx(0.2)
    bad = agg[("s", "g", "bad", "b")]
    assert bad["status"]["diverged"] == 1 and bad["n_seeds"] == 3
    summary = build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"), figures=False)
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert md.index("`good`") < md.index("`bad`"), "rows are sorted by log-Z error"
    assert "1 diverged" in md
    assert "- `bad` (b), seed 2: buffer ESS 0.0004 < 1% of the buffer at step 300" in md  # train.findings
    rows = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert rows[0].startswith("suite,target,method") and len(rows) == 3
    assert summary["suites"]["s"]["records"] == 5


def test_failed_accuracy_is_counted_and_not_averaged(tmp_path):
    """Two working seeds and one whose |log Z error| is 10⁴: the row gives the median [min, max]
    (marked), counts the failed seed and names its reason; a group with no failure keeps the mean."""
    runs = tmp_path / "runs" / "s"
    for seed, err in enumerate([0.1, 0.3, 1e4]):
        atomic_write_json(runs / f"mix_{seed}.json", _record("mix", "g", seed, **{"logZ/error": err}))
        atomic_write_json(runs / f"fine_{seed}.json", _record("fine", "g", seed, **{"logZ/error": 0.2}))
    agg = aggregate(list(iter_records(tmp_path / "runs")))
    mix = agg[("s", "g", "mix", "b")]
    assert mix["statistic"] == "median" and mix["accuracy_failed"] == 1
    assert mix["stats"]["logZ/error"] == (0.3, 0.1, 1e4)
    assert agg[("s", "g", "fine", "b")]["statistic"] == "mean"
    build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"), figures=False)
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| `mix` | b | 3/3 | 1/3 | 0.3 (median) [0.1, 1e+04] |" in md
    assert "| `fine` | b | 3/3 | 0 | 0.2 |" in md
    assert "- `mix` (b), seed 2: |log Z error| 1e+04 > 10 nats" in md
    rows = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert "statistic,n_accuracy_failed" in rows[0] and any(",median_min_max,1," in r for r in rows)


def test_particle_tables_lead_with_energy_and_distance_laws_and_check_floors(tmp_path):
    """A particle target's table leads with energy W2, keeps MMD out of the Markdown (not the CSV),
    and states each floor beside the best published value: lj13's eq-W2 floor 1.63 is not below
    ASBS's 1.59, so the table says the metric cannot rank there; its energy-W2 floor 0.3 is."""
    runs = tmp_path / "runs" / "s"
    metrics = {
        "energy_w2": 5.0,
        "energy_w2/noise_floor": 0.3,
        "eq_w2": 2.0,
        "eq_w2/noise_floor": 1.63,
        "eq_w2/num_samples": 1000.0,
        "mmd2/rbf_median": 1e-4,
        "logZ/error": 1.0,
        "eval/reference_rows": 2000.0,
    }
    for seed in range(2):
        atomic_write_json(runs / f"as_{seed}.json", _record("as", "lj13", seed, **metrics))
    build_leaderboard(str(tmp_path / "runs"), str(tmp_path / "out"), figures=False)
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.split(" | ")[4] == "energy W2" and "MMD" not in header
    assert "- energy_w2: noise floor 0.3 at 2000 rows" in md and "below it: the metric can rank" in md
    assert "- eq_w2: noise floor 1.63 at 1000 rows" in md and "cannot rank methods near the published" in md
    assert "mmd2/rbf_median" in (tmp_path / "out" / "leaderboard.csv").read_text()
    # the published values with the same definitions, best first, with their source
    assert "- eq. W2: ASBS 1.59 ± 0.03, iDEM 1.61 ± 0.01, AS 1.67 ± 0.01" in md
    assert "[Liu et al. 2025 (ASBS), Table 2]" in md


def test_a_shipped_suite_section_says_how_many_of_its_cells_are_recorded():
    from benchmarks.grid.suites import load_suite
    from benchmarks.reports.leaderboard import suite_coverage

    cells = load_suite("quick").cells()
    records = [_record(c.method, c.target, c.seed) | {"budget": {"name": c.budget}} for c in cells]
    assert suite_coverage("quick", records) == f"- cells: all {len(cells)} of the suite recorded"
    partial = suite_coverage("quick", records[:3])
    assert partial.startswith(f"- **partial section**: 3 of the suite's {len(cells)} cells recorded")
    assert "tiltbench benchmark --suite quick" in partial
    assert suite_coverage("s", records) is None  # a user's own suite: no expected grid


def test_cells_that_overspent_their_budget_are_named_with_the_ratio():
    from benchmarks.reports.leaderboard import over_budget

    def spent(method, target, seed, ratio):
        return _record(method, target, seed) | {"budget_spent": {"spent_ratio": ratio}}

    records = [
        spent("nuts", "mog50", 0, 1.78),
        spent("nuts", "mog50", 1, 1.93),
        spent("smc", "mog50", 0, 1.04),  # within the tolerance
        spent("cmcd_kl", "gmm40", 0, 1.41),
        _record("mala", "gmm40", 0),  # no budget at all
    ]
    line = over_budget(records)
    assert line.startswith("- **over budget** (spent more than 1.05× `max_evals`")
    assert "`cmcd_kl` on gmm40 (1 cell, 1.41×), `nuts` on mog50 (2 cells, 1.78–1.93×)" in line
    assert "smc" not in line
    assert over_budget(records[2:3] + records[4:]) is None
    assert "infeasible" not in line
    # a budget too small for the minimum work (at the first plan or at the re-plan) is named infeasible
    too_small = [
        spent("nuts", "lj13", 0, 1.34) | {"budget_plan": {"feasible": False}},
        spent("nuts", "lj13", 1, 1.32)
        | {"budget_plan": {"feasible": True, "replanned": {"feasible": False}}},
        spent("nuts", "lj55", 0, 1.10) | {"budget_plan": {"feasible": True}},
        spent("nuts", "lj55", 1, 1.70) | {"budget_plan": {"feasible": False}},
    ]
    line = over_budget(too_small)
    assert "infeasible: the budget does not pay for the method's minimum work" in line
    assert (
        "`nuts` on lj13 (2 cells, 1.32–1.34×; all infeasible), "
        "`nuts` on lj55 (2 cells, 1.10–1.70×; 1 infeasible)" in line
    )
