"""Train the best configuration of the run's model family and log it as an MLflow pyfunc model.

Runs in a fresh process, for every family (Keras imports its backend; the
scikit-learn fits get the same memory isolation). The Keras MLP checkpoints
every epoch (`ml_tasks.training.checkpointing`: weights, optimizer, dropout seeds and
early stopping state), so a process killed mid-run and retried resumes where
it stopped, and stops early on the validation AUC across the kill; gradient
boosting stops early on the same split. A finished scikit-learn model file is
reused by a retry. Every family gets the same over/underfitting diagnosis from
its train and validation AUC. A rerun that finds the finished model of its run
key reuses it instead of training again.

Task kinds: the "AUC" of a fit (the `train_auc`/`val_auc` fields and curves,
names kept for the records that read them) is the data set's primary metric
(`ml_tasks.training.scoring.Objective`; ROC AUC for a binary target as
before), early stopping follows its direction, and the MLP gets its task's
head (`keras_mlp.build_mlp`). The pyfunc's artifacts include `TARGET_ARTIFACT`
(`target_record(spec)`: task kind, target and classes), so the served model
knows how to turn outputs into labels. `model_family: auto` trains the family
the tuning result names (`families.split_family`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ml_tasks.config import RunContext, TrainConfig
from ml_tasks.constants import (
    LEARNING_CURVE_FILE,
    MLFLOW_MODEL_NAME,
    MODEL_FILE,
    TEST_RAW_FILE,
    TRAIN_FILE,
    TRANSFORM_FILE,
    VALIDATION_SPLIT_FILE,
)
from ml_tasks.isolation import run_isolated

log = logging.getLogger(__name__)

OVERFIT_GAP = 0.05
# A lower-is-better metric (RMSE, log loss) overfits when validation exceeds train by more than this fraction.
OVERFIT_RATIO = 0.25
TRAINING_HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class TrainResult:
    model_uri: str
    model_path: str
    epochs_run: int
    best_epoch: int
    train_auc: float
    val_auc: float
    fit_diagnosis: str
    accelerators: dict[str, Any]
    reused: bool
    family: str = "keras_mlp"
    # The epoch a retried run resumed from (0: it started fresh).
    initial_epoch: int = 0
    # What train_auc/val_auc measure: the data set's primary metric.
    metric: str = "roc_auc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(ctx: RunContext, config: TrainConfig, params: dict[str, Any], parent_run_id: str) -> TrainResult:
    """Train in a fresh process for Keras (TensorFlow); a scikit-learn family trains in this one.

    With `model_family: auto`, `params` are the tuning result's best parameters, which name the family to train.
    """
    from ml_tasks.training.families import KERAS_MLP, split_family

    family, params = split_family(config.family, params)
    result = run_isolated(
        "ml_tasks.training.trainer:train_in_process",
        {"ctx": ctx.to_dict(), "config": {**asdict(config), "family": family}, "params": params,
         "parent_run_id": parent_run_id},
        fresh_process=family == KERAS_MLP,
    )
    return TrainResult(**result)


def diagnose_fit(train_auc: float, val_auc: float, floor: float = 0.6, metric: str = "roc_auc") -> str:
    """Over- or underfitting from the final training and validation score (ROC AUC unless `metric` says).

    Higher-is-better metrics: underfitting when both are below `floor` (not for R², whose scale has no such
    floor: below 0 there), overfitting when train exceeds validation by more than OVERFIT_GAP. Lower-is-better
    metrics (RMSE, log loss): overfitting when validation exceeds train by more than OVERFIT_RATIO of it.
    """
    from ml_tasks.constants import LOWER_IS_BETTER

    if metric != "roc_auc":
        name = metric
        if metric in LOWER_IS_BETTER:
            if val_auc - train_auc > OVERFIT_RATIO * abs(train_auc) and val_auc - train_auc > 1e-12:
                return (f"overfitting: validation {name} {val_auc:.4g} exceeds train {name} {train_auc:.4g} "
                        f"by more than {OVERFIT_RATIO:.0%}")
            return f"good fit: train {name} {train_auc:.4g}, validation {name} {val_auc:.4g}"
        low = 0.0 if metric == "r2" else floor
        if train_auc < low and val_auc < low:
            return f"underfitting: train {name} {train_auc:.3f} and validation {name} {val_auc:.3f} both below {low}"
        if train_auc - val_auc > OVERFIT_GAP:
            return (f"overfitting: train {name} {train_auc:.3f} exceeds validation {name} {val_auc:.3f} "
                    f"by more than {OVERFIT_GAP}")
        return f"good fit: train {name} {train_auc:.3f}, validation {name} {val_auc:.3f}"
    if train_auc < floor and val_auc < floor:
        return f"underfitting: train AUC {train_auc:.3f} and validation AUC {val_auc:.3f} both below {floor}"
    if train_auc - val_auc > OVERFIT_GAP:
        return f"overfitting: train AUC {train_auc:.3f} exceeds validation AUC {val_auc:.3f} by more than {OVERFIT_GAP}"
    return f"good fit: train AUC {train_auc:.3f}, validation AUC {val_auc:.3f}"


def _pip_requirements(family: str = "keras_mlp") -> list[str]:
    from importlib.metadata import version

    if family != "keras_mlp":
        return [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy", "scikit-learn", "skops")]
    return [f"{name}=={version(name)}" for name in ("mlflow", "keras", "pandas", "numpy", "scikit-learn")] + [
        f"tensorflow-cpu=={version('tensorflow-cpu')}" if _installed("tensorflow-cpu") else "tensorflow"
    ]


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def _learning_curve(history: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [key for key in history if not key.startswith("val_") and f"val_{key}" in history][:3]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for key, ax in zip(keys, axes[0], strict=True):
        ax.plot(history[key], label=f"train {key}")
        ax.plot(history[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch" if "loss" in history else "step")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass(frozen=True)
class _Fitted:
    artifacts: dict[str, str]
    history: dict[str, list[float]]
    accelerators: dict[str, Any]
    epochs_run: int
    best_epoch: int
    train_auc: float
    val_auc: float
    initial_epoch: int = 0


def keras_monitor(objective: Any) -> str:
    """The history key of the MLP's score: Keras' own AUC metric for a binary ROC AUC, else the primary metric
    `keras_mlp.validation_score_callback` adds."""
    return "auc" if (objective.task, objective.metric) == ("binary", "roc_auc") else objective.metric


def target_stats(path: Any, target: str) -> tuple[float, float]:
    """Mean and standard deviation of a prepared split's target column (the regression head's scale)."""
    import numpy as np
    import pyarrow.parquet as pq

    from ml_tasks.training.input_pipeline import _local

    y = pq.read_table(_local(path), columns=[target]).column(target).to_numpy(zero_copy_only=False).astype("float64")
    return float(np.mean(y)), float(np.std(y))


def head_arrays(path: Any, target: str, rows: int) -> tuple[Any, Any]:
    """The first `rows` rows of a prepared split as float32 arrays (the train-set score of a streamed fit)."""
    import numpy as np
    import pyarrow.parquet as pq

    from ml_tasks.training.input_pipeline import parquet_shape

    shape = parquet_shape(path, target)
    xs, ys, have = [], [], 0
    from ml_tasks.training.input_pipeline import _local

    for batch in pq.ParquetFile(_local(path)).iter_batches(batch_size=min(rows, 65_536),
                                                            columns=[*shape.features, shape.target]):
        frame = batch.to_pandas()
        ys.append(frame.pop(shape.target).to_numpy(dtype="float32"))
        xs.append(frame.to_numpy(dtype="float32"))
        have += len(frame)
        if have >= rows:
            break
    return np.concatenate(xs)[:rows], np.concatenate(ys)[:rows]


def _fit_keras(run_ctx: RunContext, train_config: TrainConfig, hyper: dict[str, Any], target: str,
               objective: Any = None) -> _Fitted:
    """Fit the MLP (checkpointed, early stopping on the validation AUC, best weights restored).

    The prepared Parquet is fed by `input_pipeline.fit_source`: in memory when
    it fits the budget, streamed otherwise. A retried run resumes from the last
    epoch checkpointed (`ml_tasks.training.checkpointing`: weights, optimizer, dropout
    seeds and the early stopping state with its best weights, committed
    together): early stopping carries on with the patience already used and the
    best epoch and weights so far, instead of counting afresh; a run that early
    stopping had already ended trains no further. The per-epoch history is appended to a CSV file beside the
    checkpoints, so the learning curve keeps the epochs before the kill.

    A binary ROC AUC run stops on Keras' own AUC metric as before; any other objective on the primary metric
    computed on the validation split each epoch (and on the first TRAIN_SCORE_ROWS training rows), in its
    direction. The regression head trains on the standardised target and outputs original units.
    """
    import csv

    import keras

    from ml_tasks.io import atomic_path
    from ml_tasks.release.pyfunc import KERAS_ARTIFACT
    from ml_tasks.training import checkpointing
    from ml_tasks.training.input_pipeline import fit_source
    from ml_tasks.training.keras_mlp import build_mlp, configure_accelerators, distribution_scope
    from ml_tasks.training.scoring import Objective
    from ml_tasks.training.sklearn_models import TRAIN_SCORE_ROWS

    model_dir = run_ctx.model_dir
    checkpoints = model_dir / "checkpoints"
    history_csv = model_dir / TRAINING_HISTORY_FILE
    initial_epoch = checkpointing.committed_epoch(checkpoints)  # epochs done = the next epoch to run
    model_dir.mkdir(parents=True, exist_ok=True)
    if initial_epoch == 0:
        history_csv.unlink(missing_ok=True)  # a fresh start: no history of an earlier, unfinished attempt
    accelerators = configure_accelerators()
    replicas = max(1, len(accelerators["gpus"]))
    folder = run_ctx.prepared_dir
    source = fit_source(str(folder / TRAIN_FILE), str(folder / VALIDATION_SPLIT_FILE), int(hyper["batch_size"]) * replicas,
                        target=target, seed=train_config.seed, first_epoch=initial_epoch)
    objective = objective or Objective()
    monitor = keras_monitor(objective)
    mean, std = target_stats(folder / TRAIN_FILE, target) if objective.task == "regression" else (0.0, 1.0)
    head = {"task": objective.task, "n_classes": objective.n_classes, "target_std": std}
    with distribution_scope(accelerators["gpus"]):
        model = build_mlp(source.n_features, hyper, seed=train_config.seed, target_mean=mean, **head)
        network = model
        if train_config.adversarial_epsilon:
            model = _adversarial(model, train_config.adversarial_epsilon, folder, head)
    scorers: list[Any] = []
    if monitor != "auc":
        from ml_tasks.training.input_pipeline import load_arrays
        from ml_tasks.training.keras_mlp import validation_score_callback

        x_val, y_val = load_arrays(folder / VALIDATION_SPLIT_FILE, target)
        scorers = [validation_score_callback(objective, x_val, y_val,
                                             *head_arrays(folder / TRAIN_FILE, target, TRAIN_SCORE_ROWS))]
    callbacks = scorers + checkpointing.callbacks(checkpoints, train_config.patience, monitor=f"val_{monitor}",
                                                  mode=objective.mode,
                                                  extra=[keras.callbacks.CSVLogger(str(history_csv), append=True)])
    # killed after early stopping had ended the run: no epoch left (the callbacks still restore the best weights)
    epochs = initial_epoch if checkpointing.finished_early(checkpoints) else train_config.max_epochs
    model.fit(**source.fit_kwargs(), epochs=epochs, callbacks=callbacks, verbose=2)
    rows: dict[int, dict[str, str]] = {}
    with history_csv.open() as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row  # an epoch logged twice (killed between log and backup): the last wins
    history = {k: [float(rows[e][k]) for e in sorted(rows)] for k in next(iter(rows.values())) if k != "epoch"}
    model_path = model_dir / MODEL_FILE
    with atomic_path(model_path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        network.save(keras_tmp)
        keras_tmp.replace(tmp)
    watched = Objective(objective.task, "roc_auc", objective.n_classes) if monitor == "auc" else objective
    best_epoch = watched.best_index(history[f"val_{monitor}"])
    log.info("fitted %s from epoch %s to %s on %s rows (%s input)", run_ctx.tracking_key, initial_epoch,
             len(history["loss"]), source.train_rows, source.pipeline)
    return _Fitted({KERAS_ARTIFACT: str(model_path)}, history, {**accelerators, "input": source.pipeline},
                   len(history["loss"]), best_epoch, history[monitor][best_epoch], history[f"val_{monitor}"][best_epoch],
                   initial_epoch)


def _adversarial(model: Any, epsilon: float, prepared: Path, head: dict[str, Any] | None = None) -> Any:
    """The MLP wrapped for FGSM adversarial training on its standardised numeric inputs (TensorFlow only)."""
    import json

    import keras

    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.errors import ConfigError
    from ml_tasks.training.keras_mlp import adversarial_trainer

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"adversarial training needs the TensorFlow backend, not {keras.backend.backend()}")
    transform = FittedTransform.from_dict(json.loads((prepared / TRANSFORM_FILE).read_text()))
    numeric = len(transform.numeric)
    return adversarial_trainer(model, epsilon, [i < numeric for i in range(len(transform.feature_names))],
                               **(head or {}))


def _fit_sklearn(run_ctx: RunContext, train_config: TrainConfig, hyper: dict[str, Any], target: str,
                 objective: Any = None) -> _Fitted:
    """Fit a scikit-learn family, or reuse the model file a killed earlier attempt finished."""
    import json

    from ml_tasks.io import atomic_path, write_json
    from ml_tasks.release.pyfunc import SKLEARN_ARTIFACT
    from ml_tasks.training.input_pipeline import load_arrays
    from ml_tasks.training.sklearn_models import SKLEARN_MODEL_FILE, fit_sklearn, save_sklearn

    model_path = run_ctx.model_dir / SKLEARN_MODEL_FILE
    fit_record = run_ctx.model_dir / "sklearn_fit.json"
    accelerators = {"backend": "scikit-learn", "gpus": [], "precision": "float64"}
    if model_path.is_file() and fit_record.is_file():
        log.info("%s model for %s already fitted; reusing %s", train_config.family, run_ctx.tracking_key, model_path)
        fitted = json.loads(fit_record.read_text())
    else:
        folder = run_ctx.prepared_dir
        data = (*load_arrays(folder / TRAIN_FILE, target), *load_arrays(folder / VALIDATION_SPLIT_FILE, target))
        model, fit = fit_sklearn(train_config.family, hyper, *data, seed=train_config.seed, objective=objective)
        with atomic_path(model_path) as tmp:
            save_sklearn(model, tmp)
        fitted = fit.to_dict()
        write_json(fit_record, fitted)  # written last: it marks the model file complete
    return _Fitted({SKLEARN_ARTIFACT: str(model_path)}, fitted["history"], accelerators, int(fitted["epochs_run"]),
                   int(fitted["best_epoch"]), float(fitted["train_auc"]), float(fitted["val_auc"]))


def write_target_record(spec: Any, folder: Path) -> Path:
    """`target_record(spec)` as the TARGET_ARTIFACT's JSON file in `folder` (the pyfunc reads task and classes)."""
    from ml_tasks.io import write_json
    from ml_tasks.release.pyfunc import TARGET_FILE, target_record

    path = folder / TARGET_FILE
    write_json(path, target_record(spec))
    return path


