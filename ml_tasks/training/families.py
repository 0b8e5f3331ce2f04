"""Model families: their search spaces (declared here and nowhere else), trials and scikit-learn fits.

Every family sees the same prepared float32 features (the fitted transform's
output) and is logged as the same pyfunc, so evaluation, the gate and serving
never need to know which family won. A family is one name in `MODEL_FAMILIES`,
one entry in `SEARCH_SPACES` and `DEFAULT_PARAMS`, and a branch in
`run_trial` (tuning: per-step reports that a pruner can stop) and, for
scikit-learn, `fit_sklearn` (the final fit).

scikit-learn models are saved with skops (a restricted format, not pickle):
loading refuses every type outside scikit-learn instead of running arbitrary
code, which plain pickle/joblib files would do when opened.

This module imports nothing heavy at module level: the DAG file reads the
family names from it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ml_tasks.errors import ConfigError, RatchetError

log = logging.getLogger(__name__)

KERAS_MLP = "keras_mlp"
LOGISTIC_REGRESSION = "logistic_regression"
RANDOM_FOREST = "random_forest"
HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
MODEL_FAMILIES = (KERAS_MLP, LOGISTIC_REGRESSION, RANDOM_FOREST, HIST_GRADIENT_BOOSTING)
SKLEARN_FAMILIES = (LOGISTIC_REGRESSION, RANDOM_FOREST, HIST_GRADIENT_BOOSTING)
SKLEARN_MODEL_FILE = "model.skops"
# Rows of the training split the train-set AUC of a fit (the overfitting check) is measured on.
TRAIN_SCORE_ROWS = 50_000
# HGB's early stopping waits this many boosting iterations without a better validation AUC.
HGB_NO_CHANGE_ITERATIONS = 10


@dataclass(frozen=True)
class Dim:
    """One hyperparameter: its range for random/TPE sampling and its discrete values for grid search."""

    kind: str  # "int", "float" or "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


def _choice(choices: tuple[Any, ...], grid: tuple[Any, ...]) -> Dim:
    return Dim("categorical", choices=choices, grid=grid)


def _float(low: float, high: float, grid: tuple[float, ...], log: bool = False) -> Dim:
    return Dim("float", low, high, log, grid=grid)


def _int(low: int, high: int, grid: tuple[int, ...], log: bool = False) -> Dim:
    return Dim("int", low, high, log, grid=grid)


# The one place the search spaces are declared. `grid` values are what grid search runs (a product of them).
SEARCH_SPACES: dict[str, dict[str, Dim]] = {
    KERAS_MLP: {
        "n_layers": _choice((1, 2, 3), grid=(1, 2)),
        "units": _choice((32, 64, 128, 256), grid=(32, 128)),
        "dropout": _float(0.0, 0.4, grid=(0.0, 0.2)),
        "l2": _float(1e-6, 1e-3, grid=(1e-5,), log=True),
        "learning_rate": _float(1e-4, 1e-2, grid=(3e-4, 3e-3), log=True),
        "batch_size": _choice((256, 512, 1024), grid=(256,)),
    },
    LOGISTIC_REGRESSION: {
        "C": _float(1e-3, 1e2, grid=(0.01, 0.1, 1.0, 10.0), log=True),
        "class_weight": _choice(("none", "balanced"), grid=("none", "balanced")),
    },
    RANDOM_FOREST: {
        "n_estimators": _choice((100, 200, 300), grid=(100, 300)),
        "max_depth": _int(3, 24, grid=(6, 12, 24)),
        "min_samples_leaf": _int(1, 64, grid=(1, 8), log=True),
        "max_features": _choice(("sqrt", "0.5", "1.0"), grid=("sqrt", "0.5")),
    },
    HIST_GRADIENT_BOOSTING: {
        "learning_rate": _float(0.01, 0.3, grid=(0.03, 0.1, 0.3), log=True),
        "max_iter": _choice((100, 200, 400), grid=(200,)),
        "max_leaf_nodes": _int(7, 127, grid=(15, 63), log=True),
        "min_samples_leaf": _int(5, 200, grid=(20, 100), log=True),
        "l2_regularization": _float(1e-6, 1.0, grid=(1e-6, 0.1), log=True),
    },
}

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    KERAS_MLP: {"n_layers": 2, "units": 128, "dropout": 0.1, "l2": 1e-5, "learning_rate": 1e-3, "batch_size": 512},
    LOGISTIC_REGRESSION: {"C": 1.0, "class_weight": "none"},
    RANDOM_FOREST: {"n_estimators": 200, "max_depth": 12, "min_samples_leaf": 2, "max_features": "sqrt"},
    HIST_GRADIENT_BOOSTING: {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "min_samples_leaf": 20,
                             "l2_regularization": 1e-6},
}


def check_family(family: str) -> str:
    if family not in MODEL_FAMILIES:
        raise ConfigError(f"model family must be one of {', '.join(MODEL_FAMILIES)}; got {family!r}")
    return family


def grid_space(family: str) -> dict[str, list[Any]]:
    """The declared grid of a family, as Optuna's GridSampler takes it."""
    return {name: list(dim.grid) for name, dim in SEARCH_SPACES[check_family(family)].items()}


