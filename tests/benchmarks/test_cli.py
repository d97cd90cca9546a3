"""`tiltbench benchmark` as a user meets it: bad input exits 2 naming the valid choices before any cell
runs, unwritable output exits 1 naming the path, Ctrl-C exits 130 with one line, a one-suite run keeps
the other leaderboard sections, and a run with nothing to do leaves the leaderboard alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.grid.records import read_record
from benchmarks.grid.suites import suite_names
from tests.benchmarks import toy_method

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("toy_methods")


def _suite_file(tmp_path: Path, **overrides) -> Path:
    return toy_method.write_suite(tmp_path, **overrides)


def _err_lines(err: str) -> list[str]:
    """stderr's non-empty lines without the uncommitted-tree warning (a working copy with local
    edits gets it; a clean clone, as CI runs, does not)."""
    return [
        line for line in err.splitlines() if line.strip() and "uncommitted code or configuration" not in line
    ]


def _benchmark(tmp_path: Path, *extra: str, suite: Path | None = None) -> int:
    suite = suite or _suite_file(tmp_path)
    return cli.main(
        [
            "benchmark",
            "--suite",
            str(suite),
            "--out",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "res"),
            "--no-progress",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("only", "valid"),
    [
        ("method=typo", "valid methods: toy_is"),
        ("target=typo", "valid targets: gaussian"),
        ("seed=7", "valid seeds: 0"),
    ],
)
def test_only_typos_exit_2_listing_the_valid_values_and_touch_nothing(tmp_path, capsys, only, valid):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "leaderboard.md").write_text("committed\n")
    assert _benchmark(tmp_path, "--only", only) == 2
    err = capsys.readouterr().err
    assert "error: --only" in err and valid in err
    assert (tmp_path / "res" / "leaderboard.md").read_text() == "committed\n"
    assert not (tmp_path / "runs" / "t").exists() or not list((tmp_path / "runs").rglob("*.json"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"methods": "toy_is"}, "methods must be a non-empty list"),
        ({"targets": "gaussian"}, "targets must be a non-empty list"),
        ({"name": "../escape"}, "name must be one safe path component"),
        ({"name": "quick"}, "'quick' is a shipped suite's"),
    ],
)
def test_bad_suite_files_exit_2_with_the_reason(tmp_path, capsys, overrides, message):
    assert _benchmark(tmp_path, suite=_suite_file(tmp_path, **overrides)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_negative_shard_gets_the_shard_message(tmp_path, capsys):
    assert _benchmark(tmp_path, "--shard", "-1/2") == 2
    assert "--shard i/n needs n >= 1 and 0 <= i < n" in capsys.readouterr().err


def test_benchmark_help_lists_every_shipped_suite(capsys):
    with pytest.raises(SystemExit):
        cli.main(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in suite_names():
        assert name in text


def test_unwritable_output_exits_1_naming_the_path_before_any_cell(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    code = cli.main(
        ["benchmark", "--suite", str(_suite_file(tmp_path)), "--out", str(blocker / "runs"), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 1 and "ran " not in captured.out
    assert f"error: {blocker / 'runs' / 't'}: cannot write there" in captured.err
    assert len(_err_lines(captured.err)) == 1  # one line, no traceback
    code = _benchmark(tmp_path, "--results", str(blocker / "res"))
    captured = capsys.readouterr()
    assert code == 1 and f"{blocker / 'res'}: cannot write there" in captured.err
    assert not (tmp_path / "runs" / "t").exists() or not list((tmp_path / "runs").rglob("*.json"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_output_exits_1(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o555)
    try:
        assert _benchmark(tmp_path) == 1
        assert "cannot write there" in capsys.readouterr().err
    finally:
        (tmp_path / "runs").chmod(0o755)


def test_one_suite_run_keeps_the_other_sections_and_an_idle_run_rewrites_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert _benchmark(tmp_path, "--no-leaderboard") == 0
    record = json.loads((runs / "t" / "toy_is" / "gaussian" / "b" / "seed0.json").read_text())
    other = runs / "other" / "toy_is" / "gaussian" / "b" / "seed0.json"  # a committed section
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({**record, "suite": "other"}))
    (runs / "t" / "toy_is" / "gaussian" / "b" / "seed0.json").unlink()
    assert _benchmark(tmp_path) == 0
    board = (tmp_path / "res" / "leaderboard.md").read_text()
    assert "## Suite `other`" in board and "## Suite `t`" in board
    csv = (tmp_path / "res" / "leaderboard.csv").read_text()
    assert "\nother," in csv and "\nt," in csv
    capsys.readouterr()
    (tmp_path / "res" / "leaderboard.md").write_text("left alone\n")
    assert _benchmark(tmp_path) == 0  # every cell done: 0 cells run
    assert "no cell ran" in capsys.readouterr().out
    assert (tmp_path / "res" / "leaderboard.md").read_text() == "left alone\n"


def test_ctrl_c_exits_130_with_one_line_and_keeps_finished_records(tmp_path):
    suite = _suite_file(tmp_path, seeds=list(range(30)))
    out = tmp_path / "runs"
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import tests.benchmarks.toy_method as t; t.register(); from benchmarks.cli import main; "
        f"sys.exit(main(['benchmark', '--suite', {str(suite)!r}, '--out', {str(out)!r}, "
        f"'--results', {str(tmp_path / 'res')!r}, '--no-progress']))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.rglob("seed*.json")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    saved = list(out.rglob("seed*.json"))
    assert 1 <= len(saved) < 30, "the interrupt must land mid-grid"
    for path in saved:
        read_record(path)
    lines = _err_lines(stderr)
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert f"interrupted: {len(saved)} cells saved under {out / 't'}" in lines[0]
    assert "run the same command to resume" in lines[0]
    assert not list(out.rglob("*.tmp"))
    shutil.rmtree(out)


def test_leaderboard_without_records_leaves_the_tables_alone(tmp_path, capsys):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "leaderboard.md").write_text("committed\n")
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "seed0.json").write_text("{}")  # nothing valid to build from
    code = cli.main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert code == 2 and "no valid records under" in err and "left as it is" in err
    assert f"skipped {tmp_path / 'runs' / 't' / 'seed0.json'}" in err
    assert (tmp_path / "res" / "leaderboard.md").read_text() == "committed\n"


def test_a_run_from_an_uncommitted_tree_warns_that_its_records_are_dirty(tmp_path, capsys, monkeypatch):
    from benchmarks.grid import records

    monkeypatch.setattr(records, "uncommitted_code", lambda root: ["benchmarks/grid/configs/tuned/x.json"])
    assert _benchmark(tmp_path, "--no-leaderboard") == 0
    err = capsys.readouterr().err
    assert "uncommitted code or configuration (benchmarks/grid/configs/tuned/x.json)" in err
    assert "<commit>-dirty" in err
    monkeypatch.setattr(records, "uncommitted_code", lambda root: [])
    assert _benchmark(tmp_path, "--no-leaderboard", "--force") == 0
    assert "warning" not in capsys.readouterr().err


def test_the_commit_stamp_is_fixed_before_a_run_writes_anything(monkeypatch):
    """A search writes each pair's tuning file (untracked until committed) before the next pair starts:
    the later pairs' stamp must be the tree's state when the command began, not after its own writes."""
    from benchmarks.grid import records

    records.git_commit.cache_clear()
    try:
        monkeypatch.setattr(records, "uncommitted_code", lambda root: [])
        cli._stamp_run("the search runs")
        written = ["benchmarks/grid/configs/tuned/pis__gmm40.json"]
        monkeypatch.setattr(records, "uncommitted_code", lambda root: written)
        assert not records.git_commit().endswith("-dirty")
    finally:
        records.git_commit.cache_clear()
