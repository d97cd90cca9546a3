"""The analytic checks of every learned method (fixed point, training on closed-form cases), from a run.

    .venv/bin/python scripts/analytic_checks.py [--seeds 0 1 2] [--out results/analytic_checks.md]

Per method:
- fixed point: the largest |mean gradient / SE| over independent batches at the closed-form optimum
  (must be < 3) and the largest at a perturbed control (must be > 6), from the fixed-point function of
  the method's test module (tests/samplers/methods/test_*.py); for the four bridge regressions also on
  the memoryless flow base of fine-tuning and the VP base, and for the other losses that run on the flow
  base on its exact tilted flow (`OTHER_BASE_FIXED_POINTS`, a second table; `FIXED_POINT_ONLY` methods,
  which have no training setting here, appear there only);
- training: `log Ẑ - log Z` and reverse ESS / N (4000 samples) on the 2-D correlated Gaussian and the
  1-D bimodal mixture with the small budgets of `tests/samplers/methods/analytic.py` (the ones
  `make test-slow` asserts on), for each seed.

Writes a Markdown table with the commit and hardware, and a JSON record beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.grid.records import atomic_write_json, environment, git_commit  # noqa: E402
from tests.samplers.methods import analytic  # noqa: E402
from tests.samplers.methods import test_adjoint_matching as t_am  # noqa: E402
from tests.samplers.methods import test_asbs as t_asbs  # noqa: E402
from tests.samplers.methods import test_bridge_regression as t_br  # noqa: E402
from tests.samplers.methods import test_cmcd as t_cmcd  # noqa: E402
from tests.samplers.methods import test_nets as t_nets  # noqa: E402
from tests.samplers.methods import test_path_kl as t_pkl  # noqa: E402
from tests.samplers.methods import test_reward_score_matching as t_rsm  # noqa: E402

METHODS = (
    "adjoint_matching",
    "adjoint_sampling",
    "asbs",
    "target_score_matching",
    "conditional_score_matching",
    "novel_score_matching",
    "pis",
    "log_variance",
    "trajectory_balance",
    "dds",
    "cmcd_kl",
    "cmcd_lv",
    "nets_pinn",
    "nets_action",
)
# Methods with a fixed point on another base but no analytic training setting: second table only.
FIXED_POINT_ONLY = ("reward_score_matching_zo",)


def _nets_pinn(case: str = "annealing"):
    with jax.enable_x64(True):
        at_optimum, at_perturbed = t_nets.pinn_fixed_point_gradients(case)
    # The residual vanishes identically at the optimum: report max |g| at both (not z-scores).
    return {
        "optimum": f"max abs gradient {np.max(np.abs(at_optimum)):.1e}",
        "perturbed": f"max abs gradient {np.max(np.abs(at_perturbed)):.1f}",
    }


def _nets_action(case: str = "annealing"):
    with jax.enable_x64(True):
        return t_nets.action_fixed_point_z_scores(case)


_BRIDGE_CASE = {
    "adjoint_sampling": ("adjoint", "paper", (0.0, 1.0), "linear"),
    "novel_score_matching": ("nsm", "paper", (0.0, 1.0), "linear"),
    "target_score_matching": ("tsm", "paper", (0.05, 0.95), "linear"),
    "conditional_score_matching": ("csm", "paper", (0.05, 0.95), "linear"),
}


def _asbs():
    """Both ASBS losses at `(u*, h*)`: the z-scores of the adjoint-matching loss, then the corrector's."""
    (am_opt, am_perturbed), (cm_opt, cm_perturbed) = (
        t_asbs.fixed_point_z_scores(loss) for loss in ("adjoint", "corrector")
    )
    return np.concatenate([am_opt, cm_opt]), np.concatenate([am_perturbed, cm_perturbed])


def _bridge_fixed_point(case):
    return lambda: t_br.fixed_point_z_scores(*case)


def _other_base_fixed_point(fn, case):
    return lambda: fn(*case)


