"""The digits fine-tuning experiment: a CPU-sized miniature of reward fine-tuning of an image model.

Base: the suite's own flow-matching model of the 8×8 digits (`targets.digits`, trained and cached by
`benchmarks.experiments.digits_models`), run as the memoryless SDE of
`samplers.base_processes.MemorylessFlowBase` from `t_0` with the exact initial law `p_{t_0}` of the
empirical training set. Reward: `r(x) = log p(c | x)` of the suite's classifier for one digit class
`c`. For each `λ` the Problem is
`finetuning_problem(base, r, λ, grid="quadratic")`, i.e. the target `p* ∝ p_base e^{λ r}`, and each
method (by default every registered unified loss whose spec lists the flow base,
`flow_capable_methods`) trains a control `u_θ` with `samplers.train.train`, once per seed; a table
row is the mean ± standard error over seeds of the metrics below (`seed_row`).

**Metrics** (on `num_samples` fresh samples `x^i` with Girsanov path log-weights
`log w^i = λ r(x^i) - Σ_k (½h_k|u_k|² + sqrt(h_k) u_k·ε_k)`, `samplers.sde`):

- `reward`: `mean_i r(x^i)` ± SE; `accuracy`: fraction classified as `c` (argmax) ± SE.
- `kl_path`: `mean_i (λ r(x^i) - log w^i)` ± SE, an unbiased estimate of `E Σ_k ½h_k|u_k|²`, the
  KL divergence `KL(P^u || P)` of the simulated (discrete) controlled path law to the base path law
  (the stochastic-integral term has mean zero), which bounds `KL(p^u_1 || p^base_1)` from above.
- `elbo = mean_i log w^i = E[λ r] - KL`: the KL-regularised objective; `≤ log Z`, with equality for
  the optimal control (`log Z = log E_base[e^{λ r}]`).
- `log_Z`: `LSE_i log w^i - log n` and `ess`: `(Σw)²/(nΣw²)` (importance-sampling diagnostics).
- diversity: `pairwise_dist`, the mean Euclidean distance between distinct samples (pixels in
  `[-1, 1]`), and `class_entropy`, the entropy (nats) of the histogram of predicted classes
  (`log 10 ≈ 2.30` for ten balanced classes, 0 when every sample is one class).

**References** (no exact tilted law is known here): the data (test split) and the base samples give
the untuned reward and diversity; the tilted law itself is estimated by self-normalised importance
sampling of `num_reference` base samples with weights `e^{λ r}` (bounded by 1 since `r ≤ 0`, so the
estimator is well behaved): `log Z`, `E_{p*}[r]` and `KL(p* || p_base) = E_{p*}[λ r] - log Z`, the
optimal point of the reward-vs-KL trade-off at this `λ` (for the *discretised* base on the grid).

`run_digits` writes `digits.md` (table), `digits.json` (record: commit, hardware, versions, config,
seeds, model provenance, every number, per seed), `digits_grid.png` (samples before/after, whose pixels are
kept in `digits_samples.npz`) and `digits_reward_kl.png` under `out_dir`; `tiltbench digits` /
`make digits` call it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import samplers
from benchmarks.grid.cell import draw_samples, train_cell
from benchmarks.grid.records import atomic_write_json, environment, git_commit
from benchmarks.grid.suites import Budget
from samplers import sde
from samplers.base_processes import MemorylessFlowBase
from samplers.problem import Problem, finetuning_problem
from samplers.train import Diverged
from targets import digits

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_METHOD_LAMS",
    "FIRST_METHODS",
    "METHOD_CONFIGS",
    "DigitsConfig",
    "digits_problem",
    "flow_capable_methods",
    "flowless_methods",
    "method_overrides",
    "reference_metrics",
    "run_digits",
    "sample_metrics",
    "seed_row",
]

UNIFIED_FAMILIES = ("soc-regression", "path-kl", "thermodynamic")
"""Registry families of the unified (tilting) losses; the MCMC / SMC / AIS baselines are not run here."""

FIRST_METHODS = ("adjoint_matching", "reward_score_matching", "log_variance")
"""The methods of the first digits table; they come first in `DEFAULT_METHODS`, so their cells keep the
random keys (position in the method list) of that table."""


def flow_capable_methods() -> tuple[str, ...]:
    """Every registered unified loss whose spec lists the `flow` base: `FIRST_METHODS` first, then
    the others in registry (alphabetical) order. A method gains its place here by adding `"flow"` to its
    spec's `bases`; nothing in this module names it."""
    capable = [
        name
        for name in samplers.names()
        if samplers.get(name).family in UNIFIED_FAMILIES and "flow" in samplers.get(name).bases
    ]
    return (
        *[m for m in FIRST_METHODS if m in capable],
        *[m for m in capable if m not in FIRST_METHODS],
    )


