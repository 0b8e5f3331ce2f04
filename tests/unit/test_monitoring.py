"""monitor() on a real MLflow store (SQLite + local artifacts) and inference logs written here in the documented format.

The champion is a registered stand-in (a constant pyfunc): drift and decay never load the model, they only
read the drift reference and the evaluated metrics stored with the champion's run. Attribution drift does load
it, and only when the champion's run holds its evaluation's global attributions: the stand-in's does not, so
those tests record attribution drift as skipped; the attribution-drift tests promote a real, explainable
champion (a logistic regression logged as training logs every version) for their windows only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.monitoring import MonitorConfig, monitor

MODEL = SYNTHETIC.registered_model
START = datetime(2026, 3, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
CHAMPION_AUC = 0.88


def probabilities(frame):
    """The generating rule's own probability: a good model of undrifted rows."""
    import numpy as np

    weights = np.array([1.5, -1.0, 0.8, 0.0, 0.5, -0.6])
    seg = {"retail": 0.4, "business": -0.3, "public": 0.0}
    chan = {"web": 0.0, "store": 0.3, "phone": -0.4, "partner": 0.2}
    logit = frame[list(SYNTHETIC.numeric_features)].to_numpy() @ weights
    logit = logit + frame["segment"].map(seg).to_numpy() + frame["channel"].map(chan).to_numpy()
    return 1.0 / (1.0 + np.exp(-2.0 * logit))


def write_log(frame, start=START, span=timedelta(hours=1), prefix="r", part="a", batch=1, p=None):
    """Served rows as `ratchet serve` logs them, spread evenly over [start, start + span); `batch` rows a request."""
    from ml_tasks.settings import get_settings

    p = probabilities(frame) if p is None else p
    step = span / len(frame)
    by_day: dict[str, list[str]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        ts = start + i * step
        inputs = {k: row[k] for k in SYNTHETIC.features}
        entry = {"ts": ts.isoformat().replace("+00:00", "Z"), "request_id": f"{prefix}{i // batch}", "model": MODEL,
                 "version": "1", "inputs": inputs, "probability": float(p[i]), "prediction": int(p[i] >= 0.5)}
        by_day.setdefault(ts.date().isoformat(), []).append(json.dumps(entry))
    for day, lines in by_day.items():
        folder = get_settings().inference_logs / MODEL / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")


def write_feedback(frame, prefix="r", name="labels.csv"):
    """Labels for the served rows `<prefix>0..`; each test uses its own prefix and file."""
    import pandas as pd

    from ml_tasks.settings import get_settings

    folder = get_settings().feedback / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"request_id": [f"{prefix}{i}" for i in range(len(frame))], "label": frame["label"]})
    if name.endswith(".parquet"):
        table.to_parquet(folder / name, index=False)
    elif name.endswith(".jsonl"):
        table.to_json(folder / name, orient="records", lines=True)
    else:
        table.to_csv(folder / name, index=False)


def window(day: int) -> tuple[datetime, datetime]:
    """Each test its own window (a day of March), so tests share one store and champion."""
    start = START + timedelta(days=day)
    return start, start + timedelta(hours=1)


