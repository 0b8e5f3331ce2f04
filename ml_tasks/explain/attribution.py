"""Attributions on raw input columns: the transform's one-hot groups folded back, ranked, summarised.

A version's explanation record (EXPLAINER_FILE, logged beside the model) holds
the baseline row in the transform's feature space: the training split's mean.
Linear SHAP and integrated gradients measure from it; TreeSHAP needs none.
Versions logged before the record existed are explained from the transform's
centre (every standardised numeric at its training mean, no category set), and
say so (`baseline: "transform_centre"`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.explain.explainers import Attributions, Explainer, additivity_errors, explainer_for

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_tasks.data.transform import FittedTransform

log = logging.getLogger(__name__)

BASELINE_TRAINING_MEAN = "training_mean"
BASELINE_TRANSFORM_CENTRE = "transform_centre"
# Training rows read to take the baseline mean: the mean of a random subset this large is within ~1% of a std.
BASELINE_ROWS = 100_000


def column_groups(transform: FittedTransform) -> list[tuple[str, list[int]]]:
    """Each raw input column with the transformed feature positions it feeds (one, or its one-hot group)."""
    groups: list[tuple[str, list[int]]] = [(column, [j]) for j, column in enumerate(transform.numeric)]
    offset = len(transform.numeric)
    for column, vocab in transform.categorical:
        groups.append((column, list(range(offset, offset + len(vocab)))))
        offset += len(vocab)
    return groups


def fold(values: np.ndarray, groups: list[tuple[str, list[int]]]) -> np.ndarray:
    """(rows, features) attributions to (rows, columns): a one-hot group's attributions summed (additivity kept)."""
    import numpy as np

    return np.column_stack([values[:, idx].sum(axis=1) for _, idx in groups]) if groups else values[:, :0]


@dataclass(frozen=True)
class ExplanationRecord:
    """What a version logs about its explainer: the baseline row and how it was taken."""

    baseline: list[float]
    baseline_kind: str = BASELINE_TRAINING_MEAN
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_baseline(train_path: Path, feature_names: list[str]) -> ExplanationRecord:
    """The mean row of the prepared training split (a random subset of BASELINE_ROWS when larger)."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(train_path, columns=feature_names)
    if table.num_rows > BASELINE_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(table.num_rows, BASELINE_ROWS, replace=False))
        table = table.take(rows)
    means = [float(np.nan_to_num(np.mean(table.column(name).to_numpy(zero_copy_only=False).astype("float64"))))
             for name in feature_names]
    return ExplanationRecord(baseline=means, baseline_kind=BASELINE_TRAINING_MEAN, rows=int(table.num_rows))


def write_explanation_record(record: ExplanationRecord, path: Path) -> Path:
    path.write_text(json.dumps(record.to_dict()))
    return path


def read_explanation_record(path: str | Path | None, transform: FittedTransform) -> ExplanationRecord:
    """The logged record, or the transform's centre for versions logged before it existed."""
    if path is not None and Path(path).is_file():
        payload = json.loads(Path(path).read_text())
        if len(payload.get("baseline") or []) == len(transform.feature_names):
            return ExplanationRecord(**payload)
        log.warning("explanation record %s has %s baseline values for %s features; using the transform's centre",
                    path, len(payload.get("baseline") or []), len(transform.feature_names))
    return ExplanationRecord(baseline=[0.0] * len(transform.feature_names), baseline_kind=BASELINE_TRANSFORM_CENTRE)


