"""Neal's funnel (Neal 2003, "Slice sampling", §8).

With `x = (v, x_1, …, x_{d-1})`:

    v ~ N(0, σ_v²),   x_i | v ~ N(0, e^v),   i = 1, …, d-1,
    log p(x) = log N(v; 0, σ_v²) + Σ_{i≥1} [ -½ log 2π - v/2 - ½ x_i² e^{-v} ].

The density is normalised (`log Z = 0`) and sampled exactly (`v = σ_v ε_0`, `x_i = e^{v/2} ε_i`).
Moments: `E x = 0`, `Var v = σ_v²`, `Var x_i = E e^v = e^{σ_v²/2}` (9.4877² for σ_v = 3).

`funnel10` is the standard 10-D instance with **σ_v = 3 (variance 9)** used by AFT/CRAFT, DDS,
fab-jax, Beyond ELBOs, DGFS/gfn-diffusion ("hard funnel"), sde_sampler and inference_gym's
`NealsFunnel` ("N(0, 3)" in papers means std 3). `make_funnel` builds other dimensions and scales
(σ_v = 1 is the "easy funnel" of PIS / gfn-diffusion). Reference: `targets.md` §2.

Numerics: `e^{-v}` overflows float32 for `v < -88` (≈ 29 σ_v); samplers meet huge gradients
`x_i e^{-v}` in the neck, which is the point of the benchmark (no clipping here; reference samples
are not clipped either, unlike Beyond ELBOs' `sample_bounds`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from targets.base import Target, entry

__all__ = ["FUNNEL_V_STD", "funnel10", "make_funnel"]

FUNNEL_V_STD = 3.0
"""Standard deviation of `v` in the standard funnel (variance 9; `targets.md` §2)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def make_funnel(dim: int = 10, v_std: float = FUNNEL_V_STD, *, name: str | None = None) -> Target:
    """Neal's funnel in `dim ≥ 2` dimensions with `v ~ N(0, v_std²)`.

    Args:
        dim: total dimension (one `v` plus `dim - 1` funnel coordinates).
        v_std: standard deviation `σ_v > 0` of `v`.
        name: registry id; default `funnel{dim}` (with the `v_std` appended when it is not 3).

    Returns:
        A normalised `Target` (`log Z = 0`) with exact samples and closed-form moments in
        `ground_truth` (`mean`, `covariance`, `std`, all float64).
    """
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2:
        raise ValueError(f"funnel dim must be an integer >= 2 (v plus at least one x_i), got {dim!r}")
    if isinstance(v_std, bool) or not isinstance(v_std, int | float | np.number) or not 0 < v_std < math.inf:
        raise ValueError(f"v_std must be a finite positive number, got {v_std!r}")
    dim, v_std = int(dim), float(v_std)
    if name is None:
        name = f"funnel{dim}" if v_std == FUNNEL_V_STD else f"funnel{dim}_vstd{v_std:g}".replace(".", "p")
    num_x = dim - 1
    log_v_std = math.log(v_std)

    def log_prob(x: jax.Array) -> jax.Array:
        v, rest = x[0], x[1:]
        log_p_v = -0.5 * (v / v_std) ** 2 - log_v_std - _HALF_LOG_2PI
        log_p_rest = -0.5 * jnp.sum(rest**2) * jnp.exp(-v) - 0.5 * num_x * v - num_x * _HALF_LOG_2PI
        return log_p_v + log_p_rest

    def sample(key: jax.Array, num_samples: int) -> jax.Array:
        noise = jax.random.normal(key, (num_samples, dim), dtype=_default_float())
        v = v_std * noise[:, :1]
        return jnp.concatenate([v, jnp.exp(0.5 * v) * noise[:, 1:]], axis=1)

    variances = np.array([v_std**2] + [math.exp(0.5 * v_std**2)] * num_x)
    return Target(
        name=name,
        dim=dim,
        log_prob_fn=jax.jit(log_prob),
        pretty_name=f"Funnel ({dim}-D" + (")" if v_std == FUNNEL_V_STD else f", std(v)={v_std:g})"),
        log_Z=0.0,
        log_Z_source="closed form: normalised density",
        sample_fn=jax.jit(sample, static_argnums=1),
        ground_truth={"mean": np.zeros(dim), "covariance": np.diag(variances), "std": np.sqrt(variances)},
        description=(
            f"Neal's funnel in {dim}-D: v ~ N(0, {v_std:g}^2), x_i | v ~ N(0, exp(v)) for i = 1..{num_x} "
            "(Neal 2003); normalised, log Z = 0, exact samples. The std-3 version is the one of AFT/CRAFT, "
            "DDS, fab-jax, Beyond ELBOs, gfn-diffusion 'hard funnel' and inference_gym NealsFunnel."
        ),
    )


def _default_float() -> np.dtype:
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def funnel10() -> Target:
    """The standard 10-D funnel, `v ~ N(0, 3²)` (`targets.md` §2)."""
    return make_funnel(10, FUNNEL_V_STD)


ENTRIES = (entry("funnel10", funnel10, family="funnel"),)
