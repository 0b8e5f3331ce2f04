"""Metrics, slices, confidence intervals and plots of a model's scores on held-out rows.

Pure functions over arrays, shared by the evaluate stage (in its isolated
process) and the tests. Every task kind: classification scores are a matrix of
class probabilities (a vector is the positive class of a binary problem) over
int labels (codes); regression scores are predicted values in the target's units.
`task_metrics` gives the names of `TASK_METRICS` for a task.
The paired bootstrap resamples the same rows for candidate and champion, so
the interval is of the *improvement*, which is what the gate needs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.constants import LOWER_IS_BETTER, TASK_METRICS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10
# Metrics the paired bootstrap can resample with row weights (all of the gate's), per task kind.
BOOTSTRAP_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier", "calibration_error")
BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"


def probability_matrix(scores: Any, n_classes: int = 2) -> np.ndarray:
    """Scores as an (n, k) matrix of class probabilities, clipped away from 0 and 1."""
    import numpy as np

    p = np.asarray(scores, dtype="float64")
    if p.ndim == 1:
        if n_classes != 2:
            raise ValueError(f"a score vector is a binary problem's; {n_classes} classes need a matrix")
        p = np.column_stack([1.0 - p, p])
    return np.asarray(np.clip(p, 1e-7, 1 - 1e-7))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS,
                               weights: np.ndarray | None = None) -> float:
    """ECE of the predicted class: |accuracy - confidence| per confidence bin, weighted by the bin's share."""
    import numpy as np

    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype("float64")
    w = np.ones(len(y)) if weights is None else weights
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = w.sum()
    if total <= 0:
        return 0.0
    # Per bin, mass/total x |hits/mass - confidence/mass| = |hits - confidence| / total (empty bins add 0):
    # one pass, which matters inside the 1,000 resamples of the paired bootstrap.
    hits = np.bincount(which, weights=w * correct, minlength=bins)
    confident = np.bincount(which, weights=w * confidence, minlength=bins)
    return float(np.abs(hits - confident).sum() / total)


def classification_metrics(y_true: Any, scores: Any, classes: list[Any] | None = None, threshold: float = 0.5,
                           weights: np.ndarray | None = None) -> dict[str, float]:
    """accuracy, precision, recall, F1 (binary: of the positive class; multiclass: macro), ROC AUC (one-vs-rest),
    PR AUC (average precision), log loss, Brier score (binary), calibration error."""
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true).astype(int)
    n_classes = len(classes) if classes else max(2, int(np.asarray(scores).shape[1]) if np.ndim(scores) == 2 else 2)
    p = probability_matrix(scores, n_classes)
    labels = list(range(p.shape[1]))
    binary = p.shape[1] == 2
    predicted = (p[:, 1] >= threshold).astype(int) if binary else p.argmax(axis=1)
    average = "binary" if binary else "macro"
    present = len(set(y.tolist())) > 1
    out = {
        "accuracy": float(metrics.accuracy_score(y, predicted, sample_weight=weights)),
        "precision": float(metrics.precision_score(y, predicted, average=average, labels=labels, zero_division=0,
                                                   sample_weight=weights)),
        "recall": float(metrics.recall_score(y, predicted, average=average, labels=labels, zero_division=0,
                                             sample_weight=weights)),
        "f1": float(metrics.f1_score(y, predicted, average=average, labels=labels, zero_division=0, sample_weight=weights)),
        "log_loss": float(metrics.log_loss(y, p, labels=labels, sample_weight=weights)),
        "calibration_error": expected_calibration_error(y, p, weights=weights),
    }
    if binary:
        out["roc_auc"] = float(metrics.roc_auc_score(y, p[:, 1], sample_weight=weights)) if present else float("nan")
        out["pr_auc"] = float(metrics.average_precision_score(y, p[:, 1], sample_weight=weights)) if present else float("nan")
        out["brier"] = float(metrics.brier_score_loss(y, p[:, 1], sample_weight=weights))
    else:
        onehot = np.eye(p.shape[1])[y]
        out["roc_auc"] = float(metrics.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels,
                                                     sample_weight=weights)) if present else float("nan")
        out["pr_auc"] = float(metrics.average_precision_score(onehot, p, average="macro", sample_weight=weights))
    return out


