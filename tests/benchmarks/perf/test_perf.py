"""benchmarks/perf: the hand-fused references compute the methods' maths, training compiles once,
and the timing / FLOP helpers are right. Tiny problems (2-D Gaussian, 4 grid steps, batch 4)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import targets
from benchmarks.grid import hyperparams
from benchmarks.perf.compile import train_with_compile_count
from benchmarks.perf.confirm import seed_summary
from benchmarks.perf.flops import analytic_flops, network_flops, network_train_flops, program_flops
from benchmarks.perf.references import REFERENCES, reference_step
from benchmarks.perf.timing import interleaved, ratio_summary
from samplers.networks import mlp_control

TINY = {"batch_size": 4, "network.hidden": (8, 8)}
EXTRA = {
    "adjoint_sampling": {"resample_size": 8, "buffer_size": 16, "refresh_every": 2},
    "nets_pinn": {"free_energy_hidden": (8,), "time_subsample": 3},
}


def _tiny(method: str, target: str = "gaussian", **overrides):
    settings = hyperparams.resolve(method, target)
    problem = hyperparams.build_problem(
        targets.get(target), dataclasses.replace(settings.problem, num_steps=4)
    )
    spec = samplers.get(method)
    config = spec.make_config(settings.method, **TINY, **EXTRA.get(method, {}), **overrides)
    return problem, config, spec.build(problem, config)


def _perturbed(state, scale=0.1):
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
    return state._replace(params=jax.tree.unflatten(treedef, noisy))


# One representative in `make test`; the other code paths (~20-30 s each, mostly compilation) are slow.
_SLOW = pytest.mark.slow
_METHODS = [
    pytest.param(m, "gaussian", marks=() if m == "adjoint_sampling" else _SLOW) for m in sorted(REFERENCES)
]


# the particle path: Adjoint Sampling with the EGNN on dw4 (4 particles in 2-D) and lj13 (13 in 3-D),
# with the suite's geometric schedule, 'score' weighting and per-particle energy-gradient clip
_CASES = [*_METHODS, ("adjoint_sampling", "dw4"), ("adjoint_sampling", "lj13")]


@pytest.mark.parametrize(("method", "target"), _CASES)
def test_reference_matches_method_step(method, target):
    """Same state and key: same loss, same gradient norm, same updated parameters, same cost (two steps,
    so that the Adam update of step 2 depends on the gradient's magnitude, not only its sign)."""
    problem, config, built = _tiny(method, target)
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


def test_xla_flops_show_the_checkpointed_adjoint_recomputing_the_forward_pass():
    """PIS backpropagates through the SDE: diffrax's RecursiveCheckpointAdjoint recomputes each step's
    forward pass in the backward pass, so its chunk asks XLA for a third more FLOPs than the hand-fused
    reference (a forward is ~1/3 of forward + backward); the scan integrator keeps the activations and
    asks for about the same (a few finiteness checks more). Lowered programs only: nothing compiles."""
    from samplers.train import _make_chunk

    counts = {}
    for integrator in ("diffrax", "scan"):
        problem, config, built = _tiny("pis", **{"sde.integrator": integrator})
        state, key = built.init(jax.random.key(0)), jax.random.key(1)
        steps = (jnp.asarray(0, jnp.int32), jnp.asarray(2, jnp.int32))
        counts[integrator] = program_flops(_make_chunk(built.step, 2), state, key, *steps)
    ref = reference_step("pis", problem, config)
    scan_ref = lambda s, k: jax.lax.scan(lambda c, i: ref(jax.random.fold_in(k, i), c), s, jnp.arange(2))
    reference = program_flops(scan_ref, state, key)
    assert counts["diffrax"] / reference > 1.2
    assert 1.0 <= counts["scan"] / reference < 1.1


def test_reference_refuses_unsupported_config():
    problem, config, _ = _tiny("adjoint_matching")
    with pytest.raises(ValueError, match="covers only"):
        reference_step("adjoint_matching", problem, dataclasses.replace(config, time_subsample=2))
    with pytest.raises(ValueError, match="valid choices"):
        reference_step("dds", problem, config)
    # the particle path (the EGNN) is covered for Adjoint Sampling only
    particle_problem, particle_config, _ = _tiny("adjoint_matching", "dw4")
    with pytest.raises(ValueError, match="non-particle targets"):
        reference_step("adjoint_matching", particle_problem, particle_config)
    problem, config, _ = _tiny("adjoint_sampling", "dw4")
    with pytest.raises(ValueError, match="the EGNN on particle systems"):
        reference_step(
            "adjoint_sampling",
            problem,
            dataclasses.replace(config, network=dataclasses.replace(config.network, kind="mlp")),
        )


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
    # forward + backward (a time per example: the time encoder runs per example too): about 3x forward
    trained = network_train_flops(net.apply, params, 3, batch=8)
    assert 2 * per_example <= trained["flops"] < 15 * expected and trained["source"] == "xla cost_analysis"


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
                    },
                    {
                        "method": "adjoint_sampling",
                        "target": "dw4",
                        "steps_per_call": 5,
                        "batch_size": 64,
                        "method_s": 0.5,
                        "reference_s": 0.5,
                        "ratio": ratio_summary([0.5], [0.5]),
                        "method_flop_per_s": 2e9,
                        "reference_flop_per_s": 2e9,
                        "method_peak_fraction": 0.25,
                        "xla_flops": {"method": 1.2e6, "reference": 1e6},
                    },
                ],
            },
            "cells": {**section, "rows": [diverged_cell]},
            # a record from before the target-evaluation section has none: the gpu one has it
            **({"targets": {**section, "skipped": [], "rows": [target_row]}} if backend == "gpu" else {}),
        }

    target_row = {
        "target": "gmm9",
        "dim": 2,
        "batch": 8,
        "call_s": 0.002,
        "evals_per_s": 8000.0,
        "components": 9,
        "solves_ratio": ratio_summary([4.0, 6.0], [1.0, 1.0]),
    }

    # a learned cell over three seeds: one diverged (no compile time (NaN), an infinite error; JSON
    # stores both as strings), one did not reach, one reached
    def seed(i, reached, error, **extra):
        return {
            "seed": i,
            "reached": reached,
            "evals": 10.0 * (i + 1),
            "wall_s": 1.0,
            "error": error,
            "train_steps": 20,
            "probe_crossings": i,
            **extra,
        }

    per_seed = [
        seed(0, False, float("inf"), diverged_at_step=25, diverged_reason="non-finite loss"),
        seed(1, False, 0.5),
        seed(2, True, 0.05),
    ]
    diverged_cell = {
        "method": "adjoint_sampling",
        "target": "t",
        **per_seed[0],
        "train_compile_s": float("nan"),
        "train_steps_per_s": 5.0,
        "samples_per_s": 100.0,
        "sample_compile_s": 1.0,
        "per_seed": per_seed,
        "summary": seed_summary(per_seed),
    }
    json_path, md_path = tmp_path / "perf.json", tmp_path / "perf.md"
    write_report(record("cpu"), json_path, md_path)
    write_report(record("gpu"), json_path, md_path)  # the cpu record is re-read from strict JSON
    text = md_path.read_text()
    assert "## cpu" in text and "## gpu" in text
    # a row recorded before the XLA FLOP count shows it as not measured
    assert "| pis | t | 1 | 2 | 1.000 | 0.900 | 0.900 | [0.900, 0.900] | — | — | — |" in text
    assert (
        text.count(
            "| adjoint_sampling | dw4 | 5 | 64 | 0.500 | 0.500 | 1.000 | [1.000, 1.000] | 1.200 | 2 / 2 "
            "| 25.00 |"
        )
        == 2
    )
    assert text.count("Skipped (section budget") == 6
    assert text.count("| adjoint_sampling | t | 5 | 100 | — | 1.0 |") == 2  # NaN compile time: not measured
    row = (
        "| t | adjoint_sampling | 1/3 | not reached [30, ∞] | not reached [1.00, ∞] | 0.5 [0.05, ∞] | "
        "steps 20, 20, 20; probe crossings 0, 1, 2; seed 0 diverged at step 25 (non-finite loss) |"
    )
    assert text.count(row) == 2
    assert text.count("| gmm9 | 2 | 8e+03 | 2 | 9 | 5.00 [4.00, 6.00] |") == 1


