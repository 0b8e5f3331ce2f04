"""Hyperparameter search with Optuna; every trial is a nested MLflow run.

The study is stored (SQLite on the embedded default, any Optuna RDB URL in
production) under the run's key, so a retried task resumes it and only runs
the trials still missing from the budget. Bad trials are pruned from their
per-epoch validation AUC.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ml_tasks.config import RunContext, TuneConfig
from ml_tasks.constants import TRAIN_FILE, VALIDATION_SPLIT_FILE
from ml_tasks.isolation import run_isolated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    objective: str
    trials_complete: int
    trials_pruned: int
    study_name: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest_mlp_params(trial: Any) -> dict[str, Any]:
    from ml_tasks.models import MLP_SEARCH_SPACE as space

    return {
        "n_layers": trial.suggest_categorical("n_layers", space["n_layers"]),
        "units": trial.suggest_categorical("units", space["units"]),
        "dropout": trial.suggest_float("dropout", *space["dropout"]),
        "l2": trial.suggest_float("l2", *space["l2"], log=True),
        "learning_rate": trial.suggest_float("learning_rate", *space["learning_rate"], log=True),
        "batch_size": trial.suggest_categorical("batch_size", space["batch_size"]),
    }


def tune(ctx: RunContext, config: TuneConfig, parent_run_id: str) -> TuneResult:
    """Run the study in a fresh process (it imports TensorFlow)."""
    result = run_isolated(
        "ml_tasks.tuning:tune_in_process",
        {"ctx": ctx.to_dict(), "config": asdict(config), "parent_run_id": parent_run_id},
    )
    return TuneResult(**result)


def tune_in_process(ctx: dict[str, str], config: dict[str, Any], parent_run_id: str) -> dict[str, Any]:
    import keras
    import mlflow
    import optuna
    from optuna_integration import KerasPruningCallback

    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset
    from ml_tasks.models import build_mlp, configure_accelerators, load_xy
    from ml_tasks.settings import get_settings

    run_ctx = RunContext.from_dict(ctx)
    tune_config = TuneConfig(**config)
    spec = get_dataset(run_ctx.dataset)
    configure_accelerators()
    folder = run_ctx.prepared_dir
    x_train, y_train = load_xy(str(folder / TRAIN_FILE), spec.target, tune_config.max_train_rows, tune_config.seed)
    x_val, y_val = load_xy(str(folder / VALIDATION_SPLIT_FILE), spec.target)

    experiment_id = tracking.configure()
    client = mlflow.MlflowClient()
    storage = get_settings().optuna_storage
    if storage.startswith("sqlite:///"):
        from pathlib import Path

        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    sampler = (
        optuna.samplers.TPESampler(seed=tune_config.seed, n_startup_trials=min(4, tune_config.trials))
        if tune_config.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=tune_config.seed)
    )
    study = optuna.create_study(
        study_name=run_ctx.tracking_key,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        load_if_exists=True,
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))

    def objective(trial: optuna.Trial) -> float:
        params = suggest_mlp_params(trial)
        run = client.create_run(
            experiment_id, run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": parent_run_id, "optuna.trial": str(trial.number)},
        )
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
        model = build_mlp(x_train.shape[1], params, seed=tune_config.seed + trial.number)
        status = "FINISHED"
        try:
            history = model.fit(
                x_train, y_train, validation_data=(x_val, y_val), epochs=tune_config.epochs,
                batch_size=int(params["batch_size"]), verbose=0,
                callbacks=[KerasPruningCallback(trial, "val_auc")],
            )
        except optuna.TrialPruned:
            status = "KILLED"
            client.set_tag(run.info.run_id, "optuna.state", "PRUNED")
            raise
        finally:
            client.set_terminated(run.info.run_id, status=status)
            keras.backend.clear_session()
        scores = history.history["val_auc"]
        for epoch, (auc, loss) in enumerate(zip(scores, history.history["val_loss"], strict=False)):
            client.log_metric(run.info.run_id, "val_auc", float(auc), step=epoch)
            client.log_metric(run.info.run_id, "val_loss", float(loss), step=epoch)
        client.set_tag(run.info.run_id, "optuna.state", "COMPLETE")
        return float(max(scores))

    remaining = max(0, tune_config.trials - done)
    log.info("study %s: %s trials done, running %s more", run_ctx.tracking_key, done, remaining)
    if remaining:
        study.optimize(objective, n_trials=remaining, gc_after_trial=True)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best = study.best_trial
    best_value = float(best.value if best.value is not None else "nan")
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metrics({"tuning.best_val_auc": best_value, "tuning.trials_complete": len(completed),
                            "tuning.trials_pruned": len(pruned)})
    return TuneResult(
        best_params=dict(best.params), best_value=best_value, objective="val_auc",
        trials_complete=len(completed), trials_pruned=len(pruned), study_name=run_ctx.tracking_key,
    ).to_dict()