def log_trained_model(run_ctx: RunContext, parent_run_id: str, family: str, model_artifacts: dict[str, str],
                      history: dict[str, list[float]], params: dict[str, Any], train_auc: float,
                      val_auc: float) -> str:
    """Log a trained model into the run as every path does: per-epoch `train.*` metrics, params, learning curve,
    and the pyfunc over the model file, the fitted transform and the target record. Returns the logged model's URI."""
    import json
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from ml_tasks import tracking
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.datasets import get_dataset
    from ml_tasks.explain import training_baseline, write_explanation_record
    from ml_tasks.release.pyfunc import (
        EXPLANATION_ARTIFACT,
        EXPLANATION_FILE,
        TARGET_ARTIFACT,
        TRANSFORM_ARTIFACT,
        RatchetClassifier,
    )

    spec = get_dataset(run_ctx.dataset)
    folder = run_ctx.prepared_dir
    tracking.configure()
    example = pd.read_parquet(folder / TEST_RAW_FILE)[list(spec.features)].head(5)
    with mlflow.start_run(run_id=parent_run_id):
        for epoch in range(max((len(v) for v in history.values()), default=0)):
            mlflow.log_metrics({f"train.{k}": v[epoch] for k, v in history.items() if epoch < len(v)}, step=epoch)
        mlflow.log_params(params)
        mlflow.log_metrics({"train.final_train_auc": train_auc, "train.final_val_auc": val_auc})
        with tempfile.TemporaryDirectory() as tmp_dir:
            curve = Path(tmp_dir) / LEARNING_CURVE_FILE
            _learning_curve(history, str(curve))
            mlflow.log_artifact(str(curve), artifact_path="plots")
        classifier = RatchetClassifier()
        artifacts = {**model_artifacts, TRANSFORM_ARTIFACT: str(folder / TRANSFORM_FILE)}
        target_dir = Path(tempfile.mkdtemp(prefix="ratchet-target-"))
        artifacts[TARGET_ARTIFACT] = str(write_target_record(spec, target_dir))
        transform = FittedTransform.from_dict(json.loads((folder / TRANSFORM_FILE).read_text()))
        artifacts[EXPLANATION_ARTIFACT] = str(write_explanation_record(
            training_baseline(folder / TRAIN_FILE, transform.feature_names), target_dir / EXPLANATION_FILE))
        try:
            classifier.load_context(type("Context", (), {"artifacts": artifacts})())
            signature = infer_signature(example, classifier.predict(None, example))
            info = mlflow.pyfunc.log_model(
                name=MLFLOW_MODEL_NAME, python_model=RatchetClassifier(), artifacts=artifacts,
                signature=signature, input_example=example, pip_requirements=_pip_requirements(family),
            )
        finally:
            import shutil

            shutil.rmtree(target_dir, ignore_errors=True)
    return str(info.model_uri)


