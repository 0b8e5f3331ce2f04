"""Hyperparameter search with Optuna, as N trial slots sharing one stored study; every trial a nested MLflow run.

The study is stored (SQLite on the embedded default, any Optuna RDB URL in
production) under the run's key, so a retried task resumes it and only runs
the trials still missing from the budget. The work splits into three steps so
that Airflow can run the middle one on several workers at once:

* `tune_plan` creates the study once and seeds it with the champion's
  parameters when the champion is of the same family (warm start);
* `tune_slot` runs slot k's share of the budget (in a fresh process: it may
  import TensorFlow). Each trial is tagged with its slot, so a retried slot
  counts only its own finished trials; a killed slot's running trial is failed
  (Optuna heartbeats, or the slot's retry) and its parameters enqueued again,
  so no trial is lost or run twice towards the budget;
* `tune_summary` picks the best trial and logs the study's plots.

Samplers: grid (the family's declared grid), random, TPE. Pruners (median,
Hyperband, none) stop bad trials from their per-step validation score (Keras
epochs, tree-ensemble growth steps, cross-validation folds).

The objective is the data set's primary metric for its task kind
(`DatasetSpec.primary_metric`: ROC AUC for a binary target, macro F1 for
multiclass, RMSE for regression by default) on the validation split, and the
study minimises the metrics of `ml_tasks.constants.LOWER_IS_BETTER`. When the
run prepared cross-validation folds (`cv_folds` > 1: preparation wrote
`folds.parquet`), a scikit-learn trial's score is the mean over the folds of
the training split instead (the Keras MLP keeps the validation split: see
`ml_tasks.training.trials.run_trial`).

`model_family: auto` searches every family of the task kind in the one study:
the family is a categorical parameter and each family's parameters are
conditional on it ("<family>__<name>", define-by-run); grid search enqueues
the union of the families' grids. The result's `best_params` carry the chosen
family (`families.FAMILY_PARAM`) and its parameters by their plain names, and
`TuneResult.family` names it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ml_tasks.config import RunContext, TuneConfig
from ml_tasks.constants import TRAIN_FILE, VALIDATION_SPLIT_FILE
from ml_tasks.isolation import run_isolated
from ml_tasks.settings import get_settings
from ml_tasks.training.families import AUTO, FAMILY_PARAM, KERAS_MLP
from ml_tasks.training.scoring import Objective

log = logging.getLogger(__name__)

# The logged name of a binary ROC AUC objective; other objectives are named "val_<metric>" (`objective_name`).
OBJECTIVE = "val_auc"
# Optuna RDB storage: a running trial records a heartbeat; one silent for GRACE_S is failed (and retried).
HEARTBEAT_S = 10
GRACE_S = 40
RETRIES_PER_TRIAL = 2
# Seconds a SQLite connection waits for another process's write lock instead of failing "database is locked".
SQLITE_TIMEOUT_S = 120
SLOT_ATTR = "slot"
STEPS_ATTR = "steps"
SLOT_SEED_STRIDE = 1000
HISTORY_PLOT = "tuning_history.png"
IMPORTANCE_PLOT = "tuning_importances.png"


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    objective: str
    trials_complete: int
    trials_pruned: int
    study_name: str
    family: str = "keras_mlp"
    sampler: str = "tpe"
    pruner: str = "median"
    trials_failed: int = 0
    # Training steps (epochs, ensemble growth steps) all trials ran: the study's compute.
    steps_run: int = 0
    warm_start: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TunePlan:
    study_name: str
    budget: int
    slots: list[int]
    warm_start: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SlotResult:
    slot: int
    n_slots: int
    share: int
    trials_run: int
    requeued: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- study, sampler, pruner


def study_storage(url: str | None = None) -> Any:
    """Optuna RDB storage with heartbeats (a dead worker's trial is failed and retried) and SQLite lock waits."""
    import optuna

    url = url or get_settings().optuna_storage
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        from ml_tasks.training.study_storage import ClaimingRDBStorage

        return ClaimingRDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES_PER_TRIAL),
        )


