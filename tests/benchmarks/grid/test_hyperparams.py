"""The hyper-parameter table's published settings: the Adjoint Sampling recipe's schedule on every
standard target (and its bridge well defined there in float32), the CMCD funnel initial scale."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import targets
from benchmarks.grid import hyperparams
from samplers.methods import asbs
from samplers.methods.bridge_targets import bridge_schedule

RECIPE_METHODS = ("adjoint_sampling", "novel_score_matching", "target_score_matching")
STANDARD_TARGETS = ("gaussian", "gmm25", "gmm40", "funnel10", "many_well32", "dw4", "lj13", "lj55")


@pytest.mark.parametrize("method", RECIPE_METHODS)
def test_adjoint_sampling_recipe_schedule_on_every_standard_target(method):
    """Geometric VE, σ_min = 1e-3, σ_max the target's scale; α ≤ 1 and β² ≥ 0 on a fine time grid, so
    the bridge draws of these cells are finite (in float32 the ratio ν̃_t/ν̃_1 rounds above 1)."""
    t = jnp.concatenate([jnp.linspace(0.0, 1.0, 10_001), jnp.linspace(0.99, 1.0, 10_001)]).astype(jnp.float32)
    for name in STANDARD_TARGETS:
        settings = hyperparams.resolve(method, name).problem
        assert settings.schedule == "geometric" and settings.sigma_min == 1e-3, (name, settings)
        problem = hyperparams.build_problem(targets.get(name), settings)
        c = bridge_schedule(problem).coefficients(t)
        assert float(jnp.max(c.alpha)) <= 1.0 and float(jnp.min(c.bridge_var)) >= 0.0, name
        assert np.all(np.isfinite(np.asarray(c.nu))), name


def test_asbs_reference_settings_on_every_standard_target():
    """ASBS: the geometric VE schedule from a source (harmonic on the particle systems, σ_max 1, 1, 2 on
    DW4, LJ13, LJ55 as in the *_asbs.yaml configs); its bridge measured from the start stays valid in
    float32 on a fine time grid."""
    t = jnp.concatenate([jnp.linspace(0.0, 1.0, 10_001), jnp.linspace(0.99, 1.0, 10_001)]).astype(jnp.float32)
    sigma_max = {"dw4": 1.0, "lj13": 1.0, "lj55": 2.0}
    for name in STANDARD_TARGETS:
        settings = hyperparams.resolve("asbs", name).problem
        assert settings.schedule == "geometric" and settings.sigma_min == 1e-3, (name, settings)
        assert settings.base == "brownian_source", name
        assert settings.source == ("harmonic" if name in sigma_max else "gauss"), name
        if name in sigma_max:
            assert settings.sigma_max == sigma_max[name], name
        problem = hyperparams.build_problem(targets.get(name), settings)
        c = asbs.increment_bridge(problem).coefficients(t)
        assert float(jnp.max(c.alpha)) <= 1.0 and float(jnp.min(c.bridge_var)) >= 0.0, name
        assert np.all(np.isfinite(np.asarray(c.nu))) and float(jnp.min(c.nu)) >= 0.0, name


def test_conditional_score_matching_keeps_the_constant_schedule():
    """CSM's target is singular as t -> 1 (~ 1/β_t): at σ_min = 1e-3 it diverged at step 0 on gmm25."""
    assert hyperparams.resolve("conditional_score_matching", "gmm25").problem.schedule == "linear"


@pytest.mark.parametrize("method", ["cmcd_kl", "cmcd_lv"])
def test_cmcd_starts_at_std_1_on_the_funnel_and_at_the_base_scale_elsewhere(method):
    assert hyperparams.resolve(method, "funnel10").method["initial_std"] == 1.0
    gmm = hyperparams.resolve(method, "gmm25")
    assert gmm.method["initial_std"] == gmm.problem.sigma