def register_stand_in_champion(home: Path) -> str:
    """A champion as monitoring sees one: a registered version whose run holds the training data's drift
    reference and an evaluated `test.roc_auc` (the model itself is a constant pyfunc; it is never loaded)."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    from ml_tasks import tracking
    from ml_tasks.data import drift
    from ml_tasks.release import registry

    class Constant(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    tracking.configure()
    reference = drift.compute_reference(synthetic.generate(4000, seed=1), SYNTHETIC)
    ref_path = home / "drift_reference.json"
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    ref_path.write_text(json.dumps(reference))
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
        mlflow.log_artifact(str(ref_path), artifact_path="data")
        mlflow.log_metric("test.roc_auc", CHAMPION_AUC)
    version = registry.register_candidate(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id, {})
    registry.compare_and_set_champion(MODEL, version, None, "test champion")
    return version


@pytest.fixture(scope="module")
def champion(module_home):
    return register_stand_in_champion(module_home)


def test_undrifted_window_with_good_labels_finds_nothing(champion):
    start, end = window(0)
    frame = synthetic.generate(1500, seed=7)
    write_log(frame, start, prefix="good")
    write_feedback(frame, prefix="good", name="good.csv")
    result = monitor(MODEL, start, end)
    assert result["judged"] == {"drift": True, "decay": True, "attribution": False}, result["not_judged"]
    assert not result["drift_detected"] and not result["decay_detected"], result["reasons"]
    assert result["reasons"] == [] and result["champion_version"] == champion
    assert result["metrics"]["monitoring.rows"] == 1500 and result["metrics"]["monitoring.rows_labeled"] == 1500
    assert result["metrics"]["live.roc_auc"] > 0.8
    record = json.loads(Path(result["record_uri"].removeprefix("file://")).read_text())
    assert record["window"]["key"] == "20260301T100000Z_20260301T110000Z"
    assert set(record["drift"]["features"]) == set(SYNTHETIC.features)
    shift = record["drift"]["prediction_shift"]
    assert not shift["drifted"] and abs(shift["mean_probability"] - shift["training_positive_rate"]) < 0.05
    # the stand-in champion's run holds no attributions from an evaluation: skipped, with the reason, not passed
    attribution = record["attribution_drift"]
    assert attribution["skipped"] and not attribution["judged"] and "ndcg" not in attribution
    assert "has no evaluation/explanation/global_attributions.json in its run" in attribution["why_not"]
    assert attribution["why_not"] in result["not_judged"] and "attribution.ndcg" not in result["metrics"]


def test_a_model_that_suddenly_says_yes_to_everyone_is_a_prediction_shift(champion):
    import numpy as np

    start, end = window(8)
    frame = synthetic.generate(1500, seed=16)
    write_log(frame, start, prefix="yes", part="yes", p=np.full(len(frame), 0.93))  # inputs as trained
    result = monitor(MODEL, start, end)
    assert result["drift_detected"] and len(result["reasons"]) == 1, result["reasons"]
    assert result["reasons"][0].startswith("prediction shift: mean probability 0.930 against a training positive rate")


def test_injected_drift_names_the_drifted_feature(champion):
    frame = synthetic.generate(1500, seed=8)
    frame["x2"] = frame["x2"] + 1.0
    start, end = window(1)
    write_log(frame, start, prefix="drift")
    result = monitor(MODEL, start, end)
    assert result["drift_detected"] and not result["decay_detected"]
    assert any(r.startswith("feature x2 drifted (psi") for r in result["reasons"]), result["reasons"]
    assert not any(f"feature {name} " in " ".join(result["reasons"]) for name in ("x0", "x1", "x3", "segment"))
    assert result["judged"]["decay"] is False and "too few rows with labels" in " ".join(result["not_judged"])


def test_degraded_labels_are_decay(champion):
    start, end = window(2)
    frame = synthetic.generate(1500, seed=9)
    write_log(frame, start, prefix="decay")
    degraded = synthetic.generate(1500, seed=9, label_noise=0.45)  # the same rows, labels mostly noise
    write_feedback(degraded.iloc[:600], prefix="decay", name="decay.parquet")  # labels for 600 served rows
    result = monitor(MODEL, start, end)
    assert result["decay_detected"] and not result["drift_detected"]
    assert result["metrics"]["monitoring.rows_labeled"] == 600
    text = " ".join(result["reasons"])
    assert "live roc_auc" in text and "below minimum 0.7" in text and f"champion's evaluated {CHAMPION_AUC:.4f}" in text


def test_too_few_rows_gives_no_judgement(champion):
    frame = synthetic.generate(60, seed=10)
    frame["x0"] = frame["x0"] + 3.0  # would be drift, but 60 rows judge nothing
    start, end = window(3)
    write_log(frame, start, prefix="few")
    write_feedback(frame, prefix="few", name="few.jsonl")
    result = monitor(MODEL, start, end)
    assert not result["drift_detected"] and not result["decay_detected"]
    assert result["judged"] == {"drift": False, "decay": False, "attribution": False}
    assert "too few served rows to judge drift: 60 < min_rows 500" in result["not_judged"]
    assert any("60 < min_labeled_rows 200" in r for r in result["not_judged"])


def test_rows_outside_the_window_and_malformed_lines_are_not_counted_and_a_sample_bounds_memory(champion):
    from ml_tasks.settings import get_settings

    start, end = window(4)
    write_log(synthetic.generate(720, seed=11), start - timedelta(minutes=30), prefix="edge", part="edge")
    part = get_settings().inference_logs / MODEL / "date=2026-03-05" / "part-edge.jsonl"
    with part.open("a") as handle:
        handle.write('{"ts": "2026-03-05T10:10:00Z", "request_id": "broken"\nnot json at all\n')
    result = monitor(MODEL, start, end, MonitorConfig(min_rows=100, max_rows=200))
    record = json.loads(Path(result["record_uri"].removeprefix("file://")).read_text())
    assert record["rows"]["served"] == 360 and record["rows"]["malformed_lines"] == 2
    assert record["rows"]["used"] == 200 and record["drift"]["judged"]  # a seeded sample of the 360


def test_rerun_of_a_window_rewrites_the_same_record_and_adds_no_metric_points(champion):
    from ml_tasks import tracking
    from ml_tasks.monitoring import MONITORING_EXPERIMENT

    start, end = window(5)
    frame = synthetic.generate(1500, seed=12)
    frame["x0"] = frame["x0"] - 1.0
    write_log(frame, start, prefix="rerun")
    write_feedback(frame, prefix="rerun", name="rerun.csv")
    first = monitor(MODEL, start, end)
    record_path = Path(first["record_uri"].removeprefix("file://"))
    first_bytes = record_path.read_bytes()
    second = monitor(MODEL, start.isoformat(), end.isoformat())  # ISO strings, as XCom would carry them
    assert record_path.read_bytes() == first_bytes
    assert first["points_logged"] > 10 and second["points_logged"] == 0
    assert {k: v for k, v in first.items() if k != "points_logged"} == {k: v for k, v in second.items()
                                                                          if k != "points_logged"}
    client = tracking.client()
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    steps = [(m.step, m.timestamp) for m in client.get_metric_history(run_id, "drift.x0.psi")]
    assert steps.count((int(end.timestamp()), int(end.timestamp()) * 1000)) == 1
    # the next window is one more point of the same series, and the plot covers every window
    points = len(client.get_metric_history(run_id, "monitoring.rows"))
    write_log(synthetic.generate(1500, seed=13), end, prefix="next", part="next")
    monitor(MODEL, end, end + timedelta(hours=1))
    assert len(client.get_metric_history(run_id, "monitoring.rows")) == points + 1
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "monitoring")}
    assert "monitoring/monitoring_over_time.png" in artifacts


def test_a_label_for_a_request_of_many_rows_scores_none_of_them(champion):
    start, end = window(7)
    frame = synthetic.generate(1000, seed=15)
    write_log(frame.iloc[:600], start, prefix="batch", part="batch", batch=3)  # 200 requests of 3 rows
    write_log(frame.iloc[600:], start, prefix="single", part="single")
    write_feedback(frame.iloc[:200], prefix="batch", name="batch.csv")
    write_feedback(frame.iloc[600:], prefix="single", name="single.csv")
    result = monitor(MODEL, start, end)
    record = json.loads(Path(result["record_uri"].removeprefix("file://")).read_text())
    assert record["decay"]["ambiguous_label_rows"] == 600 and record["decay"]["labeled_rows"] == 400


def test_no_champion_means_no_judgement(champion):
    from ml_tasks.datasets import ACS_EMPLOYMENT

    start, end = window(6)
    result = monitor(ACS_EMPLOYMENT.registered_model, start, end)  # no champion, no log
    assert result["champion_version"] is None and not result["drift_detected"]
    assert result["metrics"]["monitoring.rows"] == 0
    assert any("no champion yet" in r for r in result["not_judged"])


# --- attribution drift: a real, explainable champion ----------------------------------------------------------


def register_explained_version(home: Path) -> str:
    """A logistic regression fitted on the synthetic rule, logged as training logs every version
    (`log_trained_model`: pyfunc, transform, target record, explanation baseline) and registered; its run holds
    the global attributions of held-out rows from the version's own explainer, as evaluation writes them."""
    import mlflow
    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.constants import (
        EXPLANATION_ARTIFACT_DIR,
        GLOBAL_ATTRIBUTIONS_FILE,
        TEST_RAW_FILE,
        TRAIN_FILE,
        TRANSFORM_FILE,
    )
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.monitoring import served_attributions
    from ml_tasks.release import registry
    from ml_tasks.release.pyfunc import SKLEARN_ARTIFACT
    from ml_tasks.training.sklearn_models import build_sklearn, save_sklearn
    from ml_tasks.training.trainer import log_trained_model

    ctx = RunContext("synthetic", "explained-champion")
    folder = ctx.prepared_dir
    folder.mkdir(parents=True, exist_ok=True)
    train = synthetic.generate(4000, seed=1)
    transform = FittedTransform.fit(train, list(SYNTHETIC.numeric_features), list(SYNTHETIC.categorical_features))
    features = transform.apply(train)
    pd.DataFrame(features, columns=transform.feature_names).to_parquet(folder / TRAIN_FILE)
    (folder / TRANSFORM_FILE).write_text(json.dumps(transform.to_dict()))
    train.head(20).to_parquet(folder / TEST_RAW_FILE)
    model_path = home / "explained" / "model.skops"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_sklearn(build_sklearn("logistic_regression", {}, 0, "binary").fit(features, train["label"]), model_path)
    tracking.configure()
    with mlflow.start_run() as run:
        pass
    run_id = run.info.run_id
    uri = log_trained_model(ctx, run_id, "logistic_regression", {SKLEARN_ARTIFACT: str(model_path)},
                            {"roc_auc": [0.9], "val_roc_auc": [0.9]}, {}, 0.9, 0.9)
    version = registry.register_candidate(MODEL, uri, run_id, {})
    held_out = synthetic.generate(2000, seed=2)[list(SYNTHETIC.features)]
    explained = served_attributions(MODEL, version, held_out.to_dict(orient="list"))
    reference = home / "explained" / GLOBAL_ATTRIBUTIONS_FILE
    reference.write_text(json.dumps({k: explained[k] for k in ("explainer", "rows", "global")}))
    tracking.client().log_artifact(run_id, str(reference), artifact_path=EXPLANATION_ARTIFACT_DIR)
    return version