def objective_for(dataset: str) -> Objective:
    """What the data set's trials are scored by: its primary metric for its task kind."""
    from ml_tasks.datasets import get_dataset

    return Objective.for_spec(get_dataset(dataset))


def objective_name(objective: Objective) -> str:
    """The trial metric's logged name: "val_auc" for binary ROC AUC (as before task kinds), else "val_<metric>"."""
    return OBJECTIVE if (objective.task, objective.metric) == ("binary", "roc_auc") else f"val_{objective.metric}"


def make_sampler(config: TuneConfig, slot: int = 0) -> Any:
    """The configured sampler; each slot gets its own seed, so parallel slots do not propose the same points.

    Grid search over AUTO cannot be one GridSampler (the families' grids are not one product): `tune_plan`
    enqueues every grid point and the slots run them; the random sampler behind them is never asked.
    """
    import optuna

    from ml_tasks.training.families import grid_space

    seed = config.seed + SLOT_SEED_STRIDE * slot
    if config.sampler == "grid" and config.family == AUTO:
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(config.family), seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, config.trials), constant_liar=config.workers > 1)


def make_pruner(config: TuneConfig) -> Any:
    import optuna

    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs, reduction_factor=3)
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def budget(config: TuneConfig, task: str = "binary") -> int:
    """Trials the study runs: the configured number, at most the whole grid for grid search (AUTO: the union of
    the `task` families' grids)."""
    from ml_tasks.training.families import grid_size

    return min(config.trials, grid_size(config.family, task)) if config.sampler == "grid" else config.trials


def slot_count(config: TuneConfig, task: str = "binary") -> int:
    return max(1, min(config.workers, budget(config, task)))


def slot_share(total: int, n_slots: int, slot: int) -> int:
    """Slot k's part of `total` trials: the parts differ by at most one and add up to `total`."""
    return total // n_slots + (1 if slot < total % n_slots else 0)


def load_study(study_name: str, config: TuneConfig, slot: int = 0, storage: Any = None,
               objective: Objective | None = None) -> Any:
    """The run's study, created on first use; it minimises an objective of LOWER_IS_BETTER, else maximises."""
    import optuna

    return optuna.create_study(
        study_name=study_name, storage=storage or study_storage(), direction=(objective or Objective()).direction,
        sampler=make_sampler(config, slot), pruner=make_pruner(config), load_if_exists=True,
    )


# ---------------------------------------------------------------- warm start


def champion_params(dataset: str, family: str) -> tuple[dict[str, Any] | None, str]:
    """The current champion's training parameters if it is of `family`: (params, description or why not).

    For AUTO, a champion of any family of the data set's task kind qualifies: its parameters come named as
    an AUTO study names them (`families.study_params`)."""
    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release import registry
    from ml_tasks.training.families import coerce_params

    name = get_dataset(dataset).registered_model
    version = registry.current_champion(name)
    if version is None:
        return None, f"{name} has no champion"
    client = tracking.client()
    run = client.get_run(str(client.get_model_version(name, version).run_id))
    logged = {k.removeprefix("train."): v for k, v in run.data.params.items() if k.startswith("train.")}
    # Versions trained before families existed were all Keras MLPs.
    champion_family = logged.get("family") or (KERAS_MLP if "n_layers" in logged else "")
    if family == AUTO:
        from ml_tasks.training.families import families_for, study_params

        if champion_family not in families_for(get_dataset(dataset).task):
            return None, f"champion v{version} is a {champion_family or 'unknown'} model, not one of this task's families"
        found = coerce_params(champion_family, logged)
        if found is None:
            return None, f"champion v{version}'s parameters are not all inside today's {champion_family} search space"
        return study_params(champion_family, found), f"champion v{version}"
    if champion_family != family:
        return None, f"champion v{version} is a {champion_family or 'unknown'} model, not {family}"
    params = coerce_params(family, logged)
    if params is None:
        return None, f"champion v{version}'s parameters are not all inside today's {family} search space"
    return params, f"champion v{version}"


