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
from ml_tasks.training.families import (
    DEFAULT_PARAMS,
    HIST_GRADIENT_BOOSTING,
    LOGISTIC_REGRESSION,
    RANDOM_FOREST,
    RIDGE,
    families_for,
)
from ml_tasks.training.scoring import REGRESSION, Objective

log = logging.getLogger(__name__)

SKLEARN_MODEL_FILE = "model.skops"
# Rows of the training split the train-set score of a fit (the overfitting check) is measured on.
TRAIN_SCORE_ROWS = 50_000
# HGB's early stopping waits this many boosting iterations without a better validation score.
HGB_NO_CHANGE_ITERATIONS = 10
# HGB's early-stopping scorer per primary metric (a scikit-learn scorer name, greater is better); a metric
# without one stops on the loss of its task kind.
HGB_SCORING = {"roc_auc": "roc_auc", "accuracy": "accuracy", "log_loss": "neg_log_loss", "f1_macro": "f1_macro",
               "f1_weighted": "f1_weighted", "rmse": "neg_root_mean_squared_error",
               "mae": "neg_mean_absolute_error", "r2": "r2"}


def hgb_scoring(objective: Objective) -> str:
    """The scorer HGB's early stopping follows for `objective` (its metric if scikit-learn has it, else the loss)."""
    if objective.task == "multiclass" and objective.metric == "roc_auc":
        return "roc_auc_ovr"
    return HGB_SCORING[hgb_metric(objective)]


def hgb_metric(objective: Objective) -> str:
    """The metric HGB's early stopping (and its per-step curve) follows: the primary metric or the task's loss."""
    if objective.metric in HGB_SCORING:
        return objective.metric
    return {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[objective.task]


def build_sklearn(family: str, params: dict[str, Any], seed: int = 0, task: str = "binary", **overrides: Any) -> Any:
    """An unfitted scikit-learn estimator of `family` for a `task` target, with `params` (defaults filled in).

    Classification gets classifiers (classes_ are the codes 0..k-1 the prepared labels hold), regression gets
    regressors predicting in the target's original units; a family that cannot learn the task is refused.
    """
    from ml_tasks.training.families import check_family_for_task

    if family not in families_for(task):
        check_family_for_task(family, task)
    hyper = {**DEFAULT_PARAMS[family], **{k: v for k, v in params.items() if k in DEFAULT_PARAMS[family]}}
    regression = task == REGRESSION
    if family == RIDGE:
        from sklearn.linear_model import Ridge

        return Ridge(alpha=float(hyper["alpha"]), random_state=seed, **overrides)
    if family == LOGISTIC_REGRESSION:
        from sklearn.linear_model import LogisticRegression

        weight = None if hyper["class_weight"] == "none" else hyper["class_weight"]
        return LogisticRegression(C=float(hyper["C"]), class_weight=weight, max_iter=1000, random_state=seed, **overrides)
    if family == RANDOM_FOREST:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        features = hyper["max_features"]
        forest = RandomForestRegressor if regression else RandomForestClassifier
        return forest(
            n_estimators=int(hyper["n_estimators"]), max_depth=int(hyper["max_depth"]),
            min_samples_leaf=int(hyper["min_samples_leaf"]),
            max_features=features if features == "sqrt" else float(features), random_state=seed, **overrides,
        )
    if family == HIST_GRADIENT_BOOSTING:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        boosting = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return boosting(
            learning_rate=float(hyper["learning_rate"]), max_iter=int(hyper["max_iter"]),
            max_leaf_nodes=int(hyper["max_leaf_nodes"]), min_samples_leaf=int(hyper["min_samples_leaf"]),
            l2_regularization=float(hyper["l2_regularization"]), random_state=seed, **overrides,
        )
    raise ConfigError(f"{family!r} is not a scikit-learn family")


def auc(estimator: Any, x: Any, y: Any) -> float:
    """ROC AUC of a fitted binary classifier's positive-class probability."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, estimator.predict_proba(x)[:, 1]))


def validation_score(estimator: Any, x: Any, y: Any, objective: Objective | None = None) -> float:
    """The primary metric of a fitted estimator on (x, y) (binary ROC AUC when no objective is given)."""
    objective = objective or Objective()
    return objective.score(y, objective.output(estimator, x))


def labels_for(y: Any, objective: Objective) -> Any:
    """Prepared labels as the estimator takes them: int64 codes for classification, float64 for regression."""
    import numpy as np

    return np.asarray(y, dtype="int64" if objective.is_classification else "float64")


def _train_rows(x: Any, y: Any, seed: int) -> tuple[Any, Any]:
    import numpy as np

    if len(y) <= TRAIN_SCORE_ROWS:
        return x, y
    rows = np.random.default_rng(seed).choice(len(y), TRAIN_SCORE_ROWS, replace=False)
    return x[rows], y[rows]


@dataclass(frozen=True)
class SklearnFit:
    """The final fit of a scikit-learn family: the curve per step, and the numbers the diagnosis uses.

    `train_auc`/`val_auc` keep their names (records written before task kinds read them) but hold the data
    set's primary metric, `metric`: ROC AUC for a binary target as before.
    """

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    train_auc: float
    val_auc: float
    metric: str = "roc_auc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_sklearn(family: str, params: dict[str, Any], x_train: Any, y_train: Any, x_val: Any, y_val: Any,
                seed: int = 0, objective: Objective | None = None) -> tuple[Any, SklearnFit]:
    """Fit the final model; HGB stops early on the validation split (`hgb_scoring`; RF and the linear families have
    no early stopping). The history's "auc"/"val_auc" curves hold the primary metric per step."""
    objective = objective or Objective()
    y_train, y_val = labels_for(y_train, objective), labels_for(y_val, objective)
    if family == HIST_GRADIENT_BOOSTING:
        scoring = hgb_scoring(objective)
        model = build_sklearn(family, params, seed, objective.task, early_stopping=True, scoring=scoring,
                              n_iter_no_change=HGB_NO_CHANGE_ITERATIONS)
        model.fit(x_train, y_train, X_val=x_val, y_val=y_val)
        # The scores start with the constant model before the first iteration; "neg_" scorers are negated
        # back into the metric (an RMSE curve, not a negative one).
        sign = -1.0 if scoring.startswith("neg_") else 1.0
        history = {"auc": [sign * float(v) for v in model.train_score_[1:]],
                   "val_auc": [sign * float(v) for v in model.validation_score_[1:]]}
        epochs_run = int(model.n_iter_)
        follows = Objective(objective.task, hgb_metric(objective), objective.n_classes)
        best_epoch = follows.best_index(history["val_auc"]) if history["val_auc"] else 0
    else:
        model = build_sklearn(family, params, seed, objective.task, **({"n_jobs": -1} if family == RANDOM_FOREST else {}))
        model.fit(x_train, y_train)
        history = {}
        if family == LOGISTIC_REGRESSION:
            epochs_run = int(max(getattr(model, "n_iter_", [1])))
        elif family == RIDGE:
            epochs_run = 1
        else:
            epochs_run = len(model.estimators_)
        best_epoch = epochs_run - 1
    x_score, y_score = _train_rows(x_train, y_train, seed)
    train_score = validation_score(model, x_score, y_score, objective)
    val_score = validation_score(model, x_val, y_val, objective)
    history = history or {"auc": [train_score], "val_auc": [val_score]}
    return model, SklearnFit(history, epochs_run, best_epoch, train_score, val_score, objective.metric)


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
