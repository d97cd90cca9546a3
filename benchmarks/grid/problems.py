"""The typed problem settings of a cell and the construction of its `Problem`.

`ProblemConfig` is what `benchmarks/grid/configs/hyperparams.json` (section `problem`), a suite's
`settings.problem` and the CLI's `--set problem.<field>=...` set: the base process, its scale, the
time grid. `build_problem` turns a resolved config into a `samplers.problem.Problem`.

Scales left unset follow others: `sigma0` (the VP base's stationary std) and `sigma_max` (the top of
the geometric schedule) follow `sigma`; `sigma` itself, when no layer sets it, is the ground-truth-free
pilot estimate of `benchmarks.grid.hyperparams` (`samplers.pilot`). A method config field declared with
`follows="sigma"` (the MCMC / SMC / AIS `init_scale`, CMCD's `initial_std`, NETS's `s0`) takes the
resolved `sigma` as its default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import targets
from samplers.base_processes import (
    BrownianBase,
    GeometricSchedule,
    LinearSchedule,
    SourceBrownianBase,
    VPBase,
)
from samplers.fields import POSITIVE, POSITIVE_OR_NONE, Checked, Rule, field, integer, one_of, within
from samplers.pilot import PilotConfig
from samplers.problem import GRIDS, Problem, sampling_problem, task_problem

__all__ = [
    "BASES",
    "SCHEDULES",
    "SOURCES",
    "ProblemConfig",
    "build_finetuning_problem",
    "build_problem",
    "settings_dict",
    "source_variance",
]

BASES: dict[str, str] = {
    "brownian": "Brownian motion from a Dirac at 0 with the named schedule (terminal law N(0, sigma^2 I))",
    "brownian_source": "Brownian motion with the named schedule from a Gaussian source "
    "(source, source_scale; the reference process of asbs)",
    "vp": "the variance-preserving OU process started at N(0, sigma0^2 I)",
    "flow": "a fine-tuning task's pretrained flow, memoryless from t0 (fine-tuning targets only)",
}
SCHEDULES: dict[str, str] = {
    "linear": "constant diffusion sigma",
    "geometric": "sigma(t) geometric from sigma_max at t = 0 to sigma_min at t = 1",
}

SOURCES: dict[str, str] = {
    "gauss": "N(0, source_scale^2 I), projected to zero centre of mass for particle systems (the Gauss and "
    "meanfree sources of the ASBS code)",
    "harmonic": "the harmonic prior of the ASBS code (CenteredParticlesHarmonic, fully connected): "
    "on the zero centre-of-mass subspace N(0, (2/3) source_scale^2 I)",
}
_SOURCE_VARIANCE = {"gauss": 1.0, "harmonic": 2.0 / 3.0}  # variance per coordinate / source_scale²


@dataclasses.dataclass(frozen=True)
class ProblemConfig(Checked):
    """The problem settings of a cell (module docstring).

    Attributes:
        base: one of `BASES`. A fine-tuning target always runs on its pretrained flow.
        schedule: the Brownian base's noise schedule, one of `SCHEDULES`.
        sigma: the Brownian base's scale; None: the pilot's ground-truth-free estimate.
        sigma0: the VP base's stationary std; None: `sigma`.
        sigma_min, sigma_max: the geometric schedule's ends; `sigma_max` None: `sigma`.
        beta_min, beta_max: the VP base's `β(1)` and `β(0)`.
        num_steps: SDE steps `K`.
        grid: the time grid, one of `samplers.problem.GRIDS`.
        t0: the start time of a fine-tuning task's memoryless flow.
        source: the `brownian_source` base's source law, one of `SOURCES` (None: `"gauss"`).
        source_scale: its scale (None: 1).
        pilot: the settings of the pilot that estimates `sigma` when it is None (`samplers.pilot`).
    """

    base: str = field("brownian", one_of(BASES))
    schedule: str = field("linear", one_of(SCHEDULES))
    sigma: float | None = field(None, POSITIVE_OR_NONE)
    sigma0: float | None = field(None, POSITIVE_OR_NONE)
    sigma_min: float = field(1e-3, POSITIVE)
    sigma_max: float | None = field(None, POSITIVE_OR_NONE)
    beta_min: float = field(0.1, POSITIVE)
    beta_max: float = field(10.0, POSITIVE)
    num_steps: int = field(100, integer(1))
    grid: str = field("uniform", one_of(GRIDS))
    t0: float = field(0.01, within(0, 1, closed="neither"))
    source: str | None = field(
        None, Rule(lambda v: v is None or v in SOURCES, f"must be one of {sorted(SOURCES)}")
    )
    source_scale: float | None = field(None, POSITIVE_OR_NONE)
    pilot: PilotConfig = field(PilotConfig())

    @property
    def needs_sigma(self) -> bool:
        """Whether the base of a sampling problem needs `sigma` (the Brownian base, or a VP base without
        its own `sigma0`)."""
        return self.base in ("brownian", "brownian_source") or (self.base == "vp" and self.sigma0 is None)


def settings_dict(config: ProblemConfig) -> dict[str, Any]:
    """The config as recorded with a cell: every field that is set (None left out), without the pilot's
    settings (a cell whose `sigma` came from the pilot records them, with its cost, under `pilot`)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "pilot"}
    return {k: v for k, v in values.items() if v is not None}


