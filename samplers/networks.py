"""Control networks `u_θ(x, t)` and small scalar networks, built with flax (linen).

Every network here acts on ONE example `x` of shape `(dim,)` and ONE time `t` of shape `()`;
batch with `jax.vmap` outside. Networks are returned as NamedTuples of two pure functions,

    init(key) -> params                 # a plain PyTree (nested dicts of arrays)
    apply(params, x, t) -> (out_dim,)   # pure, jittable, differentiable in params, x and t

so that parameters cross into method state as PyTrees and the module definition stays bound in
the builder's closure (`docs/design.md`, "Style", item 5). We use flax linen
rather than NNX: linen's `init`/`apply` already are pure functions over a parameter dict, so no
`split`/`merge` boundary is needed inside `jit`, `vmap` or `lax.scan`.

Time convention (`docs/methods.md` §0): `t ∈ [0, 1]`, `t = 0` the source end and
`t = 1` the target end. Networks do not care about the convention, but the default time-feature
frequencies are chosen for `t` of order one.

Builders:
    - `mlp_control`: an MLP on `(x, features(t))`, optionally with the PIS/DDS/CMCD
      grad-log-target feature `u = NN₁(x, t) + NN₂(t) ⊙ sg[clip(∇log γ(x))]`.
    - `egnn_control`: an E(n)-equivariant graph network (Satorras, Hoogeboom, Welling 2021) for
      particle systems, with a zero centre-of-mass output.
    - `scalar_net`: a small scalar network `F(t)` or `φ(x, t)` (NETS free energy / potential,
      trajectory-balance flows).

References:
    Zhang & Chen, "Path Integral Sampler", ICLR 2022 (the grad-log-target feature and the
    sinusoidal time features; `DenisBless/variational_sampling_methods` `PISGRADNet`).
    Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from samplers.promotion import float_dtype
from samplers.types import PyTree
from targets.base import ParticleSpec

__all__ = [
    "ACTIVATIONS",
    "ControlNet",
    "ScalarNet",
    "egnn_control",
    "get_activation",
    "mlp_control",
    "scalar_net",
    "sinusoidal_time_features",
]


ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
}

# Default frequency range of the sinusoidal time features: PIS / DDS (`PISGRADNet`) use
# `linspace(0.1, 100, ·)`; we keep the same range with geometric spacing, so that low
# frequencies (smooth dependence on t ∈ [0, 1]) are as well represented as high ones.
DEFAULT_FREQUENCY_RANGE = (0.1, 100.0)


class ControlNet(NamedTuple):
    """A control network `u_θ(x, t)`: a pair of pure functions plus metadata.

    Attributes:
        init: `(key) -> params`, a plain PyTree of arrays (jitted: one compilation, not one per op).
        apply: `(params, x, t) -> u`, with `x` of shape `(dim,)`, `t` of shape `()` and `u` of
            shape `(out_dim,)`. One example, one time; `jax.vmap` for batches.
        dim: input dimension.
        out_dim: output dimension.
        grad_evals_per_apply: evaluations of `∇log γ` spent by one `apply` (1 with the
            grad-log-target feature, else 0), for the methods' `Cost` accounting.
        apply_with_grad: with the grad-log-target feature only (else None): `(params, x, t, g) -> u`,
            the same network fed a `∇log γ(x)` the caller has already computed (clipped and
            stop-gradient inside, as in `apply`), so a method whose drift needs `∇log γ(x)` anyway
            does not evaluate it twice. Costs no `∇log γ` evaluation.
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
    dim: int
    out_dim: int
    grad_evals_per_apply: int = 0
    apply_with_grad: Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array] | None = None