def warm_start(study: Any, dataset: str, config: TuneConfig) -> str:
    """Enqueue the champion's parameters as the first trial of a new study (not for grid search)."""
    if config.sampler == "grid":
        return ""
    if study.get_trials(deepcopy=False):
        return ""
    params, why = champion_params(dataset, config.family)
    if params is None:
        log.info("no warm start: %s", why)
        return ""
    study.enqueue_trial(params, user_attrs={"warm_start": why}, skip_if_exists=True)
    log.info("warm start: enqueued %s's parameters %s", why, params)
    return why


def enqueue_auto_grid(study: Any, config: TuneConfig, task: str) -> int:
    """Grid search over AUTO: enqueue the union of the task families' grids once (a retried plan adds none)."""
    from ml_tasks.training.families import grid_points

    if study.get_trials(deepcopy=False):
        return 0
    points = grid_points(AUTO, task)[:budget(config, task)]
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    return len(points)


def enqueue_family_defaults(study: Any, config: TuneConfig, task: str) -> int:
    """AUTO with TPE or random: the first trials are the task's families at their defaults (strongest first,
    within the budget), so the sampler searches from there. Once per study: a retried plan adds none."""
    from ml_tasks.training.families import default_points

    if any(t.user_attrs.get("family_default") for t in study.get_trials(deepcopy=False)):
        return 0
    points = default_points(task)[:budget(config, task)]
    for point in points:
        study.enqueue_trial(point, user_attrs={"family_default": True}, skip_if_exists=True)
    log.info("auto: the first %d trials are the families at their defaults: %s", len(points),
             [p["family"] for p in points])
    return len(points)


def tune_plan(ctx: RunContext, config: TuneConfig) -> TunePlan:
    """Create (or find) the run's study, warm-start it once, and name the trial slots."""
    from ml_tasks.datasets import get_dataset
    from ml_tasks.training.families import check_family_for_task

    spec = get_dataset(ctx.dataset)
    check_family_for_task(config.family, spec.task)
    study = load_study(ctx.tracking_key, config, objective=Objective.for_spec(spec))
    if config.sampler == "grid" and config.family == AUTO:
        enqueue_auto_grid(study, config, spec.task)
    seeded = warm_start(study, ctx.dataset, config)
    if config.sampler != "grid" and config.family == AUTO:
        enqueue_family_defaults(study, config, spec.task)
    n_slots = slot_count(config, spec.task)
    return TunePlan(study_name=ctx.tracking_key, budget=budget(config, spec.task), slots=list(range(n_slots)),
                    warm_start=seeded)


# ---------------------------------------------------------------- slots


def tune_slot(ctx: RunContext, config: TuneConfig, parent_run_id: str, slot: int, n_slots: int,
              fresh_process: bool | None = None) -> SlotResult:
    """Run slot `slot`'s share of the study's trials: in a fresh process for Keras (TensorFlow), else here.

    `fresh_process=True` forces an interpreter of its own (slots run side by side in one caller's threads).
    """
    if not 0 <= slot < n_slots:
        from ml_tasks.errors import ConfigError

        raise ConfigError(f"slot {slot} is not one of {n_slots} slots")
    result = run_isolated(
        "ml_tasks.training.tuning:tune_slot_in_process",
        {"ctx": ctx.to_dict(), "config": asdict(config), "parent_run_id": parent_run_id, "slot": slot, "n_slots": n_slots},
        fresh_process=config.family in (KERAS_MLP, AUTO) if fresh_process is None else fresh_process,
    )
    return SlotResult(**result)


