"""Named ways a drop goes bad, used by the demo's third night and by tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.datasets import DatasetSpec

CORRUPTIONS = (
    "missing_column", "extra_column", "reordered_columns", "wrong_type", "nulls", "out_of_range", "unit_change",
    "unseen_category", "unseen_label", "duplicate_flood",
)


def corrupt(frame: pd.DataFrame, spec: DatasetSpec, kind: str, seed: int = 0) -> pd.DataFrame:
    """A copy of `frame` damaged in one named way."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = frame.copy()
    numeric = spec.numeric_features[0]
    categorical = spec.categorical_features[0]
    if kind == "missing_column":
        return out.drop(columns=[categorical])
    if kind == "extra_column":
        out["comment"] = "free text nobody declared"
        return out
    if kind == "reordered_columns":
        return out[list(reversed(out.columns))]
    if kind == "unseen_label":
        rows = rng.random(len(out)) < 0.01
        out[spec.target] = out[spec.target].where(~rows, 2)
        return out
    if kind == "duplicate_flood":
        # a loader that replays half of the rows: every replayed row now has a twin
        replayed = out.sample(frac=0.5, random_state=seed)
        return pd.concat([out, replayed], ignore_index=True)
    if kind == "wrong_type":
        out[numeric] = out[numeric].map(lambda v: f"{v:.1f} units")
        return out
    if kind == "nulls":
        rows = rng.random(len(out)) < 0.3
        out[numeric] = out[numeric].astype("float64").mask(rows)
        return out
    if kind == "out_of_range":
        rows = rng.random(len(out)) < 0.05
        out[numeric] = out[numeric].astype("float64").where(~rows, 1e6)
        return out
    if kind == "unit_change":
        # e.g. ages recorded in months instead of years
        out[numeric] = out[numeric].astype("float64") * 12.0
        return out
    if kind == "unseen_category":
        rows = rng.random(len(out)) < 0.1
        out[categorical] = out[categorical].astype(object).where(~rows, "__never_seen__")
        return out
    raise ConfigError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