def flowless_methods() -> dict[str, str]:
    """The registered unified losses that cannot run on the flow base, with the reason (reported as
    skipped)."""
    return {
        name: f"does not support the 'flow' base (bases {list(samplers.get(name).bases)})"
        for name in samplers.names()
        if samplers.get(name).family in UNIFIED_FAMILIES and not samplers.get(name).supports("flow")
    }


DEFAULT_METHODS = flow_capable_methods()
"""Methods run by default: every flow-capable unified loss (`flow_capable_methods`)."""

DEFAULT_METHOD_LAMS: tuple[tuple[str, tuple[float, ...]], ...] = tuple(
    (name, (3.0,)) for name in DEFAULT_METHODS
)
"""The default run's per-method `λ` grids: every method at `λ = 3` only (with `train_steps = 100`), so
that 3 seeds of all 13 flow-capable losses fit one CPU run of about 30 min on 2 shared cores. Estimated
from single-seed pilot cells at `λ = 3` and 200 steps (wall time with compilation and evaluation): 9-13 s
for AS/TSM/CSM/NSM, 24-32 s for AM/RSM/LV, 58 s for TB, 80-130 s for CMCD, 252 s for NETS-PINN and 335 s
for RSM-ZO at its default loss times (the pilot ran under a heavier load than the run). The committed run
at these defaults took 908 s, 10-52 s per cell; the full grid at 200 steps would take over an hour. The
reference rows keep `λ = 1, 10` and `lams` keeps its order, so each cell keeps its random key;
`--lams 1,3,10 --train-steps 200` runs the full experiment."""

_SHARED = {
    "batch_size": 64,
    "network": {"hidden": (256, 256)},
    "optim": {"learning_rate": 1e-3},
    "grad_log_target_feature": False,
}
"""The settings every method shares: the same control network (64-D images need more width than the
2-D default), batch and learning rate (piloted on Adjoint Matching, reward score matching and
log-variance on the base before any fine-tuned metric was looked at), and no grad-log-target feature,
so every method sees the reward only through its loss. Any other setting is the method config's
default."""


