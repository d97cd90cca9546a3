"""Cost and wall-time metrics: a pass-through of `samplers.method.Cost` counters under fixed names.

The runner measures the times and sums the counters; this module only fixes the record keys:

    cost/energy_evals   evaluations of log_prob (or of the reward)
    cost/grad_evals     evaluations of ∇ log_prob (or ∇ reward)
    cost/network_evals  forward evaluations of the learned network(s), one per example
    cost/sde_steps      integrator steps, one per example per step
    time/train_s, time/sample_s, time/compile_s   wall-clock seconds: training steps (compiled),
                        drawing the evaluation samples (compiled), and the compilations of the
                        training step, the sampler and the backward paths

The rest of a cell's wall time (the training probe, reference sets, metrics with their own
compilations) is itemised in the record's `time` section (`benchmarks/grid/cell.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from samplers.method import Cost

__all__ = ["cost_metrics"]

_COUNTERS = ("energy_evals", "grad_evals", "network_evals", "sde_steps")


def cost_metrics(
    cost: Cost | Mapping[str, float], train_time: float, sample_time: float, compile_time: float
) -> dict[str, float]:
    """Namespaced cost counters and wall times (seconds) for one result record.

    Args:
        cost: a `Cost` (or a mapping with its four fields), e.g. training cost + sampling cost.
        train_time, sample_time, compile_time: wall-clock seconds.

    Raises:
        ValueError: if a counter is missing from a mapping (the message lists the expected names).
    """
    counters = cost._asdict() if isinstance(cost, Cost) else dict(cost)
    missing = [name for name in _COUNTERS if name not in counters]
    if missing:
        raise ValueError(f"cost is missing counter(s) {missing}; expected {list(_COUNTERS)}")
    out = {f"cost/{name}": float(counters[name]) for name in _COUNTERS}
    out.update(
        {
            "time/train_s": float(train_time),
            "time/sample_s": float(sample_time),
            "time/compile_s": float(compile_time),
        }
    )
    return out
