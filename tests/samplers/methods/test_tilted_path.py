"""Tests of the tilted path `p_t e^{λ_t r}` on the memoryless flow base (samplers/methods/tilted_path.py) and
of the thermodynamic methods on it (`nets_pinn`, `nets_action`, `cmcd_kl`, `cmcd_lv`).

- Closed forms (float64, fast): the velocity-derived score is the flow marginal's score, with the terminal
  limit at `t = 1`; the base's reversal `X_s | X_t ~ N((s/t) X_t, V)` is the Gaussian conditional of the
  base for a Gaussian data law (and does not depend on it); the rate `D = λ̇r + λ∇r·v` is
  `∂_t log ρ̃ + ∇·v + ∇log ρ̃·v` by autodiff of the exact `log p_t`. (The NETS losses' fixed points on this
  path: `tests/samplers/methods/test_nets.py`, case `"flow"`.)
- Estimators (slow): on `ft_gmm2d_linear` (exact log Z) with its harness grid (t0 = 0.01, 200 quadratic
  steps), at the untrained drift and after a short training, `E[w]/Z = 1` within 4 SE for the forward
  weights (NETS: the trapezoid Jarzynski weight and the Crooks weight; CMCD: its Crooks weight),
  `E_B[1/w] Z = 1` within 4 SE on backward paths from exact tilted samples, and BAR's log Z within 4 SE.
  NETS' weights are exact only up to O(h) (CMCD's exactly, with the model's ODE log p_1); the
  discretisation bias was checked to be below the SE by the same estimates on coarser and finer grids
  (docs/methods.md §1.4); NETS' Crooks weight is checked on 800 steps (its O(h) constant is visible at
  200).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from benchmarks.grid.problems import ProblemConfig, build_finetuning_problem
from samplers import estimators
from samplers.methods.bridge_targets import TIME_EPS
from tests.samplers.methods.tilted_flow import FLOW_MEAN, FLOW_T0, FLOW_VAR, flow_case


def _flow_log_prob(x, t):
    """`log p_t(x)` of the flow of `N(m, c I)`: `N(t m, (t²c + (1 - t)²) I)` (2-D)."""
    var = t * t * FLOW_VAR + (1.0 - t) ** 2
    return -0.5 * jnp.sum((x - t * FLOW_MEAN) ** 2) / var - jnp.log(2.0 * jnp.pi * var)


def test_scores_rate_and_base_reversal_closed_forms(x64):
    path = flow_case().path
    x = 1.5 * jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)

    @jax.jit
    def gaps(t):
        point = jax.vmap(path.point)(x)
        score = jax.vmap(path.base_score, in_axes=(0, None))(x, t)
        exact_score = jax.vmap(jax.grad(_flow_log_prob), in_axes=(0, None))(x, t)

        def identity(y, p):  # ∂_t log ρ̃ + ∇·v + ∇log ρ̃·v with log ρ̃ = log p_t + λ_t r
            log_rho = lambda s: _flow_log_prob(y, s) + path.level(s) * p.tilt
            div_v = jnp.trace(jax.jacfwd(path.base.velocity)(y, t))
            grad_log_rho = jax.grad(_flow_log_prob)(y, t) + path.level(t) * p.grad_tilt
            return jax.grad(log_rho)(t) + div_v + jnp.dot(grad_log_rho, path.base.velocity(y, t))

        rate_gap = jax.vmap(path.rate, in_axes=(0, None, 0))(x, t, point) - jax.vmap(identity)(x, point)
        return jnp.max(jnp.abs(score - exact_score)), jnp.max(jnp.abs(rate_gap))

    # inside the window the velocity formula (float64 round-off); in (1 - TIME_EPS, 1) the terminal limit,
    # off by O(TIME_EPS); at t = 1 the limit is exact
    for t, tolerance in (
        (FLOW_T0, 1e-9),
        (0.5, 1e-9),
        (0.99, 1e-9),
        (1.0 - 0.5 * TIME_EPS, 1e-3),
        (1.0, 1e-9),
    ):
        score_gap, rate_gap = gaps(jnp.float64(t))
        assert float(score_gap) < tolerance and float(rate_gap) < 1e-9, (t, float(score_gap), float(rate_gap))

    # The base's reversal: for X_1 ~ N(m, c), X_s = s X_1 + (1 - s) Z_s with
    # Cov(X_s, X_t | X_1) = s(1 - t)²/t, Gaussian conditioning gives
    # X_s | X_t = N(m_s + k (X_t - m_t), V): k = s/t and V free of m and c.
    for c in (0.3, 0.8, 4.0):
        for s, t in ((0.05, 0.06), (0.3, 0.7), (0.98, 1.0)):
            cov = s * t * c + s * (1.0 - t) ** 2 / t
            var_s, var_t = s * s * c + (1.0 - s) ** 2, t * t * c + (1.0 - t) ** 2
            np.testing.assert_allclose(cov / var_t, s / t, rtol=1e-12)
            reverse_var = (t - s) * (t + s - 2.0 * s * t) / t**2  # the module docstring's closed form
            np.testing.assert_allclose(var_s - cov**2 / var_t, reverse_var, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# estimators on a fine-tuning task with an exact log Z (slow)
# ---------------------------------------------------------------------------------------------

TASK = "ft_gmm2d_linear"
NUM_PATHS = 20_000
TRAIN_STEPS = 100


def _ratio_check(values: np.ndarray, what: str) -> str:
    """`mean(values) = 1` within 4 SE (values are `e^{log w - log Z}` or its inverse)."""
    mean, se = float(np.mean(values)), float(np.std(values) / np.sqrt(values.size))
    assert abs(mean - 1.0) < 4.0 * se, (what, mean, se)
    return f"{what} {mean - 1:+.4f}±{se:.4f}"


def _check_estimators(methods: dict, state, problem, target, tag: str) -> list[str]:
    """Forward weights of every method in `methods` (same state) and, for the one with `backward`, the
    backward identity and BAR."""
    log_Z = target.log_Z
    x_target = target.sample(jax.random.key(11), NUM_PATHS)
    lines = []
    for form, method in methods.items():
        draws = jax.jit(method.sample, static_argnums=2)(jax.random.key(10), state, NUM_PATHS)
        log_w = np.asarray(draws.log_w, np.float64)
        lines.append(_ratio_check(np.exp(log_w - log_Z), f"{tag} {form} forward"))
        if method.backward is None:
            continue
        log_w_back = np.asarray(jax.jit(method.backward)(jax.random.key(12), state, x_target), np.float64)
        lines.append(_ratio_check(np.exp(log_Z - log_w_back), f"{tag} {form} backward"))
        bar = estimators.bar_log_Z(jnp.asarray(log_w), jnp.asarray(log_w_back))
        error, se = float(bar.value) - log_Z, float(bar.se)
        assert abs(error) < 4.0 * se, (tag, form, "BAR", error, se)
        lines.append(f"{tag} {form} BAR {error:+.4f}±{se:.4f}")
    return lines


# NETS' Crooks weight on this path approximates log p_{t'}(x') - log p_t(x) by quadrature: O(h) with a
# visible constant (zero drift: E[w]/Z - 1 = -0.025 ± 0.008 at 200 steps), so it is checked on 800 steps;
# CMCD's base-relative weight and NETS' trapezoid A are within the SE at the harness's 200.
EVAL_STEPS = {"nets_pinn": 800, "nets_action": 800, "cmcd_kl": 200, "cmcd_lv": 200}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EVAL_STEPS))
def test_log_Z_estimators_are_unbiased_on_the_flow_base(name):
    target = targets.get(TASK)
    problem = build_finetuning_problem(target, ProblemConfig(base="flow", num_steps=200, grid="quadratic"))
    fine = build_finetuning_problem(
        target, ProblemConfig(base="flow", num_steps=EVAL_STEPS[name], grid="quadratic")
    )
    spec = samplers.get(name)
    sizes = {"batch_size": 64, "optim": {"learning_rate": 1e-3}}
    forms = ("crooks", "jarzynski_trapezoid") if name.startswith("nets") else (None,)
    configs = {form: spec.make_config(sizes, **({"weights": form} if form else {})) for form in forms}
    # the state does not depend on the grid: train on the harness grid, evaluate on `fine`
    methods = {form or "crooks": spec.build(fine, config) for form, config in configs.items()}
    method = spec.build(problem, configs[forms[0]])
    state = method.init(jax.random.key(0))
    lines = _check_estimators(methods, state, fine, target, "untrained")
    step = jax.jit(method.step)
    first = None
    for i in range(TRAIN_STEPS):
        state, info = step(jax.random.key(100 + i), state)
        first = info if first is None else first
    assert np.isfinite(float(info.loss)), info
    lines += _check_estimators(methods, state, fine, target, "trained")
    print(f"{name}: loss {float(first.loss):.4g} -> {float(info.loss):.4g}; " + "; ".join(lines))
