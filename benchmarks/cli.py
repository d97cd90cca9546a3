"""The `tiltbench` command line (also `python -m benchmarks`).

Subcommands are registered in `COMMANDS` (name -> (help, add_arguments, run)); each `run` returns
an exit code. Bad input (unknown target / method / suite, bad values) exits with code 2 and a
message that names the valid choices.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

__all__ = ["COMMANDS", "main"]

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: decorate `run(args) -> int`; `arguments` adds its options."""

    def _add(run):
        COMMANDS[name] = (help, arguments or (lambda p: None), run)
        return run

    return _add


def _fmt_logz(row: dict) -> str:
    if row["log_Z"] is None:
        return "unknown"
    if row["log_Z_se"]:
        return f"{row['log_Z']:.4f} ± {row['log_Z_se']:.2g}"
    return f"{row['log_Z']:.7g}"


def targets_table(markdown: bool = True) -> str:
    """The registry as a table (used by `tiltbench targets` and to generate the README)."""
    import targets

    rows = [targets.get(n).summary() for n in targets.names()]
    if not markdown:
        return json.dumps(rows, indent=2)
    lines = ["| name | dim | log Z | log Z source | capabilities |", "|---|---|---|---|---|"]
    for r in rows:
        caps = ", ".join(r["capabilities"])
        lines.append(f"| `{r['name']}` | {r['dim']} | {_fmt_logz(r)} | {r['log_Z_source']} | {caps} |")
    return "\n".join(lines)


def _targets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")


@command("targets", "list the target registry with dim, log Z and capabilities", _targets_args)
def _targets(args: argparse.Namespace) -> int:
    print(targets_table(markdown=not args.json))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiltbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args)
    except (KeyError, ValueError) as err:  # unknown names / bad values: clear message, exit 2
        print(f"tiltbench {args.command}: error: {err}", file=sys.stderr)
        return 2


def _methods_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")


def methods_table(markdown: bool = True) -> str:
    """The method registry as a table (family, supported bases, weights, cost model)."""
    import samplers

    rows = []
    for name in samplers.names():
        spec = samplers.get(name)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "bases": list(spec.bases),
                "weighted": spec.weighted,
                "cost_model": spec.cost_model,
            }
        )
    if not markdown:
        return json.dumps(rows, indent=2)
    lines = ["| name | family | bases | weighted | cost model |", "|---|---|---|---|---|"]
    for r in rows:
        weighted = "yes" if r["weighted"] else "no"
        lines.append(
            f"| `{r['name']}` | {r['family']} | {', '.join(r['bases'])} | {weighted} | {r['cost_model']} |"
        )
    return "\n".join(lines)


def metrics_table() -> str:
    """The metric registry: name, requirements and the one-line definition."""
    from benchmarks.metrics import METRICS

    lines = ["| metric | needs | definition |", "|---|---|---|"]
    for name in METRICS.names():
        meta = METRICS.meta(name)
        needs = ", ".join(meta.get("requires", ())) or "—"
        lines.append(f"| `{name}` | {needs} | {meta.get('description', '')} |")
    return "\n".join(lines)


@command("methods", "list the method registry with family, supported bases and cost model", _methods_args)
def _methods(args: argparse.Namespace) -> int:
    print(methods_table(markdown=not args.json))
    return 0


@command("metrics", "list the metric registry with requirements and definitions")
def _metrics(args: argparse.Namespace) -> int:
    print(metrics_table())
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite", default="quick", help="suite name (quick, default, full) or a path to a suite .json"
    )
    p.add_argument(
        "--out", default="results/runs", help="directory of the per-cell records (default results/runs)"
    )
    p.add_argument(
        "--results", default="results", help="where the leaderboard and figures go (default results)"
    )
    p.add_argument("--shard", default=None, help="run the i-th of n slices of the grid, as i/n (e.g. 0/4)")
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="KEY=VALUE",
        help="filter cells, e.g. --only method=pis,cmcd_lv target=gmm25 (keys: method target budget seed)",
    )
    p.add_argument("--force", action="store_true", help="re-run cells whose record exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard afterwards")