@dataclass
class RowExplanations:
    """Attributions of raw rows on their input columns, for one output per row (see Attributions)."""

    columns: list[str]
    values: np.ndarray  # (rows, columns)
    base_values: np.ndarray
    outputs: np.ndarray
    classes: np.ndarray | None
    method: str
    output_space: str
    tolerance: float
    baseline_kind: str
    steps: int = 0

    @classmethod
    def from_attributions(cls, attributions: Attributions, groups: list[tuple[str, list[int]]],
                          baseline_kind: str) -> RowExplanations:
        return cls(columns=[c for c, _ in groups], values=fold(attributions.values, groups),
                   base_values=attributions.base_values, outputs=attributions.outputs, classes=attributions.classes,
                   method=attributions.method, output_space=attributions.output_space,
                   tolerance=attributions.tolerance, baseline_kind=baseline_kind, steps=attributions.steps)

    def additivity_errors(self) -> np.ndarray:
        return additivity_errors(self.values, self.base_values, self.outputs)

    def max_additivity_error(self) -> float:
        import numpy as np

        errors = self.additivity_errors()
        return float(np.max(errors)) if errors.size else 0.0

    def global_importance(self) -> list[dict[str, Any]]:
        """Mean |attribution| per column over the rows, largest first (with the mean signed attribution)."""
        import numpy as np

        magnitude = np.abs(self.values).mean(axis=0) if len(self.values) else np.zeros(len(self.columns))
        signed = self.values.mean(axis=0) if len(self.values) else np.zeros(len(self.columns))
        order = np.argsort(-magnitude, kind="stable")
        return [{"feature": self.columns[i], "mean_abs_attribution": float(magnitude[i]),
                 "mean_attribution": float(signed[i])} for i in order]

    def ranking(self) -> list[str]:
        return [entry["feature"] for entry in self.global_importance()]

    def row(self, i: int, top_k: int | None = None) -> list[dict[str, Any]]:
        """One row's attributions, largest |attribution| first (the first `top_k`, or all)."""
        import numpy as np

        order = np.argsort(-np.abs(self.values[i]), kind="stable")
        return [{"feature": self.columns[j], "attribution": float(self.values[i, j])}
                for j in order[: top_k if top_k else len(order)]]


class ModelExplainer:
    """A loaded version's explainer on raw rows: its transform, its family's explainer and its baseline.

    Evaluation, the gate and `ratchet serve` all explain through this one object, built from the pyfunc that
    the checked loader returned, so the attributions a reviewer sees are the ones a served row gets.
    """

    def __init__(self, python_model: Any) -> None:
        import numpy as np

        self.transform = python_model.transform
        self.record = read_explanation_record(getattr(python_model, "explanation_path", None), self.transform)
        self.groups = column_groups(self.transform)
        self.explainer: Explainer = explainer_for(python_model, np.asarray(self.record.baseline, dtype="float32"))
        self.task = python_model.task
        self.classes = list((getattr(python_model, "target", None) or {}).get("classes") or [0, 1])

    @property
    def method(self) -> str:
        return self.explainer.method

    def describe(self) -> dict[str, Any]:
        """What a version's tags and a served explanation say about the explainer."""
        return {"method": self.explainer.method, "output_space": self.explainer.output_space,
                "exact": self.explainer.exact, "tolerance": self.explainer.tolerance,
                "baseline": self.record.baseline_kind}

    def explain(self, frame: pd.DataFrame, classes: Any = None) -> RowExplanations:
        """Raw rows' attributions on their input columns, for each row's predicted class (or class codes given)."""
        features = self.transform.apply(frame)
        return RowExplanations.from_attributions(self.explainer.explain(features, classes), self.groups,
                                                 self.record.baseline_kind)

    def class_value(self, code: int) -> Any:
        return self.classes[int(code)] if 0 <= int(code) < len(self.classes) else int(code)


def model_explainer(pyfunc_model: Any) -> ModelExplainer:
    """The explainer of a model loaded through `ml_tasks.release.model_loading.load_checked`."""
    try:
        python_model = pyfunc_model.unwrap_python_model()
    except Exception as exc:  # a compressed (TFLite) version: no Python model to differentiate or walk
        from ml_tasks.explain.explainers import ExplainerError

        raise ExplainerError(f"this version cannot be explained: it is a compressed runtime ({exc})") from exc
    return ModelExplainer(python_model)
