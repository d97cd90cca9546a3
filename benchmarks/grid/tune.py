"""`tiltbench tune`: a small declared search per (method, target) that never looks at ground truth.

For a method and a target, the trials are configurations drawn from the method's declared search
space (`benchmarks/grid/configs/search_spaces.json`: config key -> values; the product, or an
evenly spaced subset of it when it has more than `max_trials` points, the configured defaults
always first). Each trial builds the cell as the grid does with those overrides
(`benchmarks.perf.cells.build_cell`, from the hand-written table and never from an earlier tuning
file, so that a search does not depend on what a previous one chose), trains it for `steps` steps
(a method without training runs as configured), draws `num_eval` fresh samples with its own key
and scores

    ELBO = mean_i log w_i   (<= log Z for every sampler with importance weights; higher is better),
    reverse ESS = (Σ w)² / (N Σ w²)                  (the tie-breaker),

both computable without reference samples or the true log Z. The winner has the highest ELBO; a
trial within one standard error of it with a higher reverse ESS wins instead. A trial that
diverges or raises is recorded and loses. Every trial's energy + gradient evaluations (training
and scoring) are summed into `tuning_evals`, which the grid adds to the cost of a tuned cell. Run
for a suite, a trial also stops training at the last chunk before the pair's evaluation budget
(`TuneSettings.max_evals`, the rule of a budgeted cell): a trial never trains longer than the cells
it tunes (a trajectory method's 200 steps on dw4 cost more than a whole cell's budget).

A winner on the edge of what was tried says the optimum may lie outside it. The declared
*extension* (`"extend"` in the same file: per key, ordered values `above` and `below` the space)
then walks outward one value at a time: while the winner's value of an extendable key is the
largest (smallest) value tried, the next `above` (`below`) value is tried with the winner's other
settings, and the winner is chosen again over all trials. The walk stops when an interior value
wins or the declared values run out; `edge_keys` names the keys whose chosen value still sits on
the edge of everything tried (the report marks them). The shipped extension of the learning rate
goes downwards only: trials far shorter than a cell favour large rates, so a win at the top edge
is no evidence for a larger one (measured; `search_spaces.json`). A tuning file written before an
extension was declared is resumed: its trials are kept and only the extension's trials run (and when
the declared extension is narrowed, the trials it no longer lists are left out and the winner chosen
again). Each finished trial is also written to `<method>__<target>.partial.json`, so a search killed
part-way resumes from its finished trials.

The result is written atomically to `benchmarks/grid/configs/tuned/<method>__<target>.json`: the
chosen overrides, the space, every trial with its scores and cost (and, for a learned method, the
steps it trained, their execution seconds and evaluations, and the trial's wall seconds: what
`tiltbench benchmark --estimate` projects an unmeasured cell from), the seed and steps, the commit
and the hardware; `tuned_overrides` reads it back. Unweighted samplers (NUTS, MALA) have no ELBO
and are refused with that reason (they keep their own window adaptation).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

import samplers
from benchmarks.grid.records import atomic_write_json, environment, git_commit

__all__ = [
    "SEARCH_SPACES",
    "TUNED_DIR",
    "TuneSettings",
    "edge_keys",
    "next_extension",
    "pair_budgets",
    "partial_file",
    "search_extension",
    "search_space",
    "suite_pairs",
    "trials_of",
    "tune",
    "tuned_done",
    "tuned_file",
    "tuned_overrides",
]

SEARCH_SPACES = Path(__file__).with_name("configs") / "search_spaces.json"
TUNED_DIR = Path(__file__).with_name("configs") / "tuned"


def search_space(method: str, path: str | os.PathLike = SEARCH_SPACES) -> dict[str, list[Any]]:
    """The declared search space of `method` (its own entry, else the learned default).

    Raises:
        ValueError: for a method without training and without an entry (nothing to search).
    """
    table = json.loads(Path(path).read_text())
    if method in table["methods"]:
        return dict(table["methods"][method])
    spec = samplers.get(method)
    if spec.train_steps is not None:
        raise ValueError(f"{method} has no declared search space in {path} (it trains nothing)")
    return dict(table["default_learned"])


def search_extension(method: str, path: str | os.PathLike = SEARCH_SPACES) -> dict[str, dict[str, list]]:
    """The declared edge extension of `method`'s search: `{key: {"above": [...], "below": [...]}}` for
    the keys of its space that have one (empty when none)."""
    return _extension_of(search_space(method, path), path)


def _extension_of(
    space: Mapping[str, Any], path: str | os.PathLike = SEARCH_SPACES
) -> dict[str, dict[str, list]]:
    table = json.loads(Path(path).read_text())
    return {
        k: {side: list(v.get(side, [])) for side in ("above", "below")}
        for k, v in table.get("extend", {}).items()
        if k in space
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tried(trials: list[dict[str, Any]], key: str) -> list[float]:
    return [t["overrides"][key] for t in trials if _numeric(t.get("overrides", {}).get(key))]


def edge_keys(record: Mapping[str, Any]) -> list[str]:
    """The numeric keys of a tuning record's chosen configuration that are the largest or smallest
    value of that key among its trials (with at least two values tried): the search may not have
    bracketed the optimum there."""
    chosen, trials = record.get("chosen", {}), record.get("trials", [])
    out = []
    for key, value in sorted(chosen.items()):
        values = _tried(trials, key)
        if _numeric(value) and len(set(values)) > 1 and value in (max(values), min(values)):
            out.append(key)
    return out


def next_extension(
    trials: list[dict[str, Any]], extend: Mapping[str, Mapping[str, list]]
) -> dict[str, Any] | None:
    """The next trial of the edge extension, or None when the search is bracketed (see the module
    docstring): the winner's overrides with one extendable key moved to the next declared value
    beyond the largest (`above`) or smallest (`below`) value tried."""
    best = _winner(trials)
    if best is None:
        return None
    tried = [t["overrides"] for t in trials]
    for key in sorted(extend):
        value = best["overrides"].get(key)
        values = _tried(trials, key)
        if not _numeric(value):
            continue
        for side, edge, sign in (("above", max, 1), ("below", min, -1)):
            if value != edge(values):
                continue
            options = sorted(
                (x for x in extend[key].get(side, []) if sign * (x - value) > 0), key=lambda x: sign * x
            )
            if options and {**best["overrides"], key: options[0]} not in tried:
                return {**best["overrides"], key: options[0]}
    return None


def trials_of(
    space: Mapping[str, list[Any]], defaults: Mapping[str, Any], max_trials: int
) -> list[dict[str, Any]]:
    """The configurations to try: the defaults first, then the product of the space (evenly spaced
    subset when larger than `max_trials`), without repeats."""
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    keys = sorted(space)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]
    first = {k: defaults[k] for k in keys if k in defaults}
    rest = [g for g in grid if g != first]
    if len(rest) > max_trials - 1:
        idx = np.unique(np.linspace(0, len(rest) - 1, max(max_trials - 1, 0)).round().astype(int))
        rest = [rest[i] for i in idx] if max_trials > 1 else []
    return [first, *rest] if first else rest[:max_trials]


_MISSING = object()


def _get(config: Any, key: str) -> Any:
    """`config.<key>`, following dots into sub-configs (`optim.learning_rate`); `_MISSING` if absent."""
    for part in key.split("."):
        config = getattr(config, part, _MISSING)
        if config is _MISSING:
            return _MISSING
    return config


def _score(samples) -> dict[str, float]:
    log_w = np.asarray(samples.log_w, np.float64)
    finite = log_w[np.isfinite(log_w)]
    if finite.size < 2:
        return {"elbo": -math.inf, "elbo_se": math.inf, "reverse_ess": 0.0}
    w = np.exp(finite - finite.max())
    return {
        "elbo": float(np.mean(log_w)) if finite.size == log_w.size else -math.inf,
        "elbo_se": float(np.std(finite, ddof=1) / math.sqrt(finite.size)),
        "reverse_ess": float(w.sum() ** 2 / (log_w.size * (w**2).sum())),
    }


def _run_trial(
    method: str,
    target: str,
    overrides: dict[str, Any],
    steps: int,
    num_eval: int,
    seed: int,
    max_evals: float | None = None,
) -> dict:
    from benchmarks.perf.cells import build_cell
    from samplers.train import train

    start = time.perf_counter()
    built = build_cell(method, target, use_tuned=False, **overrides)
    if not built.spec.weighted:
        raise ValueError(f"{method} draws unweighted samples: no ELBO to tune by")
    k_train, k_eval = jax.random.split(jax.random.key(seed))
    timing: dict[str, float] = {}
    if built.spec.train_steps is None and steps > 0:
        stop = _budget_stop(built.method, k_eval, num_eval, max_evals) if max_evals else {}
        result = train(k_train, built.method, num_steps=steps, chunk_size=min(steps, 50), **stop)
        state = result.state
        timing = {
            "train_steps": float(result.history["step"][-1]),
            "train_s": float(result.train_time_s),
            "train_evals": float(state.cost.budget_evals()),
        }
    else:
        state = jax.jit(built.method.init)(k_train)
    samples = jax.jit(built.method.sample, static_argnums=2)(k_eval, state, num_eval)
    evals = float(state.cost.budget_evals() + samples.cost.budget_evals())
    return {**_score(samples), "evals": evals, **timing, "wall_s": time.perf_counter() - start}


def _budget_stop(method, key: jax.Array, num_eval: int, max_evals: float) -> dict[str, Callable]:
    """`eval_fn`/`stop_fn` of `samplers.train.train` that end a trial at the last chunk boundary before
    `max_evals` by the budgeted cell's rule (`benchmarks.grid.cell._budget_stop`: training so far + the
    last chunk's cost + scoring `num_eval` samples), so that a trial never trains longer than the cell
    it tunes. Neither draws from the training keys: where the cap does not bind, the trial is the
    uncapped one bit for bit."""
    from benchmarks.grid.cell import _budget_stop as cell_budget_stop

    probe = 16
    key = jax.random.fold_in(key, 1)
    drawn = jax.jit(method.sample, static_argnums=2)(key, jax.jit(method.init)(key), probe)
    scoring = float(drawn.cost.budget_evals()) * num_eval / probe
    eval_fn, stop_fn = cell_budget_stop(
        lambda state: {"evals": float(state.cost.budget_evals()), "evals_sample": scoring}, max_evals
    )
    return {"eval_fn": eval_fn, "stop_fn": stop_fn}


def _winner(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [t for t in trials if t.get("status") == "ok" and math.isfinite(t.get("elbo", -math.inf))]
    if not ok:
        return None
    best = max(ok, key=lambda t: t["elbo"])
    close = [t for t in ok if t["elbo"] >= best["elbo"] - best["elbo_se"]]
    return max(close, key=lambda t: (t["reverse_ess"], t["elbo"]))


def tuned_file(method: str, target: str, directory: str | os.PathLike | None = None) -> Path:
    return Path(TUNED_DIR if directory is None else directory) / f"{method}__{target}.json"


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """How much each search spends: `steps` training steps per trial, `num_eval` fresh samples scoring
    it, at most `max_trials` trials, the trials' root `seed`, and `max_evals`, the evaluation budget
    of the cells it tunes (a trial stops training before it; None: no cap)."""

    steps: int = 200
    num_eval: int = 2048
    max_trials: int = 6
    seed: int = 0
    max_evals: float | None = None


def tune(
    method: str,
    target: str,
    settings: TuneSettings = TuneSettings(),
    *,
    out_dir: str | os.PathLike | None = None,
    space: Mapping[str, list[Any]] | None = None,
    extend: Mapping[str, Mapping[str, list]] | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the search of `method` on `target` and write its tuning file (see the module docstring).

    `space` and `extend` default to the declared ones; `resume` keeps the trials of an existing
    tuning file of the same search and runs only what its extension still needs.
    """
    steps, num_eval, max_trials, seed = settings.steps, settings.num_eval, settings.max_trials, settings.seed
    from benchmarks.perf.cells import build_cell

    space = dict(space if space is not None else search_space(method))
    base = build_cell(method, target, use_tuned=False)
    if not base.spec.weighted:
        raise ValueError(
            f"{method} draws unweighted samples: no ELBO to tune by (it keeps its own adaptation)"
        )
    unknown = sorted(k for k in space if _get(base.config, k) is _MISSING)
    if unknown:
        raise ValueError(
            f"search space of {method}: {unknown} are not fields of {type(base.config).__name__}"
        )
    extend = dict(extend if extend is not None else _extension_of(space))
    unknown = sorted(k for k in extend if k not in space)
    if unknown:
        raise ValueError(f"extension of {method}: {unknown} are not keys of its search space")

    def trial(overrides: dict[str, Any], **mark: Any) -> None:
        try:
            result = {
                "status": "ok",
                **_run_trial(method, target, overrides, steps, num_eval, seed, settings.max_evals),
            }
        except Exception as err:  # noqa: BLE001 - a failed trial is recorded and loses
            result = {
                "status": "error",
                "message": f"{type(err).__name__}: {err}"[:300],
                "elbo": -math.inf,
                "elbo_se": math.inf,
                "reverse_ess": 0.0,
                "evals": 0.0,
            }
        trials.append({"overrides": overrides, **result, **mark})
        atomic_write_json(partial, {**started, "trials": trials})  # a killed search keeps its trials
        log(
            f"tune {method} on {target}: trial {len(trials)} {overrides} -> ELBO {result['elbo']:.4g} "
            f"± {result['elbo_se']:.2g}, reverse ESS {result['reverse_ess']:.3g} ({result['status']})"
        )

    final, partial = tuned_file(method, target, out_dir), partial_file(method, target, out_dir)
    kept = (
        [_resumable(final, settings, space, extend), _resumable(partial, settings, space, extend, full=False)]
        if resume
        else []
    )
    previous = max((r for r in kept if r is not None), key=lambda r: len(r["trials"]), default=None)
    trials: list[dict[str, Any]] = list(previous["trials"]) if previous else []
    started = {
        "steps": steps,
        "num_eval": num_eval,
        "seed": seed,
        "max_evals": settings.max_evals,
        "space": space,
        "commit": previous["commit"] if previous else git_commit(),
        "hardware": previous["hardware"] if previous else environment(),
    }
    if previous:
        log(
            f"tune {method} on {target}: {len(trials)} trials kept from an earlier run of this search"
            + (
                f" ({previous['dropped']} outside the declared extension left out)"
                if previous["dropped"]
                else ""
            )
        )
    for overrides in trials_of(space, {k: _get(base.config, k) for k in space}, max_trials):
        if overrides not in [t["overrides"] for t in trials]:
            trial(overrides)
    while (overrides := next_extension(trials, extend)) is not None:
        trial(overrides, extension=True, commit=git_commit())
    best = _winner(trials)
    record = {
        "method": method,
        "target": target,
        "chosen": best["overrides"] if best is not None else {},
        "status": "ok" if best is not None else "failed",
        "criterion": "highest ELBO on fresh samples; within one SE, highest reverse ESS",
        "space": space,
        "extend": extend,
        "trials": trials,
        "tuning_evals": float(sum(t["evals"] for t in trials)),
        **started,
    }
    atomic_write_json(final, record)
    partial.unlink(missing_ok=True)
    return record


