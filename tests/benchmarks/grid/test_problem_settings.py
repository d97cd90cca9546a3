"""The typed problem settings: the ground-truth-free pilot default of sigma (with its warning and its
cost in the record), the method fields that follow sigma, and overrides from suites and the CLI."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from benchmarks.grid import hyperparams
from benchmarks.grid.cell import cell_inputs, resolve_cell
from benchmarks.grid.problems import ProblemConfig, build_problem
from benchmarks.grid.suites import load_suite, parse_set, with_settings
from tests.benchmarks import toy_method

RADIUS = 6.0
SCALES = jnp.array([0.1, 10.0])  # along and across the direction of the centre


@pytest.fixture(scope="module")
def offset_target():
    """An anisotropic Gaussian centred at radius 6 (scales 0.1 and 10), with no hyperparams entry."""
    name = "test_offset_anisotropic"
    centre = RADIUS * jnp.array([np.cos(0.3), np.sin(0.3)], jnp.float32)
    rotation = jnp.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]], jnp.float32)

    def log_prob(x):
        z = (rotation.T @ (x - centre)) / SCALES
        return -0.5 * jnp.sum(z**2)

    targets.register_target(name, log_prob, dim=2)
    yield name
    targets.TARGETS.unregister(name)


def test_pilot_default_covers_the_target_and_warns(offset_target, capsys):
    """No layer sets sigma: the pilot's estimate is used, a warning names the target, the method
    fields that follow sigma take it, and the record carries the pilot's cost."""
    resolved = hyperparams.resolve("smc", offset_target)
    sigma = resolved.problem.sigma
    # the mass sits at radius 6 with a spread of 10 across: a base N(0, σ² I) must reach both
    exact_per_coordinate = np.sqrt(
        np.array([RADIUS * np.cos(0.3), RADIUS * np.sin(0.3)]) ** 2
        + np.array([0.1 * np.cos(0.3) ** 2 + 10 * np.sin(0.3) ** 2, 10 * np.cos(0.3) ** 2]) ** 2
    )
    assert 0.5 * exact_per_coordinate.max() < sigma < 2.0 * exact_per_coordinate.max(), sigma
    assert f"target {offset_target!r} has no sigma in hyperparams.json" in capsys.readouterr().err
    assert resolved.method["init_scale"] == sigma
    assert resolved.pilot["sigma"] == sigma and resolved.pilot["cost"]["energy_evals"] > 0
    assert resolved.pilot["cost"]["grad_evals"] == resolved.pilot["cost"]["energy_evals"]
    # deterministic: the same estimate again (cached, no second warning) and from a fresh pilot
    assert hyperparams.resolve("cmcd_kl", offset_target).method["initial_std"] == sigma
    assert capsys.readouterr().err == ""
    from samplers.pilot import pilot_scale

    fresh = pilot_scale(targets.get(offset_target).log_prob, 2, resolved.problem.pilot)
    assert float(f"{fresh.scale:.3g}") == sigma


def test_overrides_win_over_the_pilot_and_the_table(offset_target, capsys):
    overrides = {"problem": {"sigma": 6}, "method": {"init_scale": 2.5}}
    resolved = hyperparams.resolve("smc", offset_target, overrides=overrides)
    assert resolved.problem.sigma == 6 and resolved.pilot is None
    assert resolved.method["init_scale"] == 2.5
    assert (
        hyperparams.resolve("nets_pinn", offset_target, overrides={"problem": {"sigma": 6}}).method["s0"] == 6
    )
    cell = resolve_cell(
        "pis", offset_target, overrides={"problem": {"sigma": 6}}, **{"optim.learning_rate": 0.01}
    )
    assert float(cell.problem.base.schedule.sigma_value) == 6.0 and cell.config.optim.learning_rate == 0.01
    # a tabled target: the table's sigma, no pilot, overridable
    assert hyperparams.resolve("smc", "gmm9").problem.sigma == 5.0
    assert hyperparams.resolve("smc", "gmm9", overrides={"problem": {"sigma": 7}}).method["init_scale"] == 7
    assert "pilot" not in capsys.readouterr().err


