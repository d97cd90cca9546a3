"""The `tiltbench` command line (also `python -m benchmarks`).

Subcommands are registered in `COMMANDS` (name -> (help, add_arguments, run)); each `run` returns
an exit code. Bad input (unknown target / method / suite, bad values) exits with code 2 and a
message that names the valid choices.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

from benchmarks.grid.plugins import import_plugins

__all__ = ["COMMANDS", "main"]

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: decorate `run(args) -> int`; `arguments` adds its options."""

    def _add(run):
        COMMANDS[name] = (help, arguments or (lambda p: None), run)
        return run

    return _add


def _json_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")


def _registry_listing(table: str) -> Callable[[argparse.Namespace], int]:
    """`run` of a listing command: print `benchmarks.reports.tables.<table>` (JSON with `--json`)."""

    def run(args: argparse.Namespace) -> int:
        from benchmarks.reports import tables

        print(getattr(tables, table)(markdown=not args.json))
        return 0

    return run


command("targets", "list the target registry with dim, log Z and capabilities", _json_args)(
    _registry_listing("targets_table")
)
command("methods", "list the method registry with family, supported bases and cost model", _json_args)(
    _registry_listing("methods_table")
)


def _shard_values_joined(argv: list[str]) -> list[str]:
    """`--shard -1/2` as `--shard=-1/2`: argparse would read "-1/2" as an option and fail before
    the shard parser can say what a shard must be."""
    out: list[str] = []
    it = iter(argv)
    for item in it:
        if item == "--shard":
            value = next(it, None)
            out.append(item if value is None else f"--shard={value}")
        else:
            out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Exit codes: 0 done, 1 a failure the command reports (unwritable output,
    merge found nothing, doctor found bad records), 2 bad input, 130 interrupted (Ctrl-C)."""
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
    args = parser.parse_args(_shard_values_joined(list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        import_plugins(args.imports)
        return COMMANDS[args.command][2](args)
    except (KeyError, ValueError) as err:  # unknown names / bad values: clear message, exit 2
        print(f"tiltbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tiltbench methods | head`: the reader left; nothing to report
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout again at exit)
        return 141
    except OSError as err:  # unwritable output, full disk: one line naming the path
        where = f"{err.filename}: " if err.filename else ""
        print(f"tiltbench {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"\ntiltbench {args.command}: {_interrupted_message(err)}", file=sys.stderr)
        return 130


def _interrupted_message(err: KeyboardInterrupt) -> str:
    """One line; a grid's interrupt (`runner.GridInterrupted`, not imported here: it loads JAX)
    says how many cells are saved and where."""
    if type(err).__name__ == "GridInterrupted":
        return (
            f"interrupted: {err.saved} cells saved under {err.directory} ({err.written} written by this "
            "run); run the same command to resume"
        )
    return "interrupted"


@command("metrics", "list the metric registry with requirements and definitions")
def _metrics(args: argparse.Namespace) -> int:
    from benchmarks.reports.tables import metrics_table

    print(metrics_table())
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.grid.records import RETRY
    from benchmarks.grid.suites import suite_names

    p.add_argument(
        "--suite",
        default="quick",
        help=f"a shipped suite ({', '.join(suite_names())}) or a path to a suite .json (default quick)",
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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting for this run: problem.<field>=V (e.g. problem.sigma=6), method.<field>=V "
        "(every method that has the field; sub-config fields dotted: method.optim.learning_rate=3e-3) or "
        "methods.<method>.<field>=V; V is JSON or a string. The records go to the suite <name>+set-<hash>",
    )
    p.add_argument(
        "--force", action="store_true", help="re-run every selected cell, even those with a valid record"
    )
    p.add_argument(
        "--retry",
        action="append",
        default=[],
        choices=sorted(RETRY),
        help="failed: re-run the cells recorded as error or diverged (kept by default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="run nothing: list the cells still to run and their projected wall time, from the rates "
        "measured by the records under --out",
    )
    p.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard afterwards")
    _launcher_args(p)


def _launcher_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.grid.launchers import LAUNCHERS

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


def _stamp_run(doing: str) -> None:
    """Fix the commit stamp of this run's records now, and say on stderr if it is `-dirty` (and why).

    The stamp (`records.git_commit`, cached) is taken before the run writes anything: a search writes
    each pair's tuning file, untracked until committed, and the later pairs of the same command must
    still carry the tree's state at its start."""
    from benchmarks.grid.records import REPO_ROOT, git_commit, uncommitted_code

    git_commit()
    try:
        paths = uncommitted_code(REPO_ROOT)
    except (OSError, subprocess.CalledProcessError):
        return
    if paths:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        print(
            f"warning: {doing} from a tree with uncommitted code or configuration ({shown}): its records "
            "are stamped <commit>-dirty and cannot be reproduced from a commit; commit them first",
            file=sys.stderr,
        )