def _requeue_own_dead_trials(study: Any, slot: int) -> int:
    """Fail this slot's trials left RUNNING by a killed predecessor and enqueue their parameters again.

    A slot runs its trials one at a time, so at its start none of its own can be alive; waiting out the
    heartbeat grace period is only needed for other slots' trials (Optuna does that on every trial).
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    requeued = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(SLOT_ATTR) != slot:
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker failed it first (heartbeat), and retried it
        study.enqueue_trial(trial.params, user_attrs={"retried_from": trial.number})
        log.warning("slot %s: trial %s was left running by a killed process; failed it and enqueued it again",
                    slot, trial.number)
        requeued += 1
    return requeued


def _own_finished(study: Any, slot: int) -> int:
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=finished) if t.user_attrs.get(SLOT_ATTR) == slot)


def load_tuning_data(ctx: RunContext, config: TuneConfig) -> tuple[Any, Any, Any, Any]:
    return load_tuning_data_and_folds(ctx, config)[0]


def load_tuning_data_and_folds(ctx: RunContext, config: TuneConfig) -> tuple[tuple[Any, Any, Any, Any],
                                                                               list[tuple[Any, Any]] | None]:
    """The (subsampled) training and the validation split, and the cross-validation folds of the training rows
    kept when the run prepared some (`folds.parquet`, cv_folds > 1), else None."""
    from ml_tasks.datasets import get_dataset

    spec = get_dataset(ctx.dataset)
    folder = ctx.prepared_dir
    x_train, y_train, rows = _load_split_rows(str(folder / TRAIN_FILE), spec.target, config.max_train_rows, config.seed)
    x_val, y_val = _load_split(str(folder / VALIDATION_SPLIT_FILE), spec.target)
    return (x_train, y_train, x_val, y_val), load_folds(folder, rows)


def load_folds(folder: Path, rows: Any = None) -> list[tuple[Any, Any]] | None:
    """(train, held-out) positions per fold, from preparation's `folds.parquet`, restricted to the training rows
    `rows` (positions into train.parquet, in the order the arrays hold them; None: all). Augmented rows train in
    every fold but their source row's and are never held out. None when there is no folds file or one fold."""
    import numpy as np
    import pyarrow.parquet as pq

    from ml_tasks.data.preparation import AUGMENTED_COLUMN, FOLD_COLUMN, FOLDS_FILE

    path = Path(folder) / FOLDS_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=[FOLD_COLUMN, AUGMENTED_COLUMN])
    fold = table.column(FOLD_COLUMN).to_numpy()
    augmented = table.column(AUGMENTED_COLUMN).to_numpy().astype(bool)
    if rows is not None:
        fold, augmented = fold[rows], augmented[rows]
    ids = sorted(int(k) for k in np.unique(fold) if k >= 0)
    if len(ids) < 2:
        return None
    return [(np.flatnonzero(fold != k), np.flatnonzero((fold == k) & ~augmented)) for k in ids]


def _load_split(path: str, target: str, max_rows: int | None = None, seed: int = 0) -> tuple[Any, Any]:
    """A prepared split as float32 features and labels, optionally subsampled (pandas' seeded sample)."""
    x, y, _ = _load_split_rows(path, target, max_rows, seed)
    return x, y


def _load_split_rows(path: str, target: str, max_rows: int | None = None, seed: int = 0) -> tuple[Any, Any, Any]:
    """`_load_split` and the positions (into the file) of the rows it kept, in their order (None: all, in order).

    Labels are float32 here (codes for classification, original units for regression); `trials.run_trial`
    casts them to what each family takes."""
    import pandas as pd

    frame = pd.read_parquet(path)
    rows = None
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.reset_index(drop=True).sample(n=max_rows, random_state=seed)
        rows = frame.index.to_numpy()
    y = frame.pop(target).to_numpy(dtype="float32")
    return frame.to_numpy(dtype="float32"), y, rows