class ScalarNet(NamedTuple):
    """A scalar network: `F(t)` (`input="t"`) or `φ(x, t)` (`input="xt"`).

    Attributes:
        init: `(key) -> params`.
        apply: `(params, t) -> ()` when `input == "t"`; `(params, x, t) -> ()` when
            `input == "xt"`, with `x` of shape `(dim,)` and `t` of shape `()`.
        input: `"t"` or `"xt"`.
        dim: dimension of `x` (`None` for `input="t"`).
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[..., jax.Array]
    input: str
    dim: int | None = None


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function registered as `name`; unknown names raise with the valid ones."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid choices: {sorted(ACTIVATIONS)}") from None


def sinusoidal_time_features(
    t: jax.Array, num_features: int, frequency_range: tuple[float, float] = DEFAULT_FREQUENCY_RANGE
) -> jax.Array:
    """Fourier features of a scalar time.

    `φ(t) = [sin(ω_1 t), …, sin(ω_K t), cos(ω_1 t), …, cos(ω_K t)]` with `K = num_features / 2`
    angular frequencies `ω_k` spaced geometrically from `frequency_range[0]` to
    `frequency_range[1]` (radians per unit of t).

    Args:
        t: scalar time, shape `()`.
        num_features: even number of features `2K`.
        frequency_range: `(ω_min, ω_max)`, both positive.

    Returns:
        Features of shape `(num_features,)`, in the dtype of `t` (float32 by default).
    """
    t = jnp.asarray(t, dtype=float_dtype(t))
    half = num_features // 2
    low, high = frequency_range
    frequencies = jnp.geomspace(low, high, half, dtype=t.dtype) if half > 1 else jnp.full((1,), low, t.dtype)
    angles = frequencies * t
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_hidden(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, int):
        hidden = (hidden,)
    if not isinstance(hidden, Sequence) or len(hidden) == 0:
        raise ValueError(f"hidden must be a non-empty sequence of layer widths, got {hidden!r}")
    return tuple(_check_positive_int(width, "every hidden width") for width in hidden)


def _check_time_features(num_features: Any, frequency_range: Any) -> tuple[int, tuple[float, float]]:
    num_features = _check_positive_int(num_features, "time_embedding_dim")
    if num_features % 2:
        raise ValueError(f"time_embedding_dim must be even (sin and cos pairs), got {num_features}")
    low, high = (float(v) for v in frequency_range)
    if not 0.0 < low <= high:
        raise ValueError(f"frequency_range must satisfy 0 < low <= high, got {frequency_range!r}")
    return num_features, (low, high)


def _as_float(value: Any) -> jax.Array:
    value = jnp.asarray(value)
    return value if jnp.issubdtype(value.dtype, jnp.inexact) else value.astype(jnp.float32)


def _check_point(x: jax.Array, dim: int, who: str) -> jax.Array:
    x = _as_float(x)
    if x.shape != (dim,):
        raise ValueError(f"{who}: x must be ONE point of shape ({dim},), got {x.shape}; batch with jax.vmap")
    return x


def _check_time(t: jax.Array, who: str) -> jax.Array:
    t = _as_float(t)
    if t.shape != ():
        raise ValueError(f"{who}: t must be a scalar of shape (), got {t.shape}; batch with jax.vmap")
    return t


def _point_time_functions(module: nn.Module, dim: int, owner: str):
    """`init(key)` (jitted, on a zero point and time) and `apply(params, x, t)` (with `x`, `t` shape
    checks naming `owner`) of a module acting on ONE point `(dim,)` and one time."""

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        return module.init(key, jnp.zeros((dim,), jnp.float32), jnp.zeros((), jnp.float32))

    def apply(params: PyTree, x: jax.Array, t: jax.Array) -> jax.Array:
        return module.apply(params, _check_point(x, dim, owner), _check_time(t, owner))

    return init, apply


def _output_init(zero: bool):
    return nn.initializers.zeros if zero else nn.initializers.lecun_normal()


class _TimeEncoder(nn.Module):
    """`t ↦ Dense(act(Dense(φ(t))))`: sinusoidal features followed by a two-layer MLP."""

    width: int
    num_features: int
    frequency_range: tuple[float, float]
    activation: str

    @nn.compact
    def __call__(self, t):
        act = get_activation(self.activation)
        features = sinusoidal_time_features(t, self.num_features, self.frequency_range)
        hidden = act(nn.Dense(self.width, name="dense_1")(features))
        return nn.Dense(self.width, name="dense_2")(hidden)


# ---------------------------------------------------------------------------------------------
# MLP control
# ---------------------------------------------------------------------------------------------


class _MLPControl(nn.Module):
    out_dim: int
    hidden: tuple[int, ...]
    time_embedding_dim: int
    frequency_range: tuple[float, float]
    activation: str
    zero_init_output: bool
    grad_feature: bool
    grad_scale_init: float

    @nn.compact
    def __call__(self, x, t, grad=None):
        act = get_activation(self.activation)
        time_code = _TimeEncoder(
            self.hidden[0],
            self.time_embedding_dim,
            self.frequency_range,
            self.activation,
            name="time_encoder",
        )(t)
        h = jnp.concatenate([x, time_code])
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        out = nn.Dense(
            self.out_dim,
            kernel_init=_output_init(self.zero_init_output),
            bias_init=nn.initializers.zeros,
            name="output",
        )(h)
        if self.grad_feature:
            # NN₂(t): its own time encoder (as PIS's `time_coder_grad`), a per-coordinate scale.
            g = _TimeEncoder(
                self.hidden[0],
                self.time_embedding_dim,
                self.frequency_range,
                self.activation,
                name="grad_time_encoder",
            )(t)
            scale = nn.Dense(
                self.out_dim,
                kernel_init=_output_init(self.zero_init_output),
                bias_init=nn.initializers.constant(self.grad_scale_init),
                name="grad_scale",
            )(act(g))
            out = out + scale * grad
        return out


def mlp_control(
    dim: int,
    *,
    hidden: Sequence[int] = (128, 128, 128),
    time_embedding_dim: int = 32,
    frequency_range: tuple[float, float] = DEFAULT_FREQUENCY_RANGE,
    activation: str = "gelu",
    zero_init_output: bool = True,
    grad_log_target: Callable[[jax.Array], jax.Array] | None = None,
    grad_clip: float = 100.0,
    grad_scale_init: float = 0.0,
    out_dim: int | None = None,
) -> ControlNet:
    """An MLP control `u_θ(x, t) ∈ R^out_dim` with sinusoidal time features.

    Without the grad-log-target feature:

        u_θ(x, t) = NN₁([x, E(t)]),   E(t) = Dense(act(Dense(φ(t)))),

    with `φ` the sinusoidal features of `sinusoidal_time_features` and `NN₁` an MLP of widths
    `hidden` (activation after every hidden layer) followed by a linear output layer.

    With `grad_log_target = ∇log γ` (the PIS / DDS / CMCD "grad-log-target" or Langevin feature):

        u_θ(x, t) = NN₁([x, E(t)]) + NN₂(t) ⊙ sg[clip(∇log γ(x), -c, c)],

    where `NN₂(t) ∈ R^dim` is a per-coordinate scale computed from its own time encoder, `sg` is
    `jax.lax.stop_gradient` (the feature is an input, not a path for gradients: neither θ nor x
    is differentiated through `∇log γ`), and the clip is element-wise at `c = grad_clip`.
    Each `apply` then costs one evaluation of `∇log γ` (`grad_evals_per_apply = 1`).

    Args:
        dim: dimension of `x`.
        hidden: widths of the hidden layers of `NN₁` (the first width is also the width of the
            time encoders).
        time_embedding_dim: number of sinusoidal time features (even).
        frequency_range: `(ω_min, ω_max)` of the geometric frequency grid, radians per unit t.
        activation: one of `ACTIVATIONS`.
        zero_init_output: initialise the output layer (and the `NN₂` output layer) to zero, so
            that `u_θ ≡ 0` at initialisation (with `grad_scale_init = 0`): training starts from
            the uncontrolled base process. Gradients still flow to the output layer.
        grad_log_target: one-point callable `x (dim,) -> ∇log γ(x) (dim,)`; enables the feature.
        grad_clip: element-wise clip `c` of `∇log γ` in the feature; 100 follows CMCD
            (`gradU` clipping) and PIS (`lgv_clip = 1e2`), see `methods.md` §5.2 and §10.6.
        grad_scale_init: initial value of the bias of `NN₂`'s output layer, i.e. `NN₂(t)` at
            initialisation when `zero_init_output` (0 gives a zero control at init).
        out_dim: output dimension (default `dim`); must equal `dim` with the grad feature.

    Returns:
        A `ControlNet`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = mlp_control(3, hidden=(16, 16))
        >>> params = net.init(jax.random.key(0))
        >>> net.apply(params, jnp.ones(3), 0.5).shape
        (3,)
    """
    dim = _check_positive_int(dim, "dim")
    out_dim = dim if out_dim is None else _check_positive_int(out_dim, "out_dim")
    hidden = _check_hidden(hidden)
    time_embedding_dim, frequency_range = _check_time_features(time_embedding_dim, frequency_range)
    get_activation(activation)
    use_grad = grad_log_target is not None
    if use_grad:
        if not callable(grad_log_target):
            raise TypeError(f"grad_log_target must be a callable x -> ∇log γ(x), got {type(grad_log_target)}")
        if out_dim != dim:
            raise ValueError(
                f"the grad-log-target feature needs out_dim == dim, got out_dim={out_dim}, dim={dim}"
            )
        if not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {grad_clip!r}")
    module = _MLPControl(
        out_dim=out_dim,
        hidden=hidden,
        time_embedding_dim=time_embedding_dim,
        frequency_range=frequency_range,
        activation=activation,
        zero_init_output=bool(zero_init_output),
        grad_feature=use_grad,
        grad_scale_init=float(grad_scale_init),
    )
    clip = float(grad_clip)

    def clipped(grad):
        grad = jnp.asarray(grad)
        if grad.shape != (dim,):
            raise ValueError(f"mlp_control: the ∇log γ feature must have shape ({dim},), got {grad.shape}")
        return jax.lax.stop_gradient(jnp.clip(grad, -clip, clip))

    def grad_feature(x):
        return clipped(grad_log_target(x)) if use_grad else None

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        x = jnp.zeros((dim,), jnp.float32)
        grad = jnp.zeros((dim,), jnp.float32) if use_grad else None
        return module.init(key, x, jnp.zeros((), jnp.float32), grad)

    def apply(params: PyTree, x: jax.Array, t: jax.Array) -> jax.Array:
        x = _check_point(x, dim, "mlp_control")
        t = _check_time(t, "mlp_control")
        return module.apply(params, x, t, grad_feature(x))

    def apply_with_grad(params: PyTree, x: jax.Array, t: jax.Array, grad: jax.Array) -> jax.Array:
        x = _check_point(x, dim, "mlp_control")
        return module.apply(params, x, _check_time(t, "mlp_control"), clipped(grad))

    return ControlNet(
        init=init,
        apply=apply,
        dim=dim,
        out_dim=out_dim,
        grad_evals_per_apply=int(use_grad),
        apply_with_grad=apply_with_grad if use_grad else None,
    )


# ---------------------------------------------------------------------------------------------
# E(n)-equivariant GNN control
# ---------------------------------------------------------------------------------------------


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
        h_i = jnp.broadcast_to(h[:, None, :], (n, n, h.shape[-1]))
        h_j = jnp.broadcast_to(h[None, :, :], (n, n, h.shape[-1]))
        m = act(nn.Dense(self.hidden, name="edge_1")(jnp.concatenate([h_i, h_j, r2], axis=-1)))
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


# ---------------------------------------------------------------------------------------------
# scalar networks
# ---------------------------------------------------------------------------------------------


class _ScalarMLP(nn.Module):
    hidden: tuple[int, ...]
    time_embedding_dim: int
    frequency_range: tuple[float, float]
    activation: str
    zero_init_output: bool

    @nn.compact
    def __call__(self, x, t):
        act = get_activation(self.activation)
        features = [t[None], sinusoidal_time_features(t, self.time_embedding_dim, self.frequency_range)]
        if x is not None:
            features.insert(0, x)
        h = jnp.concatenate(features)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        out = nn.Dense(
            1, kernel_init=_output_init(self.zero_init_output), bias_init=nn.initializers.zeros, name="output"
        )(h)
        return out[0]


SCALAR_INPUTS = ("t", "xt")


def scalar_net(
    *,
    hidden: Sequence[int] = (64, 64),
    input: str = "t",
    dim: int | None = None,
    time_embedding_dim: int = 16,
    frequency_range: tuple[float, float] = (0.1, 20.0),
    activation: str = "gelu",
    zero_init_output: bool = True,
) -> ScalarNet:
    """A small scalar network: a learned free energy `F(t)` or a potential `φ(x, t)`.

    `F(t) = MLP([t, φ(t)])` (`input="t"`) or `φ(x, t) = MLP([x, t, φ(t)])` (`input="xt"`), with
    `φ(t)` the sinusoidal time features; hidden layers use `activation`, the output layer is
    linear with one unit. Smooth in `t` and `x`, so `∂_t F`, `∂_t φ` and `∇_x φ` (NETS' PINN and
    action-matching losses, `methods.md` §6) are well defined by `jax.grad`.

    Args:
        hidden: widths of the hidden layers.
        input: `"t"` for `apply(params, t) -> ()`, `"xt"` for `apply(params, x, t) -> ()`.
        dim: dimension of `x`; required for `input="xt"`, must be `None` for `input="t"`.
        time_embedding_dim: number of sinusoidal time features (even). The default frequency
            range stops at 20 rad per unit t (lower than the controls' 100) because `∂_t F` is
            part of the NETS loss and high frequencies make it large at initialisation.
        frequency_range: `(ω_min, ω_max)` of the time features.
        activation: one of `ACTIVATIONS`.
        zero_init_output: zero the output layer (the network is identically 0 at init).

    Returns:
        A `ScalarNet`.
    """
    if input not in SCALAR_INPUTS:
        raise ValueError(f"unknown scalar_net input {input!r}; valid choices: {list(SCALAR_INPUTS)}")
    if input == "xt":
        dim = _check_positive_int(dim, "dim (required for input='xt')")
    elif dim is not None:
        raise ValueError(f"scalar_net(input='t') takes no dim, got dim={dim!r}")
    hidden = _check_hidden(hidden)
    time_embedding_dim, frequency_range = _check_time_features(time_embedding_dim, frequency_range)
    get_activation(activation)
    module = _ScalarMLP(
        hidden=hidden,
        time_embedding_dim=time_embedding_dim,
        frequency_range=frequency_range,
        activation=activation,
        zero_init_output=bool(zero_init_output),
    )

    if input == "t":

        @jax.jit
        def init(key: jax.Array) -> PyTree:
            return module.init(key, None, jnp.zeros((), jnp.float32))

        def apply(params: PyTree, t: jax.Array) -> jax.Array:
            return module.apply(params, None, _check_time(t, "scalar_net"))

    else:
        init, apply = _point_time_functions(module, dim, "scalar_net")

    return ScalarNet(init=init, apply=apply, input=input, dim=dim)
