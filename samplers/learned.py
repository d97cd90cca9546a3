"""One training engine for every learned sampler: a loss module supplies only its maths.

A learned method is an optimiser step on a loss whose data come from the sampler itself. The loss
modules of `samplers.methods` differ only in three things, which they hand to `build_learned` as a
`Training` (blackjax's shared `_elbo_step` is the model: the step is written once, the objective is
the argument):

- **how a training batch is drawn** (`draw`): on-policy rollouts under the stopped control, a replay
  buffer refreshed every few steps, a detached thermodynamic chain, or nothing at all when the loss
  simulates its own reparametrised paths (PIS, DDS, CMCD);
- **the loss** on that batch (`loss`), a pure function of the parameters;
- **its diagnostics** (`info`).

The engine owns everything else: the optimiser (a prebuilt `optax.GradientTransformation`), `init`,
the update (one step, or `passes` steps over the same batch by `lax.scan` with a fresh loss key per
pass), the `Cost` bookkeeping and the state, `LearnedState`. One step with key `ξ` is

    ξ_draw, ξ_loss = split(ξ)
    batch          = draw(ξ_draw, state)                         # data, updated extra state, its cost
    θ ← θ - Adam(∇_θ loss(θ, ξ_loss, batch.data))                 # `passes` times: ξ_loss split per pass
    cost ← cost + batch.cost + loss_cost(batch, aux)             # in this order, term by term

`sample` and `backward` of a method whose sampler is the controlled SDE of `samplers.sde` come from
`sde.evaluation_functions` (`sde_sampling`); thermodynamic methods pass their own.

**EMA of the sampling parameters** (`ema_decay = d`, off when None). The state then carries
`ema = θ̄`, updated after every step from the new parameters,

    θ̄_0 = θ_0,      θ̄_{s+1} = θ̄_s - (1 - d_s)(θ̄_s - θ_{s+1}),      d_s = min(d, (1 + s')/(10 + s')),

`s' = s + 1` the number of updates so far: the decay warm-up of DEM's `EMAWrapper`
(jarridrb/DEM, `dem/models/components/ema.py`), so that a short run averages over its recent steps
rather than its initialisation (`d_s` = 0.18, 0.5, 0.9, 0.97, 0.99 at 1, 8, 80, 300, 1000 updates for
`d = 0.999`). Training (`draw`, `loss`) uses `θ`; `sample` and `backward` use `θ̄` (they see the
state with `params = θ̄`). The average does not move a fixed point: at `θ_s ≡ θ*`, `θ̄ → θ*`. With
`ema_decay=None` the state's `ema` is `()` and every number is the one without the option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from samplers import sde
from samplers.method import Cost, Method
from samplers.problem import Problem
from samplers.promotion import standard_promotion
from samplers.types import PyTree

__all__ = [
    "EMA_WARMUP",
    "Batch",
    "LearnedState",
    "Training",
    "add_costs",
    "build_learned",
    "key_to_loss",
    "no_draw",
    "ema_update",
    "sampled_params",
    "sde_sampling",
    "self_drawn",
]

EMA_WARMUP = 10.0
"""The denominator of the EMA decay warm-up `min(d, (1 + s)/(EMA_WARMUP + s))` (DEM's `EMAWrapper`)."""


class LearnedState(NamedTuple):
    """The state of every learned method.

    Attributes:
        params: the trained parameters (a dict: `{"control": …}` and whatever else the loss learns).
        opt_state: the optax state.
        cost: cumulative training cost.
        step: int32 `()`, training steps taken (drawn batches; buffer refreshes and trust-region
            refreshes are scheduled on it).
        extra: what the method carries between steps besides its parameters (a replay buffer, the
            frozen trust-region anchor, the Langevin rate), `()` when nothing.
        ema: the exponential moving average of `params` that `sample` and `backward` use (same
            structure as `params`), `()` when the method samples with `params` (`ema_decay=None`).
    """

    params: PyTree
    opt_state: optax.OptState
    cost: Cost
    step: jax.Array
    extra: PyTree = ()
    ema: PyTree = ()


class Batch(NamedTuple):
    """What `Training.draw` returns.

    Attributes:
        data: the loss's input (detached trajectories and their targets, a buffer minibatch, …).
        extra: the method's extra state after drawing (e.g. the refreshed buffer).
        cost: the evaluation costs of drawing, a tuple of `Cost` added to the state's in order.
    """

    data: PyTree = ()
    extra: PyTree = ()
    cost: tuple[Cost, ...] = ()


class Training(NamedTuple):
    """The maths of one loss, as the engine consumes it.

    Attributes:
        init_params: `key -> params`.
        draw: `(key, state) -> Batch`, how a training batch is drawn (no gradient flows through it).
        loss: `(params, key, data) -> (loss, aux)`, differentiated in `params` only.
        info: `(state, batch, loss, grad_norm, aux) -> Info`, the step's diagnostics; `state` is the
            state before the update. With `passes`, `loss`, `grad_norm` and `aux` are stacked over
            the passes (leading axis).
        split: `key -> (draw key, loss key)`; each may be any pytree of keys, or None when unused.
        loss_cost: `(batch, aux) -> tuple[Cost, ...]`, the evaluations the loss spends, added after the
            batch's cost (e.g. the path of a reparametrised loss, or the network forwards of a
            regression).
        init_extra: `params -> extra` of the initial state.
        passes: None for one update with the loss key as drawn; an integer `P` for `P` updates on the
            same batch inside a `lax.scan`, pass `p` with the key `split(loss key, P)[p]`.
        grad_norm: the diagnostic norm of the gradient (default: the global norm of all of it).
    """

    init_params: Callable[[jax.Array], PyTree]
    draw: Callable[[Any, LearnedState], Batch]
    loss: Callable[[PyTree, Any, PyTree], tuple[jax.Array, PyTree]]
    info: Callable[..., Any]
    split: Callable[[jax.Array], tuple[Any, Any]] = lambda key: tuple(jax.random.split(key))
    loss_cost: Callable[[Batch, PyTree], tuple[Cost, ...]] = lambda batch, aux: ()
    init_extra: Callable[[PyTree], PyTree] = lambda params: ()
    passes: int | None = None
    grad_norm: Callable[[PyTree], jax.Array] = optax.tree.norm


def no_draw(key: Any, state: LearnedState) -> Batch:
    """The `draw` of a loss that simulates its own (reparametrised) paths: no data, no cost."""
    del key
    return Batch(extra=state.extra)


def key_to_loss(key: jax.Array) -> tuple[None, jax.Array]:
    """The `split` of a loss that draws its own batch (with `no_draw`): the whole key goes to the loss."""
    return None, key


def self_drawn(
    init_params: Callable[[jax.Array], PyTree],
    loss: Callable[[PyTree, jax.Array, PyTree], tuple[jax.Array, PyTree]],
    info: Callable[..., Any],
    **options: Any,
) -> Training:
    """The `Training` of a loss that simulates its own (reparametrised or detached) batch from the whole
    step key and returns its path as `aux`: no draw, the path's `aux.cost` is the step's cost."""
    return Training(
        init_params=init_params,
        draw=no_draw,
        loss=loss,
        info=info,
        split=key_to_loss,
        loss_cost=lambda batch, path: (path.cost,),
        **options,
    )


def add_costs(total: Cost, costs: tuple[Cost, ...]) -> Cost:
    """`total + c_1 + c_2 + …`, left to right (the float32 counters round the same way every time)."""
    for cost in costs:
        total = total + cost
    return total


def sampled_params(state: Any) -> str:
    """Which parameters `sample` used for `state`: `"ema"` (the moving average), `"trained"` (the
    trained parameters of a learned method without EMA), or `"none"` (a method without `LearnedState`)."""
    if not isinstance(state, LearnedState):
        return "none"
    return "trained" if isinstance(state.ema, tuple) and state.ema == () else "ema"


def ema_update(ema: PyTree, params: PyTree, updates: jax.Array, decay: float) -> PyTree:
    """`θ̄ - (1 - d_s)(θ̄ - θ)` with `d_s = min(decay, (1 + s)/(EMA_WARMUP + s))`, `s = updates` (the
    number of updates so far, counting this one)."""
    count = updates.astype(jnp.float32)
    rate = jnp.minimum(decay, (1.0 + count) / (EMA_WARMUP + count))
    step = lambda average, p: average - (1.0 - rate).astype(p.dtype) * (average - p)
    return jax.tree.map(step, ema, params)


def build_learned(
    training: Training,
    optimizer: optax.GradientTransformation,
    sample: Callable,
    backward: Callable | None,
    *,
    ema_decay: float | None = None,
) -> Method:
    """Bind a loss's maths to the shared training step: `Method(init, step, sample, backward)`.

    Args:
        training: the loss module's `Training`.
        optimizer: the prebuilt optimiser of all the parameters.
        sample: `(key, state, num_samples) -> Samples`.
        backward: `(key, state, x_target) -> log_w`, or None.
        ema_decay: sample (and `backward`) with the EMA of the parameters at this decay, in `[0, 1)`
            (module docstring); None: with the trained parameters.
    """
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {ema_decay!r}")
    value_and_grad = jax.value_and_grad(training.loss, has_aux=True)
    # optax promotes implicitly (Adam's bias correction `1 - b1**count`, int32 `count`): its update runs
    # under standard promotion, so the losses stay checked under strict promotion (no change by default).
    optimizer_update = standard_promotion(optimizer.update)

    def init(key: jax.Array) -> LearnedState:
        params = training.init_params(key)
        return LearnedState(
            params=params,
            opt_state=optimizer.init(params),
            cost=Cost.zero(),
            step=jnp.zeros((), jnp.int32),
            extra=training.init_extra(params),
            ema=() if ema_decay is None else params,
        )

    def update(params, opt_state, key_loss, data):
        (loss, aux), grads = value_and_grad(params, key_loss, data)
        updates, opt_state = optimizer_update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, (loss, training.grad_norm(grads), aux)

    def step(key: jax.Array, state: LearnedState):
        key_draw, key_loss = training.split(key)
        batch = training.draw(key_draw, state)
        if training.passes is None:
            params, opt_state, (loss, grad_norm, aux) = update(
                state.params, state.opt_state, key_loss, batch.data
            )
        else:

            def one_pass(carry, pass_key):
                params, opt_state, out = update(*carry, pass_key, batch.data)
                return (params, opt_state), out

            pass_keys = jax.random.split(key_loss, training.passes)
            (params, opt_state), (loss, grad_norm, aux) = jax.lax.scan(
                one_pass, (state.params, state.opt_state), pass_keys
            )
        cost = add_costs(add_costs(state.cost, batch.cost), training.loss_cost(batch, aux))
        info = training.info(state, batch, loss, grad_norm, aux)
        ema = () if ema_decay is None else ema_update(state.ema, params, state.step + 1, ema_decay)
        new_state = LearnedState(
            params=params, opt_state=opt_state, cost=cost, step=state.step + 1, extra=batch.extra, ema=ema
        )
        return new_state, info

    if ema_decay is None:
        return Method(init=init, step=step, sample=sample, backward=backward)

    def averaged(state: LearnedState) -> LearnedState:
        return state._replace(params=state.ema)

    def sample_ema(key, state, num_samples):
        return sample(key, averaged(state), num_samples)

    def backward_ema(key, state, x_target):
        return backward(key, averaged(state), x_target)

    return Method(
        init=init, step=step, sample=sample_ema, backward=None if backward is None else backward_ema
    )


def sde_sampling(
    problem: Problem,
    control: Callable,
    sde_config: sde.SDEConfig | None = None,
    *,
    grad_evals_per_control: float = 0.0,
    params_of: Callable[[LearnedState], PyTree] = lambda state: state.params["control"],
) -> tuple[Callable, Callable | None]:
    """`(sample, backward)` of a method whose sampler is the controlled SDE with `control`:
    `sde.evaluation_functions` reading the control's parameters from the state (`params_of`)."""
    return sde.evaluation_functions(
        problem, control, params_of, sde_config, grad_evals_per_control=grad_evals_per_control
    )