def tune_slot_in_process(ctx: dict[str, str], config: dict[str, Any], parent_run_id: str, slot: int,
                         n_slots: int) -> dict[str, Any]:
    import mlflow
    import optuna

    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset
    from ml_tasks.training import families
    from ml_tasks.training.trials import run_trial

    run_ctx = RunContext.from_dict(ctx)
    tune_config = TuneConfig(**config)
    spec = get_dataset(run_ctx.dataset)
    scored_by = Objective.for_spec(spec)
    metric_name = objective_name(scored_by)
    candidates = families.candidate_families(tune_config.family, spec.task)
    if families.KERAS_MLP in candidates:
        from ml_tasks.training.keras_mlp import configure_accelerators

        configure_accelerators()
    data, folds = load_tuning_data_and_folds(run_ctx, tune_config)
    experiment_id = tracking.configure()
    client = mlflow.MlflowClient()
    study = load_study(run_ctx.tracking_key, tune_config, slot, objective=scored_by)
    requeued = _requeue_own_dead_trials(study, slot)
    share = slot_share(budget(tune_config, spec.task), n_slots, slot)
    if folds:
        log.info("study %s: scikit-learn trials score the mean %s over %s folds of the training split",
                 run_ctx.tracking_key, scored_by.metric, len(folds))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(SLOT_ATTR, slot)
        suggested = families.suggest(trial, tune_config.family, spec.task)
        family = str(suggested.pop(FAMILY_PARAM, tune_config.family))
        params = suggested
        run = client.create_run(
            experiment_id, run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": parent_run_id, "optuna.trial": str(trial.number), "optuna.slot": str(slot),
                  "ratchet.family": family},
        )
        run_id = run.info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
        steps = 0

        def report(step: int, value: float, last: bool) -> None:
            nonlocal steps
            steps = step + 1
            client.log_metric(run_id, metric_name, value, step=step)
            trial.report(value, step)
            if not last and trial.should_prune():  # after the last step there is no compute left to save
                raise optuna.TrialPruned(f"pruned after step {step}: {metric_name} {value:.4f}")

        status, state = "FAILED", "FAIL"
        try:
            score = run_trial(family, params, data, tune_config.epochs, tune_config.seed + trial.number, report,
                              objective=scored_by, folds=folds)
            status, state = "FINISHED", "COMPLETE"
            return score
        except optuna.TrialPruned:
            status, state = "KILLED", "PRUNED"
            raise
        finally:
            trial.set_user_attr(STEPS_ATTR, steps)
            client.set_tag(run_id, "optuna.state", state)
            client.set_terminated(run_id, status=status)

    done = _own_finished(study, slot)
    remaining = max(0, share - done)
    log.info("study %s slot %s/%s: %s of its %s trials done, running %s more", run_ctx.tracking_key, slot, n_slots,
             done, share, remaining)
    ran = 0
    while _own_finished(study, slot) < share:
        study.optimize(objective, n_trials=1, gc_after_trial=True)
        ran += 1
        if ran > share + RETRIES_PER_TRIAL * share:
            raise optuna.exceptions.OptunaError(f"slot {slot} ran {ran} trials without finishing its {share}")
    return SlotResult(slot=slot, n_slots=n_slots, share=share, trials_run=ran, requeued=requeued).to_dict()


# ---------------------------------------------------------------- summary


def _best(study: Any) -> tuple[Any, float]:
    """The best complete trial; failing that (every trial pruned), the pruned trial with the best report.

    Best by the study's direction (lowest for a minimised objective)."""
    import optuna

    sign = -1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = max(complete, key=lambda t: sign * t.value)
        return best, float(best.value)
    pruned = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)) if t.intermediate_values]
    if not pruned:
        from ml_tasks.errors import RatchetError

        raise RatchetError(f"study {study.study_name} has no finished trial to pick parameters from")
    def top(t: Any) -> float:
        return max(sign * v for v in t.intermediate_values.values())

    best = max(pruned, key=top)
    return best, sign * top(best)