@pytest.fixture(scope="module")
def explained_version(champion, module_home):
    return register_explained_version(module_home)


@pytest.fixture
def explained_champion(champion, explained_version):
    """The explainable version is champion for one test; then the stand-in is again, as the other tests expect."""
    from ml_tasks.release import registry

    registry.compare_and_set_champion(MODEL, explained_version, champion, "attribution-drift test")
    yield explained_version
    registry.compare_and_set_champion(MODEL, champion, explained_version, "attribution-drift test done")


def test_attribution_drift_alerts_when_what_drives_the_champion_changes_and_not_on_a_clean_window(
        explained_champion):
    """Served-row attribution drift answers a change in the served rows' feature distribution.

    The champion is fixed and labels do not enter attributions: a row's attributions are the champion's output
    on that row taken apart, so they move only where the rows the champion sees move. Here its top feature x0 is
    held at its training mean (its attributions fall to 0) while x4, a weak feature, spreads fourfold (its
    attributions grow fourfold): what drives the champion's output on these rows is no longer what drove it on
    the held-out rows at evaluation, and NDCG@10 of the ranking falls below the declared 0.9. A changed label
    relationship on the same inputs leaves the attributions where they were: live decay and the gate's
    candidate-against-champion attribution check catch that, not this. A clean window from the training
    distribution ranks the features as evaluation did, and does not alert.
    """
    from ml_tasks.monitoring import request_retrain

    assert SYNTHETIC.attribution_monitoring_min_ndcg == 0.9  # declared in datasets/synthetic.yaml
    start, end = window(10)
    write_log(synthetic.generate(1500, seed=30), start, prefix="attr-clean", part="attr-clean")
    clean = monitor(MODEL, start, end)
    assert clean["champion_version"] == explained_champion and clean["judged"]["attribution"]
    assert not clean["drift_detected"] and not clean["attribution_drift_detected"], clean["reasons"]
    assert clean["metrics"]["attribution.ndcg"] > 0.95

    shifted = synthetic.generate(1500, seed=31)
    shifted["x0"] = 0.0
    shifted["x4"] = shifted["x4"] * 4.0
    start, end = window(11)
    write_log(shifted, start, prefix="attr-shift", part="attr-shift")
    result = monitor(MODEL, start, end)
    record = json.loads(Path(result["record_uri"].removeprefix("file://")).read_text())
    found = record["attribution_drift"]
    assert result["attribution_drift_detected"] and result["drift_detected"] and found["shifted"]
    assert found["judged"] and found["threshold"] == 0.9 and found["ndcg"] < 0.9 and found["rows"] == 500
    assert found["reference_top"][0] == "x0" and found["current_top"][0] == "x4" and found["current_top"][-1] == "x0"
    assert found["explainer"]["method"] == "linear_shap" and found["max_additivity_error"] < 1e-6
    assert result["metrics"]["attribution.ndcg"] == found["ndcg"]
    # this version's run holds no drift reference: input drift is not judged, and attribution drift alone alerts
    assert result["judged"]["drift"] is False and not result["decay_detected"]
    (reason,) = result["reasons"]
    assert reason.startswith("attribution drift: NDCG@10 ") and f"{found['ndcg']:.3f} < 0.9" in reason
    assert "top now x4" in reason and "was x0" in reason
    request = request_retrain(MODEL, result, timedelta(0), lambda: None)  # the drift alerts' retrain request
    assert request.extra is not None and reason in request.extra["reasons"]


