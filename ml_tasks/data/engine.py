"""Which engine runs a data set's validation, drift check and preparation: pandas (one process) or Spark.

A declaration names `pandas` (the default), `spark`, or `auto`: Spark when the drop's data files are larger than
the declared `spark_above_mb`. Whatever the engine, the stages write the same artifacts (the same suite's verdict,
the same `FittedTransform`, the same drift reference format), so training, evaluation and serving never know.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ml_tasks.datasets.spec import AUTO_ENGINE, PANDAS_ENGINE, SPARK_ENGINE, DatasetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    reason: str
    drop_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drop_size(folder: Path) -> int:
    from ml_tasks.io import data_files

    return sum(path.stat().st_size for path in data_files(folder))


def choose_engine(spec: DatasetSpec, folder: Path) -> EngineChoice:
    """The engine for this drop of `spec`: as declared, or by the drop's size under `auto`."""
    size = drop_size(folder) if folder.is_dir() else 0
    if spec.engine == AUTO_ENGINE:
        threshold = spec.spark_above_mb * 1024 * 1024
        engine = SPARK_ENGINE if size > threshold else PANDAS_ENGINE
        reason = f"auto: the drop's {size / 2**20:.1f} MiB is {'above' if size > threshold else 'within'} " \
                 f"spark_above_mb={spec.spark_above_mb}"
    else:
        engine, reason = spec.engine, f"declared engine {spec.engine}"
    log.info("%s: %s engine (%s)", spec.name, engine, reason)
    return EngineChoice(engine=engine, reason=reason, drop_bytes=size)
