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
    "Batch",
    "LearnedState",
    "Training",
    "add_costs",
    "build_learned",
    "key_to_loss",
    "no_draw",
    "sde_sampling",
    "self_drawn",
]


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
    """

    params: PyTree
    opt_state: optax.OptState
    cost: Cost
    step: jax.Array
    extra: PyTree = ()


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


def build_learned(
    training: Training,
    optimizer: optax.GradientTransformation,
    sample: Callable,
    backward: Callable | None,
) -> Method:
    """Bind a loss's maths to the shared training step: `Method(init, step, sample, backward)`.

    Args:
        training: the loss module's `Training`.
        optimizer: the prebuilt optimiser of all the parameters.
        sample: `(key, state, num_samples) -> Samples`.
        backward: `(key, state, x_target) -> log_w`, or None.
    """
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
        new_state = LearnedState(
            params=params, opt_state=opt_state, cost=cost, step=state.step + 1, extra=batch.extra
        )
        return new_state, info

    return Method(init=init, step=step, sample=sample, backward=backward)


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