def _plots(study: Any, folder: Path) -> list[Path]:
    """Optimization history and parameter importances as PNGs (matplotlib: plotly is not installed)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, plot in ((HISTORY_PLOT, optuna_plots.plot_optimization_history),
                       (IMPORTANCE_PLOT, optuna_plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure: Any = axes.get_figure()
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=90)
            plt.close(figure)
            written.append(folder / name)
        except Exception as exc:  # importances need two or more complete trials with varying parameters
            log.info("no %s for study %s: %s", name, study.study_name, exc)
    return written


def tune_summary(ctx: RunContext, config: TuneConfig, parent_run_id: str, plan: TunePlan | None = None) -> TuneResult:
    """Pick the best trial of the run's study; log it, the counts and the study's plots to the parent run."""
    import json
    import tempfile

    import mlflow
    import optuna

    from ml_tasks import tracking
    from ml_tasks.training.families import plain_params

    study = optuna.load_study(study_name=ctx.tracking_key, storage=study_storage())
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(1 for t in trials if t.state == state) for state in optuna.trial.TrialState}
    best, best_value = _best(study)
    metric_name = objective_name(objective_for(ctx.dataset))
    best_params = plain_params(dict(best.params))
    family = str(best_params.get(FAMILY_PARAM, config.family))
    steps_run = sum(int(t.user_attrs.get(STEPS_ATTR, 0)) for t in trials)
    seeded = plan.warm_start if plan else next(
        (str(t.user_attrs["warm_start"]) for t in trials if "warm_start" in t.user_attrs), "")
    result = TuneResult(
        best_params=best_params, best_value=best_value, objective=metric_name,
        trials_complete=count[optuna.trial.TrialState.COMPLETE], trials_pruned=count[optuna.trial.TrialState.PRUNED],
        study_name=ctx.tracking_key, family=family, sampler=config.sampler, pruner=config.pruner,
        trials_failed=count[optuna.trial.TrialState.FAIL], steps_run=steps_run, warm_start=seeded,
    )
    tracking.configure()
    with mlflow.start_run(run_id=parent_run_id), tempfile.TemporaryDirectory() as tmp:
        # Tags, not params: a rerun of the night with other Params may pick other values.
        mlflow.set_tags({"tuning.family": family, "tuning.family_config": config.family, "tuning.objective": metric_name,
                         "tuning.sampler": config.sampler, "tuning.pruner": config.pruner,
                         "tuning.best_params": json.dumps(result.best_params, sort_keys=True)[:4000],
                         "tuning.warm_start": seeded or "none"})
        mlflow.log_metrics({f"tuning.best_{metric_name}": best_value, "tuning.trials_complete": result.trials_complete,
                            "tuning.trials_pruned": result.trials_pruned, "tuning.trials_failed": result.trials_failed,
                            "tuning.steps_run": steps_run})
        for path in _plots(study, Path(tmp)):
            mlflow.log_artifact(str(path), artifact_path="plots")
    log.info("study %s: best %s %.4f with %s (%s complete, %s pruned, %s failed, %s steps)", ctx.tracking_key, metric_name,
             best_value, result.best_params, result.trials_complete, result.trials_pruned, result.trials_failed, steps_run)
    return result


def tune(ctx: RunContext, config: TuneConfig, parent_run_id: str) -> TuneResult:
    """The whole search on this worker: plan, every slot one after another, summary."""
    plan = tune_plan(ctx, config)
    started = time.perf_counter()
    for slot in plan.slots:
        tune_slot(ctx, config, parent_run_id, slot, len(plan.slots))
    log.info("study %s: %s slot(s) ran in %.1f s", ctx.tracking_key, len(plan.slots), time.perf_counter() - started)
    return tune_summary(ctx, config, parent_run_id, plan)
