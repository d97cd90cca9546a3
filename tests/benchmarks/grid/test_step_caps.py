"""`tiltbench step-caps`: a suite's wall caps converted once into per-(method, target) step caps at
the rates the records measured, written into the suite file and kept from then on."""

from __future__ import annotations

import json

import pytest

from benchmarks import cli
from benchmarks.grid import step_caps
from benchmarks.grid.records import atomic_write_json
from benchmarks.grid.step_caps import derive_step_caps, write_step_caps
from benchmarks.grid.suites import load_suite
from tests.benchmarks import toy_method
from tests.benchmarks.grid.test_estimate import _record

pytestmark = pytest.mark.usefixtures("toy_methods")


def _suite(tmp_path, max_train_s):
    return toy_method.write_suite(
        tmp_path,
        methods=["toy_is", "smc"],
        targets=["gaussian", "gmm9"],
        budgets={"b": {"train_steps": 100, "chunk_size": 10, "max_train_s": max_train_s}},
    )


def test_wall_caps_become_step_caps_at_the_measured_rate_in_whole_chunks(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):  # toy_is on gaussian: 0.5 s per step
        atomic_write_json(
            runs / "m" / f"r{seed}.json", _record("toy_is", "gaussian", seed, train_s=5.0, steps=10, wall=9.0)
        )
    path = _suite(tmp_path, {"gaussian": 34, "gmm9": 5})
    caps = derive_step_caps(load_suite(str(path)), runs, backend="cpu", tuned_dir=tmp_path)
    # SMC has no training steps: no cap; gmm9 has no rate: its wall cap stays
    assert [(c.method, c.target, c.steps, c.kept) for c in caps] == [
        ("toy_is", "gaussian", 60, False),  # 34 s / 0.5 s = 68 steps -> 6 whole chunks of 10
        ("toy_is", "gmm9", None, False),
    ]
    assert write_step_caps(path, caps, "measured here") == 1
    raw = json.loads(path.read_text())["budgets"]["b"]["step_caps"]
    assert raw == {"_derived": ["measured here"], "toy_is/gaussian": 60}
    suite = load_suite(str(path))
    assert suite.budget("b").step_cap_for("toy_is", "gaussian") == 60
    # a cap in the file is kept when the rates move, unless redone
    for seed in range(3, 9):
        atomic_write_json(
            runs / "m" / f"r{seed}.json", _record("toy_is", "gaussian", seed, train_s=1.0, steps=10, wall=9.0)
        )
    kept = derive_step_caps(suite, runs, backend="cpu", tuned_dir=tmp_path)[0]
    assert (kept.steps, kept.kept) == (60, True)
    assert write_step_caps(path, [kept], "again") == 0 and "again" not in path.read_text()
    redone = derive_step_caps(suite, runs, backend="cpu", tuned_dir=tmp_path, redo=True)[0]
    assert (redone.steps, redone.kept) == (100, False)  # 0.1 s/step affords 340 steps; train_steps caps it


def test_a_cap_shorter_than_one_chunk_still_trains_one(tmp_path):
    runs = tmp_path / "runs"
    atomic_write_json(
        runs / "m" / "r.json", _record("toy_is", "gaussian", 0, train_s=50.0, steps=10, wall=60.0)
    )
    caps = derive_step_caps(load_suite(str(_suite(tmp_path, 1))), runs, backend="cpu", tuned_dir=tmp_path)
    assert caps[0].steps == 10


def _measured(tmp_path):
    """A record of toy_is on gaussian at 0.5 s a step, and a suite with a 34-s wall cap: `(runs, path)`."""
    runs = tmp_path / "runs"
    atomic_write_json(
        runs / "m" / "r.json", _record("toy_is", "gaussian", 0, train_s=5.0, steps=10, wall=9.0)
    )
    return runs, _suite(tmp_path, 34)


@pytest.fixture
def committed(monkeypatch):
    """The code tree counts as committed (the checkout running the tests may hold edits)."""
    monkeypatch.setattr(step_caps, "uncommitted_code", lambda root: [])


def test_the_command_prints_the_table_and_writes_only_when_asked(tmp_path, capsys, committed):
    runs, path = _measured(tmp_path)
    before = path.read_text()
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs)]) == 0
    out = capsys.readouterr().out
    assert (
        "| b | toy_is | gaussian | 34 | 0.5 | 1 records | 60 |" in out and "unmeasured: wall cap stays" in out
    )
    assert "2 learned pairs with a wall cap: 1 converted, 0 kept, 1 unmeasured, 0 left at the wall cap" in out
    assert path.read_text() == before
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs), "--write"]) == 0
    assert "1 step caps written to" in capsys.readouterr().out
    assert load_suite(str(path)).budget("b").step_cap_for("toy_is", "gaussian") == 60
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs), "--write"]) == 0
    assert "no new step cap" in capsys.readouterr().out


def test_a_pair_whose_records_ran_under_the_wall_cap_keeps_it_unless_redone(tmp_path, capsys):
    """A cap would change those records' inputs and the next run would train them again."""
    path = _suite(tmp_path, 34)
    suite = load_suite(str(path))
    runs = tmp_path / "runs"
    rec = _record("toy_is", "gaussian", 0, train_s=5.0, steps=10, wall=9.0)
    atomic_write_json(runs / suite.name / "toy_is" / "gaussian" / "b" / "seed0.json", rec)
    held = derive_step_caps(suite, runs, backend="cpu", tuned_dir=tmp_path)[0]
    assert (held.steps, held.recorded) == (None, 1)
    assert write_step_caps(path, [held], "here") == 0
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs)]) == 0
    assert (
        "wall cap stays: 1 records ran under it (--redo converts and re-runs them)" in capsys.readouterr().out
    )
    redone = derive_step_caps(suite, runs, backend="cpu", tuned_dir=tmp_path, redo=True)[0]
    assert (redone.steps, redone.recorded) == (60, 0)


def test_caps_are_written_only_from_committed_code_besides_the_suite_file(tmp_path, capsys, monkeypatch):
    """The derivation note names a commit: it must be the code that converted the caps."""
    runs, path = _measured(tmp_path)
    before = path.read_text()
    monkeypatch.setattr(step_caps, "uncommitted_code", lambda root: ["samplers/train.py", str(path)])
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs), "--write"]) == 1
    err = capsys.readouterr().err
    assert "uncommitted code (samplers/train.py)" in err and "commit it first" in err
    assert path.read_text() == before
    # the suite file a first --write changed does not count: the note names the commit, not "-dirty"
    monkeypatch.setattr(step_caps, "uncommitted_code", lambda root: [str(path)])
    assert cli.main(["step-caps", "--suite", str(path), "--out", str(runs), "--write"]) == 0
    note = json.loads(path.read_text())["budgets"]["b"]["step_caps"]["_derived"][0]
    assert "-dirty" not in note and "commit " in note
