"""The tasks of `nightly_retrain`, one function each, named as the task and called as `(ctx, config, *inputs)`.

Glue only: each function records its stage (result or error) in the run's
report folder around one call into the stage module that does the work, so the
run report tells how far a run got and why it stopped, and a rerun clears the
records after it. `inputs` are the upstream tasks' JSON results (XCom), or what
Airflow alone knows (the drop's date, storage Connections, a reviewer's answer).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ml_tasks import records
from ml_tasks.config import RunConfig, RunContext
from ml_tasks.datasets import get_dataset
from ml_tasks.settings import get_settings
from ml_tasks.storage.options import StorageOptions

if TYPE_CHECKING:
    from ml_tasks.data.spark.session import SparkOptions

log = logging.getLogger(__name__)


def record_failure(ctx: RunContext, stage: str, exc: BaseException, where: str = "") -> None:
    """Write `stage`'s record for `exc` (called in the `except` that caught it, for its traceback)."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": f"{where}: {exc}" if where else str(exc)}
    if getattr(exc, "failures", None):
        error["failures"] = exc.failures  # type: ignore[attr-defined]
    records.write_stage(ctx, stage, {"ok": False, "error": error, "traceback": traceback.format_exc(limit=5)})


def run_stage(ctx: RunContext, stage: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage: clear later records, record the result or the error, re-raise errors."""
    records.clear_stages_after(ctx, stage)
    try:
        result = work()
    except Exception as exc:
        record_failure(ctx, stage, exc)
        raise
    records.write_stage(ctx, stage, {"ok": True, **result})
    return result


def default_source(ctx: RunContext, drop_date: str) -> str:
    """The declaration's source template for the drop's date, else the landing folder of that date."""
    from ml_tasks.config import confined_uri
    from ml_tasks.datasets import get_dataset

    template = get_dataset(ctx.dataset).source_template
    if template:
        rendered = template.format(ds=drop_date, ds_nodash=drop_date.replace("-", ""))
        return confined_uri(rendered, f"the source template of {ctx.dataset}")
    return (get_settings().landing / ctx.dataset / drop_date).as_uri()


def sync(ctx: RunContext, config: RunConfig, drop_date: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """Mirror the drop (`source_uri`, else the landing folder of `drop_date`) into the run's staging area."""
    from ml_tasks.config import confined_uri
    from ml_tasks.storage import sync_drop

    def work() -> dict[str, Any]:
        source = confined_uri(config.source_uri, "source_uri") if config.source_uri else default_source(ctx, drop_date)
        return sync_drop(source, ctx.staging_dir, options)

    return run_stage(ctx, "sync", work)


def engine(ctx: RunContext, synced: dict[str, Any]) -> str:
    """The engine of this run's data stages: the declaration's, or by the drop's size (`ml_tasks.data.engine`)."""
    from ml_tasks.data.engine import choose_engine
    from ml_tasks.storage import local_path

    return choose_engine(get_dataset(ctx.dataset), local_path(synced["staging_uri"])).engine


def validate(ctx: RunContext, config: RunConfig, synced: dict[str, Any],
             spark: SparkOptions | None = None) -> dict[str, Any]:
    from ml_tasks.data.validation import validate_drop

    return run_stage(ctx, "validate", lambda: validate_drop(
        synced["staging_uri"], ctx.dataset, ctx.run_key, engine=engine(ctx, synced), spark=spark).to_dict())


def drift(ctx: RunContext, config: RunConfig, synced: dict[str, Any], spark: SparkOptions | None = None) -> dict[str, Any]:
    from ml_tasks.data import drift as data_drift

    def measure_on_spark(folder: Any, reference: dict[str, Any], spec: Any, thresholds: Any) -> Any:
        from ml_tasks.data.spark.drift import compare_drop
        from ml_tasks.data.spark.session import application_name, spark_session

        with spark_session(spark, app_name=application_name("drift", ctx.dataset)) as session:
            return compare_drop(session, folder, reference, spec, thresholds)

    on_spark = engine(ctx, synced) == "spark"
    return run_stage(ctx, "drift", lambda: data_drift.drift(ctx, config, synced,
                                                            measure=measure_on_spark if on_spark else None))


def prepare(ctx: RunContext, config: RunConfig, synced: dict[str, Any], spark: SparkOptions | None = None) -> dict[str, Any]:
    from ml_tasks import tracking
    from ml_tasks.data import preparation

    def work() -> dict[str, Any]:
        if engine(ctx, synced) == "spark":
            from ml_tasks.data.spark import preparation as spark_preparation
            from ml_tasks.data.spark.session import application_name, spark_session

            with spark_session(spark, app_name=application_name("prepare", ctx.dataset)) as session:
                prepared = spark_preparation.prepare(ctx, synced["staging_uri"], session,
                                                     augment=config.augment or None, cv_folds=config.cv_folds)
        else:
            prepared = preparation.prepare(ctx, synced["staging_uri"], augment=config.augment or None,
                                           cv_folds=config.cv_folds)
        run_id = tracking.ensure_parent_run(ctx)
        preparation.log_to_mlflow(run_id, ctx, prepared)
        return {**prepared.to_dict(), "mlflow_run_id": run_id}

    return run_stage(ctx, "prepare", work)


def tune_plan(ctx: RunContext, config: RunConfig) -> list[int]:
    """Create the run's Optuna study; the `tune_slot` indices to map over. Its failure is the tune stage's."""
    from ml_tasks.training import tuning

    try:
        records.clear_stages_after(ctx, "tune")
        return list(tuning.tune_plan(ctx, config.tune).slots)
    except Exception as exc:
        record_failure(ctx, "tune", exc, "tuning plan")
        raise


def tune_slot(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], slot: int) -> dict[str, Any]:
    """One of the mapped slots that run trials of the shared study; its failure is the tune stage's."""
    from ml_tasks.datasets import get_dataset
    from ml_tasks.training import tuning

    n_slots = tuning.slot_count(config.tune, get_dataset(ctx.dataset).task)
    try:
        return tuning.tune_slot(ctx, config.tune, prepared["mlflow_run_id"], slot, n_slots).to_dict()
    except Exception as exc:
        record_failure(ctx, "tune", exc, f"tuning slot {slot}")
        raise