@command("benchmark", "run a suite (resumable) and rebuild the leaderboard", _run_args)
def _benchmark(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from benchmarks.grid.launchers import SubmititOptions, launch
    from benchmarks.grid.records import RETRY, ensure_writable
    from benchmarks.grid.runner import parse_only, parse_shard
    from benchmarks.grid.suites import load_suite, parse_set, with_settings
    from benchmarks.reports.leaderboard import build_leaderboard

    suite = load_suite(args.suite)
    if args.set:
        suite = with_settings(suite, parse_set(args.set))
        print(f"--set: suite {args.suite!r} with settings {suite.settings}; records under {suite.name!r}")
    shard, only = parse_shard(args.shard), parse_only(args.only)
    retry = frozenset().union(*(RETRY[r] for r in args.retry))
    if args.estimate:
        from benchmarks.grid.estimate import estimate_suite
        from benchmarks.grid.runner import select_cells

        cells = select_cells(suite, shard=shard, only=only)
        estimate = estimate_suite(suite, cells, args.out, force=args.force, retry=retry)
        print("\n".join(estimate.lines()))
        return 0
    options = None
    if args.launcher != "local":
        options = SubmititOptions.from_cli(args)
    _stamp_run(f"suite {suite.name!r} runs")
    ensure_writable(Path(args.out) / suite.name)
    if not args.no_leaderboard:
        ensure_writable(args.results)
    t0 = time.perf_counter()
    records = launch(
        args.launcher,
        suite,
        args.out,
        shard=shard,
        only=only,
        force=args.force,
        retry=retry,
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
    if args.no_leaderboard:
        return 0
    if not records:
        print(f"no cell ran: {args.results}/leaderboard.md left as it is")
        return 0
    summary = build_leaderboard(args.out, args.results, figures={suite.name})
    print(
        f"leaderboard: {summary['markdown']} and {summary['csv']} "
        f"(sections: {', '.join(summary['suites'])}); figures under {args.results}/figures/{suite.name}/"
    )
    return 0


def _leaderboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="results/runs", help="directory of the per-cell records")
    p.add_argument("--out", default="results", help="output directory (leaderboard.md/.csv, figures/)")
    p.add_argument(
        "--suite",
        default=None,
        help="redraw only this suite's figures (the tables always cover every suite under --runs)",
    )
    p.add_argument("--no-figures", action="store_true")


@command(
    "leaderboard",
    "rebuild results/leaderboard.md, .csv and figures from the records of every suite",
    _leaderboard_args,
)
def _leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.reports.leaderboard import build_leaderboard

    figures = False if args.no_figures else ({args.suite} if args.suite else True)
    summary = build_leaderboard(args.runs, args.out, figures=figures)
    counts = ", ".join(f"{k}: {v['records']} records" for k, v in summary["suites"].items()) or "no records"
    print(f"leaderboard: {summary['markdown']} and {summary['csv']} ({counts})")
    if summary["skipped"]:
        print(f"{len(summary['skipped'])} file(s) skipped; `tiltbench doctor --runs {args.runs}` lists them")
    return 0


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="results/runs", help="directory of the per-cell records")
    p.add_argument(
        "--quarantine",
        action="store_true",
        help="move each bad record aside to <name>.corrupt (its cell then runs again on resume)",
    )


@command(
    "doctor",
    "check every record under --runs: list the corrupt or foreign ones (exit 1 if any)",
    _doctor_args,
)
def _doctor(args: argparse.Namespace) -> int:
    from benchmarks.grid.doctor import check_runs

    report = check_runs(args.runs, quarantine=args.quarantine)
    for line in report.lines():
        print(line)
    return 1 if report.problems else 0


