"""nightly_retrain as real Airflow DagRuns (`airflow dags test`) on the embedded default.

Real Airflow (SQLite), real Great Expectations, real Keras in spawned processes,
a real Optuna study and a real MLflow registry. Tests in this module build on
each other: a first champion, then a worse challenger, then bad drops.
"""

from __future__ import annotations

import json

import pytest

from ml_tasks.data.landing import land_frame, landing_dir
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.datasets.corruption import corrupt

from .helpers import SMALL_BUDGET, registry_state, run_dag_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = SYNTHETIC.registered_model


@pytest.fixture(scope="module")
def airflow_home(module_home):
    from ml_tasks.ops.airflow_cli import init_airflow

    init_airflow()
    return module_home


@pytest.fixture(scope="module")
def first_night(airflow_home):
    land_frame(synthetic.generate(4000, seed=1), "synthetic", "2026-02-01")
    return run_dag_test("2026-02-01", SMALL_BUDGET, airflow_home / "logs")


def test_first_night_promotes_the_first_champion(first_night):
    code, report = first_night
    assert code == 0, report.get("error")
    assert report["completed"] and report["validation"]["success"]
    assert report["gate"]["decision"] == "promote"
    assert "first run" in report["gate"]["reasons"][0]
    assert report["versions"]["promoted"] and report["versions"]["champion"] == "1"
    assert set(report["candidate_metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc",
                                                "log_loss", "calibration_error"}
    behaviour = report["evaluation"]["behaviour"]
    # every test ran and passed, or says it was skipped (too few rows): none is passed without running
    assert all(b["status"] in ("passed", "skipped") for b in behaviour), behaviour
    assert all(b["passed"] is (True if b["status"] == "passed" else None) for b in behaviour), behaviour
    assert any(b["status"] == "passed" and b["kind"] == "invariance" for b in behaviour), behaviour
    assert {"clean", "noise_0.5", "fgsm_0.1"} <= set(report["evaluation"]["robustness"])
    assert report["data"]["fingerprint"] and report["best_params"]
    assert report["drift"]["checked"] is False and "no champion yet" in report["drift"]["reason"]
    state = registry_state(MODEL)
    assert state == {"champion": "1", "challenger": "1", "versions": [1]}


def test_registered_version_carries_lineage_tags(first_night):
    from ml_tasks import tracking

    version = tracking.client().get_model_version(MODEL, "1")
    tags = version.tags
    assert tags["ratchet.data_fingerprint"] == first_night[1]["data"]["fingerprint"]
    assert tags["ratchet.airflow.dag_id"] == "nightly_retrain"
    assert tags["ratchet.airflow.run_id"] == first_night[1]["airflow"]["run_id"]
    assert tags["ratchet.gate.decision"] == "promote"
    assert tags["ratchet.validation"].startswith("passed")
    run = tracking.client().get_run(version.run_id)
    trials = tracking.client().search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{version.run_id}'")
    assert len(trials) == SMALL_BUDGET["tuning_trials"]
    artifacts = {a.path for a in tracking.client().list_artifacts(version.run_id, "reports")}
    assert {"reports/run_report.json", "reports/blessing.json"} <= artifacts
    evaluation = {a.path for a in tracking.client().list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/roc_curve.png", "evaluation/calibration_curve.png", "evaluation/permutation_importance.csv"} <= evaluation
    # the reviewer's view: a model card in the version's description, infra validation on its tags
    assert version.description.startswith(f"# {MODEL} v1") and "## Gate" in version.description
    assert tags["ratchet.infra_validation"].startswith("passed")
    assert "reports/model_card.md" in artifacts
    # the training data's drift reference is stored with the model, for the nights after
    assert "data/drift_reference.json" in {a.path for a in tracking.client().list_artifacts(version.run_id, "data")}
    # why it decides: the explainer and top features on its tags, global attributions and plots in its run
    explainer = json.loads(tags["ratchet.explainer"])
    assert explainer["method"] == "integrated_gradients" and explainer["additivity_error"] <= explainer["tolerance"]
    assert set(json.loads(tags["ratchet.top_features"])) <= set(SYNTHETIC.features)
    explained = {a.path for a in tracking.client().list_artifacts(version.run_id, "evaluation/explanation")}
    assert {"evaluation/explanation/global_attributions.json", "evaluation/explanation/attribution_beeswarm.png",
            "evaluation/explanation/partial_dependence.png"} <= explained
    assert "## Why it decides" in version.description


def test_champion_loads_through_pyfunc_and_scores_raw_rows(first_night):
    import mlflow

    from ml_tasks import tracking

    tracking.configure()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    rows = synthetic.generate(20, seed=99).drop(columns=[SYNTHETIC.target])
    scores = model.predict(rows)
    assert list(scores.columns) == ["prediction", "probability", "probability_0", "probability_1"] and len(scores) == 20
    assert scores["prediction"].dtype == "int64"  # the target's own values: 0/1 integers here
    assert scores["probability"].between(0, 1).all()


def test_rerun_of_a_finished_night_is_idempotent(first_night, airflow_home):
    code, report = run_dag_test("2026-02-01", SMALL_BUDGET, airflow_home / "logs-rerun")
    assert code == 0, report.get("error")
    assert report["versions"]["version"] == "1"
    # the rerun compares against what the run compared against (no champion), not against itself
    assert report["champion_version_compared"] is None
    assert report["gate"]["decision"] == first_night[1]["gate"]["decision"] == "promote"
    assert report["versions"]["promoted"] is False  # already champion: nothing moved
    assert report["data"]["fingerprint"] == first_night[1]["data"]["fingerprint"]
    assert registry_state(MODEL) == {"champion": "1", "challenger": "1", "versions": [1]}
    from ml_tasks.release.registry import alias_history

    assert [(h["alias"], h["version"]) for h in alias_history(MODEL)] == [("challenger", "1"), ("champion", "1")]


def test_worse_candidate_is_not_promoted(first_night, airflow_home):
    # 40% of labels flipped: the model trained on it ranks the same held-out rows worse than the champion
    land_frame(synthetic.generate(4000, seed=2, label_noise=0.4), "synthetic", "2026-02-02")
    code, report = run_dag_test("2026-02-02", SMALL_BUDGET, airflow_home / "logs")
    assert code == 0, report.get("error")
    assert report["gate"]["decision"] == "keep_champion"
    assert report["champion_version_compared"] == "1"
    # drift was measured against the champion's stored reference; every distance is reported, a warning only
    assert report["drift"]["checked"] and report["drift"]["champion_version"] == "1"
    assert report["drift"]["action"] == "warn" and set(report["drift"]["largest"]) == {"psi", "ks", "js"}
    # the change check used the paired bootstrap interval of the improvement on the same rows
    interval = report["evaluation"]["intervals"]["roc_auc"]
    assert interval["lower"] <= interval["improvement"] < 0 and interval["lower"] < 0
    assert any("interval of the improvement" in r for r in report["gate"]["reasons"])
    assert {b["test"] for b in report["evaluation"]["behaviour"]} >= {"invariant to x3", "strong positive signal"}
    assert report["versions"]["review"] == "not required" and report["versions"]["promoted"] is False
    assert report["candidate_metrics"]["roc_auc"] < report["champion_metrics"]["roc_auc"]
    assert any("worsens" in r or "needs at least" in r for r in report["gate"]["reasons"])
    assert registry_state(MODEL) == {"champion": "1", "challenger": "2", "versions": [1, 2]}


def test_drift_beyond_thresholds_stops_the_run_when_asked(first_night, airflow_home):
    from ml_tasks import tracking

    before = registry_state(MODEL)
    # means 0.6 sd higher: within the suite (means within 1 sd) but far beyond the PSI and KS thresholds
    land_frame(synthetic.generate(4000, seed=4, drift=0.6), "synthetic", "2026-02-03")
    code, report = run_dag_test("2026-02-03", {**SMALL_BUDGET, "drift_action": "stop"}, airflow_home / "logs")
    assert code != 0 and report["stopped_at"] == "drift" and not report["completed"]
    assert report["error"]["type"] == "DataDriftError"
    message = report["error"]["message"]
    assert "champion version 1" in message and "x0" in message and "psi" in message.lower()
    assert report["versions"] is None and registry_state(MODEL) == before
    run = tracking.client().get_run(report["mlflow_run_id"] or _parent_run_id("2026-02-03"))
    assert run.data.metrics["drift.x0.psi"] > 0.2 and run.data.tags["ratchet.drift"] != "none"


def _parent_run_id(day: str) -> str:
    from datetime import datetime

    from ml_tasks import tracking
    from ml_tasks.config import RunContext, run_key_for

    ctx = RunContext("synthetic", run_key_for(datetime.fromisoformat(f"{day}T02:00:00+00:00"), None))
    return tracking.ensure_parent_run(ctx)


BAD_DROPS = {
    "missing_column": "segment",
    "wrong_type": "x0",
    "nulls": "x0",
    "out_of_range": "x0",
}


@pytest.mark.parametrize("day, kind", [(f"2026-03-0{i + 1}", k) for i, k in enumerate(BAD_DROPS)])
def test_bad_drop_stops_before_registration(first_night, airflow_home, day, kind):
    before = registry_state(MODEL)
    land_frame(corrupt(synthetic.generate(4000, seed=3), SYNTHETIC, kind), "synthetic", day)
    code, report = run_dag_test(day, SMALL_BUDGET, airflow_home / "logs")
    assert code != 0
    assert report["stopped_at"] == "validate" and not report["completed"]
    message = report["error"]["message"]
    assert "expectation(s) of suite 'synthetic' failed" in message and BAD_DROPS[kind] in message
    assert report["versions"] is None and report["gate"] is None
    assert registry_state(MODEL) == before


@pytest.mark.parametrize("day, name, content, expected", [
    ("2026-04-01", "part-000.parquet", b"PAR1\x00\x01truncated", "not readable as Parquet"),
    ("2026-04-02", "part-000.csv", b"", "empty"),
])
def test_unreadable_drop_stops_before_registration(first_night, airflow_home, day, name, content, expected):
    before = registry_state(MODEL)
    folder = landing_dir("synthetic", day)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    code, report = run_dag_test(day, SMALL_BUDGET, airflow_home / "logs")
    assert code != 0 and report["stopped_at"] == "validate"
    assert expected in report["error"]["message"] and name in report["error"]["message"]
    assert registry_state(MODEL) == before
