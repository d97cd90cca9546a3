"""A tiny, exact importance-sampling method used to test the harness (`register()` adds `toy_is`).

Proposal `q = N(0, s² I)`; `log w = log γ(x) - log q(x)`, so `E_q[w] = Z` exactly. Its `step`
shrinks nothing and costs `step_evals` energy evaluations (default nothing); `inject_nan=True`
makes `sample` return NaN end points (the runner must record the cell as diverged),
`raise_in_build=True` raises (recorded as error).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import samplers
from samplers.method import Cost, Method, MethodSpec, Samples


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    scale: float = 2.0
    step_evals: float = 0.0  # energy evaluations charged per training step (0: training is free)
    inject_nan: bool = False
    raise_in_build: bool = False


class ToyState(NamedTuple):
    params: jax.Array
    cost: Cost


class ToyInfo(NamedTuple):
    loss: jax.Array


def build(problem, config: ToyConfig) -> Method:
    if config.raise_in_build:
        raise RuntimeError("toy method asked to fail")
    target = problem.target
    dim = target.dim

    def init(key):
        return ToyState(jnp.zeros(()), Cost.zero())

    def step(key, state):
        return ToyState(state.params, state.cost + Cost.of(energy_evals=config.step_evals)), ToyInfo(
            jnp.zeros(())
        )

    def sample(key, state, num_samples):
        x = config.scale * jax.random.normal(key, (num_samples, dim))
        log_q = -0.5 * jnp.sum(x**2, -1) / config.scale**2 - 0.5 * dim * jnp.log(2 * jnp.pi * config.scale**2)
        log_w = jax.vmap(target.log_prob)(x) - log_q
        if config.inject_nan:
            x = x * jnp.nan
        return Samples(x, log_w, Cost.of(energy_evals=num_samples))

    return Method(init, step, sample)


@dataclasses.dataclass(frozen=True)
class NaNConfig(ToyConfig):
    inject_nan: bool = True


@dataclasses.dataclass(frozen=True)
class ErrorConfig(ToyConfig):
    raise_in_build: bool = True


TOY_METHODS = (("toy_is", ToyConfig), ("toy_nan", NaNConfig), ("toy_error", ErrorConfig))


def register() -> None:
    """Register the toy methods (tests must call `unregister` afterwards: the registry is global)."""
    for name, cfg in TOY_METHODS:
        samplers.register(
            MethodSpec(
                name=name, family="test", config_cls=cfg, build=build, cost_model="1 energy per sample"
            ),
            overwrite=True,
        )


def unregister() -> None:
    for name, _ in TOY_METHODS:
        if name in samplers.METHODS:
            samplers.METHODS.unregister(name)


def write_suite(directory: Path, name: str = "t", **overrides: Any) -> Path:
    """Write a tiny suite file for harness tests (`toy_is` on the Gaussian, one seed, one 1-step
    budget `b`, 64 samples; `overrides` replace keys) to `directory/<name>.json`."""
    suite = {
        "name": name,
        "description": "harness test",
        "methods": ["toy_is"],
        "targets": ["gaussian"],
        "seeds": [0],
        "budgets": {"b": {"train_steps": 1, "chunk_size": 1}},
        "eval": {"num_samples": 64},
        **overrides,
    }
    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps(suite))
    return path
