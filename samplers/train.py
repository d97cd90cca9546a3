"""The shared training loop of every learned method: chunked `lax.scan` over `Method.step`.

`train(key, method, num_steps=...)` runs

    state_0 = method.init(key_init)
    state_{s+1}, info_s = method.step(fold_in(key_steps, s), state_s),   s = 0, …, num_steps - 1

as a Python loop over *chunks*: each chunk is one compiled `lax.scan` of `chunk_size` steps
(`docs/design.md`, "Style", item 2). Step `s` always uses the key `fold_in(key_steps, s)`, so the
trajectory does not depend on `chunk_size`. The last, partial chunk runs the same compiled program
with the surplus steps masked: a `lax.cond` per step skips them, so they cost neither compute nor
`Cost` (on GPU, XLA reads a conditional's predicate on the host: one small synchronisation per step).
The state's type is fixed by the first chunk (`lax.scan` and the `cond` join weak types), so a run
compiles exactly once; `TrainResult.num_compilations` counts the compilations so that tests and the
harness can assert it.

Between chunks the loop (the only Python-level loop)
    - summarises the chunk's stacked `Info` NamedTuples (mean over the chunk's executed steps)
      into the history,
    - checks every step's loss (`info.loss`, when the Info has one) and updated parameters
      (`state.params`, or every floating leaf of the state when it has no `params`) for NaN/Inf
      and raises `Diverged(step, reason)` at the first offending step (the chunk itself skips the
      steps after it, so a run that diverges early does not compute the rest of its chunk on NaNs),
    - calls `eval_fn(state)` and records what it returns,
    - stops early when `stop_fn(state)` is true (e.g. an evaluation budget is spent).

A hard per-step budget (`keep_steps`): each chunk also returns the evaluations (energy + gradient,
`Cost.budget_evals`) the state holds after each of its steps. `keep_steps(evals)` says how many of
those steps to keep; when it is fewer than ran, the chunk runs again from the state it started
from with only those steps (the same keys, so the same first steps: the discarded run's
evaluations leave no trace in the state, its steps are simply not taken), and training ends there.
A chunk whose steps all fit is kept as it ran, so the trajectory and the chunk boundaries are those
of a run without `keep_steps`.

Data parallelism (`samplers.parallel`): with more than one local device the state is replicated
and the particle batches the methods draw inside `step` are sharded over the devices; the
compiler all-reduces the batch reductions and the gradients. Same key and global batch: the same
result on 1 and on D devices up to floating-point summation order.

Timing: `compile_time_s` is the time spent lowering and compiling chunk programs (ahead of time,
so it excludes execution); `train_time_s` the time spent executing chunks (blocking until the
results are ready), excluding compilation, `method.init`, `eval_fn` and host-side bookkeeping.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samplers import parallel
from samplers.method import Cost, Method
from samplers.types import PyTree

__all__ = ["ON_NONFINITE", "Diverged", "TrainResult", "train"]


ON_NONFINITE = ("raise", "warn", "ignore")


class Diverged(RuntimeError):
    """Training produced a non-finite loss or non-finite parameters.

    The harness records a run that raises this as status `"diverged"`.

    Attributes:
        step: 0-based index of the first training step whose loss or updated parameters were
            not finite (steps `0 … step - 1` were all finite).
        reason: what was not finite, e.g. `"non-finite loss"` or `"non-finite params"`.
        history: the history of the chunks completed before the offending chunk (same layout as
            `TrainResult.history`).
    """

    def __init__(self, step: int, reason: str, history: Mapping[str, np.ndarray] | None = None):
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step = int(step)
        self.reason = reason
        self.history = dict(history or {})


class TrainResult(NamedTuple):
    """What `train` returns.

    Attributes:
        state: the final method state (its `cost` is exactly what the method accumulated).
        history: `{name: array of shape (num_chunks, ...)}` with
            `"step"` (steps completed at the end of each chunk),
            `"train_time_s"` (cumulative execution time at the end of each chunk),
            one entry per `Info` field (its mean over the chunk's steps; nested fields are named
            `"outer/inner"`), and `"eval/<name>"` for every value returned by `eval_fn`.
        compile_time_s: seconds spent lowering and compiling chunk programs.
        train_time_s: seconds spent executing chunks.
        num_compilations: number of chunk programs compiled (1 for a type-stable method).
    """

    state: PyTree
    history: dict[str, np.ndarray]
    compile_time_s: float
    train_time_s: float
    num_compilations: int


class _ChunkOutput(NamedTuple):
    state: PyTree
    summary: PyTree  # Info with the step axis averaged out over executed steps
    loss_finite: jax.Array  # (chunk_size,) bool, True for masked steps
    params_finite: jax.Array  # (chunk_size,) bool, True for masked steps
    evals: jax.Array  # (chunk_size,) energy + gradient evaluations in the state after each step


def _checked_params(state: PyTree) -> PyTree:
    params = getattr(state, "params", None)
    return state if params is None else params


def _all_finite(tree: PyTree) -> jax.Array:
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def _loss_of(info: PyTree) -> PyTree:
    if isinstance(info, Mapping):
        return info.get("loss")
    return getattr(info, "loss", None)


def _masked_mean(leaf: jax.Array, valid: jax.Array, num_valid: jax.Array) -> jax.Array:
    dtype = leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.inexact) else jnp.float32
    mask = valid.reshape(valid.shape + (1,) * (leaf.ndim - 1))
    total = jnp.sum(jnp.where(mask, leaf.astype(dtype), jnp.zeros((), dtype)), axis=0)
    return total / jnp.maximum(num_valid, 1).astype(dtype)


def _make_chunk(step_fn: Callable, chunk_size: int, halt_on_nonfinite: bool = False) -> Callable:
    """`(state, key_steps, start, num_valid) -> _ChunkOutput`: steps `start … start + chunk_size - 1`,
    of which only the first `num_valid` are executed. With `halt_on_nonfinite`, the steps after the
    first one whose loss or parameters are not finite are skipped too (the caller raises `Diverged`
    at that step, so the rest of the chunk would be wasted work on NaNs)."""

    def run_chunk(state, key_steps, start, num_valid):
        _, info_shape = jax.eval_shape(step_fn, jax.random.fold_in(key_steps, 0), state)
        skipped_info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

        def body(carry, offset):
            state, healthy = carry
            index = start + offset
            key = jax.random.fold_in(key_steps, index)
            new_state, info = jax.lax.cond(
                (offset < num_valid) & healthy, lambda s: step_fn(key, s), lambda s: (s, skipped_info), state
            )
            loss = _loss_of(info)
            loss_finite = jnp.asarray(True) if loss is None else _all_finite(loss)
            params_finite = _all_finite(_checked_params(new_state))
            if halt_on_nonfinite:
                healthy = healthy & loss_finite & params_finite
            cost = new_state.cost
            evals = cost.energy_evals + cost.grad_evals
            return (new_state, healthy), (info, loss_finite, params_finite, evals)

        offsets = jnp.arange(chunk_size, dtype=jnp.int32)
        (state, _), (infos, loss_finite, params_finite, evals) = jax.lax.scan(
            body, (state, jnp.asarray(True)), offsets
        )
        valid = offsets < num_valid
        summary = jax.tree.map(lambda leaf: _masked_mean(leaf, valid, num_valid), infos)
        # data parallelism: the state (parameters, optimiser, buffers) leaves every chunk replicated
        state = parallel.replicate(state)
        return _ChunkOutput(state, summary, loss_finite | ~valid, params_finite | ~valid, evals)

    return run_chunk


class _ChunkRunner:
    """Compiles the chunk program ahead of time, once per distinct argument type signature.

    The signature is the PyTree structure with every leaf's (shape, dtype, weak_type), i.e.
    what decides a `jax.jit` cache hit on one device, so `num_compilations` counts exactly
    the compilations `jax.jit` would do, and `compile_time_s` excludes execution.
    """

    def __init__(self, chunk_fn: Callable, use_jit: bool):
        self._chunk_fn = chunk_fn
        self._jitted = jax.jit(chunk_fn)
        self._use_jit = use_jit
        self._compiled: dict[Any, Any] = {}
        self.compile_time_s = 0.0

    @property
    def num_compilations(self) -> int:
        return len(self._compiled)

    @staticmethod
    def _signature(args) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        avals = tuple(
            (jnp.shape(leaf), jnp.result_type(leaf), bool(getattr(jax.typeof(leaf), "weak_type", False)))
            for leaf in leaves
        )
        return treedef, avals

    def __call__(self, *args) -> _ChunkOutput:
        if not self._use_jit:
            with jax.disable_jit():
                return self._chunk_fn(*args)
        signature = self._signature(args)
        compiled = self._compiled.get(signature)
        if compiled is None:
            start = time.perf_counter()
            compiled = self._jitted.lower(*args).compile()
            self.compile_time_s += time.perf_counter() - start
            self._compiled[signature] = compiled
        return compiled(*args)


def _run_chunk(
    runner: _ChunkRunner, state, key_steps, start: int, num_valid: int
) -> tuple[_ChunkOutput, float]:
    """One chunk, blocking until done: `(output, execution seconds)`; compilation (if any happened
    in this call) is accounted for separately, in `runner.compile_time_s`."""
    args = (state, key_steps, jnp.asarray(start, jnp.int32), jnp.asarray(num_valid, jnp.int32))
    compile_before = runner.compile_time_s
    tic = time.perf_counter()
    out = jax.block_until_ready(runner(*args))
    return out, time.perf_counter() - tic - (runner.compile_time_s - compile_before)


def _leaf_names(tree: PyTree, default: str) -> list[str]:
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for entry in path:
            for attribute in ("name", "key", "idx"):
                if hasattr(entry, attribute):
                    parts.append(str(getattr(entry, attribute)))
                    break
        names.append("/".join(parts) or default)
    return names


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def train(
    key: jax.Array,
    method: Method,
    *,
    num_steps: int,
    chunk_size: int = 100,
    eval_fn: Callable[[PyTree], Mapping[str, Any] | None] | None = None,
    stop_fn: Callable[[PyTree], bool] | None = None,
    progress: bool = False,
    on_nonfinite: str = "raise",
    jit: bool = True,
    on_chunk: Callable[[int, int, float | None], None] | None = None,
    keep_steps: Callable[[np.ndarray], int] | None = None,
) -> TrainResult:
    """Train a learned method for `num_steps` steps, in jitted chunks of `lax.scan`.

    Args:
        key: PRNG key; split into `key_init` (for `method.init`) and `key_steps` (step `s` uses
            `fold_in(key_steps, s)`). Same key, same method: bit-identical result.
        method: a bound `Method`; its state must carry `cost: Cost` (returned untouched).
        num_steps: number of training steps (positive).
        chunk_size: steps per compiled chunk (capped at `num_steps`); between chunks the loop
            checks for divergence, records the history and calls `eval_fn`.
        eval_fn: `state -> {name: value}` (or None), called after every chunk; values are recorded
            under `"eval/<name>"`, and must have the same names and shapes at every call. Derive
            any key it needs from the state (e.g. its step counter), not from a global.
        stop_fn: `state -> bool`, called after every chunk (after `eval_fn`); `True` ends training
            early (e.g. once `state.cost` exceeds an evaluation budget). The result then holds
            the state and history at that chunk; `history["step"][-1]` says how far it got.
        progress: show a tqdm progress bar (with the last chunk's mean loss).
        on_nonfinite: `"raise"` (raise `Diverged`), `"warn"` (RuntimeWarning, keep training) or
            `"ignore"`.
        jit: `False` runs the very same chunk function under `jax.disable_jit()` (debugging; no
            compilation is counted).
        on_chunk: `(steps done, num_steps, last chunk's mean loss or None) -> None`, called after
            every chunk (a caller's own progress line).
        keep_steps: `evals -> k`, called after every chunk with the energy + gradient evaluations
            the state held after each of its executed steps (float array); a `k` below their
            number re-runs the chunk with its first `k` steps only (at least 1) and ends training
            after it (module docstring). E.g. a hard evaluation budget: the steps whose `evals`
            (plus what the final sampling will cost) stay within it.

    Returns:
        A `TrainResult`.

    Raises:
        Diverged: with `on_nonfinite="raise"`, at the first step whose loss or updated parameters
            are NaN or infinite.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from typing import Any, NamedTuple
        >>> from samplers.method import Cost, Method
        >>> class S(NamedTuple):
        ...     params: jax.Array; opt_state: Any; cost: Cost
        >>> class I(NamedTuple):
        ...     loss: jax.Array
        >>> opt = optax.sgd(0.1)
        >>> def init(key): p = jnp.zeros(2); return S(p, opt.init(p), Cost.zero())
        >>> def step(key, s):
        ...     loss, g = jax.value_and_grad(lambda p: jnp.sum((p - 1.0) ** 2))(s.params)
        ...     u, o = opt.update(g, s.opt_state)
        ...     return S(optax.apply_updates(s.params, u), o, s.cost), I(loss)
        >>> result = train(jax.random.key(0), Method(init, step, None), num_steps=50, chunk_size=20)
        >>> result.history["step"].tolist(), result.num_compilations
        ([20, 40, 50], 1)
    """
    num_steps = _check_positive_int(num_steps, "num_steps")
    chunk_size = min(_check_positive_int(chunk_size, "chunk_size"), num_steps)
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"unknown on_nonfinite {on_nonfinite!r}; valid choices: {list(ON_NONFINITE)}")
    if not isinstance(method, Method):
        raise TypeError(f"train needs a samplers.Method (init, step, sample), got {type(method).__name__}")

    key_init, key_steps = jax.random.split(key)
    state = parallel.replicate(method.init(key_init))  # a copy per device when a mesh is active
    if not isinstance(getattr(state, "cost", None), Cost):
        raise TypeError(
            f"the state returned by method.init ({type(state).__name__}) must have a field `cost: Cost`"
        )

    runner = _ChunkRunner(_make_chunk(method.step, chunk_size, on_nonfinite == "raise"), use_jit=jit)
    columns: dict[str, list] = {"step": [], "train_time_s": []}
    info_names: list[str] | None = None
    eval_names: list[str] | None = None
    train_time_s = 0.0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="train", unit="step")
    try:
        start, budget_reached = 0, False
        while start < num_steps and not budget_reached:
            num_valid = min(chunk_size, num_steps - start)
            out, seconds = _run_chunk(runner, state, key_steps, start, num_valid)
            if keep_steps is not None:
                keep = max(1, min(int(keep_steps(np.asarray(out.evals)[:num_valid])), num_valid))
                if keep < num_valid:  # the discarded run's time is not training time
                    num_valid, budget_reached = keep, True
                    out, seconds = _run_chunk(runner, state, key_steps, start, num_valid)
            train_time_s += seconds
            state = out.state

            loss_finite, params_finite = np.asarray(out.loss_finite), np.asarray(out.params_finite)
            if on_nonfinite != "ignore" and not (loss_finite.all() and params_finite.all()):
                offset = int(np.argmin(loss_finite & params_finite))
                bad = [
                    what
                    for what, ok in (("loss", loss_finite[offset]), ("params", params_finite[offset]))
                    if not ok
                ]
                reason = f"non-finite {' and '.join(bad)}"
                if on_nonfinite == "raise":
                    raise Diverged(start + offset, reason, _stack(columns))
                warnings.warn(f"training step {start + offset}: {reason}", RuntimeWarning, stacklevel=2)

            summary_leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(out.summary)]
            if info_names is None:
                # An Info field that collides with a loop column ("step", ...) is kept as "info/<name>".
                info_names = [
                    f"info/{name}" if name in columns else name for name in _leaf_names(out.summary, "info")
                ]
                for name in info_names:
                    columns[name] = []
            for name, value in zip(info_names, summary_leaves, strict=True):
                columns[name].append(value)
            columns["step"].append(start + num_valid)
            columns["train_time_s"].append(train_time_s)

            if eval_fn is not None:
                results = eval_fn(state) or {}
                names = sorted(results)
                if eval_names is None:
                    eval_names = names
                    for name in names:
                        columns[f"eval/{name}"] = []
                elif names != eval_names:
                    raise ValueError(
                        f"eval_fn returned names {names}, earlier {eval_names}; they must not change"
                    )
                for name in names:
                    columns[f"eval/{name}"].append(np.asarray(jax.device_get(results[name])))

            if bar is not None or on_chunk is not None:
                loss = _loss_of(out.summary)
                loss = float(loss) if loss is not None and np.ndim(loss) == 0 else None
                if bar is not None:
                    bar.update(num_valid)
                    if loss is not None:
                        bar.set_postfix(loss=f"{loss:.4g}")
                if on_chunk is not None:
                    on_chunk(start + num_valid, num_steps, loss)
            start += num_valid
            if stop_fn is not None and bool(stop_fn(state)):
                break
    finally:
        if bar is not None:
            bar.close()

    return TrainResult(
        state=state,
        history=_stack(columns),
        compile_time_s=runner.compile_time_s,
        train_time_s=train_time_s,
        num_compilations=runner.num_compilations,
    )


def _stack(columns: Mapping[str, list]) -> dict[str, np.ndarray]:
    return {name: np.asarray(values) for name, values in columns.items()}
