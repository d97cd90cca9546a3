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

__all__ = ["COMMANDS", "import_plugins", "main"]

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


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register targets / methods / metrics (`--import MODULE`).

    The current directory is put first on `sys.path` (as `python -m` does), so a module next to the
    user's suite file is found. A module that cannot be imported raises a ValueError naming it.
    """
    import importlib
    import os

    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"--import {module}: cannot import it ({err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiltbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        add_arguments(command_parser)
        command_parser.add_argument(
            "--import",
            dest="imports",
            action="append",
            default=[],
            metavar="MODULE",
            help="import MODULE first (it registers your own targets / methods); repeatable",
        )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        import_plugins(args.imports)
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
        action="extend",
        default=None,
        metavar="KEY=VALUE",
        help="filter cells, e.g. --only method=pis,cmcd_lv target=gmm25 (keys: method target budget seed)",
    )
    p.add_argument("--force", action="store_true", help="re-run cells whose record exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard afterwards")
    _launcher_args(p)


def _launcher_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.launchers import LAUNCHERS

    g = p.add_argument_group("launcher (docs/cluster.md)")
    g.add_argument(
        "--launcher",
        default="local",
        choices=sorted(LAUNCHERS),
        help="local: in this process (default); submitit: a SLURM array job, one cell per task; "
        "submitit-local: the same through submitit's local executor (subprocesses here)",
    )
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--gpus-per-task", type=int, default=None, help="GPUs per task (one cell per task)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per task")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per task, GB")
    g.add_argument("--time-min", type=int, default=60, help="time limit of one task, minutes (default 60)")
    g.add_argument("--array-parallelism", type=int, default=None, help="at most this many tasks at once")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--qos", default=None, help="SLURM quality of service")
    g.add_argument(
        "--setup", action="append", default=[], metavar="LINE", help="shell line run before each task"
    )
    g.add_argument("--log-dir", default=".submitit", help="submitit's job folder (default .submitit)")
    g.add_argument(
        "--no-wait", action="store_true", help="submitit: return after submission (no leaderboard rebuild)"
    )


@command("benchmark", "run a suite (resumable) and rebuild the leaderboard", _run_args)
def _benchmark(args: argparse.Namespace) -> int:
    import time

    from benchmarks.launchers import SubmititOptions, launch
    from benchmarks.leaderboard import build_leaderboard
    from benchmarks.runner import parse_only, parse_shard
    from benchmarks.suites import load_suite

    suite = load_suite(args.suite)
    shard, only = parse_shard(args.shard), parse_only(args.only)
    options = None
    if args.launcher != "local":
        options = SubmititOptions(
            log_dir=args.log_dir,
            partition=args.partition,
            gpus_per_task=args.gpus_per_task,
            cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb,
            time_min=args.time_min,
            array_parallelism=args.array_parallelism,
            account=args.account,
            qos=args.qos,
            setup=tuple(args.setup),
            wait=not args.no_wait,
            imports=tuple(getattr(args, "imports", ()) or ()),
        )
    t0 = time.perf_counter()
    records = launch(
        args.launcher,
        suite,
        args.out,
        shard=shard,
        only=only,
        force=args.force,
        progress=not args.no_progress,
        options=options,
    )
    if options is not None and not options.wait:
        return 0
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


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="directories of records (shards, other machines)")
    p.add_argument("--out", default="results/runs", help="runs root the records go to, as <out>/<suite>/...")
    p.add_argument("--results", default="results", help="leaderboard and figures directory (default results)")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="pool records of different commits in one suite section (default: one section per commit)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace records already at the destination")
    p.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard afterwards")
    p.add_argument("--no-figures", action="store_true")


@command(
    "merge",
    "merge records from several machines or shards, check their commits, rebuild the leaderboard",
    _merge_args,
)
def _merge(args: argparse.Namespace) -> int:
    from benchmarks.leaderboard import build_leaderboard
    from benchmarks.merge import merge_records

    summary = merge_records(args.dirs, args.out, allow_mixed=args.allow_mixed, overwrite=args.overwrite)
    if not args.no_leaderboard:
        board = build_leaderboard(args.out, args.results, figures=not args.no_figures)
        print(f"leaderboard: {board['markdown']} and {board['csv']} (sections: {', '.join(board['suites'])})")
    return 1 if not (summary.copied or summary.skipped) else 0


def _perf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/perf", help="output directory (default results/perf)")
    p.add_argument("--report", default="results/perf.md", help="Markdown report (default results/perf.md)")
    p.add_argument(
        "--repeats", type=int, default=7, help="--integrator, --before-after: timed side-by-side repeats"
    )
    p.add_argument(
        "--integrator", action="store_true", help="only the diffrax-vs-lax.scan integrator comparison"
    )
    p.add_argument(
        "--before-after",
        action="store_true",
        help="only the before/after ratios of the speed optimisations (results/perf/before_after.md)",
    )
    p.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiply every time budget: sections and each learned cell's training (default 1)",
    )


@command(
    "perf",
    "performance report: throughput, compile/recompilation, FLOP/s, harness overhead, cost to accuracy",
    _perf_args,
)
def _perf(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.before_after:
        from benchmarks.perf.before_after import run_before_after

        print(f"wrote {run_before_after(Path(args.out), repeats=args.repeats)}")
        return 0
    if not args.integrator:

        from benchmarks.perf.report import PerfConfig, run_perf, write_report

        config = PerfConfig().scaled(args.budget_scale)
        record = run_perf(config)
        write_report(record, Path(args.out) / "perf.json", Path(args.report))
        print(f"wrote {args.report} and {Path(args.out) / 'perf.json'} ({record['wall_s']:.0f} s)")
        return 0
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


def _digits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digit", type=int, default=3, help="the rewarded class c (default 3)")
    p.add_argument("--lams", default=None, help="comma-separated reward multipliers (default 1,3,10)")
    p.add_argument("--methods", default=None, help="comma-separated method names")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per (method, λ)")
    p.add_argument("--num-samples", type=int, default=None, help="evaluation samples per cell")
    p.add_argument("--num-steps", type=int, default=None, help="Euler–Maruyama steps of the flow SDE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/finetune", help="output directory (default results/finetune)")
    p.add_argument("--retrain", action="store_true", help="retrain the flow model and the classifier first")
    p.add_argument("--quick", action="store_true", help="a tiny smoke configuration (not for reading)")


@command(
    "digits",
    "fine-tune the suite's 8x8-digits flow model towards one class (results/finetune/digits.*)",
    _digits_args,
)
def _digits(args: argparse.Namespace) -> int:
    from benchmarks.digits import run_from_args

    return run_from_args(args)
