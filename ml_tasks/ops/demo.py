"""`make demo`: three nights of `nightly_retrain` as real Airflow DAG runs.

Night 1 lands the 2015 ACS survey and promotes the first champion; night 2
lands 2016 and promotes the challenger only if the gate says so; night 3 lands
a corrupted 2017 drop (ages in months, a column gone) that validation stops,
leaving the champion untouched. Each night is `airflow dags test`, which
creates a real DagRun in Airflow's database and runs its tasks.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from ml_tasks.ops.airflow_cli import airflow, init_airflow
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

DATASET = "acs_employment"
DAG_ID = "nightly_retrain"


@dataclass(frozen=True)
class Night:
    date: str
    year: int
    corruptions: tuple[str, ...] = ()


NIGHTS = (
    Night("2026-01-01", 2015),
    Night("2026-01-02", 2016),
    Night("2026-01-03", 2017, ("unit_change", "missing_column")),
)
DEMO_CONF = {"dataset": DATASET, "tuning_trials": 6, "tuning_epochs": 4, "max_epochs": 15}


def land_night(night: Night) -> int:
    from ml_tasks.data.landing import land_frame
    from ml_tasks.datasets import ACS_EMPLOYMENT, acs_employment
    from ml_tasks.datasets.corruption import corrupt

    frame = acs_employment.load_year(night.year)
    for kind in night.corruptions:
        frame = corrupt(frame, ACS_EMPLOYMENT, kind)
    land_frame(frame, DATASET, night.date, parts=2)
    return len(frame)


def task_durations(run_id: str) -> dict[str, float]:
    """Seconds per task of one DagRun, read back from Airflow."""
    out = airflow("tasks", "states-for-dag-run", DAG_ID, run_id, "--output", "json", check=False)
    durations: dict[str, float] = {}
    try:
        rows = json.loads(out.stdout[out.stdout.index("[") :])
    except ValueError:
        return durations
    from datetime import datetime

    for row in rows:
        if row.get("state") in ("success", "failed") and row.get("start_date") and row.get("end_date"):
            start = datetime.fromisoformat(row["start_date"])
            end = datetime.fromisoformat(row["end_date"])
            durations[row["task_id"]] = round((end - start).total_seconds(), 1)
    return durations


def run_night(index: int, night: Night) -> dict[str, Any]:
    from ml_tasks.config import RunContext, run_key_for
    from ml_tasks.constants import RUN_REPORT_FILE

    settings = get_settings()
    logical = f"{night.date}T02:00:00+00:00"
    log_path = settings.reports / "demo" / f"night-{index}.log"
    started = time.monotonic()
    finished = airflow("dags", "test", DAG_ID, logical, "-c", json.dumps(DEMO_CONF), log_path=log_path, check=False)
    seconds = time.monotonic() - started
    from datetime import datetime

    ctx = RunContext(DATASET, run_key_for(datetime.fromisoformat(logical), None))
    report_path = ctx.report_dir / RUN_REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    run_id = (report.get("airflow") or {}).get("run_id", "")
    return {
        "night": index, "date": night.date, "exit": finished.returncode, "seconds": round(seconds, 1),
        "report": report, "report_path": str(report_path), "log": str(log_path),
        "tasks": task_durations(run_id) if run_id else {},
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(results: list[dict[str, Any]], champions: list[str | None]) -> str:
    header = ("night", "date", "data rows", "validation", "candidate AUC", "champion AUC", "decision", "champion")
    rows = [header]
    for result, champion in zip(results, champions, strict=False):
        report = result["report"]
        validation = report.get("validation") or {}
        if validation.get("success"):
            valid = "passed"
        elif validation:
            failed = sum(int(f.get("expectations_failed", 1)) for f in validation.get("failures", []))
            valid = f"FAILED ({failed} expectations)"
        else:
            valid = f"stopped at {report.get('stopped_at')}"
        gate = report.get("gate") or {}
        decision = gate.get("decision") or f"stopped at {report.get('stopped_at')}"
        rows.append((
            str(result["night"]), result["date"],
            str((report.get("data") or {}).get("rows") or "-"), valid,
            _fmt((report.get("candidate_metrics") or {}).get("roc_auc")),
            _fmt((report.get("champion_metrics") or {}).get("roc_auc")),
            decision, f"v{champion}" if champion else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(reset: bool = True) -> int:
    from ml_tasks.datasets import ACS_EMPLOYMENT
    from ml_tasks.release.registry import current_champion

    settings = get_settings()
    if reset and settings.home.exists():
        print(f"resetting the demo state in {settings.home}")
        for child in settings.home.iterdir():
            if child.name != "bench":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    t0 = time.monotonic()
    print(f"RATCHET_HOME={settings.home}\ninitialising Airflow (SQLite) ...", flush=True)
    init_airflow()
    results, champions = [], []
    for index, night in enumerate(NIGHTS, start=1):
        rows = land_night(night)
        what = f" corrupted: {', '.join(night.corruptions)}" if night.corruptions else ""
        print(f"night {index} ({night.date}): landed {rows} rows of ACS {night.year}{what}; running {DAG_ID} ...",
              flush=True)
        result = run_night(index, night)
        results.append(result)
        champions.append(current_champion(ACS_EMPLOYMENT.registered_model))
        state = "success" if result["exit"] == 0 else "failed"
        print(f"  DagRun {state} in {result['seconds']}s; tasks: "
              + ", ".join(f"{k} {v}s" for k, v in result["tasks"].items()), flush=True)
    print()
    print(summary_table(results, champions))
    stopped = results[-1]["report"].get("error") or {}
    if stopped.get("message"):
        print(f"\nnight 3 was stopped by validation:\n{stopped['message']}")
    print(f"""
Where to look next:
  run reports   {settings.reports}/{DATASET}/<run key>/run_report.json
  Data Docs     {settings.data_docs}/{DATASET}/<run key>/index.html
  task logs     {settings.reports}/demo/night-<n>.log
  MLflow UI     `make up` (or: eval "$(uv run ratchet env)"; uv run mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI")
  Airflow UI    `make up`, then http://localhost:8080 (login printed there)
demo finished in {time.monotonic() - t0:.0f}s""")
    expected = [0, 0, 1]
    ok = [1 if r["exit"] else 0 for r in results] == expected and champions[-1] == champions[-2] and champions[0]
    if not ok:
        print("the demo did not end as expected (nights 1-2 succeed, night 3 stopped, champion kept)", file=sys.stderr)
        return 1
    return 0
