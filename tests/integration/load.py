"""Shared parts of the load tests: 20 `nightly_retrain` runs triggered at once, and what must hold afterwards.

The runs are serialised by the DAG (`max_active_runs=1`: each night's gate compares against the champion the
night before left), so "at once" loads the scheduler's queue and the REST API, and the check is that the
queue drains completely and the registry tells the same story as the runs' own records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from ml_tasks.datasets import SYNTHETIC, synthetic

DAG_ID = "nightly_retrain"
MODEL = SYNTHETIC.registered_model
LOAD_RUNS = 20
# Small data and the cheapest honest run: every stage runs (validation, drift, tuning, evaluation with the
# paired bootstrap, infra validation in a fresh process); one trial, a linear model.
LOAD_CONF = {"dataset": "synthetic", "model_family": "logistic_regression", "tuning_trials": 1, "tuning_epochs": 1,
             "max_epochs": 2}
LOAD_ROWS = 1500
# Every state a task instance may still be in while something is (or should be) happening.
UNFINISHED_TI_STATES = {"queued", "scheduled", "running", "up_for_retry", "up_for_reschedule", "restarting",
                        "deferred", None}

Api = Callable[..., requests.Response]  # (method, path under /api/v2, **kwargs) -> response


def land_load_drops(count: int = LOAD_RUNS) -> list[str]:
    """One drop per run: different rows and label noise, so that some candidates win and most do not."""
    from ml_tasks.data.landing import land_frame

    return [land_frame(synthetic.generate(LOAD_ROWS, seed=500 + i, label_noise=0.15 - 0.005 * i),
                       "synthetic", f"load-{i:02d}").as_uri() for i in range(count)]


def trigger_at_once(api: Api, drops: list[str], run_after: datetime | None = None) -> list[str]:
    """POST one run per drop as fast as the API takes them; returns their run ids in trigger order.

    With `run_after` (to queue them ahead of a scheduled run) each gets it plus i milliseconds: a manual run's
    id is made from its run_after, and twenty equal ones would collide.
    """
    run_ids = []
    for i, drop in enumerate(drops):
        body: dict[str, Any] = {"logical_date": None, "conf": {**LOAD_CONF, "source_uri": drop}}
        if run_after is not None:
            body["run_after"] = (run_after + timedelta(milliseconds=i)).isoformat()
        created = api("POST", f"/dags/{DAG_ID}/dagRuns", json=body)
        assert created.status_code == 200, created.text
        run_ids.append(str(created.json()["dag_run_id"]))
    return run_ids


def wait_until_drained(api: Api, run_ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Poll until every run has ended; returns run id -> the run as the API describes it."""
    deadline = time.monotonic() + timeout_s
    runs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        listed = api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()
        runs = {r["dag_run_id"]: r for r in listed["dag_runs"] if r["dag_run_id"] in run_ids}
        if len(runs) == len(run_ids) and all(r["state"] in ("success", "failed") for r in runs.values()):
            return runs
        time.sleep(5)
    states = {run_id: runs.get(run_id, {}).get("state") for run_id in run_ids}
    raise AssertionError(f"runs still unfinished after {timeout_s:.0f}s: {states}")


def task_instances(api: Api, run_ids: list[str]) -> list[dict[str, Any]]:
    """Every task instance of these runs (mapped ones included)."""
    found: list[dict[str, Any]] = []
    for run_id in run_ids:
        page = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
        found.extend(page["task_instances"])
    return found


def registry_baseline() -> dict[str, int]:
    """How many versions and alias moves the model has before the load (the history after it is compared)."""
    from ml_tasks import tracking
    from ml_tasks.release.registry import alias_history

    try:
        versions = len(tracking.client().search_model_versions(f"name='{MODEL}'"))
        moves = len(alias_history(MODEL))
    except Exception:  # no such registered model yet
        versions = moves = 0
    return {"versions": versions, "alias_moves": moves}


def check_drained_load(api: Api, run_ids: list[str], runs: dict[str, dict[str, Any]],
                       baseline: dict[str, int]) -> dict[str, Any]:
    """All runs succeeded one after another, nothing is left queued or running, and the registry's one champion
    and alias history match the gate records and run reports, run by run. Returns a summary to print."""
    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.constants import BLESSING_FILE, RUN_REPORT_FILE, TAG_AIRFLOW_RUN_ID, TAG_RUN_KEY
    from ml_tasks.io import read_json
    from ml_tasks.release.registry import alias_history, current_champion

    failed = {run_id: r["state"] for run_id, r in runs.items() if r["state"] != "success"}
    assert not failed, f"runs that did not succeed: {failed}"
    tis = task_instances(api, run_ids)
    stuck = [(t["dag_run_id"], t["task_id"], t["map_index"], t["state"]) for t in tis if t["state"] in UNFINISHED_TI_STATES]
    assert not stuck, f"task instances left unfinished: {stuck}"
    assert {t["state"] for t in tis} <= {"success", "skipped"}, sorted({t["state"] for t in tis})
    others = api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, "state": ["queued", "running"]}).json()
    assert others["total_entries"] == 0, others["dag_runs"]

    # One after another (max_active_runs=1), in a total order of start times.
    ordered = sorted(runs.values(), key=lambda r: r["start_date"])
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert later["start_date"] >= earlier["end_date"], (earlier["dag_run_id"], later["dag_run_id"])

    # One registered version per run, each with its run's records.
    versions = tracking.client().search_model_versions(f"name='{MODEL}'")
    by_run = {v.tags.get(TAG_AIRFLOW_RUN_ID): v for v in versions if v.tags.get(TAG_AIRFLOW_RUN_ID) in run_ids}
    assert len(versions) == baseline["versions"] + len(run_ids), (len(versions), baseline)
    assert set(by_run) == set(run_ids), sorted(set(run_ids) - set(by_run))
    promoted_in_order: list[str] = []
    blessed = 0
    for run in ordered:
        version = by_run[run["dag_run_id"]]
        dataset, run_key = version.tags[TAG_RUN_KEY].split("/", 1)
        ctx = RunContext(dataset, run_key)
        report, blessing = read_json(ctx.report_dir / RUN_REPORT_FILE), read_json(ctx.report_dir / BLESSING_FILE)
        assert report["completed"] and report["versions"]["version"] == str(version.version), report["versions"]
        # Runs never overlap, so every blessed candidate was compared against the champion of the moment and
        # promoted; an unblessed one never was.
        assert report["versions"]["promoted"] is blessing["blessed"], (run["dag_run_id"], report["versions"], blessing["reasons"])
        blessed += bool(blessing["blessed"])
        if report["versions"]["promoted"]:
            promoted_in_order.append(str(version.version))

    history = alias_history(MODEL)[baseline["alias_moves"]:]
    champion_moves = [h["version"] for h in history if h["alias"] == "champion"]
    assert champion_moves == promoted_in_order, (champion_moves, promoted_in_order)
    assert promoted_in_order and current_champion(MODEL) == promoted_in_order[-1]
    challenger_moves = [h["version"] for h in history if h["alias"] == "challenger"]
    assert challenger_moves == [str(by_run[r["dag_run_id"]].version) for r in ordered]
    spans = [(r["start_date"], r["end_date"]) for r in ordered]
    return {"runs": len(run_ids), "task_instances": len(tis), "blessed": blessed,
            "champion_moves": promoted_in_order, "first_start": spans[0][0], "last_end": spans[-1][1]}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
