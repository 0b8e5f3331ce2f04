"""Stage records, and the run report assembled from them.

Each stage writes its small JSON result (or its error) beside the run's report.
They are what the run report is assembled from, whether the run ended well or
stopped early, and what a rerun finds to reuse.
"""

from __future__ import annotations

import logging
from typing import Any

from ml_tasks.config import RunContext
from ml_tasks.constants import MLFLOW_REPORT_DIR, RUN_REPORT_FILE
from ml_tasks.io import read_json, write_json

log = logging.getLogger(__name__)

STAGES = ("sync", "validate", "drift", "prepare", "tune", "train", "evaluate", "gate", "register", "promote")


def write_stage(ctx: RunContext, stage: str, payload: dict[str, Any]) -> dict[str, Any]:
    write_json(ctx.stage_dir / f"{stage}.json", payload)
    return payload


def read_stage(ctx: RunContext, stage: str) -> dict[str, Any] | None:
    path = ctx.stage_dir / f"{stage}.json"
    return read_json(path) if path.is_file() else None


def clear_stages_after(ctx: RunContext, stage: str) -> None:
    """A stage that runs again invalidates the records of the stages after it."""
    for later in STAGES[STAGES.index(stage) + 1 :]:
        (ctx.stage_dir / f"{later}.json").unlink(missing_ok=True)


def _pick(record: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    return {k: record[k] for k in keys} if record else None


def report(ctx: RunContext, review: str | None = None) -> dict[str, Any]:
    """The nightly's report stage: assemble `run_report.json` from the stage records, whatever happened, and log
    it to the MLflow run. `review`: the reviewer's answer, when one was asked."""
    stages = {stage: read_stage(ctx, stage) for stage in STAGES}
    stopped_at = next((s for s, r in stages.items() if r is None or not r.get("ok")), None)
    stopped = stages[stopped_at] if stopped_at else None
    error: dict[str, Any] | None = stopped.get("error") if stopped else None
    done: dict[str, dict[str, Any]] = {s: r for s, r in stages.items() if r is not None and r.get("ok")}
    sync_r, val_r, prep_r = done.get("sync", {}), done.get("validate", {}), done.get("prepare", {})
    drift_r = done.get("drift") or (stages.get("drift") or {}).get("error")
    tune_r, train_r, eval_r = done.get("tune", {}), done.get("train", {}), done.get("evaluate", {})
    gate_r, reg_r, promo_r = done.get("gate", {}), done.get("register", {}), done.get("promote", {})
    validation: dict[str, Any] | None = None
    if val_r:
        validation = {"success": True, "suite": val_r["suite"], "evaluated": val_r["evaluated"],
                      "data_docs": val_r["data_docs_uri"], "engine": val_r.get("engine")}
    elif stopped_at == "validate" and error:
        validation = {"success": False, **error}
    run_report: dict[str, Any] = {
        "dataset": ctx.dataset,
        "run_key": ctx.run_key,
        "airflow": {"dag_id": ctx.dag_id, "run_id": ctx.run_id},
        "completed": stopped_at is None,
        "stopped_at": stopped_at,
        "error": error,
        "data": {
            "source_uri": sync_r.get("source_uri"),
            "files": sync_r.get("files"),
            "rows": val_r.get("rows"),
            "fingerprint": prep_r.get("fingerprint"),
            "rows_after_cleaning": prep_r.get("rows_out"),
            "engine": prep_r.get("engine"),
            "splits": {k: prep_r.get(f"{k}_rows") for k in ("train", "val", "test")} if prep_r else None,
        },
        "validation": validation,
        "drift": drift_r or None,
        "best_params": tune_r.get("best_params"),
        "tuning": _pick(tune_r, "best_value", "trials_complete", "trials_pruned"),
        "training": _pick(train_r, "epochs_run", "best_epoch", "val_auc", "fit_diagnosis", "accelerators"),
        "candidate_metrics": eval_r.get("candidate"),
        "evaluation": _pick(eval_r, "intervals", "slices", "behaviour", "robustness", "importance"),
        "champion_metrics": eval_r.get("champion"),
        "champion_version_compared": eval_r.get("champion_version"),
        "gate": _pick(gate_r, "decision", "blessed", "reasons", "checks", "thresholds"),
        "versions": {
            "registered_model": reg_r["registered_model"], "version": reg_r["version"],
            "infra_validation": reg_r.get("infra_validation"), "model_card": reg_r.get("model_card_uri"),
            "review": review if reg_r.get("needs_review") else "not required",
            **(_pick(promo_r, "previous_champion", "champion", "promoted", "reason") or
               {"promoted": False, "reason": "not promoted"}),
        } if reg_r else None,
        "mlflow_run_id": prep_r.get("mlflow_run_id"),
    }
    path = write_json(ctx.report_dir / RUN_REPORT_FILE, run_report)
    mlflow_run_id = prep_r.get("mlflow_run_id")
    if mlflow_run_id:
        import mlflow

        from ml_tasks import tracking

        tracking.configure()
        with mlflow.start_run(run_id=str(mlflow_run_id)):
            mlflow.log_artifact(str(path), artifact_path=MLFLOW_REPORT_DIR)
    log.info("run report for %s: %s", ctx.tracking_key, path)
    return {"report_uri": path.as_uri(), "completed": run_report["completed"], "stopped_at": stopped_at,
            "error": (error or {}).get("message")}
