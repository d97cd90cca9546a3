"""The Method contract shared by every loss and every MCMC/SMC baseline.

A method is a NamedTuple of three pure functions, bound to one `Problem` and one config by its
builder (blackjax / optax style, `docs/design.md`):

    init(key) -> State
    step(key, state) -> (State, Info)          # one training / adaptation step
    sample(key, state, num_samples) -> Samples  # end points, path log-weights, cost

Every `State` has a field `cost: Cost` with the cumulative training cost so far, so the harness
reads training and sampling cost the same way for learned samplers and MCMC. `Samples.log_w`
are path log-weights (or SMC/AIS log-weights) with `E[exp(log_w)] = Z` for the discrete chain
the method actually simulates; every estimator in `samplers.estimators` consumes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplers.fields import configure, merge

__all__ = ["Cost", "Method", "MethodSpec", "Samples", "sibling_specs"]


class Cost(NamedTuple):
    """Evaluation counters (float32 arrays so they survive `jit` and `scan`).

    Attributes:
        energy_evals: evaluations of `log_prob` (or of the reward, for fine-tuning tasks).
        grad_evals: evaluations of `∇ log_prob` (or `∇ reward`).
        network_evals: forward evaluations of the learned network(s), one per example.
        sde_steps: integrator steps, one per example per step.
    """

    energy_evals: jax.Array = jnp.zeros((), jnp.float32)
    grad_evals: jax.Array = jnp.zeros((), jnp.float32)
    network_evals: jax.Array = jnp.zeros((), jnp.float32)
    sde_steps: jax.Array = jnp.zeros((), jnp.float32)

    @staticmethod
    def zero() -> Cost:
        return Cost(*(jnp.zeros((), jnp.float32) for _ in range(4)))

    @staticmethod
    def of(energy_evals=0.0, grad_evals=0.0, network_evals=0.0, sde_steps=0.0) -> Cost:
        """Build a Cost from plain numbers (Python ints or traced scalars)."""
        f = lambda v: jnp.asarray(v, jnp.float32)
        return Cost(f(energy_evals), f(grad_evals), f(network_evals), f(sde_steps))

    def __add__(self, other: Cost) -> Cost:  # type: ignore[override]
        return Cost(*(a + b for a, b in zip(self, other, strict=True)))

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items()}

    def budget_evals(self) -> float:
        """Budget units (host float): energy + gradient evaluations, the fair cost axis between learned
        samplers and MCMC/SMC (network evaluations and SDE steps are reported but not counted)."""
        return float(self.energy_evals) + float(self.grad_evals)


class Samples(NamedTuple):
    """What `Method.sample` returns.

    Attributes:
        x: end points, `(num_samples, dim)`.
        log_w: log importance weights, `(num_samples,)`; `E[exp(log_w)] = Z`. NaN-free by contract;
            `-inf` is allowed for a zero-weight sample. MCMC methods, which have no weights, return
            zeros and set `weighted=False` in their spec.
        cost: the cost of drawing these samples.
    """

    x: jax.Array
    log_w: jax.Array
    cost: Cost


class Method(NamedTuple):
    """A method bound to a problem and a config: three pure, jittable functions.

    `backward(key, state, x_target) -> log_w` is optional: the log-weights of paths simulated
    backward from target samples `x_target` (for EUBO, forward ESS and Crooks/BAR); `None` when the
    method has no backward process.
    """

    init: Callable[[jax.Array], Any]
    step: Callable[[jax.Array, Any], tuple[Any, Any]]
    sample: Callable[[jax.Array, Any, int], Samples]
    backward: Callable[[jax.Array, Any, jax.Array], jax.Array] | None = None


# Why a method that does not list a base kind cannot run on it (`MethodSpec.applicable`).
_BASE_NOTES = {
    "brownian": "Brownian motion from a Dirac at 0",
    "brownian_source": "Brownian motion from a Gaussian source (not memoryless: tilting its terminal "
    "law does not give the target)",
    "vp": "the variance-preserving OU process started at its stationary Gaussian",
    "flow": "a pretrained flow run with the memoryless schedule from t0 > 0, started at the flow marginal "
    "p_t0 (no Dirac start, no closed-form discrete chain or reversal kernels, terminal law known only "
    "through the model)",
}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """Registry entry of a method.

    Attributes:
        name: registry id.
        family: e.g. "soc-regression", "path-kl", "thermodynamic", "mcmc", "smc".
        config_cls: the typed frozen dataclass of hyper-parameters (all fields have defaults).
        build: `(problem, config) -> Method`.
        bases: base-process kinds the method supports ("brownian", "brownian_source", "vp", "flow", "any").
        cost_model: one line saying where energy / gradient / network evaluations are spent.
        weighted: whether `Samples.log_w` are importance weights (False for MCMC).
        description: the maths in one paragraph, with the reconstruction status where relevant.
        train_steps: a fixed number of `step` calls that replaces the suite's training budget
            (MCMC: 1 warm-up round; SMC / AIS: 0), or None to use the budget (learned samplers).
        diagnostics: optional `(x, config, target) -> {name: float}` run on the samples for the
            record (MCMC ESS / R-hat).
        plan_budget: optional rule that scales a fixed-work method (MCMC / SMC / AIS) to an
            evaluation budget: `(key, problem, config, max_evals, num_samples) -> BudgetPlan`
            (`samplers.baselines.budget`); None for learned samplers, which the harness stops
            at the budget instead.
        replan_sampling: optional second half of `plan_budget`, called after the warm-up:
            `(key, problem, config, state, remaining_evals, num_samples) -> BudgetPlan` (the
            returned config only changes how `sample` runs, so the warmed-up state stays valid;
            the plan's cost is added to the cell's). NUTS re-plans its thinning this way.
    """

    name: str
    family: str
    config_cls: type
    build: Callable[[Any, Any], Method]
    bases: tuple[str, ...] = ("any",)
    cost_model: str = ""
    weighted: bool = True
    description: str = ""
    train_steps: int | None = None
    diagnostics: Callable[[Any, Any, Any], dict[str, float]] | None = None
    plan_budget: Callable[..., Any] | None = None
    replan_sampling: Callable[..., Any] | None = None

    def supports(self, base_kind: str) -> bool:
        return "any" in self.bases or base_kind in self.bases

    def applicable(self, problem: Any) -> str | None:
        """Why this method cannot run on `problem` (a one-line reason), or None when it can.

        - the method does not support the base kind (e.g. Adjoint Sampling assumes a Dirac start);
        - a fine-tuning problem and a method that ignores the base (`bases == ("any",)`: the MCMC /
          SMC / AIS baselines sample `problem.target` from its log-density). For a fine-tuning task
          that density is `log p_data + λ r`, i.e. it uses the data law's density, which a
          fine-tuning method never sees (it only has the pretrained velocity and the reward).
        """
        kind = problem.base.kind
        if not self.supports(kind):
            return (
                f"{self.name} supports bases {list(self.bases)}; this {problem.kind} problem uses the "
                f"{kind!r} base ({_BASE_NOTES.get(kind, kind)})"
            )
        if problem.kind == "finetuning" and tuple(self.bases) == ("any",):
            return (
                f"{self.name} samples the tilted target from its log-density log p_data + λ r, which "
                "needs the data law's density; a fine-tuning method only sees the pretrained model and "
                "the reward"
            )
        return None

    def make_config(self, overrides: Mapping[str, Any] | None = None, /, **fields: Any) -> Any:
        """The config with `overrides` (a mapping) and keyword `fields` (which win) replacing defaults.

        Keys of a sub-config are dotted (`{"optim.learning_rate": 1e-2}`) or nested
        (`optim={"learning_rate": 1e-2}`); a nested mapping replaces only the fields it names. An
        unknown key raises with the valid dotted names (and the new name of a field that moved into a
        sub-config); an ill-typed value raises naming the field and its requirement
        (`samplers.fields.configure`).
        """
        merged = merge(overrides or {}, fields)
        return configure(self.config_cls, merged, who=f"method {self.name!r}")


def sibling_specs(
    family: str,
    config_cls: type,
    bases: tuple[str, ...],
    cost_model: str,
    entries: dict[str, tuple[Callable[..., Method], str, str]],
) -> tuple[MethodSpec, ...]:
    """The `MethodSpec`s of losses that share one family, config class, bases and cost-model prefix
    (e.g. the KL and log-variance variants of one sampler): `entries` maps each name to
    `(build, cost-model suffix, description)`."""
    return tuple(
        MethodSpec(
            name=name,
            family=family,
            config_cls=config_cls,
            build=build,
            bases=bases,
            cost_model=cost_model + extra_cost,
            description=description,
        )
        for name, (build, extra_cost, description) in entries.items()
    )
