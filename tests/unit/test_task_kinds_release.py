"""Every task kind through the release side: the pyfunc's prediction contract, the metrics, the bootstrap, the
naive-baseline floor of the gate, infra validation's output check and monitoring's live regression error."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from ml_tasks.datasets import SYNTHETIC

MULTI = dataclasses.replace(SYNTHETIC, name="tiers", task="multiclass", classes=("Basic", "Plus", "Premium"),
                            primary_metric="f1_macro")
REG = dataclasses.replace(SYNTHETIC, name="price", task="regression", classes=(), primary_metric="rmse")
YESNO = dataclasses.replace(SYNTHETIC, name="yesno", classes=("no", "yes"))


class _Identity:
    """A stand-in for the fitted transform: the frame's numbers as float32 features."""

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        return frame.to_numpy(dtype="float32")


def _model(estimator, spec=None):
    from ml_tasks.release.pyfunc import RatchetClassifier, target_record

    model = RatchetClassifier()
    model.transform, model.network, model.estimator = _Identity(), None, estimator
    model.target = None if spec is None else target_record(spec)
    return model


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame(x, columns=["a", "b"]), x


def test_multiclass_prediction_holds_original_values_and_a_probability_per_class():
    from sklearn.linear_model import LogisticRegression

    from ml_tasks.release.pyfunc import scores_from_frame

    frame, x = _data()
    codes = np.digitize(x[:, 0], [-0.5, 0.5])
    out = _model(LogisticRegression().fit(x, codes), MULTI).predict(None, frame)
    assert list(out.columns) == ["prediction", "probability_Basic", "probability_Plus", "probability_Premium"]
    assert set(out["prediction"]) <= {"Basic", "Plus", "Premium"}
    matrix = scores_from_frame(out, MULTI)
    assert matrix.shape == (300, 3) and np.allclose(matrix.sum(axis=1), 1)
    assert (np.asarray(MULTI.classes, dtype=object)[matrix.argmax(axis=1)] == out["prediction"].to_numpy()).all()


def test_binary_keeps_probability_and_regression_answers_in_its_units():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from ml_tasks.release.pyfunc import scores_from_frame

    frame, x = _data()
    out = _model(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), YESNO).predict(None, frame)
    assert list(out.columns) == ["prediction", "probability", "probability_no", "probability_yes"]
    assert np.allclose(out["probability"], out["probability_yes"])
    assert (out["prediction"] == np.where(out["probability"] >= 0.5, "yes", "no")).all()
    assert np.allclose(scores_from_frame(out, YESNO), out["probability"])
    y = 300.0 + 20 * x[:, 0]
    reg = _model(LinearRegression().fit(x, y), REG).predict(None, frame)
    assert list(reg.columns) == ["prediction"] and np.allclose(reg["prediction"], y)


def test_a_version_without_a_target_record_answers_as_before():
    from sklearn.linear_model import LogisticRegression

    frame, x = _data()
    estimator = LogisticRegression().fit(x, (x[:, 1] > 0).astype(int))
    out = _model(estimator).predict(None, frame)
    assert list(out.columns) == ["probability", "prediction"] and out["prediction"].dtype == "int64"
    assert np.allclose(out["probability"], estimator.predict_proba(x)[:, 1])
    assert (out["prediction"] == (out["probability"] >= 0.5)).all()


def test_regression_and_multiclass_metrics_match_sklearn(caplog):
    from sklearn import metrics as sk

    from ml_tasks.release.metrics import multiclass_metrics, regression_metrics

    rng = np.random.default_rng(1)
    y = rng.uniform(1, 10, 500)
    p = y + rng.normal(size=500)
    got = regression_metrics(y, p)
    assert got["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(sk.r2_score(y, p))
    assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y, p))
    y[3] = 0.0
    caplog.set_level("INFO", logger="ml_tasks.release.metrics")
    assert math.isnan(regression_metrics(y, p)["mape"]) and "MAPE left out" in caplog.text

    labels = rng.integers(0, 3, 600)
    scores = rng.dirichlet([1, 1, 1], 600)
    scores[np.arange(600), labels] += 0.5
    scores /= scores.sum(axis=1, keepdims=True)
    got = multiclass_metrics(labels, scores, 3)
    predicted = scores.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert got["f1_macro"] == pytest.approx(sk.f1_score(labels, predicted, average="macro"))
    assert got["f1_weighted"] == pytest.approx(sk.f1_score(labels, predicted, average="weighted"))
    assert got["precision_macro"] == pytest.approx(sk.precision_score(labels, predicted, average="macro"))
    assert got["recall_macro"] == pytest.approx(sk.recall_score(labels, predicted, average="macro"))
    assert got["log_loss"] == pytest.approx(sk.log_loss(labels, scores), rel=1e-4)
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, scores, multi_class="ovr"), rel=1e-4)


def test_the_bootstrap_of_rmse_counts_a_lower_error_as_improvement():
    from ml_tasks.release.metrics import paired_bootstrap

    rng = np.random.default_rng(2)
    y = rng.normal(100, 10, 400)
    better, worse = y + rng.normal(0, 1, 400), y + rng.normal(0, 5, 400)
    interval = paired_bootstrap(y, better, worse, ["rmse", "r2"], resamples=200, task="regression")
    assert interval["rmse"].improvement > 0 and interval["rmse"].lower > 0
    assert interval["r2"].lower > 0
    assert paired_bootstrap(y, worse, better, ["rmse"], resamples=200, task="regression")["rmse"].upper < 0


