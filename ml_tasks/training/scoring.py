"""The score a fit or a trial is judged by: the data set's primary metric for its task kind, with its direction.

Tuning maximises or minimises it (`direction`), the final fits report it as their train and validation score,
and early stopping follows it. Labels are the prepared codes: 0..k-1 for classification (an index into
`DatasetSpec.classes`), original units for regression. A model's output is the positive-class probability
(binary, shape (n,) or (n,1)), the (n, k) class probabilities (multiclass), or the prediction (regression).

Imports nothing heavy at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ml_tasks.constants import DEFAULT_PRIMARY_METRIC, LOWER_IS_BETTER, TASK_METRICS
from ml_tasks.datasets import BINARY, MULTICLASS, REGRESSION
from ml_tasks.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """What a fit of one data set is scored by: its task kind, class count and primary metric."""

    task: str = BINARY
    metric: str = "roc_auc"
    n_classes: int = 2

    def __post_init__(self) -> None:
        if self.task not in TASK_METRICS:
            raise ConfigError(f"task kind must be one of {', '.join(TASK_METRICS)}; got {self.task!r}")
        if self.metric not in TASK_METRICS[self.task]:
            raise ConfigError(f"a {self.task} target is scored by one of {', '.join(TASK_METRICS[self.task])}; "
                              f"got {self.metric!r}")
        if self.task != REGRESSION and self.n_classes < 2:
            raise ConfigError(f"a {self.task} target needs at least 2 classes; got {self.n_classes}")

    @classmethod
    def for_spec(cls, spec: Any) -> Objective:
        metric = getattr(spec, "primary_metric", None) or DEFAULT_PRIMARY_METRIC[spec.task]
        if metric not in TASK_METRICS[spec.task]:  # e.g. a binary-only name left on a declaration of another kind
            metric = DEFAULT_PRIMARY_METRIC[spec.task]
        return cls(spec.task, metric, len(spec.classes) if spec.task != REGRESSION else 0)

    @property
    def is_classification(self) -> bool:
        return self.task != REGRESSION

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's study direction."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def mode(self) -> str:
        """Keras callbacks' `mode`."""
        return "max" if self.higher_is_better else "min"

    @property
    def worst(self) -> float:
        return float("-inf") if self.higher_is_better else float("inf")

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is strictly better than `b`."""
        return a > b if self.higher_is_better else a < b

    def best(self, values: Any) -> float:
        values = [float(v) for v in values]
        return max(values) if self.higher_is_better else min(values)

    def best_index(self, values: list[float]) -> int:
        pick = max if self.higher_is_better else min
        return int(pick(range(len(values)), key=values.__getitem__))

    def output(self, estimator: Any, x: Any) -> Any:
        """A fitted scikit-learn estimator's output on `x`: class probabilities, or predictions."""
        return estimator.predict_proba(x) if self.is_classification else estimator.predict(x)

    def score(self, y: Any, output: Any) -> float:
        """The primary metric of `output` against the labels `y`."""
        return score(self.metric, y, output, self.task, self.n_classes)


def probability_matrix(output: Any, n_classes: int) -> Any:
    """(n, k) class probabilities from a binary (n,)/(n,1) positive-class probability or an (n, k) matrix."""
    import numpy as np

    p = np.asarray(output, dtype="float64")
    if p.ndim == 2 and p.shape[1] == n_classes:
        return p
    p = p.reshape(-1)
    if n_classes != 2:
        raise ValueError(f"{n_classes} classes need an (n, {n_classes}) probability matrix; got shape {np.shape(output)}")
    return np.column_stack([1.0 - p, p])


def score(metric: str, y: Any, output: Any, task: str = BINARY, n_classes: int = 2) -> float:
    """`metric` of a model's `output` (see the module doc) against the prepared labels `y`."""
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y).reshape(-1)
    if task == REGRESSION:
        predicted = np.asarray(output, dtype="float64").reshape(-1)
        y = y.astype("float64")
        if metric == "rmse":
            return float(np.sqrt(np.mean((predicted - y) ** 2)))
        if metric == "mae":
            return float(np.mean(np.abs(predicted - y)))
        if metric == "r2":
            return float(m.r2_score(y, predicted))
        if metric == "mape":
            nonzero = y != 0
            return float(np.mean(np.abs((predicted[nonzero] - y[nonzero]) / y[nonzero]))) if nonzero.any() else float("nan")
        raise ConfigError(f"no regression metric {metric!r}")
    labels = list(range(n_classes))
    y = y.astype("int64")
    p = probability_matrix(output, n_classes)
    predicted = p.argmax(axis=1) if task == MULTICLASS else (p[:, 1] >= 0.5).astype("int64")
    if metric == "accuracy":
        return float(np.mean(predicted == y))
    if metric == "roc_auc":
        if task == BINARY:
            return float(m.roc_auc_score(y, p[:, 1]))
        present = np.unique(y)  # one-vs-rest over the classes the rows hold (a small fold may lack one)
        if len(present) < 2:
            return float("nan")
        sub = p[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        if len(present) == 2:
            return float(m.roc_auc_score(y == present[1], sub[:, 1]))
        return float(m.roc_auc_score(y, sub, multi_class="ovr", average="macro", labels=present))
    if metric == "pr_auc":
        return float(m.average_precision_score(y, p[:, 1]))
    if metric == "log_loss":
        return float(m.log_loss(y, np.clip(p, 1e-7, 1.0), labels=labels))
    if metric == "brier":
        onehot = np.eye(n_classes)[y]
        return float(np.mean(np.sum((p - onehot) ** 2, axis=1))) if task != BINARY else float(np.mean((p[:, 1] - y) ** 2))
    if metric == "calibration_error":
        confidence = p.max(axis=1) if task == MULTICLASS else p[:, 1]
        hit = (predicted == y) if task == MULTICLASS else y.astype("float64")
        bins = np.minimum((confidence * 10).astype("int64"), 9)
        return float(sum(abs(hit[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
                         for b in range(10) if np.any(bins == b)))
    averaged = {"f1": ("f1", "binary"), "f1_macro": ("f1", "macro"), "f1_weighted": ("f1", "weighted"),
                "precision": ("precision", "binary"), "recall": ("recall", "binary"),
                "precision_macro": ("precision", "macro"), "recall_macro": ("recall", "macro")}
    if metric in averaged:
        name, average = averaged[metric]
        function = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}[name]
        extra = {"labels": labels} if average != "binary" else {}
        return float(function(y, predicted, average=average, zero_division=0, **extra))
    raise ConfigError(f"no classification metric {metric!r}")
