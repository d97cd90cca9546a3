"""The digits fine-tuning experiment: a CPU-sized miniature of reward fine-tuning of an image model.

Base: the suite's own flow-matching model of the 8×8 digits (`targets.digits`, trained and cached by
`benchmarks.experiments.digits_models`), run as the memoryless SDE of
`samplers.base_processes.MemorylessFlowBase` from `t_0` with the exact initial law `p_{t_0}` of the
empirical training set. Reward: `r(x) = log p(c | x)` of the suite's classifier for one digit class
`c`. For each `λ` the Problem is
`finetuning_problem(base, r, λ, grid="quadratic")`, i.e. the target `p* ∝ p_base e^{λ r}`, and each
method (Adjoint Matching, reward score matching when registered, log-variance / trajectory balance
as path-KL references) trains a control `u_θ` with `samplers.train.train`.

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
seed, model provenance, every number), `digits_grid.png` (samples before/after, whose pixels are
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
    "METHOD_CONFIGS",
    "DigitsConfig",
    "digits_problem",
    "reference_metrics",
    "run_digits",
    "sample_metrics",
]

DEFAULT_METHODS = ("adjoint_matching", "reward_score_matching", "log_variance")
"""Methods run by default; a name that is not registered (yet) is reported as skipped."""

_SHARED = {"batch_size": 64, "network": {"hidden": (256, 256)}, "optim": {"learning_rate": 1e-3}}
METHOD_CONFIGS: dict[str, dict[str, Any]] = {
    # The same control network for every method (64-D images need more width than the 2-D default);
    # no grad-log-target feature, so every method sees the reward only through its loss.
    "adjoint_matching": {**_SHARED, "time_subsample": 10},
    "reward_score_matching": _SHARED,
    "log_variance": {**_SHARED, "grad_log_target_feature": False},
    "trajectory_balance": {**_SHARED, "grad_log_target_feature": False},
    # The bridge regressions (not in DEFAULT_METHODS; `--methods` selects them): the shared network,
    # batch and learning rate, otherwise their configs' defaults (not piloted here). AS, TSM and NSM
    # take the data law's score at t = 1 from the velocity (`digits_problem`).
    "adjoint_sampling": _SHARED,
    "target_score_matching": _SHARED,
    "conditional_score_matching": _SHARED,
    "novel_score_matching": _SHARED,
}
"""Per-method config overrides of this experiment (chosen from short pilot runs on the base, before
looking at any fine-tuned metric, except where a comment says otherwise); fields a method's config does
not have are dropped."""


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The experiment.

    Attributes:
        digit: the rewarded class `c`.
        lams: reward multipliers `λ`.
        methods: method registry names (unregistered or flow-incompatible ones are reported as skipped).
        t0: start time of the memoryless flow SDE.
        num_steps: Euler–Maruyama steps `K` on the `grid`.
        grid: time-grid name (`"quadratic"`: finest near the singular start `t_0`).
        train_steps: training steps per (method, λ).
        num_samples: evaluation samples per cell.
        num_reference: base samples of the importance-sampling reference of the tilted law.
        grid_columns: samples per row of the PNG grid.
        seed: root seed.
    """

    digit: int = 3
    lams: tuple[float, ...] = (1.0, 3.0, 10.0)
    methods: tuple[str, ...] = DEFAULT_METHODS
    t0: float = 0.02
    num_steps: int = 40
    grid: str = "quadratic"
    train_steps: int = 200
    num_samples: int = 512
    num_reference: int = 4096
    grid_columns: int = 12
    seed: int = 0

    def __post_init__(self):
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
    import dataclasses as dc

    valid = {f.name for f in dc.fields(spec.config_cls)}
    return spec.make_config(**{k: v for k, v in overrides.items() if k in valid})


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
    key = jax.random.key(config.seed)
    key_base, key_cells = jax.random.split(key)
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
            log(f"λ={lam:g} {name}: training {config.train_steps} steps ...")
            cell_key = jax.random.fold_in(jax.random.fold_in(key_cells, i), j)
            record, x, log_w = _run_cell(cell_key, problem, name, config, method_configs.get(name, {}))
            record.update(kind="method", lam=lam)
            if x is not None and record["status"] == "ok":
                record["metrics"] = sample_metrics(x, classifier, config.digit, lam=lam, log_w=log_w)
                grid_rows.append((f"{name}\nλ={lam:g}", x[: config.grid_columns]))
                m = record["metrics"]
                log(
                    f"  reward {m['reward']:.3f}, acc {m['accuracy']:.3f}, KL {m['kl_path']:.2f}, "
                    f"{record['wall_time_s']:.0f} s"
                )
            else:
                log(f"  {record['status']}: {record.get('message', 'non-finite samples')}")
            rows.append(record)

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
        "method_configs": {k: dict(v) for k, v in method_configs.items()},
        "seed": config.seed,
        "models": {
            "flow": _model_summary(flow.provenance),
            "classifier": _model_summary(classifier.provenance),
        },
        "skipped": skipped,
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


def run_from_args(args) -> int:
    """`tiltbench digits`: build a `DigitsConfig` from the parsed options, run, print the summary."""
    overrides: dict[str, Any] = {"digit": args.digit, "seed": args.seed}
    if args.lams is not None:
        overrides["lams"] = parse_floats(args.lams)
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
    unknown = [m for m in overrides.get("methods", ()) if m not in samplers.names()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {samplers.names()}")
    record = run_digits(DigitsConfig(**overrides), args.out, retrain=args.retrain)
    print(Path(record["files"]["markdown"]).read_text())
    print(f"wrote {', '.join(record['files'].values())} in {record['wall_time_s']:.0f} s")
    return 0
