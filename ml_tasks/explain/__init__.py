"""Explainability: why a version decided, for evaluation, the gate, serving and monitoring alike.

`ModelExplainer` wraps a loaded version (one explainer per family, chosen
from what the version holds) and explains raw rows on their input columns.
"""

from ml_tasks.explain.attribution import (
    ExplanationRecord,
    ModelExplainer,
    RowExplanations,
    column_groups,
    fold,
    model_explainer,
    read_explanation_record,
    training_baseline,
    write_explanation_record,
)
from ml_tasks.explain.drift import AttributionShift, attribution_shift, ndcg
from ml_tasks.explain.explainers import (
    EXPLAINER_METHODS,
    INTEGRATED_GRADIENTS,
    LINEAR_SHAP,
    TREE_SHAP,
    Attributions,
    Explainer,
    ExplainerError,
    explainer_for,
)

__all__ = [
    "EXPLAINER_METHODS", "INTEGRATED_GRADIENTS", "LINEAR_SHAP", "TREE_SHAP", "AttributionShift", "Attributions",
    "Explainer", "attribution_shift", "ndcg",
    "ExplainerError", "ExplanationRecord", "ModelExplainer", "RowExplanations", "column_groups", "explainer_for",
    "fold", "model_explainer", "read_explanation_record", "training_baseline", "write_explanation_record",
]
