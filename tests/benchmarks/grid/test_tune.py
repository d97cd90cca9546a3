"""`tiltbench tune`: the declared search, the ELBO criterion on fresh samples with the reverse-ESS
tie-break, failed trials recorded, the tuning file written and read back, and no ground truth used."""

from __future__ import annotations

import functools
import json
import math

import jax.numpy as jnp
import pytest

import samplers
import targets
from benchmarks import cli
from benchmarks.grid.tune import (
    _MISSING,
    SEARCH_SPACES,
    TuneSettings,
    _get,
    _winner,
    edge_keys,
    next_extension,
    pair_budgets,
    partial_file,
    search_extension,
    search_space,
    suite_pairs,
    trials_of,
    tune,
    tuned_done,
    tuned_file,
    tuned_overrides,
)

pytestmark = pytest.mark.usefixtures("toy_methods")


def _gaussian(name: str, std: float):
    """Register N(0, std² I) in 2-D with neither samples nor log Z (tuning can only use log_prob)."""
    targets.register_target(name, lambda x: -0.5 * jnp.sum(x**2) / std**2, dim=2, overwrite=True)
    yield name
    targets.TARGETS.unregister(name)


@pytest.fixture
def blind_target():
    """N(0, 1.5² I) in 2-D with neither samples nor log Z: tuning can only use log_prob."""
    yield from _gaussian("tune_test_gaussian", 1.5)


def test_the_elbo_picks_the_proposal_that_matches_the_target(blind_target, tmp_path):
    """toy_is draws from N(0, s² I): the ELBO = log Z − KL(q‖p) is highest at s = 1.5."""
    lines = []
    rec = tune(
        "toy_is",
        blind_target,
        TuneSettings(steps=1, num_eval=4096),
        space={"scale": [0.5, 1.5, 4.0]},
        out_dir=tmp_path,
        log=lines.append,
    )
    assert rec["status"] == "ok" and rec["chosen"] == {"scale": 1.5}
    assert [t["overrides"] for t in rec["trials"]] == [
        {"scale": 2.0},
        {"scale": 0.5},
        {"scale": 1.5},
        {"scale": 4.0},
    ]  # the configured value first
    assert rec["tuning_evals"] == 4 * 4096 and len(lines) == 4
    # each trial times its training, which `tiltbench benchmark --estimate` projects unrun cells from
    assert all(t["train_steps"] == 1 and t["wall_s"] >= t["train_s"] > 0 for t in rec["trials"])
    assert tuned_overrides("toy_is", blind_target, tmp_path) == ({"scale": 1.5}, 4 * 4096.0)
    assert tuned_overrides("toy_is", "gmm9", tmp_path) == ({}, 0.0)
    written = json.loads((tmp_path / f"toy_is__{blind_target}.json").read_text())
    assert {"space", "trials", "commit", "hardware", "criterion", "seed", "steps"} <= set(written)


def test_failed_trials_lose_and_ties_go_to_the_higher_ess(blind_target, tmp_path):
    rec = tune(
        "toy_is",
        blind_target,
        TuneSettings(steps=1, num_eval=256),
        space={"inject_nan": [False, True]},
        out_dir=tmp_path,
        log=lambda s: None,
    )
    assert rec["chosen"] == {"inject_nan": False}
    trials = [
        {"overrides": {"a": 1}, "status": "ok", "elbo": 1.0, "elbo_se": 0.5, "reverse_ess": 0.2},
        {"overrides": {"a": 2}, "status": "ok", "elbo": 0.8, "elbo_se": 0.1, "reverse_ess": 0.9},
        {"overrides": {"a": 3}, "status": "ok", "elbo": 0.1, "elbo_se": 0.1, "reverse_ess": 1.0},
        {"overrides": {"a": 4}, "status": "error", "elbo": -math.inf, "elbo_se": math.inf, "reverse_ess": 0},
    ]
    assert _winner(trials)["overrides"] == {"a": 2}  # within one SE of the best ELBO, higher ESS
    assert _winner(trials[3:]) is None


