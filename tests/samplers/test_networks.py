"""Tests for samplers.networks: shapes, zero init, time conditioning, grad-log-target feature,
EGNN symmetries and numerical safety, scalar networks, input validation.

Compilation dominates the cost on CPU, so networks are built once per module (fixtures) and
every check runs through a few jitted functions that are reused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplers.networks import (
    ACTIVATIONS,
    egnn_control,
    get_activation,
    mlp_control,
    scalar_net,
    sinusoidal_time_features,
)
from targets.base import ParticleSpec

SMALL = dict(hidden=(16, 16), time_embedding_dim=8)


def perturb(params, seed, scale=0.3):
    """Add N(0, scale²) noise to every parameter (a generic, non-zero network); numpy, no compilation."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(np.asarray(leaf) + scale * rng.normal(size=leaf.shape), leaf.dtype), params
    )


# ---------------------------------------------------------------------------------------------
# time features and activations
# ---------------------------------------------------------------------------------------------


def test_sinusoidal_time_features_match_formula():
    t = 0.37
    features = np.asarray(sinusoidal_time_features(jnp.asarray(t), 8, (0.5, 40.0)))
    omega = np.geomspace(0.5, 40.0, 4)
    np.testing.assert_allclose(features, np.concatenate([np.sin(omega * t), np.cos(omega * t)]), rtol=1e-5)


def test_activation_registry():
    x = np.linspace(-2.0, 2.0, 5, dtype=np.float32)
    np.testing.assert_allclose(get_activation("relu")(x), np.maximum(x, 0.0))
    np.testing.assert_allclose(get_activation("tanh")(x), np.tanh(x), rtol=1e-6)
    for name in ACTIVATIONS:
        assert np.all(np.isfinite(get_activation(name)(x)))
    with pytest.raises(ValueError, match="valid choices"):
        get_activation("sigmoidish")


# ---------------------------------------------------------------------------------------------
# MLP control
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp():
    net = mlp_control(3, **SMALL)
    params0 = net.init(jax.random.key(0))
    params = perturb(params0, 1)
    batched = jax.jit(jax.vmap(net.apply, in_axes=(None, 0, 0)))
    return net, params0, params, batched


def test_mlp_control_shapes(mlp):
    net, params0, _, batched = mlp
    assert net.dim == net.out_dim == 3 and net.grad_evals_per_apply == 0
    out = batched(params0, jnp.ones((7, 3)), jnp.linspace(0.0, 1.0, 7))
    assert out.shape == (7, 3) and out.dtype == jnp.float32
    # out_dim: checked abstractly (no compilation)
    wide = mlp_control(3, out_dim=5, **SMALL)
    params_shape = jax.eval_shape(wide.init, jax.random.key(0))
    assert jax.eval_shape(wide.apply, params_shape, jnp.ones(3), 0.5).shape == (5,)


def test_mlp_control_zero_init_is_exactly_zero_but_trainable(mlp):
    net, params0, _, batched = mlp
    xs = jax.random.normal(jax.random.key(2), (16, 3))
    ts = jax.random.uniform(jax.random.key(3), (16,))
    assert np.all(np.asarray(batched(params0, xs, ts)) == 0.0)
    assert not np.all(np.asarray(params0["params"]["output"]["kernel"]) != 0.0)
    # the output layer still receives gradient, so training can leave the zero control
    loss = lambda p: jnp.sum(jax.vmap(net.apply, in_axes=(None, 0, 0))(p, xs, ts) * xs)
    grads = jax.jit(jax.grad(loss))(params0)
    assert float(jnp.abs(grads["params"]["output"]["kernel"]).max()) > 1e-3


def test_mlp_control_depends_on_time(mlp):
    net, _, params, batched = mlp
    x = jnp.array([0.3, -1.2, 0.7])
    early, late = batched(params, jnp.stack([x, x]), jnp.array([0.1, 0.9]))
    assert float(jnp.abs(early).max()) > 1e-2
    assert float(jnp.linalg.norm(early - late)) > 1e-2 * float(jnp.linalg.norm(early))
    dt = jax.jit(jax.jacfwd(net.apply, argnums=2))(params, x, jnp.asarray(0.4))
    assert dt.shape == (3,) and np.all(np.isfinite(dt)) and float(jnp.abs(dt).max()) > 0


def test_mlp_control_without_zero_init_and_other_activation():
    net = mlp_control(2, hidden=(4,), time_embedding_dim=4, activation="tanh", zero_init_output=False)
    out = jax.jit(net.apply)(net.init(jax.random.key(0)), jnp.ones(2), 0.5)
    assert np.all(np.isfinite(out)) and float(jnp.abs(out).max()) > 1e-3


