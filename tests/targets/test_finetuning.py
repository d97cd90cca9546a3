"""Fine-tuning tasks: the exact flow velocity, the closed-form tilt, log Z and the reward-vs-KL optimum.

Everything closed-form is checked against an independent Monte-Carlo estimate from exact draws of the
data mixture (float64 NumPy), with tolerances of 5 standard errors (fixed seeds).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import targets
from targets.finetuning import (
    FINETUNE_TASKS,
    REWARDS,
    FinetuneTask,
    frontier,
    get_task,
    task_names,
)

Z = 5.0
TASKS = task_names()


def _data_samples(task: FinetuneTask, n: int, seed: int = 0) -> np.ndarray:
    """Exact float64 draws of the data mixture (ancestral, NumPy)."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(task.num_components, size=n, p=np.exp(task.log_weights))
    chol = np.linalg.cholesky(task.covariances)
    return task.means[comp] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, task.dim)))


def _np_reward(task: FinetuneTask, x: np.ndarray) -> np.ndarray:
    p = task.reward_params
    if task.reward_kind == "linear":
        return x @ np.asarray(p["direction"])
    return -np.sum((x - np.asarray(p["centre"])) ** 2, axis=1) / (2 * p["scale"] ** 2)


def test_registry_and_target_capability():
    assert set(TASKS) == {"ft_gmm2d_linear", "ft_gmm2d_quadratic", "ft_gmm16_quadratic"}
    assert set(REWARDS.names()) == {"linear", "quadratic"}
    for name in TASKS:
        target = targets.get(name)
        assert "finetune" in target.capabilities and target.finetune_task is get_task(name)
        assert target.log_Z == pytest.approx(get_task(name).log_Z)
    assert targets.get("gmm9").finetune_task is None and "finetune" not in targets.get("gmm9").capabilities
    with pytest.raises(ValueError, match="linear"):
        FINETUNE_TASKS.get("nope")


def test_bad_input_is_rejected_with_the_choices():
    task = get_task("ft_gmm2d_quadratic")
    kwargs = dict(log_weights=task.log_weights, means=task.means, covariances=task.covariances)
    with pytest.raises(ValueError, match="lam > 0"):
        FinetuneTask("bad", **kwargs, reward_kind="quadratic", reward_params=task.reward_params, lam=-1.0)
    with pytest.raises(ValueError, match="linear, quadratic"):
        FinetuneTask("bad", **kwargs, reward_kind="cubic", reward_params={}, lam=1.0)
    with pytest.raises(ValueError, match="dim"):
        FinetuneTask("bad", **kwargs, reward_kind="linear", reward_params={"direction": (1.0,)}, lam=1.0)


@pytest.mark.parametrize("t", [0.15, 0.5, 0.85])
def test_velocity_matches_monte_carlo_posterior_mean(t):
    """`v(x, t) = E[(X_1 - x)/(1 - t) | X_t = x]`, by self-normalised IS over exact data draws `X_1`
    with weights `N(x; t X_1, (1 - t)² I)` (no kernel bias, independent of the component formula)."""
    task = get_task("ft_gmm2d_linear")
    x1 = _data_samples(task, 200_000, seed=1)
    rng = np.random.default_rng(2)
    points = (1 - t) * rng.standard_normal((4, 2)) + t * x1[:4]  # draws of p_t
    for x in points:
        log_k = -0.5 * np.sum((x - t * x1) ** 2, axis=1) / (1 - t) ** 2
        w = np.exp(log_k - log_k.max())
        f = (x1 - x) / (1 - t)
        est = w @ f / w.sum()
        se = np.sqrt(np.sum((w[:, None] * (f - est)) ** 2, axis=0)) / w.sum()  # delta method
        v = np.asarray(task.velocity(jnp.asarray(x, jnp.float32), t), np.float64)
        assert np.all(np.abs(v - est) < Z * se + 1e-4), (x, v, est, se)


