"""The grid runner: records, resume after a kill, shards and filters, diverged / error cells, bad suites."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from benchmarks.grid.records import iter_records, read_record
from benchmarks.grid.runner import parse_only, parse_shard, run_suite, select_cells
from benchmarks.grid.suites import load_suite
from tests.benchmarks import toy_method

ROOT = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("toy_methods")


def _suite_file(tmp_path: Path, **overrides) -> Path:
    suite = {
        "description": "runner test",
        "seeds": [0, 1],
        "budgets": {"b": {"train_steps": 2, "chunk_size": 1}},
        "eval": {"num_samples": 64},  # every metric still runs; fewer points cost less per cell
    }
    return toy_method.write_suite(tmp_path, **{**suite, **overrides})


def test_records_written_with_provenance_and_resume_skips(tmp_path):
    suite = load_suite(str(_suite_file(tmp_path)))
    out = tmp_path / "runs"
    first = run_suite(suite, out, progress=False, log=lambda s: None)
    assert [r["status"] for r in first] == ["ok", "ok"]
    recs = list(iter_records(out))
    assert len(recs) == 2
    rec = recs[0]
    for field in ("config", "commit", "hardware", "target_fingerprint", "metrics", "wall_time_s", "seed"):
        assert field in rec, field
    assert rec["hardware"]["versions"]["jax"]
    assert rec["metrics"]["logZ/error"] < 5 * rec["metrics"]["logZ/se"] + 1e-6
    assert (Path(rec["_path"]).with_suffix(".samples.npz")).exists()
    # resume: nothing re-run
    assert run_suite(suite, out, progress=False, log=lambda s: None) == []
    # --force re-runs
    assert len(run_suite(suite, out, progress=False, force=True, log=lambda s: None)) == 2


def test_diverged_and_error_cells_are_recorded_and_the_grid_goes_on(tmp_path):
    suite = load_suite(str(_suite_file(tmp_path, methods=["toy_nan", "toy_error", "toy_is"], seeds=[0])))
    recs = run_suite(suite, tmp_path / "runs", progress=False, log=lambda s: None)
    status = {r["method"]: r for r in recs}
    assert status["toy_nan"]["status"] == "diverged"
    assert "64 of 64 draws non-finite" in status["toy_nan"]["message"]
    assert {"info", "findings"} <= set(status["toy_nan"]["train"])  # what the finished chunks showed
    assert status["toy_error"]["status"] == "error"
    assert "asked to fail" in status["toy_error"]["message"]
    assert status["toy_is"]["status"] == "ok"


def test_shard_and_only_partition_the_grid(tmp_path):
    suite = load_suite(str(_suite_file(tmp_path, methods=["toy_is", "toy_nan"], seeds=[0, 1, 2])))
    all_cells = select_cells(suite)
    shards = [select_cells(suite, shard=(i, 4)) for i in range(4)]
    assert sorted(c for s in shards for c in s) == sorted(all_cells)
    assert sum(len(s) for s in shards) == len(all_cells)
    only = select_cells(suite, only=parse_only(["method=toy_nan", "seed=0,2"]))
    assert [(c.method, c.seed) for c in only] == [("toy_nan", 0), ("toy_nan", 2)]
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("3")
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("4/4")
    with pytest.raises(ValueError, match="method"):
        parse_only(["colour=red"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"methods": ["nope"]}, "unknown method 'nope'.*Valid methods"),
        ({"targets": ["nope"]}, "unknown target 'nope'.*Valid targets"),
        ({"seeds": [-1]}, "seeds"),
        ({"budgets": {"b": {"train_steps": 2}}}, "missing key"),
        ({"budgets": {"b": {"train_steps": 2, "chunk_size": 1, "colour": 3}}}, "unknown key.*colour"),
        ({"colour": 1}, "unknown key.*colour"),
    ],
)
def test_bad_suite_files_fail_clearly(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        load_suite(str(_suite_file(tmp_path, **overrides)))


def test_unknown_suite_name_lists_valid_ones():
    with pytest.raises(ValueError, match="valid suites: .*quick"):
        load_suite("nope")


def test_shipped_suites_load():
    for name in ("quick", "default", "full"):
        suite = load_suite(name)
        assert suite.cells()


def test_cli_exit_code_2_on_bad_input(capsys, monkeypatch):
    """`python -m benchmarks` passes the CLI's exit code to the shell (its `__main__` run as `-m` does,
    in this process: a subprocess would cost an import of JAX and every method)."""
    import runpy

    from benchmarks.cli import main

    monkeypatch.setattr(sys, "argv", ["benchmarks", "benchmark", "--suite", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("benchmarks", run_name="__main__", alter_sys=False)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert main(["benchmark", "--suite", "quick", "--shard", "9/2"]) == 2
    assert "error:" in capsys.readouterr().err


def test_killed_grid_resumes_without_losing_or_repeating_cells(tmp_path, capsys):
    """SIGKILL a grid run in a subprocess mid-grid; the same command, run again (in this process: the
    kill is what needs a process of its own), finishes the grid without re-running a finished cell."""
    from benchmarks.cli import main

    seeds = list(range(5))  # killed after 2 records: 3 cells left for the resumed run
    suite_path = _suite_file(tmp_path, seeds=seeds)
    out = tmp_path / "runs"
    argv = [
        "benchmark",
        "--suite",
        str(suite_path),
        "--out",
        str(out),
        "--results",
        str(tmp_path / "res"),
        "--no-progress",
        "--no-leaderboard",
    ]
    code = (
        "import sys, tests.benchmarks.toy_method as t; t.register(); from benchmarks.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.rglob("seed*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: p.read_bytes() for p in out.rglob("seed*.json")}
    assert 2 <= len(done_before) < len(seeds), "the kill must land mid-grid"
    for p in done_before:
        read_record(p)  # every record on disk is complete JSON
    assert main(argv) == 0, capsys.readouterr().err
    after = sorted(out.rglob("seed*.json"))
    assert len(after) == len(seeds)
    for p, content in done_before.items():
        assert p.read_bytes() == content, "a finished cell was re-run"
    assert not list(out.rglob("*.tmp")), "partial files left behind"
    assert sorted(r["seed"] for r in iter_records(out)) == seeds


def test_progress_line_shows_stage_step_loss_and_eta():
    from benchmarks.grid.runner import _BarProgress

    class Bar:
        def __init__(self):
            self.shown: list[str] = []

        def set_postfix_str(self, text, refresh=True):
            self.shown.append(text)

    bar = Bar()
    progress = _BarProgress(bar)
    progress.phase("training")
    progress.chunk(50, 150, 3.97)  # the first chunk includes the compilation: no ETA yet
    progress.chunk(100, 150, None)
    progress.phase("sampling")
    assert bar.shown[:2] == ["training (compiling)", "step 50/150 loss 3.97"]
    assert bar.shown[2].startswith("step 100/150 ETA ") and bar.shown[2].endswith("s")
    assert bar.shown[3] == "sampling"


def test_a_ctrl_c_inside_a_gc_callback_is_remembered_not_lost():
    """Python swallows an exception raised in a gc callback (JAX has one), so there the runner's
    SIGINT handler only remembers the Ctrl-C; elsewhere it raises KeyboardInterrupt as before, and
    where Python swallows that too (a weakref callback) it stays remembered and unreported."""
    import gc
    import threading

    from benchmarks.grid.runner import _InterruptMemory

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    # Python's default handler, also where SIGINT is ignored (`make test &` in a non-interactive
    # shell starts the tests with SIG_IGN, which the runner rightly leaves alone)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    outer_hook, reported = sys.unraisablehook, []
    sys.unraisablehook = reported.append  # what reports an exception Python swallowed
    before = signal.getsignal(signal.SIGINT)
    memory = _InterruptMemory()
    try:
        handler = signal.getsignal(signal.SIGINT)
        assert handler is not before

        def callback(phase, info):
            handler(signal.SIGINT, sys._getframe())

        gc.callbacks.append(callback)
        try:
            gc.collect()  # the Ctrl-C lands inside the callback: no exception, remembered
        finally:
            gc.callbacks.remove(callback)
        assert memory.seen
        memory.seen = False
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, sys._getframe())
        assert memory.seen
        # in a weakref callback the handler raises and Python swallows it: remembered, and the
        # "Exception ignored in ..." report is kept off the terminal (other reports still print)
        memory.seen = False

        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing, lambda r: handler(signal.SIGINT, sys._getframe()))
        del thing
        assert memory.seen and ref() is None and reported == []
        thing = Thing()
        ref = weakref.ref(thing, lambda r: 1 / 0)
        del thing
        assert [u.exc_type for u in reported] == [ZeroDivisionError]
        memory.restore()
        assert signal.getsignal(signal.SIGINT) is before and sys.unraisablehook == reported.append
    finally:
        memory.restore()
        signal.signal(signal.SIGINT, outer)
        sys.unraisablehook = outer_hook
