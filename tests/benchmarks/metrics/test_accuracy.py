"""benchmarks/metrics/accuracy: a run that finished but whose estimate is useless is flagged `failed`
with its reasons; high reverse ESS beside low forward ESS or mode coverage warns of collapse."""

from __future__ import annotations

from pathlib import Path

from benchmarks.grid.records import read_record
from benchmarks.metrics.accuracy import CHECKS, Bounds, assess

# A record the grid wrote as `ok` (the `default` suite at commit 46b36a0, before target score matching
# had its stabilisers): target score matching on the 25-mode mixture, |log Z error| ~7e20, one effective
# draw of 2000, forward ESS 0, 1 of 25 modes. Kept beside the test, since the committed results are re-run.
RECORDED = Path(__file__).with_name("data") / "target_score_matching_gmm25_seed0_46b36a0.json"

WORKING = {
    "logZ/error": 0.05,
    "ess/reverse": 0.6,
    "ess/num_samples": 2000.0,
    "ess/forward": 0.5,
    "ess/forward_num_samples": 2000.0,
    "modes/hit_fraction": 1.0,
}


def test_the_flag_trips_on_a_recorded_failure():
    rec = read_record(RECORDED)
    assert rec["status"] == "ok"
    judged = assess(rec["metrics"])
    assert judged.accuracy == "failed" and len(judged.reasons) == len(CHECKS) == 4
    assert judged.reasons[0].startswith("|log Z error| 6.9e+20 > 10 nats")
    assert "reverse ESS 0.0005 of 2000 draws" in judged.reasons[1]
    assert "forward ESS 0 of 2000 draws" in judged.reasons[2]
    assert judged.reasons[3] == "mode coverage 0.04 < 0.5"


def test_each_check_trips_alone_and_a_working_run_passes():
    assert assess(WORKING) == ("ok", (), ())
    for key, value in [
        ("logZ/error", 11.0),
        ("logZ/error", float("nan")),
        ("ess/reverse", 2.0 / 2000),
        ("ess/forward", 0.0),
        ("modes/hit_fraction", 0.25),
    ]:
        judged = assess({**WORKING, key: value})
        assert judged.accuracy == "failed" and len(judged.reasons) == 1, (key, judged)
    # the bounds are stated and can be changed
    assert assess({**WORKING, "logZ/error": 3.0}, Bounds(max_log_z_error=2.0)).accuracy == "failed"


def test_a_check_without_its_metrics_does_not_apply():
    """No forward ESS (a target without samples) and no modes: only the checks that can run."""
    assert assess({"logZ/error": 0.1, "ess/reverse": 0.5, "ess/num_samples": 100.0}).accuracy == "ok"
    assert assess({}).accuracy == "ok"


def test_the_collapse_warning():
    """Reverse ESS 0.73 on 1 of 8 modes: failed on coverage, and the collapse is named; high reverse
    ESS with forward ESS 0.02 (40 effective draws, not a failure) still warns."""
    judged = assess({**WORKING, "ess/reverse": 0.73, "modes/hit_fraction": 1 / 8})
    assert judged.accuracy == "failed" and judged.warnings == (
        "mode collapse? reverse ESS 0.73 is high but mode coverage 0.125 is low",
    )
    judged = assess({**WORKING, "ess/reverse": 0.8, "ess/forward": 0.02})
    assert judged.accuracy == "ok" and "forward ESS 0.02" in judged.warnings[0]
    assert assess({**WORKING, "ess/reverse": 0.2, "ess/forward": 0.02}).warnings == ()
