"""The stages of `nightly_retrain`, one function each, over small JSON inputs.

Each Airflow task calls exactly one of these. Every stage writes its record
(result or error) to the run's report folder before returning or raising, so
the run report tells how far a run got and why it stopped.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from ml_tasks import records
from ml_tasks.config import RunConfig, RunContext
from ml_tasks.constants import (
    BLESSING_FILE,
    DRIFT_REFERENCE_FILE,
    DRIFT_REPORT_FILE,
    INFRA_VALIDATION_FILE,
    MLFLOW_DATA_DIR,
    MLFLOW_REPORT_DIR,
    MODEL_CARD_FILE,
    RUN_REPORT_FILE,
    TAG_AIRFLOW_DAG_ID,
    TAG_AIRFLOW_RUN_ID,
    TAG_DATASET,
    TAG_DRIFT,
    TAG_FINGERPRINT,
    TAG_GATE_DECISION,
    TAG_GATE_REASONS,
    TAG_INFRA_VALIDATION,
    TAG_REVIEW,
    TAG_RUN_KEY,
    TAG_VALIDATION,
)
from ml_tasks.datasets import get_dataset
from ml_tasks.io import write_json
from ml_tasks.settings import get_settings
from ml_tasks.storage.options import StorageOptions

log = logging.getLogger(__name__)


def run_stage(ctx: RunContext, stage: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage: clear later records, record the result or the error, re-raise errors."""
    records.clear_stages_after(ctx, stage)
    try:
        result = work()
    except Exception as exc:
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        if getattr(exc, "failures", None):
            error["failures"] = exc.failures  # type: ignore[attr-defined]
        records.write_stage(ctx, stage, {"ok": False, "error": error, "traceback": traceback.format_exc(limit=5)})
        raise
    records.write_stage(ctx, stage, {"ok": True, **result})
    return result


def default_source(ctx: RunContext, drop_date: str) -> str:
    return (get_settings().landing / ctx.dataset / drop_date).as_uri()


def sync(ctx: RunContext, config: RunConfig, drop_date: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """Mirror the drop (file://, s3:// or hdfs://) into the run's staging area."""
    from ml_tasks.config import confined_uri
    from ml_tasks.storage import sync_drop

    def work() -> dict[str, Any]:
        source = confined_uri(config.source_uri, "source_uri") if config.source_uri else default_source(ctx, drop_date)
        return sync_drop(source, ctx.staging_dir, options)

    return run_stage(ctx, "sync", work)


def validate(ctx: RunContext, synced: dict[str, Any]) -> dict[str, Any]:
    from ml_tasks.data.validation import validate_drop

    return run_stage(ctx, "validate", lambda: validate_drop(synced["staging_uri"], ctx.dataset, ctx.run_key).to_dict())


def champion_drift_reference(name: str, run_id: str | None = None) -> tuple[str | None, dict[str, Any] | None, str]:
    """The drift reference stored with the champion: (version, reference, why not).

    With the nightly run's MLflow `run_id`, the champion it is compared with (`registry.comparison_baseline`):
    a rerun after the run's own version was promoted measures drift against the champion it replaced.
    """
    import tempfile
    from pathlib import Path

    import mlflow

    from ml_tasks import tracking
    from ml_tasks.io import read_json
    from ml_tasks.release import registry

    version = registry.comparison_baseline(name, run_id)[0] if run_id else registry.current_champion(name)
    if version is None:
        return None, None, f"{name} has no champion yet: nothing to compare with"
    client = tracking.client()
    run_id = str(client.get_model_version(name, version).run_id)
    stored = {Path(a.path).name for a in client.list_artifacts(run_id, MLFLOW_DATA_DIR)}
    if DRIFT_REFERENCE_FILE not in stored:
        return version, None, f"champion version {version} was trained before drift references were stored"
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{MLFLOW_DATA_DIR}/{DRIFT_REFERENCE_FILE}", dst_path=tmp,
            tracking_uri=get_settings().mlflow_tracking_uri,
        )
        return version, read_json(Path(local)), ""