def test_a_champion_that_cannot_be_explained_is_skipped_with_the_reason(champion):
    """The stand-in's pyfunc is not ours: the checked loader refuses it, and the explanation says why, unscored."""
    from ml_tasks.monitoring import served_attributions

    rows = synthetic.generate(20, seed=40)[list(SYNTHETIC.features)].to_dict(orient="list")
    answer = served_attributions(MODEL, champion, rows)
    assert set(answer) == {"skipped"} and answer["skipped"].startswith(f"champion version {champion} cannot be explained")
    assert "refused" in answer["skipped"]


@pytest.mark.parametrize("params", [
    {"decay_metric": "wow"}, {"decay_min_value": -1}, {"min_rows": 0}, {"min_rows": 10, "max_rows": 5},
    {"drift_thresholds": {"psi": 0}}, {"min_labeled_rows": 0},
])
def test_config_refuses_bad_values(params):
    from ml_tasks.errors import ConfigError

    with pytest.raises(ConfigError):
        MonitorConfig.from_params(params)


def test_window_and_model_names_are_checked(champion):
    from ml_tasks.errors import ConfigError, UnsafePathError

    with pytest.raises(UnsafePathError):
        monitor("../etc", START, END)
    with pytest.raises(ConfigError):
        monitor("not_a_model", START, END)
    with pytest.raises(ConfigError):
        monitor(MODEL, END, START)
    with pytest.raises(ConfigError):
        monitor(MODEL, "2026-03-01T10:00:00", "2026-03-01T11:00:00")  # no time zone


