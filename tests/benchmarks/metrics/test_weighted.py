"""benchmarks/metrics/weighted: weighted samplers' sample metrics on raw and on resampled draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from benchmarks.metrics import EvalContext
from benchmarks.metrics.weighted import evaluate_raw_and_weighted, resample, sample_metric_names

N, REPEATS = 2000, 12
TARGET = targets.get("gmm9")  # nine equal modes
# the proposal q: the same nine components with weights 1:2:...:9 (raw draws over-represent the last)
LOG_QW = jnp.log(jnp.arange(1.0, 10.0) / 45.0)


def _draw_q(key, n):
    mix = TARGET.mixture
    k_c, k_n = jax.random.split(key)
    c = jax.random.categorical(k_c, LOG_QW, shape=(n,))
    return mix.means[c] + jnp.einsum("nij,nj->ni", mix.scale_trils[c], jax.random.normal(k_n, (n, 2)))


def _log_q(x):
    return jax.nn.logsumexp(LOG_QW + TARGET.mixture.component_log_probs(x))


def _weighted(key):
    """Mode metrics of draws of q with weights p/q (raw and resampled) and the reverse ESS fraction."""
    k_q, k_m = jax.random.split(key)
    xq = _draw_q(k_q, N)
    log_w = jax.vmap(TARGET.log_prob)(xq) - jax.vmap(_log_q)(xq)
    w = jnp.exp(log_w - log_w.max())
    q, _ = evaluate_raw_and_weighted(EvalContext(k_m, TARGET, xq, log_w=log_w), ["modes"])
    return q, float(w.sum() ** 2 / (w**2).sum() / N)


@pytest.mark.slow  # 12 repetitions of weighted and exact draws compared within standard errors
def test_weighted_metrics_of_q_with_weights_p_over_q_match_exact_draws_of_p():
    """EMC and mode-weight TV of resampled q-draws agree with exact p-draws (at the effective size)
    within 4 standard errors of the difference (over 12 repetitions); those of the raw q-draws are
    > 10 standard errors off."""
    keys = jax.random.split(jax.random.key(0), REPEATS)
    weighted_runs = [_weighted(jax.random.fold_in(k, 0)) for k in keys]
    # exact draws at the resampled draws' effective size n_eff = N·e / (1 + e) (e = reverse ESS
    # fraction: the importance-sampling noise of N·e draws plus the multinomial noise of N resamples)
    ess = float(np.mean([e for _, e in weighted_runs]))
    n_eff = int(N * ess / (1 + ess))
    exact_runs = [
        evaluate_raw_and_weighted(
            EvalContext(k, TARGET, TARGET.sample(jax.random.fold_in(k, 1), n_eff)), ["modes"]
        )[0]
        for k in keys
    ]
    runs = [(q, p) for (q, _), p in zip(weighted_runs, exact_runs, strict=True)]
    for key in ("modes/emc", "modes/weight_tv"):
        raw = np.array([q[key] for q, _ in runs])
        weighted = np.array([q["weighted/" + key] for q, _ in runs])
        exact = np.array([p[key] for _, p in runs])
        se = np.sqrt(weighted.var(ddof=1) / REPEATS + exact.var(ddof=1) / REPEATS)
        assert abs(weighted.mean() - exact.mean()) < 4 * se, (key, weighted.mean(), exact.mean(), se)
        se_raw = np.sqrt(raw.var(ddof=1) / REPEATS + exact.var(ddof=1) / REPEATS)
        assert abs(raw.mean() - exact.mean()) > 10 * se_raw, (key, raw.mean(), exact.mean(), se_raw)
    q, p = runs[0]
    assert "weighted/modes/weight_tv/noise_floor" not in q and "modes/weight_tv/noise_floor" in q
    assert not any(k.startswith("weighted/") for k in p), "unweighted draws get the raw pass only"


def test_sample_metrics_are_those_that_do_not_read_the_weights():
    names = sample_metric_names()
    assert {"modes", "mmd_rbf_median", "sinkhorn", "energy_w2", "finetune_reward"} <= set(names)
    assert not {"log_z", "ess_reverse", "ess_forward", "finetune_kl"} & set(names)


def test_resample_follows_the_weights_and_rejects_all_zero():
    x = jnp.arange(4.0)[:, None]
    draws = resample(jax.random.key(1), x, jnp.log(jnp.array([0.0, 1.0, 3.0, jnp.nan])), num=4000)
    frac = np.bincount(np.asarray(draws[:, 0], int), minlength=4) / 4000
    assert frac[0] == 0 and frac[3] == 0 and abs(frac[2] - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 4000)
    with pytest.raises(ValueError, match="no finite log-weight"):
        resample(jax.random.key(1), x, jnp.full(4, -jnp.inf))