def check_drift(ctx: RunContext, config: RunConfig, synced: dict[str, Any]) -> dict[str, Any]:
    """Compare the drop with the champion's training data: every distance recorded, stop only if asked."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.data import drift
    from ml_tasks.errors import DataDriftError
    from ml_tasks.io import read_drop
    from ml_tasks.storage import local_path

    def work() -> dict[str, Any]:
        spec = get_dataset(ctx.dataset)
        run_id = tracking.ensure_parent_run(ctx)
        version, reference, why_not = champion_drift_reference(spec.registered_model, run_id)
        if reference is None:
            log.info("drift not checked for %s: %s", ctx.tracking_key, why_not)
            return {"checked": False, "reason": why_not, "champion_version": version, "action": config.drift.action}
        frame = read_drop(local_path(synced["staging_uri"]))
        thresholds = drift.DriftThresholds.from_dict(config.drift.thresholds)
        found = drift.compare(reference, frame, spec, thresholds)
        report_path = write_json(ctx.report_dir / DRIFT_REPORT_FILE, {"champion_version": version, **found.to_dict()})
        largest = {
            test: max((f[test] for f in found.features.values() if f.get(test) is not None), default=None)
            for test in ("psi", "ks", "js")
        }
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({f"drift.{feature}.{test}": float(values[test])
                                for feature, values in found.features.items()
                                for test in ("psi", "ks", "js") if values.get(test) is not None})
            mlflow.set_tag(TAG_DRIFT, ", ".join(found.drifted_features) or "none")
            mlflow.log_artifact(str(report_path), artifact_path=MLFLOW_REPORT_DIR)
        summary = found.summary()
        result = {"checked": True, "champion_version": version, "action": config.drift.action,
                  "drifted": found.drifted, "drifted_features": found.drifted_features,
                  "label_drifted": bool(found.label and found.label.get("drifted")),
                  "largest": largest, "thresholds": thresholds.to_dict(), "report_uri": report_path.as_uri(),
                  "summary": summary}
        if found.drifted and config.drift.action == "stop":
            raise DataDriftError(f"the drop drifted from champion version {version}'s training data "
                                 f"and drift_action is 'stop':\n{summary}")
        if found.drifted:
            log.warning("drift from champion version %s (continuing: drift_action is 'warn'):\n%s", version, summary)
        else:
            log.info("no drift above thresholds from champion version %s:\n%s", version, summary)
        return result

    return run_stage(ctx, "drift", work)


def prepare(ctx: RunContext, config: RunConfig, synced: dict[str, Any]) -> dict[str, Any]:
    from ml_tasks import tracking
    from ml_tasks.data import preparation

    def work() -> dict[str, Any]:
        prepared = preparation.prepare(ctx, synced["staging_uri"], augment=config.augment or None,
                                       cv_folds=config.cv_folds)
        run_id = tracking.ensure_parent_run(ctx)
        preparation.log_to_mlflow(run_id, ctx, prepared)
        return {**prepared.to_dict(), "mlflow_run_id": run_id}

    return run_stage(ctx, "prepare", work)


def tune(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], step: str = "all", slot: int = 0) -> dict[str, Any]:
    """The Optuna search: whole ("all"), or in the DAG's steps "plan", "slot" (one of N mapped tasks), "summary".

    "all" and "summary" write the tune record train reads; a failing plan or slot records its error there.
    """
    from ml_tasks.training import tuning

    run_id = prepared["mlflow_run_id"]
    if step == "all":
        return run_stage(ctx, "tune", lambda: tuning.tune(ctx, config.tune, run_id).to_dict())
    if step == "summary":
        return run_stage(ctx, "tune", lambda: tuning.tune_summary(ctx, config.tune, run_id).to_dict())
    try:
        if step == "plan":
            records.clear_stages_after(ctx, "tune")
            return tuning.tune_plan(ctx, config.tune).to_dict()
        if step == "slot":
            return tuning.tune_slot(ctx, config.tune, run_id, slot, tuning.slot_count(config.tune)).to_dict()
        raise ValueError(f"unknown tuning step {step!r}")
    except Exception as exc:
        where = f"tuning {step}" + (f" {slot}" if step == "slot" else "")
        error = {"type": type(exc).__name__, "message": f"{where}: {exc}"}
        records.write_stage(ctx, "tune", {"ok": False, "error": error, "traceback": traceback.format_exc(limit=5)})
        raise


def train(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Train on this host, or (`train_workers` > 1) log the model the `train_worker` cluster's chief saved."""
    from dataclasses import asdict

    from ml_tasks.isolation import run_isolated
    from ml_tasks.training.trainer import train as run_training

    if config.train.workers == 1:
        return run_stage(
            ctx, "train",
            lambda: run_training(ctx, config.train, tuned["best_params"], prepared["mlflow_run_id"]).to_dict(),
        )
    return run_stage(ctx, "train", lambda: run_isolated("ml_tasks.training.distributed:collect_in_process", {
        "ctx": ctx.to_dict(), "config": asdict(config.train), "params": tuned["best_params"],
        "parent_run_id": prepared["mlflow_run_id"]}))