# The same four losses on the other bases (a second table): the memoryless flow base of fine-tuning
# (methods.md §1.5; the closed-form u* = σ(∇log p*_t - ∇log p_t) of ft_gmm2d_linear's pretrained flow,
# exact samples of its tilted law) and the VP base (§1.6; the continuous-time Gaussian oracle).
_OTHER_BASE_CASES = {
    "flow": (
        "ft_gmm2d_linear u*, memoryless flow base, exact tilted samples",
        t_br.flow_fixed_point_z_scores,
        {
            "adjoint_sampling": ("adjoint", "paper", (t_br.FLOW_T0, 1.0)),
            "novel_score_matching": ("nsm", "paper", (t_br.FLOW_T0, 1.0)),
            "target_score_matching": ("tsm", "paper", (0.1, 0.95)),
            "conditional_score_matching": ("csm", "paper", (0.1, 0.95)),
        },
    ),
    "vp": (
        "continuous-time Gaussian oracle u*, VP base, exact target samples",
        t_br.vp_fixed_point_z_scores,
        {
            "adjoint_sampling": ("adjoint", "paper", (0.0, 1.0)),
            "novel_score_matching": ("nsm", "paper", (0.0, 1.0)),
            "target_score_matching": ("tsm", "paper", (0.0, 0.95)),
            "conditional_score_matching": ("csm", "paper", (0.05, 0.95)),
        },
    ),
}
OTHER_BASE_FIXED_POINTS = {
    base: {name: (kind, _other_base_fixed_point(fn, case)) for name, case in cases.items()}
    for base, (kind, fn, cases) in _OTHER_BASE_CASES.items()
}
# NETS on the tilted path p_t e^{λ_t r} of the flow base (methods.md §1.4): the closed-form correction
# b* = λ̇ S_t a + ½ λ_t Ṡ_t a of a Gaussian data law with a linear reward (tests/samplers/methods/
# test_nets.py).
OTHER_BASE_FIXED_POINTS["flow"].update(
    {
        "nets_pinn": ("tilted Gaussian flow, closed-form transport b* (float64)", lambda: _nets_pinn("flow")),
        "nets_action": ("tilted Gaussian flow, closed-form φ* (float64)", lambda: _nets_action("flow")),
    }
)
# The on-policy losses on ft_gmm2d_linear's exact tilted flow (the closed-form continuous-time u*, 256
# quadratic steps so that the chain's O(h) bias stays below the SE; trajectory balance with `log Z_φ` at
# its fixed point `log Z - KL(p_{t_0} ‖ p*_{t_0})`, methods.md §8.3), and zeroth-order Reward Score
# Matching on the exact tilted flow of Gaussian data with a linear reward.
OTHER_BASE_FIXED_POINTS["flow"].update(
    {
        "adjoint_matching": ("ft_gmm2d_linear u*, on-policy, 256 steps", t_am.flow_fixed_point_z_scores),
        "log_variance": (
            "ft_gmm2d_linear u*, on-policy, 256 steps",
            lambda: t_pkl.flow_fixed_point_z_scores("log_variance"),
        ),
        "trajectory_balance": (
            "ft_gmm2d_linear u*, log Z_φ = log Z - KL, on-policy, 256 steps",
            lambda: t_pkl.flow_fixed_point_z_scores("trajectory_balance"),
        ),
        "reward_score_matching_zo": (
            "tilted Gaussian flow u*, denoised look-ahead, 256 steps, 512 branches",
            t_rsm.flow_zeroth_order_fixed_point_z_scores,
        ),
    }
)
# CMCD on the flow base: the chain's exact optimum over per-grid-time constant controls on the tilted
# Gaussian flow (one float64 linear solve from the kernels' definitions, methods.md §5.3, test_cmcd's
# cmcd_flow_oracle); the weights carry the model's own log p_1 from its probability-flow ODE.
OTHER_BASE_FIXED_POINTS["flow"].update(
    {
        name: (
            "tilted Gaussian flow, the chain's exact optimum over per-time constant controls (float64)",
            (lambda n: lambda: t_cmcd.flow_fixed_point_z_scores(n))(name),
        )
        for name in ("cmcd_kl", "cmcd_lv")
    }
)


