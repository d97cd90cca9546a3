"""`tiltbench doctor`: check every file of a runs directory before it is trusted.

Each `<runs>/<section>/**/*.json` must be a valid record (`records.read_record`: JSON, the schema)
of the section it sits in (`records.misfiled`). The report lists every other file with the reason;
with `quarantine=True` each is moved aside to `<name>.corrupt` (`records.quarantine`), so that no
reader sees it and a resumed grid runs its cell again. Samples files and moved-aside files are not
records and are not read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from benchmarks.grid.records import RecordError, section_records
from benchmarks.grid.records import quarantine as move_aside

__all__ = ["DoctorReport", "check_runs"]


class DoctorReport(NamedTuple):
    """What `check_runs` found.

    Attributes:
        runs: the directory checked.
        sections: section directory -> number of valid records.
        problems: the files that are not valid records of their section.
        moved: `(file, where it was moved)` with `quarantine=True`.
    """

    runs: str
    sections: dict[str, int]
    problems: list[RecordError]
    moved: list[tuple[str, str]]

    def lines(self) -> list[str]:
        """The report as printed by `tiltbench doctor`."""
        if not self.sections and not self.problems:
            return [f"{self.runs}: no records"]
        out = [f"{self.runs}: " + ", ".join(f"{s} {n} records" for s, n in self.sections.items())]
        moved = dict(self.moved)
        for err in self.problems:
            where = f" -> moved to {Path(moved[err.path]).name}" if err.path in moved else ""
            out.append(f"bad record: {err}{where}")
        if self.problems and not self.moved:
            out.append(
                f"{len(self.problems)} bad file(s): no report counts them; `tiltbench doctor --quarantine` "
                "moves them aside, and `tiltbench benchmark` re-runs their cells"
            )
        elif not self.problems:
            out.append("every record is valid")
        return out


def check_runs(runs_dir: str | os.PathLike, *, quarantine: bool = False) -> DoctorReport:
    """Validate every record under `runs_dir` (see the module docstring)."""
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise ValueError(f"--runs {str(runs)!r} is not a directory")
    problems: list[RecordError] = []
    sections = {}
    for section in sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.exists() else []:
        sections[section] = len(section_records(runs, section, on_bad=problems.append))
    moved = [(err.path, str(move_aside(err.path))) for err in problems] if quarantine else []
    return DoctorReport(str(runs), sections, problems, moved)
