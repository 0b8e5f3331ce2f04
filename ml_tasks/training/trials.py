"""One tuning trial of any family: train a configuration step by step and report each step's validation AUC."""

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
    check_family,
)
from ml_tasks.training.keras_mlp import build_mlp
from ml_tasks.training.sklearn_models import auc, build_sklearn

log = logging.getLogger(__name__)


def _steps(total: int, steps: int) -> list[int]:
    """Cumulative sizes for growing a `total`-sized ensemble in `steps` reports (each at least 1 larger)."""
    steps = max(1, min(steps, total))
    return sorted({max(1, math.ceil(total * (k + 1) / steps)) for k in range(steps)})


def run_trial(family: str, params: dict[str, Any], data: tuple[Any, Any, Any, Any], steps: int, seed: int,
              report: Callable[[int, float, bool], None]) -> float:
    """Train one configuration, calling `report(step, val_auc, last)` after every step; returns the best val AUC.

    Steps: Keras epochs; RF trees and HGB boosting iterations grown with warm_start in `steps` chunks; LR one fit.
    `report` may raise (optuna.TrialPruned) to stop the trial there; `last` says no compute is left to save.
    """
    x_train, y_train, x_val, y_val = data
    scores: list[float] = []

    def record(step: int, value: float, last: bool) -> None:
        scores.append(value)
        report(step, value, last)

    if family == KERAS_MLP:
        _keras_trial(params, data, steps, seed, record)
    elif family == LOGISTIC_REGRESSION:
        model = build_sklearn(family, params, seed).fit(x_train, y_train)
        record(0, auc(model, x_val, y_val), True)
    elif family in (RANDOM_FOREST, HIST_GRADIENT_BOOSTING):
        size_param = "n_estimators" if family == RANDOM_FOREST else "max_iter"
        hyper = {**DEFAULT_PARAMS[family], **params}
        extra = {"early_stopping": False} if family == HIST_GRADIENT_BOOSTING else {}
        model = build_sklearn(family, params, seed, warm_start=True, **extra)
        sizes = _steps(int(hyper[size_param]), steps)
        for step, size in enumerate(sizes):
            model.set_params(**{size_param: size})
            model.fit(x_train, y_train)
            record(step, auc(model, x_val, y_val), step == len(sizes) - 1)
    else:
        check_family(family)
    return max(scores)


def _keras_trial(params: dict[str, Any], data: tuple[Any, Any, Any, Any], epochs: int, seed: int,
                 record: Callable[[int, float, bool], None]) -> None:
    import keras

    x_train, y_train, x_val, y_val = data

    class ReportEpoch(keras.callbacks.Callback):
        """Report each epoch's validation AUC (backend-portable; what optuna-integration's callback does)."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            record(epoch, float((logs or {})["val_auc"]), epoch == epochs - 1)

    model = build_mlp(x_train.shape[1], {**DEFAULT_PARAMS[KERAS_MLP], **params}, seed=seed)
    try:
        model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
                  batch_size=int(params.get("batch_size", 512)), verbose=0, callbacks=[ReportEpoch()])
    finally:
        keras.backend.clear_session()
