"""Tests for samplers.train: convergence, history layout, chunking with a partial last chunk,
compilation count, divergence detection, determinism and the Cost contract."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samplers.method import Cost, Method
from samplers.promotion import standard_promotion
from samplers.train import Diverged, _ChunkRunner, _make_chunk, train

TARGET = jnp.array([1.0, -2.0, 0.5, 3.0])
NOISE = 0.01


class ToyState(NamedTuple):
    params: jax.Array
    opt_state: Any
    step: jax.Array
    cost: Cost


class ToyInfo(NamedTuple):
    loss: jax.Array
    grad_norm: jax.Array


def toy_method(*, learning_rate=0.05, nan_at=None, nan_in="params", weak_counter=False) -> Method:
    """Regress `params` onto TARGET + small key-dependent noise with Adam.

    `loss = |params - (TARGET + NOISE ε)|²`, `ε ~ N(0, I)` drawn from the step key, so the key
    matters. Each step adds one network evaluation to the cost. `nan_at` injects a NaN into the
    params or the loss at that step; `weak_counter` makes the step counter weakly typed in
    `init` only (while `step` returns it strongly typed).
    """
    optimizer = optax.adam(learning_rate)

    def init(key):
        params = jax.random.normal(key, TARGET.shape)
        step = jnp.asarray(0.0) if weak_counter else jnp.zeros((), jnp.int32)
        return ToyState(params, optimizer.init(params), step, Cost.zero())

    def step(key, state):
        goal = TARGET + NOISE * jax.random.normal(key, TARGET.shape)
        loss, grad = jax.value_and_grad(lambda p: jnp.sum((p - goal) ** 2))(state.params)
        updates, opt_state = standard_promotion(optimizer.update)(grad, state.opt_state)  # optax promotes
        params = optax.apply_updates(state.params, updates)
        if nan_at is not None:
            poison = jnp.where(state.step == nan_at, jnp.nan, 0.0)
            if nan_in == "params":
                params = params + poison
            else:
                loss = loss + poison
        cost = state.cost + Cost.of(network_evals=1.0)
        one = jnp.ones((), state.step.dtype)  # strongly typed: a weak counter from init becomes strong
        return ToyState(params, opt_state, state.step + one, cost), ToyInfo(loss, optax.tree.norm(grad))

    return Method(init=init, step=step, sample=None)


def reference_run(key, method, num_steps):
    """The same training with a plain Python loop, one jitted step at a time."""
    key_init, key_steps = jax.random.split(key)
    state = method.init(key_init)
    step = jax.jit(method.step)
    losses = []
    for s in range(num_steps):
        state, info = step(jax.random.fold_in(key_steps, s), state)
        losses.append(float(info.loss))
    return state, np.asarray(losses)


@pytest.fixture(scope="module")
def run_250():
    method = toy_method()
    return method, train(jax.random.key(0), method, num_steps=250, chunk_size=100)


def test_converges_and_history_layout(run_250):
    _, result = run_250
    np.testing.assert_allclose(result.state.params, TARGET, atol=0.05)
    history = result.history
    assert set(history) == {"step", "train_time_s", "loss", "grad_norm"}
    assert history["step"].tolist() == [100, 200, 250]
    assert history["loss"].shape == history["grad_norm"].shape == (3,)
    assert np.all(np.diff(history["train_time_s"]) > 0)
    assert history["loss"][-1] < 1e-2 * history["loss"][0]
    assert result.compile_time_s > 0 and result.train_time_s > 0


def test_matches_a_python_loop_and_masks_the_last_chunk(run_250):
    method, result = run_250
    state, losses = reference_run(jax.random.key(0), method, 250)
    np.testing.assert_allclose(result.state.params, state.params, rtol=1e-5, atol=1e-6)
    # chunk means over exactly the executed steps (the last chunk has 50, not 100)
    expected = [losses[:100].mean(), losses[100:200].mean(), losses[200:].mean()]
    np.testing.assert_allclose(result.history["loss"], expected, rtol=1e-4)
    # masked steps are not executed: step counter and cost count exactly 250 steps
    assert int(result.state.step) == 250
    assert float(result.state.cost.network_evals) == 250.0
    assert float(result.state.cost.energy_evals) == 0.0


def test_no_recompilation_between_chunks(run_250):
    _, result = run_250
    assert result.num_compilations == 1


def test_backend_compiles_only_once_across_chunks():
    """Independent check with jax.monitoring: no XLA compilation after the first chunk."""
    compiles = []
    listener = lambda name, duration, **kwargs: compiles.append(name) if "backend_compile" in name else None
    counts_after_chunk = []
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = train(
            jax.random.key(1),
            toy_method(),
            num_steps=45,
            chunk_size=10,
            eval_fn=lambda state: counts_after_chunk.append(len(compiles)),
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(counts_after_chunk) == 5 and result.num_compilations == 1
    assert counts_after_chunk[0] >= 1
    assert counts_after_chunk[1:] == [counts_after_chunk[0]] * 4


def test_weakly_typed_init_state_does_not_recompile():
    # the classic pitfall: a weakly typed counter from init that `step` makes strongly typed
    result = train(jax.random.key(0), toy_method(weak_counter=True), num_steps=30, chunk_size=10)
    assert result.num_compilations == 1
    assert float(result.state.step) == 30.0


def test_compilation_counter_counts_new_signatures():
    # the counter behind num_compilations: one compilation per argument type signature
    runner = _ChunkRunner(lambda x: x * 2, use_jit=True)
    runner(jnp.ones(3))
    runner(jnp.zeros(3))
    assert runner.num_compilations == 1
    runner(jnp.ones(3, jnp.int32))
    runner(jnp.ones(4))
    assert runner.num_compilations == 3 and runner.compile_time_s > 0


def test_chunk_size_does_not_change_the_trajectory(run_250):
    _, result = run_250
    other = train(jax.random.key(0), toy_method(), num_steps=250, chunk_size=64)
    assert other.history["step"].tolist() == [64, 128, 192, 250]
    np.testing.assert_allclose(other.state.params, result.state.params, rtol=1e-5, atol=1e-6)


def test_deterministic_bit_identical(run_250):
    method, result = run_250
    again = train(jax.random.key(0), method, num_steps=250, chunk_size=100)
    for a, b in zip(jax.tree.leaves(result.state), jax.tree.leaves(again.state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for name in ("loss", "grad_norm", "step"):
        assert np.array_equal(result.history[name], again.history[name])
    different = train(jax.random.key(1), method, num_steps=250, chunk_size=100)
    assert not np.array_equal(np.asarray(different.state.params), np.asarray(result.state.params))


@pytest.mark.parametrize("nan_in", ["params", "loss"])
def test_nan_raises_diverged_with_the_step(nan_in):
    with pytest.raises(Diverged) as caught:
        train(jax.random.key(0), toy_method(nan_at=37, nan_in=nan_in), num_steps=100, chunk_size=20)
    assert caught.value.step == 37
    assert caught.value.reason == f"non-finite {nan_in}"
    assert "step 37" in str(caught.value)
    # the history of the chunk before the offending one is attached
    assert caught.value.history["step"].tolist() == [20]


def test_a_chunk_halts_at_its_first_nonfinite_step_when_training_would_raise():
    method = toy_method(nan_at=3)
    state = method.init(jax.random.key(0))
    args = (state, jax.random.key(1), jnp.asarray(0, jnp.int32), jnp.asarray(20, jnp.int32))
    halted = jax.jit(_make_chunk(method.step, 20, halt_on_nonfinite=True))(*args)
    assert int(halted.state.step) == 4  # steps 0-3 ran; 4-19 were skipped
    assert np.asarray(halted.params_finite).tolist().index(False) == 3
    full = jax.jit(_make_chunk(method.step, 20))(*args)  # "warn" / "ignore" train on
    assert int(full.state.step) == 20


def test_nonfinite_ignore_and_warn():
    result = train(
        jax.random.key(0),
        toy_method(nan_at=3, nan_in="loss"),
        num_steps=10,
        chunk_size=5,
        on_nonfinite="ignore",
    )
    assert np.isnan(result.history["loss"][0]) and np.isfinite(result.history["loss"][1])
    with pytest.warns(RuntimeWarning, match="step 3"):
        train(
            jax.random.key(0),
            toy_method(nan_at=3, nan_in="loss"),
            num_steps=10,
            chunk_size=5,
            on_nonfinite="warn",
        )


def test_eval_fn_is_recorded():
    calls = []

    def eval_fn(state):
        calls.append(int(state.step))
        return {"distance": np.linalg.norm(np.asarray(state.params) - np.asarray(TARGET))}

    result = train(jax.random.key(0), toy_method(), num_steps=25, chunk_size=10, eval_fn=eval_fn)
    assert calls == [10, 20, 25]
    assert result.history["eval/distance"].shape == (3,)
    assert result.history["eval/distance"][-1] < result.history["eval/distance"][0]


def test_stop_fn_ends_training_early():
    # stop once 25 network evaluations are spent: checked after each chunk of 10
    result = train(
        jax.random.key(0),
        toy_method(),
        num_steps=100,
        chunk_size=10,
        stop_fn=lambda state: float(state.cost.network_evals) >= 25,
    )
    assert result.history["step"].tolist() == [10, 20, 30]
    assert int(result.state.step) == 30 and result.num_compilations == 1


def test_keep_steps_cuts_a_chunk_that_overspends_and_ends_training():
    # two energy evaluations per step; keep the steps whose total stays within 25 evaluations
    toy = toy_method()

    def step(key, state):
        new, info = toy.step(key, state)
        return new._replace(cost=new.cost + Cost.of(energy_evals=2.0)), info

    method = Method(toy.init, step, None)
    seen = []

    def keep(evals):
        seen.append(np.asarray(evals).tolist())
        return int(np.sum(evals <= 25))

    result = train(jax.random.key(0), method, num_steps=100, chunk_size=10, keep_steps=keep)
    assert seen[0] == [2.0 * i for i in range(1, 11)]  # the evaluations after each step of the chunk
    assert result.history["step"].tolist() == [10, 12]  # the second chunk re-ran with 2 steps, then stop
    assert float(result.state.cost.energy_evals) == 24.0 and int(result.state.step) == 12
    plain = train(jax.random.key(0), method, num_steps=12, chunk_size=10)  # the same 12 steps
    np.testing.assert_array_equal(result.state.params, plain.state.params)
    assert result.num_compilations == 1
    # a chunk that fits is kept as it ran: the same boundaries as without keep_steps
    whole = train(jax.random.key(0), method, num_steps=30, chunk_size=10, keep_steps=lambda e: len(e))
    assert whole.history["step"].tolist() == [10, 20, 30]


def test_debug_mode_without_jit_matches():
    method = toy_method()
    fast = train(jax.random.key(2), method, num_steps=3, chunk_size=2)
    slow = train(jax.random.key(2), method, num_steps=3, chunk_size=2, jit=False)
    assert slow.num_compilations == 0 and slow.compile_time_s == 0.0
    np.testing.assert_allclose(slow.state.params, fast.state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slow.history["loss"], fast.history["loss"], rtol=1e-5)


def test_bad_input():
    method = toy_method()
    with pytest.raises(ValueError, match="valid choices"):
        train(jax.random.key(0), method, num_steps=10, on_nonfinite="explode")
    with pytest.raises(ValueError, match="num_steps"):
        train(jax.random.key(0), method, num_steps=0)
    with pytest.raises(ValueError, match="chunk_size"):
        train(jax.random.key(0), method, num_steps=10, chunk_size=0)
    no_cost = Method(init=lambda key: (jnp.zeros(2),), step=method.step, sample=None)
    with pytest.raises(TypeError, match="cost"):
        train(jax.random.key(0), no_cost, num_steps=10)
