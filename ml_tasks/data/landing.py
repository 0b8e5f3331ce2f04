"""Land drops where the nightly DAG looks for them: `landing/<dataset>/<date>/`.

Used by the demo (the ACS survey years as nights), by tests and benchmarks
(the synthetic generator), and by data engineers through `ratchet land`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.config import safe_key
from ml_tasks.errors import ConfigError
from ml_tasks.io import atomic_dir
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def landing_dir(dataset: str, date: str) -> Path:
    return get_settings().landing / safe_key(dataset) / safe_key(date)


def land_frame(frame: pd.DataFrame, dataset: str, date: str, file_format: str = "parquet", parts: int = 1) -> Path:
    """Write `frame` as the drop of `date`, replacing any earlier drop of that date whole."""
    import numpy as np

    if file_format not in ("parquet", "csv"):
        raise ConfigError(f"landing format must be parquet or csv, got {file_format!r}")
    target = landing_dir(dataset, date)
    with atomic_dir(target) as tmp:
        for i, chunk in enumerate(np.array_split(np.arange(len(frame)), max(1, parts))):
            part = frame.iloc[chunk]
            if file_format == "csv":
                part.to_csv(tmp / f"part-{i:03d}.csv", index=False)
            else:
                part.to_parquet(tmp / f"part-{i:03d}.parquet", index=False)
    log.info("landed %s rows of %s at %s", len(frame), dataset, target)
    return target
