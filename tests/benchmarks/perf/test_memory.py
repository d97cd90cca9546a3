"""Peak training-step memory of the heaviest cells of the `full` grid (XLA's memory_analysis of the
compiled step, no execution): the settings of `benchmarks/grid/configs/hyperparams.json` must fit a 24 GiB
machine. Slow (each compiles an EGNN training step, ~20 s); `make test-slow`."""

from __future__ import annotations

import jax
import pytest

from benchmarks.perf.cells import build_cell

LIMITS_GB = {("adjoint_matching", "lj13"): 4.0, ("cmcd_lv", "lj13"): 2.0, ("cmcd_kl", "lj13"): 2.0}


@pytest.mark.slow
@pytest.mark.parametrize("method, target", sorted(LIMITS_GB))
def test_training_step_memory(method, target):
    built = build_cell(method, target)
    state = jax.eval_shape(built.method.init, jax.random.key(0))
    compiled = jax.jit(built.method.step).lower(jax.random.key(1), state).compile()
    temp_gb = compiled.memory_analysis().temp_size_in_bytes / 1e9
    assert temp_gb < LIMITS_GB[(method, target)], f"{method}/{target}: {temp_gb:.2f} GB per training step"
