"""Load on the embedded default: 20 `nightly_retrain` runs triggered at once through the REST API.

Airflow runs as separate processes on SQLite with the LocalExecutor (tests/integration/airflow_stack.py),
MLflow on its SQLite store, as `ratchet up` starts them. Nothing is mocked. The production profile's twin is
`test_production_profile.py::test_twenty_runs_at_once_on_the_production_profile`. What is checked is in
`load.check_drained_load`: all runs succeed one after another, no task instance is left queued or running,
and the registry ends with one champion whose alias history matches the runs' gate records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .airflow_stack import AirflowStack
from .load import (
    DAG_ID,
    LOAD_RUNS,
    check_drained_load,
    land_load_drops,
    registry_baseline,
    trigger_at_once,
    wait_until_drained,
    write_summary,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.load]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".ratchet" / "test-artifacts" / "load"


@pytest.fixture(scope="module")
def stack(module_home: Path) -> Iterator[AirflowStack]:
    with AirflowStack(module_home) as started:
        started.wait_for_dag(DAG_ID)
        started.unpause(DAG_ID)
        # Unpausing schedules last night's 02:00 run at once; it is not one of the twenty, so it is failed.
        started.fail_scheduled_runs(DAG_ID)
        yield started


@pytest.mark.timeout(LOAD_RUNS * 120 + 600)
def test_twenty_runs_at_once_on_the_embedded_default(stack: AirflowStack, module_home: Path) -> None:
    drops = land_load_drops(LOAD_RUNS)
    baseline = registry_baseline()
    started = time.monotonic()
    run_ids = trigger_at_once(stack.api, drops)
    runs = wait_until_drained(stack.api, run_ids, timeout_s=LOAD_RUNS * 120)
    summary = check_drained_load(stack.api, run_ids, runs, baseline)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    write_summary(ARTIFACTS / "embedded_default.json", summary)
    print(f"\nLOAD embedded default: {summary}")