def test_target_throughput_counts_both_evaluations_and_compares_the_mixture_whitening():
    """Each point is one energy and one gradient evaluation; on a mixture the former whitening (a
    triangular solve per point and component) computes the same log-density as `log_prob`."""
    from benchmarks.perf.target_evals import mixture_log_prob_by_solves, target_throughput

    row = target_throughput("gmm9", batch=8, repeats=2)
    assert row["evals_per_s"] == pytest.approx(16 / row["call_s"])
    assert row["components"] == 9 and row["solves_ratio"]["rounds"] == 2
    assert "solves_ratio" not in target_throughput("funnel10", batch=8, repeats=1)
    target = targets.get("mog2")
    x = 3.0 * jax.random.normal(jax.random.key(1), (16, 2))
    np.testing.assert_allclose(
        jax.vmap(lambda y: mixture_log_prob_by_solves(target.mixture, y))(x),
        jax.vmap(target.log_prob)(x),
        rtol=1e-5,
    )


# a learned cost-to-accuracy cell small enough for `make test`: chunks of 5 steps, a 64-sample probe
TINY_CELL = {
    "chunk_size": 5,
    "num_trace": 64,
    "batch_size": 32,
    "network.hidden": (8,),
    "resample_size": 32,
    "buffer_size": 64,
}


