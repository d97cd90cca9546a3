"""benchmarks.grid.findings: a record says why training went wrong, from the Info history."""

from __future__ import annotations

import numpy as np

from benchmarks.grid.findings import diagnosis, findings, info_summary


def _history():
    return {
        "step": np.array([100, 200, 300]),
        "loss": np.array([3.0, np.nan, 1.0]),
        "buffer_ess": np.array([0.2, 0.004, 0.0006]),
        "temper_beta": np.array([1.0, 0.3, 0.1]),
        "grad_norm": np.array([[1.0, 2.0]] * 3),  # not a scalar column: left out
    }


def test_findings_name_the_first_chunk_where_a_rule_fires():
    found = findings(_history())
    assert found[0].startswith("buffer ESS 0.004 < 1% of the buffer") and found[0].endswith("at step 200")
    assert found[1].startswith("path weights tempered to β = 0.3") and found[1].endswith("at step 200")
    assert len(found) == 2
    assert findings({"step": np.array([100]), "buffer_ess": np.array([0.5])}) == []


def test_info_summary_keeps_extremes_and_their_steps_over_finite_chunks():
    summary = info_summary(_history())
    assert "grad_norm" not in summary and "step" not in summary
    assert summary["loss"] == {"last": 1.0, "min": 1.0, "max": 3.0, "min_step": 300, "max_step": 100}
    assert summary["buffer_ess"]["min"] == 0.0006 and summary["buffer_ess"]["min_step"] == 300
    assert info_summary({"step": np.array([1]), "loss": np.array([np.inf])})["loss"] == {"last": None}


def test_diagnosis_leaves_the_probe_out_and_takes_an_empty_history():
    history = {**_history(), "eval/logZ_error": np.array([5.0, 1.0, 0.1])}
    out = diagnosis(history)
    assert "eval/logZ_error" not in out["info"] and out["findings"] == findings(_history())
    assert diagnosis({}) == {"info": {}, "findings": []}  # a run that diverged in its first chunk


def test_a_training_elbo_that_falls_far_below_its_best_is_a_finding():
    """The reward-score-matching runs on funnel10 (best −3.7 at step 300, last −344) fire; chunk
    noise of a few nats around the best does not, nor does a run that improves to its end."""
    from benchmarks.grid.findings import regressions

    steps = np.array([100, 200, 300, 400])
    drifting = diagnosis({"step": steps, "elbo": np.array([-20.0, -3.7, -90.0, -344.0])})
    assert drifting["findings"] == [
        "training ELBO fell from its best -3.7 at step 200 to -344 at the end "
        "(training moved away from the target)"
    ]
    assert diagnosis({"step": steps, "elbo": np.array([-30.0, -2.0, -9.0, -8.0])})["findings"] == []
    assert diagnosis({"step": steps, "elbo": np.array([-900.0, -50.0, -40.0, -41.0])})["findings"] == []
    assert diagnosis({"step": steps, "elbo": np.array([-900.0, -50.0, -20.0, -80.0])})["findings"] != []
    assert regressions({}) == [] and regressions({"elbo": {"last": None, "max": 1.0}}) == []


def test_a_record_shows_the_regression_even_when_written_before_it_existed():
    from benchmarks.grid.findings import record_findings

    info = {"elbo": {"last": -344.0, "max": -3.7, "max_step": 300}}
    old = {"info": info, "findings": ["buffer ESS 0.004 < 1% at step 200"]}
    found = record_findings(old)
    assert found[0] == "buffer ESS 0.004 < 1% at step 200" and found[1].startswith("training ELBO fell")
    assert record_findings({"info": info, "findings": found}) == found  # no repeat when stored
    assert record_findings(None) == []