def test_grad_log_target_feature_is_used_clipped_and_detached():
    clip = 5.0
    grad_log_target = lambda x: 1000.0 * x  # large, so the clip is active on two coordinates
    net = mlp_control(3, grad_log_target=grad_log_target, grad_clip=clip, grad_scale_init=1.0, **SMALL)
    assert net.grad_evals_per_apply == 1
    params = net.init(jax.random.key(0))
    x = jnp.array([0.002, 1.0, -3.0])

    @jax.jit
    def probe(params):
        value = net.apply(params, x, 0.5)
        jac = jax.jacobian(net.apply, argnums=1)(params, x, 0.5)
        grads = jax.grad(lambda p: jnp.sum(net.apply(p, x, 0.5)))(params)
        return value, jac, grads

    value, jac, grads = probe(params)
    # NN1 is zero-initialised and NN2(t) = 1 at init: u = clip(∇log γ(x)) exactly
    np.testing.assert_allclose(value, [2.0, clip, -clip], rtol=1e-6)
    # sg[·]: no derivative through ∇log γ (without stop_gradient the Jacobian would be diag(1000, 0, 0))
    assert np.all(np.asarray(jac) == 0.0)
    # NN2's parameters receive the feature as gradient
    np.testing.assert_allclose(grads["params"]["grad_scale"]["bias"], [2.0, clip, -clip], rtol=1e-6)
    # with the default grad_scale_init = 0 the zero-initialised control is exactly zero
    params["params"]["grad_scale"]["bias"] = jnp.zeros(3)
    assert np.all(np.asarray(probe(params)[0]) == 0.0)


def test_mlp_control_bad_input(mlp):
    with pytest.raises(ValueError, match="valid choices"):
        mlp_control(3, activation="sigmoidish")
    with pytest.raises(ValueError, match="even"):
        mlp_control(3, time_embedding_dim=7)
    with pytest.raises(ValueError, match="positive integer"):
        mlp_control(0)
    with pytest.raises(ValueError, match="out_dim == dim"):
        mlp_control(3, out_dim=2, grad_log_target=lambda x: x)
    net, params0, _, _ = mlp
    with pytest.raises(ValueError, match="vmap"):
        net.apply(params0, jnp.ones((2, 3)), 0.5)
    with pytest.raises(ValueError, match="scalar"):
        net.apply(params0, jnp.ones(3), jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# EGNN
# ---------------------------------------------------------------------------------------------


def random_orthogonal(key, d, reflection):
    q, r = np.linalg.qr(np.asarray(jax.random.normal(key, (d, d)), np.float64))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflection:
        q[:, 0] *= -1.0
    return jnp.asarray(q, jnp.float32)


@pytest.fixture(scope="module")
def egnn():
    # 3-d space (non-commuting rotations, reflections); the 2-d DW4 layout is the same code path
    spec = ParticleSpec(5, 3)
    net = egnn_control(spec, hidden=16, num_layers=2, time_embedding_dim=8)
    params0 = net.init(jax.random.key(0))
    params = perturb(params0, 1, scale=0.5)
    apply = jax.jit(net.apply)
    x = 1.5 * jax.random.normal(jax.random.key(2), (spec.n_particles * spec.spatial_dim,))
    out = apply(params, x, 0.3)
    # a random network with O(1) output, so that the symmetry tolerances below are meaningful
    assert float(jnp.abs(out).max()) > 0.05
    return spec, net, params0, params, apply, x, out


def test_egnn_shapes_and_zero_centre_of_mass(egnn):
    spec, net, _, _, _, x, out = egnn
    n, d = spec.n_particles, spec.spatial_dim
    assert net.dim == net.out_dim == n * d and out.shape == (n * d,)
    np.testing.assert_allclose(out.reshape(n, d).sum(0), 0.0, atol=1e-5 * float(jnp.abs(out).max()) * n)


@pytest.mark.parametrize("reflection", [False, True], ids=["rotation", "reflection"])
def test_egnn_orthogonal_equivariance_and_translation_invariance(egnn, reflection):
    spec, _, _, params, apply, x, out = egnn
    n, d = spec.n_particles, spec.spatial_dim
    q = random_orthogonal(jax.random.key(3), d, reflection)
    shift = jax.random.normal(jax.random.key(4), (d,)) * 2.0
    moved = (x.reshape(n, d) @ q.T + shift).reshape(-1)
    expected = (out.reshape(n, d) @ q.T).reshape(-1)
    np.testing.assert_allclose(
        apply(params, moved, 0.3), expected, atol=1e-4 * max(1.0, float(jnp.abs(out).max()))
    )


def test_egnn_permutation_equivariance(egnn):
    spec, _, _, params, apply, x, out = egnn
    n, d = spec.n_particles, spec.spatial_dim
    perm = np.asarray(jax.random.permutation(jax.random.key(5), n))
    assert not np.array_equal(perm, np.arange(n))
    permuted = x.reshape(n, d)[perm].reshape(-1)
    np.testing.assert_allclose(
        apply(params, permuted, 0.3),
        out.reshape(n, d)[perm].reshape(-1),
        atol=1e-4 * float(jnp.abs(out).max()),
    )


def test_egnn_depends_on_time(egnn):
    _, _, _, params, apply, x, out = egnn
    assert float(jnp.linalg.norm(apply(params, x, 0.9) - out)) > 1e-2 * float(jnp.linalg.norm(out))


def test_egnn_zero_init_is_exactly_zero(egnn):
    _, _, params0, _, apply, x, _ = egnn
    assert np.all(np.asarray(apply(params0, x, 0.5)) == 0.0)


def test_egnn_finite_at_coincident_particles(egnn):
    spec, _, _, params, apply, x, _ = egnn
    n, d = spec.n_particles, spec.spatial_dim
    two_coincide = x.reshape(n, d).at[1].set(x.reshape(n, d)[0]).reshape(-1)
    all_coincide = jnp.zeros(n * d)
    loss = lambda p, y: jnp.sum(apply(p, y, 0.3) ** 2) + jnp.sum(apply(p, y, 0.3) * y)
    loss_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for point in (two_coincide, all_coincide):
        assert np.all(np.isfinite(apply(params, point, 0.3)))
        grad_params, grad_x = loss_grad(params, point)
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grad_params))
        assert np.all(np.isfinite(grad_x))


