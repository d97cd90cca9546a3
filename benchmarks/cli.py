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
        lines.append(
            f"| `{r['name']}` | {r['dim']} | {_fmt_logz(r)} | {r['log_Z_source']} | {', '.join(r['capabilities'])} |"
        )
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