def test_search_spaces_and_bad_input(blind_target, capsys):
    assert set(search_space("pis")) == {"optim.learning_rate"} and "num_mcmc_steps" in search_space("smc")
    with pytest.raises(ValueError, match="has no declared search space"):
        search_space("nuts")
    assert trials_of({"x": [1, 2, 3, 4, 5]}, {"x": 3}, 3) == [{"x": 3}, {"x": 1}, {"x": 5}]
    with pytest.raises(ValueError, match="not fields of ToyConfig"):
        tune("toy_is", blind_target, space={"no_such": [1]}, log=lambda s: None)
    assert cli.main(["tune", "--method", "no_such_method", "--target", blind_target]) == 2
    assert "no_such_method" in capsys.readouterr().err


def test_every_declared_search_key_is_a_field_of_its_method():
    """The shipped search spaces name config fields that exist (nested keys included), so
    `tiltbench tune` does not refuse a method at start-up; the learned default covers every learned
    method without an entry of its own."""
    table = json.loads(SEARCH_SPACES.read_text())
    for name in samplers.names():
        spec = samplers.get(name)
        if not spec.config_cls.__module__.startswith("samplers."):
            continue  # the tests' toy methods
        if name not in table["methods"] and spec.train_steps is not None:
            continue  # trains nothing and has no search: refused with a reason (tested above)
        config = spec.config_cls()
        missing = [k for k in search_space(name) if _get(config, k) is _MISSING]
        assert not missing, f"{name}: {missing} are not fields of {spec.config_cls.__name__}"


def test_the_grid_runs_the_tuned_configuration_and_records_its_cost(blind_target, tmp_path, monkeypatch):
    from benchmarks.grid import tune as tune_module
    from benchmarks.grid.cell import resolve_cell, run_cell
    from benchmarks.grid.suites import Cell, load_suite
    from tests.benchmarks import toy_method

    monkeypatch.setattr(tune_module, "TUNED_DIR", tmp_path / "tuned")
    assert resolve_cell("toy_is", blind_target).tuned == {}
    tune(
        "toy_is",
        blind_target,
        TuneSettings(steps=1, num_eval=512),
        space={"scale": [1.5, 4.0]},
        log=lambda s: None,
    )
    resolved = resolve_cell("toy_is", blind_target)
    assert (
        resolved.config.scale == 1.5 and resolved.tuned == {"scale": 1.5} and resolved.tuning_evals == 3 * 512
    )
    assert resolve_cell("toy_is", blind_target, scale=3.0).config.scale == 3.0  # explicit overrides win
    suite = load_suite(str(toy_method.write_suite(tmp_path, targets=[blind_target])))
    record = run_cell(Cell("toy_is", blind_target, "b", 0), suite).record
    assert record.config["tuned"] == {"scale": 1.5} and record.metrics["cost/tuning_evals"] == 3 * 512


def test_a_suite_tunes_its_weighted_pairs_once_and_resumes(blind_target, tmp_path, capsys):
    from benchmarks.grid.suites import load_suite

    path = tmp_path / "suite.json"
    path.write_text(
        json.dumps(
            {
                "name": "tune_suite",
                "description": "tuning pairs",
                "eval": {"num_samples": 64},
                "methods": ["pis", "nuts", "smc"],
                "targets": [blind_target, "gmm9"],
                "seeds": [0, 1],
                "budgets": {"b": {"train_steps": 10, "chunk_size": 5}},
                "exclude": [["smc", "gmm9", "*"]],
            }
        )
    )
    pairs, skipped = suite_pairs(load_suite(str(path)))
    assert pairs == [("pis", blind_target), ("pis", "gmm9"), ("smc", blind_target)]  # once per seed pair
    assert set(skipped) == {"nuts"} and "unweighted" in skipped["nuts"]

    settings = TuneSettings(steps=50, num_eval=256, max_trials=3, seed=0)
    assert not tuned_done("pis", "gmm9", settings, tmp_path)
    record = {"steps": 50, "num_eval": 256, "seed": 0, "space": search_space("pis"), "trials": [{}] * 3}
    tuned_file("pis", "gmm9", tmp_path).write_text(json.dumps(record))
    assert tuned_done("pis", "gmm9", settings, tmp_path)
    assert not tuned_done("pis", "gmm9", TuneSettings(steps=100, num_eval=256, max_trials=3), tmp_path)
    assert not tuned_done("pis", "gmm9", TuneSettings(steps=50, num_eval=256, max_trials=3, seed=1), tmp_path)
    tuned_file("pis", "gmm9", tmp_path).write_text(json.dumps({**record, "space": {"x": [1, 2, 3]}}))
    assert not tuned_done("pis", "gmm9", settings, tmp_path)  # the declared space changed
    tuned_file("pis", "gmm9", tmp_path).write_text("{not json")
    assert not tuned_done("pis", "gmm9", settings, tmp_path)

    with pytest.raises(SystemExit, match="give --suite, or both --method and --target"):
        cli.main(["tune", "--method", "pis"])