def test_asset_uri_maps_back_to_its_data_set():
    from ml_tasks.monitoring import dataset_for_asset_uri, retrain_request_uri

    assert retrain_request_uri(MODEL) == "ratchet://models/synthetic_classifier/retrain-request"
    assert dataset_for_asset_uri(retrain_request_uri(MODEL)) == "synthetic"
    assert dataset_for_asset_uri("ratchet://models/other/retrain-request") is None


def test_a_retrain_is_requested_on_drift_or_decay_but_not_again_within_the_cooldown():
    """request_retrain: what model_monitoring's task of that name decides before it updates the Asset."""
    from ml_tasks.monitoring import request_retrain

    window = {"key": "20260301T1000-20260301T1100", "end": END.isoformat()}
    result = {"model": MODEL, "dataset": "synthetic", "window": window, "drift_detected": True,
              "decay_detected": False, "reasons": ["feature x0 drifted"], "record_uri": "file:///r.json"}
    looked_up = []

    def last_request_end(previous):
        return lambda: looked_up.append(previous) or previous

    quiet = request_retrain(MODEL, {**result, "drift_detected": False}, timedelta(hours=12), last_request_end(None))
    assert quiet.extra is None and "no drift or decay in window" in quiet.skipped and looked_up == []
    first = request_retrain(MODEL, result, timedelta(hours=12), last_request_end(None))
    assert first.skipped is None and first.extra == {
        "model": MODEL, "dataset": "synthetic", "window": window["key"], "window_end": END.isoformat(),
        "drift": True, "decay": False, "reasons": ["feature x0 drifted"], "record_uri": "file:///r.json"}
    again = request_retrain(MODEL, result, timedelta(hours=12), last_request_end(END - timedelta(hours=1)))
    assert again.extra is None and "less than retrain_cooldown_hours" in again.skipped
    assert "feature x0 drifted" in again.skipped
    later = request_retrain(MODEL, result, timedelta(hours=12), last_request_end(END - timedelta(hours=13)))
    assert later.extra is not None
    looked_up.clear()
    assert request_retrain(MODEL, result, timedelta(0), last_request_end(END)).extra is not None
    assert looked_up == []  # no cooldown: the last request is never looked up


# --- alerts (plugins/ratchet_airflow/alerts.py) and nightly_retrain's reading of a retrain request -------------


@pytest.fixture
def in_process_airflow(monkeypatch):
    """Airflow imported here keeps its state where conftest puts it (module_home unsets AIRFLOW_HOME)."""
    from tests.conftest import ROOT, TEST_AIRFLOW_HOME

    monkeypatch.setenv("AIRFLOW_HOME", str(TEST_AIRFLOW_HOME))
    return ROOT