@pytest.mark.parametrize("name", ["ft_gmm2d_linear", "ft_gmm16_quadratic"])
def test_velocity_score_identities_and_end_points(name):
    """`∇log p_t = (t v - x)/(1 - t)` with `∇log p_t` from autodiff of `marginal(t).log_prob`;
    `v(x, 0) = E[X_1] - x`, `v(x, 1) = x`."""
    task = get_task(name)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, task.dim)) + 0.5, jnp.float32)
    # one compilation each: the marginal is a PyTree argument, t a traced scalar
    marginal_grad = jax.jit(lambda m, y: jax.vmap(jax.grad(m.log_prob))(y))
    score_fn = jax.jit(jax.vmap(task.score, in_axes=(0, None)))
    velocity_fn = jax.jit(jax.vmap(task.velocity, in_axes=(0, None)))
    for t in (0.05, 0.4, 0.9):
        score, vel = score_fn(x, t), velocity_fn(x, t)
        np.testing.assert_allclose(score, marginal_grad(task.marginal(t), x), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(score, (t * vel - x) / (1 - t), rtol=1e-4, atol=1e-4)
    mean = np.exp(task.log_weights) @ task.means
    np.testing.assert_allclose(velocity_fn(x, 0.0), mean - x, atol=1e-5)
    np.testing.assert_allclose(velocity_fn(x, 1.0), x, atol=1e-5)


@pytest.mark.parametrize("name", TASKS)
def test_grad_reward_is_the_gradient(name):
    task = get_task(name)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, task.dim)), jnp.float32)
    np.testing.assert_allclose(
        jax.vmap(task.grad_reward)(x), jax.vmap(jax.grad(task.reward))(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", TASKS)
def test_tilted_law_matches_importance_reweighting_of_data_samples(name):
    """`log Z = log E_data[e^{λr}]`, the tilted mean, per-coordinate second moments and the `x_1 x_2`
    moment, by self-normalised IS from exact data draws (delta-method SEs)."""
    task = get_task(name)
    x = _data_samples(task, 200_000, seed=3)
    log_w = task.lam * _np_reward(task, x)
    shift = log_w.max()
    w = np.exp(log_w - shift)
    n = w.size
    log_z = math.log(w.mean()) + shift
    log_z_se = w.std(ddof=1) / (math.sqrt(n) * w.mean())
    assert abs(log_z - task.log_Z) < Z * log_z_se, (log_z, task.log_Z, log_z_se)
    params = task.tilted_parameters()
    probs = np.exp(params["log_weights"])
    mean = probs @ params["means"]
    second = np.einsum("k,kij->ij", probs, params["covariances"]) + np.einsum(
        "k,ki,kj->ij", probs, params["means"], params["means"]
    )
    f = np.concatenate([x, x**2, x[:, :1] * x[:, 1:2]], axis=1)
    exact = np.concatenate([mean, np.diag(second), [second[0, 1]]])
    est = w @ f / w.sum()
    se = np.sqrt(np.sum((w[:, None] * (f - est)) ** 2, axis=0)) / w.sum()
    assert np.all(np.abs(est - exact) < Z * se), np.max(np.abs(est - exact) / se)


@pytest.mark.parametrize("name", TASKS)
def test_target_log_prob_is_the_tilt_of_the_data_law(name):
    """`Target.log_prob = log p_data + λ r = log p*(x) + log Z` (p* the normalised tilted mixture)."""
    task = get_task(name)
    target = targets.get(name)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(6, task.dim)), jnp.float32)
    lhs = jax.vmap(target.log_prob)(x)
    np.testing.assert_allclose(lhs, jax.vmap(task.tilted().log_prob)(x) + target.log_Z, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        lhs, jax.vmap(task.data.log_prob)(x) + task.lam * jax.vmap(task.reward)(x), rtol=1e-6, atol=1e-5
    )


@pytest.mark.slow  # 50,000 exact draws per task, compared within standard errors
@pytest.mark.parametrize("name", TASKS)
def test_reward_optimum_matches_monte_carlo_on_exact_tilted_samples(name):
    """`E_{p*}[r]` and `KL(p*||p_data) = E_{p*}[log p* - log p_data]` from exact draws of p*."""
    task = get_task(name)
    x = task.tilted().sample(jax.random.key(5), 50_000)
    r = np.asarray(jax.vmap(task.reward)(x), np.float64)
    log_ratio = np.asarray(jax.vmap(task.tilted().log_prob)(x), np.float64) - np.asarray(
        jax.vmap(task.data.log_prob)(x), np.float64
    )
    opt = task.reward_optimum
    for values, exact in ((r, opt.reward_mean), (log_ratio, opt.kl)):
        se = values.std(ddof=1) / math.sqrt(values.size)
        assert abs(values.mean() - exact) < Z * se + 1e-4, (values.mean(), exact, se)
    assert opt.kl > 0 and opt.reward_mean > opt.base_reward_mean
    assert opt.log_Z == pytest.approx(task.lam * opt.reward_mean - opt.kl)


def test_frontier_is_monotone_with_slope_lambda():
    """Along the optimal frontier both E[r] and KL grow with λ, and dKL/dE[r] = λ."""
    task = get_task("ft_gmm2d_quadratic")
    lams = np.linspace(0.2, 3.0, 15)
    points = frontier(task, lams)
    rewards = np.array([p.reward_mean for p in points])
    kls = np.array([p.kl for p in points])
    assert np.all(np.diff(rewards) > 0) and np.all(np.diff(kls) > 0)
    eps = 1e-4
    for lam in (0.5, 1.0, 2.0):
        lo, hi = frontier(task, [lam - eps, lam + eps])
        assert (hi.kl - lo.kl) / (hi.reward_mean - lo.reward_mean) == pytest.approx(lam, rel=1e-4)
    assert frontier(task, [task.lam])[0] == task.reward_optimum


def test_marginal_interpolates_noise_and_data():
    task = get_task("ft_gmm2d_linear")
    np.testing.assert_allclose(task.marginal(1.0).covariances(), task.data.covariances(), atol=1e-6)
    np.testing.assert_allclose(
        task.marginal(0.0).covariances(), np.broadcast_to(np.eye(2), (4, 2, 2)), atol=1e-7
    )
    np.testing.assert_allclose(task.marginal(0.3).means, 0.3 * task.means, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        task.marginal(1.5)
