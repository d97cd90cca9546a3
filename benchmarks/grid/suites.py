"""Benchmark suites: small checked-in JSON files that expand into a grid of cells.

A suite names methods, targets, seeds and one or more budgets; the grid is their product minus
the listed exclusions. A cell is `(method, target, budget, seed)`; its record lives at
`<out>/<suite>/<method>/<target>/<budget>/seed<seed>.json`.

Suite file schema (all keys required unless marked optional):

    name          str, one safe path component (the records' directory); not a shipped suite's
                  name unless the file is that suite
    description   str
    methods       list of method names, or "all"
    targets       list of target names
    seeds         list of ints
    budgets       {budget_name: {train_steps: int, chunk_size: int,
                                 max_evals (optional): the equal-budget axis, see below,
                                 max_train_s (optional): wall cap of a cell's training, seconds,
                                   in the same forms as max_evals,
                                 step_caps (optional): {"<method>/<target>": int, "_derived": [str]},
                                   per-pair step caps that replace the wall cap, see below}}
    eval          {num_samples: int}  (samples drawn for every metric; also the reference size)
    exclude       (optional) list of [method, target] pairs or [method, target, budget] triples;
                  "*" matches anything (e.g. ["pis", "*", "low"]: no `pis` cell at budget `low`)
    settings      (optional) overrides of the hyper-parameter table for this suite's cells, the last
                  layer of `benchmarks.grid.hyperparams.resolve`:
                  {"problem": {...},          ProblemConfig fields of every cell (e.g. {"sigma": 6})
                   "method": {...},           config fields of every method that has them
                   "methods": {name: {...}}}  config fields of one method of the suite
                  Keys nest by sub-config or are dotted ({"optim": {"learning_rate": 3e-3}} or
                  {"optim.learning_rate": 3e-3}); every key is checked when the suite is loaded.
                  `tiltbench benchmark --set KEY=VALUE` adds to them (`with_settings`).

Equal budgets (`max_evals`). The budget of a cell counts energy + gradient evaluations
(`Cost.energy_evals + Cost.grad_evals`) of everything the cell spends: training (or MCMC warm-up,
or a baseline's planning pilot) plus drawing the `eval.num_samples` samples that are scored.
`max_evals` is `null` (no cap), one positive number for every target, or an object
`{target: number, ..., "*": number}` giving a per-target budget (`"*"`, optional, covers the
targets not named; without it every suite target must be named). Learned samplers stop training
at the last chunk boundary before the predicted total (training so far + the cost of the final
sampling) would exceed it (`train_steps` stays a cap); MCMC / SMC / AIS scale their work to it
with the per-baseline rule `MethodSpec.plan_budget` (`samplers/baselines/budget.py`). The
record states the budget and the evaluations actually spent.

Wall cap (`max_train_s`). A learned sampler's training also stops at the first chunk boundary after
`max_train_s` seconds of training wall time (compilation included), so that a suite's total time is
bounded on slow hardware; the record says when the cap stopped it. The evaluation budget stays the
comparison axis: a capped cell has spent less than its budget, and its record shows how much.

Step caps (`step_caps`). A wall cap makes a cell's training depend on the machine and its load: the
same cell trains fewer steps beside two other jobs, or on a slower card. `tiltbench step-caps`
converts each (method, target)'s wall cap into a step count once, at the rates measured by the
records (`benchmarks/grid/step_caps.py`), and writes them here; a pair with a step cap trains at most
`min(train_steps, step cap)` steps and its wall cap no longer applies, so its records are the same
on any machine. The record's budget carries `train_steps` (resolved) and `step_cap`; adding a cap to
a pair changes its cells' inputs, so `tiltbench step-caps` leaves pairs whose records ran under the
wall cap alone unless told to redo them. Keys starting with `_` are notes (the derivation's
provenance).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from benchmarks.grid.records import is_safe_name
from samplers.fields import configure, merge, nest, new_name

__all__ = ["Budget", "Cell", "Suite", "load_suite", "parse_set", "suite_file", "suite_names", "with_settings"]

_SUITE_KEYS = {"name", "description", "methods", "targets", "seeds", "budgets", "eval", "exclude", "settings"}
_SETTINGS_KEYS = {"problem", "method", "methods"}
_BUDGET_KEYS = {"train_steps", "chunk_size", "max_evals", "max_train_s", "step_caps"}
_EVAL_KEYS = {"num_samples"}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training budget of a cell.

    Attributes:
        name: id used in paths and tables.
        train_steps: maximum number of optimiser (or adaptation) steps.
        chunk_size: steps per jitted chunk; metrics are traced between chunks.
        max_evals: optional budget of energy + gradient evaluations (training + final sampling)
            for every target not in `max_evals_per_target` (module docstring).
        max_evals_per_target: `((target, budget), ...)`, per-target budgets that override
            `max_evals`.
        max_train_s: optional wall cap of a learned sampler's training, seconds (module docstring),
            for every target not in `max_train_s_per_target`.
        max_train_s_per_target: `((target, seconds), ...)`, per-target caps.
        step_caps: `((method, target, steps), ...)`, per-pair step caps that replace the wall cap
            (module docstring); `for_cell` resolves them.
    """

    name: str
    train_steps: int
    chunk_size: int
    max_evals: float | None = None
    max_evals_per_target: tuple[tuple[str, float], ...] = ()
    max_train_s: float | None = None
    max_train_s_per_target: tuple[tuple[str, float], ...] = ()
    step_caps: tuple[tuple[str, str, int], ...] = ()

    def step_cap_for(self, method: str, target: str) -> int | None:
        """The step cap of `(method, target)` under this budget (None: none; the wall cap applies)."""
        return next((n for m, t, n in self.step_caps if (m, t) == (method, target)), None)

    def for_cell(self, method: str, target: str) -> Budget:
        """The budget of one cell: `train_steps` at most the pair's step cap, and the target's wall cap
        unless the pair has a step cap; per-target and per-pair tables resolved away."""
        cap = self.step_cap_for(method, target)
        return dataclasses.replace(
            self,
            train_steps=self.train_steps if cap is None else min(self.train_steps, cap),
            max_evals=self.evals_for(target),
            max_evals_per_target=(),
            max_train_s=self.train_cap_for(target) if cap is None else None,
            max_train_s_per_target=(),
            step_caps=() if cap is None else ((method, target, cap),),
        )

    def evals_for(self, target: str) -> float | None:
        """The evaluation budget of `target` under this budget (None: no cap)."""
        return dict(self.max_evals_per_target).get(target, self.max_evals)

    def for_target(self, target: str) -> dict[str, Any]:
        """The budget as recorded in a cell's record: `max_evals` resolved for `target`."""
        return {
            "name": self.name,
            "train_steps": self.train_steps,
            "chunk_size": self.chunk_size,
            "max_evals": self.evals_for(target),
            **({"max_train_s": cap} if (cap := self.train_cap_for(target)) is not None else {}),
            # a cell's budget (`for_cell`) holds its own pair's cap only
            **(
                {"step_cap": self.step_caps[0][2]}
                if len(self.step_caps) == 1 and self.step_caps[0][1] == target
                else {}
            ),
        }

    def train_cap_for(self, target: str) -> float | None:
        """The training wall cap of `target` under this budget, seconds (None: no cap)."""
        return dict(self.max_train_s_per_target).get(target, self.max_train_s)


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    method: str
    target: str
    budget: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method}/{self.target}/{self.budget}/seed{self.seed}"

    @classmethod
    def of_record(cls, rec: dict[str, Any]) -> Cell:
        """The cell a record was written for (its budget is a dict with a name, or a plain name)."""
        budget = rec["budget"]["name"] if isinstance(rec.get("budget"), dict) else str(rec.get("budget"))
        return cls(rec["method"], rec["target"], budget, int(rec["seed"]))

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
    exclude: frozenset[tuple[str, str, str]] = frozenset()
    source: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def overrides(self, method: str) -> dict[str, Any]:
        """The `settings` that apply to `method`'s cells, as `hyperparams.resolve` takes them:
        `{"problem": ..., "method": ...}` (the suite-wide method settings this method's config has,
        then its own)."""
        import samplers

        fields = {f.name for f in dataclasses.fields(samplers.get(method).config_cls)}
        shared = {k: v for k, v in nest(self.settings.get("method", {})).items() if k in fields}
        own = self.settings.get("methods", {}).get(method, {})
        return {"problem": self.settings.get("problem", {}), "method": merge(shared, own)}

    def budget(self, name: str) -> Budget:
        for b in self.budgets:
            if b.name == name:
                return b
        raise ValueError(
            f"suite {self.name!r} has no budget {name!r}; budgets: {[b.name for b in self.budgets]}"
        )

    def excluded(self, method: str, target: str, budget: str) -> bool:
        """Whether an `exclude` entry matches the cell (`"*"` matches anything)."""
        cell = (method, target, budget)
        return any(all(p in ("*", c) for p, c in zip(e, cell, strict=True)) for e in self.exclude)

    def cells(self) -> list[Cell]:
        """The grid in a stable order (method-major), exclusions removed."""
        return [
            Cell(m, t, b.name, s)
            for m in self.methods
            for t in self.targets
            for b in self.budgets
            if not self.excluded(m, t, b.name)
            for s in self.seeds
        ]


