"""The README's registry tables are generated, never hand-typed: fail when they drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_readme_tables_match_the_registries():
    # A fresh process: other tests register throw-away methods in the process-global registries.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_renderer_replaces_marked_blocks():
    text = "<!-- targets:start -->\nold\n<!-- targets:end -->\n<!-- methods:start -->\n<!-- methods:end -->\n"
    text += "<!-- metrics:start -->\n<!-- metrics:end -->\n<!-- suites:start -->\n<!-- suites:end -->\n"
    out = load_script("update_readme").render(text)
    assert "old" not in out and "| `gmm40` |" in out and "| `pis` |" in out and "| `log_z` |" in out
    assert "| `quick` |" in out


def test_readme_states_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "make benchmark" in text and "make test" in text