# method -> (what the fixed point is, function returning (z at optimum, z perturbed[, ...]))
FIXED_POINTS = {
    "adjoint_matching": ("Gaussian oracle u*, Brownian base", lambda: t_am.fixed_point_z_scores(None)),
    **{
        name: ("Gaussian oracle u*, exact target samples", _bridge_fixed_point(case))
        for name, case in _BRIDGE_CASE.items()
    },
    **{
        name: ("Gaussian oracle u*, Brownian base", (lambda n: lambda: t_pkl.fixed_point_z_scores(n))(name))
        for name in ("pis", "log_variance", "trajectory_balance")
    },
    "asbs": ("Gaussian Schrödinger bridge (u*, h*) from a Gaussian source: AM, then corrector", _asbs),
    "dds": ("discrete-chain Gaussian oracle u*, VP base", lambda: t_pkl.fixed_point_z_scores("dds")),
    "cmcd_kl": ("u = 0 with p_0 = π", lambda: t_cmcd.fixed_point_z_scores("cmcd_kl")[:2]),
    "cmcd_lv": ("u = 0 with p_0 = π", lambda: t_cmcd.fixed_point_z_scores("cmcd_lv")[:2]),
    "nets_pinn": ("closed-form Gaussian transport (float64)", _nets_pinn),
    "nets_action": ("closed-form Gaussian potential φ* (float64)", _nets_action),
}


def _fixed_point(name: str, cases: dict | None = None) -> dict:
    cases = FIXED_POINTS if cases is None else cases
    if name not in cases:
        return {"kind": "none (no closed-form optimum)", "optimum": "—", "perturbed": "—"}
    kind, fn = cases[name]
    out = fn()
    optimum, perturbed = (out["optimum"], out["perturbed"]) if isinstance(out, dict) else out[:2]
    optimum = optimum if isinstance(optimum, str) else f"{np.max(np.abs(optimum)):.2f}"
    perturbed = perturbed if isinstance(perturbed, str) else f"{np.max(np.abs(perturbed)):.1f}"
    return {"kind": kind, "optimum": optimum, "perturbed": perturbed}


def _row(name: str, seeds: tuple[int, ...]) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    row = {"method": name}
    if name not in FIXED_POINT_ONLY:
        row["fixed_point"] = _fixed_point(name)
    other = {
        base: _fixed_point(name, cases) for base, cases in OTHER_BASE_FIXED_POINTS.items() if name in cases
    }
    if other:
        row["fixed_point_other_bases"] = other
    if name in FIXED_POINT_ONLY:  # no training setting: the second table only
        row["wall_s"], row["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        print(f"{name}: {other}", flush=True)
        return row
    for target_name in analytic.TARGETS:
        row[target_name] = [
            {"seed": f.seed, "log_Z_error": f.log_Z_error, "log_Z_se": f.log_Z_se, "ess": f.ess}
            for f in analytic.train_and_evaluate(name, target_name, seeds)
        ]
    row["wall_s"], row["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    print(f"{name}: {row['fixed_point']} {row['gaussian']} {row['bimodal']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=[*METHODS, *FIXED_POINT_ONLY], choices=[*METHODS, *FIXED_POINT_ONLY]
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "analytic_checks.md"))
    parser.add_argument("--jobs", type=int, default=1, help="methods run in this many processes at once")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="run nothing: write the table from the rows of these earlier records (e.g. runs of disjoint "
        "--methods done in parallel)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return _merge(args.merge, Path(args.out))

    t_start, c_start = time.perf_counter(), time.process_time()
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")  # JAX does not survive fork
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            rows = list(pool.map(_row, args.methods, [tuple(args.seeds)] * len(args.methods)))
    else:
        rows = [_row(name, tuple(args.seeds)) for name in args.methods]

    env = environment()
    record = {
        "script": "scripts/analytic_checks.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "commit": git_commit(),
        "hardware": env,
        "seeds": args.seeds,
        "settings": {f"{m}/{t}": repr(s) for (m, t), s in analytic.SETTINGS.items() if m in args.methods},
        "rows": rows,
        "wall_time_s": time.perf_counter() - t_start,
        "cpu_time_s": time.process_time() - c_start + sum(row["cpu_s"] for row in rows if args.jobs > 1),
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), record)
    out.write_text(_markdown(record))
    print(f"wrote {out} and {out.with_suffix('.json')} in {record['wall_time_s']:.0f} s")
    return 0


