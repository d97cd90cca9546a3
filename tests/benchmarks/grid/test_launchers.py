"""Launchers: the registry, submission options, and a real grid through submitit's local executor
(every task a subprocess) that writes the same records as the in-process runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.grid.launchers import LAUNCHERS, SubmititOptions, launch
from benchmarks.grid.records import iter_records, read_record
from benchmarks.grid.suites import load_suite


def _suite(tmp_path: Path) -> Path:
    suite = {
        "name": "launch",
        "description": "launcher test: a real, cheap method in subprocesses",
        "methods": ["ais"],
        "targets": ["gaussian"],
        "seeds": [0, 1, 2],
        "budgets": {"b": {"train_steps": 1, "chunk_size": 1}},
        "eval": {"num_samples": 64},
    }
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    return path


# submitit starts a Python process per cell (~10 s CPU): `make test-slow`; the local launcher and the
# options keep their fast tests
@pytest.mark.slow
def test_submitit_local_runs_only_unfinished_cells_and_writes_records(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    suite = load_suite(str(_suite(tmp_path)))
    out = tmp_path / "runs"
    done = out / "launch" / "ais" / "gaussian" / "b" / "seed0.json"
    launch("local", suite, out, only={"seed": {"0"}}, progress=False, log=lambda s: None)
    before = done.read_text()
    lines: list[str] = []
    options = SubmititOptions(log_dir=str(tmp_path / "logs"), time_min=10, gpus_per_task=0)
    records = launch(
        "submitit-local",
        suite,
        out,
        only={"seed": {"0", "1"}},
        progress=False,
        log=lines.append,
        options=options,
    )
    assert "2 cells selected, 1 to submit" in lines[0]
    assert [(r["seed"], r["status"]) for r in records] == [(1, "ok")], lines
    assert done.read_text() == before  # finished cell not re-run
    on_disk = {r["seed"]: r for r in iter_records(out)}
    assert sorted(on_disk) == [0, 1]  # (seed 2 was filtered out)
    rec = read_record(out / "launch" / "ais" / "gaussian" / "b" / "seed1.json")
    assert rec["status"] == "ok" and rec["suite"] == "launch" and "logZ/error" in rec["metrics"]
    assert (out / "launch" / "ais" / "gaussian" / "b" / "seed1.samples.npz").exists()
    assert list((tmp_path / "logs").glob("*_0_log.out")), "submitit keeps each task's log"
    # a second launch has nothing left to submit
    lines.clear()
    assert (
        launch("submitit-local", suite, out, only={"seed": {"0", "1"}}, log=lines.append, options=options)
        == []
    )
    assert "0 to submit" in lines[0]


def test_registry_and_options():
    assert {"local", "submitit", "submitit-local"} <= set(LAUNCHERS)
    with pytest.raises(ValueError, match="valid launchers: .*submitit-local"):
        launch("pbs", None, "x")
    opts = SubmititOptions(
        partition="gpu", gpus_per_task=1, time_min=30, array_parallelism=8, account="a", qos="q"
    )
    slurm = opts.executor_parameters("slurm")
    assert slurm["slurm_partition"] == "gpu" and slurm["gpus_per_node"] == 1
    assert slurm["slurm_array_parallelism"] == 8 and slurm["timeout_min"] == 30
    assert slurm["slurm_account"] == "a" and slurm["slurm_qos"] == "q"
    assert not any(k.startswith("slurm_") for k in opts.executor_parameters("local"))
    with pytest.raises(ValueError, match="time_min"):
        SubmititOptions(time_min=0)


def test_stale_temp_cleanup_spares_live_concurrent_writers(tmp_path):
    """Shards / array tasks share a directory: only temp files of writers that are gone are removed."""
    import os
    import socket
    import subprocess
    import sys

    from benchmarks.grid.records import is_stale_temp, temp_prefix
    from benchmarks.grid.runner import _clean_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    live = tmp_path / f"{temp_prefix(tmp_path / 'seed0.json')}x1.tmp"  # this (live) process
    gone = tmp_path / f".seed1.json.w{dead.pid}@{host}.x2.tmp"
    other_host_new = tmp_path / f".seed2.json.w1@not-{host}.x3.tmp"
    old_unnamed = tmp_path / ".seed3.samples.npz.tmp"
    for p in (live, gone, other_host_new, old_unnamed):
        p.write_text("partial")
    os.utime(old_unnamed, (1.0, 1.0))
    assert not is_stale_temp(live) and is_stale_temp(gone)
    assert not is_stale_temp(other_host_new) and is_stale_temp(old_unnamed)
    assert _clean_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host_new.name])
