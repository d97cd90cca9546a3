"""8×8 digits: data, the frozen "pretrained" flow model and the reward classifier of the digits task.

A CPU-sized miniature of reward fine-tuning of an image generator (the Stable-Diffusion experiments
of Adjoint Matching, `docs/methods.md` §2): a small flow-matching model of scikit-learn's
bundled 8×8 digits (`sklearn.datasets.load_digits`: 1797 images, 64 pixels with integer values
0…16, no download) is the base, and the log-probability of one digit class under a small
classifier is the reward. Both models are trained by this suite
(`benchmarks/experiments/digits_models.py`) and
shipped as frozen parameter sets with their provenance under `targets/data/`; this module only
loads them (it knows nothing of samplers).

**Data.** `x = pixel/8 - 1 ∈ [-1, 1]^64`. The split is deterministic (no PRNG): image `i` is
held out when `i mod 5 = 0` (360 test images), the other 1437 are the training set.

**Flow model.** Linear interpolant `X_t = (1 - t) X_0 + t X_1`, `X_0 ~ N(0, I)`, `X_1 ~ data`;
an MLP `v_θ(x, t)` (`VelocityMLP`) is fitted by flow matching,

    L(θ) = E_{t ~ U[0,1], X_0, X_1} |v_θ(X_t, t) - (X_1 - X_0)|²,

whose minimiser is `v(x, t) = E[X_1 - X_0 | X_t = x]`. `t = 0` is the noise end, `t = 1` the data
end (the convention of `samplers.base_processes.MemorylessFlowBase`).

**Reward.** A classifier MLP (`ClassifierMLP`) with logits `f(x) ∈ R^10`; the reward of class `c`
is `r(x) = log p(c | x) = f_c(x) - LSE_j f_j(x) ≤ 0`. Tilting the base by `λ r` gives
`p*(x) ∝ p_base(x) p(c | x)^λ`. For a calibrated classifier and a base equal to the data law,
`λ = 1` gives the class-conditional law `p(x | c)` (Bayes). The shipped classifier is trained with
label smoothing `α = 0.1` (`benchmarks/experiments/digits_models.py`), so `p(c | x)` saturates near
`1 - α + α/10 = 0.91` on clear images of `c` and near `α/10 = 0.01` on clear images of other
digits (reward ≈ -4.6 instead of -20): at `λ = 1` about `0.1·0.91/(0.1·0.91 + 0.9·0.01) ≈ 91%` of
the tilted mass is on class `c` (ten balanced classes), and larger `λ` concentrates it further, on
the images the classifier finds most typical of `c`.

**Initial law.** `MemorylessFlowBase` starts at `t_0 > 0` with `p_{t_0}`, the law of
`(1 - t_0) Z + t_0 X_1`. For the empirical data law this is the Gaussian mixture
`(1/n) Σ_j N(t_0 x_j, (1 - t_0)² I)` over the training images (`initial_law`), exact for the
training set (the flow model only approximates that set, an error of the model, not of the law).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CLASSIFIER_PATH",
    "DATA_DIR",
    "FLOW_PATH",
    "NUM_CLASSES",
    "NUM_PIXELS",
    "PROVENANCE_KEYS",
    "SPLITS",
    "ClassifierMLP",
    "ClassifierSpec",
    "DigitsData",
    "FlowSpec",
    "FrozenClassifier",
    "FrozenFlow",
    "VelocityMLP",
    "classifier_apply",
    "class_log_prob_reward",
    "flatten_params",
    "initial_law",
    "load_classifier",
    "load_digits_data",
    "load_flow",
    "params_sha256",
    "time_features",
    "unflatten_params",
    "velocity_apply",
]

NUM_PIXELS = 64
NUM_CLASSES = 10
DATA_DIR = Path(__file__).resolve().parent / "data"
FLOW_PATH = DATA_DIR / "digits_flow.npz"
"""Shipped flow parameters; provenance in `digits_flow.json` next to it."""
CLASSIFIER_PATH = DATA_DIR / "digits_classifier.npz"
"""Shipped classifier parameters; provenance in `digits_classifier.json` next to it."""
SPLITS = ("train", "test", "all")
HOLDOUT_EVERY = 5  # image i is a test image iff i % HOLDOUT_EVERY == 0
PROVENANCE_KEYS = (
    "model",
    "command",
    "seed",
    "config",
    "architecture",
    "data",
    "num_parameters",
    "training",
    "versions",
    "content_sha256",
    "generated_utc",
)
"""Keys every shipped model's provenance JSON must have (tested)."""


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


