"""Smoke test of the gradient-variance report (quick configuration; slow: ~10 compilations)."""

from __future__ import annotations

import json

import pytest

from benchmarks.experiments.claims_grad_variance import grad_variance_report


@pytest.mark.slow
def test_quick_report_writes_table_figure_and_record(tmp_path):
    record = grad_variance_report(out_dir=str(tmp_path), quick=True)
    for name in ("grad_variance.md", "grad_variance.png", "grad_variance.json"):
        assert (tmp_path / name).stat().st_size > 0
    stored = json.loads((tmp_path / "grad_variance.json").read_text())
    assert stored["seed"] == 0 and stored["quick"] is True and "commit" in stored and "environment" in stored
    targets_seen = {row["target"] for row in record["rows"]}
    assert targets_seen == {"gaussian_correlated", "gmm40"}
    losses = {row["loss"] for row in record["rows"]}
    assert {"adjoint_sampling", "target_score_matching", "conditional_score_matching"} <= losses
    assert all(row["trace_cov"] >= 0 for row in record["rows"])
    assert "| adjoint_sampling |" in (tmp_path / "grad_variance.md").read_text()
