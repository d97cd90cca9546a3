"""The record of a side-by-side comparison (`tiltbench perf --before-after`, `--particle-metrics`).

`write_side_by_side` stamps the measured rows with what makes them a result (the benchmark's name,
the commit, the hardware, when it started, the number of interleaved rounds and the wall time) and
writes `<out>/<name>.json` and the Markdown table `<out>/<name>.md` that `render` makes of the
record, both atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_side_by_side"]


def write_side_by_side(
    out: Path,
    name: str,
    rows: list[dict[str, Any]],
    *,
    repeats: int,
    t0: float,
    started: str,
    render: Callable[[dict[str, Any]], str],
) -> Path:
    """Write `out/<name>.json` and `out/<name>.md`; returns the Markdown path.

    Args:
        out: output directory (created).
        name: the benchmark's name, the files' stem.
        rows: the measured rows.
        repeats: interleaved rounds per row.
        t0: `time.perf_counter()` at the start (the record's `wall_s` counts from it).
        started: the start as an ISO-8601 local time.
        render: the record -> its Markdown report.
    """
    from benchmarks.grid.records import atomic_write_json, atomic_write_text, environment, git_commit

    record = {
        "benchmark": name,
        "commit": git_commit(),
        "hardware": environment(),
        "started": started,
        "repeats": repeats,
        "rows": rows,
        "wall_s": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", record)
    md = out / f"{name}.md"
    atomic_write_text(md, render(record))
    return md
