"""The fixed-point check shared by the loss tests.

The loss gradient with respect to an affine perturbation `u = u* + A x + c` of the optimal control,
over independent batches, at the optimum (`A = 0`, `c = 0`: the mean gradient vanishes within its
standard error) and at a perturbed control (`A = 0.2 I`, `c = (0.2, -0.1)`: it does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The two affine perturbations (optimum, perturbed), stacked along a leading axis of size 2.
PERTURBATIONS = {
    "A": jnp.stack([jnp.zeros((2, 2)), 0.2 * jnp.eye(2)]),
    "c": jnp.stack([jnp.zeros(2), jnp.array([0.2, -0.1])]),
}


def affine_control(optimal: Callable) -> Callable:
    """`u(θ, x, t) = u*(x, t) + A x + c` with `θ = {"A", "c"}` (`optimal` has the `(params, x, t)` form)."""
    return lambda theta, x, t: optimal(None, x, t) + theta["A"] @ x + theta["c"]


def z_scores(grads: np.ndarray) -> np.ndarray:
    """Mean over independent batches divided by its standard error, per component."""
    grads = np.asarray(grads, np.float64)
    return grads.mean(0) / (grads.std(0, ddof=1) / np.sqrt(grads.shape[0]))


def perturbation_gradients(
    gradient: Callable[[Any, jax.Array], Any],
    num_batches: int,
    extra: Callable[[Any], Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """`gradient(θ, key) -> {"A", "c"}` on `num_batches` keys (split from `key(0)`) at both
    perturbations, in one jitted program: `(grads (2, num_batches, 6), extra(θ) at both)`."""

    @jax.jit
    def run(thetas):
        def per_theta(theta):
            def per_batch(key):
                g = gradient(theta, key)
                return jnp.concatenate([g["A"].ravel(), g["c"]])

            grads = jax.lax.map(per_batch, jax.random.split(jax.random.key(0), num_batches))
            return grads, None if extra is None else extra(theta)

        return jax.lax.map(per_theta, thetas)

    grads, extras = run(PERTURBATIONS)
    grads = np.asarray(grads)
    assert np.all(np.isfinite(grads))
    return grads, extras