@pytest.fixture
def alerts(monkeypatch, in_process_airflow):
    import sys

    monkeypatch.syspath_prepend(str(in_process_airflow / "plugins"))
    for name in ("AIRFLOW_CONN_SMTP_DEFAULT", "AIRFLOW_CONN_RATCHET_SLACK"):
        monkeypatch.delenv(name, raising=False)
    from ratchet_airflow import alerts

    yield alerts
    sys.modules.pop("ratchet_airflow.alerts", None)


RESULT = {"model": MODEL, "champion_version": "3", "drift_detected": True, "decay_detected": False,
          "window": {"key": "20260301T090000Z_20260301T100000Z", "start": "2026-03-01T09:00:00+00:00",
                     "end": "2026-03-01T10:00:00+00:00"},
          "reasons": ["feature x0 drifted (psi 0.870 > 0.2)"], "record_uri": "file:///r.json",
          "asset_uri": "ratchet://models/synthetic_classifier/retrain-request"}


def _logged(caplog, capfd) -> str:
    """Log text wherever it went: once Airflow is imported, its structlog set-up writes to the process's stdout."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


def test_alert_without_connections_is_a_log_line_and_never_fails(alerts, caplog, capfd):
    import logging

    subject, body, summary = alerts.alert_text(RESULT)
    assert subject == f"[ratchet] {MODEL}: drift in window 20260301T090000Z_20260301T100000Z"
    assert "feature x0 drifted" in summary and "\n" not in summary
    with caplog.at_level(logging.INFO, logger="ratchet_airflow.alerts"):
        delivered = alerts.notify(subject, body, {"alert_emails": ["ops@example.com"]}, summary)
    assert delivered == {"email": False, "slack": False}
    text = _logged(caplog, capfd)
    assert f"RATCHET ALERT {summary}" in text
    assert "no SMTP Connection 'smtp_default'" in text and "no Slack Connection 'ratchet_slack'" in text


def test_slack_webhook_must_be_https_and_failures_are_logged_without_the_url(alerts, monkeypatch, caplog, capfd):
    import logging
    import socket

    webhook = {"conn_type": "http", "password": "http://hooks.example.com/T/B/secret"}  # pragma: allowlist secret
    monkeypatch.setenv("AIRFLOW_CONN_RATCHET_SLACK", json.dumps(webhook))
    assert alerts.send_slack("ratchet_slack", "hi") is False  # plain http off this host: refused, not sent
    with socket.socket() as probe:  # a local port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_RATCHET_SLACK", json.dumps({"conn_type": "http",
                                                                 "password": f"http://127.0.0.1:{port}/T/B/secret"}))
    with caplog.at_level(logging.INFO, logger="ratchet_airflow.alerts"):
        assert alerts.send_slack("ratchet_slack", "hi") is False
    text = _logged(caplog, capfd)
    assert "Slack alert through 'ratchet_slack' failed" in text and "secret" not in text


def test_nightly_retrain_retrains_the_data_set_whose_request_started_it(in_process_airflow):
    import runpy
    from types import SimpleNamespace

    from ml_tasks.config import run_key_for
    from ml_tasks.datasets import ACS_EMPLOYMENT
    from ml_tasks.monitoring import retrain_request_uri
    from tests.dags.test_dag_integrity import DAGS

    requested = runpy.run_path(str(DAGS.parent / "plugins" / "ratchet_airflow" / "retrain.py"))["_requested_dataset"]

    def event(model, minute):
        return SimpleNamespace(asset=SimpleNamespace(uri=retrain_request_uri(model)),
                               timestamp=datetime(2026, 3, 1, 10, minute, tzinfo=UTC))

    assert requested({}) is None  # a nightly or manual run keeps its Param
    assert requested({"triggering_asset_events": {"a": [event(MODEL, 5)]}}) == "synthetic"
    both = {"a": [event(MODEL, 5)], "b": [event(ACS_EMPLOYMENT.registered_model, 7)]}
    assert requested({"triggering_asset_events": both}) == ACS_EMPLOYMENT.name  # the latest request wins
    # an asset-triggered run has no data interval: its outputs are keyed by its run id, one partition per run
    key = run_key_for(None, "asset_triggered__2026-03-01T10:07:00.123456+00:00")
    assert key == "asset_triggered__2026-03-01T10_07_00.123456_00_00"
