"""Interleaved (A/B/A/B) wall-clock timing for a shared, noisy machine.

`interleaved({"a": fa, "b": fb}, repeats)` calls each zero-argument function once per round, in an
order that alternates between rounds, blocking until its result is ready; slow drifts of the
machine's load then hit both sides alike, and per-round ratios cancel them. `ratio_summary` reports
the median ratio and its spread (min, max and interquartile range over rounds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["interleaved", "ratio_summary", "time_call"]


def time_call(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn()`, blocking until its outputs are computed."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time every function `repeats` times, round by round, reversing the order every other round."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(time_call(fns[name]))
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of the per-round ratios `numerator_i / denominator_i`."""
    ratios = np.asarray(numerator) / np.asarray(denominator)
    q25, q75 = np.quantile(ratios, [0.25, 0.75])
    return {
        "median": float(statistics.median(ratios.tolist())),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "q25": float(q25),
        "q75": float(q75),
        "rounds": int(ratios.size),
    }
