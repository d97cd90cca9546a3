"""The E(n)-equivariant graph network control for particle systems (Satorras, Hoogeboom & Welling 2021)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from samplers.networks.base import (
    DEFAULT_FREQUENCY_RANGE,
    ControlNet,
    _check_positive_int,
    _check_time_features,
    _point_time_functions,
    _TimeEncoder,
    get_activation,
)
from targets.base import ParticleSpec

__all__ = ["egnn_control"]


# ---------------------------------------------------------------------------------------------
# E(n)-equivariant GNN control
# ---------------------------------------------------------------------------------------------


class _EdgeInput(nn.Module):
    """`Dense([h_i, h_j, r²_ij])` for every edge without building the `(n, n, 2H + 1)` concatenation.

    The kernel `W` (shape `(2H + 1, hidden)`, the parameters and initialisation of `nn.Dense` on the
    concatenation) splits by rows into `W_a`, `W_b`, `w_r`:
    `W [h_i, h_j, r²] + b = (h W_a)_i + (h W_b)_j + r² w_r + b`, so the per-edge matmul becomes two
    per-node ones (n instead of n² rows) and a broadcast sum; equal up to float rounding.
    """

    features: int

    @nn.compact
    def __call__(self, h, r2):
        width = h.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2 * width + 1, self.features), h.dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), h.dtype)
        left, right = h @ kernel[:width], h @ kernel[width : 2 * width]
        return left[:, None, :] + right[None, :, :] + r2 * kernel[2 * width] + bias


class _EGNNLayer(nn.Module):
    """One EGNN layer (Satorras et al. 2021, eqs. 3-6) on a fully connected graph.

    m_ij = φ_e(h_i, h_j, |x_i - x_j|²)
    x_i ← x_i + 1/(n-1) Σ_{j≠i} (x_i - x_j) / (sqrt(|x_i - x_j|² + ε) + 1) · φ_x(m_ij)
    h_i ← h_i + φ_h(h_i, 1/(n-1) Σ_{j≠i} m_ij)
    """

    hidden: int
    activation: str
    zero_init_output: bool
    distance_epsilon: float

    @nn.compact
    def __call__(self, h, pos, off_diagonal):
        act = get_activation(self.activation)
        n = pos.shape[0]
        diff = pos[:, None, :] - pos[None, :, :]  # (n, n, d), antisymmetric
        r2 = jnp.sum(diff**2, axis=-1, keepdims=True)  # (n, n, 1), invariant
        m = act(_EdgeInput(self.hidden, name="edge_1")(h, r2))  # φ_e's first layer on [h_i, h_j, r²_ij]
        m = act(nn.Dense(self.hidden, name="edge_2")(m)) * off_diagonal
        # Output of φ_x: zero (exactly zero control at init) or tiny (E(n)-flows' xavier gain 1e-3).
        coord_init = (
            nn.initializers.zeros
            if self.zero_init_output
            else nn.initializers.variance_scaling(1e-6, "fan_avg", "uniform")
        )
        weight = nn.Dense(1, kernel_init=coord_init, use_bias=False, name="coord_2")(
            act(nn.Dense(self.hidden, name="coord_1")(m))
        )
        # sqrt(r² + ε) is smooth at r = 0 (coincident particles), and the +1 keeps the update bounded.
        unit = diff / (jnp.sqrt(r2 + self.distance_epsilon) + 1.0)
        pos = pos + jnp.sum(unit * weight * off_diagonal, axis=1) / (n - 1)
        message = jnp.sum(m, axis=1) / (n - 1)
        update = nn.Dense(self.hidden, name="node_2")(
            act(nn.Dense(self.hidden, name="node_1")(jnp.concatenate([h, message], axis=-1)))
        )
        return h + update, pos


class _EGNN(nn.Module):
    n_particles: int
    spatial_dim: int
    hidden: int
    num_layers: int
    time_embedding_dim: int
    frequency_range: tuple[float, float]
    activation: str
    zero_init_output: bool
    distance_epsilon: float

    @nn.compact
    def __call__(self, x, t):
        n, d = self.n_particles, self.spatial_dim
        pos0 = x.reshape(n, d)
        # Node features start as the (particle-independent) time code: permutation equivariance.
        time_code = _TimeEncoder(
            self.hidden, self.time_embedding_dim, self.frequency_range, self.activation, name="time_encoder"
        )(t)
        h = jnp.broadcast_to(time_code, (n, self.hidden))
        off_diagonal = (1.0 - jnp.eye(n, dtype=pos0.dtype))[:, :, None]
        pos = pos0
        for layer in range(self.num_layers):
            h, pos = _EGNNLayer(
                self.hidden,
                self.activation,
                self.zero_init_output,
                self.distance_epsilon,
                name=f"layer_{layer}",
            )(h, pos, off_diagonal)
        velocity = pos - pos0
        velocity = velocity - velocity.mean(axis=0, keepdims=True)
        return velocity.reshape(n * d)


def egnn_control(
    spec: ParticleSpec,
    *,
    hidden: int = 64,
    num_layers: int = 3,
    time_embedding_dim: int = 32,
    frequency_range: tuple[float, float] = DEFAULT_FREQUENCY_RANGE,
    activation: str = "silu",
    zero_init_output: bool = True,
    distance_epsilon: float = 1e-8,
) -> ControlNet:
    """An E(n)-equivariant GNN control for `n` particles in `d` dimensions (Satorras et al. 2021).

    Input `x ∈ R^{n·d}` is the particle-major flattening of positions `X ∈ R^{n×d}`; the output
    `u(x, t) ∈ R^{n·d}` is the displacement `X^L - X^0` accumulated by `num_layers` EGNN layers on
    the fully connected graph (see `_EGNNLayer`), projected to zero centre of mass. Node features
    start as a learned encoding of the sinusoidal features of `t` (the same for every particle),
    so that the map is time-conditioned and, for every orthogonal `Q` (rotations and
    reflections), permutation `P` and translation `c`:

        u(Q x + c, t) = Q u(x, t),   u(P x, t) = P u(x, t),   Σ_i u_i(x, t) = 0.

    Aggregations are means over the `n - 1` neighbours (scale-free in `n`); coordinate updates
    use `(x_i - x_j) / (sqrt(|x_i - x_j|² + ε) + 1)`, which is smooth and bounded at coincident
    particles (no square root at zero).

    Args:
        spec: particle layout (`targets.ParticleSpec`), `n_particles >= 2`.
        hidden: width of node features and of every MLP (`φ_e`, `φ_x`, `φ_h`, time encoder).
        num_layers: number of EGNN layers.
        time_embedding_dim: number of sinusoidal time features (even).
        frequency_range: `(ω_min, ω_max)` of the time features, radians per unit t.
        activation: one of `ACTIVATIONS` (SiLU as in Satorras et al.).
        zero_init_output: zero the last layer of every `φ_x`, so that `u ≡ 0` at initialisation;
            otherwise it is initialised with a tiny scale (xavier-uniform gain 1e-3, as in E(n) flows).
        distance_epsilon: `ε` in `sqrt(r² + ε)`.

    Returns:
        A `ControlNet` with `dim = out_dim = n·d`.
    """
    if not isinstance(spec, ParticleSpec):
        raise TypeError(f"egnn_control needs a targets.ParticleSpec, got {type(spec).__name__}")
    if spec.n_particles < 2 or spec.spatial_dim < 1:
        raise ValueError(f"egnn_control needs n_particles >= 2 and spatial_dim >= 1, got {spec}")
    hidden = _check_positive_int(hidden, "hidden")
    num_layers = _check_positive_int(num_layers, "num_layers")
    time_embedding_dim, frequency_range = _check_time_features(time_embedding_dim, frequency_range)
    get_activation(activation)
    if not distance_epsilon > 0:
        raise ValueError(f"distance_epsilon must be positive, got {distance_epsilon!r}")
    dim = spec.n_particles * spec.spatial_dim
    module = _EGNN(
        n_particles=spec.n_particles,
        spatial_dim=spec.spatial_dim,
        hidden=hidden,
        num_layers=num_layers,
        time_embedding_dim=time_embedding_dim,
        frequency_range=frequency_range,
        activation=activation,
        zero_init_output=bool(zero_init_output),
        distance_epsilon=float(distance_epsilon),
    )

    init, apply = _point_time_functions(module, dim, "egnn_control")
    return ControlNet(init=init, apply=apply, dim=dim, out_dim=dim)