def regression_metrics(y_true: Any, predicted: Any, weights: np.ndarray | None = None,
                       quiet: bool = False) -> dict[str, float]:
    """RMSE, MAE, R² and MAPE (a fraction, not %) of predicted values; MAPE is NaN where a true value is 0."""
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    p = np.asarray(predicted, dtype="float64").reshape(-1)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype="float64")
    total = float(w.sum())
    if total <= 0 or len(y) == 0:
        return {"rmse": math.nan, "mae": math.nan, "r2": math.nan, "mape": math.nan}
    residual = y - p
    mean = float((w * y).sum() / total)
    spread = float((w * (y - mean) ** 2).sum())
    squared = float((w * residual**2).sum())
    out = {"rmse": math.sqrt(squared / total), "mae": float((w * np.abs(residual)).sum() / total),
           "r2": 1.0 - squared / spread if spread > 0 else math.nan}
    zeros = int(np.count_nonzero(y == 0))
    if zeros:
        if not quiet:
            log.info("MAPE left out (NaN): %s of %s true values are 0, where a percentage error is undefined",
                     zeros, len(y))
        out["mape"] = math.nan
    else:
        out["mape"] = float((w * np.abs(residual / y)).sum() / total)
    return out


def multiclass_metrics(y_true: Any, scores: Any, n_classes: int, weights: np.ndarray | None = None) -> dict[str, float]:
    """TASK_METRICS["multiclass"]: accuracy, F1 (macro, weighted), precision and recall (macro), log loss,
    one-vs-rest ROC AUC (macro) and calibration error of the predicted class."""
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true).astype(int)
    p = probability_matrix(scores, n_classes)
    labels = list(range(p.shape[1]))
    predicted = p.argmax(axis=1)
    kw: dict[str, Any] = {"labels": labels, "zero_division": 0, "sample_weight": weights}
    present = len(set(y.tolist())) > 1
    try:
        auc = float(metrics.roc_auc_score(y, p / p.sum(axis=1, keepdims=True), multi_class="ovr", average="macro",
                                          labels=labels, sample_weight=weights)) if present else math.nan
    except ValueError:  # a class absent from these rows: one-vs-rest AUC is undefined for it
        auc = math.nan
    return {
        "accuracy": float(metrics.accuracy_score(y, predicted, sample_weight=weights)),
        "f1_macro": float(metrics.f1_score(y, predicted, average="macro", **kw)),
        "f1_weighted": float(metrics.f1_score(y, predicted, average="weighted", **kw)),
        "precision_macro": float(metrics.precision_score(y, predicted, average="macro", **kw)),
        "recall_macro": float(metrics.recall_score(y, predicted, average="macro", **kw)),
        # Rows renormalised after clipping (sklearn warns on rows that do not sum to one).
        "log_loss": float(metrics.log_loss(y, p / p.sum(axis=1, keepdims=True), labels=labels, sample_weight=weights)),
        "roc_auc": auc,
        "calibration_error": expected_calibration_error(y, p, weights=weights),
    }


def task_metrics(task: str, y_true: Any, scores: Any, classes: list[Any] | tuple[Any, ...] = (),
                 weights: np.ndarray | None = None, quiet: bool = False) -> dict[str, float]:
    """The metrics of TASK_METRICS[task] (binary: every classification metric, as before)."""
    if task == REGRESSION:
        return regression_metrics(y_true, scores, weights, quiet=quiet)
    if task == MULTICLASS:
        return multiclass_metrics(y_true, scores, len(classes), weights)
    return classification_metrics(y_true, scores, weights=weights)


