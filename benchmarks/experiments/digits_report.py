"""Report of the digits fine-tuning experiment (`benchmarks.experiments.digits`): Markdown table and two
figures.

- `grid_figure`: one row of 8×8 samples per source (data, base, each method × λ), gray scale,
  pixel values in `[-1, 1]` (clipped for display only).
- `reward_kl_figure`: reward `E[log p(c|x)]` against the path KL `E[½∫|u|²dt]` per method and `λ`,
  with the importance-sampling estimate of the tilted law's (reward, KL) at each `λ`.
- `markdown_report`: the table of every row of the record with standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.grid.records import save_figure

__all__ = ["grid_figure", "markdown_report", "reward_kl_figure"]


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


def reward_kl_figure(rows: Sequence[dict[str, Any]], path: Path, *, digit: int) -> None:
    """Reward vs path KL per method (markers) and λ (colours), and the IS optimum per λ (stars)."""
    plt = _plt()
    lams = sorted({r["lam"] for r in rows if r.get("lam") is not None})
    colors = {lam: plt.get_cmap("viridis")(i / max(1, len(lams) - 1)) for i, lam in enumerate(lams)}
    markers = "os^Dvp<>"
    methods = sorted({r["method"] for r in rows if r.get("kind") == "method"})
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for r in rows:
        m = r.get("metrics")
        if m is None or r.get("status") != "ok":
            continue
        if r["kind"] == "method":
            marker = markers[methods.index(r["method"]) % len(markers)]
            ax.errorbar(
                m["kl_path"],
                m["reward"],
                xerr=m["kl_path_se"],
                yerr=m["reward_se"],
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
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("path KL  E[½∫|u|² dt]  (nats; symlog axis)")
    ax.set_ylabel(f"reward  E[log p({digit} | x)]")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _pm(m: dict[str, Any], name: str, digits: int = 3) -> str:
    value = m.get(name)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    se = m.get(f"{name}_se")
    return f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{value:.{digits}f}"


def markdown_report(record: dict[str, Any]) -> str:
    """The Markdown page of a `run_digits` record."""
    cfg = record["config"]
    hw = record["hardware"]
    flow, clf = record["models"]["flow"], record["models"]["classifier"]
    test_loss = flow.get("test_loss_ema_params", {})
    lines = [
        f"# Digits fine-tuning (8×8, reward log p({cfg['digit']} | x))",
        "",
        f"Generated by `tiltbench digits` at commit `{record['commit']}` on {hw['cpu']} ({hw['backend']}), "
        f"wall time {record['wall_time_s']:.0f} s, seed {record['seed']}. Base: the suite's flow-matching "
        f"model ({flow['num_parameters']} parameters, held-out flow-matching loss "
        f"{test_loss.get('mean', float('nan')):.2f} ± {test_loss.get('se', float('nan')):.2f}) run as the "
        f"memoryless SDE from t0 = {cfg['t0']} with {cfg['num_steps']} {cfg['grid']} Euler–Maruyama steps; "
        f"reward: the suite's classifier ({clf['num_parameters']} parameters, held-out accuracy "
        f"{clf.get('test_accuracy', float('nan')):.4f}). Each method: {cfg['train_steps']} training steps, "
        f"{cfg['num_samples']} evaluation samples. Definitions: `benchmarks/experiments/digits.py`.",
        "",
        "Columns: reward = E[log p(c|x)]; acc = fraction classified as c; KL = path KL E[½∫|u|²dt] "
        "(estimated as mean(λr − log w)); ELBO = E[λr] − KL (≤ log Z); log Ẑ and ESS from the path "
        "weights; dist = mean pairwise L2 distance; H(class) = entropy of the predicted-class histogram "
        "(nats, log 10 = 2.30). Reference rows estimate the tilted law p* ∝ p_base e^{λr} by importance "
        f"sampling of {cfg['num_reference']} base samples (KL there is KL(p*||p_base); ESS of those "
        "weights).",
        "",
        "| method | λ | reward | acc | KL | ELBO | log Ẑ | ESS | dist | H(class) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lam = "—" if r.get("lam") is None else f"{r['lam']:g}"
        if r.get("status") != "ok":
            lines.append(f"| {r['method']} | {lam} | {r['status']}: {r.get('message', '')} |||||||||")
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
            f"| {r['method']} | {lam} | {_pm(m, 'reward')} | {_pm(m, 'accuracy')} | {_pm(m, 'kl_path', 2)} | "
            f"{_pm(m, 'elbo', 2)} | {_pm(m, 'log_Z')} | "
            f"{m['ess']:.3f} | {m['pairwise_dist']:.2f} | {m['class_entropy']:.2f} | {train_s} |"
            if "kl_path" in m
            else f"| {r['method']} | {lam} | {_pm(m, 'reward')} | {_pm(m, 'accuracy')} | — | — | — | — | "
            f"{m['pairwise_dist']:.2f} | {m['class_entropy']:.2f} | — |"
        )
    if record.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"`{k}` ({v})" for k, v in record["skipped"].items()) + "."]
    lines += [
        "",
        f"Figures: `{Path(record['files']['grid']).name}` (samples), "
        f"`{Path(record['files']['reward_kl']).name}` (reward vs KL). Record: `digits.json`.",
    ]
    return "\n".join(lines) + "\n"