@command("devices", "print the devices JAX sees, the backend, the data-parallel split and versions")
def _devices(args: argparse.Namespace) -> int:
    import jax

    from benchmarks.grid.records import environment
    from samplers import parallel

    env = environment()
    print(f"backend: {env['backend']} ({env['num_devices']} device(s), {env['device_kind']})")
    for device in env["devices"]:
        print(f"  {device}")
    mesh = parallel.default_mesh()
    split = "off (one device)" if mesh is None else f"over {mesh.size} devices"
    print(f"data-parallel batches: {split} (TILTBENCH_DATA_PARALLEL=0 switches it off)")
    print(f"host: {env['cpu']}, {env['cpu_count']} CPU cores; python {env['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    plugins = _installed_plugins()
    if env["backend"] == "cpu" and plugins:
        print(
            f"note: {', '.join(plugins)} installed but JAX runs on the CPU: check the driver and "
            f"JAX_PLATFORMS (now {jax.config.jax_platforms or 'unset'})"
        )
    return 0


def _installed_plugins() -> list[str]:
    """Accelerator plugins of jax installed in this environment (`make install ACCEL=...`)."""
    from importlib import metadata

    names = {d.metadata["Name"] for d in metadata.distributions()}
    return [n for n in ("jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu") if n in names]


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", action="append", help="method to tune (repeatable)")
    p.add_argument("--target", action="append", help="target to tune on (repeatable)")
    p.add_argument(
        "--suite",
        help="tune every (method, target) of this suite that has a search (filtered by --method/--target); "
        "pairs whose tuning file already holds this search are skipped unless --force, and a file that "
        "holds it but not its declared extension runs only the extension's trials; each trial stops "
        "training before the pair's evaluation budget in the suite",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="search again from the start where a tuning file or a killed search's finished trials exist "
        "(by default they are kept and only what is missing runs)",
    )
    p.add_argument("--steps", type=int, default=200, help="training steps per trial (default 200)")
    p.add_argument("--trials", type=int, default=6, help="at most this many trials (default 6)")
    p.add_argument("--num-eval", type=int, default=2048, help="fresh samples scoring a trial (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory of the tuning files (default: the shipped one)")


@command(
    "tune",
    "ground-truth-free search per method and target (ELBO on fresh samples), written to a tuning file",
    _tune_args,
)
def _tune(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import samplers
    import targets
    from benchmarks.grid.suites import load_suite
    from benchmarks.grid.tune import (
        TUNED_DIR,
        TuneSettings,
        edge_keys,
        pair_budgets,
        suite_pairs,
        tune,
        tuned_done,
    )

    for m in args.method or []:
        samplers.get(m)  # unknown names: exit 2 with the valid ones
    for t in args.target or []:
        targets.get(t)
    settings = TuneSettings(args.steps, args.num_eval, args.trials, args.seed)
    out = args.out or TUNED_DIR
    caps: dict[tuple[str, str], float | None] = {}

    def pair_settings(m: str, t: str) -> TuneSettings:  # a suite's pair: trials capped at its budget
        return dataclasses.replace(settings, max_evals=caps.get((m, t)))

    if args.suite:
        suite = load_suite(args.suite)
        pairs, skipped = suite_pairs(suite)
        caps = pair_budgets(suite)
        pairs = [
            (m, t)
            for m, t in pairs
            if (not args.method or m in args.method) and (not args.target or t in args.target)
        ]
        for m, why in skipped.items():
            print(f"{m}: not tuned ({why})")
        todo = [(m, t) for m, t in pairs if args.force or not tuned_done(m, t, pair_settings(m, t), out)]
        done = len(pairs) - len(todo)
        print(f"suite {args.suite}: {len(pairs)} pairs to tune, {done} done, {len(todo)} to run")
    elif args.method and args.target:
        todo = [(m, t) for m in args.method for t in args.target]
    else:
        raise SystemExit("tiltbench tune: give --suite, or both --method and --target")
    if todo:
        _stamp_run("the search runs")
    failed = 0
    for i, (m, t) in enumerate(todo):
        start = time.perf_counter()
        try:
            rec = tune(m, t, pair_settings(m, t), out_dir=out, resume=not args.force)
        except ValueError as err:  # e.g. the method does not apply to the target: say so, go on
            print(f"[{i + 1}/{len(todo)}] {m} on {t}: not tuned ({err})")
            failed += 1
            continue
        failed += rec["status"] != "ok"
        extended = sum(bool(tr.get("extension")) for tr in rec["trials"])
        edge = edge_keys(rec)
        print(
            f"[{i + 1}/{len(todo)}] {m} on {t}: {rec['status']}, chosen {rec['chosen']} "
            f"({len(rec['trials'])} trials, {extended} of them extending the space, "
            f"{rec['tuning_evals']:.3g} evaluations, {time.perf_counter() - start:.0f} s)"
            + (f"; still on the edge of the values tried: {', '.join(edge)}" if edge else "")
        )
    if todo and os.path.abspath(out) == os.path.abspath(TUNED_DIR):
        print(
            f"commit the tuning files under {out}/ before running cells with them: until then a record is "
            "stamped <commit>-dirty"
        )
    return 1 if failed else 0


def _step_caps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, help="a shipped suite or a path to a suite .json")
    p.add_argument(
        "--out", default="results/runs", help="records whose rates convert the caps (default results/runs)"
    )
    p.add_argument("--write", action="store_true", help="store the new step caps in the suite file")
    p.add_argument(
        "--redo",
        action="store_true",
        help="recompute the caps the suite file already has (default: kept), and convert pairs whose "
        "records ran under the wall cap (their cells then run again)",
    )


@command(
    "step-caps",
    "convert a suite's wall caps into per-(method, target) step caps at measured rates",
    _step_caps_args,
)
def _step_caps(args: argparse.Namespace) -> int:
    import time

    import jax

    from benchmarks.grid.records import environment
    from benchmarks.grid.step_caps import derivation_commit, derive_step_caps, step_cap_lines, write_step_caps
    from benchmarks.grid.suites import load_suite, suite_file

    suite = load_suite(args.suite)
    backend = jax.default_backend()
    caps = derive_step_caps(suite, args.out, backend=backend, redo=args.redo)
    print("\n".join(step_cap_lines(caps)))
    if not caps:
        print(f"suite {suite.name!r} has no learned pair with a wall cap (max_train_s): nothing to convert")
        return 0
    if not args.write:
        print("run again with --write to store the new caps in the suite file")
        return 0
    path = suite_file(suite)
    commit, uncommitted = derivation_commit(path)
    if uncommitted:
        more = len(uncommitted) - 5
        shown = ", ".join(uncommitted[:5]) + (f" and {more} more" if more > 0 else "")
        print(
            f"tiltbench step-caps: not written: uncommitted code ({shown}); commit it first, so that the "
            f"derivation note in {path} names the code the caps were derived at",
            file=sys.stderr,
        )
        return 1
    env = environment()
    provenance = (
        f"{time.strftime('%Y-%m-%d')}, commit {commit}: the wall caps at the median seconds per "
        f"step of the {backend} records under {args.out} (else the timed tuning trials) on {env.get('cpu')} "
        f"({env.get('cpu_count')} cores)"
    )
    added = write_step_caps(path, caps, provenance)
    print(f"{added} step caps written to {path}" if added else f"no new step cap: {path} left as it is")
    return 0


def _robustness_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="an earlier record set to show beside the judged one (repeatable, in column order)",
    )
    p.add_argument(
        "--runs", default="results/runs/robustness", help="the judged records (default: robustness)"
    )
    p.add_argument("--label", default="robustness (tuned)", help="column label of the judged records")
    p.add_argument("--threshold", type=float, default=0.2, help="|log Z error| of the tally (default 0.2)")
    p.add_argument("--out", default="results/robustness", help="writes report.md and report.json here")


