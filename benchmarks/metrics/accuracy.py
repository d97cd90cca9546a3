"""Accuracy status beside run status: whether a cell that ran (`status == "ok"`) gave a usable estimate.

A cell can finish without error and still be useless: a log-Z estimate off by 10³ nats, one
importance weight carrying all the mass, or a sampler that found one mode of eight. `assess`
reads a record's metrics and returns

    accuracy = "failed"  when any check of `CHECKS` trips (each gives its reason), else "ok";
    warnings             the mode-collapse warning: reverse ESS high while forward ESS or mode
                         coverage is low (reverse ESS is computed on the model's own samples and
                         cannot see the modes it missed).

The checks and their stated bounds (`Bounds`, defaults below):

    |log Ẑ − log Z| > max_log_z_error (10 nats: Z off by a factor e¹⁰)      (`logZ/error`)
    reverse ESS · N ≤ min_effective_draws (5 effective draws of the N samples;
        `ess/reverse`, `ess/num_samples`)
    forward ESS · M ≤ min_effective_draws (of the M backward paths from target samples;
        `ess/forward`, `ess/forward_num_samples`)
    mode coverage < min_mode_coverage (half the modes)                   (`modes/hit_fraction`)
    collapse warning: reverse ESS ≥ collapse_reverse_ess (0.5) and
        (forward ESS < collapse_forward_ess (0.1) or coverage < collapse_coverage (0.9))

A check whose metrics the record lacks does not apply (no forward ESS on a target without samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

__all__ = ["ACCURACY_STATUSES", "CHECKS", "Assessment", "Bounds", "assess"]

ACCURACY_STATUSES = ("ok", "failed")


class Bounds(NamedTuple):
    """The stated bounds of the accuracy checks (see the module docstring)."""

    max_log_z_error: float = 10.0
    min_effective_draws: float = 5.0
    min_mode_coverage: float = 0.5
    collapse_reverse_ess: float = 0.5
    collapse_forward_ess: float = 0.1
    collapse_coverage: float = 0.9


class Assessment(NamedTuple):
    """`accuracy` ("ok" / "failed"), the reasons it failed, and the collapse warnings."""

    accuracy: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]


def _get(metrics: Mapping[str, float], key: str) -> float | None:
    v = metrics.get(key)
    return None if v is None or isinstance(v, str) else float(v)


def _log_z(m: Mapping[str, float], b: Bounds) -> str | None:
    err = _get(m, "logZ/error")
    if err is None:
        return None
    if not math.isfinite(err) or err > b.max_log_z_error:
        return f"|log Z error| {err:.3g} > {b.max_log_z_error:g} nats"
    return None


def _ess(name: str, count_key: str) -> Callable[[Mapping[str, float], Bounds], str | None]:
    def check(m: Mapping[str, float], b: Bounds) -> str | None:
        ess, n = _get(m, f"ess/{name}"), _get(m, count_key)
        if ess is None or n is None:
            return None
        if not math.isfinite(ess) or ess * n <= b.min_effective_draws:
            return f"{name} ESS {ess:.3g} of {n:.0f} draws ≤ {b.min_effective_draws:g} effective draws"
        return None

    return check


def _coverage(m: Mapping[str, float], b: Bounds) -> str | None:
    hit = _get(m, "modes/hit_fraction")
    if hit is not None and hit < b.min_mode_coverage:
        return f"mode coverage {hit:.3g} < {b.min_mode_coverage:g}"
    return None


# name -> check(metrics, bounds) -> the reason it failed, or None
CHECKS: dict[str, Callable[[Mapping[str, float], Bounds], str | None]] = {
    "log_z_error": _log_z,
    "reverse_ess": _ess("reverse", "ess/num_samples"),
    "forward_ess": _ess("forward", "ess/forward_num_samples"),
    "mode_coverage": _coverage,
}


def _collapse(m: Mapping[str, float], b: Bounds) -> tuple[str, ...]:
    rev = _get(m, "ess/reverse")
    if rev is None or not rev >= b.collapse_reverse_ess:
        return ()
    fwd, hit = _get(m, "ess/forward"), _get(m, "modes/hit_fraction")
    low = []
    if fwd is not None and fwd < b.collapse_forward_ess:
        low.append(f"forward ESS {fwd:.3g}")
    if hit is not None and hit < b.collapse_coverage:
        low.append(f"mode coverage {hit:.3g}")
    if not low:
        return ()
    return (f"mode collapse? reverse ESS {rev:.3g} is high but {' and '.join(low)} is low",)


def assess(metrics: Mapping[str, float], bounds: Bounds = Bounds()) -> Assessment:
    """The accuracy status of one record's metrics (see the module docstring)."""
    reasons = tuple(r for check in CHECKS.values() if (r := check(metrics, bounds)) is not None)
    return Assessment("failed" if reasons else "ok", reasons, _collapse(metrics, bounds))