def train_in_process(ctx: dict[str, str], config: dict[str, Any], params: dict[str, Any], parent_run_id: str) -> dict[str, Any]:
    import json

    from ml_tasks.datasets import get_dataset
    from ml_tasks.io import write_json
    from ml_tasks.training.families import DEFAULT_PARAMS, KERAS_MLP, check_family_for_task, split_family
    from ml_tasks.training.scoring import Objective
    from ml_tasks.training.system_metrics import system_metrics

    run_ctx = RunContext.from_dict(ctx)
    family, params = split_family(str(config["family"]), params)
    train_config = TrainConfig(**{**config, "family": family})
    spec = get_dataset(run_ctx.dataset)
    check_family_for_task(family, spec.task)
    objective = Objective.for_spec(spec)
    done_record = run_ctx.model_dir / "train_result.json"
    if done_record.is_file():
        log.info("model for %s already trained; reusing %s", run_ctx.tracking_key, done_record)
        return {**json.loads(done_record.read_text()), "reused": True}

    hyper = {**DEFAULT_PARAMS[family], **params}
    with system_metrics(parent_run_id, node_id="train"):
        fitted = (_fit_keras if family == KERAS_MLP else _fit_sklearn)(run_ctx, train_config, hyper, spec.target,
                                                                       objective)
    history, train_auc, val_auc, best_epoch = fitted.history, fitted.train_auc, fitted.val_auc, fitted.best_epoch

    model_uri = log_trained_model(run_ctx, parent_run_id, family, fitted.artifacts, history,
                                  {f"train.{k}": v for k, v in hyper.items()}
                                  | {"train.max_epochs": train_config.max_epochs, "train.family": family},
                                  train_auc, val_auc)
    result = TrainResult(
        model_uri=model_uri, model_path=next(iter(fitted.artifacts.values())), epochs_run=fitted.epochs_run,
        best_epoch=best_epoch, train_auc=train_auc, val_auc=val_auc,
        fit_diagnosis=diagnose_fit(train_auc, val_auc, metric=objective.metric), accelerators=fitted.accelerators,
        reused=False, family=family, initial_epoch=fitted.initial_epoch, metric=objective.metric,
    )
    write_json(done_record, result.to_dict())
    log.info("trained %s (%s): %s epochs/steps, best %s, val %s %.4f; %s", run_ctx.tracking_key, family,
             result.epochs_run, best_epoch, objective.metric, val_auc, result.fit_diagnosis)
    return result.to_dict()