def per_class_metrics(y_true: Any, scores: Any, classes: list[Any] | tuple[Any, ...]) -> dict[str, dict[str, float]]:
    """Precision and recall of each class (its text as the key)."""
    import numpy as np
    from sklearn import metrics

    from ml_tasks.data.transform import category_text

    y = np.asarray(y_true).astype(int)
    predicted = probability_matrix(scores, len(classes)).argmax(axis=1)
    labels = list(range(len(classes)))
    precision = metrics.precision_score(y, predicted, average=None, labels=labels, zero_division=0)
    recall = metrics.recall_score(y, predicted, average=None, labels=labels, zero_division=0)
    return {category_text(c): {"precision": float(p), "recall": float(r)}
            for c, p, r in zip(classes, precision, recall, strict=True)}


def per_class_f1(y_true: Any, scores: Any, classes: list[Any]) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true).astype(int)
    p = probability_matrix(scores, len(classes))
    predicted = p.argmax(axis=1)
    values = metrics.f1_score(y, predicted, average=None, labels=list(range(len(classes))), zero_division=0)
    return {str(c): float(v) for c, v in zip(classes, values, strict=True)}


def slice_metrics(frame: pd.DataFrame, y_true: Any, scores: Any, slice_columns: tuple[str, ...] | list[str],
                  min_rows: int = 100, max_values: int = 20, task: str = BINARY,
                  classes: list[Any] | tuple[Any, ...] = ()) -> dict[str, dict[str, Any]]:
    """Metrics per value of each declared slice column (values with at least `min_rows` rows, the largest first)."""
    import numpy as np

    y = np.asarray(y_true, dtype="float64") if task == REGRESSION else np.asarray(y_true).astype(int)
    p = np.asarray(scores)
    out: dict[str, dict[str, Any]] = {}
    for column in slice_columns:
        counts = frame[column].astype("string").fillna("<missing>").value_counts()
        values = frame[column].astype("string").fillna("<missing>").to_numpy()
        for value, count in counts.head(max_values).items():
            if count < min_rows:
                continue
            mask = values == value
            if task != REGRESSION and len(set(y[mask].tolist())) < 2:
                continue
            out[f"{column}={value}"] = {"rows": int(count), **task_metrics(task, y[mask], p[mask], classes, quiet=True)}
    return out


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap interval of the candidate's improvement over the champion (positive: better)."""

    metric: str
    improvement: float
    lower: float
    upper: float
    confidence: float
    resamples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(y_true: Any, candidate: Any, champion: Any, metric_names: list[str] | tuple[str, ...],
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0, task: str = BINARY,
                     classes: list[Any] | tuple[Any, ...] = ()) -> dict[str, Interval]:
    """Percentile intervals of candidate-minus-champion (sign flipped for lower-is-better metrics).

    Each resample weights the same held-out rows for both models (Poisson(1)
    weights, the streaming form of resampling with replacement), so row-level
    luck cancels and only the models' difference remains. Binary scores take
    an O(rows) path per resample (ranks computed once), so 1,000 resamples of
    50,000 rows cost about a second. Multiclass and regression metrics are
    recomputed with each resample's weights. The "champion" may be any scores of
    the same rows: the naive baseline's too.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if task != BINARY:
        return _bootstrap_general(y_true, candidate, champion, metric_names, resamples, confidence, rng, task, classes)
    y = np.asarray(y_true).astype(int)
    wanted = [m for m in metric_names if m in BOOTSTRAP_METRICS]
    p_c, p_o = probability_matrix(candidate), probability_matrix(champion)
    binary = p_c.shape[1] == 2 and p_o.shape[1] == 2
    if binary:
        fast_c, fast_o = _BinaryScores(y, p_c[:, 1]), _BinaryScores(y, p_o[:, 1])
        point_c, point_o = fast_c.metrics(wanted, None), fast_o.metrics(wanted, None)
    else:
        point_c, point_o = classification_metrics(y, p_c), classification_metrics(y, p_o)
    samples: dict[str, list[float]] = {m: [] for m in wanted}
    for _ in range(resamples):
        weights = rng.poisson(1.0, size=len(y)).astype("float64")
        if binary:
            c, o = fast_c.metrics(wanted, weights), fast_o.metrics(wanted, weights)
        else:
            c, o = classification_metrics(y, p_c, weights=weights), classification_metrics(y, p_o, weights=weights)
        for m in wanted:
            samples[m].append(_improvement(m, c[m], o[m]))
    return _intervals(wanted, samples, point_c, point_o, confidence)


def _bootstrap_general(y_true: Any, candidate: Any, champion: Any, metric_names: list[str] | tuple[str, ...],
                       resamples: int, confidence: float, rng: Any, task: str,
                       classes: list[Any] | tuple[Any, ...]) -> dict[str, Interval]:
    import numpy as np

    y = np.asarray(y_true, dtype="float64") if task == REGRESSION else np.asarray(y_true).astype(int)
    wanted = [m for m in metric_names if m in TASK_METRICS[task]]
    point_c = task_metrics(task, y, candidate, classes)
    point_o = task_metrics(task, y, champion, classes, quiet=True)
    samples: dict[str, list[float]] = {m: [] for m in wanted}
    fast = task == MULTICLASS
    if fast:  # O(rows) per resample, as the binary path: the same numbers as multiclass_metrics, without sklearn
        fast_c, fast_o = _MulticlassScores(y, candidate, len(classes)), _MulticlassScores(y, champion, len(classes))
    for _ in range(resamples):
        weights = rng.poisson(1.0, size=len(y)).astype("float64")
        if fast:
            c, o = fast_c.metrics(weights), fast_o.metrics(weights)
        else:
            c = task_metrics(task, y, candidate, classes, weights=weights, quiet=True)
            o = task_metrics(task, y, champion, classes, weights=weights, quiet=True)
        for m in wanted:
            samples[m].append(_improvement(m, c[m], o[m]))
    return _intervals(wanted, samples, point_c, point_o, confidence)


def _intervals(wanted: list[str], samples: dict[str, list[float]], point_c: dict[str, float],
               point_o: dict[str, float], confidence: float) -> dict[str, Interval]:
    import numpy as np

    tail = (1.0 - confidence) / 2 * 100
    out = {}
    for m in wanted:
        values = np.asarray([v for v in samples[m] if not math.isnan(v)])
        lower, upper = (np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan))
        out[m] = Interval(m, _improvement(m, point_c[m], point_o[m]), float(lower), float(upper), confidence, len(values))
    return out


class _MulticlassScores:
    """One model's class probabilities, ready for `multiclass_metrics` under row weights in O(rows x classes):
    the predicted class, log terms and per-class rankings computed once."""

    def __init__(self, y: np.ndarray, scores: Any, n_classes: int) -> None:
        import numpy as np

        p = probability_matrix(scores, n_classes)
        self.k = p.shape[1]
        self.y = y
        self.predicted = p.argmax(axis=1)
        self.correct = (self.predicted == y).astype("float64")
        self.log_term = -np.log(p[np.arange(len(y)), y] / p.sum(axis=1))  # log_loss renormalises each row
        self.p = p
        normalised = p / p.sum(axis=1, keepdims=True)
        self.one_vs_rest = [_BinaryScores((y == k).astype(int), normalised[:, k]) for k in range(self.k)]

    def metrics(self, w: np.ndarray) -> dict[str, float]:
        import numpy as np

        total = w.sum()
        true = np.bincount(self.y, weights=w, minlength=self.k)
        predicted = np.bincount(self.predicted, weights=w, minlength=self.k)
        hits = np.bincount(self.y, weights=w * self.correct, minlength=self.k)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, hits / predicted, 0.0)
            recall = np.where(true > 0, hits / true, 0.0)
            f1 = np.where(predicted + true > 0, 2 * hits / (predicted + true), 0.0)
        aucs = [scores.roc_auc(w) for scores in self.one_vs_rest]
        return {
            "accuracy": float(hits.sum() / total),
            "f1_macro": float(f1.mean()),
            "f1_weighted": float((f1 * true).sum() / true.sum()),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "log_loss": float((w * self.log_term).sum() / total),
            "roc_auc": float(np.mean(aucs)) if not any(math.isnan(a) for a in aucs) else math.nan,
            "calibration_error": expected_calibration_error(self.y, self.p, weights=w),
        }


class _BinaryScores:
    """One model's binary scores, ready for weighted metrics in O(rows): ranks and log terms computed once."""

    def __init__(self, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> None:
        import numpy as np

        self.pos = (y == 1).astype("float64")
        self.neg = 1.0 - self.pos
        self.correct = ((p >= threshold).astype(int) == y).astype("float64")
        self.predicted_pos = (p >= threshold).astype("float64")
        self.log_term = -(self.pos * np.log(p) + self.neg * np.log(1 - p))
        self.squared = (p - self.pos) ** 2
        self.y = y
        self.matrix = probability_matrix(p)
        self.unique, self.inverse = np.unique(p, return_inverse=True)

    def roc_auc(self, w: np.ndarray) -> float:
        import numpy as np

        n = len(self.unique)
        neg = np.bincount(self.inverse, weights=w * self.neg, minlength=n)
        pos = np.bincount(self.inverse, weights=w * self.pos, minlength=n)
        below = np.cumsum(neg) - neg
        total = pos.sum() * neg.sum()
        return float((pos * (below + 0.5 * neg)).sum() / total) if total > 0 else math.nan

    def metrics(self, names: list[str], weights: np.ndarray | None) -> dict[str, float]:
        import numpy as np

        w = np.ones(len(self.pos)) if weights is None else weights
        total = w.sum()
        tp = float((w * self.pos * self.predicted_pos).sum())
        predicted = float((w * self.predicted_pos).sum())
        actual = float((w * self.pos).sum())
        out: dict[str, float] = {}
        for name in names:
            if name == "accuracy":
                out[name] = float((w * self.correct).sum() / total)
            elif name == "precision":
                out[name] = tp / predicted if predicted else 0.0
            elif name == "recall":
                out[name] = tp / actual if actual else 0.0
            elif name == "f1":
                out[name] = 2 * tp / (predicted + actual) if predicted + actual else 0.0
            elif name == "roc_auc":
                out[name] = self.roc_auc(w)
            elif name == "log_loss":
                out[name] = float((w * self.log_term).sum() / total)
            elif name == "brier":
                out[name] = float((w * self.squared).sum() / total)
            elif name == "calibration_error":
                out[name] = expected_calibration_error(self.y, self.matrix, weights=w)
            elif name == "pr_auc":
                out[name] = self.average_precision(w)
        return out

    def average_precision(self, w: np.ndarray) -> float:
        """sklearn's `average_precision_score` with weights, from the ranks computed once (no per-resample sort).

        Thresholds are the distinct scores, highest first: AP = sum over them of
        (recall gained) x (precision there). A score whose rows all weigh 0 gains
        no recall and so adds nothing, as sklearn drops zero-weight rows.
        """
        import numpy as np

        n = len(self.unique)
        tps = np.cumsum(np.bincount(self.inverse, weights=w * self.pos, minlength=n)[::-1])
        fps = np.cumsum(np.bincount(self.inverse, weights=w * self.neg, minlength=n)[::-1])
        positives = tps[-1]
        if positives <= 0:
            return math.nan
        predicted = tps + fps
        precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted > 0)
        recall_gained = np.diff(tps, prepend=0.0) / positives
        return float((recall_gained * precision).sum())


