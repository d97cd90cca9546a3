"""benchmarks/perf/confirm: a crossing counts only when an independent >= 4096-sample estimate is
below ε at that check and the next; figures are medians and ranges over >= 3 seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.perf import confirm

TOL = 0.1


def _monitor(probe_errors, confirm_error_at):
    """The loop of `learned_cell` over a recorded trace: the probe decides when to confirm,
    `confirm_error_at(i)` is the independent estimate at check i."""
    confirms: list[float | None] = []
    for i, probe in enumerate(probe_errors):
        previous = confirms[-1] if confirms else None
        confirms.append(confirm_error_at(i) if confirm.needs_confirmation(probe, previous, TOL) else None)
    return confirms, confirm.confirmed_index(confirms, TOL)


def test_a_noisy_trace_that_crosses_once_is_rejected():
    """A heavy-tailed 512-sample probe of an error that is really ~1 dips below ε once (the first
    lucky crossing the old rule reported); the independent 4096-sample estimate there says 0.9."""
    rng = np.random.default_rng(0)
    true_error = 1.0
    probe = np.abs(true_error + rng.standard_t(2, size=30) * 0.4)
    probe[7] = 0.05  # the one crossing
    probe = np.where(np.arange(30) == 7, probe, np.maximum(probe, 0.2))
    assert (probe <= TOL).sum() == 1
    confirms, index = _monitor(probe, lambda i: true_error + 0.1 * rng.standard_normal())
    assert index is None
    assert [i for i, c in enumerate(confirms) if c is not None] == [7]  # confirmed only where the probe said


def test_a_confirmation_that_does_not_stay_below_is_rejected():
    """Below ε at one check only (even on the independent estimate): not reached."""
    assert confirm.confirmed_index([None, 0.08, 0.5, None, 0.09], TOL) is None
    assert (
        confirm.confirmed_index([None, 0.08, None, 0.05], TOL) is None
    )  # a check without confirmation breaks it
    assert confirm.confirmed_index([0.08, math.inf], TOL) is None


def test_a_crossing_that_stays_below_is_confirmed_at_its_first_check():
    probe = [2.0, 0.5, 0.09, 0.3, 0.2]
    confirms, index = _monitor(probe, lambda i: [9.0, 9.0, 0.07, 0.06, 0.05][i])
    # check 3's probe is above ε, but check 2's confirmation waits for its second look
    assert confirms == [None, None, 0.07, 0.06, 0.05] and index == 2


def test_sizes_and_seeds_are_checked():
    assert confirm.check_confirm_samples(confirm.MIN_CONFIRM_SAMPLES) == confirm.MIN_CONFIRM_SAMPLES
    with pytest.raises(ValueError, match="at least 4096 fresh samples, got 512"):
        confirm.check_confirm_samples(512)
    assert confirm.check_seeds([0, 1, 2]) == (0, 1, 2)
    for bad in ([0, 1], [0, 0, 1]):
        with pytest.raises(ValueError, match="at least 3 distinct seeds"):
            confirm.check_seeds(bad)


def test_seed_summary_is_median_and_range_with_unreached_as_infinite():
    row = lambda reached, evals, err: {"reached": reached, "evals": evals, "wall_s": evals / 10, "error": err}
    q = confirm.seed_summary([row(True, 100.0, 0.05), row(False, 50.0, 0.8), row(True, 300.0, 0.09)])
    assert q["seeds_reached"] == 2 and q["num_seeds"] == 3 and q["reached"]
    assert q["evals"] == {"median": 300.0, "min": 100.0, "max": math.inf}
    assert q["error"] == {"median": 0.09, "min": 0.05, "max": 0.8}
    q = confirm.seed_summary([row(True, 100.0, 0.05), row(False, 50.0, 0.8), row(False, 30.0, 1.2)])
    assert not q["reached"] and q["evals"]["median"] == math.inf and q["evals"]["min"] == 100.0
    with pytest.raises(ValueError, match="at least 3 seeds"):
        confirm.seed_summary([row(True, 1.0, 0.0)] * 2)
