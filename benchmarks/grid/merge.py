"""Merge per-cell records collected from many machines into one runs directory.

`merge_records(sources, out)` reads every record under each source directory (any layout: a runs
root, a suite directory, a copy of one shard's output), and copies each record (and its
`.samples.npz`) to its canonical place `<out>/<suite>/<method>/<target>/<budget>/seed<seed>.json`
(atomically), so that `build_leaderboard(out, ...)` sees them as one run.

Provenance checks. Records of one suite are pooled only when they come from ONE commit (records
already in `<out>/<suite>` count too). Otherwise a warning names the commits, and

- by default the groups are kept apart: the records of commit `c` go to `<out>/<suite>@<c[:12]>`
  (with `-dirty` kept), a separate leaderboard section per commit (records of the commit already
  in `<out>/<suite>` join it there);
- with `allow_mixed=True` they are pooled in `<out>/<suite>` (the leaderboard header then lists the
  commits and warns that rows mix them).

The same cell found twice (two shards overlapping, a re-run) keeps the first copy in the order of
`sources`, with a warning when the two records differ in status or metrics; a cell already at the
destination is left as it is unless `overwrite=True`.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.grid.records import atomic_output, iter_records
from benchmarks.grid.suites import Cell

__all__ = ["MergeSummary", "merge_records"]


class MergeSummary(NamedTuple):
    """What `merge_records` did.

    Attributes:
        copied: records copied, per destination suite directory name.
        skipped: records not copied (duplicates, or already at the destination).
        warnings: the warnings issued (also passed to `log`).
        groups: destination suite directory -> the commits of its records.
    """

    copied: dict[str, int]
    skipped: int
    warnings: list[str]
    groups: dict[str, list[str]]


def _atomic_copy(src: Path, dst: Path) -> None:
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def _label(suite: str, commit: str) -> str:
    sha, dirty = (commit[:-6], "-dirty") if commit.endswith("-dirty") else (commit, "")
    return f"{suite}@{sha[:12]}{dirty}"


def merge_records(
    sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    allow_mixed: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> MergeSummary:
    """Copy the records under `sources` into `out/<suite>` (see the module docstring)."""
    out = Path(out)
    sources = [Path(s) for s in sources]
    for s in sources:
        if not s.is_dir():
            raise ValueError(f"merge: {str(s)!r} is not a directory of records")
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        log(f"warning: {text}")

    out_resolved = out.resolve()
    incoming: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for source in sources:
        for rec in iter_records(source, on_bad=lambda err: warn(f"skipped {err}")):
            if Path(rec["_path"]).resolve().is_relative_to(out_resolved):
                continue  # already in the destination (a source inside `out`)
            incoming[str(rec.get("suite", "unknown"))].append(rec)
    if not incoming:
        warn(f"no records found under {', '.join(map(str, sources))}")
    if len(incoming) > 1:
        log(f"suites found: {', '.join(sorted(incoming))} (each gets its own directory and section)")

    copied: dict[str, int] = defaultdict(int)
    groups: dict[str, list[str]] = {}
    skipped = 0
    for suite, recs in sorted(incoming.items()):
        existing = (
            list(iter_records(out / suite, on_bad=lambda err: warn(f"skipped {err}")))
            if (out / suite).is_dir()
            else []
        )
        home = {str(r.get("commit", "unknown")) for r in existing}  # commits already in <out>/<suite>
        commits = sorted({str(r.get("commit", "unknown")) for r in recs} | home)
        mixed = len(commits) > 1
        if mixed:
            action = (
                "pooled in one section (--allow-mixed)"
                if allow_mixed
                else "kept apart, one directory per commit"
            )
            warn(f"suite {suite!r}: records from {len(commits)} commits ({', '.join(commits)}); {action}")
        seen: dict[tuple[str, Cell], dict[str, Any]] = {}
        for rec in recs:
            commit = str(rec.get("commit", "unknown"))
            dest = _label(suite, commit) if (mixed and not allow_mixed and commit not in home) else suite
            cell = Cell.of_record(rec)
            first = seen.get((dest, cell))
            if first is not None:
                skipped += 1
                if (first["status"], first.get("metrics")) != (rec["status"], rec.get("metrics")):
                    warn(
                        f"{cell.id}: differing records in {first['_path']} and {rec['_path']}; kept the first"
                    )
                continue
            seen[(dest, cell)] = rec
            target = cell.path(out, dest)
            if target.exists() and not overwrite:
                skipped += 1
                continue
            src = Path(rec["_path"])
            _atomic_copy(src, target)
            samples = src.with_suffix(".samples.npz")
            if samples.exists():
                _atomic_copy(samples, target.with_suffix(".samples.npz"))
            copied[dest] += 1
            groups.setdefault(dest, [])
            if commit not in groups[dest]:
                groups[dest].append(commit)
    for dest, n in sorted(copied.items()):
        log(f"{dest}: {n} record(s) -> {out / dest}  (commit(s) {', '.join(groups[dest])})")
    if skipped:
        log(f"{skipped} record(s) skipped (duplicates or already at the destination)")
    return MergeSummary(dict(copied), skipped, warnings, groups)