def _own_fields(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `overrides` that method `name`'s config has (the others are dropped)."""
    valid = {f.name for f in dataclasses.fields(samplers.get(name).config_cls)}
    return {k: v for k, v in overrides.items() if k in valid}


METHOD_CONFIGS: dict[str, dict[str, Any]] = {
    # piloted with the shared settings: one adjoint regression time in ten
    "adjoint_matching": _own_fields("adjoint_matching", {**_SHARED, "time_subsample": 10}),
    # every other method: the shared settings, its config's defaults otherwise (not piloted here; AS,
    # TSM and NSM take the data law's score at t = 1 from the velocity, `digits_problem`); a method
    # registered later with the flow base gets the same (`method_overrides`)
    **{name: _own_fields(name, _SHARED) for name in DEFAULT_METHODS if name != "adjoint_matching"},
    # for cost only: at the default (all 40 loss times, 16 branches each) one 200-step cell took 335 s
    # on the 2 shared CPU cores, against <= 50 s for every other method; Adjoint Matching's subsample
    "reward_score_matching_zo": _own_fields("reward_score_matching_zo", {**_SHARED, "time_subsample": 10}),
}
"""Per-method config overrides of this experiment (chosen before looking at any fine-tuned metric),
restricted to the fields each method's config has."""


def method_overrides(
    name: str, method_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The config overrides of method `name`: its entry in `method_configs` (default `METHOD_CONFIGS`),
    else the shared settings."""
    method_configs = METHOD_CONFIGS if method_configs is None else method_configs
    if name in method_configs:
        return dict(method_configs[name])
    return _own_fields(name, _SHARED) if name in samplers.names() else dict(_SHARED)


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The experiment.

    Attributes:
        digit: the rewarded class `c`.
        lams: reward multipliers `λ`.
        methods: method registry names (unregistered or flow-incompatible ones are reported as skipped).
        method_lams: per-method `λ` grids, `((name, (λ, ...)), ...)`: a listed method runs at the `λ`s
            of `lams` in its grid (none: reported as skipped), any other at every `λ` of `lams` (a
            mapping is accepted and stored as sorted pairs).
        t0: start time of the memoryless flow SDE.
        num_steps: Euler–Maruyama steps `K` on the `grid`.
        grid: time-grid name (`"quadratic"`: finest near the singular start `t_0`).
        train_steps: training steps per (method, λ).
        num_samples: evaluation samples per cell.
        num_reference: base samples of the importance-sampling reference of the tilted law.
        grid_columns: samples per row of the PNG grid.
        seeds: root seeds; every (method, λ) cell is trained and evaluated once per seed. The base
            samples (and so the base and reference rows) are drawn with the first seed only.
    """

    digit: int = 3
    lams: tuple[float, ...] = (1.0, 3.0, 10.0)
    methods: tuple[str, ...] = DEFAULT_METHODS
    method_lams: tuple[tuple[str, tuple[float, ...]], ...] = DEFAULT_METHOD_LAMS
    t0: float = 0.02
    num_steps: int = 40
    grid: str = "quadratic"
    train_steps: int = 100
    num_samples: int = 512
    num_reference: int = 4096
    grid_columns: int = 12
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self):
        if isinstance(self.method_lams, Mapping):
            object.__setattr__(self, "method_lams", tuple(sorted(self.method_lams.items())))
        object.__setattr__(self, "method_lams", tuple((m, tuple(ls)) for m, ls in self.method_lams))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if isinstance(self.digit, bool) or not isinstance(self.digit, int) or not 0 <= self.digit <= 9:
            raise ValueError(f"digit must be an integer in 0..9, got {self.digit!r}")
        if not self.lams or any(not lam > 0 for lam in self.lams):
            raise ValueError(f"lams must be a non-empty tuple of positive numbers, got {self.lams!r}")
        for name in ("num_steps", "train_steps", "num_samples", "num_reference", "grid_columns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_samples < max(2, self.grid_columns):
            raise ValueError(f"num_samples must be >= max(2, grid_columns), got {self.num_samples}")
        if (
            not self.seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds)
            or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ValueError(f"seeds must be a non-empty tuple of distinct integers >= 0, got {self.seeds!r}")
        for name, lams in self.method_lams:
            if not lams or any(not lam > 0 for lam in lams):
                raise ValueError(
                    f"method_lams[{name!r}] must be a non-empty tuple of positive numbers, got {lams!r}"
                )

    def lams_of(self, method: str) -> tuple[float, ...]:
        """The `λ` grid of `method`: the `λ`s of `lams` in its `method_lams` entry, else all of `lams`."""
        grid = dict(self.method_lams).get(method)
        return self.lams if grid is None else tuple(lam for lam in self.lams if lam in grid)


# ---------------------------------------------------------------------------------------------
# problem and metrics
# ---------------------------------------------------------------------------------------------


def digits_problem(
    flow: digits.FrozenFlow,
    classifier: digits.FrozenClassifier,
    *,
    digit: int,
    lam: float,
    t0: float,
    num_steps: int,
    grid: str = "quadratic",
    ts=None,
) -> Problem:
    """`finetuning_problem(MemorylessFlowBase(64, v_θ, t_0, p_{t_0}), log p(digit | ·), λ)`; the data law's
    score at `t = 1` (Target Score Matching, Adjoint Sampling, Novel Score Matching) is the model's own,
    `-(x + ∂_t v_θ(x, 1))` (`terminal_score_from_velocity`, methods.md §1.5). An explicit grid `ts` (from
    `t0` to 1) replaces `num_steps` and `grid`."""
    sample_fn, log_prob_fn = digits.initial_law(digits.load_digits_data("train").images, t0)
    base = MemorylessFlowBase(
        digits.NUM_PIXELS,
        velocity=flow.velocity,
        t0=t0,
        initial_sample_fn=sample_fn,
        initial_log_prob_fn=log_prob_fn,
        terminal_score_from_velocity=True,
    )
    return finetuning_problem(
        base,
        digits.class_log_prob_reward(classifier, digit),
        lam,
        num_steps=num_steps,
        grid=grid,
        ts=ts,
        name=f"digits{digit}_lam{lam:g}",
    )


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _pairwise_distance(x: np.ndarray) -> float:
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    n = x.shape[0]
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())


def _class_entropy(predicted: np.ndarray) -> float:
    counts = np.bincount(predicted, minlength=digits.NUM_CLASSES).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return max(0.0, float(-(p * np.log(p)).sum()))  # no "-0.00" for a single class


def _classify(classifier: digits.FrozenClassifier, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(classifier.log_probs))(jnp.asarray(x, jnp.float32)), np.float64)


