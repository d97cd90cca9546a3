"""scripts/funnel_coverage.py: the coverage table of funnel records, on exact and on narrowed draws."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.grid.records import atomic_write_json
from tests.scripts import load_script

coverage = load_script("funnel_coverage")


def _write(root, method, seed, v, signed_error, status="ok"):
    cell = root / method / "funnel10" / "robust"
    cell.mkdir(parents=True, exist_ok=True)
    x = np.zeros((v.size, 10))
    x[:, 0] = v
    np.savez(cell / f"seed{seed}.samples.npz", x=x)
    record = {
        "suite": "robustness",
        "method": method,
        "target": "funnel10",
        "seed": seed,
        "status": status,
        "budget": {"name": "robust"},
        "commit": "abc1234",
        "metrics": {"logZ/signed_error": signed_error},
    }
    atomic_write_json(cell / f"seed{seed}.json", record)


def test_exact_draws_match_the_target_and_narrow_draws_do_not(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    _write(tmp_path, "exact", 0, 3.0 * rng.standard_normal(n), 0.01)
    _write(tmp_path, "narrow", 0, 1.2 * rng.standard_normal(n), -0.4)
    _write(tmp_path, "narrow", 1, 1.2 * rng.standard_normal(n), -0.3)
    _write(tmp_path, "narrow", 2, 1.2 * rng.standard_normal(n), -9.0, status="diverged")
    rows = {r["method"]: r for r in coverage.coverage_rows(tmp_path)}
    tail = coverage._tail(1.5)
    se = np.sqrt(tail * (1 - tail) / n)
    assert rows["exact"]["std_v"] == pytest.approx(3.0, abs=5 * 3.0 / np.sqrt(2 * n))
    assert rows["exact"]["upper"] == pytest.approx(tail, abs=5 * se)
    assert rows["exact"]["lower"] == pytest.approx(tail, abs=5 * se)
    assert rows["narrow"]["seeds"] == 2  # the diverged record is left out
    assert rows["narrow"]["std_v"] == pytest.approx(1.2, abs=0.01)
    assert rows["narrow"]["signed_errors"] == (-0.4, -0.3)
    table = coverage.markdown(list(rows.values()))
    assert table.index("`exact`") < table.index("`narrow`")  # widest first