# the same cell as the confirmed-check test below, on its other branch (~6 s CPU): `make test-slow`
@pytest.mark.slow
def test_learned_cell_gives_accuracy_and_throughput_from_one_run():
    """One training run: the cost-to-accuracy row (crossing or last point, evals counted) and the
    throughput row (steps/s, samples/s, compile times, no recompilation between chunks)."""
    from benchmarks.perf.cost_to_accuracy import learned_cell

    row = learned_cell(
        "adjoint_sampling",
        "gaussian_correlated",
        tol=1e-6,  # unreachable: the budget decides
        max_train_s=0.0,
        min_chunks=3,
        **TINY_CELL,
    )
    assert not row["reached"] and row["train_steps"] == 15 and row["train_steps_timed"] == 15
    # not reached: the last point is measured on the confirming samples all the same
    assert row["error_source"] == "4096 confirming samples" and row["num_confirm"] == 4096
    assert [c["step"] for c in row["checks"]] == [5, 10, 15] and row["confirm_compile_s"] > 0
    assert len(row["backend_compiles_per_chunk"]) == 3 and row["recompilations_after_first_chunk"] == 0
    assert row["evals"] > 0 and np.isfinite(row["error"]) and row["train_steps_per_s"] > 0
    assert row["samples_per_s"] > 0 and row["train_compile_s"] > 0 and row["sample_compile_s"] > 0
    assert row["network_flop_per_s"] > 0


def test_before_after_report_and_bad_name():
    """The before/after table renders each optimisation's ratios and saved evaluations; an unknown
    optimisation names the valid ones."""
    from benchmarks.perf.before_after import OPTIMISATIONS, before_after, render_markdown

    with pytest.raises(ValueError, match="cmcd_reuse_drift_gradient"):
        before_after("nope", "funnel10")
    ratio = ratio_summary([2.0, 2.2], [1.0, 1.0])
    row = {
        "optimisation": "cmcd_reuse_drift_gradient",
        "method": "cmcd_lv",
        "target": "many_well32",
        "train_ratio": ratio,
        "sample_ratio": ratio,
        "cost_per_sample": {"before": {"grad_evals": 202.0}, "after": {"grad_evals": 101.0}},
        "train_temp_gb": {"before": 2.0, "after": 0.5},
    }
    record = {"commit": "abc", "hardware": {"cpu": "c", "backend": "cpu"}, "wall_s": 1.0, "repeats": 2}
    text = render_markdown({**record, "rows": [row]})
    assert "| cmcd_reuse_drift_gradient | cmcd_lv | many_well32 | 2.100 [2.000, 2.200] |" in text
    assert "| 202 → 101 | 2.000 → 0.500 |" in text and all(f"`{k}`" in text for k in OPTIMISATIONS)


