"""Tests of the lean-adjoint norm measurement (`samplers.claims.lean_adjoint`).

- Jacobian norms: exact `|ℓ(t)|`, `ℓ(t)` for the linear VP drift; power iteration against the exact
  singular value / symmetric-part eigenvalue (`jax.jacfwd`) on a non-linear memoryless-flow drift.
- Statistics: Brownian base (`b = 0`): both bounds are equalities; VP base: the Grönwall bound holds with
  tightness `exp(-Σ h|ℓ|)` and the one-sided bound is exact; non-linear flow base: both bounds hold.
- The markdown table of a report names every case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from samplers import sde
from samplers.base_processes import BrownianBase, LinearSchedule, VPBase
from samplers.claims import lean_adjoint as la
from samplers.problem import sampling_problem
from tests.samplers.methods.gaussian_flow import nonlinear_flow_problem  # non-linear base drift


def _gaussian_problem(base, num_steps: int = 12):
    return sampling_problem(targets.get("gaussian_correlated"), base, num_steps=num_steps)


def _control(params, x, t):
    return 0.5 * jnp.sin(2.0 * x + 3.0 * t)


def test_jacobian_norms_linear_drift_are_exact():
    problem = _gaussian_problem(VPBase(2, sigma0=2.0))
    trajectory = jax.random.normal(jax.random.key(0), (13, 4, 2))
    lip, lognorm = la.drift_jacobian_norms(jax.random.key(1), problem, trajectory)
    ell = np.asarray(problem.base.linear_drift_coefficient(problem.times[:-1]))
    np.testing.assert_allclose(np.asarray(lip), np.broadcast_to(np.abs(ell)[:, None], (12, 4)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(lognorm), np.broadcast_to(ell[:, None], (12, 4)), rtol=1e-6)


def test_power_iteration_matches_exact_jacobian_norms():
    problem = nonlinear_flow_problem()
    path = sde.simulate(
        jax.random.key(2), problem, _control, None, 8, sde.SDEConfig(integrator="scan", save_trajectory=True)
    )
    lip, lognorm = la.drift_jacobian_norms(jax.random.key(3), problem, path.trajectory, num_iterations=100)
    ts = problem.times[:-1]
    jac = jax.vmap(jax.vmap(jax.jacfwd(problem.base.drift), in_axes=(0, None)))(path.trajectory[:-1], ts)
    jac = np.asarray(jac, np.float64)  # (K, n, d, d)
    exact_lip = np.linalg.norm(jac, ord=2, axis=(-2, -1))
    exact_lognorm = np.linalg.eigvalsh(0.5 * (jac + np.swapaxes(jac, -1, -2)))[..., -1]
    np.testing.assert_allclose(np.asarray(lip), exact_lip, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(lognorm), exact_lognorm, rtol=2e-3, atol=2e-3 * exact_lip.max())
    assert np.ptp(exact_lip) > 0.1  # the drift is genuinely non-linear: the norm varies along the paths


@pytest.mark.parametrize("kind", ["brownian", "vp", "flow"])
def test_bounds_hold_and_tightness_is_as_predicted(kind):
    if kind == "flow":
        problem = nonlinear_flow_problem()
    else:
        base = VPBase(2, sigma0=2.0) if kind == "vp" else BrownianBase(2, LinearSchedule(1.5))
        problem = _gaussian_problem(base)
    stats = jax.jit(
        lambda key: la.lean_adjoint_statistics(key, problem, _control, None, 64, power_iterations=60)
    )(jax.random.key(4))
    stats = {name: float(value) for name, value in stats._asdict().items()}
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert stats["gronwall_ratio_max"] <= 1.0 + la.RELATIVE_TOLERANCE, stats
    assert stats["lognorm_ratio_max"] <= 1.0 + la.RELATIVE_TOLERANCE, stats
    assert stats["adjoint_max_max"] >= stats["adjoint_max_mean"] >= stats["terminal_mean"] * (1 - 1e-6)
    if kind == "brownian":
        assert stats["lipschitz_max"] == 0.0
        assert stats["gronwall_tightness"] == pytest.approx(1.0, abs=1e-6)
        assert stats["adjoint_max_mean"] == pytest.approx(stats["terminal_mean"], rel=1e-6)
    elif kind == "vp":
        ts = np.asarray(problem.times, np.float64)
        integral = np.sum(np.diff(ts) * 0.5 * np.asarray(problem.base.beta(ts[:-1]), np.float64))
        assert stats["lipschitz_integral"] == pytest.approx(integral, rel=1e-5)
        # |ã| shrinks backward (factors 1 - hβ/2 < 1): max_t |ã| = |ã_K|, Grönwall is loose by e^{∫L}.
        assert stats["adjoint_max_mean"] == pytest.approx(stats["terminal_mean"], rel=1e-5)
        assert stats["gronwall_tightness"] == pytest.approx(np.exp(-integral), rel=1e-4)
        assert stats["lognorm_tightness"] == pytest.approx(1.0, abs=1e-5)
    else:
        assert stats["lipschitz_max"] > 0.5 and 0.0 < stats["gronwall_tightness"] < 1.0


def test_markdown_table_names_every_case():
    summary = {
        key: 1.0
        for key in (
            "gronwall_ratio_max",
            "gronwall_tightness_final",
            "lognorm_ratio_max",
            "lognorm_tightness_final",
            "adjoint_max_mean_first",
            "adjoint_max_mean_final",
            "adjoint_max_max_overall",
            "terminal_mean_final",
            "lipschitz_max",
            "lipschitz_integral_final",
            "reverse_ess_final",
        )
    }
    summary.update(gronwall_holds=True, lognorm_holds=False, log_Z_error_final=None)
    report = {
        "statement": "s",
        "seed": 0,
        "quick": True,
        "cases": [{"name": "vp/x", "num_train_steps": 3, "summary": summary}],
    }
    table = la.markdown_table(report)
    assert "`vp/x`" in table and "**no**" in table and "n/a" in table
