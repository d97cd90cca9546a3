"""Report of the digits fine-tuning experiment (`benchmarks.experiments.digits`): Markdown table and two
figures.

- `grid_figure`: one row of 8×8 samples per source (data, base, each method × λ: the first seed's
  samples), gray scale,
  pixel values in `[-1, 1]` (clipped for display only).
- `reward_kl_figure`: reward `E[log p(c|x)]` against the path KL `E[½∫|u|²dt]` per method and `λ`,
  with the importance-sampling estimate of the tilted law's (reward, KL) at each `λ`; methods far
  outside the base-to-optimum window (`off_scale`) are named above the axes with their values.
- `markdown_report`: the table of every row of the record; a method's numbers are means ± standard
  errors over seeds (`benchmarks.experiments.digits.seed_row`), the references' ± are sampling
  standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.grid.records import save_figure

__all__ = ["grid_figure", "markdown_report", "off_scale", "reward_kl_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mosaic(rows: Sequence[tuple[str, np.ndarray]], pad: int = 1) -> np.ndarray:
    """One image: row `r` holds the 8×8 images of `rows[r]` side by side, separated by `pad` pixels."""
    columns = max(x.shape[0] for _, x in rows)
    cell = 8 + pad
    out = np.full((len(rows) * cell + pad, columns * cell + pad), np.nan)
    for r, (_, x) in enumerate(rows):
        for c in range(x.shape[0]):
            out[pad + r * cell : pad + r * cell + 8, pad + c * cell : pad + c * cell + 8] = x[c].reshape(8, 8)
    return out


def grid_figure(rows: Sequence[tuple[str, np.ndarray]], path: Path, *, digit: int) -> None:
    """Rows of 8×8 images (`(m, 64)` arrays in `[-1, 1]`, clipped for display) labelled on the left."""
    plt = _plt()
    mosaic = _mosaic(rows)
    height, width = mosaic.shape
    fig, ax = plt.subplots(figsize=(0.09 * width + 1.6, 0.09 * height + 0.5))
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("white")
    ax.imshow(np.clip(mosaic, -1, 1), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([1 + 9 * r + 3.5 for r in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"8×8 digits: samples before / after fine-tuning towards class {digit}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def _view_window(rows: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """The figure's window: rewards down to 1 nat below the lowest of the data and base rows, and
    path KLs up to 10× the largest reference KL (the tilted law at the largest λ)."""
    floor = [r["metrics"]["reward"] for r in rows if r.get("kind") in ("data", "base") and r.get("metrics")]
    kls = [r["metrics"]["kl"] for r in rows if r.get("kind") == "reference" and r.get("metrics")]
    reward_lo = (min(floor) if floor else -10.0) - 1.0
    kl_hi = 10.0 * max(kls) if kls else 100.0
    return reward_lo, kl_hi


def _inside(metrics: dict[str, Any], window: tuple[float, float]) -> bool:
    reward_lo, kl_hi = window
    return metrics["reward"] >= reward_lo and metrics["kl_path"] <= kl_hi


def off_scale(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The method rows whose mean lies outside `_view_window` (typically a diverged run, with a path KL
    of 10³-10⁸ nats), as 'method λ=… (KL …, reward …)': the figure names them above the axes instead
    of squeezing every other point into a corner."""
    window = _view_window(rows)
    out = []
    for r in rows:
        m = r.get("metrics")
        if r.get("kind") != "method" or m is None or r.get("status") != "ok":
            continue
        if not _inside(m, window):
            out.append(f"{r['method']} λ={r['lam']:g} (KL {m['kl_path']:.3g}, reward {m['reward']:.3g})")
    return out


