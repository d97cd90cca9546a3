"""Tests of the probability-flow likelihood (`samplers.flow_likelihood`): on the exact flow of Gaussian data
the ODE's `log p_1` is the data law's density and its custom gradient the data score; a solve that runs
out of steps gives NaN, not a wrong number; bad input raises."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers.base_processes import gaussian_log_prob
from samplers.flow_likelihood import FlowLikelihood, flow_log_prob
from tests.samplers.methods import gaussian_flow as gf


def _points():
    return 2.0 * jax.random.normal(jax.random.key(0), (6, 2))


def test_ode_log_prob_is_the_data_density_of_the_exact_flow():
    base = gf.flow_problem(8).base
    x = _points()
    got = jax.jit(jax.vmap(flow_log_prob(base)))(x)
    exact = jax.vmap(lambda y: gaussian_log_prob(y, gf.MU, gf.C2, 2))(x)
    np.testing.assert_allclose(got, exact, atol=2e-4)


def test_custom_gradient_is_the_given_score_and_matches_the_solve():
    base = gf.flow_problem(8).base
    score = lambda y: -(y - gf.MU) / gf.C2  # noqa: E731  the data law's score
    x = _points()
    custom = FlowLikelihood(base.velocity, base.initial_log_prob, base.t0, score=score)
    plain = FlowLikelihood(base.velocity, base.initial_log_prob, base.t0)
    np.testing.assert_allclose(jax.vmap(jax.grad(custom))(x), jax.vmap(score)(x), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(plain))(x), jax.vmap(score)(x), atol=1e-3)


def test_a_solve_out_of_steps_is_nan_and_bad_t0_raises():
    base = gf.flow_problem(8).base
    starved = FlowLikelihood(base.velocity, base.initial_log_prob, base.t0, max_steps=1)
    assert bool(jnp.isnan(starved(jnp.ones(2))))
    with pytest.raises(ValueError, match="t0 must lie in"):
        FlowLikelihood(base.velocity, base.initial_log_prob, 1.0)
