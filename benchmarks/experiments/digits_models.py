"""Training and caching of the digits task's models: the flow-matching base and the reward classifier.

The architectures, the data and the loaders live in `targets.digits` (which knows nothing of training
or of samplers); this module fits them with optax inside one `lax.scan` and writes the frozen
parameters (`targets/data/digits_flow.npz`, `digits_classifier.npz`) with a provenance JSON next to
each (command, seed, config, architecture, data split, loss-curve summary, held-out metrics,
versions, parameter hash). `ensure_models` trains only what is missing (or everything with
`retrain=True`); `tiltbench digits --retrain` calls it.

**Flow matching** (`flow_matching_loss`): with `X_0 ~ N(0, I)`, `X_1` a training image,
`t ~ U[0, 1]` and `X_t = (1 - t) X_0 + t X_1`,

    L(θ) = E |v_θ(X_t, t) - (X_1 - X_0)|²     (squared norm summed over the 64 pixels),

minimised by `v = E[X_1 - X_0 | X_t]`. Adam with a cosine learning-rate decay; the shipped
parameters are an exponential moving average (`ema_decay`) of the iterates, a standard choice for
sample quality of generative models.

**Classifier** (`classifier_loss`): softmax cross-entropy with Gaussian input-noise augmentation
`x + σ_aug ε` (it smooths the classifier, so `∇ log p(c|x)` is less adversarial off the data
manifold, where a fine-tuned sampler's early iterates live), label smoothing `α` (targets
`(1 - α) onehot + α/10`: the reward of a clearly different digit saturates near `log(α/10)` instead
of running to -20 or below, which keeps `λ∇r` and the adjoints of Adjoint Matching bounded) and
AdamW weight decay. Its held-out accuracy on the test split is recorded.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.grid.records import atomic_savez, atomic_write_json
from samplers.promotion import standard_promotion
from targets import digits

__all__ = [
    "ClassifierTrainConfig",
    "FlowTrainConfig",
    "classifier_loss",
    "ensure_models",
    "flow_matching_loss",
    "save_model",
    "train_classifier",
    "train_flow",
]

_VERSION_PACKAGES = ("scikit-learn", "jax", "jaxlib", "flax", "optax", "numpy")


@dataclasses.dataclass(frozen=True)
class FlowTrainConfig:
    """Flow-matching training: `steps` Adam steps of `batch_size` pairs, cosine decay from
    `learning_rate`, EMA of the parameters with `ema_decay`."""

    spec: digits.FlowSpec = dataclasses.field(default_factory=digits.FlowSpec)
    steps: int = 10_000
    batch_size: int = 256
    learning_rate: float = 2e-3
    ema_decay: float = 0.999
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
    """Classifier training: `steps` AdamW steps (weight decay `weight_decay`) of `batch_size` images
    with input noise `noise_std` and label smoothing `label_smoothing`."""

    spec: digits.ClassifierSpec = dataclasses.field(default_factory=digits.ClassifierSpec)
    steps: int = 3_000
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.2
    label_smoothing: float = 0.1
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def flow_matching_loss(apply, params, key: jax.Array, x1: jax.Array) -> jax.Array:
    """`mean_i |v_θ(x_t^i, t_i) - (x_1^i - x_0^i)|²` for a batch `x1 (n, 64)` (fresh `x_0`, `t`)."""
    key_t, key_0 = jax.random.split(key)
    n = x1.shape[0]
    t = jax.random.uniform(key_t, (n,))
    x0 = jax.random.normal(key_0, x1.shape, x1.dtype)
    xt = (1.0 - t)[:, None] * x0 + t[:, None] * x1
    v = jax.vmap(apply, in_axes=(None, 0, 0))(params, xt, t)
    return jnp.mean(jnp.sum((v - (x1 - x0)) ** 2, axis=-1))


def classifier_loss(
    apply, params, key: jax.Array, x: jax.Array, y: jax.Array, noise_std: float, label_smoothing: float = 0.0
) -> jax.Array:
    """Mean cross-entropy `-Σ_j q_j log p(j | x + noise_std·ε)` with the smoothed labels
    `q = (1 - α) onehot(y) + α/10` (`α = label_smoothing`)."""
    x = x + noise_std * jax.random.normal(key, x.shape, x.dtype)
    logits = jax.vmap(apply, in_axes=(None, 0))(params, x)
    targets = optax.smooth_labels(jax.nn.one_hot(y, digits.NUM_CLASSES), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))


# ---------------------------------------------------------------------------------------------
# training loops (one lax.scan each)
# ---------------------------------------------------------------------------------------------


def _loss_summary(losses: np.ndarray, windows: int = 20) -> dict[str, Any]:
    """Initial / final / minimum loss and the mean loss over `windows` equal slices of training."""
    losses = np.asarray(losses, np.float64)
    tail = max(1, losses.shape[0] // 100)
    slices = np.array_split(losses, min(windows, losses.shape[0]))
    return {
        "initial": float(losses[0]),
        "final_mean_last_1pct": float(losses[-tail:].mean()),
        "min": float(losses.min()),
        "window_means": [float(s.mean()) for s in slices],
        "num_windows": len(slices),
    }


def train_flow(config: FlowTrainConfig, images: np.ndarray) -> tuple[dict, dict[str, Any]]:
    """Fit the velocity MLP by flow matching on `images (n, 64)`.

    Returns:
        `(ema_params, info)` with `info = {"losses": per-step losses (steps,), "train_time_s": ...}`.
    """
    apply = digits.velocity_apply(config.spec)
    module = digits.VelocityMLP(tuple(config.spec.hidden), config.spec.num_time_features)
    key_init, key_steps = jax.random.split(jax.random.key(config.seed))
    params = module.init(key_init, jnp.zeros(digits.NUM_PIXELS), jnp.zeros(()))["params"]
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.01)
    optimizer = optax.adam(schedule)
    data = jnp.asarray(images, jnp.float32)
    n = data.shape[0]

    def step(carry, index):
        params, ema, opt_state = carry
        key = jax.random.fold_in(key_steps, index)
        key_batch, key_loss = jax.random.split(key)
        batch = data[jax.random.randint(key_batch, (config.batch_size,), 0, n)]
        loss, grads = jax.value_and_grad(lambda p: flow_matching_loss(apply, p, key_loss, batch))(params)
        updates, opt_state = standard_promotion(optimizer.update)(grads, opt_state, params)  # optax promotes
        params = optax.apply_updates(params, updates)
        ema = optax.incremental_update(params, ema, 1.0 - config.ema_decay)
        return (params, ema, opt_state), loss

    run = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(config.steps)))
    start = time.perf_counter()
    (_, ema, _), losses = jax.block_until_ready(run((params, params, optimizer.init(params))))
    return ema, {"losses": np.asarray(losses), "train_time_s": time.perf_counter() - start}


def held_out_flow_loss(
    apply, params, images: np.ndarray, seed: int = 1, repeats: int = 8
) -> dict[str, float]:
    """Monte-Carlo flow-matching loss on `images` (`repeats` draws of `(x_0, t)` per image) with its SE."""
    data = jnp.asarray(images, jnp.float32)
    keys = jax.random.split(jax.random.key(seed), repeats)
    per_image = jax.jit(
        jax.vmap(
            lambda k: jax.vmap(lambda kk, x: flow_matching_loss(apply, params, kk, x[None]))(
                jax.random.split(k, data.shape[0]), data
            )
        )
    )(keys)
    values = np.asarray(per_image).ravel()
    return {"mean": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(values.size))}


def train_classifier(
    config: ClassifierTrainConfig, train: digits.DigitsData, test: digits.DigitsData
) -> tuple[dict, dict[str, Any]]:
    """Fit the classifier; returns `(params, info)` with the per-step losses and train/test accuracy."""
    apply = digits.classifier_apply(config.spec)
    module = digits.ClassifierMLP(tuple(config.spec.hidden))
    key_init, key_steps = jax.random.split(jax.random.key(config.seed))
    params = module.init(key_init, jnp.zeros(digits.NUM_PIXELS))["params"]
    optimizer = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    x, y = jnp.asarray(train.images), jnp.asarray(train.labels)
    n = x.shape[0]

    def step(carry, index):
        params, opt_state = carry
        key_batch, key_noise = jax.random.split(jax.random.fold_in(key_steps, index))
        pick = jax.random.randint(key_batch, (config.batch_size,), 0, n)
        loss, grads = jax.value_and_grad(
            lambda p: classifier_loss(
                apply, p, key_noise, x[pick], y[pick], config.noise_std, config.label_smoothing
            )
        )(params)
        updates, opt_state = standard_promotion(optimizer.update)(grads, opt_state, params)  # optax promotes
        return (optax.apply_updates(params, updates), opt_state), loss

    start = time.perf_counter()
    run = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(config.steps)))
    (params, _), losses = jax.block_until_ready(run((params, optimizer.init(params))))
    train_time = time.perf_counter() - start

    def accuracy(data: digits.DigitsData) -> float:
        logits = jax.vmap(apply, in_axes=(None, 0))(params, jnp.asarray(data.images))
        return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == data.labels))

    def nll(data: digits.DigitsData) -> float:
        logits = jax.vmap(apply, in_axes=(None, 0))(params, jnp.asarray(data.images))
        labels = jnp.asarray(data.labels)
        return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))

    info = {
        "losses": np.asarray(losses),
        "train_time_s": train_time,
        "train_accuracy": accuracy(train),
        "test_accuracy": accuracy(test),
        "test_nll": nll(test),
        "num_test": int(test.labels.shape[0]),
    }
    return params, info


# ---------------------------------------------------------------------------------------------
# caching with provenance
# ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _data_record(train: digits.DigitsData, test: digits.DigitsData) -> dict[str, Any]:
    return {
        "source": "sklearn.datasets.load_digits (bundled with scikit-learn, no download)",
        "scaling": "x = pixel/8 - 1 in [-1, 1]",
        "split": f"test iff index % {digits.HOLDOUT_EVERY} == 0",
        "num_train": int(train.images.shape[0]),
        "num_test": int(test.images.shape[0]),
    }


def save_model(path: Path, params: dict, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write `params` to `path` (npz) and `provenance` (+ `content_sha256`, `num_parameters`) next to it."""
    flat = digits.flatten_params(params)
    flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    provenance = dict(provenance)
    provenance["content_sha256"] = digits.params_sha256(flat)
    provenance["num_parameters"] = int(sum(v.size for v in flat.values()))
    provenance["generated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = Path(path)
    atomic_savez(path, **flat)
    atomic_write_json(path.with_suffix(".json"), provenance)
    return provenance


def _config_record(config) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out.pop("spec")
    return out


def ensure_models(
    *,
    retrain: bool = False,
    flow_config: FlowTrainConfig | None = None,
    classifier_config: ClassifierTrainConfig | None = None,
    flow_path: Path = digits.FLOW_PATH,
    classifier_path: Path = digits.CLASSIFIER_PATH,
    command: str = "tiltbench digits --retrain",
    log=print,
) -> tuple[digits.FrozenFlow, digits.FrozenClassifier]:
    """Load the shipped flow and classifier, training (and writing) whichever is missing.

    Args:
        retrain: train both even when shipped files exist (overwrites them).
        flow_config, classifier_config: training configs (defaults: the shipped ones).
        flow_path, classifier_path: where the npz files (and their JSON provenance) live.
        command: the command line recorded in the provenance.
        log: progress messages.

    Returns:
        `(FrozenFlow, FrozenClassifier)` as loaded back from disk.
    """
    flow_config = flow_config or FlowTrainConfig()
    classifier_config = classifier_config or ClassifierTrainConfig()
    train, test = digits.load_digits_data("train"), digits.load_digits_data("test")
    flow_path, classifier_path = Path(flow_path), Path(classifier_path)
    if retrain or not flow_path.exists() or not flow_path.with_suffix(".json").exists():
        log(f"training the digits flow model ({flow_config.steps} steps) ...")
        params, info = train_flow(flow_config, train.images)
        apply = digits.velocity_apply(flow_config.spec)
        provenance = {
            "model": "flow-matching velocity v(x, t), linear interpolant X_t = (1-t) X_0 + t X_1, "
            "X_0 ~ N(0, I)",
            "command": command,
            "seed": flow_config.seed,
            "config": _config_record(flow_config),
            "architecture": dataclasses.asdict(flow_config.spec),
            "data": _data_record(train, test),
            "training": {
                "loss": "mean |v(X_t, t) - (X_1 - X_0)|^2 (sum over pixels), t ~ U[0, 1]",
                "optimizer": "adam, cosine decay to 1% of learning_rate; shipped params = EMA of iterates",
                "steps": flow_config.steps,
                "train_time_s": info["train_time_s"],
                "loss_curve": _loss_summary(info["losses"]),
                "test_loss_ema_params": held_out_flow_loss(apply, params, test.images),
                "train_loss_ema_params": held_out_flow_loss(apply, params, train.images),
            },
            "versions": _versions(),
        }
        save_model(flow_path, params, provenance)
        log(f"  wrote {flow_path} in {info['train_time_s']:.0f} s")
    if retrain or not classifier_path.exists() or not classifier_path.with_suffix(".json").exists():
        log(f"training the digits classifier ({classifier_config.steps} steps) ...")
        params, info = train_classifier(classifier_config, train, test)
        provenance = {
            "model": "classifier MLP, logits f(x) in R^10; reward log p(c | x) = log_softmax(f(x))_c",
            "command": command,
            "seed": classifier_config.seed,
            "config": _config_record(classifier_config),
            "architecture": dataclasses.asdict(classifier_config.spec),
            "data": _data_record(train, test),
            "training": {
                "loss": "softmax cross-entropy with label smoothing at x + noise_std * N(0, I)",
                "optimizer": "adamw",
                "steps": classifier_config.steps,
                "train_time_s": info["train_time_s"],
                "loss_curve": _loss_summary(info["losses"]),
                "train_accuracy": info["train_accuracy"],
                "test_accuracy": info["test_accuracy"],
                "test_nll": info["test_nll"],
                "num_test": info["num_test"],
            },
            "versions": _versions(),
        }
        save_model(classifier_path, params, provenance)
        log(f"  wrote {classifier_path}: held-out accuracy {info['test_accuracy']:.4f}")
    return digits.load_flow(flow_path), digits.load_classifier(classifier_path)
