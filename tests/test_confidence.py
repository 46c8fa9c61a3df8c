"""Reading with a confidence threshold: the threshold search, and the bench's figures on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitrec import cli, confidence

REPO = Path(__file__).resolve().parents[1]


def test_threshold_is_the_lowest_that_reaches_the_target():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    assert confidence.threshold_for(conf, correct, 1.0) == 0.8  # the two most confident are right
    assert confidence.threshold_for(conf, correct, 0.75) == 0.6  # 3 of the top 4
    assert confidence.threshold_for(conf, correct, 0.6) == 0.5  # 3 of 5 answers everything
    assert confidence.threshold_for(conf[::-1], correct[::-1], 0.75) == 0.6  # order does not matter


def test_tied_confidences_are_answered_together():
    # int8 outputs tie: a threshold cannot split images of equal confidence
    conf, correct = np.array([0.9, 0.9, 0.5]), np.array([True, False, True])
    assert confidence.threshold_for(conf, correct, 1.0) is None
    assert confidence.threshold_for(conf, correct, 0.6) == 0.5  # 1 of 2 at 0.9 falls short; all three: 2 of 3
    assert confidence.threshold_for(conf, correct, 0.7) is None


def test_answered_fraction_and_accuracy():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, True])
    assert confidence.answered(conf, correct, 0.7) == (0.75, pytest.approx(2 / 3))
    assert confidence.answered(conf, correct, 0.95) == (0.0, None)
    assert confidence.answered(conf, correct, None) == (0.0, None)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        confidence.threshold_for(conf, correct[:3], 0.9)


def test_coverage_curve_runs_from_the_most_confident_to_all():
    rng = np.random.default_rng(0)
    conf = rng.random(1000)
    correct = rng.random(1000) < conf  # the more confident, the more often right
    cov, acc = confidence.coverage_curve(conf, correct)
    assert cov[0] == pytest.approx(0.001) and cov[-1] == 1.0 and np.all(np.diff(cov) > 0)
    assert acc[0] == correct[conf.argmax()] and acc[-1] == pytest.approx(correct.mean())
    assert acc[len(acc) // 2] > acc[-1]  # the confident half is more accurate than all


def test_bench_chooses_thresholds_on_validation_and_measures_test(real_data, tmp_path):
    """A shipped model on the real test split: the threshold from validation answers most images,
    more accurately than all of them; the int8 threshold is the same cut on the raw scores."""
    out = tmp_path / "rep"
    argv = ["bench", "--data", str(real_data), "--models", "10cls_GRAY/v4", "100cls_GRAY/v4", "--report", str(out),
            "--loop-sample", "20", "--no-plots"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = {r["model"]: r for r in json.loads((out / "bench.json").read_text())}
    for mid, target in (("10cls_GRAY/v4", 0.995), ("100cls_GRAY/v4", 0.90)):
        r = rows[mid]
        assert r["confidence_target"] == target and r["confidence_threshold"] is not None
        assert 0.3 < r["answered"] < 1.0 and r["accuracy_answered"] > r["accuracy"]
        assert r["accuracy_answered"] > target - 0.02  # chosen on validation, measured on test
        card = json.loads((REPO / "exported_models" / mid / "card.json").read_text())
        q = card["output"]
        assert (r["confidence_threshold_int8"] - q["zero_point"]) * q["scale"] == pytest.approx(r["confidence_threshold"])
    report = (out / "report.md").read_text()
    assert "## Reading with a confidence threshold" in report and "10cls_GRAY/v4" in report.split("confidence")[-1]


def test_no_thresholds_when_the_bench_split_is_not_test(real_data, tmp_path):
    out = tmp_path / "rep"
    argv = ["bench", "--data", str(real_data), "--split", "val", "--models", "10cls_GRAY/v4", "--report", str(out),
            "--loop-sample", "20", "--no-plots"]  # fmt: skip
    assert cli.main(argv) == 0
    row = json.loads((out / "bench.json").read_text())[0]
    assert row["confidence_target"] is None and row["answered"] is None  # never chosen and measured on one split
    assert "confidence threshold" not in (out / "report.md").read_text()
