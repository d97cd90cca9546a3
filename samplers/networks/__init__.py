"""Control networks `u_θ(x, t)` and small scalar networks, built with flax (linen).

One module per network family (`mlp`, `egnn`, `scalar`) on shared pieces (`base`).

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

from samplers.networks.base import (
    ACTIVATIONS,
    DEFAULT_FREQUENCY_RANGE,
    ControlNet,
    ScalarNet,
    get_activation,
    sinusoidal_time_features,
)
from samplers.networks.egnn import egnn_control
from samplers.networks.mlp import mlp_control
from samplers.networks.scalar import scalar_net

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_FREQUENCY_RANGE",
    "ControlNet",
    "ScalarNet",
    "egnn_control",
    "get_activation",
    "mlp_control",
    "scalar_net",
    "sinusoidal_time_features",
]
