"""Hand-fused `lax.scan` references of four training steps, for the harness-overhead ratios.

Each reference recomputes ONE training step of a method from the method's own state type, with
the same maths, the same random numbers (same key splits) and the same optimiser (optax), but
without the suite's layers: no `samplers.sde` / diffrax integrator, no flax module (the MLP and the
EGNN are evaluated by hand from the flax parameter dict), no `Problem` / `Annealing` / buffer helpers,
batches written as batches instead of `vmap` over one-example functions. The constants of the
discrete chain (`problem.chain`: step sizes, σ_k, the exact backward kernel) are read once as data.

Covered code paths (one representative each), all with the Brownian base (Dirac start, kernel-form
path weights) on a non-particle target and the MLP control without the grad-log-target feature
unless stated:

- `adjoint_matching`: on-policy trajectories under `sg[u]` + lean adjoint (constant `ã = -∇r(x_K)`
  for the Brownian base, `b = 0`) + the loss `mean_i Σ_k ½h_k|u(x_k,t_k) + σ_k ã_i|²` (all K times);
- `adjoint_sampling`: buffer regression: a refresh every `refresh_every` steps (simulate
  `resample_size` paths, store `(x_1, ∇r(x_1), log w)` FIFO), a uniform draw of `batch_size` pairs,
  the bridge sample `X_t = α_t x_1 + β_t ξ` and the loss `mean w(t) |u(X_t, t) - σ̃(t) ∇r(x_1)|²`
  (`w = 1` or the 'score' weighting `1/σ̃²`), `∇log γ` norm-clipped at `max_grad_norm_target`.
  Also on particle targets (dw4, lj13; the suite's geometric VE schedule, 'score' weighting and clip
  100): the EGNN control (`egnn`: time encoder, edge / coordinate / node MLPs on the fully connected
  graph, mean aggregation, output projected to zero centre of mass), the EM noise and the bridge
  noise projected to zero centre of mass, `dof = (n - 1)·d` in the kernel-form log-weights, the clip
  per particle (`min(1, c/|g_i|)`, the plain formula of `samplers.methods.common.clip_norm` for
  finite gradients) and `∇r` projected. EMA, learning-rate decay and importance-weighted draws (with
  the ESS-floor tempering) are off in the suite's Adjoint Sampling and refused here;
- `pis`: path-KL loss `-mean log w` with gradients through the whole reparametrised path and the
  grad-log-target feature `NN₂(t) ⊙ sg[clip(∇log γ)]`;
- `nets_pinn`: detached Langevin + drift paths saving `U_1, ∇U_1`, time points drawn ∝ trapezoid
  weights, and the PINN residual `∂_tF̂ + ∇·b̂ - ∇U_t·b̂ - ∂_tU_t` with the exact divergence.

`tests/benchmarks/perf/test_perf.py` checks that each reference gives the method's loss, gradient norm
and updated parameters on the same state and key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from samplers.method import Cost
from samplers.networks import DEFAULT_FREQUENCY_RANGE, egnn_control
from samplers.promotion import standard_promotion

__all__ = ["REFERENCES", "reference_step"]

sg = jax.lax.stop_gradient
PyTree = Any
TIME_EPS = 1e-5  # samplers.methods.bridge_regression.TIME_EPS


# ---------------------------------------------------------------------------------------------
# the networks, by hand
# ---------------------------------------------------------------------------------------------


def _dense(p, h):
    return h @ p["kernel"] + p["bias"]


def _time_features(t, num, frequency_range=DEFAULT_FREQUENCY_RANGE):
    half = num // 2
    freqs = jnp.geomspace(frequency_range[0], frequency_range[1], half, dtype=jnp.float32)
    angles = t[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


def _time_code(p, t, num):
    return _dense(p["dense_2"], jax.nn.gelu(_dense(p["dense_1"], _time_features(t, num))))


def mlp(params, x, t, *, num_hidden: int, num_features: int, grad=None):
    """The flax `mlp_control` of `samplers.networks` on a batch `x (n, d)` with `t ()` or `(n,)`, or on
    one point `x (d,)` with `t ()` (no batch axis: nested `vmap`s of a batch of one would turn every
    matmul into a batched one, which XLA:CPU runs about 3x slower, measured)."""
    p = params["params"]
    code = _time_code(p["time_encoder"], t, num_features)
    code = jnp.broadcast_to(code, x.shape[:-1] + code.shape[-1:])
    h = jnp.concatenate([x, code], -1)
    for i in range(num_hidden):
        h = jax.nn.gelu(_dense(p[f"Dense_{i}"], h))
    out = _dense(p["output"], h)
    if grad is not None:
        g = jax.nn.gelu(_time_code(p["grad_time_encoder"], t, num_features))
        out = out + _dense(p["grad_scale"], g) * grad
    return out


def scalar_t(params, t, *, num_hidden: int, num_features: int = 16):
    """The flax `scalar_net(input="t")` (frequency range (0.1, 20)) of ONE time."""
    p = params["params"]
    h = jnp.concatenate([t[None], _time_features(t, num_features, (0.1, 20.0))])
    for i in range(num_hidden):
        h = jax.nn.gelu(_dense(p[f"Dense_{i}"], h))
    return _dense(p["output"], h)[0]


_EGNN_DEFAULTS = {k: v.default for k, v in inspect.signature(egnn_control).parameters.items() if k != "spec"}


def egnn(params, x, t, *, particles, num_features: int):
    """The flax `egnn_control` of `samplers.networks.egnn` (its default activation, frequency range and
    distance ε) on a batch `x (B, n·d)` with `t ()` or `(B,)`: the same layers (`_EGNNLayer`: edge MLP
    on `[h_i, h_j, |x_i - x_j|²]`, the coordinate MLP's bounded update, mean aggregation over the n - 1
    neighbours, the node MLP's residual update), the time encoder as the initial node features, and the
    displacement projected to zero centre of mass, written on `(B, n, n, ·)` edge arrays. The edge MLP's
    first layer is applied as the library applies it (`_EdgeInput`: two per-node products and a
    broadcast sum instead of one matmul over the edge concatenation)."""
    act = {"silu": jax.nn.silu, "gelu": jax.nn.gelu}[_EGNN_DEFAULTS["activation"]]
    eps = _EGNN_DEFAULTS["distance_epsilon"]
    p = params["params"]
    n, d = particles.n_particles, particles.spatial_dim
    batch = x.shape[0]
    enc = p["time_encoder"]
    features = _time_features(t, num_features, _EGNN_DEFAULTS["frequency_range"])
    code = _dense(enc["dense_2"], act(_dense(enc["dense_1"], features)))  # (H,) or (B, H)
    hidden = code.shape[-1]
    h = jnp.broadcast_to(code[..., None, :] if code.ndim == 2 else code, (batch, n, hidden))
    off_diagonal = (1.0 - jnp.eye(n, dtype=x.dtype))[:, :, None]
    pos0 = x.reshape(batch, n, d)
    pos = pos0
    layers = sorted((k for k in p if k.startswith("layer_")), key=lambda k: int(k.split("_")[1]))
    for name in layers:
        q = p[name]
        diff = pos[:, :, None, :] - pos[:, None, :, :]  # (B, n, n, d)
        r2 = jnp.sum(diff**2, -1, keepdims=True)
        w, b = q["edge_1"]["kernel"], q["edge_1"]["bias"]  # W [h_i, h_j, r²] split by rows, per node
        m = act((h @ w[:hidden])[:, :, None] + (h @ w[hidden : 2 * hidden])[:, None] + r2 * w[2 * hidden] + b)
        m = act(_dense(q["edge_2"], m)) * off_diagonal
        weight = act(_dense(q["coord_1"], m)) @ q["coord_2"]["kernel"]
        unit = diff / (jnp.sqrt(r2 + eps) + 1.0)
        pos = pos + jnp.sum(unit * weight * off_diagonal, 2) / (n - 1)
        message = jnp.sum(m, 2) / (n - 1)
        h = h + _dense(q["node_2"], act(_dense(q["node_1"], jnp.concatenate([h, message], -1))))
    velocity = pos - pos0
    velocity = velocity - velocity.mean(1, keepdims=True)
    return velocity.reshape(batch, n * d)


def _remove_mean(x, particles):
    """Project `(..., n·d)` onto the zero centre-of-mass subspace (identity without particles)."""
    if particles is None:
        return x
    shaped = x.reshape(*x.shape[:-1], particles.n_particles, particles.spatial_dim)
    return (shaped - shaped.mean(-2, keepdims=True)).reshape(x.shape)


def _control_net(problem, config) -> Callable:
    """`net(params, x (B, dim), t)`: the MLP (without the grad feature) or, on particles, the EGNN."""
    net = config.network
    if problem.particles is not None:
        return lambda p, x, t: egnn(p, x, t, particles=problem.particles, num_features=net.time_embedding_dim)
    return lambda p, x, t: mlp(p, x, t, num_hidden=len(net.hidden), num_features=net.time_embedding_dim)


def _gaussian_log_prob(x, mean, var, dof):
    return -0.5 * jnp.sum((x - mean) ** 2, -1) / var - 0.5 * dof * jnp.log(2.0 * jnp.pi * var)


def _optimizer(config) -> optax.GradientTransformation:
    optim = config.optim
    adam = optax.adam(optim.learning_rate)
    chain = adam if optim.grad_clip is None else optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
    # optax mixes its int32 step count with floats (traced under standard promotion; no runtime cost)
    return optax.GradientTransformation(standard_promotion(chain.init), standard_promotion(chain.update))


def _require(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise ValueError(f"the {name} reference covers only {what}")


def _check_problem(problem, name: str, particles: bool = False) -> None:
    _require(problem.base.kind == "brownian" and problem.base.initial_is_dirac, name, "the Brownian base")
    if not particles:
        _require(problem.particles is None, name, "non-particle targets (the MLP control)")
    _require(problem.kind == "sampling", name, "sampling problems")


# ---------------------------------------------------------------------------------------------
# the kernel-form Euler–Maruyama chain (Brownian base, Dirac start)
# ---------------------------------------------------------------------------------------------


def _chain(problem):
    c = problem.chain
    return problem.times, c.step_sizes, c.sigmas, c.backward_coefs, c.backward_vars, c.marginal_vars


def _simulate(key, problem, control, n, *, save: bool):
    """EM paths `x_{k+1} = x_k + h σ u + σ sqrt(h) ε` with kernel-form `log w`; `control(x, t)` batched.

    On particle systems the noise is projected to zero centre of mass (the control is the EGNN's,
    projected already) and the Gaussian kernels count `dof = (n - 1)·d` degrees of freedom."""
    ts, hs, sigmas, coefs, bvars, _ = _chain(problem)
    dim, dof = problem.dim, problem.base.dof
    _, key_noise = jax.random.split(key)

    def body(carry, k):
        x, log_w = carry
        h, sigma = hs[k], sigmas[k]
        sqrt_h = jnp.sqrt(h)
        # the Brownian increment is drawn as sqrt(h) ε and divided back, as GridBrownianPath does
        d_w = _remove_mean(
            sqrt_h * jax.random.normal(jax.random.fold_in(key_noise, k), (n, dim)), problem.particles
        )
        eps = d_w / sqrt_h
        x_next = x + h * sigma * control(x, ts[k]) + sigma * d_w
        log_forward = -0.5 * jnp.sum(eps * eps, -1) - 0.5 * dof * jnp.log(2.0 * jnp.pi * sigma**2 * h)
        var = jnp.where(k == 0, 1.0, bvars[k])
        log_backward = jnp.where(k == 0, 0.0, _gaussian_log_prob(x, coefs[k] * x_next, var, dof))
        return (x_next, log_w + log_backward - log_forward), (x_next if save else None)

    x0 = jnp.zeros((n, dim), jnp.float32)
    (x_end, log_w), xs = jax.lax.scan(body, (x0, jnp.zeros((n,), jnp.float32)), jnp.arange(problem.num_steps))
    log_w = log_w + jax.vmap(problem.target.log_prob)(x_end)
    trajectory = jnp.concatenate([x0[None], xs]) if save else None
    return x_end, log_w, trajectory


def _grad_tilt(problem, x, clip=None):
    """`∇r(x) = ∇log γ(x) + x/s_K` of a batch, `∇log γ` norm-clipped at `clip` (None: off) per sample, or
    per particle on particle systems (then `∇r` projected to zero centre of mass)."""
    score = jax.vmap(jax.grad(problem.target.log_prob))(x)
    particles = problem.particles
    if clip is not None:
        blocks = score if particles is None else score.reshape(x.shape[0], particles.n_particles, -1)
        norm = jnp.linalg.norm(blocks, axis=-1, keepdims=True)
        blocks = blocks * jnp.minimum(1.0, clip / jnp.maximum(norm, jnp.finfo(score.dtype).tiny))
        score = blocks.reshape(score.shape)
    return _remove_mean(score + x / problem.chain.marginal_vars[-1], particles)


def _batch_log_Z(log_w):
    return jax.nn.logsumexp(log_w) - jnp.log(log_w.shape[0])


# ---------------------------------------------------------------------------------------------
# adjoint matching
# ---------------------------------------------------------------------------------------------


def adjoint_matching_step(problem, config) -> Callable:
    """One AM step (`samplers.methods.adjoint_matching`), hand-fused."""
    from samplers.methods.adjoint_matching import AdjointMatchingInfo

    name = "adjoint_matching"
    _check_problem(problem, name)
    _require(
        config.network.kind in ("auto", "mlp") and not config.grad_log_target_feature, name, "the plain MLP"
    )
    _require(config.time_subsample is None and config.time_weighting == "dt", name, "all K times, dt weights")
    _require(config.loss_clip_quantile is None and config.passes_per_batch == 1, name, "one unclipped pass")
    _require(config.max_grad_norm_target is None, name, "no terminal-gradient clip")
    ts, hs, sigmas, *_ = _chain(problem)
    n, num_steps = config.batch_size, problem.num_steps
    optimizer = _optimizer(config)
    net = lambda p, x, t: mlp(
        p, x, t, num_hidden=len(config.network.hidden), num_features=config.network.time_embedding_dim
    )

    def step(key, state):
        key_sim, _ = jax.random.split(key)
        params = state.params["control"]
        x_end, log_w, traj = _simulate(key_sim, problem, lambda x, t: net(sg(params), x, t), n, save=True)
        adjoint = -_grad_tilt(problem, x_end)  # ã_k = ã_K for b = 0
        traj = sg(traj)

        def objective(p):
            u = jax.vmap(lambda x, t: net(p["control"], x, t))(traj[:-1], ts[:-1])  # (K, n, d)
            residual = u + sigmas[:, None, None] * adjoint[None]
            per_sample = jnp.sum(0.5 * hs[:, None] * jnp.sum(residual**2, -1), 0)
            return jnp.mean(per_sample)

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        evals = n * num_steps
        cost = state.cost + Cost.of(energy_evals=n, grad_evals=n, network_evals=2 * evals, sde_steps=evals)
        norm = jnp.linalg.norm(adjoint, axis=-1)
        info = AdjointMatchingInfo(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            elbo=jnp.mean(log_w),
            log_Z=_batch_log_Z(log_w),
            adjoint_max=jnp.max(norm),
            terminal_grad_norm=jnp.mean(norm),
            kept_fraction=jnp.ones(()),
        )
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state, cost=cost, step=state.step + 1), info

    return step


# ---------------------------------------------------------------------------------------------
# adjoint sampling (buffer regression)
# ---------------------------------------------------------------------------------------------


def adjoint_sampling_step(problem, config) -> Callable:
    """One Adjoint Sampling step (`samplers.methods.bridge_regression`, kind "adjoint"), hand-fused."""
    from samplers.buffer import BufferState
    from samplers.methods.bridge_regression import BridgeRegressionInfo, BufferEntry

    name = "adjoint_sampling"
    _check_problem(problem, name, particles=True)
    kind = "egnn" if problem.particles is not None else "mlp"
    _require(config.network.kind in ("auto", kind), name, "the MLP control (the EGNN on particle systems)")
    _require(config.importance_weights == "none", name, "uniform draws")
    _require(config.loss_weighting in ("paper", "score"), name, "the 'paper' and 'score' loss weightings")
    _require(config.optim.decay_steps is None and config.optim.ema_decay is None, name, "defaults")
    _require(config.sde.weights in ("auto", "kernel"), name, "kernel-form path weights")
    clip = config.max_grad_norm_target
    ts, _, sigmas, _, _, marginal_vars = _chain(problem)
    n, m = config.batch_size, config.resample_size
    optimizer = _optimizer(config)
    net = _control_net(problem, config)
    t_lo, t_hi = config.t_min, 1.0 - config.t_min

    def refresh(key, params, buf):
        x, log_w, _ = _simulate(key, problem, lambda x, t: net(sg(params), x, t), m, save=False)
        log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
        cap = buf.data.x1.shape[0]
        slots = (buf.position + jnp.arange(m)) % cap
        data = BufferEntry(
            buf.data.x1.at[slots].set(x),
            buf.data.grad.at[slots].set(_grad_tilt(problem, x, clip)),
            buf.data.log_w.at[slots].set(log_w),
        )
        evals = m * problem.num_steps
        cost = Cost.of(energy_evals=m, grad_evals=m, network_evals=evals, sde_steps=evals)
        return BufferState(data, (buf.position + m) % cap, jnp.minimum(buf.size + m, cap)), cost

    def keep(key, params, buf):
        return buf, Cost.zero()

    def step(key, state):
        key_refresh, key_draw, key_loss = jax.random.split(key, 3)
        refreshed = state.step % config.refresh_every == 0
        buf, refresh_cost = jax.lax.cond(refreshed, refresh, keep, key_refresh, state.params, state.extra)
        index = jax.random.randint(key_draw, (n,), 0, jnp.maximum(buf.size, 1))
        x_1, grad_1 = buf.data.x1[index], buf.data.grad[index]
        key_t, key_x = jax.random.split(key_loss)
        t = jnp.clip(jax.random.uniform(key_t, (n,), minval=t_lo, maxval=t_hi), TIME_EPS, 1.0 - TIME_EPS)
        k = jnp.clip(jnp.searchsorted(ts, t, side="right", method="compare_all") - 1, 0, sigmas.shape[0] - 1)
        sigma = sigmas[k]
        nu = marginal_vars[k] + sigma**2 * (t - ts[k])
        alpha = jnp.minimum(nu / marginal_vars[-1], 1.0)  # float32 rounding near t = 1 (geometric σ)
        bridge_std = jnp.sqrt(jnp.maximum(nu * (1.0 - alpha), 0.0))
        noise = _remove_mean(jax.random.normal(key_x, x_1.shape), problem.particles)
        x_t = alpha[:, None] * x_1 + bridge_std[:, None] * noise
        y = sigma[:, None] * grad_1
        weight = 1.0 / sigma**2 if config.loss_weighting == "score" else jnp.ones_like(sigma)

        def objective(p):
            return jnp.mean(weight * jnp.sum((net(p, x_t, t) - y) ** 2, -1))

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        valid = (jnp.arange(buf.data.log_w.shape[0]) < buf.size) & jnp.isfinite(buf.data.log_w)
        lw = jnp.where(valid, buf.data.log_w, -jnp.inf)
        count = jnp.maximum(buf.size, 1).astype(lw.dtype)
        ess = jnp.exp(2 * jax.nn.logsumexp(lw) - jax.nn.logsumexp(2 * lw)) / count
        info = BridgeRegressionInfo(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            buffer_ess=ess,
            refreshed=refreshed.astype(jnp.float32),
            buffer_ess_tempered=jnp.ones_like(ess),
            temper_beta=jnp.ones_like(ess),
        )
        cost = state.cost + refresh_cost + Cost.of(network_evals=n)
        params = optax.apply_updates(state.params, updates)
        new_state = state._replace(params=params, opt_state=opt_state, cost=cost, step=state.step + 1)
        return new_state._replace(extra=buf), info

    return step


# ---------------------------------------------------------------------------------------------
# PIS (path KL through the reparametrised path)
# ---------------------------------------------------------------------------------------------


def pis_step(problem, config) -> Callable:
    """One PIS step (`samplers.methods.path_kl.build_pis`), hand-fused (backprop through a `lax.scan`)."""
    from samplers.methods.path_kl import PathKLInfo

    name = "pis"
    _check_problem(problem, name)
    _require(
        config.network.kind in ("auto", "mlp") and config.grad_log_target_feature, name, "MLP + grad feature"
    )
    n = config.batch_size
    clip = config.grad_target_clip
    optimizer = _optimizer(config)
    score = jax.vmap(jax.grad(problem.target.log_prob))

    def control(p, x, t):
        grad = sg(jnp.clip(score(x), -clip, clip))
        return mlp(
            p,
            x,
            t,
            num_hidden=len(config.network.hidden),
            num_features=config.network.time_embedding_dim,
            grad=grad,
        )

    def objective(params, key):
        _, log_w, _ = _simulate(key, problem, lambda x, t: control(params["control"], x, t), n, save=False)
        return -jnp.mean(log_w), log_w

    def step(key, state):
        (loss, log_w), grads = jax.value_and_grad(objective, has_aux=True)(state.params, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        evals = n * problem.num_steps
        cost = state.cost + Cost.of(
            energy_evals=n, grad_evals=evals + n, network_evals=evals, sde_steps=evals
        )
        log_w = sg(log_w)
        info = PathKLInfo(
            loss=loss, grad_norm=optax.tree.norm(grads), elbo=jnp.mean(log_w), log_Z=_batch_log_Z(log_w)
        )
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state, cost=cost, step=state.step + 1), info

    return step


# ---------------------------------------------------------------------------------------------
# NETS PINN
# ---------------------------------------------------------------------------------------------


def nets_pinn_step(problem, config) -> Callable:
    """One NETS-PINN step (`samplers.methods.nets.build_nets_pinn`), hand-fused (exact divergence)."""
    from samplers.methods.nets import EPSILON_SCHEDULES, PINNInfo

    name = "nets_pinn"
    _check_problem(problem, name)
    _require(
        config.network.kind in ("auto", "mlp") and problem.dim <= config.exact_div_max_dim, name, "exact div"
    )
    _require(config.max_grad_norm_target is None and config.time_subsample is not None, name, "defaults")
    ts = problem.times
    hs = jnp.diff(ts)
    n, dim, s0 = config.batch_size, problem.dim, float(config.s0)
    var0 = s0**2
    profile = EPSILON_SCHEDULES[config.epsilon_schedule](ts[:-1])
    optimizer = _optimizer(config)
    drift = lambda p, x, t: mlp(
        p, x, t, num_hidden=len(config.network.hidden), num_features=config.network.time_embedding_dim
    )
    free = lambda p, t: scalar_t(p, t, num_hidden=len(config.free_energy_hidden))
    log_target = problem.target.log_prob
    u0 = lambda x: 0.5 * jnp.sum(x * x, -1) / var0 + 0.5 * dim * jnp.log(2.0 * jnp.pi * var0)
    u1_and_grad = jax.vmap(jax.value_and_grad(lambda x: -log_target(x)))
    q = 0.5 * (jnp.concatenate([jnp.zeros((1,)), hs]) + jnp.concatenate([hs, jnp.zeros((1,))]))
    m = config.time_subsample

    def simulate(key, params, epsilons):
        key_init, key_noise, _ = jax.random.split(key, 3)

        def body(carry, k):
            x, u1, g1, b = carry
            t, h = ts[k], hs[k]
            noise = jax.random.normal(jax.random.fold_in(key_noise, k), x.shape)
            langevin = (1.0 - t) * x / var0 + t * g1
            x_next = x + h * (b - epsilons[k] * langevin) + jnp.sqrt(2.0 * epsilons[k] * h) * noise
            u1_next, g1_next = u1_and_grad(x_next)
            return (x_next, u1_next, g1_next, drift(params, x_next, ts[k + 1])), (x_next, u1_next, g1_next)

        x0 = s0 * jax.random.normal(key_init, (n, dim), jnp.float32)
        u10, g10 = u1_and_grad(x0)
        _, (xs, u1s, g1s) = jax.lax.scan(
            body, (x0, u10, g10, drift(params, x0, ts[0])), jnp.arange(ts.shape[0] - 1)
        )
        cat = lambda a, b: jnp.concatenate([a[None], b])
        return cat(x0, xs), cat(u10, u1s), cat(g10, g1s)

    def residual(params, x, t, u1, g1):
        """PINN residual of ONE point."""
        f = lambda y: drift(params["drift"], y, t)  # one point, no batch axis
        values, columns = jax.vmap(lambda v: jax.jvp(f, (x,), (v,)))(jnp.eye(dim, dtype=x.dtype))
        b, div = values[0], jnp.trace(columns)
        d_free = jax.grad(lambda s: free(params["free_energy"], s))(t)
        grad_u = (1.0 - t) * x / var0 + t * g1
        return d_free + div - jnp.dot(grad_u, b) - (u1 - u0(x))

    def step(key, state):
        key_sim, key_time, _ = jax.random.split(key, 3)
        traj, u1, g1 = simulate(key_sim, sg(state.params["drift"]), state.extra.epsilon * profile)
        index = jax.random.categorical(key_time, jnp.log(q), shape=(n, m))
        weight = jnp.full((n, m), (ts[-1] - ts[0]) / m)
        rows = jnp.arange(n)[:, None]
        x, u1, g1 = sg(traj)[index, rows], sg(u1)[index, rows], sg(g1)[index, rows]
        t = ts[index]

        def objective(p):
            r = jax.vmap(jax.vmap(lambda *a: residual(p, *a)))(x, t, u1, g1)
            return jnp.sum(weight * r**2) / n

        loss, grads = jax.value_and_grad(objective)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        k = problem.num_steps
        cost = state.cost + Cost.of(
            energy_evals=n * (k + 1),
            grad_evals=n * (k + 1),
            network_evals=n * (k + 1) + n * m * (dim + 1),
            sde_steps=n * k,
        )
        fe = state.params["free_energy"]
        info = PINNInfo(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            log_Z_free_energy=free(fe, jnp.float32(0.0)) - free(fe, jnp.float32(1.0)),
        )
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state, cost=cost, step=state.step + 1), info

    return step


REFERENCES: dict[str, Callable] = {
    "adjoint_matching": adjoint_matching_step,
    "adjoint_sampling": adjoint_sampling_step,
    "pis": pis_step,
    "nets_pinn": nets_pinn_step,
}


def reference_step(method: str, problem, config) -> Callable:
    """The hand-fused `step(key, state) -> (state, info)` of `method` (one of `REFERENCES`)."""
    if method not in REFERENCES:
        raise ValueError(f"no hand-fused reference for {method!r}; valid choices: {sorted(REFERENCES)}")
    return REFERENCES[method](problem, config)