def test_particle_metrics_compares_both_engines_on_the_same_matrix(tmp_path):
    """`tiltbench perf --particle-metrics` on a tiny case: both engines give the same matrix, the
    record and its table carry the ratio and the projection to the metric's sample count, and a
    target that is not a particle system is refused by name."""
    from benchmarks.perf.particle_metrics import Case, compare_engines, run_particle_metrics

    with pytest.raises(ValueError, match="gmm9"):
        compare_engines(Case("gmm9", "peer", 4))
    md = run_particle_metrics(tmp_path, repeats=1, cases=(Case("dw4", "peer", 6),), log=lambda _: None)
    record = json.loads((tmp_path / "particle_metrics.json").read_text())
    (row,) = record["rows"]
    assert row["max_rel_diff"] < 1e-4 and row["pairs"] == 36 and row["metric_num_samples"] == 1000
    assert row["projected_s"]["scipy"] == pytest.approx(row["median_s"]["scipy"] * (1000 / 6) ** 2)
    assert row["projected_s"]["jax"] == pytest.approx(row["median_s"]["jax"] * (1024 / 8) ** 2)  # padded rows
    assert row["cpu_s"]["jax"] > 0 and row["cpu_s"]["scipy"] > 0
    assert "| dw4 | peer | 6 |" in md.read_text()


def test_learned_cell_reports_the_confirmed_check():
    """A tolerance every estimate meets: confirmed at the first check (its second look at the next),
    and the reported cost counts the training and the confirming estimate, not the probe."""
    from benchmarks.perf.cost_to_accuracy import learned_cell

    row = learned_cell(
        "adjoint_sampling",
        "gaussian_correlated",
        tol=1e6,
        min_chunks=1,
        **TINY_CELL,
    )
    assert row["reached"] and row["train_steps"] == 5 and row["train_steps_timed"] == 10
    assert [c["confirm_error"] is not None for c in row["checks"]] == [True, True]
    assert row["error"] == row["checks"][0]["confirm_error"] and row["probe_crossings"] == 2
    with pytest.raises(ValueError, match="at least 4096 fresh samples"):
        learned_cell("adjoint_sampling", "gaussian_correlated", num_confirm=512)


@pytest.mark.slow  # six SMC compilations
def test_particles_cost_to_accuracy_confirms_over_seeds():
    """SMC: every seed reaches a tolerance every run meets at the first count, with two confirming
    runs; an unreachable one gives the last count's probe error and a 'not reached' median."""
    from benchmarks.perf.cost_to_accuracy import particles_cost_to_accuracy

    row = particles_cost_to_accuracy("smc", "gaussian", tol=1e6, particles=(16, 64))
    assert row["summary"]["seeds_reached"] == 3 and [r["particles"] for r in row["per_seed"]] == [16] * 3
    moves = row["per_seed"][0]["effort"]["num_mcmc_steps"]  # the configured value: the cheapest config
    assert all(
        len(r["confirm_errors"]) == 2 and r["error"] == max(r["confirm_errors"]) for r in row["per_seed"]
    )
    row = particles_cost_to_accuracy("smc", "gaussian", tol=-1.0, particles=(16, 64))
    assert row["summary"]["evals"]["median"] == float("inf") and not row["summary"]["reached"]
    assert [r["particles"] for r in row["per_seed"]] == [64] * 3  # the costliest: 64 × 4 moves
    assert [r["effort"]["num_mcmc_steps"] for r in row["per_seed"]] == [4 * moves] * 3
    assert all(r["confirm_errors"] == [None, None] for r in row["per_seed"])


def test_particle_baselines_scan_configurations_in_order_of_nominal_cost():
    from benchmarks.perf.cost_to_accuracy import EFFORT_AXES, _configurations

    assert _configurations((128, 512), (1, 4)) == [(128, 1), (128, 4), (512, 1), (512, 4)]
    assert _configurations((16, 64, 256), (1, 4)) == [(16, 1), (16, 4), (64, 1), (64, 4), (256, 1), (256, 4)]
    assert set(EFFORT_AXES) == {"smc", "ais"}