def sample_metrics(
    x: np.ndarray,
    classifier: digits.FrozenClassifier,
    digit: int,
    *,
    lam: float | None = None,
    log_w: np.ndarray | None = None,
) -> dict[str, float]:
    """Reward, accuracy and diversity of samples `x (n, 64)`; with `lam` and `log_w`, also the path KL,
    the ELBO, the IS `log Ẑ` and the ESS (module docstring). Every `*_se` is a standard error."""
    x = np.asarray(x, np.float64)
    log_probs = _classify(classifier, x)
    reward = log_probs[:, digit]
    predicted = np.argmax(log_probs, axis=1)
    out: dict[str, float] = {}
    out["reward"], out["reward_se"] = _mean_se(reward)
    out["accuracy"], out["accuracy_se"] = _mean_se(predicted == digit)
    out["pairwise_dist"] = _pairwise_distance(x)
    out["class_entropy"] = _class_entropy(predicted)
    out["pixel_abs_max"] = float(np.abs(x).max())
    if log_w is not None:
        if lam is None:
            raise ValueError("sample_metrics: log_w needs lam")
        log_w = np.asarray(log_w, np.float64)
        out["kl_path"], out["kl_path_se"] = _mean_se(lam * reward - log_w)
        out["elbo"], out["elbo_se"] = _mean_se(log_w)
        shifted = np.exp(log_w - log_w.max())
        out["log_Z"] = float(log_w.max() + np.log(shifted.mean()))
        out["ess"] = float(shifted.sum() ** 2 / (shifted.size * np.sum(shifted**2)))
    return out


def reference_metrics(reward: np.ndarray, lam: float) -> dict[str, float]:
    """The tilted law estimated by self-normalised IS of base samples with rewards `reward (n,)`.

    `Z = E_base[e^{λ r}]`, `E_{p*}[r] = E_base[r e^{λ r}]/Z`, `KL(p* || p_base) = λ E_{p*}[r] - log Z`;
    SEs by the delta method; `ess` of the weights `e^{λ r}`.
    """
    reward = np.asarray(reward, np.float64)
    n = reward.size
    w = np.exp(lam * reward)  # in (0, 1] since r <= 0
    z = w.mean()
    z_se = w.std(ddof=1) / math.sqrt(n)
    mean_r = float(np.sum(w * reward) / np.sum(w))
    # delta method for the ratio estimator: Var ≈ E[w²(r - mean_r)²]/(n z²)
    mean_r_se = float(np.sqrt(np.mean(w**2 * (reward - mean_r) ** 2) / n) / z)
    log_z = float(np.log(z))
    return {
        "log_Z": log_z,
        "log_Z_se": float(z_se / z),
        "reward": mean_r,
        "reward_se": mean_r_se,
        "kl": lam * mean_r - log_z,
        "kl_se": float(math.hypot(lam * mean_r_se, z_se / z)),
        "ess": float(w.sum() ** 2 / (n * np.sum(w**2))),
    }


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------


def _zero_control(params, x, t):
    return jnp.zeros_like(x)


def _base_samples(key: jax.Array, problem: Problem, num_samples: int, chunk: int = 1024) -> np.ndarray:
    """End points of the uncontrolled memoryless SDE (the base model's samples), in chunks."""
    config = sde.SDEConfig(integrator="scan", detach="all")
    run = jax.jit(lambda k, n: sde.simulate(k, problem, _zero_control, None, n, config).x, static_argnums=1)
    out = []
    for i, start in enumerate(range(0, num_samples, chunk)):
        out.append(np.asarray(run(jax.random.fold_in(key, i), min(chunk, num_samples - start))))
    return np.concatenate(out)