def train_plan(ctx: RunContext, config: RunConfig) -> list[int]:
    """The `train_worker` indices to map over: none on one host (the mapped task is skipped), else 0..N-1."""
    workers = config.train.workers
    return list(range(workers)) if workers > 1 else []


def train_worker(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], tuned: dict[str, Any], index: int,
                 attempt: str = "") -> dict[str, Any]:
    """One host of the multi-worker cluster (`ml_tasks.training.distributed.run_worker`); a failure is the train stage's."""
    import uuid

    from ml_tasks.constants import MULTIWORKER_DIR, TRAIN_FILE, VALIDATION_SPLIT_FILE
    from ml_tasks.training.distributed import run_worker
    from ml_tasks.training.system_metrics import system_metrics

    folder = ctx.model_dir / MULTIWORKER_DIR
    train_kwargs = {
        "train_path": str(ctx.prepared_dir / TRAIN_FILE), "val_path": str(ctx.prepared_dir / VALIDATION_SPLIT_FILE),
        "model_dir": str(folder), "params": tuned["best_params"], "epochs": config.train.max_epochs,
        "seed": config.train.seed, "target": get_dataset(ctx.dataset).target, "patience": config.train.patience,
    }
    try:
        # A token per attempt: a retry overwrites this worker's entry, and the others see that it restarted.
        token = f"{attempt}-{uuid.uuid4().hex[:12]}"
        with system_metrics(prepared["mlflow_run_id"], node_id=f"train_worker_{index}"):
            return run_worker(folder, index, config.train.workers, train_kwargs, token=token)
    except Exception as exc:
        error = {"type": type(exc).__name__, "message": f"train_worker {index}: {exc}"}
        records.write_stage(ctx, "train", {"ok": False, "error": error, "traceback": traceback.format_exc(limit=5)})
        raise