def grid_size(family: str) -> int:
    return math.prod(len(values) for values in grid_space(family).values())


def suggest(trial: Any, family: str) -> dict[str, Any]:
    """Sample a family's parameters from an Optuna trial (the grid sampler answers with grid values)."""
    params: dict[str, Any] = {}
    for name, dim in SEARCH_SPACES[check_family(family)].items():
        if dim.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.kind == "int":
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return params


def coerce_params(family: str, raw: dict[str, str]) -> dict[str, Any] | None:
    """Parameters read back as text (MLflow params) in their declared types; None if any is missing or off-space."""
    params: dict[str, Any] = {}
    for name, dim in SEARCH_SPACES[check_family(family)].items():
        if name not in raw:
            return None
        text = str(raw[name])
        value: Any
        try:
            if dim.kind == "categorical":
                value = next((c for c in dim.choices if str(c) == text), None)
            elif dim.kind == "int":
                value = int(float(text))
            else:
                value = float(text)
        except ValueError:
            return None
        if value is None or not dim.contains(value):
            return None
        params[name] = value
    return params


def is_sklearn(family: str) -> bool:
    return check_family(family) in SKLEARN_FAMILIES


# ---------------------------------------------------------------- scikit-learn estimators


def build_sklearn(family: str, params: dict[str, Any], seed: int = 0, **overrides: Any) -> Any:
    """An unfitted scikit-learn classifier of `family` with `params` (defaults filled in)."""
    hyper = {**DEFAULT_PARAMS[family], **params}
    if family == LOGISTIC_REGRESSION:
        from sklearn.linear_model import LogisticRegression

        weight = None if hyper["class_weight"] == "none" else hyper["class_weight"]
        return LogisticRegression(C=float(hyper["C"]), class_weight=weight, max_iter=1000, random_state=seed, **overrides)
    if family == RANDOM_FOREST:
        from sklearn.ensemble import RandomForestClassifier

        features = hyper["max_features"]
        return RandomForestClassifier(
            n_estimators=int(hyper["n_estimators"]), max_depth=int(hyper["max_depth"]),
            min_samples_leaf=int(hyper["min_samples_leaf"]),
            max_features=features if features == "sqrt" else float(features), random_state=seed, **overrides,
        )
    if family == HIST_GRADIENT_BOOSTING:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            learning_rate=float(hyper["learning_rate"]), max_iter=int(hyper["max_iter"]),
            max_leaf_nodes=int(hyper["max_leaf_nodes"]), min_samples_leaf=int(hyper["min_samples_leaf"]),
            l2_regularization=float(hyper["l2_regularization"]), random_state=seed, **overrides,
        )
    raise ConfigError(f"{family!r} is not a scikit-learn family")


