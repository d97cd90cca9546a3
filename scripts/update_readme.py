"""Regenerate the registry tables of README.md (targets, methods, metrics, suites) from the code.

Usage: `.venv/bin/python scripts/update_readme.py` (or `--check` to fail when the README is stale;
`tests/benchmarks/test_readme.py` runs the check, so the tables can never drift from the code).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _tables() -> dict[str, str]:
    from benchmarks.reports.tables import methods_table, metrics_table, suites_table, targets_table

    return {
        "targets": targets_table(),
        "methods": methods_table(),
        "metrics": metrics_table(),
        "suites": suites_table(),
    }


def render(text: str) -> str:
    """`text` with every `<!-- NAME:start -->...<!-- NAME:end -->` block replaced by the live table."""
    for name, table in _tables().items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> / <!-- {name}:end --> markers")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date")
    args = parser.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md registry tables are stale: run scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