def tune(ctx: RunContext, config: RunConfig, prepared: dict[str, Any]) -> dict[str, Any]:
    """The best trial of the study the slots filled, and its plots: the tune record train reads."""
    from ml_tasks.training import tuning

    return run_stage(ctx, "tune", lambda: tuning.tune_summary(ctx, config.tune, prepared["mlflow_run_id"]).to_dict())


def train_plan(ctx: RunContext, config: RunConfig) -> list[int]:
    """The `train_worker` indices to map over: none on one host (the mapped task is skipped), else 0..N-1."""
    workers = config.train.workers
    return list(range(workers)) if workers > 1 else []


def train_worker(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], tuned: dict[str, Any], index: int,
                 attempt: str = "") -> dict[str, Any]:
    """One host of the multi-worker cluster (`ml_tasks.training.multiworker.run_worker`); a failure is the train stage's."""
    import uuid

    from ml_tasks.constants import MULTIWORKER_DIR, TRAIN_FILE, VALIDATION_SPLIT_FILE
    from ml_tasks.training.multiworker import run_worker
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
        record_failure(ctx, "train", exc, f"train_worker {index}")
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
    return run_stage(ctx, "train", lambda: run_isolated("ml_tasks.training.multiworker:collect_in_process", {
        "ctx": ctx.to_dict(), "config": asdict(config.train), "params": tuned["best_params"],
        "parent_run_id": prepared["mlflow_run_id"]}))


def evaluate(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
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
    from ml_tasks.release import gate as release_gate

    return run_stage(ctx, "gate", lambda: release_gate.gate(ctx, config, prepared, evaluated))


def register(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], validated: dict[str, Any],
             trained: dict[str, Any], gated: dict[str, Any]) -> dict[str, Any]:
    from ml_tasks.release import registry

    return run_stage(ctx, "register", lambda: registry.register(ctx, config, prepared, validated, trained, gated))


def review_route(ctx: RunContext, config: RunConfig, registered: dict[str, Any]) -> str:
    """The task after register: `approve_promotion` when a blessed version waits for a reviewer, else
    `no_review_needed` (straight to promote)."""
    return "approve_promotion" if registered["needs_review"] else "no_review_needed"


def promote(ctx: RunContext, config: RunConfig, registered: dict[str, Any], review: str | None = None) -> dict[str, Any]:
    """`review`: the reviewer's answer ("Approve" or "Reject") when one was asked, else None."""
    from ml_tasks.release import registry

    return run_stage(ctx, "promote", lambda: registry.promote_candidate(ctx, registered, review))


def report(ctx: RunContext, config: RunConfig, review: str | None = None) -> dict[str, Any]:
    """The run report, whatever happened (not a stage: it records nothing of its own)."""
    return records.report(ctx, review)
