"""Leaderboard figures (matplotlib, Agg backend); read records and sample files, never called in training.

- `<target>_cost.png`: accuracy versus cost. Left: |log Ẑ - log Z| against energy + gradient
  evaluations (lines: the training trace of learned samplers, every seed; markers: the end point of
  every ok cell, including MCMC/SMC; black dotted: the best published value,
  `benchmarks/reports/published.py`). Right: MMD² (median bandwidth) at the end point, against the
  same axis, with the noise floor as a dashed line.
- `<target>_budget.png` (suites with evaluation budgets, `max_evals`; replaces `_cost`): accuracy
  versus cost at equal budgets, one line per method. Left: |log Ẑ - log Z|, right: MMD² (median
  bandwidth), both against the energy + gradient evaluations actually spent (training + final
  sampling), mean over ok seeds, one marker per budget level, joined in order of cost. Learned
  samplers also show their training trace (thin lines, every seed) against training cost so far
  plus the cost of the final sampling from that state. Dotted verticals: the nominal budgets; black
  dotted horizontal: the best published |log Ẑ − log Z|.
- `<target>_samples.png` (2-D targets): model samples of the first ok seed of every method beside
  exact / reference samples.
- `<target>_energy.png` (particle targets): energy histograms of every method against the reference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.grid.records import save_figure
from benchmarks.reports.published import best_published

__all__ = ["make_figures"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _samples_of(agg: dict[str, Any]) -> np.ndarray | None:
    for p in agg["paths"]:
        f = Path(p).with_suffix(".samples.npz")
        if f.exists():
            with np.load(f) as d:
                return d["x"]
    return None


def _end_points(agg: dict[str, Any], metric: str) -> tuple[float, float] | None:
    s = agg["stats"]
    if metric not in s or not math.isfinite(s[metric][0]):
        return None
    evals = s.get("cost/energy_evals", (0.0,))[0] + s.get("cost/grad_evals", (0.0,))[0]
    return (max(evals, 1.0), s[metric][0])


def _trace_points(trace: list[dict], with_sampling: bool = False) -> list[tuple[float, float]]:
    """`(evaluations, |log Ẑ − log Z|)` of a training trace, finite points only; `with_sampling` adds
    the cost the final sampling would have had at that point (`evals_sample`)."""
    return [
        (p["evals"] + (p.get("evals_sample", 0.0) if with_sampling else 0.0), float(p["logZ_error"]))
        for p in trace
        if math.isfinite(float(p["logZ_error"])) and p["evals"] > 0
    ]


def _cost_figure(target: str, rows: list[tuple[str, dict]], path: Path) -> bool:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    cmap = plt.get_cmap("tab20")
    floor = None
    for i, (method, agg) in enumerate(sorted(rows)):
        color = cmap(i % 20)
        traced = False  # a method without a training trace (MCMC / SMC / AIS) is labelled at its dot
        for tr in agg["traces"]:
            pts = _trace_points(tr)
            if pts:
                xs, ys = zip(*pts, strict=True)
                axes[0].plot(
                    xs, np.maximum(ys, 1e-4), color=color, alpha=0.6, lw=1, label=None if traced else method
                )
                traced = drawn = True
        end = _end_points(agg, "logZ/error")
        if end:
            axes[0].plot(end[0], max(end[1], 1e-4), "o", color=color, label=None if traced else method)
            drawn = True
        end = _end_points(agg, "mmd2/rbf_median")
        if end:
            axes[1].plot(end[0], end[1], "o", color=color, label=method)
            drawn = True
            f = agg["stats"].get("mmd2/rbf_median/noise_floor")
            floor = f[0] if f else floor
    if not drawn:
        plt.close(fig)
        return False
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="energy + gradient evaluations",
        ylabel="|log Ẑ − log Z|",
        title=f"{target}: log-Z error vs cost",
    )
    axes[1].set(
        xscale="log",
        xlabel="energy + gradient evaluations",
        ylabel="MMD² (median bandwidth)",
        title=f"{target}: MMD² at the end of each run",
    )
    if floor is not None and math.isfinite(floor):
        axes[1].axhline(floor, ls="--", color="grey", label="noise floor")
    _published_line(axes[0], target)
    _outside_legend(fig, axes)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return True


def _published_line(ax, target: str) -> None:
    """The best published |log Ẑ − log Z| of `target` as a horizontal black dotted line (none if unlisted)."""
    best = best_published(target, "logZ/error")
    if best is not None:
        ax.axhline(
            max(best["value"], 1e-4), ls=":", color="black", label=f"best published ({best['method']})"
        )


def _outside_legend(fig, axes, rect=(0, 0, 1, 1)) -> None:
    """One legend for all panels (a method has one colour everywhere), right of the plots, so that
    it never covers data."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.tight_layout(rect=rect)
    if handles:
        ncol = 1 + len(handles) // 25
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            ncol=ncol,
            frameon=False,
        )


