"""The shared pieces of the learned methods in `samplers.methods.common`: the optimizer's optional
cosine learning-rate decay and its validation in every config that offers it, and norm clipping of the
energy gradient (ordinary, infinite and overflowing gradients)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import samplers
from samplers.methods.common import make_optimizer

DECAYING = ["adjoint_matching", "adjoint_sampling", "cmcd_lv", "dds", "pis", "trajectory_balance"]


def _effective_learning_rates(optimizer, steps: int) -> np.ndarray:
    """|update| of a unit gradient on one scalar, per step: Adam's step is ≈ the learning rate."""
    params = jnp.zeros(())
    state = optimizer.init(params)
    rates = []
    for _ in range(steps):
        updates, state = optimizer.update(jnp.ones(()), state, params)
        rates.append(float(-updates))
    return np.asarray(rates)


def test_cosine_decay_reaches_the_final_fraction_and_stays():
    rates = _effective_learning_rates(make_optimizer(1e-2, None, decay_steps=10, final_fraction=0.1), 15)
    np.testing.assert_allclose(rates[0], 1e-2, rtol=1e-3)
    assert np.all(np.diff(rates[:11]) < 0)
    np.testing.assert_allclose(rates[10:], 1e-3, rtol=1e-3)
    constant = _effective_learning_rates(make_optimizer(1e-2, None), 5)
    np.testing.assert_allclose(constant, 1e-2, rtol=1e-3)
    assert isinstance(make_optimizer(1e-2, 1.0, decay_steps=3), optax.GradientTransformation)


@pytest.mark.parametrize("name", DECAYING)
def test_configs_validate_the_decay(name):
    spec = samplers.get(name)
    assert spec.make_config({"optim.decay_steps": 100}).optim.decay_steps == 100
    with pytest.raises(ValueError, match="decay_steps must be a positive integer or None"):
        spec.make_config(optim={"decay_steps": 0})
    with pytest.raises(ValueError, match=r"final_fraction must lie in \[0, 1\]"):
        spec.make_config(optim={"decay_steps": 10, "final_fraction": 1.5})
    with pytest.raises(ValueError, match="'learning_rate_decay_steps' is now 'optim.decay_steps'"):
        spec.make_config(learning_rate_decay_steps=10)


# ---------------------------------------------------------------------------------------------
# norm clipping of the energy gradient
# ---------------------------------------------------------------------------------------------


class _Particles:
    n_particles, spatial_dim = 2, 3


def test_clip_norm_is_the_plain_formula_on_ordinary_gradients():
    from samplers.methods.common import clip_norm

    g = jnp.asarray([3.0, -4.0, 0.5, 200.0, 1.0, -2.0], jnp.float32)
    plain = lambda b: b * jnp.minimum(1.0, 10.0 / jnp.linalg.norm(b))
    np.testing.assert_array_equal(clip_norm(g, 10.0, None), plain(g))
    per_particle = clip_norm(g, 10.0, _Particles())
    np.testing.assert_array_equal(per_particle[:3], plain(g[:3]))  # norm 5.02: untouched
    np.testing.assert_array_equal(per_particle[3:], plain(g[3:]))  # norm 200: clipped to 10
    assert clip_norm(g, None, None) is g


def test_clip_norm_turns_an_infinite_gradient_into_its_limit_direction():
    from samplers.methods.common import clip_norm

    g = jnp.asarray([jnp.inf, 1.0, -jnp.inf, 0.5, 0.5, 0.5], jnp.float32)
    clipped = np.asarray(clip_norm(g, 100.0, _Particles()))
    assert np.all(np.isfinite(clipped))
    np.testing.assert_allclose(clipped[:3], 100.0 * np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_array_equal(clipped[3:], np.asarray(g[3:]))  # the other particle is untouched
    whole = np.asarray(clip_norm(g, 100.0, None))
    np.testing.assert_allclose(np.linalg.norm(whole), 100.0, rtol=1e-6)


def test_clip_norm_clips_a_gradient_whose_float32_norm_overflows():
    from samplers.methods.common import clip_norm

    g = jnp.asarray([3e38, -3e38, 1e38], jnp.float32)  # finite entries, ‖g‖ overflows float32
    assert not np.isfinite(float(jnp.linalg.norm(g)))
    clipped = np.asarray(clip_norm(g, 100.0, None), np.float64)
    np.testing.assert_allclose(np.linalg.norm(clipped), 100.0, rtol=1e-6)
    direction = np.asarray([3.0, -3.0, 1.0]) / np.linalg.norm([3.0, -3.0, 1.0])
    np.testing.assert_allclose(clipped / 100.0, direction, rtol=1e-6)


def test_output_clip_binds_only_beyond_its_bound():
    """`network.output_clip` (gfn-diffusion's `--clipping`): where |u| < c the network is unchanged,
    values and parameter gradients (so it cannot move a fixed point the control does not reach); beyond,
    the output is clipped, also on the grad-feature path; an EGNN's output far out grows faster than
    linearly, which is what the clip stops."""
    import jax

    from samplers.methods.common import clip_output
    from samplers.networks import egnn_control, mlp_control
    from targets.base import ParticleSpec

    egnn = egnn_control(ParticleSpec(4, 2), hidden=16, num_layers=2, time_embedding_dim=8)
    mlp = mlp_control(4, hidden=(8,), time_embedding_dim=8, grad_log_target=lambda x: -x)
    for net, dim in [(egnn, 8), (mlp, 4)]:
        params = jax.tree.map(lambda p: p + 0.3, net.init(jax.random.key(0)))  # a non-zero output
        x = jax.random.normal(jax.random.key(1), (dim,))
        near, far = net.apply(params, x, 0.3), net.apply(params, 30.0 * x, 0.3)
        c = 2.0 * float(jnp.abs(near).max())
        clipped = clip_output(net, c)
        np.testing.assert_array_equal(clipped.apply(params, x, 0.3), near)
        grads = [
            jax.grad(lambda p, n=n, x=x: jnp.sum(n.apply(p, x, 0.3) ** 2))(params) for n in (net, clipped)
        ]
        jax.tree.map(np.testing.assert_array_equal, *grads)
        assert float(jnp.abs(far).max()) > c
        np.testing.assert_array_equal(clipped.apply(params, 30.0 * x, 0.3), jnp.clip(far, -c, c))
        if net.apply_with_grad is not None:
            g = -30.0 * x
            np.testing.assert_array_equal(
                clipped.apply_with_grad(params, 30.0 * x, 0.3, g),
                jnp.clip(net.apply_with_grad(params, 30.0 * x, 0.3, g), -c, c),
            )
    params, x = (
        jax.tree.map(lambda p: p + 0.3, egnn.init(jax.random.key(0))),
        jax.random.normal(jax.random.key(1), (8,)),
    )
    u1, u2 = egnn.apply(params, 10.0 * x, 0.3), egnn.apply(params, 100.0 * x, 0.3)
    assert float(jnp.abs(u2).max()) > 10.0 * float(jnp.abs(u1).max())  # faster than linear


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_output_clip_must_be_positive(bad):
    with pytest.raises(ValueError, match="output_clip"):
        samplers.get("cmcd_kl").make_config({"network": {"output_clip": bad}})
    assert samplers.get("pis").make_config({"network": {"output_clip": 1e4}}).network.output_clip == 1e4
