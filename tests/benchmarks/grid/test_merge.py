"""`tiltbench merge`: records from several shard directories pooled into one run; mixed commits
warned about and kept apart (or pooled with --allow-mixed); duplicates kept once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.cli import main
from benchmarks.grid.merge import merge_records
from benchmarks.grid.records import atomic_write_json, iter_records
from benchmarks.grid.suites import Cell

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _record(root: Path, method: str, seed: int, commit: str, error: float, suite: str = "s") -> Path:
    rec = {
        "suite": suite,
        "method": method,
        "target": "gaussian",
        "budget": {"name": "tiny", "train_steps": 1, "chunk_size": 1},
        "seed": seed,
        "status": "ok",
        "metrics": {"logZ/error": error},
        "commit": commit,
        "hardware": {"backend": "cpu", "device_kind": "cpu", "cpu": "test", "cpu_count": 1},
    }
    path = Cell(method, "gaussian", "tiny", seed).path(root, suite)
    atomic_write_json(path, rec)
    np.savez(path.with_suffix(".samples.npz"), x=np.zeros((2, 2), np.float32))
    return path


def test_merge_of_two_shard_dirs_builds_one_leaderboard(tmp_path):
    shard0, shard1 = tmp_path / "shard0", tmp_path / "shard1"
    _record(shard0, "pis", 0, COMMIT_A, 0.1)
    _record(shard0, "dds", 0, COMMIT_A, 0.3)
    _record(shard1, "pis", 1, COMMIT_A, 0.2)
    _record(shard1, "dds", 0, COMMIT_A, 0.3)  # the same cell in both shards: kept once
    out, results = tmp_path / "runs", tmp_path / "results"
    code = main(
        ["merge", str(shard0), str(shard1), "--out", str(out), "--results", str(results), "--no-figures"]
    )
    assert code == 0
    recs = list(iter_records(out))
    assert sorted((r["method"], r["seed"]) for r in recs) == [("dds", 0), ("pis", 0), ("pis", 1)]
    assert sorted(p.name for p in out.iterdir()) == ["s"]
    assert (out / "s" / "pis" / "gaussian" / "tiny" / "seed1.samples.npz").exists()
    board = (results / "leaderboard.md").read_text()
    assert "## Suite `s`" in board and "records: 3 cells" in board and "warning" not in board
    assert "| `pis` | tiny | 2/2 |" in board  # the two seeds from two shards pooled in one row
    # merging again copies nothing new
    again = merge_records([shard0, shard1], out, log=lambda s: None)
    assert again.copied == {} and again.skipped == 4


def test_mixed_commits_warn_and_stay_apart_unless_allowed(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _record(old, "pis", 0, COMMIT_A, 0.1)
    _record(new, "pis", 1, COMMIT_B + "-dirty", 0.2)
    lines: list[str] = []
    summary = merge_records([old, new], tmp_path / "apart", log=lines.append)
    assert any("2 commits" in w for w in summary.warnings)
    assert any(line.startswith("warning:") for line in lines)
    assert sorted(summary.copied) == ["s@aaaaaaaaaaaa", "s@bbbbbbbbbbbb-dirty"]
    assert sorted(p.name for p in (tmp_path / "apart").iterdir()) == [
        "s@aaaaaaaaaaaa",
        "s@bbbbbbbbbbbb-dirty",
    ]

    pooled = merge_records([old, new], tmp_path / "pooled", allow_mixed=True, log=lambda s: None)
    assert pooled.copied == {"s": 2} and pooled.warnings
    assert (
        main(
            [
                "leaderboard",
                "--runs",
                str(tmp_path / "pooled"),
                "--out",
                str(tmp_path / "res"),
                "--no-figures",
            ]
        )
        == 0
    )
    assert "more than one commit" in (tmp_path / "res" / "leaderboard.md").read_text()

    # records of a new commit merged into a directory that already holds another commit's run
    dest = tmp_path / "dest"
    merge_records([old], dest, log=lambda s: None)
    later = merge_records([new], dest, log=lambda s: None)
    assert later.warnings and later.copied == {"s@bbbbbbbbbbbb-dirty": 1}
    assert [r["commit"] for r in iter_records(dest / "s")] == [COMMIT_A]
