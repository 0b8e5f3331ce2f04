"""Permanent errors fail a task without retries through one helper (plugins/ratchet_airflow/failures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def failures(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "plugins"))
    from ratchet_airflow import failures

    return failures


def test_a_permanent_error_fails_the_task_naming_it_and_others_are_left_to_retries(failures):
    from airflow.sdk.exceptions import AirflowFailException

    from ml_tasks.errors import DataValidationError, StorageError

    with pytest.raises(AirflowFailException, match=r"^validate: the drop failed its suite$") as caught:
        with failures.permanent_errors_fail_the_task("validate"):
            raise DataValidationError("the drop failed its suite")
    assert isinstance(caught.value.__cause__, DataValidationError)
    with pytest.raises(StorageError, match="endpoint gone"):  # retried: a rerun resumes
        with failures.permanent_errors_fail_the_task("sync"):
            raise StorageError("endpoint gone")


def test_no_dag_handles_permanent_errors_itself():
    """The one helper: no DAG file names PERMANENT_ERRORS; report's own "run stopped at" is its only failure."""
    retrain = ROOT / "plugins" / "ratchet_airflow" / "retrain.py"  # the retraining DAGs' wiring
    for path in [*sorted((ROOT / "dags").glob("*.py")), retrain]:
        text = path.read_text()
        assert "PERMANENT_ERRORS" not in text, path.name
        raised = text.count("AirflowFailException(")
        assert raised == (1 if path == retrain else 0), path.name
    assert 'AirflowFailException(f"run stopped at' in retrain.read_text()
