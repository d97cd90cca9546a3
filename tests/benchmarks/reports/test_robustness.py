"""The robustness report: counts, medians over seeds, the tally by the threshold, and bad input."""

from __future__ import annotations

import json

import pytest

from benchmarks import cli
from benchmarks.grid.records import atomic_write_json
from benchmarks.reports.robustness import robustness_report, summarise


def _record(method, target, seed, status="ok", error=None, ess=0.5, flagged=False, findings=()):
    metrics = {} if error is None else {"logZ/error": error, "ess/reverse": ess}
    return {
        "suite": "robustness",
        "method": method,
        "target": target,
        "seed": seed,
        "status": status,
        "budget": {"name": "robust", "train_steps": 3000, "chunk_size": 50, "max_evals": 1e6},
        "num_samples": 4096,
        "commit": "abc1234def",
        "hardware": {"backend": "cpu", "device_kind": "cpu", "cpu": "x", "cpu_count": 2},
        "metrics": metrics,
        "accuracy": {"status": "failed" if flagged else "ok", "reasons": [], "warnings": []},
        "train": {"findings": list(findings)},
        "trace": [],
        "message": "" if status == "ok" else "non-finite loss at step 40",
    }


def _write(root, records):
    for r in records:
        atomic_write_json(root / r["method"] / r["target"] / f"seed{r['seed']}.json", r)
    return root


def test_the_tally_needs_every_seed_below_the_threshold_and_divergence_is_counted(tmp_path):
    judged = _write(
        tmp_path / "after",
        [
            *(_record("good", "funnel10", s, error=e) for s, e in enumerate((0.05, 0.1, 0.19))),
            *(_record("one_bad_seed", "funnel10", s, error=e) for s, e in enumerate((0.05, 0.1, 0.5))),
            _record("unstable", "funnel10", 0, error=0.01),
            _record("unstable", "funnel10", 1, status="diverged"),
            _record(
                "unstable", "funnel10", 2, error=0.02, flagged=True, findings=("buffer ESS 0.001 at step 9",)
            ),
        ],
    )
    before = _write(tmp_path / "before", [_record("good", "funnel10", s, error=3.0) for s in range(2)])
    markdown, summary = robustness_report([("before", before), ("after", judged)], threshold=0.2)
    assert summary["tally"] == {"funnel10": ["good"]}
    assert summary["diverged"] == ["unstable"]
    unstable = summary["cells"]["after"]["funnel10/unstable"]
    assert (unstable["ok"], unstable["diverged"], unstable["accuracy_failed"]) == (2, 1, 1)
    assert unstable["log_z_error"] == (0.015, 0.01, 0.02)  # median [min, max] over the ok seeds
    assert "| `good` | 3 [3, 3]; ESS 0.5; 2/2 | 0.1 [0.05, 0.19]; ESS 0.5; 3/3 |" in markdown
    assert "2/3 (1 diverged, 0 error), 1 flagged" in markdown
    assert "buffer ESS 0.001 at step 9" in markdown and "robust (3000 steps)" in markdown
    assert "| `one_bad_seed` | — |" in markdown  # absent from the earlier set


