"""Compilation counting: XLA backend compilations seen through `jax.monitoring`.

`CompileCounter` is a context manager that counts `backend_compile` events of this process. Around
`samplers.train.train`, recording the count after every chunk (its `eval_fn` hook) shows whether
anything was compiled after the first chunk: a type-stable training loop compiles its chunk
program once, so the count must not grow between chunks (`recompilations_after_first_chunk == 0`).
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["CompileCounter", "train_with_compile_count"]


class CompileCounter:
    """Counts XLA backend compilations while active (`with CompileCounter() as c: ...; c.count`)."""

    def __init__(self) -> None:
        self.count = 0

    def _listener(self, name: str, duration: float, **kwargs: Any) -> None:
        if "backend_compile" in name:
            self.count += 1

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)


def train_with_compile_count(key, method, *, num_steps: int, chunk_size: int, eval_fn=None):
    """`samplers.train.train` with the compilation count recorded after every chunk.

    Returns `(TrainResult, {"num_compilations": chunk programs compiled by the loop,
    "backend_compiles_per_chunk": [count after chunk 1, 2, ...],
    "recompilations_after_first_chunk": growth of the count after the first chunk})`.
    """
    from samplers.train import train

    counts: list[int] = []
    with CompileCounter() as counter:

        def hook(state):
            out = eval_fn(state) if eval_fn is not None else None
            counts.append(counter.count)  # after eval_fn: its own first compilation belongs to chunk 1
            return out

        result = train(key, method, num_steps=num_steps, chunk_size=chunk_size, eval_fn=hook)
    return result, {
        "num_compilations": int(result.num_compilations),
        "backend_compiles_per_chunk": counts,
        "recompilations_after_first_chunk": int(counts[-1] - counts[0]) if counts else 0,
    }
