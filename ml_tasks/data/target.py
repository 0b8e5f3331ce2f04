"""The target column in both directions: original values to the labels models learn, and back.

Classification labels are the index of the row's value in the declaration's
`classes`, compared as text (`category_text`), so 1, 1.0, "1" and True agree
across CSV and Parquet. Regression labels are the values as float64. Rows
whose target is missing get -1 (classification) or NaN (regression):
preparation drops them and counts them. A value the declaration does not
list is refused with the column, the values and their row counts: a new class
is a change to review, not something to learn silently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ml_tasks.data.transform import MISSING_CATEGORY, category_text
from ml_tasks.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)

MISSING_LABEL = -1


def encode(values: Any, spec: DatasetSpec, where: str = "") -> np.ndarray:
    """Labels of `values` (any array-like of the target's original values): int64 codes or float64."""
    import numpy as np
    import pandas as pd

    series = pd.Series(values)
    if not spec.is_classification:
        numbers = pd.to_numeric(series, errors="coerce")
        bad = numbers.isna() & series.notna()
        if bad.any():
            examples = series[bad].astype(str).unique()[:5].tolist()
            raise DataError(f"{where or spec.name}: regression target {spec.target!r} holds {int(bad.sum())} "
                            f"non-numeric values, e.g. {examples}")
        return np.asarray(numbers.to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
    lookup = {category_text(c): i for i, c in enumerate(spec.classes)}
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = [category_text(u) for u in uniques]
    mapped = np.asarray([lookup.get(t, -2) if t != MISSING_CATEGORY else MISSING_LABEL for t in texts], dtype="int64")
    unknown = [t for t, m in zip(texts, mapped, strict=True) if m == -2]
    if unknown:
        counts = {t: int(np.count_nonzero(codes == texts.index(t))) for t in unknown[:5]}
        raise DataError(f"{where or spec.name}: target {spec.target!r} has values the declaration does not list "
                        f"(rows per value: {counts}); declared classes: {list(spec.classes)!r}")
    out = np.full(len(series), MISSING_LABEL, dtype="int64")
    present = codes >= 0
    out[present] = mapped[codes[present]]
    return out


def decode(labels: Any, spec: DatasetSpec) -> np.ndarray:
    """Original values of int codes (classification) or the floats themselves (regression)."""
    import numpy as np

    if not spec.is_classification:
        return np.asarray(labels, dtype="float64")
    return np.asarray(list(spec.classes), dtype=object)[np.asarray(labels, dtype="int64")]