def test_summaries_keep_methods_without_a_log_z_estimate(tmp_path):
    s = summarise([_record("mala", "lj13", 0), _record("mala", "lj13", 1)])
    assert s[("lj13", "mala")]["ok"] == 2 and s[("lj13", "mala")]["log_z_errors"] == [None, None]


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        robustness_report([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no records under"):
        robustness_report([("x", tmp_path / "empty")])
    with pytest.raises(SystemExit, match="LABEL=DIR"):
        cli.main(["robustness-report", "--compare", "nolabel", "--runs", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a directory"):
        cli.main(["robustness-report", "--compare", f"a={tmp_path / 'missing'}", "--runs", str(tmp_path)])


def test_the_command_writes_the_report(tmp_path):
    runs = _write(tmp_path / "runs", [_record("good", "gmm25", s, error=0.01) for s in range(3)])
    assert cli.main(["robustness-report", "--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    assert "# Robustness of the learned methods" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["tally"] == {"gmm25": ["good"]}


def test_the_report_lists_the_tuned_settings(tmp_path):
    from benchmarks.reports.robustness import tuning_lines

    tuned = tmp_path / "tuned"
    atomic_write_json(
        tuned / "good__gmm25.json",
        {
            "chosen": {"optim.learning_rate": 0.003, "optim.ema_decay": None},
            "trials": [{}] * 6,
            "tuning_evals": 7.4e4,
        },
    )
    lr = [{"overrides": {"optim.learning_rate": v}} for v in (1e-3, 3e-3)]
    atomic_write_json(
        tuned / "good__funnel10.json",
        {"chosen": {"optim.learning_rate": 0.003}, "trials": lr, "tuning_evals": 10.0},
    )
    lines = tuning_lines(["good", "other"], ["gmm25", "funnel10"], tuned)
    assert lines[2] == (
        "| `good` | ema_decay None, learning_rate 0.003 (6 trials, 7.4e+04 evals) "
        "| learning_rate 0.003 (edge) (2 trials, 10 evals) |"
    )
    assert lines[3] == "| `other` | — | — |"
    runs = _write(tmp_path / "runs", [_record("good", "gmm25", 0, error=0.01)])
    markdown, _ = robustness_report([("r", runs)], tuned_dir=tuned)
    assert "## Tuned settings" in markdown and "learning_rate 0.003" in markdown


def test_baselines_are_the_yardstick_not_the_judged(tmp_path):
    """SMC in the judged set is listed as a baseline beside the learned methods, left out of the
    tally and of the divergence list, and the target's published values follow its table."""
    records = [
        *(_record("smc", "funnel10", s, error=0.1) for s in range(3)),
        _record("smc", "funnel10", 3, status="diverged"),
        *(_record("good", "funnel10", s, error=0.3 + s / 10) for s in range(3)),
    ]
    for r in records:
        r["budget_spent"] = {"spent_evals": 2.0e7}
    records[-1]["metrics"]["cost/train_steps"] = 750.0
    records[-1]["metrics"]["logZ/elbo_gap"] = 1.1
    markdown, summary = robustness_report([("r", _write(tmp_path / "runs", records))])
    assert summary["tally"] == {"funnel10": []} and summary["diverged"] == []
    row = "| `smc` (baseline) | 0.1 [0.1, 0.1]; ESS 0.5; 2e+07 evals; 3/4 (1 diverged, 0 error) |"
    assert row in markdown
    assert markdown.index("| `good` |") < markdown.index("| `smc` (baseline) |")
    assert "| `good` | 0.4 [0.3, 0.5]; ELBO gap 1.1; ESS 0.5; 2e+07 evals (750 steps); 3/3 |" in markdown
    assert "best learned median 0.4 (`good`) vs baselines `smc` 0.1" in markdown
    assert "Published values with the same definitions" in markdown and "Sendera" in markdown


def test_a_run_whose_training_moved_away_from_the_target_is_named(tmp_path):
    drifter = _record("drifter", "funnel10", 0, error=240.0)
    drifter["train"]["info"] = {"elbo": {"last": -344.0, "max": -3.7, "max_step": 300}}
    markdown, summary = robustness_report([("r", _write(tmp_path / "runs", [drifter]))])
    assert summary["cells"]["r"]["funnel10/drifter"]["regressed"] == 1
    assert (
        "moved away from the target; `benchmarks/grid/findings.py`): `drifter` on funnel10 (1/1)" in markdown
    )
    assert "training ELBO fell from its best -3.7 at step 300 to -344" in markdown  # training findings


def test_the_tally_says_when_a_target_has_no_learned_run_or_no_log_z(tmp_path):
    records = [
        _record("smc", "gmm25", 0, error=0.01),
        _record("good", "dw4", 0),  # particle target: no reference log Z
        *(_record("good", "funnel10", s, error=0.1) for s in range(2)),
    ]
    markdown, _ = robustness_report([("r", _write(tmp_path / "runs", records))])
    assert "- gmm25: no learned method recorded yet" in markdown
    assert "- dw4: 1 learned method(s) recorded; no |log Ẑ − log Z| (no reference log Z)" in markdown
    assert (
        "- funnel10: 1 of 1 learned method(s) recorded with |log Ẑ − log Z| ≤ 0.2 on every seed (`good`)"
        in markdown
    )


def test_a_pass_resting_on_a_loose_estimate_is_marked(tmp_path):
    records = [_record("lucky", "many_well32", s, error=0.04) for s in range(3)]
    for r, se in zip(records, (0.47, 0.05, 0.3), strict=True):
        r["metrics"]["logZ/se"] = se
    markdown, summary = robustness_report([("r", _write(tmp_path / "runs", records))])
    assert summary["tally"] == {"many_well32": ["lucky"]}
    assert "(`lucky` (2 seed(s) with a standard error above 0.2))" in markdown


def test_records_run_with_replaced_tuning_are_marked(tmp_path):
    tuned = tmp_path / "tuned"
    atomic_write_json(
        tuned / "good__gmm25.json",
        {"chosen": {"optim.learning_rate": 0.01}, "trials": [{}] * 4, "tuning_evals": 1.0},
    )
    old = {"config": {"tuned": {"optim.learning_rate": 0.003}}}
    new = {"config": {"tuned": {"optim.learning_rate": 0.01}}}
    records = [
        {**_record("good", "gmm25", 0, error=0.05), **old},
        {**_record("good", "gmm25", 1, error=0.05), **new},
        _record("other", "gmm25", 0, error=0.05),  # no tuning file, none used: current
    ]
    runs = _write(tmp_path / "runs", records)
    markdown, summary = robustness_report([("r", runs)], tuned_dir=tuned)
    assert summary["cells"]["r"]["gmm25/good"]["superseded"] == 1
    assert summary["cells"]["r"]["gmm25/other"]["superseded"] == 0
    assert "1 with superseded tuning" in markdown and "`good` on gmm25 (1/2)" in markdown


def test_a_particle_target_shows_its_w2_where_it_has_no_log_z(tmp_path):
    records = []
    for seed, (eq, energy, above) in enumerate([(1.8, 11.8, 0.02), (7.5, 99.5, 1.0), (2.0, 20.0, 0.0)]):
        rec = _record("good", "lj13", seed)
        rec["metrics"] = {"eq_w2": eq, "energy_w2": energy, "energy/clipped_fraction": above}
        records.append(rec)
    summary = summarise(records)[("lj13", "good")]
    assert summary["eq_w2"] == (2.0, 1.8, 7.5) and summary["energy_w2"] == (20.0, 11.8, 99.5)
    markdown, _ = robustness_report([("r", _write(tmp_path / "runs", records))])
    assert "eq. W2 2 [1.8, 7.5], energy W2 20 [11.8, 99.5], 2 % above the energy clip" in markdown
