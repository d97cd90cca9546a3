"""Tests of `benchmarks/experiments/claims.py`: the lean-adjoint report writes its table, figure and
record."""

from __future__ import annotations

import json

import pytest

import targets
from benchmarks.experiments import claims
from samplers.base_processes import VPBase
from samplers.claims import lean_adjoint as la
from samplers.methods.adjoint_matching import AdjointMatchingConfig
from samplers.problem import sampling_problem


def test_lean_adjoint_report_writes_files(tmp_path, monkeypatch):
    target = targets.get("gaussian_correlated")
    tiny = la.LeanAdjointCase(
        name="vp/gaussian_correlated",
        problem=sampling_problem(target, VPBase(2, sigma0=2.0), num_steps=6),
        config=AdjointMatchingConfig(
            batch_size=8, network={"hidden": (4,), "time_embedding_dim": 4}, sde={"integrator": "scan"}
        ),
        num_train_steps=4,
        chunk_size=2,
        eval_samples=16,
    )
    monkeypatch.setattr(la, "default_cases", lambda *, quick: [tiny])
    record = claims.lean_adjoint_report(str(tmp_path), quick=True)
    for path in record["files"].values():
        assert (tmp_path / path.split("/")[-1]).exists()
    stored = json.loads((tmp_path / "lean_adjoint.json").read_text())
    assert stored["commit"] and stored["environment"] and stored["quick"] is True
    (case,) = stored["cases"]
    assert case["history"]["step"] == [0, 2, 4]
    assert case["summary"]["gronwall_holds"] and case["summary"]["lognorm_holds"]
    assert "`vp/gaussian_correlated`" in (tmp_path / "lean_adjoint.md").read_text()


def test_unknown_claim_names_valid_ones():
    with pytest.raises(ValueError, match="valid choices"):
        claims.run_claims(["nope"])