def _merge(paths: list[str], out: Path) -> int:
    records = [json.loads(Path(p).read_text()) for p in paths]
    rows = {row["method"]: row for record in records for row in record["rows"]}
    commits = sorted({record["commit"] for record in records})
    seeds = sorted({tuple(record["seeds"]) for record in records})
    if len(commits) != 1 or len(seeds) != 1:
        raise SystemExit(f"records differ in commit {commits} or seeds {seeds}; rerun them together")
    record = {
        **records[0],
        "argv": ["--merge", *paths],
        "merged_from": [{"argv": r["argv"], "wall_time_s": r["wall_time_s"]} for r in records],
        "rows": [rows[m] for m in (*METHODS, *FIXED_POINT_ONLY) if m in rows],
        "settings": {k: v for r in records for k, v in r["settings"].items()},
        "wall_time_s": max(r["wall_time_s"] for r in records),  # the runs went in parallel
        "cpu_time_s": sum(r["cpu_time_s"] for r in records),
    }
    atomic_write_json(out.with_suffix(".json"), record)
    out.write_text(_markdown(record))
    print(f"wrote {out} and {out.with_suffix('.json')} from {len(records)} records")
    return 0


def _cell(figures: list[dict]) -> str:
    errors = " / ".join(f"{f['log_Z_error']:+.3f}" for f in figures)
    ess = " / ".join(f"{f['ess']:.2f}" for f in figures)
    bars = (analytic.LOG_Z_TOLERANCE, analytic.MIN_ESS)
    ok = all(abs(f["log_Z_error"]) < bars[0] and f["ess"] > bars[1] for f in figures)
    return f"{errors} | {ess} | {'yes' if ok else '**no**'}"


def _markdown(record: dict) -> str:
    hw = record["hardware"]
    lines = [
        "# Analytic checks of the loss family",
        "",
        f"Generated by `scripts/analytic_checks.py` at commit `{record['commit']}` on {hw.get('cpu', '?')} "
        f"({hw.get('backend', '?')}), seeds {record['seeds']}, in {record['wall_time_s']:.0f} s wall "
        f"({record['cpu_time_s']:.0f} s CPU). Budgets and problems: `tests/samplers/methods/analytic.py` "
        "(the ones `make test-slow` asserts on). Bars: |log Ẑ − log Z| < "
        f"{analytic.LOG_Z_TOLERANCE}, reverse ESS > {analytic.MIN_ESS} (4000 samples).",
        "",
        "Fixed point: max |mean gradient / SE| over independent batches at the optimum (< 3 required) "
        "and at a perturbed control (> 6 required). `nets_pinn` is a deterministic residual that "
        "vanishes identically at the closed-form transport, so both of its columns are the largest "
        "|gradient| (no standard error): about 1e-13 at the optimum against O(10-100) perturbed.",
        "",
        "Training: `log Ẑ − log Z` and reverse ESS per seed; *pass* = every seed meets both bars (`make "
        "test-slow` asserts both on every seed, for every method; `make test` checks each method's "
        "determinism, finiteness and cost through the method contract).",
        "",
        "| method | fixed point | at optimum | perturbed | Gaussian log Ẑ − log Z | Gaussian ESS | pass "
        "| bimodal log Ẑ − log Z | bimodal ESS | pass |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (row for row in record["rows"] if "fixed_point" in row):
        fp = row["fixed_point"]
        lines.append(
            f"| `{row['method']}` | {fp['kind']} | {fp['optimum']} | {fp['perturbed']} | "
            f"{_cell(row['gaussian'])} | {_cell(row['bimodal'])} |"
        )
    other_rows = [row for row in record["rows"] if "fixed_point_other_bases" in row]
    if other_rows:
        lines += [
            "",
            "Fixed points on the other bases (docs/methods.md §1.4, §1.5, §1.6, §8.3): the same statistics "
            "at the closed-form optimal control.",
            "",
            "| method | base | fixed point | at optimum | perturbed |",
            "|---|---|---|---|---|",
        ]
        for row in other_rows:
            for base, fp in row["fixed_point_other_bases"].items():
                lines.append(
                    f"| `{row['method']}` | {base} | {fp['kind']} | {fp['optimum']} | {fp['perturbed']} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
