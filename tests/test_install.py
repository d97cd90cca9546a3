"""The install entry point: `make install ACCEL=...` names a jax accelerator build that exists and
rejects anything else before doing work; `tiltbench devices` reports what JAX sees."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from benchmarks import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make_dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", "-C", str(ROOT), "install", *args], capture_output=True, text=True, timeout=60
    )


def test_an_unknown_accelerator_build_stops_make_naming_the_valid_ones():
    done = _make_dry_run("ACCEL=cuda11")
    assert done.returncode != 0
    assert "ACCEL='cuda11' is not an accelerator build; valid values: cuda12 cuda13 tpu" in done.stderr


@pytest.mark.parametrize("accel", ["cuda12", "cuda13", "tpu"])
def test_each_accelerator_build_installs_the_pinned_jax_extra(accel):
    """The Makefile installs the project extra; the extra pins jax's own extra of the same name at the
    installed jax version, and jax declares that extra."""
    done = _make_dry_run(f"ACCEL={accel}")
    assert done.returncode == 0, done.stderr
    assert f"-e '.[{accel}]'" in done.stdout
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras[accel] == [f"jax[{accel}]=={metadata.version('jax')}"]
    assert accel in (metadata.metadata("jax").get_all("Provides-Extra") or [])
    assert not re.search(r"-e '\.\[(cuda|tpu)", _make_dry_run().stdout), "the CPU install adds no extra"


def test_devices_prints_backend_devices_and_versions(capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend: cpu") and "cpu:0" in out and "jax 0.10.2" in out
    assert "data-parallel batches:" in out