@command("benchmark", "run a suite (resumable) and rebuild the leaderboard", _run_args)
def _benchmark(args: argparse.Namespace) -> int:
    import time

    from benchmarks.leaderboard import build_leaderboard
    from benchmarks.runner import parse_only, parse_shard, run_suite
    from benchmarks.suites import load_suite

    suite = load_suite(args.suite)
    shard, only = parse_shard(args.shard), parse_only(args.only)
    t0 = time.perf_counter()
    records = run_suite(
        suite, args.out, shard=shard, only=only, force=args.force, progress=not args.no_progress
    )
    counts = {
        s: sum(r["status"] == s for r in records) for s in ("ok", "diverged", "error", "not_applicable")
    }
    print(
        f"ran {len(records)} cells in {time.perf_counter() - t0:.0f} s: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    if not args.no_leaderboard:
        summary = build_leaderboard(args.out, args.results, suite=suite.name)
        print(
            f"leaderboard: {summary['markdown']} and {summary['csv']}; figures under {args.results}/figures/"
            f"{suite.name}/"
        )
    return 0


def _leaderboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="results/runs", help="directory of the per-cell records")
    p.add_argument("--out", default="results", help="output directory (leaderboard.md/.csv, figures/)")
    p.add_argument("--suite", default=None, help="only this suite (default: every suite found)")
    p.add_argument("--no-figures", action="store_true")


@command(
    "leaderboard", "rebuild results/leaderboard.md, .csv and figures from the records", _leaderboard_args
)
def _leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.leaderboard import build_leaderboard

    summary = build_leaderboard(args.runs, args.out, suite=args.suite, figures=not args.no_figures)
    counts = ", ".join(f"{k}: {v['records']} records" for k, v in summary["suites"].items()) or "no records"
    print(f"leaderboard: {summary['markdown']} and {summary['csv']} ({counts})")
    return 0


def _perf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/perf", help="output directory (default results/perf)")
    p.add_argument("--repeats", type=int, default=7, help="timed side-by-side repeats per configuration")


@command("perf", "performance benchmarks (so far: diffrax integrator vs a hand-written lax.scan)", _perf_args)
def _perf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.perf_integrator import benchmark
    from benchmarks.records import atomic_write_json, environment, git_commit

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    config = {
        "dims": [2, 10, 32],
        "batch_size": 512,
        "num_steps": 100,
        "repeats": args.repeats,
        "seed": 0,
        "network": "3x128 MLP control",
    }
    results = benchmark(dims=config["dims"], batch_size=512, num_steps=100, repeats=args.repeats, seed=0)
    out = Path(args.out)
    record = {
        "benchmark": "integrator",
        "config": config,
        "commit": git_commit(),
        "hardware": environment(),
        "results": {str(k): v for k, v in results.items()},
    }
    atomic_write_json(out / "integrator.json", record)
    lines = [
        "# diffrax integrator vs hand-written lax.scan (same Euler–Maruyama maths, same noise)",
        "",
        f"Generated by `make perf` at commit `{record['commit']}` on {environment()['cpu']} "
        f"({environment()['backend']}). Batch 512, 100 steps, 3x128 MLP control; ratio = median over "
        f"{args.repeats} interleaved side-by-side pairs of t_scan / t_diffrax (>= 1: diffrax no slower).",
        "",
        "| dim | diffrax ms | scan ms | ratio scan/diffrax | compile diffrax s | compile scan s |",
        "|---|---|---|---|---|---|",
    ]
    for dim, r in results.items():
        lines.append(
            f"| {dim} | {1e3 * r['diffrax_s']:.2f} | {1e3 * r['scan_s']:.2f} | {r['ratio']:.3f} | "
            f"{r['compile_diffrax_s']:.1f} | {r['compile_scan_s']:.1f} |"
        )
    (out / "integrator.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'integrator.md'} and {out / 'integrator.json'}")
    return 0


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("claims", nargs="*", help="claims to run: grad_variance, lean_adjoint (default: all)")
    p.add_argument("--out", default="results/claims", help="output directory (default results/claims)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster configuration")


@command(
    "claims", "measure the framework's claims: gradient variance per loss, lean-adjoint norms", _claims_args
)
def _claims(args: argparse.Namespace) -> int:
    from benchmarks.claims import run_claims

    records = run_claims(args.claims or None, args.out, quick=args.quick)
    for name, record in records.items():
        print(f"{name}: wrote {', '.join(record['files'].values())} in {record['wall_time_s']:.0f} s")
    return 0
