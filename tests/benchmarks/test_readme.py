"""The README's registry tables are generated, never hand-typed: fail when they drift from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_registries():
    text = (ROOT / "README.md").read_text()
    assert _update_readme().render(text) == text, "README.md tables are stale: run scripts/update_readme.py"


def test_readme_states_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "make benchmark" in text and "make test" in text