@pytest.fixture
def wide_target():
    """N(0, 3² I) in 2-D: the best toy_is scale, 3, lies above a space of [0.5, 1] and the default 2."""
    yield from _gaussian("tune_test_wide_gaussian", 3.0)


def test_a_winner_on_the_edge_extends_the_search_until_it_is_bracketed(wide_target, blind_target, tmp_path):
    """ELBO = log Z − KL(N(0, s²) ‖ N(0, σ²)) peaks at s = σ: the walk goes outward while the edge
    value wins and stops at the first value beyond the optimum."""
    settings = TuneSettings(steps=1, num_eval=4096)
    rec = tune(
        "toy_is",
        wide_target,
        settings,
        space={"scale": [0.5, 1.0]},
        extend={"scale": {"above": [3.0, 8.0, 20.0], "below": []}},
        out_dir=tmp_path,
        log=lambda s: None,
    )
    assert [t["overrides"]["scale"] for t in rec["trials"]] == [2.0, 0.5, 1.0, 3.0, 8.0]  # 20 never tried
    assert [bool(t.get("extension")) for t in rec["trials"]] == [False] * 3 + [True] * 2
    assert rec["chosen"] == {"scale": 3.0} and edge_keys(rec) == []
    assert rec["extend"] == {"scale": {"above": [3.0, 8.0, 20.0], "below": []}}
    below = tune(
        "toy_is",
        blind_target,
        settings,
        space={"scale": [4.0, 8.0]},
        extend={"scale": {"above": [], "below": [1.5, 0.25]}},
        out_dir=tmp_path,
        log=lambda s: None,
    )
    assert [t["overrides"]["scale"] for t in below["trials"]] == [2.0, 4.0, 8.0, 1.5, 0.25]
    assert below["chosen"] == {"scale": 1.5}


def test_an_extension_resumes_a_finished_search_without_repeating_it(wide_target, tmp_path):
    settings = TuneSettings(steps=1, num_eval=1024)
    space = {"scale": [0.5, 1.0]}
    first = tune(
        "toy_is", wide_target, settings, space=space, extend={}, out_dir=tmp_path, log=lambda s: None
    )
    assert first["chosen"] == {"scale": 2.0} and edge_keys(first) == ["scale"]  # the optimum lies above
    lines = []
    rec = tune(
        "toy_is",
        wide_target,
        settings,
        space=space,
        extend={"scale": {"above": [3.0, 8.0]}},
        out_dir=tmp_path,
        resume=True,
        log=lines.append,
    )
    assert "3 trials kept" in lines[0] and len(lines) == 3  # only the two extension trials ran
    assert rec["trials"][:3] == first["trials"] and rec["commit"] == first["commit"]
    assert rec["chosen"] == {"scale": 3.0} and rec["tuning_evals"] == 5 * 1024
    other = tune(  # a different search is not resumed: it runs from the start
        "toy_is",
        wide_target,
        TuneSettings(steps=2, num_eval=1024),
        space=space,
        extend={},
        out_dir=tmp_path,
        resume=True,
        log=lines.append,
    )
    assert len(other["trials"]) == 3 and not any("kept" in s for s in lines[3:])


