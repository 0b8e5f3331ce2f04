"""The feature transform, fitted on the training split and shipped with the model.

Serving and evaluation apply exactly this object to raw rows, so a model never
sees features prepared differently from its training data: the imputed values
and the outlier clip bounds are part of it, fitted on the training split only.
Preparation feeds the same per-column methods (`numeric_into`, `one_hot_into`)
from column arrays, so training and serving share one code path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MISSING_CATEGORY = "__missing__"
MIN_STD = 1e-12
# Up to this many categories a column is one-hot encoded by comparisons; beyond, by scattered writes.
ONE_HOT_BY_COMPARISON = 64


def category_text(value: Any) -> str:
    """Categories compared as text, so 1, 1.0 and '1' agree across file formats."""
    if value is None or (isinstance(value, float) and value != value):
        return MISSING_CATEGORY
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def category_codes(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes per row (-1 where missing) and the text of each code: one Python call per distinct value, not per row."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [category_text(v) for v in uniques.tolist()]


def _as_category(series: pd.Series) -> pd.Series:
    """The category text of every row ("__missing__" where missing)."""
    import numpy as np
    import pandas as pd

    codes, labels = category_codes(series)
    return pd.Series(np.asarray([*labels, MISSING_CATEGORY], dtype=object)[codes], index=series.index, dtype=object)


def _numeric_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A writable float64 copy of one numeric column, NaN where missing."""
    import numpy as np

    try:
        return np.array(frame[column].astype("float64"), dtype="float64", copy=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"numeric column {column!r} holds non-numeric values: {exc}") from exc


def outlier_bounds(values: np.ndarray, method: str, quantiles: tuple[float, float] = (0.001, 0.999),
                   iqr_factor: float = 1.5) -> tuple[float, float]:
    """Outlier bounds of one numeric column (missing values ignored): quantiles, or Tukey's IQR fences."""
    import numpy as np

    present = values[~np.isnan(values)]
    if present.size == 0:
        return -math.inf, math.inf
    if method == "quantile":
        low, high = np.quantile(present, list(quantiles))
        return float(low), float(high)
    if method == "iqr":
        q1, q3 = np.quantile(present, [0.25, 0.75])
        return float(q1 - iqr_factor * (q3 - q1)), float(q3 + iqr_factor * (q3 - q1))
    raise ConfigError(f"unknown outlier method {method!r}; known: quantile, iqr")


@dataclass(frozen=True)
class NumericFit:
    median: float
    fill: float
    mean: float
    std: float
    bounds: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_numeric(values: np.ndarray, missing_policy: str = "median", bounds: tuple[float, float] | None = None) -> NumericFit:
    """One numeric column's fit on the training values (not modified): clipped to `bounds` if given, imputed with
    the median or mean of what is present, then its mean and std. "drop_row" and "fail" leave nothing missing in
    training; serving falls back to the median."""
    import numpy as np

    v = np.array(values, dtype="float64", copy=True)
    if bounds is not None:
        np.clip(v, bounds[0], bounds[1], out=v)
    missing = np.isnan(v)
    present = v[~missing] if missing.any() else v
    median = float(np.median(present)) if present.size else 0.0
    fill = float(present.mean()) if missing_policy == "mean" and present.size else median
    v[missing] = fill
    std = float(v.std()) if v.size else 1.0
    return NumericFit(median=median, fill=fill, mean=float(v.mean()) if v.size else 0.0,
                      std=std if std > MIN_STD else 1.0, bounds=bounds)


def fit_categorical(codes: np.ndarray, labels: list[str], missing_policy: str = "constant") -> tuple[list[str], str]:
    """One categorical column's vocabulary (sorted categories seen in training) and the category a missing value takes:
    "__missing__", or the most frequent one (ties: the first in sorted order)."""
    import numpy as np

    counts = np.bincount(codes[codes >= 0], minlength=len(labels)).tolist()
    seen: dict[str, int] = {}
    for label, count in zip(labels, counts, strict=True):
        if count:
            seen[label] = seen.get(label, 0) + count
    return fit_categorical_counts(seen, int(np.count_nonzero(codes < 0)), missing_policy)


def fit_categorical_counts(counts: dict[str, int], missing: int, missing_policy: str = "constant") -> tuple[list[str], str]:
    """`fit_categorical` from the training rows' count per category text and their number of missing values
    (what an engine that aggregates, such as Spark, has instead of codes)."""
    seen = {label: count for label, count in counts.items() if count}
    fill = MISSING_CATEGORY
    if missing_policy == "most_frequent" and seen:
        fill = max(sorted(seen), key=seen.__getitem__)
    if missing:
        seen[fill] = seen.get(fill, 0)
    return sorted(seen), fill


def standardise_into(values: np.ndarray, fill: float, bounds: tuple[float, float] | None, mean: float, std: float,
                     out: np.ndarray) -> int:
    """Impute, clip, standardise `values` (overwritten) into `out`; returns how many values were clipped."""
    import numpy as np

    missing = np.isnan(values)
    if missing.any():
        values[missing] = fill
    clipped = 0
    if bounds is not None:
        clipped = int(np.count_nonzero(values < bounds[0])) + int(np.count_nonzero(values > bounds[1]))
        if clipped:
            np.clip(values, bounds[0], bounds[1], out=values)
    values -= mean
    values /= std
    out[...] = values
    return clipped


