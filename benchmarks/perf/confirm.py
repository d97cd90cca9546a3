"""The confirmation rule behind every "evaluations / time to reach ε" figure, and its seed summary.

A log-Z error estimated from a few hundred importance weights is noisy and heavy-tailed; checked
after every training chunk, its first value below ε is mostly luck (many looks, one success). So:

- the *probe* (the cheap estimate checked after every chunk) is monitoring only: it decides when
  an independent evaluation is worth running, never whether ε is reached;
- at check i the *confirmation* is an independent estimate
  `log Ẑ = LSE(log w) - log M` on M >= `MIN_CONFIRM_SAMPLES` fresh samples drawn with its own key;
- ε counts as reached at check i only when the confirmation error e_i <= ε AND the confirmation at
  the next check also has e_{i+1} <= ε (it stays below). The figure reported is check i's cost;
- a figure is a summary over at least `MIN_SEEDS` seeds: the median and the range [min, max], a
  seed that never reached ε counting as +inf (so the median is "not reached" when most seeds fail).

Pure functions over plain sequences; the training loops live in `benchmarks.perf.cost_to_accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MIN_CONFIRM_SAMPLES",
    "MIN_SEEDS",
    "check_confirm_samples",
    "check_seeds",
    "confirmed_index",
    "needs_confirmation",
    "seed_summary",
]

MIN_CONFIRM_SAMPLES = 4096
MIN_SEEDS = 3


def check_confirm_samples(num_confirm: int) -> int:
    """`num_confirm`, or a ValueError when it is below `MIN_CONFIRM_SAMPLES`."""
    if num_confirm < MIN_CONFIRM_SAMPLES:
        raise ValueError(
            f"the confirming evaluation needs at least {MIN_CONFIRM_SAMPLES} fresh samples, got {num_confirm}"
        )
    return num_confirm


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """`seeds` as a tuple, or a ValueError when there are fewer than `MIN_SEEDS` distinct ones."""
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) < MIN_SEEDS or len(set(seeds)) != len(seeds):
        raise ValueError(f"a cost-to-accuracy figure needs at least {MIN_SEEDS} distinct seeds, got {seeds}")
    return seeds


def _below(error: float | None, tol: float) -> bool:
    return error is not None and math.isfinite(error) and error <= tol


def needs_confirmation(probe_error: float, previous_confirm: float | None, tol: float) -> bool:
    """Whether this check runs the independent evaluation: the probe says the error may be <= tol, or
    the previous check's confirmation was <= tol and waits for its second look."""
    return _below(probe_error, tol) or _below(previous_confirm, tol)


def confirmed_index(confirm_errors: Sequence[float | None], tol: float) -> int | None:
    """The first check i with confirmation errors e_i <= tol and e_{i+1} <= tol (None: no check was
    confirmed). `None` entries are checks without a confirming evaluation (they never count)."""
    for i in range(len(confirm_errors) - 1):
        if _below(confirm_errors[i], tol) and _below(confirm_errors[i + 1], tol):
            return i
    return None


def _median_range(values: Sequence[float]) -> dict[str, float]:
    """Median and [min, max]; +inf entries sort last (the median of a list that is mostly +inf is +inf)."""
    v = np.asarray(values, float)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def seed_summary(rows: Sequence[dict[str, Any]], keys: Sequence[str] = ("evals", "wall_s")) -> dict[str, Any]:
    """Median and range over seeds of each cost in `keys` (a seed that did not reach: +inf), of the
    confirmed error (every seed's reported error), and how many seeds reached.

    Args:
        rows: one row per seed, each with `reached` (bool), `error` and the `keys`.
    """
    if len(rows) < MIN_SEEDS:
        raise ValueError(f"a cost-to-accuracy figure needs at least {MIN_SEEDS} seeds, got {len(rows)}")
    out: dict[str, Any] = {
        "seeds_reached": sum(bool(r["reached"]) for r in rows),
        "num_seeds": len(rows),
        "error": _median_range([r["error"] for r in rows]),
    }
    for k in keys:
        out[k] = _median_range([r[k] if r["reached"] else math.inf for r in rows])
    out["reached"] = math.isfinite(out[keys[0]]["median"])
    return out