@command(
    "robustness-report",
    "per learned method and target: diverged counts, |log Z error| and ESS, beside earlier record sets",
    _robustness_args,
)
def _robustness_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.grid.records import atomic_write_json, atomic_write_text
    from benchmarks.reports.robustness import robustness_report

    sets = []
    for item in args.compare:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"tiltbench robustness-report: --compare takes LABEL=DIR, got {item!r}")
        if not Path(path).is_dir():
            raise SystemExit(f"tiltbench robustness-report: {path} is not a directory of records")
        sets.append((label, path))
    sets.append((args.label, args.runs))
    try:
        markdown, summary = robustness_report(sets, threshold=args.threshold)
    except ValueError as err:
        raise SystemExit(f"tiltbench robustness-report: {err}") from None
    out = Path(args.out)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_json(out / "report.json", summary)
    print(f"robustness report: {out / 'report.md'}")
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
    from benchmarks.grid.merge import merge_records
    from benchmarks.grid.records import ensure_writable
    from benchmarks.reports.leaderboard import build_leaderboard

    ensure_writable(args.out)
    if not args.no_leaderboard:
        ensure_writable(args.results)
    summary = merge_records(args.dirs, args.out, allow_mixed=args.allow_mixed, overwrite=args.overwrite)
    if not (summary.copied or summary.skipped):
        return 1
    if not args.no_leaderboard:
        board = build_leaderboard(
            args.out, args.results, figures=set() if args.no_figures else set(summary.copied)
        )
        print(f"leaderboard: {board['markdown']} and {board['csv']} (sections: {', '.join(board['suites'])})")
    return 0


