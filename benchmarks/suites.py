"""Benchmark suites: small checked-in JSON files that expand into a grid of cells.

A suite names methods, targets, seeds and one or more budgets; the grid is their product minus
the listed exclusions. A cell is `(method, target, budget, seed)`; its record lives at
`<out>/<suite>/<method>/<target>/<budget>/seed<seed>.json`.

Suite file schema (all keys required unless marked optional):

    name          str
    description   str
    methods       list of method names, or "all"
    targets       list of target names
    seeds         list of ints
    budgets       {budget_name: {train_steps: int, chunk_size: int,
                                 max_evals: float | null  (optional: cap on energy + gradient
                                 evaluations spent in training; the equal-budget axis)}}
    eval          {num_samples: int}  (samples drawn for every metric; also the reference size)
    exclude       (optional) list of [method, target] pairs
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Budget", "Cell", "Suite", "load_suite", "suite_names"]

_SUITE_KEYS = {"name", "description", "methods", "targets", "seeds", "budgets", "eval", "exclude"}
_BUDGET_KEYS = {"train_steps", "chunk_size", "max_evals"}
_EVAL_KEYS = {"num_samples"}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training budget of a cell.

    Attributes:
        name: id used in paths and tables.
        train_steps: maximum number of optimiser (or adaptation) steps.
        chunk_size: steps per jitted chunk; metrics are traced between chunks.
        max_evals: optional cap on energy + gradient evaluations spent in training; training
            stops at the first chunk boundary where it is reached.
    """

    name: str
    train_steps: int
    chunk_size: int
    max_evals: float | None = None


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    method: str
    target: str
    budget: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method}/{self.target}/{self.budget}/seed{self.seed}"

    def path(self, out_dir: str | Path, suite: str) -> Path:
        return Path(out_dir) / suite / self.method / self.target / self.budget / f"seed{self.seed}.json"


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    methods: tuple[str, ...]
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[Budget, ...]
    num_samples: int
    exclude: frozenset[tuple[str, str]] = frozenset()
    source: str = ""

    def budget(self, name: str) -> Budget:
        for b in self.budgets:
            if b.name == name:
                return b
        raise ValueError(
            f"suite {self.name!r} has no budget {name!r}; budgets: {[b.name for b in self.budgets]}"
        )

    def cells(self) -> list[Cell]:
        """The grid in a stable order (method-major), exclusions removed."""
        return [
            Cell(m, t, b.name, s)
            for m in self.methods
            for t in self.targets
            if (m, t) not in self.exclude
            for b in self.budgets
            for s in self.seeds
        ]


def _suite_dir():
    return resources.files("benchmarks") / "suites"


def suite_names() -> list[str]:
    """Names of the suites shipped in `benchmarks/suites/`."""
    return sorted(p.name[:-5] for p in _suite_dir().iterdir() if p.name.endswith(".json"))


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"suite {where}: {msg}")


def _check_keys(got: dict, valid: set[str], where: str, required: set[str] | None = None) -> None:
    unknown = sorted(set(got) - valid)
    _require(not unknown, where, f"unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    missing = sorted((required if required is not None else valid) - set(got))
    _require(not missing, where, f"missing key(s) {missing}")


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite by shipped name (`quick`, `default`, `full`) or by file path.

    Raises:
        ValueError: with the list of valid suites / keys / names when anything is wrong.
    """
    import samplers
    import targets

    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise ValueError(f"suite file {str(path)!r} does not exist")
        text, where = path.read_text(), str(path)
    else:
        entry = _suite_dir() / f"{name_or_path}.json"
        if not entry.is_file():
            raise ValueError(
                f"unknown suite {name_or_path!r}; valid suites: {', '.join(suite_names())} "
                "(or a path to a suite .json file)"
            )
        text, where = entry.read_text(), name_or_path
    try:
        raw: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"suite {where}: not valid JSON ({err})") from None
    _require(isinstance(raw, dict), where, "the file must hold a JSON object")
    _check_keys(raw, _SUITE_KEYS, where, required=_SUITE_KEYS - {"exclude"})

    methods = samplers.names() if raw["methods"] == "all" else list(raw["methods"])
    _require(isinstance(methods, list) and methods, where, 'methods must be a non-empty list or "all"')
    for m in methods:
        samplers.get(m)  # raises with the valid names
    tlist = raw["targets"]
    _require(isinstance(tlist, list) and tlist, where, "targets must be a non-empty list")
    for t in tlist:
        targets.TARGETS.factory(t)
    seeds = raw["seeds"]
    _require(
        isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds),
        where,
        "seeds must be a non-empty list of non-negative integers",
    )
    _require(isinstance(raw["budgets"], dict) and raw["budgets"], where, "budgets must be a non-empty object")
    budgets = []
    for bname, b in raw["budgets"].items():
        _require(isinstance(b, dict), where, f"budget {bname!r} must be an object")
        _check_keys(b, _BUDGET_KEYS, f"{where} budget {bname!r}", required={"train_steps", "chunk_size"})
        _require(
            isinstance(b["train_steps"], int) and b["train_steps"] >= 0,
            where,
            f"budget {bname!r}: train_steps must be an integer >= 0",
        )
        _require(
            isinstance(b["chunk_size"], int) and b["chunk_size"] >= 1,
            where,
            f"budget {bname!r}: chunk_size must be an integer >= 1",
        )
        max_evals = b.get("max_evals")
        _require(
            max_evals is None or (isinstance(max_evals, int | float) and max_evals > 0),
            where,
            f"budget {bname!r}: max_evals must be a positive number or null",
        )
        budgets.append(Budget(bname, b["train_steps"], b["chunk_size"], max_evals))
    _check_keys(raw["eval"], _EVAL_KEYS, f"{where} eval")
    num_samples = raw["eval"]["num_samples"]
    _require(
        isinstance(num_samples, int) and num_samples >= 2, where, "eval.num_samples must be an integer >= 2"
    )
    exclude = raw.get("exclude", [])
    _require(
        isinstance(exclude, list) and all(isinstance(p, list) and len(p) == 2 for p in exclude),
        where,
        "exclude must be a list of [method, target] pairs",
    )
    return Suite(
        name=str(raw["name"]),
        description=str(raw["description"]),
        methods=tuple(methods),
        targets=tuple(tlist),
        seeds=tuple(seeds),
        budgets=tuple(budgets),
        num_samples=num_samples,
        exclude=frozenset((m, t) for m, t in exclude),
        source=where,
    )