def test_a_search_with_a_pending_extension_is_not_done(tmp_path):
    """`pis` searches the declared learning rates; its declared extension goes below 3e-4 and, since
    short trials favour large rates, not above 3e-3."""
    settings = TuneSettings(steps=50, num_eval=256, max_trials=3, seed=0)
    ext = search_extension("pis")
    lower = ext["optim.learning_rate"]["below"][0]
    assert lower < min(search_space("pis")["optim.learning_rate"])
    assert ext["optim.learning_rate"]["above"] == []

    def trial(lr, elbo, **mark):
        return {
            "overrides": {"optim.learning_rate": lr},
            "status": "ok",
            "elbo": elbo,
            "elbo_se": 0.01,
            "reverse_ess": 0.5,
            **mark,
        }

    base = [trial(1e-3, -2.0), trial(3e-4, -1.0), trial(3e-3, -3.0)]
    record = {"steps": 50, "num_eval": 256, "seed": 0, "space": search_space("pis"), "trials": base}
    tuned_file("pis", "gmm9", tmp_path).write_text(json.dumps(record))
    assert next_extension(base, ext) == {"optim.learning_rate": lower}
    assert not tuned_done("pis", "gmm9", settings, tmp_path)  # 3e-4 won on the lower edge: extend
    record["trials"] = [*base, trial(lower, -1.5, extension=True)]
    tuned_file("pis", "gmm9", tmp_path).write_text(json.dumps(record))
    assert tuned_done("pis", "gmm9", settings, tmp_path)  # the next value down lost: bracketed
    assert next_extension([trial(1e-3, -2.0), trial(3e-4, -3.0), trial(3e-3, -1.0)], ext) is None  # top edge
    record["trials"] = [*base, trial(1e-2, -0.5, extension=True)]  # from a wider, since narrowed, extension
    tuned_file("pis", "gmm9", tmp_path).write_text(json.dumps(record))
    assert not tuned_done("pis", "gmm9", settings, tmp_path)  # rewritten without it


def test_a_killed_search_resumes_from_its_finished_trials(wide_target, tmp_path):
    settings = TuneSettings(steps=1, num_eval=512)
    space = {"scale": [0.5, 1.0, 3.0]}

    def killed_after_two(line):
        if "trial 2" in line:
            raise KeyboardInterrupt

    search = functools.partial(
        tune, "toy_is", wide_target, settings, space=space, extend={}, out_dir=tmp_path
    )
    with pytest.raises(KeyboardInterrupt):
        search(log=killed_after_two)
    partial = partial_file("toy_is", wide_target, tmp_path)
    assert len(json.loads(partial.read_text())["trials"]) == 2
    assert not tuned_file("toy_is", wide_target, tmp_path).exists()
    lines = []
    rec = search(resume=True, log=lines.append)
    assert "2 trials kept" in lines[0] and len(lines) == 3  # the two missing trials only
    assert [t["overrides"]["scale"] for t in rec["trials"]] == [2.0, 0.5, 1.0, 3.0]
    assert rec["chosen"] == {"scale": 3.0} and not partial.exists()


def test_a_narrowed_extension_drops_the_trials_it_no_longer_lists(wide_target, tmp_path):
    settings = TuneSettings(steps=1, num_eval=1024)
    space = {"scale": [0.5, 1.0]}
    wide = {"scale": {"above": [3.0, 8.0], "below": []}}
    first = tune(
        "toy_is", wide_target, settings, space=space, extend=wide, out_dir=tmp_path, log=lambda s: None
    )
    assert first["chosen"] == {"scale": 3.0}
    lines = []
    narrow = {"scale": {"above": [], "below": [0.25]}}
    rec = tune(
        "toy_is",
        wide_target,
        settings,
        space=space,
        extend=narrow,
        out_dir=tmp_path,
        resume=True,
        log=lines.append,
    )
    assert "(2 outside the declared extension left out)" in lines[0] and len(lines) == 1  # nothing to run
    assert [t["overrides"]["scale"] for t in rec["trials"]] == [2.0, 0.5, 1.0]
    assert rec["chosen"] == {"scale": 2.0} and rec["tuning_evals"] == 3 * 1024


