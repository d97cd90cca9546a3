"""How far each recorded sampler covers the funnel's first coordinate.

Neal's funnel `funnel10` has `v ~ N(0, 3^2)` and `x_i | v ~ N(0, e^v)`. A sampler whose `v`-marginal
is narrower than 3 misses the wide mouth (`v` large) and the neck (`v` very negative), where the
importance weights `w = gamma / q` of its draws are largest; the estimate
`log Z_hat = log mean_i w_i` then sits below `log Z = 0` until a draw lands there. For a Gaussian
`v`-marginal of std `s` the weights of `v` alone already have infinite variance when `s < 3 / sqrt(2)`.

This script reads the committed records of a suite on `funnel10`
(`<runs>/<method>/funnel10/<budget>/seedN.json` and the `.samples.npz` beside each, which keeps the
first 1000 of the evaluation draws, `SAMPLE_FILE_ROWS` in `benchmarks/grid/cell.py`) and prints, per
method, the median over seeds of the std of `v`, the fractions of draws with `v > 4.5` and `v < -4.5`
(target: 0.0668 each), and the signed `log Z_hat - log Z` of the record (on all 4096 draws).

    .venv/bin/python scripts/funnel_coverage.py [--runs results/runs/robustness]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.grid.records import iter_records

V_STD = 3.0
EDGE = 4.5


def _tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def coverage_rows(runs: Path, target: str = "funnel10") -> list[dict]:
    """One row per method: medians over the seeds whose record is ok and has its samples file (`target`
    must be a funnel with `v ~ N(0, V_STD^2)`: the table's target values assume it)."""
    per_method: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for record in iter_records(runs):
        samples = Path(record["_path"]).with_suffix(".samples.npz")
        if record["target"] != target or record["status"] != "ok" or not samples.exists():
            continue
        v = np.load(samples)["x"][:, 0]
        per_method[record["method"]].append(
            (
                float(np.std(v)),
                float(np.mean(v > EDGE)),
                float(np.mean(v < -EDGE)),
                float(record["metrics"]["logZ/signed_error"]),
            )
        )
    rows = []
    for method, per_seed in sorted(per_method.items()):
        std_v, upper, lower, errors = zip(*per_seed, strict=True)
        rows.append(
            {
                "method": method,
                "seeds": len(per_seed),
                "std_v": statistics.median(std_v),
                "upper": statistics.median(upper),
                "lower": statistics.median(lower),
                "signed_errors": errors,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    tail = _tail(EDGE / V_STD)
    lines = [
        f"| method | seeds | std of v (target {V_STD:g}) | P(v > {EDGE:g}) (target {tail:.4f}) "
        f"| P(v < -{EDGE:g}) (target {tail:.4f}) | signed log Z error per seed |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["std_v"]):
        errs = ", ".join(f"{e:+.2f}" for e in r["signed_errors"])
        cells = [f"`{r['method']}`", str(r["seeds"]), f"{r['std_v']:.2f}"]
        cells += [f"{r['upper']:.4f}", f"{r['lower']:.4f}"]
        lines.append("| " + " | ".join([*cells, errs]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=Path("results/runs/robustness"), help="the records of one suite"
    )
    args = parser.parse_args()
    if not args.runs.is_dir():
        raise SystemExit(f"funnel_coverage: {args.runs} is not a directory of records")
    rows = coverage_rows(args.runs)
    if not rows:
        raise SystemExit(f"funnel_coverage: no ok funnel10 record with samples under {args.runs}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