def auc(estimator: Any, x: Any, y: Any) -> float:
    """ROC AUC of a fitted classifier's positive-class probability."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, estimator.predict_proba(x)[:, 1]))


def _train_rows(x: Any, y: Any, seed: int) -> tuple[Any, Any]:
    import numpy as np

    if len(y) <= TRAIN_SCORE_ROWS:
        return x, y
    rows = np.random.default_rng(seed).choice(len(y), TRAIN_SCORE_ROWS, replace=False)
    return x[rows], y[rows]


@dataclass(frozen=True)
class SklearnFit:
    """The final fit of a scikit-learn family: the curve per step, and the numbers the diagnosis uses."""

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    train_auc: float
    val_auc: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_sklearn(family: str, params: dict[str, Any], x_train: Any, y_train: Any, x_val: Any, y_val: Any,
                seed: int = 0) -> tuple[Any, SklearnFit]:
    """Fit the final model; HGB stops early on the validation split's AUC (RF and LR have no early stopping)."""
    if family == HIST_GRADIENT_BOOSTING:
        model = build_sklearn(family, params, seed, early_stopping=True, scoring="roc_auc",
                              n_iter_no_change=HGB_NO_CHANGE_ITERATIONS)
        model.fit(x_train, y_train, X_val=x_val, y_val=y_val)
        # The scores start with the constant model before the first iteration.
        history = {"auc": [float(v) for v in model.train_score_[1:]], "val_auc": [float(v) for v in model.validation_score_[1:]]}
        epochs_run = int(model.n_iter_)
        best_epoch = int(max(range(len(history["val_auc"])), key=history["val_auc"].__getitem__)) if history["val_auc"] else 0
    else:
        model = build_sklearn(family, params, seed, **({"n_jobs": -1} if family == RANDOM_FOREST else {}))
        model.fit(x_train, y_train)
        history = {}
        epochs_run = int(max(getattr(model, "n_iter_", [1]))) if family == LOGISTIC_REGRESSION else len(model.estimators_)
        best_epoch = epochs_run - 1
    x_score, y_score = _train_rows(x_train, y_train, seed)
    train_auc, val_auc = auc(model, x_score, y_score), auc(model, x_val, y_val)
    history = history or {"auc": [train_auc], "val_auc": [val_auc]}
    return model, SklearnFit(history, epochs_run, best_epoch, train_auc, val_auc)


def _skops_io() -> Any:
    """`skops.io`, imported with warnings silenced.

    Its import looks up every scipy ufunc's module by probing each module in
    `sys.modules` (pickle's `whichmodule`); inside an Airflow task that probes
    Airflow's deprecation shims, whose warnings (about 1,100 log lines, 10-30 s
    on 2 cores) would otherwise go through the task's logging.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skops.io
    return skops.io


def save_sklearn(model: Any, path: Any) -> None:
    """Save with skops. Methods cached on the instance (HGB's `_raw_predict` after early stopping) are
    dropped first: skops cannot store them, and the class provides them again."""
    import inspect

    skops_io = _skops_io()
    for name, value in list(vars(model).items()):
        if inspect.ismethod(value) and value.__self__ is model:
            delattr(model, name)
    skops_io.dump(model, path)


def load_sklearn(path: Any) -> Any:
    """Load a skops file, trusting only scikit-learn's own types (anything else is refused, not run)."""
    skops_io = _skops_io()
    untrusted = skops_io.get_untrusted_types(file=path)
    foreign = [name for name in untrusted if not name.startswith("sklearn.")]
    if foreign:
        raise RatchetError(f"{path} holds types outside scikit-learn, refused: {', '.join(foreign)}")
    return skops_io.load(path, trusted=untrusted)


# ---------------------------------------------------------------- trials


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

    from ml_tasks.training.keras_mlp import build_mlp

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
