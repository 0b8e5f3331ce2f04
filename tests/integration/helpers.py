"""Helpers for the integration tests: land drops, run the DAG, read the registry."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ml_tasks.config import RunContext, run_key_for
from ml_tasks.constants import RUN_REPORT_FILE

SMALL_BUDGET = {"dataset": "synthetic", "tuning_trials": 2, "tuning_epochs": 2, "max_epochs": 6}


def dags_test(dag_id: str, conf: dict[str, Any], log: Path, logical: str | None = None) -> tuple[int, str]:
    """`airflow dags test` of any DAG: a real DagRun in Airflow's database. Returns the exit code and the log."""
    from ml_tasks.ops.airflow_cli import airflow

    done = airflow("dags", "test", dag_id, *([logical] if logical else []), "-c", json.dumps(conf), log_path=log,
                   check=False)
    return done.returncode, log.read_text()


def run_dag_test(date: str, conf: dict[str, Any], log_dir: Path) -> tuple[int, dict[str, Any]]:
    """`airflow dags test` for one night of nightly_retrain. Returns exit code and report."""
    logical = f"{date}T02:00:00+00:00"
    code, _ = dags_test("nightly_retrain", conf, log_dir / f"{date}.log", logical)
    ctx = RunContext(conf["dataset"], run_key_for(datetime.fromisoformat(logical), None))
    report_path = ctx.report_dir / RUN_REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return code, report


def registry_state(name: str) -> dict[str, Any]:
    from ml_tasks import tracking
    from ml_tasks.release.registry import alias_version

    client = tracking.client()
    versions = client.search_model_versions(f"name='{name}'")
    return {
        "champion": alias_version(name, "champion"),
        "challenger": alias_version(name, "challenger"),
        "versions": sorted(int(v.version) for v in versions),
    }


def checkpointed_epoch(backup_dir: Path) -> int:
    """The last epoch Keras' BackupAndRestore saved under `backup_dir` (0 before the first)."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return 0
