"""scikit-learn families: the estimator of a family, its final fit, and saving and loading it.

scikit-learn models are saved with skops (a restricted format, not pickle):
loading refuses every type outside scikit-learn instead of running arbitrary
code, which plain pickle/joblib files would do when opened.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ml_tasks.errors import ConfigError, RatchetError
from ml_tasks.training.families import DEFAULT_PARAMS, HIST_GRADIENT_BOOSTING, LOGISTIC_REGRESSION, RANDOM_FOREST

log = logging.getLogger(__name__)

SKLEARN_MODEL_FILE = "model.skops"
# Rows of the training split the train-set AUC of a fit (the overfitting check) is measured on.
TRAIN_SCORE_ROWS = 50_000
# HGB's early stopping waits this many boosting iterations without a better validation AUC.
HGB_NO_CHANGE_ITERATIONS = 10


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
