"""Result records: one JSON file per cell, written atomically, with the run's full provenance.

A record (see `docs/design.md`, "Result record") holds the method, target, seed, budget, the fully
resolved config, the target fingerprint, the status (`ok` / `diverged` / `error` / `not_applicable`
with a message), namespaced metrics, cost counters, wall and compile times, hardware, package
versions and the commit. Files are written to a temporary name in the same directory, fsynced and
renamed, so a killed run never leaves a partial record; a re-run skips cells whose record exists.

Every read validates the schema (`validate_record`) and names the file when it fails
(`RecordError`); readers of many records (`iter_records`) skip a bad file with a warning instead of
stopping, and the runner moves it aside (`quarantine`) and re-runs its cell.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RETRY",
    "SAFE_NAME",
    "STATUSES",
    "RecordError",
    "atomic_output",
    "atomic_savez",
    "atomic_write_json",
    "atomic_write_text",
    "code_commit",
    "ensure_writable",
    "environment",
    "git_commit",
    "is_stale_temp",
    "jsonable",
    "is_safe_name",
    "iter_records",
    "misfiled",
    "quarantine",
    "read_record",
    "record_paths",
    "scan_records",
    "save_figure",
    "section_records",
    "temp_prefix",
    "validate_record",
]

STATUSES = ("ok", "diverged", "error", "not_applicable")
# `tiltbench benchmark --retry` choices -> the statuses of the finished cells they re-run.
RETRY: dict[str, frozenset[str]] = {"failed": frozenset({"error", "diverged"})}
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


def jsonable(value: Any) -> Any:
    """Convert numpy / jax scalars and arrays; NaN and Inf become strings (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit, fsync it and rename it onto `path`.

    The writer writes the whole file to the yielded path (by name, so any library can write it:
    `fig.savefig(tmp, format=...)`, `shutil.copyfile`, an open file handle for `np.savez`; the name
    ends in `.tmp`, so give the format explicitly). A killed or failing writer leaves `path` as it
    was and removes the temporary file. The file gets the usual `0o666 & ~umask` permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temp file in the same directory, fsync, rename)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """`np.savez_compressed(path, **arrays)` atomically (the file keeps exactly the name `path`)."""
    import numpy as np

    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Save a Matplotlib figure atomically (format from `path`'s suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    finally:
        plt.close(fig)


def atomic_write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically as strict JSON (NaN / Inf as strings: `jsonable`)."""
    atomic_write_text(path, json.dumps(jsonable(payload), indent=1, sort_keys=True, allow_nan=False) + "\n")


def ensure_writable(directory: str | os.PathLike) -> Path:
    """Create `directory` if needed and check that a file can be written in it (before any cell runs).

    Raises:
        OSError: with `filename` = the directory and a one-line reason.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OSError(err.errno, f"cannot write there ({err.strerror or err})", str(directory)) from None
    return directory


class RecordError(ValueError):
    """A record file that cannot be used: unreadable, not JSON, or not a record. The message names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# Names that become path components (suite, method, target, budget, commit labels): one safe
# component, never "..", never hidden.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def is_safe_name(value: Any) -> bool:
    """Whether `value` can be used as one path component (`SAFE_NAME`, no "..")."""
    return isinstance(value, str) and bool(SAFE_NAME.match(value)) and ".." not in value


_NAME = (is_safe_name, "one safe path component (letters, digits, _ . + -)")
# key -> (check, what it must be): the schema every cell record satisfies.
_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "suite": _NAME,
    "method": _NAME,
    "target": _NAME,
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "status": (lambda v: v in STATUSES, f"one of {list(STATUSES)}"),
    "budget": (
        lambda v: isinstance(v, dict) and is_safe_name(v.get("name")),
        'an object whose "name" is one safe path component',
    ),
    "commit": _NAME,
}
_OPTIONAL: dict[str, tuple[type, str]] = {
    "metrics": (dict, "an object"),
    "trace": (list, "a list"),
    "config": (dict, "an object"),
    "hardware": (dict, "an object"),
    "accuracy": (dict, "an object"),
    "pilot": (dict, "an object"),
}


def validate_record(rec: Any, path: str | os.PathLike = "<record>") -> dict[str, Any]:
    """Check `rec` against the record schema; returns it, or raises `RecordError` naming `path`
    and the first key that is missing or of the wrong type."""
    if not isinstance(rec, dict):
        raise RecordError(path, f"holds the JSON value {json.dumps(rec)[:40]}, not a record object")
    missing = [k for k in _SCHEMA if k not in rec]
    if missing:
        raise RecordError(path, f"not a cell record: missing key(s) {missing}")
    for key, (check, what) in _SCHEMA.items():
        if not check(rec[key]):
            raise RecordError(path, f"{key!r} must be {what}, got {rec[key]!r}")
    for key, (kind, what) in _OPTIONAL.items():
        if key in rec and not isinstance(rec[key], kind):
            raise RecordError(path, f"{key!r} must be {what}, got {type(rec[key]).__name__}")
    return rec


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate one record; the strings "nan"/"inf"/"-inf" of the metrics and of the
    training trace (JSON has no NaN) are turned back into floats.

    Raises:
        RecordError: naming the file, when it cannot be read, is not JSON or fails the schema.
    """
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except OSError as err:
        raise RecordError(path, f"cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(path, f"not valid JSON ({err}); truncated or corrupt") from None
    validate_record(rec, path)
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


def record_paths(directory: str | os.PathLike) -> list[Path]:
    """The record files under `directory` (recursively, sorted; hidden temp files excluded)."""
    return [p for p in sorted(Path(directory).rglob("*.json")) if not p.name.startswith(".")]


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def iter_records(
    directory: str | os.PathLike, *, on_bad: Callable[[RecordError], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The valid records under `directory` (recursively), in sorted path order, each with `_path`.

    A file that is not a valid record (truncated, not JSON, wrong schema) is never yielded and
    never stops the others: it goes to `on_bad` (default: one warning line on stderr naming the
    file and the reason; `tiltbench doctor` lists them all).
    """
    report = on_bad or (lambda err: _warn(f"skipped {err}"))
    for path in record_paths(directory):
        try:
            rec = read_record(path)
        except RecordError as err:
            report(err)
            continue
        rec["_path"] = str(path)
        yield rec


def scan_records(directory: str | os.PathLike) -> tuple[list[dict[str, Any]], list[RecordError]]:
    """`(valid records, problems)` under `directory`: `iter_records` with the bad files collected."""
    bad: list[RecordError] = []
    return list(iter_records(directory, on_bad=bad.append)), bad


def misfiled(rec: dict[str, Any], section: str) -> RecordError | None:
    """A `RecordError` when the record's suite is not the section directory it sits in (`<suite>/`,
    or merge's `<suite>@<commit>/`): a foreign record, which no section may count."""
    if section == rec["suite"] or section.startswith(f"{rec['suite']}@"):
        return None
    return RecordError(rec["_path"], f"a record of suite {rec['suite']!r} filed under section {section!r}")


def section_records(
    runs_dir: str | os.PathLike, section: str, on_bad: Callable[[RecordError], None] | None = None
) -> list[dict[str, Any]]:
    """The valid records of one section directory `runs_dir/section`; bad or foreign files go to
    `on_bad` (default: a warning line naming the file)."""
    report = on_bad or (lambda err: _warn(f"skipped {err}"))
    out = []
    for rec in iter_records(Path(runs_dir) / section, on_bad=report):
        err = misfiled(rec, section)
        if err is None:
            out.append(rec)
        else:
            report(err)
    return out


def quarantine(path: str | os.PathLike) -> Path:
    """Move a bad record aside to `<name>.corrupt` (`.corrupt.1`, ... if taken); returns the new path.

    The file is kept for inspection, no longer read as a record, and its cell counts as not done.
    """
    path = Path(path)
    dest, n = path.with_name(path.name + ".corrupt"), 0
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt.{n}")
    os.replace(path, dest)
    return dest


# Generated outputs under these top-level directories do not make the code tree dirty.
_EXCLUDE_OUTPUTS = (":!results",)
# Untracked files here are inputs a run reads (a new module, a tuning file a search just wrote), so
# they make the tree dirty; untracked scratch files elsewhere do not.
_INPUT_DIRS = ("samplers", "targets", "benchmarks")


def uncommitted_code(root: str | os.PathLike) -> list[str]:
    """Paths whose uncommitted state a record made at `root` would not capture: tracked files outside
    `results/` with changes, and untracked (not ignored) files under the code and configuration
    packages. Raises `OSError` / `CalledProcessError` outside a git checkout."""

    def status(*args: str) -> list[str]:
        out = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line for line in out.splitlines() if line.strip()]

    changed = status("--untracked-files=no", "--", ".", *_EXCLUDE_OUTPUTS)
    untracked = [line for line in status("--untracked-files=all", "--", *_INPUT_DIRS) if line[:2] == "??"]
    return [line[3:] for line in changed + untracked]


def code_commit(root: str | os.PathLike) -> str:
    """The commit checked out at `root`, with `-dirty` when the tree differs from it in a way a record
    would not capture (`uncommitted_code`: changed tracked files outside `results/`, untracked files
    under the packages). Regenerated leaderboards and records are outputs, not code: they do not flip
    the stamp of later records. "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return sha + ("-dirty" if uncommitted_code(root) else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository holding the package


@functools.cache
def git_commit() -> str:
    """The commit of this code tree (`code_commit` of the repository holding the package)."""
    return code_commit(REPO_ROOT)


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
