"""Records that cannot be trusted: every read names the file, a bad file is never counted as a finished
cell and never blocks other suites; `tiltbench doctor` lists them; the commit stamp ignores outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.grid.doctor import check_runs
from benchmarks.grid.merge import merge_records
from benchmarks.grid.records import (
    RecordError,
    atomic_output,
    atomic_savez,
    code_commit,
    ensure_writable,
    iter_records,
    read_record,
    save_figure,
    uncommitted_code,
)
from benchmarks.grid.runner import run_suite
from benchmarks.grid.suites import load_suite
from benchmarks.reports.leaderboard import build_leaderboard
from tests.benchmarks import toy_method

RECORD = Path("t") / "toy_is" / "gaussian" / "b" / "seed0.json"


pytestmark = pytest.mark.usefixtures("toy_methods")


def _suite(tmp_path: Path, name: str = "t"):
    return load_suite(str(toy_method.write_suite(tmp_path, name)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toy_methods) -> Path:
    """A runs directory holding one real finished record (suite `t`)."""
    tmp = tmp_path_factory.mktemp("finished")
    run_suite(_suite(tmp), tmp / "runs", progress=False, log=lambda s: None)
    assert (tmp / "runs" / RECORD).exists()
    return tmp / "runs"


def _damage(kind: str, good: str) -> str:
    record = json.loads(good)
    return {
        "truncated": good[: len(good) // 2],
        "invalid": '{"suite": "t" "method": 1}',
        "list": "[]",
        "null": "null",
        "empty": "{}",
        "no_suite": json.dumps({k: v for k, v in record.items() if k != "suite"}),
        "escaping_suite": json.dumps({**record, "suite": "../escape"}),
    }[kind]


BAD = ("truncated", "invalid", "list", "null", "empty", "no_suite", "escaping_suite")


def _copy_damaged(finished: Path, tmp_path: Path, kind: str) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    path = runs / RECORD
    path.write_text(_damage(kind, (finished / RECORD).read_text()))
    return runs, path


@pytest.fixture(params=BAD)
def bad_runs(request, finished, tmp_path) -> tuple[Path, Path]:
    """A copy of `finished` whose record is damaged one way; returns (runs dir, the bad file)."""
    return _copy_damaged(finished, tmp_path, request.param)


@pytest.fixture(params=("truncated", "empty"))
def bad_runs_2(request, finished, tmp_path) -> tuple[Path, Path]:
    """`bad_runs` for the slower checks: every bad kind reaches them as the same `RecordError`."""
    return _copy_damaged(finished, tmp_path, request.param)


def test_read_record_names_the_file_and_the_reason(bad_runs):
    _, path = bad_runs
    with pytest.raises(RecordError) as err:
        read_record(path)
    assert str(path) in str(err.value) and err.value.path == str(path)


def test_iter_records_skips_a_bad_file_with_a_warning_naming_it(bad_runs, capsys):
    runs, path = bad_runs
    assert list(iter_records(runs)) == []
    assert f"warning: skipped {path}" in capsys.readouterr().err


def test_a_bad_record_is_moved_aside_and_its_cell_runs_again(bad_runs_2, tmp_path):
    runs, path = bad_runs_2
    damaged = path.read_text()
    lines: list[str] = []
    written = run_suite(_suite(tmp_path), runs, progress=False, log=lines.append)
    assert [r["status"] for r in written] == ["ok"], "a bad record must not count as a finished cell"
    assert any(str(path) in line and "moved to seed0.json.corrupt" in line for line in lines), lines
    assert read_record(path)["status"] == "ok"
    assert path.with_name("seed0.json.corrupt").read_text() == damaged  # kept for inspection


def test_a_bad_record_never_blocks_other_suites(bad_runs, finished, tmp_path):
    runs, path = bad_runs
    other = runs / "other" / "toy_is" / "gaussian" / "b" / "seed0.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({**json.loads((finished / RECORD).read_text()), "suite": "other"}))
    warnings: list[str] = []
    summary = build_leaderboard(str(runs), str(tmp_path / "out"), figures=False, log=warnings.append)
    assert list(summary["suites"]) == ["other"]
    assert any(str(path) in w for w in warnings) and any(str(path) in s for s in summary["skipped"])
    assert "## Suite `other`" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_doctor_lists_bad_records_and_quarantines_them(bad_runs, capsys):
    runs, path = bad_runs
    assert cli.main(["doctor", "--runs", str(runs)]) == 1
    out = capsys.readouterr().out
    assert f"bad record: {path}" in out
    assert path.exists(), "doctor without --quarantine changes nothing"
    assert cli.main(["doctor", "--runs", str(runs), "--quarantine"]) == 1
    assert not path.exists() and path.with_name("seed0.json.corrupt").exists()
    assert cli.main(["doctor", "--runs", str(runs)]) == 0
    assert "every record is valid" in capsys.readouterr().out


def test_merge_names_a_corrupt_source_file_and_copies_the_rest(bad_runs, finished, tmp_path):
    runs, path = bad_runs
    good = tmp_path / "good"
    shutil.copytree(finished, good)
    lines: list[str] = []
    summary = merge_records([runs, good], tmp_path / "merged", log=lines.append)
    assert summary.copied == {"t": 1}
    assert any(str(path) in w for w in summary.warnings)
    assert not (tmp_path / "escape").exists(), "a record cannot write outside --out"


def test_a_foreign_record_is_reported_not_counted(finished, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    stray = runs / "other" / RECORD.relative_to("t")  # a record of suite t filed under other/
    stray.parent.mkdir(parents=True)
    shutil.copy(finished / RECORD, stray)
    report = check_runs(runs)
    assert report.sections == {"other": 0, "t": 1}
    assert [e.path for e in report.problems] == [str(stray)] and "filed under section 'other'" in str(
        report.problems[0]
    )


def test_commit_stamp_ignores_generated_outputs(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "leaderboard.md").write_text("old\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = code_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "results" / "leaderboard.md").write_text("regenerated\n")
    assert code_commit(tmp_path) == clean, "a regenerated leaderboard must not stamp records -dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_commit(tmp_path) == f"{clean}-dirty"
    assert uncommitted_code(tmp_path) == ["code.py"]


def test_commit_stamp_counts_untracked_inputs_not_scratch(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = code_commit(tmp_path)
    (tmp_path / "notes.md").write_text("scratch\n")
    assert code_commit(tmp_path) == clean, "an untracked scratch file is not an input"
    tuned = tmp_path / "benchmarks" / "grid" / "configs" / "tuned"
    tuned.mkdir(parents=True)
    (tuned / "pis__dw4.json").write_text("{}\n")  # a tuning file a search just wrote
    assert code_commit(tmp_path) == f"{clean}-dirty"
    assert uncommitted_code(tmp_path) == ["benchmarks/grid/configs/tuned/pis__dw4.json"]


def test_ensure_writable_names_the_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError) as err:
        ensure_writable(blocker / "runs")
    assert err.value.filename == str(blocker / "runs")
    assert ensure_writable(tmp_path / "new" / "dir").is_dir()


def test_atomic_writers_leave_the_old_file_when_the_writer_fails(tmp_path):
    """A failing writer leaves the previous file intact and no temp file behind; a finished one
    replaces it under exactly its own name (npz and figures included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    target = tmp_path / "out.txt"
    target.write_text("finished result")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "finished result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]

    atomic_savez(tmp_path / "s.samples.npz", x=np.arange(3.0))
    assert np.load(tmp_path / "s.samples.npz")["x"].tolist() == [0.0, 1.0, 2.0]
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f.png", dpi=50)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.get_fignums()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "out.txt", "s.samples.npz"]