def _sigma(config: ProblemConfig, what: str) -> float:
    if config.sigma is None:
        raise ValueError(f"ProblemConfig: the {what} needs sigma; resolve it first (hyperparams.resolve)")
    return float(config.sigma)


def _schedule(config: ProblemConfig):
    if config.schedule == "linear":
        return LinearSchedule(_sigma(config, "linear schedule"))
    top = config.sigma_max if config.sigma_max is not None else _sigma(config, "geometric schedule")
    return GeometricSchedule(float(config.sigma_min), float(top))


def _brownian(target: targets.Target, config: ProblemConfig) -> BrownianBase:
    return BrownianBase(target.dim, _schedule(config), particles=target.particles)


def source_variance(config: ProblemConfig) -> float:
    """The variance per coordinate of the `brownian_source` base's source (`SOURCES`): `scale²` for
    `"gauss"`, `2 scale²/3` for `"harmonic"` (the ASBS code's prior on `n` fully connected particles has
    the precision `kron(1.5 I - 0.5 11ᵀ, I)/scale²`, i.e. `1.5/scale²` on the zero centre-of-mass
    subspace)."""
    source = config.source or "gauss"
    scale = 1.0 if config.source_scale is None else float(config.source_scale)
    return _SOURCE_VARIANCE[source] * scale**2


def _brownian_source(target: targets.Target, config: ProblemConfig) -> SourceBrownianBase:
    if config.source == "harmonic" and target.particles is None:
        raise ValueError(
            f"source 'harmonic' is a prior on particle systems; target {target.name!r} has none "
            f"(valid sources here: 'gauss')"
        )
    return SourceBrownianBase(
        target.dim, _schedule(config), source_var=source_variance(config), particles=target.particles
    )


def _vp(target: targets.Target, config: ProblemConfig) -> VPBase:
    sigma0 = config.sigma0 if config.sigma0 is not None else _sigma(config, "VP base")
    return VPBase(
        target.dim,
        float(sigma0),
        particles=target.particles,
        beta_min=float(config.beta_min),
        beta_max=float(config.beta_max),
    )


_BUILDERS = {"brownian": _brownian, "brownian_source": _brownian_source, "vp": _vp}


def build_finetuning_problem(target: targets.Target, config: ProblemConfig) -> Problem:
    """The fine-tuning Problem of a task's tilted target (`target.finetune_task` set).

    The base is the task's pretrained flow run with the memoryless schedule from `t0`, started at the
    flow marginal `p_{t0}` (`task.marginal(t0)`, exact samples and density); the tilt is `λ·reward` with
    its closed-form gradient; `log_Z` and `target` are the task's exact ones.

    **What a method sees.** A fine-tuning method may use the pretrained model and the reward only, never
    the data law's density: the base gets no `terminal_log_prob_fn`, and the data law's score at `t = 1`
    (Target Score Matching, Adjoint Sampling, Novel Score Matching) comes from the velocity
    (`terminal_score_from_velocity=True`: `-(x + ∂_t v(x, 1))`, methods.md §1.5). `p_{t0}` is the
    pretrained model's own marginal at `t0` (the law its ODE carries `N(0, I)` to from `t = 0`), taken in
    closed form here because the velocity is exact; its density is read only by the kernel form of the
    path weights, which the flow base does not have (Girsanov form). `log_Z` and `target` (the data
    density plus the tilt) are for the evaluation only: the exact-optimum columns, the log Z reference
    and the cell's log Ẑ probe.

    The base of a fine-tuning task IS the pretrained model, so a `base` other than `"flow"` (e.g. the
    `"vp"` that `dds` asks for) is ignored: the method is then judged on the flow base, and the runner
    records it as not applicable if it does not support that base.
    """
    return task_problem(
        target.finetune_task, float(config.t0), num_steps=config.num_steps, grid=config.grid, target=target
    )


def build_problem(target: targets.Target, config: ProblemConfig) -> Problem:
    """The Problem of `target` with the resolved `config`: fine-tuning for a task's tilted target
    (`build_finetuning_problem`), else sampling with the named base."""
    if target.finetune_task is not None:
        return build_finetuning_problem(target, config)
    if config.base not in _BUILDERS:
        raise ValueError(
            f"base {config.base!r} is for fine-tuning targets only; valid bases of a sampling problem: "
            f"{sorted(_BUILDERS)}"
        )
    base = _BUILDERS[config.base](target, config)
    return sampling_problem(target, base, num_steps=config.num_steps, grid=config.grid)