def _suite_dir():
    return resources.files("benchmarks.grid") / "suites"


def suite_file(suite: Suite) -> Path:
    """The file a loaded suite came from (a shipped suite's JSON, or the path it was loaded from)."""
    if _is_file_path(suite.source):
        return Path(suite.source)
    return Path(str(_suite_dir() / f"{suite.source}.json"))


def _is_file_path(name_or_path: str) -> bool:
    """Whether a `load_suite` argument names a file (`.json` or an existing path), not a shipped suite."""
    path = Path(name_or_path)
    return path.suffix == ".json" or path.exists()


def suite_names() -> list[str]:
    """Names of the suites shipped in `benchmarks/grid/suites/`."""
    return sorted(p.name[:-5] for p in _suite_dir().iterdir() if p.name.endswith(".json"))


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"suite {where}: {msg}")


def _check_keys(got: dict, valid: set[str], where: str, required: set[str] | None = None) -> None:
    unknown = sorted(set(got) - valid)
    _require(not unknown, where, f"unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    missing = sorted((required if required is not None else valid) - set(got))
    _require(not missing, where, f"missing key(s) {missing}")


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _parse_per_target(
    raw: Any, suite_targets: list[str], where: str, key: str = "max_evals"
) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """`max_evals` (or `max_train_s`) -> (default, per-target values); see the module docstring."""
    if raw is None:
        return None, ()
    if not isinstance(raw, dict):
        _require(
            _positive_number(raw),
            where,
            f"{key} must be a positive number, null, or an object {{target: number}}; got {raw!r}",
        )
        return float(raw), ()
    unknown = sorted(set(raw) - set(suite_targets) - {"*"})
    _require(
        not unknown,
        where,
        f"{key} names target(s) {unknown} that are not in the suite; valid keys: "
        f"{sorted(suite_targets)} and '*' (every other target)",
    )
    bad = sorted(k for k, v in raw.items() if not _positive_number(v))
    _require(not bad, where, f"{key} of {bad} must be positive numbers")
    missing = sorted(set(suite_targets) - set(raw))
    _require(
        "*" in raw or not missing,
        where,
        f"{key} has no budget for target(s) {missing}; name them or add a '*' default",
    )
    default = float(raw["*"]) if "*" in raw else None
    return default, tuple(sorted((t, float(v)) for t, v in raw.items() if t != "*"))


def _parse_step_caps(
    raw: Any, methods: list[str], suite_targets: list[str], where: str
) -> tuple[tuple[str, str, int], ...]:
    """`step_caps` -> `((method, target, steps), ...)`; see the module docstring."""
    if raw is None:
        return ()
    _require(
        isinstance(raw, dict), where, f'step_caps must be an object {{"method/target": steps}}; got {raw!r}'
    )
    out = []
    for key, steps in sorted(raw.items()):
        if key.startswith("_"):
            continue
        method, sep, target = key.partition("/")
        _require(
            bool(sep) and method in methods and target in suite_targets,
            where,
            f"step_caps key {key!r} is not '<method>/<target>' of the suite (methods {sorted(methods)}, "
            f"targets {sorted(suite_targets)})",
        )
        _require(
            isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
            where,
            f"step_caps[{key!r}] must be an integer >= 1, got {steps!r}",
        )
        out.append((method, target, steps))
    return tuple(out)


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite by shipped name (`quick`, `default`, `full`) or by file path.

    Raises:
        ValueError: with the list of valid suites / keys / names when anything is wrong.
    """
    import samplers
    import targets

    path = Path(name_or_path)
    if _is_file_path(name_or_path):
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
    _check_keys(raw, _SUITE_KEYS, where, required=_SUITE_KEYS - {"exclude", "settings"})

    name = raw["name"]
    _require(
        is_safe_name(name),
        where,
        f"name must be one safe path component (letters, digits, _ . + -; no '/' or '..'), got {name!r}",
    )
    shipped = _suite_dir() / f"{name}.json"
    _require(
        where == name or not shipped.is_file() or json.loads(shipped.read_text()) == raw,
        where,
        f"name {name!r} is a shipped suite's; records would land in its section. Give your suite its "
        f"own name (shipped suites: {', '.join(suite_names())})",
    )
    methods = samplers.names() if raw["methods"] == "all" else raw["methods"]
    _require(
        isinstance(methods, list) and bool(methods) and all(isinstance(m, str) for m in methods),
        where,
        f'methods must be a non-empty list of method names or "all", got {methods!r}',
    )
    for m in methods:
        samplers.get(m)  # raises with the valid names
    tlist = raw["targets"]
    _require(
        isinstance(tlist, list) and bool(tlist) and all(isinstance(t, str) for t in tlist),
        where,
        f"targets must be a non-empty list of target names, got {tlist!r}",
    )
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
        default, per_target = _parse_per_target(b.get("max_evals"), tlist, f"{where} budget {bname!r}")
        cap, cap_per_target = _parse_per_target(
            b.get("max_train_s"), tlist, f"{where} budget {bname!r}", key="max_train_s"
        )
        steps = _parse_step_caps(b.get("step_caps"), methods, tlist, f"{where} budget {bname!r}")
        budgets.append(
            Budget(bname, b["train_steps"], b["chunk_size"], default, per_target, cap, cap_per_target, steps)
        )
    _check_keys(raw["eval"], _EVAL_KEYS, f"{where} eval")
    num_samples = raw["eval"]["num_samples"]
    _require(
        isinstance(num_samples, int) and num_samples >= 2, where, "eval.num_samples must be an integer >= 2"
    )
    exclude = raw.get("exclude", [])
    _require(
        isinstance(exclude, list)
        and all(isinstance(p, list) and len(p) in (2, 3) for p in exclude)
        and all(isinstance(v, str) for p in exclude for v in p),
        where,
        "exclude must be a list of [method, target] pairs or [method, target, budget] triples",
    )
    axes = ((methods, "method"), (tlist, "target"), ([b.name for b in budgets], "budget"))
    for entry in exclude:
        for value, (valid, what) in zip(entry, axes, strict=False):
            _require(
                value == "*" or value in valid,
                where,
                f"exclude entry {entry}: unknown {what} {value!r}; valid: {sorted(valid)} or '*'",
            )
    settings = raw.get("settings", {})
    _check_settings(settings, methods, where)
    return Suite(
        name=name,
        description=str(raw["description"]),
        methods=tuple(methods),
        targets=tuple(tlist),
        seeds=tuple(seeds),
        budgets=tuple(budgets),
        num_samples=num_samples,
        exclude=frozenset((*e, "*")[:3] for e in exclude),
        source=where,
        settings=settings,
    )


def _check_settings(settings: Any, methods: list[str] | tuple[str, ...], where: str) -> None:
    """Check a suite's `settings` (module docstring): known keys, valid problem fields, and method
    fields each valid for the method(s) they apply to. Raises ValueError naming the valid fields."""
    import samplers
    from benchmarks.grid.problems import ProblemConfig

    _require(isinstance(settings, dict), where, f"settings must be an object, got {settings!r}")
    unknown = sorted(set(settings) - _SETTINGS_KEYS)
    _require(not unknown, where, f"settings: unknown key(s) {unknown}; valid keys: {sorted(_SETTINGS_KEYS)}")
    for key in _SETTINGS_KEYS & set(settings):
        _require(isinstance(settings[key], dict), where, f"settings.{key} must be an object")
    try:
        configure(ProblemConfig, settings.get("problem", {}), who="settings.problem")
    except ValueError as err:
        raise ValueError(f"suite {where}: {err}") from None
    per_method = settings.get("methods", {})
    unknown = sorted(set(per_method) - set(methods))
    _require(
        not unknown,
        where,
        f"settings.methods names method(s) {unknown} not in the suite; valid: {sorted(methods)}",
    )
    shared = nest(settings.get("method", {}))
    used = set()
    for method in methods:
        spec = samplers.get(method)
        fields = {f.name for f in dataclasses.fields(spec.config_cls)}
        mine = {k: v for k, v in shared.items() if k in fields}
        used |= set(mine)
        try:
            spec.make_config(merge(mine, per_method.get(method, {})))
        except ValueError as err:
            raise ValueError(f"suite {where}: settings of {method}: {err}") from None
    unused = sorted(set(shared) - used)
    for key in unused:
        new = next((n for m in methods if (n := new_name(samplers.get(m).config_cls, key))), None)
        _require(new is None, where, f"settings.method: {key!r} is now {new!r}")
    _require(
        not unused,
        where,
        f"settings.method field(s) {unused} belong to no method of the suite (give a method's own settings "
        "under settings.methods.<name>; `tiltbench methods` lists the methods)",
    )


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set KEY=VALUE` items as suite settings: `problem.<field>=v`, `method.<field>=v` (every method
    of the run that has the field) or `methods.<name>.<field>=v`; sub-config fields are dotted
    (`method.optim.learning_rate=3e-3`). VALUE is read as JSON (numbers, true/false/null, lists), else
    as a string.

    Raises:
        ValueError: an item without `=` or with an unknown prefix.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        head = key.split(".", 1)[0]
        if (
            not sep
            or head not in _SETTINGS_KEYS
            or "." not in key
            or (head == "methods" and key.count(".") < 2)
        ):
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE with KEY problem.<field>, method.<field> or "
                "methods.<method>.<field> (sub-config fields dotted, e.g. method.optim.learning_rate=3e-3)"
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if head == "methods":
            _, name, rest = key.split(".", 2)
            out = merge(out, {"methods": {name: {rest: value}}})
        else:
            out = merge(out, {key: value})
    return out


def with_settings(suite: Suite, extra: dict[str, Any]) -> Suite:
    """`suite` with `extra` settings (`parse_set`) over its own, checked as the suite's are. The result
    is renamed `<name>+set-<hash>` (hash of the merged settings), so that its records never replace
    those of the suite run with its own settings."""
    if not extra:
        return suite
    settings = merge(suite.settings, extra)
    _check_settings(settings, suite.methods, f"{suite.source or suite.name} with --set")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:8]
    return dataclasses.replace(suite, name=f"{suite.name}+set-{digest}", settings=settings)