class DigitsData(NamedTuple):
    """Scaled images `x ∈ [-1, 1]^64` (`(n, 64)` float32) and labels (`(n,)` int32)."""

    images: np.ndarray
    labels: np.ndarray


@functools.cache
def _all_digits() -> DigitsData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.data, np.float32) / 8.0 - 1.0
    return DigitsData(images, np.asarray(bunch.target, np.int32))


def load_digits_data(split: str = "train") -> DigitsData:
    """The 8×8 digits scaled to `[-1, 1]` (`pixel/8 - 1`), by split.

    Args:
        split: `"train"` (images `i` with `i mod 5 ≠ 0`, 1437), `"test"` (`i mod 5 = 0`, 360) or `"all"`.

    Returns:
        `DigitsData(images (n, 64) float32, labels (n,) int32)` (fresh copies).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(SPLITS)}")
    data = _all_digits()
    index = np.arange(data.images.shape[0])
    mask = {"train": index % HOLDOUT_EVERY != 0, "test": index % HOLDOUT_EVERY == 0, "all": index >= 0}[split]
    return DigitsData(data.images[mask].copy(), data.labels[mask].copy())


def initial_law(
    images: np.ndarray, t0: float
) -> tuple[Callable[[jax.Array, int], jax.Array], Callable[[jax.Array], jax.Array]]:
    """`p_{t_0}` of the interpolant for the empirical law of `images`: sampler and log density.

    `X_{t_0} = (1 - t_0) Z + t_0 X_1` with `X_1` uniform over the `n` images, i.e. the mixture
    `(1/n) Σ_j N(t_0 x_j, (1 - t_0)² I)`; `log p = LSE_j log N(x; t_0 x_j, (1 - t_0)² I) - log n`.

    Returns:
        `(sample_fn(key, num_samples) -> (num_samples, 64), log_prob_fn(x) -> ())`.
    """
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0 must lie in (0, 1), got {t0!r}")
    centres = jnp.asarray(images, jnp.float32) * t0
    n, dim = centres.shape
    scale = 1.0 - t0

    def sample_fn(key: jax.Array, num_samples: int) -> jax.Array:
        key_pick, key_noise = jax.random.split(key)
        pick = jax.random.randint(key_pick, (num_samples,), 0, n)
        return centres[pick] + scale * jax.random.normal(key_noise, (num_samples, dim), jnp.float32)

    def log_prob_fn(x: jax.Array) -> jax.Array:
        sq = jnp.sum((x[None, :] - centres) ** 2, axis=-1)
        log_n = -0.5 * sq / scale**2 - 0.5 * dim * jnp.log(2.0 * jnp.pi * scale**2)
        return jax.nn.logsumexp(log_n) - jnp.log(n)

    return sample_fn, log_prob_fn


# ---------------------------------------------------------------------------------------------
# architectures (pure functions of a parameter PyTree)
# ---------------------------------------------------------------------------------------------


def time_features(t: jax.Array, num: int) -> jax.Array:
    """`[t, sin(2π f_i t), cos(2π f_i t)]_{i<num}`, `f_i = 2^{i/2}/2` (periods 2, 1.41, 1, …), `(2num+1,)`."""
    freqs = 0.5 * 2.0 ** (jnp.arange(num, dtype=jnp.float32) / 2.0)
    angle = 2.0 * jnp.pi * freqs * t
    return jnp.concatenate([jnp.reshape(t, (1,)), jnp.sin(angle), jnp.cos(angle)])


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """Architecture of the velocity MLP: widths `hidden`, `num_time_features` sinusoid pairs, SiLU."""

    hidden: tuple[int, ...] = (256, 256, 256)
    num_time_features: int = 8


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Architecture of the classifier MLP: widths `hidden` (empty: logistic regression), SiLU."""

    hidden: tuple[int, ...] = (128,)


class VelocityMLP(nn.Module):
    """`v_θ(x, t)`: an MLP on `[x, time_features(t)]` with SiLU, output `(64,)`."""

    hidden: tuple[int, ...]
    num_time_features: int

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = jnp.concatenate([x, time_features(t, self.num_time_features)])
        for width in self.hidden:
            h = nn.silu(nn.Dense(width)(h))
        return nn.Dense(x.shape[-1])(h)