def test_problem_config_is_typed_and_recorded():
    config = hyperparams.resolve("dds", "gmm9").problem
    assert isinstance(config, ProblemConfig) and config.base == "vp" and config.sigma == 5.0
    assert float(build_problem(targets.get("gmm9"), config).base.sigma0) == 5.0  # sigma0 follows sigma
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['sigmaa'\]; valid fields: \['base'"):
        hyperparams.resolve("smc", "gmm9", overrides={"problem": {"sigmaa": 1}})
    with pytest.raises(ValueError, match="sigma must be positive or None, got 'big'"):
        hyperparams.resolve("smc", "gmm9", overrides={"problem": {"sigma": "big"}})
    with pytest.raises(
        ValueError, match=r"unknown base 'ou'; valid choices: \['brownian', 'brownian_source', 'flow', 'vp'\]"
    ):
        ProblemConfig(base="ou")
    geometric = dataclasses.replace(config, base="brownian", schedule="geometric")
    assert float(build_problem(targets.get("gmm9"), geometric).base.schedule.sigma_max) == 5.0
    inputs = cell_inputs(resolve_cell("smc", "gmm9"), {"name": "b"}, 8, fingerprint="f")
    assert inputs["problem"]["sigma"] == 5.0 and "sigma0" not in inputs["problem"]
    json.dumps(inputs)


def test_asbs_source_settings():
    """asbs runs from the reference's sources (the harmonic prior on DW4/LJ13/LJ55: variance 2 scale²/3
    on the zero centre-of-mass subspace, N(0, I) elsewhere); the other methods' settings record no source."""
    dw4 = hyperparams.resolve("asbs", "dw4")
    base = build_problem(targets.get("dw4"), dw4.problem).base
    assert (base.kind, base.source_var, base.schedule.sigma_max) == (
        "brownian_source",
        pytest.approx(8 / 3),
        1.0,
    )
    assert dw4.method == {"adjoint_epochs": 40, "corrector_epochs": 4}
    assert (
        build_problem(targets.get("gmm40"), hyperparams.resolve("asbs", "gmm40").problem).base.source_var
        == 1.0
    )
    harmonic = dataclasses.replace(hyperparams.resolve("asbs", "gmm9").problem, source="harmonic")
    with pytest.raises(ValueError, match="valid sources here: 'gauss'"):
        build_problem(targets.get("gmm9"), harmonic)
    with pytest.raises(ValueError, match=r"source must be one of \['gauss', 'harmonic'\]"):
        ProblemConfig(source="delta")
    assert (
        "source"
        not in cell_inputs(resolve_cell("adjoint_sampling", "dw4"), {"name": "b"}, 8, fingerprint="f")[
            "problem"
        ]
    )


def test_suite_settings_and_cli_set_are_checked(tmp_path):
    quick = load_suite("quick")
    suite = with_settings(quick, parse_set(["problem.sigma=6", "method.optim.learning_rate=3e-3"]))
    assert suite.name.startswith("quick+set-") and suite.settings["problem"] == {"sigma": 6}
    assert suite.overrides("pis")["method"] == {"optim": {"learning_rate": 3e-3}}
    assert suite.overrides("smc")["method"] == {}  # SMC has no optimiser
    per_method = parse_set(["methods.smc.init_scale=2", "methods.pis.network.hidden=[8, 8]"])
    assert per_method == {"methods": {"smc": {"init_scale": 2}, "pis": {"network": {"hidden": [8, 8]}}}}
    assert with_settings(quick, per_method).overrides("pis")["method"] == {"network": {"hidden": [8, 8]}}
    for bad, match in [
        (["problem.sigma=-1"], "sigma must be positive or None"),
        (["method.optim.learning_rate=0"], "learning_rate must be positive"),
        (["method.learning_rate=1e-3"], r"'learning_rate' is now 'optim.learning_rate'"),
        (["method.nonsense=1"], r"\['nonsense'\] belong to no method of the suite"),
        (["methods.nope.batch_size=2"], r"not in the suite; valid: \["),
    ]:
        with pytest.raises(ValueError, match=match):
            with_settings(quick, parse_set(bad))
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_set(["sigma=6"])
    path = toy_method.write_suite(
        tmp_path,
        name="mine",
        methods=["smc"],
        targets=["gmm9"],
        eval={"num_samples": 8},
        settings={"problem": {"num_steps": 8}, "methods": {"smc": {"init_scale": "wide"}}},
    )
    with pytest.raises(
        ValueError, match="settings of smc: SMCConfig: init_scale must be positive, got 'wide'"
    ):
        load_suite(str(path))


def test_every_follower_declares_a_problem_setting():
    fields = {f.name for f in dataclasses.fields(ProblemConfig)}
    from samplers.fields import followers

    found = {name: followers(samplers.get(name).config_cls) for name in samplers.names()}
    assert found["smc"] == {"init_scale": "sigma"} and found["cmcd_lv"] == {"initial_std": "sigma"}
    assert found["nets_action"] == {"s0": "sigma"} and found["nuts"] == {"init_scale": "sigma"}
    assert all(source in fields for names in found.values() for source in names.values())
