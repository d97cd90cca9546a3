"""Result records: one JSON file per cell, written atomically, with the run's full provenance.

A record (see `docs/design.md`, "Result record") holds the method, target, seed, budget, the fully
resolved config, the target fingerprint, the status (`ok` / `diverged` / `error` / `not_applicable`
with a message), namespaced metrics, cost counters, wall and compile times, hardware, package
versions and the commit. Files are written to a temporary name in the same directory, fsynced and
renamed, so a killed run never leaves a partial record; a re-run skips cells whose record exists.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "STATUSES",
    "atomic_write_json",
    "environment",
    "git_commit",
    "is_stale_temp",
    "iter_records",
    "read_record",
    "temp_prefix",
]

STATUSES = ("ok", "diverged", "error", "not_applicable")
_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "diffrax",
    "equinox",
    "numpyro",
    "blackjax",
    "ott-jax",
    "numpy",
    "scipy",
)


def _jsonable(value: Any) -> Any:
    """Convert numpy / jax scalars and arrays; NaN and Inf become strings (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    return value


_TEMP_WRITER = re.compile(r"\.w(\d+)@([^/]+)\.[^.]*\.tmp$")


def temp_prefix(path: Path) -> str:
    """Name prefix of the temp file of an atomic write of `path`: `.<name>.w<pid>@<host>.`.

    The writer's pid and host let `is_stale_temp` tell a left-over of a killed run from the
    in-flight file of a concurrent writer (shards or array tasks writing into one directory).
    """
    return f".{path.name}.w{os.getpid()}@{socket.gethostname()}."


def is_stale_temp(path: Path, max_age_s: float = 3600.0) -> bool:
    """True for the temp file of a writer that is gone: a dead process of this host; for a
    writer on another host (or a name without a writer), a file older than `max_age_s`."""
    match = _TEMP_WRITER.search(path.name)
    if match and match.group(2) == socket.gethostname():
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


def atomic_write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; records are ordinary readable files
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_jsonable(payload), fh, indent=1, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Load one record; the strings "nan"/"inf"/"-inf" of the metrics and of the training trace
    (JSON has no NaN) are turned back into floats."""
    with open(path) as fh:
        rec = json.load(fh)
    rec["metrics"] = {k: _float_back(v) for k, v in rec.get("metrics", {}).items()}
    if isinstance(rec.get("trace"), list):
        rec["trace"] = [
            {k: _float_back(v) for k, v in p.items()} if isinstance(p, dict) else p for p in rec["trace"]
        ]
    return rec


def _float_back(v: Any) -> Any:
    return float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v


def nonfinite_back(value: Any) -> Any:
    """Every "nan"/"inf"/"-inf" string of a JSON tree (as `atomic_write_json` writes them) back to a float."""
    if isinstance(value, dict):
        return {k: nonfinite_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nonfinite_back(v) for v in value]
    return _float_back(value)


def iter_records(directory: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """All records under `directory` (recursively), in sorted path order."""
    for path in sorted(Path(directory).rglob("*.json")):
        if path.name.startswith("."):
            continue
        rec = read_record(path)
        if "method" in rec and "target" in rec and "status" in rec:
            rec["_path"] = str(path)
            yield rec


@functools.cache
def git_commit() -> str:
    """The commit of the working tree (with `-dirty` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@functools.cache
def environment() -> dict[str, Any]:
    """Hardware, platform and package versions of this process."""
    import jax

    devices = jax.devices()
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "num_devices": len(devices),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
