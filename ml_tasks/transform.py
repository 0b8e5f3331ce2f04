"""The feature transform, fitted on the training split and shipped with the model.

Serving and evaluation apply exactly this object to raw rows, so a model never
sees features prepared differently from its training data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ml_tasks.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MISSING_CATEGORY = "__missing__"


def _as_category(series: pd.Series) -> pd.Series:
    """Categories compared as text, so 1, 1.0 and '1' agree across file formats."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.astype("int64").astype(str).astype(object)

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return MISSING_CATEGORY
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return pd.Series([text(v) for v in series.tolist()], index=series.index, dtype=object)


@dataclass
class FittedTransform:
    numeric: list[str]
    medians: list[float]
    means: list[float]
    stds: list[float]
    # (column, vocabulary) pairs: a list, so the encoded column order survives JSON round trips
    categorical: list[tuple[str, list[str]]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> FittedTransform:
        values = frame[numeric].astype("float64") if numeric else None
        medians = values.median().fillna(0.0).tolist() if values is not None else []
        filled = values.fillna(dict(zip(numeric, medians, strict=False))) if values is not None else None
        means = filled.mean().tolist() if filled is not None else []
        stds = [s if s > 1e-12 else 1.0 for s in filled.std(ddof=0).tolist()] if filled is not None else []
        vocab = [(c, sorted(_as_category(frame[c]).unique().tolist())) for c in categorical]
        return cls(numeric=list(numeric), medians=medians, means=means, stds=stds, categorical=vocab)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for column, values in self.categorical:
            names.extend(f"{column}={v}" for v in values)
        return names

    @property
    def input_columns(self) -> list[str]:
        return list(self.numeric) + [column for column, _ in self.categorical]

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows to a float32 matrix; unseen categories encode as all zeros."""
        import numpy as np

        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks columns {missing}; the model expects {self.input_columns}")
        blocks = []
        if self.numeric:
            try:
                values = frame[self.numeric].astype("float64")
            except (TypeError, ValueError) as exc:
                raise DataError(f"numeric columns {self.numeric} hold non-numeric values: {exc}") from exc
            values = values.fillna(dict(zip(self.numeric, self.medians, strict=False)))
            blocks.append(((values.to_numpy() - np.asarray(self.means)) / np.asarray(self.stds)).astype("float32"))
        for column, vocab in self.categorical:
            index = {v: i for i, v in enumerate(vocab)}
            codes = np.fromiter((index.get(v, -1) for v in _as_category(frame[column])), dtype=np.int64, count=len(frame))
            block = np.zeros((len(frame), len(vocab)), dtype="float32")
            hit = codes >= 0
            block[np.nonzero(hit)[0], codes[hit]] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0), dtype="float32")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FittedTransform:
        fields = dict(payload)
        fields["categorical"] = [(str(column), list(values)) for column, values in fields["categorical"]]
        return cls(**fields)
