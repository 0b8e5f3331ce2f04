"""How far what drives a model has moved: NDCG of one attribution ranking against a reference.

As SageMaker Clarify measures feature-attribution drift: the reference's
global attributions (mean |attribution| per column) are the relevance of each
column; the current ranking's top k is scored by DCG with those relevances and
divided by the ideal DCG (the reference's own top k). 1.0 is the same order of
the same features; a feature that drives the current model but not the
reference adds nothing, and the score falls as the reference's top features
sink. Used by the gate (candidate against champion, at evaluation) and by
monitoring (served rows against the champion's evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ml_tasks.constants import ATTRIBUTION_TOP_K


def ndcg(reference: Mapping[str, float], current_ranking: Sequence[str], k: int = ATTRIBUTION_TOP_K) -> float:
    """NDCG@k of `current_ranking` (columns, most important first) with `reference`'s magnitudes as relevance."""
    relevance = {column: abs(float(value)) for column, value in reference.items()}
    ideal = sorted(relevance.values(), reverse=True)[:k]
    idcg = sum(value / math.log2(i + 2) for i, value in enumerate(ideal))
    if idcg <= 0.0:  # the reference attributes nothing to any column: no ranking to drift from
        return 1.0
    dcg = sum(relevance.get(column, 0.0) / math.log2(i + 2) for i, column in enumerate(list(current_ranking)[:k]))
    return float(dcg / idcg)


def magnitudes(global_attributions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """[{"feature", "mean_abs_attribution"}, ...] (as `RowExplanations.global_importance` gives) to a mapping."""
    return {str(entry["feature"]): float(entry["mean_abs_attribution"]) for entry in global_attributions}


@dataclass(frozen=True)
class AttributionShift:
    """NDCG of a current ranking against a reference, against a declared floor (None: measured, not judged)."""

    ndcg: float
    k: int
    threshold: float | None
    reference_top: list[str]
    current_top: list[str]

    @property
    def shifted(self) -> bool:
        return self.threshold is not None and self.ndcg < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shifted": self.shifted}


def attribution_shift(reference: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]],
                      threshold: float | None = None, k: int = ATTRIBUTION_TOP_K) -> AttributionShift:
    """Compare two global attributions (lists as `global_importance` gives them, largest first)."""
    reference_mag = magnitudes(reference)
    current_ranking = [str(entry["feature"]) for entry in sorted(
        current, key=lambda e: -float(e["mean_abs_attribution"]))]
    reference_ranking = sorted(reference_mag, key=lambda c: -reference_mag[c])
    return AttributionShift(ndcg=ndcg(reference_mag, current_ranking, k), k=k, threshold=threshold,
                            reference_top=reference_ranking[:k], current_top=current_ranking[:k])