@pytest.mark.parametrize("spec", [SYNTHETIC, MULTI, REG], ids=lambda s: s.task)
def test_the_baseline_floor_blesses_a_good_first_model_and_never_a_useless_one(spec):
    from ml_tasks.config import GateConfig
    from ml_tasks.release.evaluation import baseline_scores
    from ml_tasks.release.gate import decide
    from ml_tasks.release.metrics import paired_bootstrap, task_metrics

    rng = np.random.default_rng(3)
    n, k = 600, max(len(spec.classes), 1)
    if spec.is_classification:
        y = rng.integers(0, k, n)
        good = np.full((n, k), 0.1 / (k - 1))
        good[np.arange(n), y] = 0.9
        good = good[:, 1] if k == 2 else good
    else:
        y = rng.normal(50, 10, n)
        good = y + rng.normal(0, 2, n)
    train = rng.integers(0, k, 2000) if spec.is_classification else rng.normal(50, 10, 2000)
    baseline = baseline_scores(train, spec, n)
    useless = baseline.copy()  # a constant model: the prior / the mean again
    config = GateConfig(absolute={}, change={})
    for scores, blessed in ((good, True), (useless, False)):
        intervals = {m: i.to_dict() for m, i in paired_bootstrap(
            y, scores, baseline, [spec.primary_metric], resamples=100, task=spec.task, classes=spec.classes).items()}
        decision = decide(config, task_metrics(spec.task, y, scores, spec.classes), None,
                          baseline=task_metrics(spec.task, y, baseline, spec.classes), baseline_intervals=intervals,
                          primary_metric=spec.primary_metric, baseline_margin=0.0)
        assert decision.blessed is blessed, decision.reasons
        check = next(c for c in decision.checks if c.kind == "baseline")
        assert "candidate" in check.reason and "baseline" in check.reason
    never = decide(config, {"rmse": 1.0}, None)
    assert not never.blessed and "ever blessed" in " ".join(never.reasons)  # neither thresholds nor a baseline


def test_infra_validation_refuses_predictions_outside_the_declared_classes():
    from ml_tasks.release.infra_validation import output_problems

    good = pd.DataFrame({"prediction": ["Basic", "Premium"], "probability_Basic": [0.7, 0.1],
                         "probability_Plus": [0.2, 0.1], "probability_Premium": [0.1, 0.8]})
    assert output_problems(good, 2, MULTI) == []
    bad = good.assign(prediction=["Basic", "Gold"])
    assert any("Gold" in p for p in output_problems(bad, 2, MULTI))
    assert output_problems(pd.DataFrame({"prediction": [1.0, 2.5]}), 2, REG) == []
    assert output_problems(pd.DataFrame({"prediction": [1.0, np.inf]}), 2, REG)
    legacy = pd.DataFrame({"probability": [0.2, 0.9], "prediction": [0, 1]})
    assert output_problems(legacy, 2, SYNTHETIC) == [] and output_problems(legacy, 2) == []


def test_monitoring_measures_live_regression_error_from_feedback():
    from ml_tasks.monitoring import DecayConfig, MonitorConfig, _judge_decay

    rng = np.random.default_rng(4)
    truth = rng.normal(300, 30, 250)
    frame = pd.DataFrame({"request_id": [f"r{i}" for i in range(250)], "probability": math.nan,
                          "prediction": truth + 3.0, "shared": False})
    labels = {f"r{i}": str(v) for i, v in enumerate(truth)}
    config = MonitorConfig(decay=DecayConfig(metric="rmse", min_value=2.0, max_drop=None, min_labeled_rows=100))
    judged = _judge_decay(frame, labels, REG, config, None)
    assert judged["judged"] and judged["value"] == pytest.approx(3.0)
    assert judged["live"]["mae"] == pytest.approx(3.0) and judged["decayed"]

    multi = pd.DataFrame({"request_id": ["a", "b", "c", "d"], "probability": math.nan,
                          "prediction": ["Basic", "Plus", "Premium", "Plus"], "shared": False})
    config = MonitorConfig(decay=DecayConfig(metric="accuracy", min_value=0.5, max_drop=None, min_labeled_rows=1))
    judged = _judge_decay(multi, {"a": "Basic", "b": "Plus", "c": "Basic", "d": "Plus"}, MULTI, config, None)
    assert judged["value"] == pytest.approx(0.75) and not judged["decayed"]


def test_the_multiclass_bootstrap_fast_path_gives_sklearns_numbers_under_weights():
    import numpy as np

    from ml_tasks.release.metrics import _MulticlassScores, multiclass_metrics

    rng = np.random.default_rng(1)
    y = rng.integers(5, size=3000)
    p = rng.dirichlet(np.ones(5), size=3000)
    p[np.arange(3000), y] += 0.3
    p /= p.sum(axis=1, keepdims=True)
    for weights in (np.ones(3000), rng.poisson(1.0, size=3000).astype("float64")):
        expected, fast = multiclass_metrics(y, p, 5, weights), _MulticlassScores(y, p, 5).metrics(weights)
        assert fast.keys() == expected.keys()
        for name in expected:
            assert abs(fast[name] - expected[name]) < 1e-9, name