def _method_config(spec, overrides: Mapping[str, Any]):
    return spec.make_config(**_own_fields(spec.name, overrides))


def _history_summary(history: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"step": np.asarray(history["step"]).tolist()}
    for name in ("loss", "elbo", "log_Z"):
        if name in history:
            out[name] = np.asarray(history[name], np.float64).tolist()
    return out


def _run_cell(
    key: jax.Array, problem: Problem, method_name: str, config: DigitsConfig, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    spec = samplers.get(method_name)
    method_config = _method_config(spec, overrides)
    record: dict[str, Any] = {"method": method_name, "config": dataclasses.asdict(method_config)}
    method = spec.build(problem, method_config)
    key_train, key_sample = jax.random.split(key)
    budget = Budget("digits", train_steps=config.train_steps, chunk_size=max(1, min(50, config.train_steps)))
    tic = time.perf_counter()
    try:  # the grid's train and sample steps (`benchmarks.grid.cell`), without the log-Z probe
        trained = train_cell(key_train, method, problem, budget, key_train, trace=False)
    except Diverged as err:
        record.update(status="diverged", message=str(err), wall_time_s=time.perf_counter() - tic)
        return record, None, None
    samples = draw_samples(method, trained.state, key_sample, config.num_samples).samples
    x, log_w = np.asarray(samples.x), np.asarray(samples.log_w)
    record.update(
        status="ok" if np.all(np.isfinite(x)) and np.all(np.isfinite(log_w)) else "diverged",
        wall_time_s=time.perf_counter() - tic,
        train_time_s=trained.train_time_s,
        compile_time_s=trained.compile_time_s,
        cost=trained.state.cost.as_dict(),
        history=_history_summary(trained.history),
    )
    return record, x, log_w


def _run_cell_safely(
    key: jax.Array, problem: Problem, method_name: str, config: DigitsConfig, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """`_run_cell`, with an exception recorded as the cell's `"failed"` status (type and message), so
    that one method's failure does not lose the finished cells of a long run."""
    tic = time.perf_counter()
    try:
        return _run_cell(key, problem, method_name, config, overrides)
    except Exception as err:  # noqa: BLE001 -- recorded in the row, never silent
        message = f"{type(err).__name__}: {err}"
        return (
            {
                "method": method_name,
                "status": "failed",
                "message": message[:500],
                "wall_time_s": time.perf_counter() - tic,
            },
            None,
            None,
        )


def seed_row(method: str, lam: float, per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The table row of one (method, λ) cell run once per seed.

    `metrics` holds, for every metric `m` of the seeds that finished (`status == "ok"`), the mean over
    those seeds and, with two or more of them, `m_se` = the standard error over seeds
    `std_ddof1 / sqrt(n)` (the within-seed standard errors stay in `seeds`); `train_time_s` is the mean
    training time. The row is `"ok"` when at least one seed is, else it takes the first seed's status
    and message. `seeds` keeps every per-seed record."""
    ok = [r for r in per_seed if r.get("status") == "ok"]
    row: dict[str, Any] = {
        "kind": "method",
        "method": method,
        "lam": lam,
        "num_seeds": len(per_seed),
        "num_seeds_ok": len(ok),
        "seeds": list(per_seed),
    }
    if not ok:
        first = per_seed[0]
        row.update(status=first["status"], message=first.get("message", "non-finite samples"))
        return row
    names = [k for k in ok[0]["metrics"] if not k.endswith("_se")]
    metrics: dict[str, float] = {}
    for name in names:
        values = np.asarray([r["metrics"][name] for r in ok], np.float64)
        metrics[name] = float(values.mean())
        if values.size >= 2:
            metrics[f"{name}_se"] = float(values.std(ddof=1) / math.sqrt(values.size))
    row.update(status="ok", metrics=metrics, train_time_s=float(np.mean([r["train_time_s"] for r in ok])))
    return row


def run_digits(
    config: DigitsConfig | None = None,
    out_dir: str | Path = "results/finetune",
    *,
    retrain: bool = False,
    method_configs: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the experiment and write `digits.md`, `digits.json`, `digits_grid.png`, `digits_reward_kl.png`.

    Args:
        config: the experiment (`DigitsConfig()` by default).
        out_dir: output directory.
        retrain: retrain the flow and the classifier first
            (`benchmarks.experiments.digits_models.ensure_models`).
        method_configs: per-method config overrides (default `METHOD_CONFIGS`).
        log: progress messages.

    Returns:
        The JSON record.
    """
    from benchmarks.experiments.digits_models import ensure_models

    config = config or DigitsConfig()
    method_configs = METHOD_CONFIGS if method_configs is None else method_configs
    start = time.perf_counter()
    flow, classifier = ensure_models(retrain=retrain, log=log)
    # the base samples come from the first seed's root key; each seed's cells from its own
    key_base = jax.random.split(jax.random.key(config.seeds[0]))[0]
    cell_keys = {seed: jax.random.split(jax.random.key(seed))[1] for seed in config.seeds}
    test = digits.load_digits_data("test")

    problem0 = digits_problem(
        flow,
        classifier,
        digit=config.digit,
        lam=1.0,
        t0=config.t0,
        num_steps=config.num_steps,
        grid=config.grid,
    )
    log(f"sampling {config.num_reference} base samples ...")
    x_base = _base_samples(key_base, problem0, config.num_reference)
    base_reward = _classify(classifier, x_base)[:, config.digit]
    rows: list[dict[str, Any]] = [
        {
            "kind": "data",
            "method": "data (test split)",
            "lam": None,
            "status": "ok",
            "metrics": sample_metrics(test.images, classifier, config.digit),
        },
        {
            "kind": "base",
            "method": "base (no fine-tuning)",
            "lam": None,
            "status": "ok",
            "metrics": sample_metrics(x_base[: config.num_samples], classifier, config.digit),
        },
    ]
    grid_rows: list[tuple[str, np.ndarray]] = [
        ("data", test.images[: config.grid_columns]),
        ("base", x_base[: config.grid_columns]),
    ]
    skipped: dict[str, str] = {}
    for i, lam in enumerate(config.lams):
        rows.append(
            {
                "kind": "reference",
                "method": "tilted law (IS from base)",
                "lam": lam,
                "status": "ok",
                "metrics": reference_metrics(base_reward, lam),
            }
        )
        problem = digits_problem(
            flow,
            classifier,
            digit=config.digit,
            lam=lam,
            t0=config.t0,
            num_steps=config.num_steps,
            grid=config.grid,
        )
        for j, name in enumerate(config.methods):
            if name not in samplers.names():
                skipped[name] = "not registered"
                continue
            if not samplers.get(name).supports(problem.base.kind):
                skipped[name] = f"does not support the {problem.base.kind!r} base"
                continue
            if not config.lams_of(name):
                skipped[name] = f"its λ grid {dict(config.method_lams)[name]} misses lams {config.lams}"
                continue
            if lam not in config.lams_of(name):
                continue
            per_seed = []
            for seed in config.seeds:
                log(f"λ={lam:g} {name} seed {seed}: training {config.train_steps} steps ...")
                cell_key = jax.random.fold_in(jax.random.fold_in(cell_keys[seed], i), j)
                record, x, log_w = _run_cell_safely(
                    cell_key, problem, name, config, method_overrides(name, method_configs)
                )
                record["seed"] = seed
                if x is not None and record["status"] == "ok":
                    record["metrics"] = sample_metrics(x, classifier, config.digit, lam=lam, log_w=log_w)
                    if seed == config.seeds[0]:
                        grid_rows.append((f"{name}\nλ={lam:g}", x[: config.grid_columns]))
                    m = record["metrics"]
                    log(
                        f"  reward {m['reward']:.3f}, acc {m['accuracy']:.3f}, KL {m['kl_path']:.2f}, "
                        f"{record['wall_time_s']:.0f} s"
                    )
                else:
                    log(f"  {record['status']}: {record.get('message', 'non-finite samples')}")
                per_seed.append(record)
            rows.append(seed_row(name, lam, per_seed))
    if tuple(config.methods) == DEFAULT_METHODS:  # every unified loss: say which could not run here
        skipped.update(flowless_methods())

    out = Path(out_dir)
    files = {
        "markdown": str(out / "digits.md"),
        "record": str(out / "digits.json"),
        "grid": str(out / "digits_grid.png"),
        "reward_kl": str(out / "digits_reward_kl.png"),
        "samples": str(out / "digits_samples.npz"),
    }
    from benchmarks.experiments.digits_report import grid_figure, markdown_report, reward_kl_figure

    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(  # the grid's samples, so the figure can be redrawn without rerunning
        files["samples"],
        labels=np.asarray([label for label, _ in grid_rows]),
        samples=np.stack([np.asarray(x, np.float32) for _, x in grid_rows]),
    )
    grid_figure(grid_rows, Path(files["grid"]), digit=config.digit)
    reward_kl_figure(rows, Path(files["reward_kl"]), digit=config.digit)
    record = {
        "experiment": "digits",
        "commit": git_commit(),
        "hardware": environment(),
        "config": dataclasses.asdict(config),
        "method_configs": {name: method_overrides(name, method_configs) for name in config.methods},
        "seeds": list(config.seeds),
        "models": {
            "flow": _model_summary(flow.provenance),
            "classifier": _model_summary(classifier.provenance),
        },
        "skipped": skipped,
        "families": {name: samplers.get(name).family for name in config.methods if name in samplers.names()},
        "rows": rows,
        "wall_time_s": time.perf_counter() - start,
        "files": files,
    }
    Path(files["markdown"]).write_text(markdown_report(record))
    atomic_write_json(files["record"], record)
    return record


def _model_summary(provenance: Mapping[str, Any]) -> dict[str, Any]:
    training = provenance.get("training", {})
    keep = ("steps", "test_accuracy", "test_nll", "test_loss_ema_params", "train_loss_ema_params")
    return {
        "content_sha256": provenance.get("content_sha256"),
        "num_parameters": provenance.get("num_parameters"),
        "command": provenance.get("command"),
        "architecture": provenance.get("architecture"),
        "versions": provenance.get("versions"),
        **{k: training[k] for k in keep if k in training},
    }


def parse_floats(text: str | Sequence[float]) -> tuple[float, ...]:
    """`"1,3,10"` -> `(1.0, 3.0, 10.0)`."""
    if isinstance(text, str):
        return tuple(float(v) for v in text.split(",") if v.strip())
    return tuple(float(v) for v in text)


def parse_seeds(args) -> tuple[int, ...]:
    """The seeds of `--seeds "0,1,2"` or the single `--seed N` (not both); default `(0, 1, 2)`."""
    seeds_text, seed = getattr(args, "seeds", None), getattr(args, "seed", None)
    if seeds_text is not None and seed is not None:
        raise ValueError("give --seeds or --seed, not both")
    if seed is not None:
        return (seed,)
    if seeds_text is None:
        return DigitsConfig.seeds
    try:
        return tuple(int(v) for v in seeds_text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"--seeds must be comma-separated integers, e.g. 0,1,2; got {seeds_text!r}"
        ) from None


def run_from_args(args) -> int:
    """`tiltbench digits`: build a `DigitsConfig` from the parsed options, run, print the summary.
    `--lams` (and `--quick`) run every method at each given `λ` (no per-method grids)."""
    overrides: dict[str, Any] = {"digit": args.digit, "seeds": parse_seeds(args)}
    if args.lams is not None:
        overrides["lams"] = parse_floats(args.lams)
        overrides["method_lams"] = ()
    if args.methods is not None:
        overrides["methods"] = tuple(m for m in args.methods.split(",") if m)
    for name in ("train_steps", "num_samples", "num_steps"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.quick:
        overrides.setdefault("train_steps", 20)
        overrides.setdefault("num_samples", 64)
        overrides["num_reference"] = 256
        overrides.setdefault("lams", (1.0,))
        overrides["method_lams"] = ()
    unknown = [m for m in overrides.get("methods", ()) if m not in samplers.names()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {samplers.names()}")
    record = run_digits(DigitsConfig(**overrides), args.out, retrain=args.retrain)
    print(Path(record["files"]["markdown"]).read_text())
    print(f"wrote {', '.join(record['files'].values())} in {record['wall_time_s']:.0f} s")
    return 0
