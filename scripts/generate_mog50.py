"""Generate the frozen MoG parameters shipped as `targets/data/mog50.npz` (+ `mog50.json` provenance).

Recipe (Beyond ELBOs, Blessing et al. 2024, `targets/gaussian_mixture.py`; `targets.md` §1.4), for
each dimension d in {2, 50}, with K = 10 components and uniform weights:

    means        μ_k ~ U[-10, 10]^d
    covariances  Σ_k ~ Wishart(df = d + 2, scale = I_d)      (covariances, not precisions)

Randomness: legacy `numpy.random.RandomState(seed + d)` (its stream is frozen by NumPy's
compatibility policy) drives both the means and `scipy.stats.wishart.rvs`. This is NOT the
Beyond-ELBOs instance, which draws from the JAX PRNG at run time (and changed with
`jax_threefry_partitionable`); the suite ships its own instance so that nothing depends on a PRNG
at run time. Run once; the output is committed:

    .venv/bin/python scripts/generate_mog50.py            # writes targets/data/mog50.{npz,json}
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.stats

NUM_COMPONENTS = 10
DIMS = (2, 50)
MEAN_BOX = 10.0  # means ~ U[-MEAN_BOX, MEAN_BOX]^d (Beyond ELBOs)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "targets" / "data" / "mog50.npz"


def generate(dim: int, seed: int, num_components: int = NUM_COMPONENTS) -> dict[str, np.ndarray]:
    """Float64 parameters of one instance: `log_weights (K,)`, `means (K, d)`, `covariances (K, d, d)`."""
    random_state = np.random.RandomState(seed + dim)
    means = random_state.uniform(-MEAN_BOX, MEAN_BOX, size=(num_components, dim))
    covariances = np.stack(
        [
            np.asarray(
                scipy.stats.wishart.rvs(df=dim + 2, scale=np.eye(dim), random_state=random_state),
                dtype=np.float64,
            ).reshape(dim, dim)
            for _ in range(num_components)
        ]
    )
    covariances = 0.5 * (covariances + np.swapaxes(covariances, -1, -2))  # exact symmetry
    log_weights = np.full(num_components, -np.log(num_components))
    return {"log_weights": log_weights, "means": means, "covariances": covariances}


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Hash of the array contents (names, dtypes, shapes, bytes); `.npz` bytes embed timestamps."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def build(seed: int) -> dict[str, np.ndarray]:
    """All shipped arrays, keyed `mog{d}_{field}`."""
    return {f"mog{dim}_{field}": value for dim in DIMS for field, value in generate(dim, seed).items()}


def provenance(arrays: dict[str, np.ndarray], seed: int, command: str) -> dict:
    instances = {}
    for dim in DIMS:
        eigenvalues = np.linalg.eigvalsh(arrays[f"mog{dim}_covariances"])
        instances[f"mog{dim}"] = {
            "dim": dim,
            "num_components": NUM_COMPONENTS,
            "random_state_seed": seed + dim,
            "covariance_eigenvalue_min": float(eigenvalues.min()),
            "covariance_eigenvalue_max": float(eigenvalues.max()),
        }
    return {
        "description": "Frozen MoG instances (Beyond-ELBOs recipe): means ~ U[-10, 10]^d, covariances ~ "
        "Wishart(d + 2, I), uniform weights, K = 10. Our own instance; it differs from "
        "Beyond-ELBOs' JAX-PRNG instance.",
        "command": command,
        "seed": seed,
        "per_instance_seed": "numpy.random.RandomState(seed + d)",
        "instances": instances,
        "content_sha256": content_sha256(arrays),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "generated_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed", type=int, default=0, help="base seed; instance d uses RandomState(seed + d)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output .npz (the .json goes next to it)"
    )
    args = parser.parse_args(argv)
    arrays = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    command = " ".join(["python scripts/generate_mog50.py", *(sys.argv[1:] if argv is None else argv)])
    record = provenance(arrays, args.seed, command)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"wrote {args.out} and {args.out.with_suffix('.json')} "
        f"(content sha256 {record['content_sha256'][:16]})"
    )


if __name__ == "__main__":
    main()