@dataclass
class FittedTransform:
    numeric: list[str]
    medians: list[float]
    means: list[float]
    stds: list[float]
    # (column, vocabulary) pairs: a list, so the encoded column order survives JSON round trips
    categorical: list[tuple[str, list[str]]]
    # Value imputed for a missing numeric, per column; empty (transforms saved before policies): the medians.
    numeric_fill: list[float] = field(default_factory=list)
    # Category imputed for a missing categorical, per column; empty: "__missing__".
    categorical_fill: list[str] = field(default_factory=list)
    # Outlier clip bounds per numeric column; empty: no clipping.
    clip_low: list[float] = field(default_factory=list)
    clip_high: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], *, numeric_missing: str = "median",
            categorical_missing: str = "constant", clip: dict[str, tuple[float, float]] | None = None) -> FittedTransform:
        """Fit on the training rows of `frame` (see `fit_columns`)."""
        return cls.fit_columns(
            ((c, _numeric_values(frame, c)) for c in numeric), ((c, *category_codes(frame[c])) for c in categorical),
            numeric_missing=numeric_missing, categorical_missing=categorical_missing, clip=clip,
        )

    @classmethod
    def fit_columns(cls, numeric: Iterable[tuple[str, np.ndarray]], categorical: Iterable[tuple[str, np.ndarray, list[str]]],
                    *, numeric_missing: str = "median", categorical_missing: str = "constant",
                    clip: dict[str, tuple[float, float]] | None = None) -> FittedTransform:
        """Fit from training columns given one at a time (so a caller holds one column copy at a time).

        `numeric` yields (name, float64 values); `categorical` yields (name, codes, text of each code).
        """
        numeric_fits = [(c, fit_numeric(v, numeric_missing, clip[c] if clip is not None else None)) for c, v in numeric]
        categorical_fits = [(c, *fit_categorical(codes, labels, categorical_missing)) for c, codes, labels in categorical]
        return cls.from_fits(numeric_fits, categorical_fits)

    @classmethod
    def from_fits(cls, numeric: list[tuple[str, NumericFit]], categorical: list[tuple[str, list[str], str]]) -> FittedTransform:
        """Assemble the transform from per-column fits: (name, NumericFit) and (name, vocabulary, fill category)."""
        clipped = any(fit.bounds is not None for _, fit in numeric)
        return cls(
            numeric=[c for c, _ in numeric], medians=[f.median for _, f in numeric], means=[f.mean for _, f in numeric],
            stds=[f.std for _, f in numeric], categorical=[(c, vocab) for c, vocab, _ in categorical],
            numeric_fill=[f.fill for _, f in numeric], categorical_fill=[fill for _, _, fill in categorical],
            clip_low=[(f.bounds or (-math.inf, math.inf))[0] for _, f in numeric] if clipped else [],
            clip_high=[(f.bounds or (-math.inf, math.inf))[1] for _, f in numeric] if clipped else [],
        )

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for column, values in self.categorical:
            names.extend(f"{column}={v}" for v in values)
        return names

    @property
    def input_columns(self) -> list[str]:
        return list(self.numeric) + [column for column, _ in self.categorical]

    def numeric_into(self, index: int, values: np.ndarray, out: np.ndarray) -> int:
        """Impute, clip and standardise numeric column `index` into `out`; returns how many values were clipped.

        `values` is a float64 scratch array: it is overwritten.
        """
        fill = self.numeric_fill[index] if self.numeric_fill else self.medians[index]
        bounds = (self.clip_low[index], self.clip_high[index]) if self.clip_low else None
        return standardise_into(values, fill, bounds, self.means[index], self.stds[index], out)

    def one_hot_into(self, index: int, codes: np.ndarray, labels: list[str], out: np.ndarray) -> None:
        """One-hot categorical column `index` into `out` (rows x its vocabulary); unseen categories stay all zeros.

        `codes` index `labels` (-1: missing, which takes the fitted fill category).
        """
        import numpy as np

        _, vocab = self.categorical[index]
        fill = self.categorical_fill[index] if self.categorical_fill else MISSING_CATEGORY
        position = {v: i for i, v in enumerate(vocab)}
        lookup = np.asarray([position.get(label, -1) for label in labels] + [position.get(fill, -1)], dtype=np.int64)
        hits = lookup[codes]  # code -1 picks the last entry: the fill
        if len(vocab) <= ONE_HOT_BY_COMPARISON:
            for i in range(len(vocab)):  # one sequential pass per category beats scattered writes
                np.equal(hits, i, out=out[:, i], casting="unsafe")
            return
        out[...] = 0.0
        rows = np.flatnonzero(hits >= 0)
        out[rows, hits[rows]] = 1.0

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows to a float32 matrix; unseen categories encode as all zeros."""
        import numpy as np

        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks columns {missing}; the model expects {self.input_columns}")
        out = np.empty((len(frame), len(self.feature_names)), dtype="float32")
        for j, column in enumerate(self.numeric):
            self.numeric_into(j, _numeric_values(frame, column), out[:, j])
        offset = len(self.numeric)
        for k, (column, vocab) in enumerate(self.categorical):
            codes, labels = category_codes(frame[column])
            self.one_hot_into(k, codes, labels, out[:, offset:offset + len(vocab)])
            offset += len(vocab)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FittedTransform:
        fields = dict(payload)
        fields["categorical"] = [(str(column), list(values)) for column, values in fields["categorical"]]
        return cls(**fields)
