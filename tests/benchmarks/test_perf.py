"""benchmarks/perf: the hand-fused references compute the methods' maths, training compiles once,
and the timing / FLOP helpers are right. Tiny problems (2-D Gaussian, 4 grid steps, batch 4)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from benchmarks import hyperparams
from benchmarks.perf.compile import train_with_compile_count
from benchmarks.perf.flops import analytic_flops, network_flops
from benchmarks.perf.references import REFERENCES, reference_step
from benchmarks.perf.timing import interleaved, ratio_summary
from samplers.networks import mlp_control

TINY = {"batch_size": 4, "hidden": (8, 8)}
EXTRA = {
    "adjoint_sampling": {"resample_size": 8, "buffer_size": 16, "refresh_every": 2},
    "nets_pinn": {"free_energy_hidden": (8,), "time_subsample": 3},
}


def _tiny(method: str):
    settings = hyperparams.resolve(method, "gaussian")
    problem = hyperparams.build_problem(targets.get("gaussian"), settings.problem | {"num_steps": 4})
    spec = samplers.get(method)
    config = dataclasses.replace(spec.make_config(**settings.method), **TINY, **EXTRA.get(method, {}))
    return problem, config, spec.build(problem, config)


def _perturbed(state, scale=0.1):
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
    return state._replace(params=jax.tree.unflatten(treedef, noisy))


# One representative in `make test`; the other code paths (~20-30 s each, mostly compilation) are slow.
_SLOW = pytest.mark.slow
_METHODS = [m if m == "adjoint_sampling" else pytest.param(m, marks=_SLOW) for m in sorted(REFERENCES)]


@pytest.mark.parametrize("method", _METHODS)
def test_reference_matches_method_step(method):
    """Same state and key: same loss, same gradient norm, same updated parameters, same cost (two steps,
    so that the Adam update of step 2 depends on the gradient's magnitude, not only its sign)."""
    problem, config, built = _tiny(method)
    ref = reference_step(method, problem, config)
    state = _perturbed(built.init(jax.random.key(0)))

    def two(step):
        step = jax.jit(step)  # compiled once, called twice
        s1, i1 = step(jax.random.key(1), state)
        s2, i2 = step(jax.random.key(2), s1)
        return s2, (i1, i2)

    (s_m, infos_m), (s_r, infos_r) = two(built.step), two(ref)
    for i_m, i_r in zip(infos_m, infos_r, strict=True):
        np.testing.assert_allclose(float(i_r.loss), float(i_m.loss), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(float(i_r.grad_norm), float(i_m.grad_norm), rtol=2e-4, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5), s_m.params, s_r.params)
    np.testing.assert_allclose(np.asarray(s_r.cost), np.asarray(s_m.cost))


def test_reference_refuses_unsupported_config():
    problem, config, _ = _tiny("adjoint_matching")
    with pytest.raises(ValueError, match="covers only"):
        reference_step("adjoint_matching", problem, dataclasses.replace(config, time_subsample=2))
    with pytest.raises(ValueError, match="valid choices"):
        reference_step("dds", problem, config)


def test_training_does_not_recompile_between_chunks():
    """A real method through samplers.train: one chunk program, no XLA compilation after chunk 1."""
    _, _, built = _tiny("adjoint_matching")
    result, counts = train_with_compile_count(jax.random.key(0), built, num_steps=7, chunk_size=3)
    assert len(counts["backend_compiles_per_chunk"]) == 3  # 3 + 3 + a masked partial chunk of 1
    assert counts["backend_compiles_per_chunk"][0] >= 1
    assert counts["num_compilations"] == 1 and counts["recompilations_after_first_chunk"] == 0


def test_ratio_summary_and_interleaving():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and len(times["a"]) == 3
    summary = ratio_summary([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert summary["median"] == 2.0 and summary["min"] == 2.0 and summary["max"] == 3.0


def test_network_flops_match_dense_layer_count():
    net = mlp_control(3, hidden=(16, 16), time_embedding_dim=8, zero_init_output=False)
    params = net.init(jax.random.key(0))
    # dense kernels: time encoder 8x16 + 16x16, hidden (3+16)x16 + 16x16, output 16x3
    expected = 2.0 * (8 * 16 + 16 * 16 + 19 * 16 + 16 * 16 + 16 * 3)
    assert analytic_flops(params) == expected
    counted = network_flops(net.apply, params, 3, batch=8)
    # XLA counts per batch: the time encoder runs once for the shared t (vmap keeps it unbatched), the
    # rest once per example, plus element-wise work (bias, activations, sin/cos)
    per_example = 2.0 * (19 * 16 + 16 * 16 + 16 * 3)
    assert per_example <= counted["flops"] < 5 * expected
    assert counted["source"] == "xla cost_analysis" and jnp.isfinite(counted["flops"])


def test_report_keeps_backends_apart(tmp_path):
    """write_report merges records by backend, and the Markdown renders every section of each."""
    from benchmarks.perf.report import PerfConfig, write_report

    def record(backend):
        section = {"rows": [], "skipped": ["x/y"], "errors": [], "wall_s": 1.0, "budget_s": 2.0}
        return {
            "backend": backend,
            "commit": "abc",
            "started": "now",
            "wall_s": 3.0,
            "hardware": {"device_kind": backend, "cpu": "c", "cpu_count": 2, "versions": {}},
            "config": dataclasses.asdict(PerfConfig()),
            "matmul_peak": {"n": 8, "flops_per_s": 1e9},
            "throughput": section,
            "overhead": {
                **section,
                "rows": [
                    {
                        "method": "pis",
                        "target": "t",
                        "steps_per_call": 1,
                        "batch_size": 2,
                        "method_s": 1.0,
                        "reference_s": 0.9,
                        "ratio": ratio_summary([0.9], [1.0]),
                    }
                ],
            },
            "accuracy": section,
        }

    json_path, md_path = tmp_path / "perf.json", tmp_path / "perf.md"
    write_report(record("cpu"), json_path, md_path)
    write_report(record("gpu"), json_path, md_path)
    text = md_path.read_text()
    assert "## cpu" in text and "## gpu" in text and "| pis | t | 1 | 2 | 1.000 | 0.900 | 0.900 |" in text
    assert text.count("Skipped (section budget") == 6
