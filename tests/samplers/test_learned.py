"""samplers.learned: the shared training step on a toy loss (a quadratic), without any SDE.

Checks the engine's contract: the key split, several passes over one batch by `lax.scan` (one
fresh loss key per pass), the extra state, the step counter and the cost bookkeeping in order."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samplers.learned import Batch, LearnedState, Training, build_learned, sampled_params, self_drawn
from samplers.method import Cost, Samples

GOAL = jnp.asarray([1.0, -2.0])


class _Info(NamedTuple):
    loss: jax.Array
    grad_norm: jax.Array
    passes: jax.Array


def _sample(key, state, n):
    x = state.params["x"] + jnp.zeros((n, 2))
    return Samples(x, jnp.zeros((n,)), Cost.of(energy_evals=n))


def _toy(passes=None, ema_decay=None):
    def draw(key, state):
        noise = 0.1 * jax.random.normal(key, (2,))
        return Batch(data=GOAL + noise, extra=state.extra + 1.0, cost=(Cost.of(energy_evals=3.0),))

    def loss(params, key, goal):
        jitter = 0.0 * jax.random.normal(key, ())  # the loss key is used, changes nothing
        return jnp.sum((params["x"] - goal) ** 2) + jitter, key

    def info(state, batch, loss, grad_norm, keys):
        return _Info(jnp.mean(loss), jnp.mean(grad_norm), jnp.asarray(jnp.size(loss), jnp.float32))

    training = Training(
        init_params=lambda key: {"x": jnp.zeros(2)},
        draw=draw,
        loss=loss,
        info=info,
        loss_cost=lambda batch, aux: (Cost.of(network_evals=2.0),),
        init_extra=lambda params: jnp.zeros(()),
        passes=passes,
    )
    return build_learned(training, optax.sgd(0.1), _sample, None, ema_decay=ema_decay)


def test_one_update_per_step_costs_and_extra_state():
    method = _toy()
    state = method.init(jax.random.key(0))
    assert isinstance(state, LearnedState) and int(state.step) == 0
    step = jax.jit(method.step)
    for i in range(60):
        state, info = step(jax.random.key(i), state)
    np.testing.assert_allclose(state.params["x"], GOAL, atol=0.1)
    assert int(state.step) == 60 and float(state.extra) == 60.0 and float(info.passes) == 1.0
    assert float(state.cost.energy_evals) == 180.0 and float(state.cost.network_evals) == 120.0


def test_passes_reuse_the_batch_with_one_key_each():
    method = _toy(passes=3)
    state = method.init(jax.random.key(0))
    new_state, info = jax.jit(method.step)(jax.random.key(1), state)
    assert float(info.passes) == 3.0 and int(new_state.step) == 1
    # three SGD steps on the same batch: x_3 = goal (1 - 0.8^3)
    draw_key, _ = jax.random.split(jax.random.key(1))
    goal = GOAL + 0.1 * jax.random.normal(draw_key, (2,))
    np.testing.assert_allclose(new_state.params["x"], goal * (1 - 0.8**3), rtol=1e-5)
    assert float(new_state.cost.energy_evals) == 3.0  # one draw, whatever the number of passes


def test_self_drawn_loss_gets_the_whole_key_and_pays_its_path():
    class _Path(NamedTuple):
        cost: Cost

    seen = []

    def loss(params, key, data):
        seen.append(data)
        return jnp.sum(params["x"] ** 2) + 0.0 * jax.random.normal(key, ()), _Path(Cost.of(grad_evals=5.0))

    info = lambda state, batch, loss, grad_norm, path: loss
    training = self_drawn(lambda key: {"x": jnp.ones(2)}, loss, info)
    method = build_learned(training, optax.sgd(0.1), _sample, None)
    state, _ = method.step(jax.random.key(0), method.init(jax.random.key(0)))
    assert seen == [()] and float(state.cost.grad_evals) == 5.0 and state.extra == ()


def test_adam_step_under_strict_dtype_promotion():
    """optax's Adam promotes an int32 count internally; the engine runs its update under standard
    promotion, so a step traces under strict promotion too."""
    training = Training(
        init_params=lambda key: {"x": jnp.zeros(2)},
        draw=lambda key, state: Batch(data=GOAL),
        loss=lambda params, key, goal: (jnp.sum((params["x"] - goal) ** 2), ()),
        info=lambda state, batch, loss, grad_norm, aux: loss,
    )
    method = build_learned(training, optax.adam(1e-2), _sample, None)
    with jax.numpy_dtype_promotion("strict"):
        state, loss = jax.jit(method.step)(jax.random.key(0), method.init(jax.random.key(0)))
    assert float(loss) == 5.0 and int(state.step) == 1


def _run(method, steps):
    state = method.init(jax.random.key(0))
    step = jax.jit(method.step)
    for i in range(steps):
        state, _ = step(jax.random.key(i), state)
    return state


def test_ema_off_carries_nothing_and_samples_the_trained_parameters():
    state = _run(_toy(), 5)
    assert state.ema == () and sampled_params(state) == "trained"
    np.testing.assert_array_equal(_toy().sample(jax.random.key(0), state, 3).x[0], state.params["x"])


def test_ema_does_not_change_training_and_sampling_reads_the_average():
    """Same keys: the trained parameters are bit-identical with and without the EMA; `sample` sees
    the average; the first update follows the warm-up `d_1 = min(d, 2/11)`."""
    plain, averaged = _run(_toy(), 30), _run(_toy(ema_decay=0.999), 30)
    np.testing.assert_array_equal(np.asarray(plain.params["x"]), np.asarray(averaged.params["x"]))
    assert sampled_params(averaged) == "ema"
    x = _toy(ema_decay=0.999).sample(jax.random.key(0), averaged, 2).x
    np.testing.assert_array_equal(np.asarray(x[0]), np.asarray(averaged.ema["x"]))
    one = _run(_toy(ema_decay=0.999), 1)
    expected = 0.0 - (1.0 - 2.0 / 11.0) * (0.0 - one.params["x"])  # θ̄_0 = θ_0 = 0
    np.testing.assert_allclose(np.asarray(one.ema["x"]), np.asarray(expected), rtol=1e-6)


def test_ema_converges_to_the_same_fixed_point():
    """The average of SGD iterates on the noisy quadratic reaches the optimum (the mean goal), closer
    than the last iterate's noise: the stabiliser does not move the fixed point."""
    state = _run(_toy(ema_decay=0.99), 400)
    np.testing.assert_allclose(np.asarray(state.ema["x"]), np.asarray(GOAL), atol=0.03)
    assert float(jnp.linalg.norm(state.ema["x"] - GOAL)) < 0.1


def test_ema_decay_is_checked():
    with pytest.raises(ValueError, match="ema_decay"):
        _toy(ema_decay=1.0)