def test_egnn_bad_input():
    with pytest.raises(TypeError, match="ParticleSpec"):
        egnn_control((4, 2))
    with pytest.raises(ValueError, match="n_particles >= 2"):
        egnn_control(ParticleSpec(1, 3))
    with pytest.raises(ValueError, match="valid choices"):
        egnn_control(ParticleSpec(4, 2), activation="nope")


# ---------------------------------------------------------------------------------------------
# scalar networks
# ---------------------------------------------------------------------------------------------


def test_scalar_net_of_t():
    net = scalar_net(hidden=(8, 8))
    assert net.input == "t" and net.dim is None
    params0 = net.init(jax.random.key(0))

    @jax.jit
    def probe(params):
        values = jax.vmap(net.apply, in_axes=(None, 0))(params, jnp.linspace(0.0, 1.0, 5))
        return values, jax.grad(net.apply, argnums=1)(params, jnp.asarray(0.5))

    values, dF = probe(params0)
    assert values.shape == (5,) and np.all(np.asarray(values) == 0.0)  # zero-initialised output
    values, dF = probe(perturb(params0, 1))
    assert float(jnp.std(values)) > 1e-3
    assert dF.shape == () and np.isfinite(dF) and float(dF) != 0.0


def test_scalar_net_of_x_and_t():
    net = scalar_net(hidden=(8,), input="xt", dim=3, zero_init_output=False)
    params = net.init(jax.random.key(0))
    x = jnp.array([0.1, 0.2, -0.3])
    value, (grad_x, grad_t) = jax.jit(jax.value_and_grad(net.apply, argnums=(1, 2)))(
        params, x, jnp.asarray(0.5)
    )
    assert value.shape == () and grad_x.shape == (3,)
    assert float(jnp.abs(grad_x).max()) > 0 and np.isfinite(grad_t)


def test_scalar_net_bad_input():
    with pytest.raises(ValueError, match="valid choices"):
        scalar_net(input="x")
    with pytest.raises(ValueError, match="dim"):
        scalar_net(input="xt")
    with pytest.raises(ValueError, match="takes no dim"):
        scalar_net(input="t", dim=3)


def test_egnn_edge_input_is_the_dense_layer_on_the_edge_concatenation():
    """The EGNN's first edge layer, applied per node (`_EdgeInput`), has `nn.Dense`'s parameters and
    initial values on `[h_i, h_j, r²_ij]` and gives its output up to float32 rounding."""
    import flax.linen as nn

    from samplers.networks.egnn import _EdgeInput

    n, width = 13, 16
    h = jax.random.normal(jax.random.key(1), (n, width))
    r2 = jax.random.uniform(jax.random.key(2), (n, n, 1))
    edges = jnp.concatenate(
        [jnp.broadcast_to(h[:, None], (n, n, width)), jnp.broadcast_to(h[None], (n, n, width)), r2], -1
    )
    split, dense = _EdgeInput(8), nn.Dense(8)
    p_split, p_dense = split.init(jax.random.key(0), h, r2), dense.init(jax.random.key(0), edges)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), p_split, p_dense))
    np.testing.assert_allclose(split.apply(p_split, h, r2), dense.apply(p_dense, edges), atol=1e-5)
