"""Tests of the gradient-variance report: the verdict rule on synthetic profiles, the training table, and
smoke tests of the quick report and of one tiny training run (slow: compilations)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.experiments import claims_grad_variance as report
from benchmarks.experiments import claims_training as ct
from benchmarks.experiments.claims_grad_variance import grad_variance_report

DELTAS = (0.1, 0.01, 1e-3, 1e-4)


def _rows(loss: str, start_exponent: float, end_exponent: float) -> list[dict]:
    """Synthetic rows of one loss: fixed-time and window profiles ∝ δ^p at each end, 5% SE."""
    rows = []
    for sweep, p in (
        ("at_start", start_exponent),
        ("start", start_exponent),
        ("at_end", end_exponent),
        ("end", end_exponent),
    ):
        for d in DELTAS:
            v = 2.0 * d**p
            rows.append(
                dict(target="toy", loss=loss, sweep=sweep, delta=d, trace_cov=v, trace_cov_se=0.05 * v)
            )
    return rows


def test_verdicts_follow_the_stated_rule():
    rows = (
        _rows("adjoint_sampling", 0.0, 1.0)
        + _rows("target_score_matching", -2.0, 1.0)
        + _rows("conditional_score_matching", 0.0, -1.0)
        + _rows("adjoint_matching", -1.0, 0.0)  # a log-divergence where the claim expects finite
    )
    entries = {e["loss"]: e for e in report.verdicts(rows)}
    assert entries["adjoint_sampling"]["finite"] and entries["adjoint_sampling"]["matches_claim"]
    assert not entries["target_score_matching"]["start"]["finite"]
    assert (
        entries["target_score_matching"]["end"]["finite"]
        and entries["target_score_matching"]["matches_claim"]
    )
    assert not entries["conditional_score_matching"]["finite"]
    assert entries["conditional_score_matching"]["matches_claim"]
    assert not entries["adjoint_matching"]["matches_claim"]
    tsm = entries["target_score_matching"]["start"]
    np.testing.assert_allclose(tsm["exponent"], -2.0)
    assert tsm["deltas"] == [1e-4, 1e-3, 0.01]  # δ <= 0.01 only
    np.testing.assert_allclose(tsm["growth"], (1e-4 / 0.1) ** -2.0)
    np.testing.assert_allclose(tsm["growth_se"], tsm["growth"] * np.hypot(0.05, 0.05))
    table = report._verdict_table(list(entries.values()))
    assert "| toy | adjoint_matching |" in table and "**no**" in table


def test_equal_budget_table_reads_the_last_point_within_each_budget():
    def run(method, seed, gaps):
        trace = [{"evals": e, "objective_gap": g, "objective_gap_se": 0.01} for e, g in gaps]
        return {"method": method, "seed": seed, "trace": trace}

    runs = [
        run("adjoint_matching", 0, [(512, 2.0), (1024, 1.0)]),
        run("adjoint_matching", 1, [(512, 3.0), (1024, 2.0)]),
        run("adjoint_sampling", 0, [(2048, 0.5)]),
        run("adjoint_sampling", 1, [(2048, 0.7)]),
    ]
    table = ct.equal_budget_table(runs, (1000.0, 2048.0))
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "**2.500** (2.000 ± 0.010 / 3.000 ± 0.010)" in lines["adjoint_matching"]
    assert "**1.500**" in lines["adjoint_matching"]
    assert "| — |" in lines["adjoint_sampling"] and "**0.600**" in lines["adjoint_sampling"]
    for r in runs:
        r["steps"] = 10
    line = ct.ranking_line(runs, 2048.0)
    assert line.index("adjoint_sampling 0.600") < line.index("adjoint_matching 1.500")
    assert "(10 steps, 102 evaluations per step)" in line  # 1024 evaluations over 10 steps
    for r in runs:
        r["config"] = {"t_min": 0.001, "loss_weighting": "paper", "batch_size": 4}
    assert "adjoint_matching: loss_weighting paper, t_min 0.001;" in ct.settings_line(runs)


@pytest.mark.slow
def test_quick_report_writes_table_figure_and_record(tmp_path):
    record = grad_variance_report(out_dir=str(tmp_path), quick=True)
    for name in ("grad_variance.md", "grad_variance.png", "grad_variance.json"):
        assert (tmp_path / name).stat().st_size > 0
    stored = json.loads((tmp_path / "grad_variance.json").read_text())
    assert stored["seed"] == 0 and stored["quick"] is True and "commit" in stored and "environment" in stored
    targets_seen = {row["target"] for row in record["rows"]}
    assert targets_seen == set(report.QUICK_TARGETS) == {"gaussian_correlated", "ft_gmm2d_quadratic"}
    losses = {row["loss"] for row in record["rows"]}
    assert {"adjoint_sampling", "target_score_matching", "conditional_score_matching"} <= losses
    assert all(row["trace_cov"] >= 0 for row in record["rows"])
    assert len(stored["verdicts"]) == len(targets_seen) * len(losses) and stored["training"] is None
    text = (tmp_path / "grad_variance.md").read_text()
    assert "| adjoint_sampling |" in text and "## Verdict per loss and task" in text


@pytest.mark.slow
def test_training_run_traces_the_objective_gap_within_the_budget():
    config = ct.TrainingConfig(
        methods=("conditional_score_matching",),
        seeds=(0,),
        max_evals=1500.0,
        chunk_size=5,
        num_eval=64,
        overrides={"network.hidden": (8,), "batch_size": 16, "resample_size": 256, "refresh_every": 5},
    )
    (run,) = ct.training_comparison(config)
    assert run["trace"] and all(np.isfinite(p["objective_gap"]) for p in run["trace"])
    assert run["trace"][-1]["evals"] <= config.max_evals
    assert run["steps"] == run["trace"][-1]["step"] > 0
