"""Published values beside ours: `benchmarks/reports/published.json`, read by the reports.

The table holds, per target and metric key (a record metric with the same definition, e.g.
`logZ/error` = |log Ẑ − log Z| of the importance-sampling estimate), the published rows
`{method, value, std, source[, note]}` and, per source, its citation and protocol. Only values whose
definition matches ours are listed; the JSON's `_doc` and each source's entry state the differences.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["LABELS", "PUBLISHED", "best_published", "published", "published_lines"]

PUBLISHED = Path(__file__).with_name("published.json")
LABELS = {
    "eq_w2": "eq. W2",
    "energy_w2": "energy W2",
    "logZ/error": "|log Ẑ − log Z| (importance-sampling estimate)",
    "logZ/elbo_gap": "log Z − ELBO",
}


@functools.cache
def _table() -> dict[str, Any]:
    """The shipped table, read once per process (every target's table, figure and report line reads it)."""
    return json.loads(PUBLISHED.read_text())


def published(target: str) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """`({metric key: rows}, {source: citation})` of `target`; no rows for an unlisted target."""
    table = _table()
    return table["targets"].get(target, {}), table["sources"]


def best_published(target: str, key: str) -> dict[str, Any] | None:
    """The published row of `target` with the lowest value of `key` (all listed keys are errors or
    distances: lower is better), or None."""
    rows = published(target)[0].get(key, [])
    return min(rows, key=lambda r: r["value"]) if rows else None


def published_lines(target: str) -> list[str]:
    """Markdown lines: the published values of `target` per metric, best first, with sources."""
    entries, sources = published(target)
    lines = []
    for key, rows in entries.items():
        rows = sorted(rows, key=lambda r: r["value"])
        cited = sorted({sources[r["source"]]["short"] for r in rows})
        values = ", ".join(
            f"{r['method']} {r['value']:.3g} ± {r['std']:.2g}" + (f" ({r['note']})" if "note" in r else "")
            for r in rows
        )
        lines.append(f"- {LABELS.get(key, key)}: {values} [{'; '.join(cited)}]")
    if lines:
        lines.insert(
            0,
            "Published values with the same definitions (`benchmarks/reports/published.json`, which states "
            "each source's protocol; their training budgets are far larger than these cells'):",
        )
    return lines
