"""The cross-target summary: ratios to the best method per target, failures counted as the worst
ratio, a bootstrap interval over seeds, and the performance profile."""

from __future__ import annotations

import math

import pytest

from benchmarks.reports.summary import cross_target_summary, profile_figure, summary_table


def _rec(method, target, seed, error, status="ok"):
    return {
        "method": method,
        "target": target,
        "seed": seed,
        "status": status,
        "budget": {"name": "b"},
        "metrics": {} if error is None else {"logZ/error": error},
    }


def _records():
    recs = []
    for seed in range(3):
        recs += [_rec("a", "t1", seed, 0.1), _rec("b", "t1", seed, 0.4), _rec("c", "t1", seed, 0.2)]
        recs += [_rec("a", "t2", seed, 2.0), _rec("b", "t2", seed, 1.0)]
        recs.append(_rec("c", "t2", seed, None, status="diverged"))
        recs.append(_rec("d", "t2", seed, None, status="not_applicable"))
    return recs


def test_ratios_failures_and_scores():
    s = cross_target_summary(_records())
    assert s.ratios["a"] == {"t1": 1.0, "t2": 2.0} and s.ratios["b"] == {"t1": 4.0, "t2": 1.0}
    # c diverged on t2: ten times the worst finite ratio (4); d never ran and is not an entrant
    assert s.fail_ratio == 40.0 and s.ratios["c"] == {"t1": 2.0, "t2": 40.0} and "d" not in s.scores
    assert s.scores["a"][0] == pytest.approx(math.sqrt(2.0)) and s.scores["b"][0] == pytest.approx(2.0)
    assert (s.wins["a"], s.wins["b"], s.failures["c"]) == (1, 1, 1)
    # identical seeds: the bootstrap cannot move the score
    assert s.scores["a"][1] == pytest.approx(s.scores["a"][0]) == pytest.approx(s.scores["a"][2])
    lines = summary_table(s)
    assert lines[-3].startswith("| `a` | 1.41 [1.41, 1.41] | 2 | 1 | 0 |")
    assert lines[-1].startswith("| `c` |") and lines[-1].endswith("| 2 | 0 | 1 |")


def test_bootstrap_interval_covers_the_seed_spread_and_one_target_gives_no_summary(tmp_path):
    recs = _records() + [_rec("a", "t1", 3, 1.0), _rec("a", "t1", 4, 1.0)]
    s = cross_target_summary(recs, num_bootstrap=100)
    lo, hi = s.scores["a"][1], s.scores["a"][2]
    assert lo < hi and lo <= s.scores["a"][0] <= hi
    assert cross_target_summary([r for r in recs if r["target"] == "t1"]) is None
    path = profile_figure(s, tmp_path / "profile.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _particle(method, seed, w2, **metrics):
    return {
        "method": method,
        "target": "p",
        "seed": seed,
        "status": "ok",
        "budget": {"name": "b"},
        "metrics": {"eq_w2": w2, **metrics},
    }


def test_a_target_without_log_z_is_ranked_on_its_eq_w2_and_a_weight_collapse_does_not_fail_it():
    recs = [r for r in _records() if r["target"] == "t1"]
    for seed in range(3):
        # "a" collapsed its weights (forward ESS 0): its samples still count on the eq. W2
        recs.append(_particle("a", seed, 0.5, **{"ess/forward": 0.0, "ess/forward_num_samples": 2000.0}))
        # "mcmc" has no log Z: ranked on p only
        recs.append(_particle("mcmc", seed, 0.25))
        # "b" covers one mode in four: a failure on any metric
        recs.append(_particle("b", seed, 0.3, **{"modes/hit_fraction": 0.25}))
    s = cross_target_summary(recs)
    assert list(s.target_metrics.items()) == [("t1", "logZ/error"), ("p", "eq_w2")]
    assert s.metric == "logZ/error; eq_w2"
    assert s.ratios["a"] == {"t1": 1.0, "p": 2.0} and s.ratios["mcmc"] == {"p": 1.0}
    assert s.ratios["b"]["p"] == s.fail_ratio and s.failures["b"] == 1
    # on a log-Z target the same weight collapse is a failure
    collapsed = [
        dict(r, metrics={**r["metrics"], "ess/forward": 0.0, "ess/forward_num_samples": 2000.0})
        if r["method"] == "c"
        else r
        for r in recs
    ]
    assert cross_target_summary(collapsed).ratios["c"]["t1"] == s.fail_ratio
    text = "\n".join(summary_table(s))
    assert "log-Z error on t1; eq. W2 on p" in text
    # a single metric can still be asked for: then p has none and one target is left
    assert cross_target_summary(recs, "logZ/error") is None


def test_budgets_that_partition_the_targets_name_no_entrant_and_budgets_of_one_target_do():
    recs = _records()
    for r in recs:  # t2 runs at its own, longer budget: still one entrant per method
        r["budget"] = {"name": "long" if r["target"] == "t2" else "b"}
    assert set(cross_target_summary(recs).scores) == {"a", "b", "c"}
    recs.append({**_rec("a", "t1", 0, 0.3), "budget": {"name": "long"}})  # t1 now at two budgets
    assert "a (long)" in cross_target_summary(recs).scores


def test_a_target_where_every_entrant_failed_is_named_not_ranked():
    recs = _records() + [_rec("a", "t3", seed, 50.0) for seed in range(3)]  # > 10 nats: a failure
    s = cross_target_summary(recs)
    assert s.unranked == ("t3",) and "t3" not in s.target_metrics
    assert "Not ranked: t3, where every method's value failed." in "\n".join(summary_table(s))
