"""One tuning trial of any family: train a configuration step by step and report each step's validation score
(the data set's primary metric, `ml_tasks.training.scoring.Objective`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from ml_tasks.training.families import (
    DEFAULT_PARAMS,
    HIST_GRADIENT_BOOSTING,
    KERAS_MLP,
    LOGISTIC_REGRESSION,
    RANDOM_FOREST,
    RIDGE,
    check_family,
)
from ml_tasks.training.keras_mlp import build_mlp
from ml_tasks.training.scoring import Objective
from ml_tasks.training.sklearn_models import build_sklearn, labels_for, validation_score

log = logging.getLogger(__name__)


def _steps(total: int, steps: int) -> list[int]:
    """Cumulative sizes for growing a `total`-sized ensemble in `steps` reports (each at least 1 larger)."""
    steps = max(1, min(steps, total))
    return sorted({max(1, math.ceil(total * (k + 1) / steps)) for k in range(steps)})


def run_trial(family: str, params: dict[str, Any], data: tuple[Any, Any, Any, Any], steps: int, seed: int,
              report: Callable[[int, float, bool], None], objective: Objective | None = None,
              folds: list[tuple[Any, Any]] | None = None) -> float:
    """Train one configuration, calling `report(step, score, last)` after every step; returns its score.

    The score is `objective`'s primary metric on the validation split (binary ROC AUC when none is given);
    the returned value is the best step's (`Objective.best`). Steps: Keras epochs; RF trees and HGB boosting
    iterations grown with warm_start in `steps` chunks; the linear families one fit.
    `report` may raise (optuna.TrialPruned) to stop the trial there; `last` says no compute is left to save.

    `folds` (cross-validation: (train rows, held-out rows) positions into the training arrays, augmented rows
    never held out): a scikit-learn family fits each fold at its full size and reports after fold k the mean
    score of the folds so far; the trial's score is the mean over all folds. The Keras MLP does not
    cross-validate (k networks per trial costs k times the epochs): it ignores `folds` and is scored on the
    validation split, epoch by epoch, so its trials keep their per-epoch pruning.
    """
    objective = objective or Objective()
    x_train, y_train, x_val, y_val = data
    y_train, y_val = labels_for(y_train, objective), labels_for(y_val, objective)
    scores: list[float] = []

    def record(step: int, value: float, last: bool) -> None:
        scores.append(value)
        report(step, value, last)

    if family == KERAS_MLP:
        _keras_trial(params, (x_train, y_train, x_val, y_val), steps, seed, record, objective)
        return objective.best(scores)
    check_family(family)
    if folds:
        fold_scores: list[float] = []
        for k, (train_rows, held_out) in enumerate(folds):
            model = build_sklearn(family, params, seed, objective.task).fit(x_train[train_rows], y_train[train_rows])
            fold_scores.append(validation_score(model, x_train[held_out], y_train[held_out], objective))
            record(k, sum(fold_scores) / len(fold_scores), k == len(folds) - 1)
        return scores[-1]
    if family in (LOGISTIC_REGRESSION, RIDGE):
        model = build_sklearn(family, params, seed, objective.task).fit(x_train, y_train)
        record(0, validation_score(model, x_val, y_val, objective), True)
    elif family in (RANDOM_FOREST, HIST_GRADIENT_BOOSTING):
        size_param = "n_estimators" if family == RANDOM_FOREST else "max_iter"
        hyper = {**DEFAULT_PARAMS[family], **params}
        extra = {"early_stopping": False} if family == HIST_GRADIENT_BOOSTING else {}
        model = build_sklearn(family, params, seed, objective.task, warm_start=True, **extra)
        sizes = _steps(int(hyper[size_param]), steps)
        for step, size in enumerate(sizes):
            model.set_params(**{size_param: size})
            model.fit(x_train, y_train)
            record(step, validation_score(model, x_val, y_val, objective), step == len(sizes) - 1)
    return objective.best(scores)


def _keras_trial(params: dict[str, Any], data: tuple[Any, Any, Any, Any], epochs: int, seed: int,
                 record: Callable[[int, float, bool], None], objective: Objective) -> None:
    import keras
    import numpy as np

    x_train, y_train, x_val, y_val = data

    class ReportEpoch(keras.callbacks.Callback):
        """Report each epoch's validation score (backend-portable; what optuna-integration's callback does)."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = objective.score(y_val, self.model.predict(x_val, batch_size=4096, verbose=0))
            record(epoch, value, epoch == epochs - 1)

    y_fit = np.asarray(y_train, dtype="float32")
    model = build_mlp(x_train.shape[1], {**DEFAULT_PARAMS[KERAS_MLP], **params}, seed=seed, task=objective.task,
                      n_classes=objective.n_classes, target_mean=float(y_fit.mean()), target_std=float(y_fit.std()))
    try:
        model.fit(x_train, y_fit, epochs=epochs, batch_size=int(params.get("batch_size", 512)), verbose=0,
                  callbacks=[ReportEpoch()])
    finally:
        keras.backend.clear_session()