def _perf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/perf", help="output directory (default results/perf)")
    p.add_argument("--report", default="results/perf.md", help="Markdown report (default results/perf.md)")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="--integrator, --before-after, --particle-metrics: timed side-by-side repeats (default 7, 3)",
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
        "--particle-metrics",
        action="store_true",
        help="only eq_w2's two distance-matrix engines side by side (results/perf/particle_metrics.md)",
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

    if args.particle_metrics:
        from benchmarks.perf.particle_metrics import run_particle_metrics

        print(f"wrote {run_particle_metrics(Path(args.out), repeats=args.repeats or 3)}")
        return 0
    repeats = 7 if args.repeats is None else args.repeats
    if args.before_after:
        from benchmarks.perf.before_after import run_before_after

        print(f"wrote {run_before_after(Path(args.out), repeats=repeats)}")
        return 0
    if not args.integrator:
        from benchmarks.perf.report import PerfConfig, run_perf, write_report

        config = PerfConfig().scaled(args.budget_scale)
        record = run_perf(config)
        write_report(record, Path(args.out) / "perf.json", Path(args.report))
        print(f"wrote {args.report} and {Path(args.out) / 'perf.json'} ({record['wall_s']:.0f} s)")
        return 0
    from benchmarks.perf.integrator import integrator_report

    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    files = integrator_report(Path(args.out), repeats=repeats)
    print(f"wrote {files['markdown']} and {files['record']}")
    return 0


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("claims", nargs="*", help="claims to run: grad_variance, lean_adjoint (default: all)")
    p.add_argument("--out", default="results/claims", help="output directory (default results/claims)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster configuration")


@command(
    "claims", "measure the framework's claims: gradient variance per loss, lean-adjoint norms", _claims_args
)
def _claims(args: argparse.Namespace) -> int:
    from benchmarks.experiments.claims import run_claims

    records = run_claims(args.claims or None, args.out, quick=args.quick)
    for name, record in records.items():
        print(f"{name}: wrote {', '.join(record['files'].values())} in {record['wall_time_s']:.0f} s")
    return 0


def _digits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digit", type=int, default=3, help="the rewarded class c (default 3)")
    p.add_argument(
        "--lams",
        default=None,
        help="comma-separated reward multipliers, every method at each (default: reference rows at "
        "1,3,10, every method at 3 only)",
    )
    p.add_argument(
        "--methods", default=None, help="comma-separated method names (default: every flow-capable loss)"
    )
    p.add_argument("--train-steps", type=int, default=None, help="training steps per (method, λ)")
    p.add_argument("--num-samples", type=int, default=None, help="evaluation samples per cell")
    p.add_argument("--num-steps", type=int, default=None, help="Euler–Maruyama steps of the flow SDE")
    p.add_argument(
        "--seeds", default=None, help="comma-separated seeds, one run per cell each (default 0,1,2)"
    )
    p.add_argument("--seed", type=int, default=None, help="a single seed (same as --seeds N)")
    p.add_argument("--out", default="results/finetune", help="output directory (default results/finetune)")
    p.add_argument("--retrain", action="store_true", help="retrain the flow model and the classifier first")
    p.add_argument("--quick", action="store_true", help="a tiny smoke configuration (not for reading)")


@command(
    "digits",
    "fine-tune the suite's 8x8-digits flow model towards one class (results/finetune/digits.*)",
    _digits_args,
)
def _digits(args: argparse.Namespace) -> int:
    from benchmarks.experiments.digits import run_from_args

    return run_from_args(args)
