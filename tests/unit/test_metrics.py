"""Metrics and the paired bootstrap: checked against scikit-learn and against constructed score pairs."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from ml_tasks.release.metrics import (
    _BinaryScores,
    classification_metrics,
    expected_calibration_error,
    paired_bootstrap,
    per_class_f1,
    permutation_importance,
    save_plots,
    slice_metrics,
)


def _scores(n=4000, signal=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, p


def test_binary_metrics_match_sklearn():
    y, p = _scores()
    m = classification_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(sk.average_precision_score(y, p))
    assert m["f1"] == pytest.approx(sk.f1_score(y, p >= 0.5))
    assert m["log_loss"] == pytest.approx(sk.log_loss(y, p), rel=1e-4)
    assert 0 <= m["calibration_error"] < 0.2


def test_fast_weighted_metrics_match_sklearn_with_weights_and_ties():
    y, p = _scores(n=3000, seed=1)
    p = np.round(p, 2)  # many ties
    w = np.random.default_rng(2).poisson(1.0, len(y)).astype(float)
    fast = _BinaryScores(y, p).metrics(["roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "brier", "precision",
                                        "recall"], w)
    assert fast["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert fast["pr_auc"] == pytest.approx(sk.average_precision_score(y, p, sample_weight=w), abs=1e-12)
    assert fast["accuracy"] == pytest.approx(sk.accuracy_score(y, p >= 0.5, sample_weight=w))
    assert fast["f1"] == pytest.approx(sk.f1_score(y, p >= 0.5, sample_weight=w))
    assert fast["brier"] == pytest.approx(sk.brier_score_loss(y, p, sample_weight=w))


def test_fast_average_precision_matches_sklearn_with_zero_weights_at_the_top_and_without_ties():
    y, p = _scores(n=500, seed=4)
    w = np.random.default_rng(5).poisson(1.0, len(y)).astype(float)
    w[np.argsort(-p)[:7]] = 0.0  # the highest scores drawn by no resample
    scores = _BinaryScores(y, p)
    assert scores.average_precision(w) == pytest.approx(sk.average_precision_score(y, p, sample_weight=w), abs=1e-12)
    assert scores.average_precision(np.ones(len(y))) == pytest.approx(sk.average_precision_score(y, p), abs=1e-12)


def test_calibration_error_equals_the_per_bin_definition_with_weights():
    from ml_tasks.release.metrics import CALIBRATION_BINS, expected_calibration_error, probability_matrix

    y, p = _scores(n=2000, seed=6)
    w = np.random.default_rng(7).poisson(1.0, len(y)).astype(float)
    matrix = probability_matrix(p)
    confidence, correct = matrix.max(axis=1), (matrix.argmax(axis=1) == y).astype(float)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, CALIBRATION_BINS + 1)[1:-1]), 0, CALIBRATION_BINS - 1)
    expected = sum(w[which == b].sum() / w.sum() * abs(np.average(correct[which == b], weights=w[which == b])
                                                        - np.average(confidence[which == b], weights=w[which == b]))
                   for b in range(CALIBRATION_BINS) if w[which == b].sum() > 0)
    assert expected_calibration_error(y, matrix, weights=w) == pytest.approx(expected, abs=1e-12)


def test_multiclass_metrics_are_macro_one_vs_rest():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 3000)
    logits = rng.normal(size=(3000, 3)) + 2 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = classification_metrics(y, p, classes=["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr"))
    assert m["f1"] == pytest.approx(sk.f1_score(y, p.argmax(1), average="macro"))
    assert set(per_class_f1(y, p, ["a", "b", "c"])) == {"a", "b", "c"}


def test_calibration_error_is_zero_when_confidence_matches_accuracy():
    y = np.array([1] * 80 + [0] * 20)
    p = np.column_stack([np.full(100, 0.2), np.full(100, 0.8)])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-9)


def test_interval_of_a_real_improvement_clears_zero_and_of_a_tie_straddles_it():
    y, better = _scores(n=5000, signal=1.6, seed=4)
    rng = np.random.default_rng(5)
    worse = 1 / (1 + np.exp(-(np.log(better / (1 - better)) + rng.normal(scale=1.5, size=len(y)))))
    gain = paired_bootstrap(y, better, worse, ["roc_auc", "accuracy"], resamples=300)
    assert gain["roc_auc"].improvement > 0 and gain["roc_auc"].lower > 0
    tie = paired_bootstrap(y, better, better + rng.normal(scale=1e-4, size=len(y)), ["roc_auc"], resamples=300)
    assert tie["roc_auc"].lower < 0 < tie["roc_auc"].upper or tie["roc_auc"].lower == tie["roc_auc"].upper == 0


def test_lower_is_better_metrics_count_a_decrease_as_improvement():
    y, p = _scores(seed=6)
    sharper = np.clip(np.where(y == 1, p + 0.05, p - 0.05), 0.01, 0.99)
    interval = paired_bootstrap(y, sharper, p, ["log_loss"], resamples=200)["log_loss"]
    assert interval.improvement > 0 and interval.lower > 0


def test_slices_and_importance_and_plots(tmp_path):
    y, p = _scores(n=2000, seed=7)
    frame = pd.DataFrame({"segment": np.where(np.arange(2000) % 2, "a", "b"), "x": y + np.random.default_rng(8).normal(size=2000),
                          "noise": np.random.default_rng(9).normal(size=2000)})
    slices = slice_metrics(frame, y, p, ["segment"], min_rows=100)
    assert set(slices) == {"segment=a", "segment=b"} and slices["segment=a"]["rows"] == 1000

    def predict(f):
        return 1 / (1 + np.exp(-3 * (f["x"].to_numpy() - 0.5)))

    ranking = permutation_importance(predict, frame, y, ["x", "noise"], repeats=2)
    assert ranking[0]["feature"] == "x" and ranking[0]["importance"] > 0.2 and abs(ranking[1]["importance"]) < 1e-9
    files = {path.name for path in save_plots(y, p, tmp_path, "candidate", ranking)}
    assert files == {"roc_curve.png", "pr_curve.png", "calibration_curve.png", "confusion_matrix.png",
                     "permutation_importance.png"}
    assert not math.isnan(classification_metrics(y, p)["brier"])