def _declared(trial: Mapping[str, Any], space: Mapping[str, list], extend: Mapping[str, Mapping]) -> bool:
    """Whether a trial belongs to the declared search: a trial of the space, or an extension trial
    whose extended values the declared extension still lists (a narrowed extension drops the rest)."""
    if not trial.get("extension"):
        return True
    overrides = trial.get("overrides", {})
    return all(
        overrides[k] in [*space.get(k, []), *v.get("above", []), *v.get("below", [])]
        for k, v in extend.items()
        if k in overrides
    ) and all(k in extend or overrides[k] in space.get(k, []) for k in overrides)


def _resumable(
    path: Path,
    settings: TuneSettings,
    space: Mapping[str, list[Any]],
    extend: Mapping[str, Mapping[str, list]],
    full: bool = True,
) -> dict[str, Any] | None:
    """The tuning record at `path` when it holds trials of this search (same steps, scoring samples,
    seed and space; with `full`, all of its declared trials): a resumed search goes on from them.
    Its extension trials that the declared extension no longer lists are left out (`dropped` counts
    them)."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        same = (rec["steps"], rec["num_eval"], rec["seed"]) == (
            settings.steps,
            settings.num_eval,
            settings.seed,
        )
        base = [t for t in rec["trials"] if not t.get("extension")]
        done = len(base) >= min(settings.max_trials, len(trials_of(space, {}, settings.max_trials)))
        if not (same and rec["space"] == dict(space) and (done or not full) and _same_cap(rec, settings)):
            return None
        kept = [t for t in rec["trials"] if _declared(t, space, extend)]
        return {**rec, "trials": kept, "dropped": len(rec["trials"]) - len(kept)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _same_cap(rec: Mapping[str, Any], settings: TuneSettings) -> bool:
    """Whether a record's trials ran under this search's evaluation cap: the same cap, or a different
    one (or none) where no trial reached the smaller of the two (neither cap would have stopped any of
    them, so the trials are the same bit for bit)."""
    cap = rec.get("max_evals")
    if cap == settings.max_evals:
        return True
    smaller = min(c for c in (cap, settings.max_evals, math.inf) if c is not None)
    return all(t.get("evals", 0.0) <= smaller for t in rec["trials"])


def partial_file(method: str, target: str, directory: str | os.PathLike | None = None) -> Path:
    """Where a search in progress keeps its finished trials (`<method>__<target>.partial.json`, beside
    the tuning file; removed when the search ends, git-ignored)."""
    return tuned_file(method, target, directory).with_suffix(".partial.json")


def tuned_done(
    method: str, target: str, settings: TuneSettings, directory: str | os.PathLike | None = None
) -> bool:
    """Whether a tuning file of `(method, target)` exists that this search would write again: same
    steps, scoring samples, seed and declared space, at least as many trials (a re-run would repeat
    it), and no step of the declared extension left to try."""
    try:
        space, extend = search_space(method), search_extension(method)
        rec = _resumable(tuned_file(method, target, directory), settings, space, extend)
        return rec is not None and not rec["dropped"] and next_extension(rec["trials"], extend) is None
    except (ValueError, KeyError, TypeError):  # a method without a declared space
        return False


def suite_pairs(suite: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The `(method, target)` pairs of `suite` that `tune` can search (every cell's pair once, in the
    suite's order), and `{method: reason}` for the suite's methods it cannot (unweighted samplers keep
    their own adaptation; a method without a declared space has nothing to search)."""
    pairs: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    for cell in suite.cells():
        if cell.method in skipped or (cell.method, cell.target) in pairs:
            continue
        if not samplers.get(cell.method).weighted:
            skipped[cell.method] = "draws unweighted samples: no ELBO (keeps its own window adaptation)"
            continue
        try:
            search_space(cell.method)
        except ValueError as err:
            skipped[cell.method] = str(err)
            continue
        pairs.append((cell.method, cell.target))
    return pairs, skipped


def pair_budgets(suite: Any) -> dict[tuple[str, str], float | None]:
    """`{(method, target): evaluation budget}` of the suite's cells (the first cell's budget of each
    pair; None where it has none): the cap of that pair's tuning trials. None for the baselines: a
    trial runs their configured schedule, which a budgeted cell then scales to its budget."""
    out: dict[tuple[str, str], float | None] = {}
    for cell in suite.cells():
        learned = samplers.get(cell.method).train_steps is None
        cap = suite.budget(cell.budget).evals_for(cell.target) if learned else None
        out.setdefault((cell.method, cell.target), cap)
    return out


def tuned_overrides(
    method: str, target: str, directory: str | os.PathLike | None = None
) -> tuple[dict, float]:
    """`(chosen overrides, tuning evaluations)` of a committed tuning file; `({}, 0.0)` when there is none."""
    path = tuned_file(method, target, directory)
    if not path.is_file():
        return {}, 0.0
    try:
        record = json.loads(path.read_text())
        return dict(record["chosen"]), float(record["tuning_evals"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a tuning file ({err})") from None