def reward_kl_figure(rows: Sequence[dict[str, Any]], path: Path, *, digit: int) -> None:
    """Reward vs path KL per method (markers) and λ (colours), and the IS optimum per λ (stars); a
    method's point is its mean over seeds, its error bars the standard errors over seeds. Methods whose
    mean falls outside the window of `_view_window` are named, with their values, above the axes."""
    plt = _plt()
    lams = sorted({r["lam"] for r in rows if r.get("lam") is not None})
    colors = {lam: plt.get_cmap("viridis")(i / max(1, len(lams) - 1)) for i, lam in enumerate(lams)}
    markers = "os^Dvp<>hHXPd8"
    methods = sorted({r["method"] for r in rows if r.get("kind") == "method"})
    window = _view_window(rows)
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    for r in rows:
        m = r.get("metrics")
        if m is None or r.get("status") != "ok":
            continue
        if r["kind"] == "method":
            if not _inside(m, window):
                continue  # named in the title (`off_scale`)
            marker = markers[methods.index(r["method"]) % len(markers)]
            ax.errorbar(
                m["kl_path"],
                m["reward"],
                xerr=m.get("kl_path_se"),
                yerr=m.get("reward_se"),
                fmt=marker,
                color=colors[r["lam"]],
                ms=6,
                capsize=2,
            )
        elif r["kind"] == "reference":
            ax.plot(m["kl"], m["reward"], "*", color=colors[r["lam"]], ms=13, mec="k", mew=0.6)
        elif r["kind"] == "base":
            ax.axhline(m["reward"], color="0.5", ls=":", lw=1)
    ref = sorted((r["metrics"]["kl"], r["metrics"]["reward"]) for r in rows if r.get("kind") == "reference")
    if ref:
        ax.plot(*zip(*ref, strict=True), "k--", lw=0.8)
    handles = [
        plt.Line2D([], [], ls="", marker=markers[i % len(markers)], color="k", label=name)
        for i, name in enumerate(methods)
    ]
    handles += [plt.Line2D([], [], ls="", marker="*", color="k", ms=10, label="tilted law (IS from base)")]
    handles += [
        plt.Line2D([], [], ls="", marker="s", color=colors[lam], label=f"λ = {lam:g}") for lam in lams
    ]
    handles += [plt.Line2D([], [], ls=":", color="0.5", label="base")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_xlim(left=0.0)
    ax.set_ylim(bottom=window[0])
    ax.set_xlabel("path KL  E[½∫|u|² dt]  (nats)")
    ax.set_ylabel(f"reward  E[log p({digit} | x)]")
    ax.grid(True, alpha=0.3)
    if outside := off_scale(rows):
        ax.set_title("off scale: " + "; ".join(outside), fontsize=6.5, loc="left", wrap=True)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def _pm(m: dict[str, Any], name: str, digits: int = 3) -> str:
    value = m.get(name)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    se = m.get(f"{name}_se")
    return f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{value:.{digits}f}"


def _seeds_text(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(str(s) for s in seeds)}"


def _grids_text(cfg: dict[str, Any]) -> str:
    """Which methods ran at which `λ` (the per-method grids, when some method ran at fewer `λ`)."""
    lams = tuple(cfg["lams"])
    reduced: dict[tuple[float, ...], list[str]] = {}
    for name, grid in cfg.get("method_lams") or ():
        grid = tuple(lam for lam in lams if lam in grid)
        if name in cfg["methods"] and grid != lams:
            reduced.setdefault(grid, []).append(name)
    if not reduced:
        return ""
    text = lambda values: ", ".join(f"{v:g}" for v in values)  # noqa: E731
    if len(reduced) == 1 and len(next(iter(reduced.values()))) == len(cfg["methods"]):
        grid = next(iter(reduced))
        return (
            f" Every method ran at λ = {text(grid)} only with {cfg['train_steps']} training steps, to fit "
            f"{len(cfg.get('seeds', [0]))} seed(s) of every method in one CPU run (the reference rows keep "
            f"λ = {text(lams)}; `tiltbench digits --lams {','.join(f'{v:g}' for v in lams)} --train-steps "
            "200` runs every method at every λ with the budget of the first, single-seed table)."
        )
    parts = [
        f"{', '.join(f'`{n}`' for n in names)} at λ = {text(grid)} only" for grid, names in reduced.items()
    ]
    return (
        " λ grid: " + "; ".join(parts) + f" (to fit one CPU run); every other method at λ = {text(lams)}. "
        "Every method has the same training budget at a given λ."
    )


def _method_label(r: dict[str, Any]) -> str:
    n, ok = r.get("num_seeds"), r.get("num_seeds_ok")
    return r["method"] if n is None or ok == n else f"{r['method']} ({ok}/{n} seeds)"


def markdown_report(record: dict[str, Any]) -> str:
    """The Markdown page of a `run_digits` record."""
    cfg = record["config"]
    hw = record["hardware"]
    flow, clf = record["models"]["flow"], record["models"]["classifier"]
    test_loss = flow.get("test_loss_ema_params", {})
    seeds = record.get("seeds", [record.get("seed")])
    lines = [
        f"# Digits fine-tuning (8×8, reward log p({cfg['digit']} | x))",
        "",
        f"Generated by `tiltbench digits` at commit `{record['commit']}` on {hw['cpu']} ({hw['backend']}), "
        f"wall time {record['wall_time_s']:.0f} s, {_seeds_text(seeds)}. Base: the suite's flow-matching "
        f"model ({flow['num_parameters']} parameters, held-out flow-matching loss "
        f"{test_loss.get('mean', float('nan')):.2f} ± {test_loss.get('se', float('nan')):.2f}) run as the "
        f"memoryless SDE from t0 = {cfg['t0']} with {cfg['num_steps']} {cfg['grid']} Euler–Maruyama steps; "
        f"reward: the suite's classifier ({clf['num_parameters']} parameters, held-out accuracy "
        f"{clf.get('test_accuracy', float('nan')):.4f}). Each method: {cfg['train_steps']} training steps, "
        f"{cfg['num_samples']} evaluation samples per seed.{_grids_text(cfg)} "
        "Definitions: `benchmarks/experiments/digits.py`.",
        "",
        "Columns: reward = E[log p(c|x)]; acc = fraction classified as c; KL = path KL E[½∫|u|²dt] "
        "(estimated as mean(λr − log w)); ELBO = E[λr] − KL (≤ log Z); log Ẑ and ESS from the path "
        "weights; dist = mean pairwise L2 distance; H(class) = entropy of the predicted-class histogram "
        "(nats, log 10 = 2.30); train s = training time per seed. "
        + (
            f"Method rows: mean ± standard error over the {len(seeds)} seeds (std/√n of the per-seed "
            "values, which are in `digits.json` with their own sampling standard errors); a method "
            "with fewer finished seeds says so. "
            if len(seeds) > 1
            else "Method rows: one seed, ± sampling standard errors. "
        )
        + "Data and base rows: ± sampling standard errors. Reference rows estimate the tilted law "
        f"p* ∝ p_base e^{{λr}} by importance sampling of {cfg['num_reference']} base samples drawn with "
        f"seed {seeds[0]} (they do not depend on the methods' seeds; ± sampling standard errors; KL there "
        "is KL(p*||p_base); ESS of those weights).",
        "",
        "| method | λ | reward | acc | KL | ELBO | log Ẑ | ESS | dist | H(class) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lam = "—" if r.get("lam") is None else f"{r['lam']:g}"
        if r.get("status") != "ok":
            lines.append(f"| {_method_label(r)} | {lam} | {r['status']}: {r.get('message', '')} |||||||||")
            continue
        m = r["metrics"]
        if r["kind"] == "reference":
            lines.append(
                f"| *{r['method']}* | {lam} | {_pm(m, 'reward')} | — | {_pm(m, 'kl', 2)} | "
                f"{m['log_Z']:.3f} (= log Z) | {_pm(m, 'log_Z')} | {m['ess']:.3f} | — | — | — |"
            )
            continue
        train_s = f"{r['train_time_s']:.0f}" if "train_time_s" in r else "—"
        lines.append(
            f"| {_method_label(r)} | {lam} | {_pm(m, 'reward')} | {_pm(m, 'accuracy')} | "
            f"{_pm(m, 'kl_path', 2)} | {_pm(m, 'elbo', 2)} | {_pm(m, 'log_Z')} | {_pm(m, 'ess')} | "
            f"{_pm(m, 'pairwise_dist', 2)} | {_pm(m, 'class_entropy', 2)} | {train_s} |"
            if "kl_path" in m
            else f"| {r['method']} | {lam} | {_pm(m, 'reward')} | {_pm(m, 'accuracy')} | — | — | — | — | "
            f"{m['pairwise_dist']:.2f} | {m['class_entropy']:.2f} | — |"
        )
    ran = {r["method"] for r in record["rows"] if r.get("kind") == "method"}
    thermodynamic = sorted(m for m in ran if record.get("families", {}).get(m) == "thermodynamic")
    if thermodynamic:
        lines += [
            "",
            f"For {', '.join(f'`{m}`' for m in thermodynamic)} log w is the method's own path weight "
            "(forward/backward kernel ratio, E[w] = Z: exact for CMCD, whose weight carries the "
            "model's log p_1 from its probability-flow ODE, and up to O(h) for NETS), not the Girsanov "
            "weight against the base: their KL column (mean(λr − log w)) is not the path KL to the base "
            "and can be negative; log Ẑ and ESS are comparable.",
        ]
    if record.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"`{k}` ({v})" for k, v in record["skipped"].items()) + "."]
    lines += [
        "",
        f"Figures: `{Path(record['files']['grid']).name}` (samples of seed {seeds[0]}), "
        f"`{Path(record['files']['reward_kl']).name}` (reward vs KL, means ± standard errors over seeds). "
        "Record: `digits.json`.",
    ]
    return "\n".join(lines) + "\n"