_BASELINE_FAMILIES = ("mcmc", "smc", "ais")


def _spent(agg: dict[str, Any]) -> float:
    s = agg["stats"]
    if "budget/spent_evals" in s:
        return s["budget/spent_evals"][0]
    return s.get("cost/energy_evals", (0.0,))[0] + s.get("cost/grad_evals", (0.0,))[0]


def _widen_single_x(ax) -> None:
    """Give an axis whose data all sit at one x a factor-2 window around it, before its log scale is set
    (matplotlib would otherwise warn that the limits are singular and widen them itself)."""
    xs = [float(x) for line in ax.get_lines() for x in np.atleast_1d(line.get_xdata())]
    xs = [x for x in xs if math.isfinite(x) and x > 0]
    if xs and min(xs) == max(xs):
        ax.set_xlim(xs[0] / 2, xs[0] * 2)


def _budget_figure(target: str, methods: dict[str, list[tuple[str, dict]]], path: Path) -> bool:
    """Accuracy versus spent evaluations, one line per method over the budget levels (module doc)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    drawn, floor, budgets = False, None, set()
    for i, (method, runs) in enumerate(sorted(methods.items())):
        color = cmap(i % cmap.N)
        style = "--" if runs[0][1].get("family") in _BASELINE_FAMILIES else "-"
        for _, agg in runs:
            b = agg["stats"].get("budget/max_evals")
            if b and math.isfinite(b[0]):
                budgets.add(b[0])
            for tr in agg["traces"]:
                pts = _trace_points(tr, with_sampling=True)
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    axes[0].plot(xs, np.maximum(ys, 1e-4), color=color, alpha=0.3, lw=0.8)
        for ax, metric in ((axes[0], "logZ/error"), (axes[1], "mmd2/rbf_median")):
            pts = sorted(
                (_spent(agg), agg["stats"][metric][0])
                for _, agg in runs
                if metric in agg["stats"] and math.isfinite(agg["stats"][metric][0])
            )
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ys = np.maximum(ys, 1e-4) if metric == "logZ/error" else np.asarray(ys)
            ax.plot(xs, ys, style, marker="o", color=color, lw=1.6, label=method)
            drawn = True
            if metric == "mmd2/rbf_median":
                f = next((a["stats"].get(f"{metric}/noise_floor") for _, a in runs), None)
                floor = f[0] if f else floor
    if not drawn:
        plt.close(fig)
        return False
    for ax in axes:
        for b in sorted(budgets):
            ax.axvline(b, ls=":", color="grey", lw=0.8)
        _widen_single_x(ax)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="energy + gradient evaluations spent (training + sampling)",
        ylabel="|log Ẑ − log Z| (mean over seeds)",
        title=f"{target}: log-Z error at equal budgets",
    )
    axes[1].set_xscale("log")
    axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[1].set(
        xlabel="energy + gradient evaluations spent (training + sampling)",
        ylabel="MMD² (median bw; symlog, unbiased so may be < 0)",
        title=f"{target}: MMD² at equal budgets",
    )
    if floor is not None and math.isfinite(floor):
        axes[1].axhline(floor, ls="-.", color="grey", label="noise floor")
    _published_line(axes[0], target)
    note = "solid: learned samplers; dashed: MCMC/SMC/AIS; dotted verticals: budgets"
    fig.text(0.01, 0.01, note, fontsize=7)
    _outside_legend(fig, axes, rect=(0, 0.03, 1, 1))
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return True


def _reference(target_name: str, n: int) -> np.ndarray | None:
    import jax

    import targets

    t = targets.get(target_name)
    try:
        if t.exact_samples:
            return np.asarray(t.sample(jax.random.key(0), n))
        if t.reference is not None:
            return np.asarray(t.reference.load()[:n])
    except Exception:  # noqa: BLE001 - a figure without the reference is still useful
        return None
    return None


def _samples_figure(target: str, rows: list[tuple[str, dict]], path: Path) -> bool:
    data = [(m, _samples_of(a)) for m, a in sorted(rows)]
    data = [(m, x) for m, x in data if x is not None and x.shape[1] == 2]
    if not data:
        return False
    ref = _reference(target, 1000)
    panels = ([("reference", ref)] if ref is not None else []) + data
    plt = _plt()
    cols = min(5, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3 * nrows), squeeze=False)
    lim = np.quantile(np.abs(ref), 0.995) * 1.3 if ref is not None else None
    for ax, (name, x) in zip(axes.flat, panels, strict=False):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="k" if name == "reference" else "C0")
        ax.set_title(name, fontsize=9)
        if lim is not None:
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{target}: samples (first ok seed)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return True


def _energy_figure(target: str, rows: list[tuple[str, dict]], path: Path) -> bool:
    import jax
    import jax.numpy as jnp

    import targets

    t = targets.get(target)
    if t.particles is None:
        return False
    energy = jax.jit(jax.vmap(lambda x: -t.log_prob(x)))
    ref = _reference(target, 2000)
    data = [(m, _samples_of(a)) for m, a in sorted(rows)]
    data = [(m, x) for m, x in data if x is not None]
    if ref is None or not data:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    e_ref = np.asarray(energy(jnp.asarray(ref)))
    lo, hi = np.quantile(e_ref, 0.001), np.quantile(e_ref, 0.999)
    span = hi - lo
    bins = np.linspace(lo - 0.5 * span, hi + 0.5 * span, 80)
    ax.hist(e_ref, bins=bins, density=True, histtype="stepfilled", color="grey", alpha=0.4, label="reference")
    for m, x in data:
        e = np.asarray(energy(jnp.asarray(x)))
        ax.hist(np.clip(e, bins[0], bins[-1]), bins=bins, density=True, histtype="step", label=m)
    ax.set(
        xlabel="energy E(x) (values outside the range are piled at the edges)",
        ylabel="density",
        title=f"{target}: energy histograms",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def make_figures(suite: str, agg: dict[tuple, dict[str, Any]], out_dir: Path) -> list[str]:
    """Write every figure of one suite; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_target: dict[str, list[tuple[str, dict]]] = {}
    by_method: dict[str, dict[str, list[tuple[str, dict]]]] = {}
    for (s, target, method, budget), a in agg.items():
        if s == suite and a["status"]["ok"]:
            label = method if budget == "default" else f"{method} ({budget})"
            by_target.setdefault(target, []).append((label, a))
            by_method.setdefault(target, {}).setdefault(method, []).append((budget, a))
    written = []
    for target, rows in sorted(by_target.items()):
        budgeted = any("budget/max_evals" in a["stats"] for _, a in rows)
        figures = (
            ("budget", lambda t, _rows, p: _budget_figure(t, by_method[t], p))
            if budgeted
            else ("cost", _cost_figure),
            ("samples", _samples_figure),
            ("energy", _energy_figure),
        )
        for suffix, fn in figures:
            path = out_dir / f"{target}_{suffix}.png"
            if fn(target, rows, path):
                written.append(str(path))
    return written
