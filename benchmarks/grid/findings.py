"""Why a training run went wrong, read from its `Info` history: the summary and findings of a record.

`samplers.train.train` keeps, for every scalar field of a method's `Info`, its mean over each chunk
(`history[name]`, with `history["step"]` the step at the chunk's end). A cell record carries two
things derived from it (`record.train`):

- `info`: per field, its last, smallest and largest chunk mean and the steps of the extremes;
- `findings`: one sentence per rule of `RULES` that fired, with the first chunk where it did, e.g.
  `"buffer ESS 0.0006 < 1% of the buffer (path weights collapsed onto a few end points) at step 100"`.

Both come from `diagnosis`, also for a run that diverged (from the chunks completed before it).

A rule reads one `Info` field, so it applies to every method whose `Info` has that field and to no
other; a new diagnostic is a new entry of `RULES`.

One finding reads the whole run instead of a chunk (`regressions`, from the `info` summary, so it can
also be read off a record written before it existed): training that moves *away* from the target,

    ELBO_best − ELBO_last > max(10 nats, |ELBO_best| / 2)     (chunk means of `Info.elbo`),

which no pointwise rule sees and which never goes non-finite (e.g. a loss whose fixed point is not
the target on this problem): the run is `ok`, its sampler got worse the longer it trained. The
training ELBO needs no reference samples and no true log Z.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["RULES", "Rule", "diagnosis", "findings", "info_summary", "record_findings", "regressions"]


class Rule(NamedTuple):
    """A finding: `fires(value)` on a chunk mean of `Info.<field>`; `text` formats with `value`.

    Attributes:
        field: the `Info` field (a history key).
        fires: `chunk mean -> bool`.
        text: the sentence, with `{value}` (the chunk mean) in it.
    """

    field: str
    fires: Callable[[float], bool]
    text: str


RULES: tuple[Rule, ...] = (
    Rule(
        "buffer_ess",
        lambda v: v < 0.01,
        "buffer ESS {value:.2g} < 1% of the buffer (path weights collapsed onto a few end points)",
    ),
    Rule(
        "buffer_ess_tempered",
        lambda v: v < 0.01,
        "training draws' ESS {value:.2g} < 1% of the buffer after tempering",
    ),
    Rule(
        "temper_beta",
        lambda v: v < 0.5,
        "path weights tempered to β = {value:.2g} to keep the buffer ESS at its floor",
    ),
    Rule(
        "kept_fraction",
        lambda v: v < 0.5,
        "only {value:.2g} of the trajectories kept by the loss quantile clip",
    ),
)


def _scalar_columns(history: Mapping[str, Any]) -> dict[str, np.ndarray]:
    columns = {}
    for name, values in history.items():
        if name == "step":
            continue
        array = np.asarray(values)
        if array.ndim == 1 and array.size and np.issubdtype(array.dtype, np.number):
            columns[name] = array.astype(np.float64)
    return columns


def info_summary(history: Mapping[str, Any]) -> dict[str, dict[str, float | int | None]]:
    """Per scalar `Info` field: `last`, `min`, `max` (chunk means; None where not finite) and
    `min_step`, `max_step` (the chunk-end steps of the extremes, over the finite chunks)."""
    steps = np.asarray(history.get("step", []))
    out: dict[str, dict[str, float | int | None]] = {}
    for name, values in _scalar_columns(history).items():
        finite = np.isfinite(values)
        entry: dict[str, float | int | None] = {"last": float(values[-1]) if finite[-1] else None}
        if finite.any():
            masked_low, masked_high = np.where(finite, values, np.inf), np.where(finite, values, -np.inf)
            low, high = int(np.argmin(masked_low)), int(np.argmax(masked_high))
            entry.update(min=float(values[low]), max=float(values[high]))
            if steps.size == values.size:
                entry.update(min_step=int(steps[low]), max_step=int(steps[high]))
        out[name] = entry
    return out


def findings(history: Mapping[str, Any], rules: tuple[Rule, ...] = RULES) -> list[str]:
    """The sentences of the rules that fired, each at the first chunk where it did (in rule order)."""
    steps = np.asarray(history.get("step", []))
    columns = _scalar_columns(history)
    out = []
    for rule in rules:
        values = columns.get(rule.field)
        if values is None:
            continue
        for i, value in enumerate(values):
            if np.isfinite(value) and rule.fires(float(value)):
                where = f" at step {int(steps[i])}" if steps.size == values.size else ""
                out.append(rule.text.format(value=float(value)) + where)
                break
    return out


# ELBO regression: the last chunk below the best by more than
# max(REGRESSION_NATS, |best| * REGRESSION_FRACTION).
REGRESSION_NATS = 10.0
REGRESSION_FRACTION = 0.5


def regressions(info: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The finding of a training ELBO that ended far below its best chunk (module doc), from an
    `info_summary`; empty when the field is missing or not finite."""
    elbo = info.get("elbo", {})
    best, last = elbo.get("max"), elbo.get("last")
    if best is None or last is None or not np.isfinite([best, last]).all():
        return []
    if best - last <= max(REGRESSION_NATS, abs(best) * REGRESSION_FRACTION):
        return []
    at = f" at step {elbo['max_step']}" if elbo.get("max_step") is not None else ""
    return [
        f"training ELBO fell from its best {best:.3g}{at} to {last:.3g} at the end "
        "(training moved away from the target)"
    ]


def diagnosis(history: Mapping[str, Any]) -> dict[str, Any]:
    """`{"info": info_summary, "findings": findings + regressions}` of a training history, without
    the probe's `eval/` columns."""
    info_history = {k: v for k, v in history.items() if not k.startswith("eval/")}
    info = info_summary(info_history)
    return {"info": info, "findings": findings(info_history) + regressions(info)}


def record_findings(train: Mapping[str, Any] | None) -> list[str]:
    """The findings of a record's `train` entry: the stored ones plus `regressions` of its `info`
    (so a record written before that finding existed shows it too), without repeats."""
    train = train or {}
    stored = list(train.get("findings", []))
    return stored + [f for f in regressions(train.get("info", {})) if f not in stored]