def evaluate(ctx: RunContext, prepared: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    from ml_tasks.release.evaluation import evaluate as run_evaluation
    from ml_tasks.release.registry import comparison_baseline

    def work() -> dict[str, Any]:
        name = get_dataset(ctx.dataset).registered_model
        baseline, champion_now = comparison_baseline(name, prepared["mlflow_run_id"])
        result = run_evaluation(ctx, trained["model_uri"], baseline, prepared["mlflow_run_id"])
        # The promotion's compare-and-set expects the alias where it stands now.
        return {**result.to_dict(), "expected_champion": champion_now}

    return run_stage(ctx, "evaluate", work)


def gate(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.release.gate import decide

    def work() -> dict[str, Any]:
        decision = decide(
            config.gate, evaluated["candidate"], evaluated["champion"],
            evaluated["champion_version"], evaluated.get("champion_error"),
            intervals=evaluated.get("intervals"), slices=evaluated.get("slices"), behaviour=evaluated.get("behaviour"),
        )
        record = {**decision.to_dict(),
                  "thresholds": {"absolute": config.gate.absolute, "change": config.gate.change,
                                 "slice_absolute": config.gate.slice_absolute,
                                 "require_confidence": config.gate.require_confidence},
                  "candidate": evaluated["candidate"], "champion": evaluated["champion"],
                  "intervals": evaluated.get("intervals"), "behaviour": evaluated.get("behaviour"),
                  "slices": evaluated.get("slices"), "robustness": evaluated.get("robustness"),
                  "expected_champion": evaluated["expected_champion"]}
        blessing_path = write_json(ctx.report_dir / BLESSING_FILE, record)
        tracking.configure()
        with mlflow.start_run(run_id=prepared["mlflow_run_id"]):
            mlflow.set_tags({TAG_GATE_DECISION: decision.decision, TAG_GATE_REASONS: "; ".join(decision.reasons)[:4000]})
            mlflow.log_artifact(str(blessing_path), artifact_path=MLFLOW_REPORT_DIR)
        log.info("gate for %s: %s (%s)", ctx.tracking_key, decision.decision, "; ".join(decision.reasons))
        return {**record, "blessing_uri": blessing_path.as_uri()}

    return run_stage(ctx, "gate", work)


def register_version(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], validated: dict[str, Any],
                     trained: dict[str, Any], gated: dict[str, Any]) -> dict[str, Any]:
    """Register the candidate once, check it can serve (infra validation), write its model card, make it challenger.

    `champion` is not moved here: `promote` does that, after a reviewer's approval when the run asks for one.
    """
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.errors import InfraValidationError
    from ml_tasks.release import model_card, registry
    from ml_tasks.release.infra_validation import validate_version

    def work() -> dict[str, Any]:
        name = get_dataset(ctx.dataset).registered_model
        tags = {
            TAG_RUN_KEY: ctx.tracking_key,
            TAG_DATASET: ctx.dataset,
            TAG_FINGERPRINT: prepared["fingerprint"],
            TAG_VALIDATION: f"passed {validated['evaluated']} expectations of {validated['suite']}",
            TAG_AIRFLOW_DAG_ID: ctx.dag_id,
            TAG_AIRFLOW_RUN_ID: ctx.run_id,
            TAG_GATE_DECISION: gated["decision"],
            TAG_GATE_REASONS: "; ".join(gated["reasons"]),
        }
        run_id = prepared["mlflow_run_id"]
        version = registry.register_candidate(name, trained["model_uri"], run_id, tags)
        infra = validate_version(ctx, name, version)
        client = tracking.client()
        client.set_model_version_tag(name, version, TAG_INFRA_VALIDATION, infra.summary[:4000])
        infra_path = write_json(ctx.report_dir / INFRA_VALIDATION_FILE, infra.to_dict())
        stages = {stage: records.read_stage(ctx, stage) or {} for stage in records.STAGES}
        stages["infra"] = {**infra.to_dict(), "summary": infra.summary}
        card = model_card.render(ctx, name, version, run_id, stages)
        card_path = ctx.report_dir / MODEL_CARD_FILE
        card_path.write_text(card)
        registry.set_description(name, version, card)
        tracking.configure()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(card_path), artifact_path=MLFLOW_REPORT_DIR)
            mlflow.log_artifact(str(infra_path), artifact_path=MLFLOW_REPORT_DIR)
        if not infra.passed:
            raise InfraValidationError(f"{name} v{version} cannot serve: {infra.summary}")
        registry.set_challenger(name, version, f"candidate of {ctx.tracking_key}")
        return {"registered_model": name, "version": version, "infra_validation": infra.summary,
                "blessed": bool(gated["blessed"]), "expected_champion": gated["expected_champion"],
                "needs_review": bool(gated["blessed"] and config.require_approval),
                "model_card_uri": card_path.as_uri()}

    return run_stage(ctx, "register", work)


def promote(ctx: RunContext, registered: dict[str, Any], review: str | None = None) -> dict[str, Any]:
    """Move `champion` to the registered version by compare-and-set, when the gate blessed it (and a reviewer approved)."""
    from ml_tasks import tracking
    from ml_tasks.release import registry

    def work() -> dict[str, Any]:
        name, version = registered["registered_model"], registered["version"]
        champion = registry.current_champion(name)
        if not registered["blessed"]:
            result = registry.PromotionResult(name, version, champion, champion, promoted=False)
            return {**result.to_dict(), "reason": "the gate did not bless this version"}
        if registered["needs_review"]:
            tracking.client().set_model_version_tag(name, version, TAG_REVIEW, review or "no answer")
            if review != "Approve":
                result = registry.PromotionResult(name, version, champion, champion, promoted=False)
                return {**result.to_dict(), "reason": f"reviewer's answer: {review or 'none'}"}
        promotion = registry.promote(name, version, registered["expected_champion"], f"gate passed for {ctx.tracking_key}"
                                     + (" and a reviewer approved" if registered["needs_review"] else ""))
        return {**promotion.to_dict(), "reason": "blessed" + (" and approved" if registered["needs_review"] else "")}

    return run_stage(ctx, "promote", work)


def _pick(record: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    return {k: record[k] for k in keys} if record else None


def report(ctx: RunContext, review: str | None = None) -> dict[str, Any]:
    """Assemble `run_report.json` from the stage records and log it to the MLflow run."""
    stages = {stage: records.read_stage(ctx, stage) for stage in records.STAGES}
    stopped_at = next((s for s, r in stages.items() if r is None or not r.get("ok")), None)
    if stopped_at == "promote" and stages["promote"] is None and review == "Reject":
        stopped_at = None  # a reviewer said no: the run did its work, and champion stays where it was
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
                      "data_docs": val_r["data_docs_uri"]}
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
               {"promoted": False, "reason": "rejected by the reviewer" if review == "Reject" else "not promoted"}),
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
