"""log Z / ELBO / EUBO / BAR / ESS metrics on an analytic importance-sampling problem.

The estimators are `samplers.estimators` (tested there); these tests check the metric layer (float64
evaluation, keys, errors against the target's log Z, NaN handling) with statistical assertions.

Proposal q = N(0, s²) and unnormalised target γ = Z · N(μ, 1) in 1-D, so log w = log γ − log q has
E_q[w] = Z (forward "paths" of length 0) and backward draws x ~ p = N(μ, 1) give the same functional.
Closed forms: ELBO = log Z − KL(q‖p), EUBO = log Z + KL(p‖q), both ESS → 1 / ∫ p²/q.
Every tolerance is a multiple of a standard error (fixed seeds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import targets
from benchmarks import metrics
from benchmarks.metrics import ess, log_z

LOG_Z, MU, S = 1.7, 0.5, 1.2  # s in (1/√2, √2): both importance-weight variances are finite
N_F, N_B = 2000, 400  # forward / backward sample sizes (few distinct shapes: few compilations)


def log_gamma(x):
    return LOG_Z + stats.norm.logpdf(x, MU, 1.0)


def forward_log_w(rng, n):
    x = rng.normal(0.0, S, n)
    return log_gamma(x) - stats.norm.logpdf(x, 0.0, S)


def backward_log_w(rng, n):
    x = rng.normal(MU, 1.0, n)
    return log_gamma(x) - stats.norm.logpdf(x, 0.0, S)


def kl_normal(m1, s1, m2, s2):
    return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


ESS_LIMIT = (
    1.0 / integrate.quad(lambda x: stats.norm.pdf(x, MU, 1) ** 2 / stats.norm.pdf(x, 0, S), -30, 30)[0]
)


TARGET = targets.Target(
    name="metrics_test_1d",
    dim=1,
    log_Z=LOG_Z,
    log_prob_fn=lambda x: LOG_Z - 0.5 * jnp.sum((x - MU) ** 2) - 0.5 * np.log(2 * np.pi),
)


def context(log_w=None, backward=None):
    n = 4 if log_w is None else len(log_w)
    m = None if backward is None else len(backward)
    return metrics.EvalContext(
        jax.random.key(0),
        TARGET,
        jnp.zeros((n, 1)),
        log_w=log_w,
        reference=None if m is None else jnp.zeros((m, 1)),
        backward_log_w=backward,
    )


def test_is_log_z_unbiased_within_se_and_se_calibrated():
    rng = np.random.default_rng(0)
    runs = [log_z.log_z_metrics(context(forward_log_w(rng, N_F))) for _ in range(30)]
    values = np.array([r["logZ/estimate"] for r in runs])
    ses = np.array([r["logZ/se"] for r in runs])
    # log Ẑ is biased low by ≈ se²/2 (Jensen), negligible here against the SE of the mean
    assert abs(values.mean() - LOG_Z) < 4 * values.std(ddof=1) / np.sqrt(len(values))
    assert 0.7 < ses.mean() / values.std(ddof=1) < 1.4


def test_elbo_eubo_match_closed_forms_and_bracket_log_z():
    rng = np.random.default_rng(1)
    out = log_z.log_z_metrics(context(forward_log_w(rng, N_F)))
    out |= log_z.log_z_backward_metrics(context(backward=backward_log_w(rng, N_F)))
    elbo, elbo_se = out["logZ/elbo"], out["logZ/elbo_se"]
    eubo, eubo_se = out["logZ/eubo"], out["logZ/eubo_se"]
    assert abs(elbo - (LOG_Z - kl_normal(0.0, S, MU, 1.0))) < 4 * elbo_se
    assert abs(eubo - (LOG_Z + kl_normal(MU, 1.0, 0.0, S))) < 4 * eubo_se
    assert elbo + 4 * elbo_se < LOG_Z < eubo - 4 * eubo_se
    assert out["logZ/eubo_gap"] == pytest.approx(eubo - LOG_Z)


def test_backward_and_bar_estimates_recover_log_z():
    rng = np.random.default_rng(2)
    bwd, bar = [], []
    for _ in range(20):
        out = log_z.log_z_backward_metrics(context(backward=backward_log_w(rng, N_F)))
        bwd.append((out["logZ/backward_estimate"], out["logZ/backward_estimate_se"]))
        out = log_z.log_z_bar_metrics(context(forward_log_w(rng, N_F), backward_log_w(rng, N_B)))
        bar.append((out["logZ/bar"], out["logZ/bar_se"]))
        assert out["logZ/bar_error"] == pytest.approx(abs(out["logZ/bar"] - LOG_Z))
    for runs in (np.array(bwd), np.array(bar)):
        values, ses = runs[:, 0], runs[:, 1]
        assert abs(values.mean() - LOG_Z) < 4 * values.std(ddof=1) / np.sqrt(len(values))
        assert 0.6 < ses.mean() / values.std(ddof=1) < 1.6


def test_ess_edge_cases_and_nan_weights():
    # every array has 10 entries, so the estimators are traced for one shape only
    assert ess.ess_reverse_metrics(context(np.zeros(10)))["ess/reverse"] == pytest.approx(1.0)
    out = ess.ess_reverse_metrics(context(np.array([0.0] + [-np.inf] * 9)))
    assert out["ess/reverse"] == pytest.approx(0.1) and out["ess/num_samples"] == 10
    huge = np.array([1e4, 1e4] + [0.0] * 8)  # max shift: no overflow
    assert ess.ess_reverse_metrics(context(huge))["ess/reverse"] == pytest.approx(0.2)
    assert ess.ess_forward_metrics(context(backward=np.full(10, 4.2)))["ess/forward"] == pytest.approx(1.0)
    nan = log_z.log_z_metrics(context(np.array([0.0, np.nan] + [1.0] * 8)))
    assert all(np.isnan(v) for v in nan.values())


def test_ess_converges_to_the_chi_square_limit():
    rng = np.random.default_rng(3)
    rev = np.array(
        [ess.ess_reverse_metrics(context(forward_log_w(rng, N_F)))["ess/reverse"] for _ in range(20)]
    )
    fwd = np.array(
        [
            ess.ess_forward_metrics(context(backward=backward_log_w(rng, N_F)))["ess/forward"]
            for _ in range(20)
        ]
    )
    for values in (rev, fwd):  # + 5e-3: the O(1/N) bias of a ratio estimator at N = 2000
        assert abs(values.mean() - ESS_LIMIT) < 5 * values.std(ddof=1) / np.sqrt(len(values)) + 5e-3


def test_log_z_metrics_through_evaluate():
    rng = np.random.default_rng(4)
    ctx = context(jnp.asarray(forward_log_w(rng, N_F)), jnp.asarray(backward_log_w(rng, N_B)))
    values, skipped = metrics.evaluate(
        ctx, names=["log_z", "log_z_error", "log_z_backward", "log_z_bar", "ess_reverse", "ess_forward"]
    )
    assert skipped == {}
    assert values["logZ/error"] == pytest.approx(abs(values["logZ/estimate"] - LOG_Z))
    assert values["logZ/signed_error"] == pytest.approx(values["logZ/estimate"] - LOG_Z)
    assert values["logZ/reference_se"] == 0.0
    assert values["logZ/elbo_gap"] > 0 and values["logZ/eubo_gap"] > 0
    assert abs(values["logZ/bar"] - LOG_Z) < 5 * values["logZ/bar_se"]
    assert values["ess/num_samples"] == N_F and values["ess/forward_num_samples"] == N_B
    assert 0 < values["ess/reverse"] <= 1 and 0 < values["ess/forward"] <= 1
    assert values["ess/reverse_se"] > 0
