"""Metrics, slices, confidence intervals and plots of a classifier's scores on held-out rows.

Pure functions over arrays, shared by the evaluate stage (in its isolated
process) and the tests. Binary and multiclass alike: scores are a matrix of
class probabilities (a vector is the positive class of a binary problem).
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

from ml_tasks.constants import LOWER_IS_BETTER

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10
# Metrics the paired bootstrap can resample with row weights (all of the gate's).
BOOTSTRAP_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier", "calibration_error")


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


def per_class_f1(y_true: Any, scores: Any, classes: list[Any]) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true).astype(int)
    p = probability_matrix(scores, len(classes))
    predicted = p.argmax(axis=1)
    values = metrics.f1_score(y, predicted, average=None, labels=list(range(len(classes))), zero_division=0)
    return {str(c): float(v) for c, v in zip(classes, values, strict=True)}


def slice_metrics(frame: pd.DataFrame, y_true: Any, scores: Any, slice_columns: tuple[str, ...] | list[str],
                  min_rows: int = 100, max_values: int = 20) -> dict[str, dict[str, Any]]:
    """Metrics per value of each declared slice column (values with at least `min_rows` rows, the largest first)."""
    import numpy as np

    y = np.asarray(y_true).astype(int)
    p = np.asarray(scores)
    out: dict[str, dict[str, Any]] = {}
    for column in slice_columns:
        counts = frame[column].astype("string").fillna("<missing>").value_counts()
        values = frame[column].astype("string").fillna("<missing>").to_numpy()
        for value, count in counts.head(max_values).items():
            if count < min_rows:
                continue
            mask = values == value
            if len(set(y[mask].tolist())) < 2:
                continue
            out[f"{column}={value}"] = {"rows": int(count), **classification_metrics(y[mask], p[mask])}
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
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Interval]:
    """Percentile intervals of candidate-minus-champion (sign flipped for lower-is-better metrics).

    Each resample weights the same held-out rows for both models (Poisson(1)
    weights, the streaming form of resampling with replacement), so row-level
    luck cancels and only the models' difference remains. Binary scores take
    an O(rows) path per resample (ranks computed once), so 1,000 resamples of
    50,000 rows cost about a second.
    """
    import numpy as np

    y = np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
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
    tail = (1.0 - confidence) / 2 * 100
    out = {}
    for m in wanted:
        values = np.asarray([v for v in samples[m] if not math.isnan(v)])
        lower, upper = (np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan))
        out[m] = Interval(m, _improvement(m, point_c[m], point_o[m]), float(lower), float(upper), confidence, len(values))
    return out


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
                           features: list[str], repeats: int = 3, seed: int = 0, metric: str = "roc_auc") -> list[dict[str, Any]]:
    """Drop in `metric` when one raw feature's values are shuffled (through the served model, any family)."""
    import numpy as np

    y = np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
    base = classification_metrics(y, predict(frame))[metric]
    rows = []
    for feature in features:
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[feature] = shuffled[feature].to_numpy()[rng.permutation(len(frame))]
            drops.append(base - classification_metrics(y, predict(shuffled))[metric])
        rows.append({"feature": feature, "importance": float(np.mean(drops)), "std": float(np.std(drops))})
    return sorted(rows, key=lambda r: -r["importance"])


# ---------------------------------------------------------------- plots


def save_plots(y_true: Any, scores: Any, folder: Path, title: str, importance: list[dict[str, Any]] | None = None) -> list[Path]:
    """ROC and PR curves, confusion matrix, calibration curve (and importance) as PNG files in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn import metrics
    from sklearn.calibration import calibration_curve

    y = np.asarray(y_true).astype(int)
    p = probability_matrix(scores)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

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
    fig, ax = plt.subplots(figsize=(4.5, 4))
    metrics.ConfusionMatrixDisplay.from_predictions(y, p.argmax(axis=1), ax=ax, colorbar=False)
    save(fig, "confusion_matrix.png")
    if importance:
        top = importance[:20][::-1]
        fig, ax = plt.subplots(figsize=(5, 0.3 * len(top) + 1.2))
        ax.barh([r["feature"] for r in top], [r["importance"] for r in top], xerr=[r["std"] for r in top])
        ax.set_xlabel("drop in ROC AUC when shuffled")
        save(fig, "permutation_importance.png")
    return paths
