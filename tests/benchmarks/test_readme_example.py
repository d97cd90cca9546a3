"""The README's "Adding your own target or method" code runs as printed, and its method goes through
the harness: `tiltbench benchmark --import <module>` (the CLI route the README promises) on a tiny
suite, whose cells go through `benchmarks.grid.cell.run_cell` (log Ẑ checked against the exact value).

The blocks are extracted from README.md at test time, so the README cannot silently rot.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import samplers
import targets
from benchmarks import cli
from benchmarks.grid.records import iter_records

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Adding your own target or method"
MODULE = "readme_user_module"  # the blocks are written to <tmp>/readme_user_module.py


def readme_example_code() -> str:
    """The ```python blocks of the README section, concatenated in order."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md lost its {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 2, "expected a target block and a method block"
    return "\n".join(blocks)


def _registered_names(code: str) -> tuple[list[str], list[str]]:
    target_names = re.findall(r'register_target\(\s*"(\w+)"', code)
    method_names = re.findall(r'name="(\w+)"', code)
    return target_names, method_names


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """Write the README code to a module on sys.path; unregister what it registered afterwards."""
    code = readme_example_code()
    directory = tmp_path_factory.mktemp("readme")
    (directory / f"{MODULE}.py").write_text(code)
    target_names, method_names = _registered_names(code)
    assert target_names and method_names, (target_names, method_names)
    sys.path.insert(0, str(directory))
    try:
        yield directory, target_names, method_names
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(MODULE, None)
        for name in method_names:
            if name in samplers.METHODS:
                samplers.METHODS.unregister(name)
        for name in target_names:
            if name in targets.TARGETS:
                targets.TARGETS.unregister(name)


def _suite(path: Path, method: str, target_names: list[str]) -> Path:
    suite = {
        "name": "readme",
        "description": "the README example method on a Gaussian (exact log Z) and the README target",
        "methods": [method],
        "targets": ["gaussian", *target_names],
        "seeds": [0],
        "budgets": {"tiny": {"train_steps": 150, "chunk_size": 50}},
        "eval": {"num_samples": 500},
    }
    path.write_text(json.dumps(suite))
    return path


def test_readme_example_runs_through_the_cli_and_the_harness(user_module, tmp_path):
    directory, target_names, method_names = user_module
    method = method_names[0]
    suite_path = _suite(tmp_path / "suite.json", method, target_names)
    out = tmp_path / "runs"
    # The CLI route of the README: --import registers the user's names before the suite is loaded.
    code = cli.main(
        [
            "benchmark",
            "--import",
            MODULE,
            "--suite",
            str(suite_path),
            "--out",
            str(out),
            "--no-progress",
            "--no-leaderboard",
        ]
    )
    assert code == 0
    assert method in samplers.names() and all(t in targets.names() for t in target_names)
    records = {r["target"]: r for r in iter_records(out)}
    assert set(records) == {"gaussian", *target_names}
    for target, record in records.items():
        assert record["status"] == "ok", (target, record.get("message"), record.get("traceback"))
        assert record["method_family"] == "user"
        assert record["metrics"]["cost/train_steps"] == 150

    # `tiltbench benchmark` runs each cell through `cell.run_cell`: on the Gaussian (exact log Z)
    # the fitted proposal is exact, so log Ẑ is within its standard error and the ESS near 1.
    metrics = records["gaussian"]["metrics"]
    assert metrics["logZ/error"] < max(5 * metrics["logZ/se"], 0.02), metrics
    assert metrics["ess/reverse"] > 0.9, metrics
    assert records["gaussian"]["cost_train"]["energy_evals"] == 150 * 256  # the README's cost accounting


def test_cli_import_of_a_missing_module_is_a_clear_error(capsys):
    assert cli.main(["methods", "--import", "no_such_module_for_tiltbench"]) == 2
    assert "no_such_module_for_tiltbench" in capsys.readouterr().err