class ClassifierMLP(nn.Module):
    """Logits `f(x) ∈ R^10`: an MLP with SiLU (a linear map when `hidden` is empty)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for width in self.hidden:
            h = nn.silu(nn.Dense(width)(h))
        return nn.Dense(NUM_CLASSES)(h)


def velocity_apply(spec: FlowSpec) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """`(params, x (64,), t ()) -> v (64,)` of the architecture `spec`."""
    module = VelocityMLP(tuple(spec.hidden), spec.num_time_features)
    return lambda params, x, t: module.apply({"params": params}, x, jnp.asarray(t, jnp.float32))


def classifier_apply(spec: ClassifierSpec) -> Callable[[Any, jax.Array], jax.Array]:
    """`(params, x (64,)) -> logits (10,)` of the architecture `spec`."""
    module = ClassifierMLP(tuple(spec.hidden))
    return lambda params, x: module.apply({"params": params}, x)


def flatten_params(params: Mapping) -> dict[str, np.ndarray]:
    """Nested parameter dict -> `{"Dense_0/kernel": array, ...}` (the npz layout)."""
    out: dict[str, np.ndarray] = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                walk(value, name)
            else:
                out[name] = np.asarray(value)

    walk(params, "")
    return out


def params_sha256(flat: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the sorted names, shapes and float32 bytes of a flat parameter dict (the
    `content_sha256` of a provenance record; independent of the npz container's timestamps)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(flat):
        value = np.ascontiguousarray(np.asarray(flat[name], np.float32))
        digest.update(f"{name}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
    """Inverse of `flatten_params` (arrays become float32 jnp arrays)."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(value, jnp.float32)
    return tree


# ---------------------------------------------------------------------------------------------
# frozen models
# ---------------------------------------------------------------------------------------------


def _load(path: Path) -> tuple[dict, dict]:
    path = Path(path)
    provenance_path = path.with_suffix(".json")
    if not path.exists() or not provenance_path.exists():
        raise FileNotFoundError(
            f"{path} (or its provenance {provenance_path.name}) is missing; train it with "
            "`tiltbench digits --retrain` (benchmarks/experiments/digits_models.py)"
        )
    with np.load(path) as data:
        flat = {name: data[name] for name in data.files}
    provenance = json.loads(provenance_path.read_text())
    if provenance.get("content_sha256") != params_sha256(flat):
        raise ValueError(f"{path}: parameters do not match the content_sha256 of {provenance_path.name}")
    return unflatten_params(flat), provenance


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenFlow:
    """The frozen flow model: `velocity(x, t)` of ONE point with the shipped parameters.

    Attributes:
        params: the parameter PyTree.
        spec: its architecture.
        provenance: the provenance record (command, seed, steps, loss summary, versions, ...).
    """

    params: Any
    spec: FlowSpec
    provenance: dict

    @functools.cached_property
    def _apply(self):
        return velocity_apply(self.spec)

    def velocity(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`v_θ(x, t) ≈ E[X_1 - X_0 | X_t = x]` of ONE point `(64,)`."""
        return self._apply(self.params, x, t)


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenClassifier:
    """The frozen reward classifier: `logits(x)` and `log_probs(x)` of ONE point.

    Attributes:
        params: the parameter PyTree.
        spec: its architecture.
        provenance: the provenance record (incl. `training.test_accuracy`).
    """

    params: Any
    spec: ClassifierSpec
    provenance: dict

    @functools.cached_property
    def _apply(self):
        return classifier_apply(self.spec)

    def logits(self, x: jax.Array) -> jax.Array:
        """`f(x) ∈ R^10` of ONE point."""
        return self._apply(self.params, x)

    def log_probs(self, x: jax.Array) -> jax.Array:
        """`log p(j | x) = f_j(x) - LSE f(x)`, `(10,)`."""
        return jax.nn.log_softmax(self.logits(x))


def load_flow(path: str | Path = FLOW_PATH) -> FrozenFlow:
    """Load the shipped flow model (raises `FileNotFoundError` naming the command that trains it)."""
    params, provenance = _load(Path(path))
    return FrozenFlow(params, FlowSpec(**_spec_fields(provenance["architecture"])), provenance)


def load_classifier(path: str | Path = CLASSIFIER_PATH) -> FrozenClassifier:
    """Load the shipped classifier (raises `FileNotFoundError` naming the command that trains it)."""
    params, provenance = _load(Path(path))
    return FrozenClassifier(params, ClassifierSpec(**_spec_fields(provenance["architecture"])), provenance)


def _spec_fields(architecture: Mapping) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in architecture.items()}


def class_log_prob_reward(classifier: FrozenClassifier, digit: int) -> Callable[[jax.Array], jax.Array]:
    """The reward `r(x) = log p(c = digit | x)` of ONE point (a log-probability, `≤ 0`)."""
    if isinstance(digit, bool) or not isinstance(digit, int | np.integer) or not 0 <= digit < NUM_CLASSES:
        raise ValueError(f"digit must be an integer class in 0..{NUM_CLASSES - 1}, got {digit!r}")
    digit = int(digit)
    return lambda x: classifier.log_probs(x)[digit]