def test_a_search_starts_from_the_table_not_from_an_earlier_choice(blind_target, tmp_path, monkeypatch):
    """A tuning file already chose scale 4; searching again still starts from the table's default (2),
    and the grid's cells, not the search, read the file."""
    from benchmarks.grid import tune as tune_module
    from benchmarks.grid.cell import resolve_cell

    monkeypatch.setattr(tune_module, "TUNED_DIR", tmp_path)
    tuned_file("toy_is", blind_target).write_text(
        json.dumps({"chosen": {"scale": 4.0}, "trials": [], "tuning_evals": 0.0})
    )
    assert resolve_cell("toy_is", blind_target).config.scale == 4.0
    assert resolve_cell("toy_is", blind_target, use_tuned=False).config.scale == 2.0
    rec = tune(
        "toy_is",
        blind_target,
        TuneSettings(steps=1, num_eval=256),
        space={"scale": [0.5, 1.0]},
        extend={},
        log=lambda s: None,
    )
    assert [t["overrides"]["scale"] for t in rec["trials"]] == [2.0, 0.5, 1.0]


def test_a_trial_stops_training_before_the_cells_budget(blind_target, tmp_path):
    """toy_is charged 10 evaluations a step, 200 steps in chunks of 50 (500 evaluations each), scored on
    100 samples (100 evaluations): under a cap of 1200 the second chunk is the last that fits
    (1000 + 500 + 100 > 1200 after it), as in a budgeted cell; without a cap all 200 steps run."""
    common = dict(space={"step_evals": [10.0]}, extend={}, out_dir=tmp_path, log=lambda s: None)
    capped = tune("toy_is", blind_target, TuneSettings(steps=200, num_eval=100, max_evals=1200.0), **common)
    assert [t["evals"] for t in capped["trials"]] == [100.0, 1100.0] and capped["max_evals"] == 1200.0
    free = tune("toy_is", blind_target, TuneSettings(steps=200, num_eval=100), **common)
    assert [t["evals"] for t in free["trials"]] == [100.0, 2100.0] and free["max_evals"] is None


def test_searches_under_different_caps_count_as_the_same_where_no_trial_reached_the_smaller():
    from benchmarks.grid.tune import _same_cap

    rec = {"trials": [{"evals": 900.0}, {"evals": 1000.0}]}
    assert _same_cap(rec, TuneSettings(max_evals=1000.0)) and _same_cap(rec, TuneSettings())
    assert not _same_cap(rec, TuneSettings(max_evals=950.0))  # the cap would have stopped a trial
    assert _same_cap({**rec, "max_evals": 2000.0}, TuneSettings(max_evals=1000.0))  # neither cap binds
    assert not _same_cap({**rec, "max_evals": 2000.0}, TuneSettings(max_evals=950.0))
    assert _same_cap({**rec, "max_evals": 2000.0}, TuneSettings())  # nor does it uncapped
    assert not _same_cap({**rec, "max_evals": 950.0}, TuneSettings())  # the record's cap did bind


def test_the_trials_of_a_suite_are_capped_at_its_learned_cells_budgets(blind_target, tmp_path):
    from benchmarks.grid.suites import load_suite

    path = tmp_path / "suite.json"
    budget = {"train_steps": 10, "chunk_size": 5, "max_evals": {blind_target: 5e4, "gmm9": 1e5}}
    spec = {
        "name": "capped",
        "description": "caps",
        "methods": ["pis", "smc"],
        "targets": [blind_target, "gmm9"],
    }
    path.write_text(json.dumps({**spec, "eval": {"num_samples": 64}, "seeds": [0], "budgets": {"b": budget}}))
    assert pair_budgets(load_suite(str(path))) == {
        ("pis", blind_target): 5e4,
        ("pis", "gmm9"): 1e5,
        ("smc", blind_target): None,  # a baseline's trial runs its schedule; the cell scales it
        ("smc", "gmm9"): None,
    }
