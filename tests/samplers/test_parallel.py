"""Data parallelism (`samplers.parallel`): the same training step, samples and O(B²) metrics on 1 and
on 4 (virtual CPU) devices, and the mesh helpers' errors.

The 4-device check runs in a subprocess because `XLA_FLAGS=--xla_force_host_platform_device_count`
must be set before jax is imported. Inside it, the 1-device program is the same code under
`use_mesh(None)` (no sharding constraint at all, exactly what a 1-device process runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from samplers import parallel

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import dataclasses
import json
import jax, jax.numpy as jnp, numpy as np
import samplers, targets
from benchmarks.grid import hyperparams
from benchmarks.metrics.mmd import mmd2_median
from benchmarks.metrics.particles import eq_w2_squared
from samplers import parallel
from samplers.train import train

assert jax.device_count() == 4, jax.devices()
assert parallel.num_shards() == 4  # selected automatically

def run():
    spec, target = samplers.get("log_variance"), targets.get("gaussian")
    settings = hyperparams.resolve("log_variance", "gaussian")
    problem = hyperparams.build_problem(target, dataclasses.replace(settings.problem, num_steps=5))
    config = spec.make_config(settings.method, **{"batch_size": 32, "network.hidden": (8,),
                              "network.time_embedding_dim": 4, "grad_log_target_feature": False,
                              "sde.integrator": "scan"})
    method = spec.build(problem, config)
    result = train(jax.random.key(0), method, num_steps=2, chunk_size=2)
    samples = jax.jit(method.sample, static_argnums=2)(jax.random.key(1), result.state, 32)
    rng = np.random.default_rng(0)
    ref = jnp.asarray(rng.normal(size=(32, 2)), jnp.float32)
    mmd = mmd2_median(samples.x, ref)
    dw4 = targets.get("dw4").particles
    a, b = (jnp.asarray(rng.normal(size=(8, 8)), jnp.float32) for _ in range(2))
    eq = eq_w2_squared(a, b, dw4)
    leaves = [np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(result.state.params)]
    return {
        "params": np.concatenate(leaves).tolist(),
        "loss": np.asarray(result.history["loss"], np.float64).tolist(),
        "x": np.asarray(samples.x, np.float64).ravel().tolist(),
        "log_w": np.asarray(samples.log_w, np.float64).tolist(),
        "mmd2": [mmd.mmd2, mmd.se], "eq_w2_squared": eq,
        "x_shards": sorted({tuple(s.data.shape) for s in samples.x.addressable_shards}),
        "x_devices": len(samples.x.sharding.device_set),
        "params_devices": len(jax.tree.leaves(result.state.params)[0].sharding.device_set),
        "num_compilations": result.num_compilations,
    }

with parallel.use_mesh(None):
    one = run()
four = run()
print("RESULT " + json.dumps({"one": one, "four": four}))
"""


# a subprocess with four virtual devices compiling one method twice (~12 s CPU): `make test-slow`; the mesh
# helpers keep their fast tests
@pytest.mark.slow
def test_one_and_four_devices_agree():
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # the test session's compile flags (tests/conftest.py) plus four virtual devices
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip(),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TILTBENCH_DATA_PARALLEL", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    one, four = out["one"], out["four"]
    # the 1-device program is unsharded; the 4-device one really splits the batch and replicates params
    assert one["x_devices"] == 1 and one["x_shards"] == [[32, 2]]
    assert four["x_devices"] == 4 and four["x_shards"] == [[8, 2]]
    assert four["params_devices"] == 4
    assert one["num_compilations"] == four["num_compilations"] == 1
    # same seed, same global batch: equal up to float32 summation order
    for name in ("params", "loss", "x", "log_w", "mmd2"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(four["eq_w2_squared"], one["eq_w2_squared"], rtol=1e-4)
    assert np.isfinite(one["eq_w2_squared"]) and one["eq_w2_squared"] > 0


def test_mesh_helpers_on_one_device():
    x = jnp.ones((6, 2))
    with parallel.use_mesh(None) as mesh:
        assert mesh is None and parallel.active_mesh() is None and parallel.num_shards() == 1
        assert parallel.shard_batch(x) is x and parallel.replicate(x) is x
    with parallel.use_mesh(1) as mesh:
        assert mesh is None
    with pytest.raises(ValueError, match="Mesh, an int, None or 'auto'"):
        with parallel.use_mesh("everything"):
            pass
    with pytest.raises(ValueError, match="local device"):
        parallel.make_mesh(10**6)
    mesh = parallel.make_mesh(1)
    assert mesh.axis_names == (parallel.BATCH_AXIS,)
