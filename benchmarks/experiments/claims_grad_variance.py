"""Report on the gradient-variance claim of the unified paper (`samplers.claims.grad_variance`).

`grad_variance_report(out_dir="results/claims", quick=False)` measures, at fixed parameters (the
closed-form optimal control plus a small fixed MLP perturbation), the trace of the covariance of the
minibatch gradient of every bridge-pair regression loss (AS, NSM, TSM, CSM) and of Adjoint Matching, as
a function of the batch size and of time windows near `t = 0` and `t = 1`, on the sampling targets with
the Brownian base (2-D correlated Gaussian, GMM-40) and on the reward fine-tuning tasks with their
memoryless flow base (`ft_gmm2d_quadratic`, `ft_gmm16_quadratic`: exact tilted Gaussian-mixture flows)
and on the 8×8 digits model with its classifier reward (no closed-form optimum: measured at the base
plus the perturbation, `gv.CLAIM_BASES["perturbed_base"]`), states per loss and task whether the
variance is integrable in time at each end (`gv.end_verdict`), and trains each loss on
`ft_gmm2d_quadratic` at equal reward evaluations (`benchmarks.experiments.claims_training`). It writes

- `grad_variance.md`: the verdict table, the measurement tables (with bootstrap standard errors) and
  the training table;
- `grad_variance.png`: `tr Cov` against `δ` (log-log), one line per loss, one row per target, one column
  per end (solid: window `U[0, δ]` / `U[1 - δ, 1]`; dashed: fixed time `t = δ` / `t = 1 - δ`), and the
  objective gap against reward evaluations;
- `grad_variance.json`: the rows, the verdicts, the training traces, the resolved configs, the seed, the
  commit and the environment.

Run: `tiltbench claims grad_variance [--quick] [--out results/claims]`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax

import targets
from benchmarks.experiments import claims_training as ct
from benchmarks.grid.records import atomic_write_json, atomic_write_text, environment, git_commit, save_figure
from samplers.claims import grad_variance as gv
from samplers.methods.bridge_targets import TIME_EPS

__all__ = ["QUICK_TARGETS", "TARGETS", "grad_variance_report", "verdicts"]

TARGETS: dict[str, dict[str, Any]] = {
    # target name -> the claim base (`gv.CLAIM_BASES`), its settings, and config fields replaced for it
    "gaussian_correlated": {"base": "brownian", "settings": {"sigma": 1.0}},
    "gmm40": {"base": "brownian", "settings": {"sigma": 20.0}},  # means in [-40, 40]²: base std 20 at t = 1
    # the flow from t0 = TIME_EPS (the regression times' clamp), so that both ends reach δ = 1e-4
    "ft_gmm2d_quadratic": {"base": "flow", "settings": {}},
    # 16-D: each example costs ~5x the 2-D one; half the minibatches keeps the run within ~25 min
    "ft_gmm16_quadratic": {"base": "flow", "settings": {}, "config": {"num_minibatches": 64}},
    # The 8×8 digits model with the classifier reward (digit 3, λ = 3, the digits experiment's middle λ):
    # no closed-form optimum, so measured at the base plus the perturbation with end points simulated
    # under it; a 169k-parameter velocity network per example: sized down.
    "digits3_lam3": {
        "base": "perturbed_base",
        "problem": "digits",
        "settings": {"pool_size": 4096},
        "config": {"batch_sizes": (4, 16), "window_batch_size": 16, "num_minibatches": 64, "num_steps": 100},
    },
}


def _digits_problem(config: gv.GradVarianceConfig):
    """The digits fine-tuning problem of `TARGETS["digits3_lam3"]`: the committed flow and classifier
    (`digits_models.ensure_models`), digit 3, `λ = 3`, memoryless from `t0 = TIME_EPS` on
    `two_sided_log_grid`."""
    from benchmarks.experiments.digits import digits_problem
    from benchmarks.experiments.digits_models import ensure_models

    flow, classifier = ensure_models(log=lambda message: None)
    t0 = TIME_EPS
    ts = gv.two_sided_log_grid(config.num_steps, t0)
    return digits_problem(flow, classifier, digit=3, lam=3.0, t0=t0, num_steps=config.num_steps, ts=ts)


PROBLEMS = {"digits": _digits_problem}
"""Problems that are not registry targets: name -> `(config) -> Problem` (a `TARGETS` entry's "problem")."""

QUICK_TARGETS = ("gaussian_correlated", "ft_gmm2d_quadratic")
"""`--quick` measures one target per base (a smoke test of the pipeline, not for reading)."""

QUICK = dict(
    batch_sizes=(8, 32),
    deltas=(0.1, 0.01),
    window_batch_size=8,
    num_minibatches=16,
    num_bootstrap=20,
    num_steps=20,
    hidden=(8,),
)
TRAINING = ct.TrainingConfig()
"""The training comparison of the full report (`--quick` skips it)."""
EQUAL_BUDGETS = (6_400.0, 12_800.0, 25_600.0)
"""Reward-evaluation budgets of the training table (a quarter, half and all of `TRAINING.max_evals`)."""


def _fmt(value: float, se: float) -> str:
    if not math.isfinite(value):  # ratio with |E G|² not resolved above the noise (estimate <= 0)
        return "n/a"
    return f"{value:.3g} ± {se:.2g}"


def _table(rows: list[dict], sweep: str, column: str) -> str:
    keys = sorted({r[column] for r in rows if r["sweep"] == sweep}, reverse=(column == "delta"))
    losses = list(dict.fromkeys(r["loss"] for r in rows if r["sweep"] == sweep))
    head = "| loss | " + " | ".join(f"{column} = {k:g}" for k in keys) + " |"
    lines = [head, "|---" * (len(keys) + 1) + "|"]
    for loss in losses:
        cells = []
        for k in keys:
            (r,) = [r for r in rows if r["sweep"] == sweep and r["loss"] == loss and r[column] == k]
            trace, ratio = _fmt(r["trace_cov"], r["trace_cov_se"]), _fmt(r["ratio"], r["ratio_se"])
            cells.append(f"{trace} (ratio {ratio})")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _profile(rows: list[dict], target: str, loss: str, sweep: str) -> list[dict]:
    sel = [r for r in rows if (r["target"], r["loss"], r["sweep"]) == (target, loss, sweep)]
    return sorted(sel, key=lambda r: r["delta"])


def _fit_rows(profile: list[dict], max_delta: float = 0.01) -> list[dict]:
    """The fixed-time points used for the exponent: `δ <= max_delta`, or the two smallest `δ`."""
    near = [r for r in profile if r["delta"] <= max_delta]
    return near if len(near) >= 2 else profile[:2]


def verdicts(rows: list[dict]) -> list[dict[str, Any]]:
    """Per (target, loss): the fitted exponent of the fixed-time profile at each end (`gv.end_verdict`),
    the growth factor of the window average between the widest and the narrowest window at each end
    (`gv.growth_factor`), whether the variance is finite (integrable at both ends), what the claim says,
    and whether they agree."""
    out = []
    for target in dict.fromkeys(r["target"] for r in rows):
        for loss in dict.fromkeys(r["loss"] for r in rows if r["target"] == target):
            entry: dict[str, Any] = {"target": target, "loss": loss}
            for end, point, window in (("start", "at_start", "start"), ("end", "at_end", "end")):
                fit = _fit_rows(_profile(rows, target, loss, point))
                verdict = gv.end_verdict(
                    [r["delta"] for r in fit], [r["trace_cov"] for r in fit], [r["trace_cov_se"] for r in fit]
                )
                entry[end] = {**verdict._asdict(), "deltas": [r["delta"] for r in fit]}
                wins = _profile(rows, target, loss, window)
                if len(wins) >= 2:
                    g, se = gv.growth_factor(
                        wins[0]["trace_cov"],
                        wins[0]["trace_cov_se"],
                        wins[-1]["trace_cov"],
                        wins[-1]["trace_cov_se"],
                    )
                    entry[end].update(
                        growth=g, growth_se=se, growth_deltas=[wins[-1]["delta"], wins[0]["delta"]]
                    )
            entry["finite"] = entry["start"]["finite"] and entry["end"]["finite"]
            entry["claim_finite"] = loss in gv.FINITE_VARIANCE_LOSSES
            entry["matches_claim"] = entry["finite"] == entry["claim_finite"]
            out.append(entry)
    return out


def _verdict_table(entries: list[dict]) -> str:
    lines = [
        "| target | loss | p at t → 0 | p at t → 1 | growth [0, δ] | growth [1 - δ, 1] | measured | claim "
        "| matches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        cells = []
        for end in ("start", "end"):
            cells.append(f"{e[end]['exponent']:+.2f} ± {e[end]['exponent_se']:.2f}")
        for end in ("start", "end"):
            g = e[end].get("growth")
            cells.append("—" if g is None else _fmt(g, e[end]["growth_se"]))
        measured = "finite" if e["finite"] else "not finite"
        claim = "finite" if e["claim_finite"] else "not finite"
        cells += [measured, claim, "yes" if e["matches_claim"] else "**no**"]
        lines.append(f"| {e['target']} | {e['loss']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RULE = (
    "**Rule.** Over `t ~ U[0, 1]` the gradient variance is `∫ tr Cov(G | t) dt` (plus the variance of the "
    "conditional mean), finite iff the integral converges at both ends. At each end the fixed-time profile "
    "`tr Cov(G | t = δ)` (resp. `t = 1 - δ`) is fitted as `∝ δ^p` by weighted least squares on "
    "`log tr Cov` (δ ≤ 0.01; weights from the bootstrap SEs), and the end is **finite** iff "
    "`p - 2·SE(p) > -1`; a loss is *finite* iff both ends are. `p = -1` is a logarithmic divergence "
    "(CSM at t → 1 on both bases), `p < -1` a power divergence (TSM at t → 0). The growth columns give "
    "`tr Cov` of the narrowest window over the widest (`U[0, δ]` and `U[1 - δ, 1]`, ± delta-method SE): "
    "a window average can grow for an integrable profile (`-1 < p < 0`), so they are shown, not used. "
    "Under an infinite-variance law the sample variance and its SE grow with the number of minibatches: "
    "large, unstable values near a singular end point are the signature of the claim."
)
THEORY = (
    "**What the maths predicts** (docs/methods.md §1.3, §1.5). Brownian base: TSM's `α_t^{-1}∇log p*` gives "
    "`p = -2` at t → 0, CSM's `(X_t - α_t X_1)/β_t²` gives `p = -1` at t → 1, AS / NSM / AM are bounded. "
    "Memoryless flow base (`σ(t)² = 2(1 - t)/t`, `X_t | X_1 ~ N(t X_1, (1 - t)² I)`): TSM's "
    "`σ ∇log p*(X_1)/t` gives `p = -3` at t → 0; CSM `p = -1` at t → 1; the AS / NSM target "
    "`σ[∇log p*(X_1) + t(X_1 - v)/(1 - t)]` carries `σ(t)` times an O(1) noise, so `p = -1` at t → 0 in "
    "these (P1, control) units: a logarithmic divergence, cut at `log(1/t_0)` by the flow's start time "
    "(`t_0 = 0.01` in the fine-tuning grid, `10^-5` here); AM's lean adjoint decays like `t` at t → 0 "
    "(`dã/dt = (I/t - 2∇v^T) ã`), so `σ ã = O(√t)`: finite. At t → 1 the AS / NSM / TSM targets stay "
    "bounded only when `X_1` is drawn from the law whose exact velocity is `v` (then `v(x, 1) = x` and "
    "`X_1 - v(X_t, t) = O(1 - t)`); the digits rows are measured off that fixed point (a learned `v`, end "
    "points simulated under the perturbed base), where `X_1 - v(X_t, t)` stays O(1) and these targets pick "
    "up CSM's `p = -1` at t → 1."
)


def _config_note(name: str, config: gv.GradVarianceConfig, spec: dict[str, Any]) -> str:
    if spec["base"] == "perturbed_base":
        base = (
            f"memoryless flow base of the trained model from t0 = 1e-05, `two_sided_log_grid` "
            f"(K = {config.num_steps}); no closed-form optimum: measured at the BASE plus the perturbation "
            f"(u = ε·MLP_θ), end points drawn uniformly from {spec['settings']['pool_size']} end points "
            "simulated under that control (the law a buffer holds there, not p*)"
        )
    elif spec["base"] == "flow":
        base = (
            f"memoryless flow base from t0 = {spec['settings'].get('t0', 1e-5):g}, exact tilted GMM flow "
            f"u* = σ(∇log p*_t - ∇log p_t), `two_sided_log_grid` (K = {config.num_steps})"
        )
    else:
        sigma = spec["settings"]["sigma"]
        base = f"linear Brownian base σ = {sigma:g}, `symmetric_grid` (K = {config.num_steps})"
    return f"{base}; {config.num_minibatches} minibatches per cell."


def _markdown(rows: list[dict], record: dict) -> str:
    config = gv.GradVarianceConfig(**record["config"])
    entries = record["verdicts"]
    mismatches = [e for e in entries if not e["matches_claim"]]
    parts = [
        "# Gradient variance of the regression losses (unified paper, claim 1)",
        "",
        "Generated by `benchmarks/experiments/claims_grad_variance.py` "
        f"(commit `{record['commit']}`, seed {config.seed}, {record['wall_time_s']:.0f} s"
        f"{', quick configuration: not for reading' if record['quick'] else ''}). "
        "At fixed parameters `u = u* + ε·MLP_θ` (closed-form optimal control, "
        f"ε = {config.perturbation_scale}, θ a fixed random init of an MLP {config.hidden}), each cell is "
        "`tr Cov(G)` of the minibatch gradient `G = ∇_θ L̂` over independent "
        "minibatches, ± bootstrap SE, and in parentheses the ratio `tr Cov(G)/|E G|²` (n/a: the unbiased "
        "estimate of |E G|² is not positive, i.e. the mean is not resolved). End points are exact "
        "samples of `p*` (the target, or the tilted law of a fine-tuning task; for the digits model, "
        "which has no closed-form optimum, a pool simulated under the perturbed base); AM uses on-policy "
        "trajectories with lean adjoints on a grid refined at both ends. The loss weighting is the plain "
        "P1 one (`w = 1`). Times are clamped to [1e-5, 1 - 1e-5].",
        "",
        "## Verdict per loss and task",
        "",
        RULE,
        "",
        _verdict_table(entries),
        "",
        f"{len(entries) - len(mismatches)} of {len(entries)} (target, loss) pairs match the claim"
        + (
            "; not matching: "
            + "; ".join(
                f"{e['target']} / {e['loss']} (measured {'finite' if e['finite'] else 'not finite'}: "
                f"p = {e['start']['exponent']:+.2f} at t → 0, {e['end']['exponent']:+.2f} at t → 1)"
                for e in mismatches
            )
            if mismatches
            else ""
        )
        + ".",
        "",
        THEORY,
        "",
    ]
    training = record.get("training")
    if training:
        cfg = training["config"]
        parts += [
            f"## Training at equal reward evaluations ({cfg['task']})",
            "",
            f"Each loss trained with the grid's settings for {cfg['task']} (hyper-parameter table, flow from "
            "t0 = 0.01 on 200 quadratic steps, the methods' default configs: AM batch 256, the regressions "
            "batch 256 from a buffer refreshed with 512 end points every 20 steps) until "
            f"{cfg['max_evals']:,.0f} reward evaluations (values + gradients); seeds {list(cfg['seeds'])}. "
            "Each cell: the objective gap `log Z - mean log w` (nats, ≥ 0 in expectation, 0 at the optimum) "
            f"from {cfg['num_eval']} fresh samples at the last trace point within the budget, mean over "
            "seeds in bold, then per seed ± SE. Steps run: "
            + ", ".join(
                f"{name} {'/'.join(str(r['steps']) for r in training['runs'] if r['method'] == name)}"
                for name in dict.fromkeys(r["method"] for r in training["runs"])
            )
            + ".",
            "",
            ct.equal_budget_table(training["runs"], tuple(training["budgets"])),
            "",
            ct.ranking_line(training["runs"], max(training["budgets"])),
            "",
            ct.settings_line(training["runs"])
            + " The training losses are thus the stabilised defaults (the `score` weighting `1/σ(t)²` "
            "removes the `σ(t)²` growth of AS / NSM at t → 0; TSM and CSM draw `t` in `[t_min, 1 - t_min]`), "
            "not the plain P1 losses of the variance measurement above.",
            "",
        ]
    for target in dict.fromkeys(r["target"] for r in rows):
        sel = [r for r in rows if r["target"] == target]
        cfg = gv.GradVarianceConfig(**record["configs"][target])
        parts += [f"## {target}", "", _config_note(target, cfg, record["targets"][target]), ""]
        parts += ["### Batch size (t ~ U[0, 1])", "", _table(sel, "batch_size", "batch_size"), ""]
        for kind in cfg.window_kinds:
            parts += [
                f"### {gv.WINDOW_KINDS[kind]}, batch {cfg.window_batch_size}",
                "",
                _table(sel, kind, "delta"),
                "",
            ]
    return "\n".join(parts)


def _figure(rows: list[dict], training: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target_names = list(dict.fromkeys(r["target"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    colors = {loss: f"C{i}" for i, loss in enumerate(losses)}
    num_rows = len(target_names) + (1 if training else 0)
    fig, axes = plt.subplots(num_rows, 2, figsize=(11, 4.2 * num_rows), squeeze=False)
    for i, target in enumerate(target_names):
        ends = (("start", "at_start", "t → 0"), ("end", "at_end", "t → 1"))
        for j, (window, point, label) in enumerate(ends):
            ax = axes[i, j]
            for loss in losses:
                for sweep, style in ((window, "-"), (point, "--")):
                    sel = _profile(rows, target, loss, sweep)
                    if not sel:
                        continue
                    ax.errorbar(
                        [r["delta"] for r in sel],
                        [r["trace_cov"] for r in sel],
                        yerr=[r["trace_cov_se"] for r in sel],
                        color=colors[loss],
                        ls=style,
                        marker="o",
                        ms=3,
                        capsize=2,
                        label=loss if sweep == window else None,
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("δ")
            ax.set_ylabel("tr Cov(minibatch gradient)")
            ax.set_title(f"{target}: {label} (solid: window, dashed: fixed t)")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if training:
        ax = axes[-1, 0]
        for run in training["runs"]:
            color = colors.get(run["method"], "k")
            first = run["seed"] == training["config"]["seeds"][0]
            ax.plot(
                [p["evals"] for p in run["trace"]],
                [p["objective_gap"] for p in run["trace"]],
                "o-",
                color=color,
                ms=3,
                label=run["method"] if first else None,
            )
        ax.set_xlabel("reward evaluations (values + gradients)")
        ax.set_ylabel("objective gap log Z - mean log w")
        ax.set_yscale("symlog", linthresh=0.05)
        ax.set_title(f"training on {training['config']['task']} (one line per seed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        axes[-1, 1].axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def grad_variance_report(out_dir: str = "results/claims", quick: bool = False, seed: int = 0) -> dict:
    """Measure the gradient-variance claim on every target of `TARGETS` (`QUICK_TARGETS` with `quick`),
    state the verdicts, run the training comparison (not with `quick`) and write md / png / json.

    Args:
        out_dir: output directory.
        quick: a tiny configuration (a smoke test), not for reading.
        seed: root seed.

    Returns:
        The JSON record (`rows`, `verdicts`, `training`, `config`, `configs` per target, `targets`,
        `seed`, `commit`, `environment`, `wall_time_s`, `files`).
    """
    config = gv.GradVarianceConfig(seed=seed, **(QUICK if quick else {}))
    chosen = {name: TARGETS[name] for name in (QUICK_TARGETS if quick else TARGETS)}
    start = time.perf_counter()
    key = jax.random.key(seed)
    rows: list[dict] = []
    configs = {}
    for name, spec in chosen.items():
        # every target keeps its index in TARGETS, so a quick run draws the full run's keys
        i = list(TARGETS).index(name)
        target_config = config if quick else dataclasses.replace(config, **spec.get("config", {}))
        configs[name] = dataclasses.asdict(target_config)
        key_setup, key_measure = jax.random.split(jax.random.fold_in(key, i))
        settings = dict(spec["settings"])
        if "problem" in spec:
            settings["problem"] = PROBLEMS[spec["problem"]](target_config)
        target = None if "problem" in spec else targets.get(name)
        setup = gv.make_setup(key_setup, target, target_config, spec["base"], **settings)
        rows += gv.measure(key_measure, setup, target_config)
    training = None
    if not quick:
        runs = ct.training_comparison(TRAINING)
        training = {"config": dataclasses.asdict(TRAINING), "budgets": list(EQUAL_BUDGETS), "runs": runs}
    out = Path(out_dir)
    files = {
        "markdown": str(out / "grad_variance.md"),
        "figure": str(out / "grad_variance.png"),
        "record": str(out / "grad_variance.json"),
    }
    record = {
        "claim": (
            "unified paper (arXiv 2605.00229) claim 1: finite gradient variance for AM/AS/NSM, not TSM/CSM"
        ),
        "config": dataclasses.asdict(config),
        "configs": configs,
        "quick": quick,
        "targets": chosen,
        "seed": seed,
        "commit": git_commit(),
        "environment": environment(),
        "wall_time_s": time.perf_counter() - start,
        "verdicts": verdicts(rows),
        "training": training,
        "rows": rows,
        "files": files,
    }
    _figure(rows, training, Path(files["figure"]))
    atomic_write_text(files["markdown"], _markdown(rows, record) + "\n")
    atomic_write_json(files["record"], record)
    return record
