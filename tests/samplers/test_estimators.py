"""Estimators on known answers: hand-computed weight vectors and Crooks-consistent Gaussian work."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers import estimators as est

summary = jax.jit(est.summary)


def test_uniform_weights_give_unit_ess_and_exact_values():
    log_w = jnp.full((64,), 1.7)
    out = summary(log_w, log_w[:16])
    assert float(out["reverse_ess"].value) == pytest.approx(1.0, abs=1e-6)
    assert float(out["forward_ess"].value) == pytest.approx(1.0, abs=1e-6)
    for name in ("log_Z", "log_Z_backward", "elbo", "eubo", "bar_log_Z"):
        value, se = out[name]
        assert float(value) == pytest.approx(1.7, abs=1e-5)
        assert float(se) == pytest.approx(0.0, abs=1e-5)


def test_known_weight_vector_matches_hand_computation():
    w = np.array([1.0, 2.0, 3.0, 4.0])
    log_w = jnp.log(jnp.asarray(w, jnp.float32))
    n = w.size
    out = summary(log_w, log_w)
    # log Ẑ = log mean w; delta-method SE = std(w, ddof=1)/(sqrt(N) mean w)
    assert float(out["log_Z"].value) == pytest.approx(np.log(2.5), rel=1e-6)
    assert float(out["log_Z"].se) == pytest.approx(np.std(w, ddof=1) / (np.sqrt(n) * 2.5), rel=1e-5)
    # ESS = (Σw)²/(N Σw²) = 100/(4·30)
    assert float(out["reverse_ess"].value) == pytest.approx(100 / 120, rel=1e-6)
    # ELBO = mean log w, SE = std(log w, ddof=1)/sqrt(N)
    assert float(out["elbo"].value) == pytest.approx(np.mean(np.log(w)), rel=1e-6)
    assert float(out["elbo"].se) == pytest.approx(np.std(np.log(w), ddof=1) / 2, rel=1e-5)
    # backward: log Ẑ = -log mean(1/w); forward ESS = N²/(Σw Σ1/w)
    inv_sum = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert float(out["log_Z_backward"].value) == pytest.approx(-np.log(inv_sum / n), rel=1e-6)
    assert float(out["forward_ess"].value) == pytest.approx(n**2 / (10 * inv_sum), rel=1e-6)
    assert float(out["eubo"].value) == pytest.approx(np.mean(np.log(w)), rel=1e-6)


def test_shift_equivariance_and_no_overflow():
    log_w = jax.random.normal(jax.random.key(0), (256,))
    reference = summary(log_w, log_w)
    for shift in (-1e4, 1e4):
        # float32 resolves 1e4 ± 1e-3, hence the tolerances
        shifted = summary(log_w + shift, log_w + shift)
        for name in ("log_Z", "log_Z_backward", "bar_log_Z"):
            assert float(shifted[name].value) == pytest.approx(float(reference[name].value) + shift, abs=0.02)
        for name in ("reverse_ess", "forward_ess"):
            assert float(shifted[name].value) == pytest.approx(float(reference[name].value), rel=5e-3)
    # a zero weight (log w = -inf) is allowed
    with_zero = summary(log_w.at[0].set(-jnp.inf), log_w)
    assert np.isfinite(float(with_zero["log_Z"].value)) and np.isfinite(float(with_zero["bar_log_Z"].value))


def test_one_dominant_weight_gives_ess_one_over_n():
    log_w = jnp.full((100,), -1e3).at[3].set(0.0)
    assert float(summary(log_w)["reverse_ess"].value) == pytest.approx(0.01, rel=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="vector"):
        est.log_Z(jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        est.elbo(jnp.zeros((1,)))


# -- Crooks-consistent Gaussian work: lw_F ~ N(log Z - s²/2, s²), lw_B ~ N(log Z + s²/2, s²) -------
# (E_F[e^{lw}] = Z, and the backward law is the forward law tilted by e^{lw}/Z, methods.md §7.1.)
LOG_Z, SPREAD, N_F, N_B, REPEATS = 1.3, 1.0, 400, 300, 400


@pytest.fixture(scope="module")
def gaussian_work_estimates():
    def one(key):
        key_f, key_b = jax.random.split(key)
        lw_f = LOG_Z - 0.5 * SPREAD**2 + SPREAD * jax.random.normal(key_f, (N_F,))
        lw_b = LOG_Z + 0.5 * SPREAD**2 + SPREAD * jax.random.normal(key_b, (N_B,))
        return est.summary(lw_f, lw_b)

    keys = jax.random.split(jax.random.key(42), REPEATS)
    return jax.jit(jax.vmap(one))(keys)


@pytest.mark.parametrize("name", ["log_Z", "log_Z_backward", "bar_log_Z", "elbo", "eubo"])
def test_estimators_on_gaussian_work(gaussian_work_estimates, name):
    values = np.asarray(gaussian_work_estimates[name].value, np.float64)
    ses = np.asarray(gaussian_work_estimates[name].se, np.float64)
    expected = {"elbo": LOG_Z - 0.5 * SPREAD**2, "eubo": LOG_Z + 0.5 * SPREAD**2}.get(name, LOG_Z)
    spread = values.std(ddof=1)
    # consistency: the mean over repeats is within 5 standard errors of the mean (+ the known
    # O(1/N) bias of log-mean-exp estimators, ±Var(w)/(2N Z²) = ±(e^{s²}-1)/(2N))
    bias = (np.exp(SPREAD**2) - 1) / (2 * min(N_F, N_B)) if name != "elbo" and name != "eubo" else 0.0
    assert abs(values.mean() - expected) < 5 * spread / np.sqrt(REPEATS) + bias
    # calibration: the reported SE matches the spread over repeats (SE of a std over 400 repeats ≈ 3.5%)
    assert 0.8 < np.median(ses) / spread < 1.25


def test_bar_beats_one_sided_estimators(gaussian_work_estimates):
    bar = np.asarray(gaussian_work_estimates["bar_log_Z"].value).std()
    assert bar < np.asarray(gaussian_work_estimates["log_Z"].value).std()
    assert bar < np.asarray(gaussian_work_estimates["log_Z_backward"].value).std()


def test_ess_on_gaussian_work(gaussian_work_estimates):
    # lognormal weights: reverse ESS → E[w]²/E[w²] = e^{-s²}; forward ESS → 1/(E_B[w]E_B[1/w]) = e^{-s²}
    for name in ("reverse_ess", "forward_ess"):
        values = np.asarray(gaussian_work_estimates[name].value, np.float64)
        ses = np.asarray(gaussian_work_estimates[name].se, np.float64)
        assert abs(values.mean() - np.exp(-(SPREAD**2))) < 5 * values.std(ddof=1) / np.sqrt(REPEATS) + 0.02
        assert 0.6 < np.median(ses) / values.std(ddof=1) < 1.6