def _improvement(metric: str, candidate: float, champion: float) -> float:
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y_true: Any,
                           features: list[str], repeats: int = 3, seed: int = 0, metric: str = "roc_auc",
                           task: str = BINARY, classes: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Loss in `metric` when one raw feature's values are shuffled (through the served model, any family and task);
    positive: the feature matters (a lower-is-better metric's rise counts as a loss)."""
    import numpy as np

    y = np.asarray(y_true, dtype="float64") if task == REGRESSION else np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def score(rows: pd.DataFrame) -> float:
        return sign * task_metrics(task, y, predict(rows), classes, quiet=True)[metric]

    base = score(frame)
    rows = []
    for feature in features:
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[feature] = shuffled[feature].to_numpy()[rng.permutation(len(frame))]
            drops.append(base - score(shuffled))
        rows.append({"feature": feature, "importance": float(np.mean(drops)), "std": float(np.std(drops))})
    return sorted(rows, key=lambda r: -r["importance"])


# ---------------------------------------------------------------- plots


def save_plots(y_true: Any, scores: Any, folder: Path, title: str, importance: list[dict[str, Any]] | None = None,
               task: str = BINARY, classes: list[Any] | tuple[Any, ...] = (), metric: str = "roc_auc") -> list[Path]:
    """PNG files in `folder`: binary, ROC and PR curves, calibration curve and confusion matrix; multiclass, the
    confusion matrix with class names; regression, predicted vs actual and residuals; and the importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn import metrics
    from sklearn.calibration import calibration_curve

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    if task == REGRESSION:
        actual = np.asarray(y_true, dtype="float64")
        predicted_values = np.asarray(scores, dtype="float64").reshape(-1)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(actual, predicted_values, s=6, alpha=0.4, label=title)
        bounds = [float(min(actual.min(), predicted_values.min())), float(max(actual.max(), predicted_values.max()))]
        ax.plot(bounds, bounds, linestyle=":", color="grey", label="perfect")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend()
        save(fig, "predicted_vs_actual.png")
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(predicted_values, actual - predicted_values, s=6, alpha=0.4)
        ax.axhline(0.0, linestyle=":", color="grey")
        ax.set_xlabel("predicted")
        ax.set_ylabel("residual (actual - predicted)")
        save(fig, "residuals.png")
        _importance_plot(plt, importance, metric, save)
        return paths
    y = np.asarray(y_true).astype(int)
    p = probability_matrix(scores, len(classes) if task == MULTICLASS else 2)
    if p.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        metrics.RocCurveDisplay.from_predictions(y, p[:, 1], ax=ax, name=title)
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        save(fig, "roc_curve.png")
        fig, ax = plt.subplots(figsize=(4.5, 4))
        metrics.PrecisionRecallDisplay.from_predictions(y, p[:, 1], ax=ax, name=title)
        save(fig, "pr_curve.png")
        fig, ax = plt.subplots(figsize=(4.5, 4))
        observed, predicted = calibration_curve(y, p[:, 1], n_bins=CALIBRATION_BINS, strategy="quantile")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        ax.plot(predicted, observed, marker="o", label=title)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend()
        save(fig, "calibration_curve.png")
    from ml_tasks.data.transform import category_text

    names = [category_text(c) for c in classes] if task == MULTICLASS else None
    size = max(4.5, 0.5 * p.shape[1] + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    metrics.ConfusionMatrixDisplay.from_predictions(y, p.argmax(axis=1), ax=ax, colorbar=False,
                                                    labels=list(range(p.shape[1])), display_labels=names)
    if names:
        ax.tick_params(axis="x", labelrotation=45)
    save(fig, "confusion_matrix.png")
    _importance_plot(plt, importance, metric, save)
    return paths


def _importance_plot(plt: Any, importance: list[dict[str, Any]] | None, metric: str, save: Callable[..., None]) -> None:
    if importance:
        top = importance[:20][::-1]
        fig, ax = plt.subplots(figsize=(5, 0.3 * len(top) + 1.2))
        ax.barh([r["feature"] for r in top], [r["importance"] for r in top], xerr=[r["std"] for r in top])
        ax.set_xlabel(f"loss in {metric} when shuffled")
        save(fig, "permutation_importance.png")
