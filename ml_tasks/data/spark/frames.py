"""A staged drop as one Spark DataFrame, with the pandas engine's checks and messages (file named, cause said).

Each file's header or Parquet footer is read on the driver first (bytes, not rows), so an empty file, an unreadable
one, or files whose columns disagree are refused before any job runs, with the same wording as `ml_tasks.io`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.errors import DataError, UnreadableDataError
from ml_tasks.io import data_files

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def _columns_of(path: Path) -> list[str]:
    """The columns of one file from its header or footer; an empty or unreadable file raises naming it."""
    import csv

    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise UnreadableDataError(f"{path.name}: the file is empty (0 bytes)")
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                first = next(reader, None)
        except UnicodeDecodeError as exc:
            raise UnreadableDataError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if not header:
            raise UnreadableDataError(f"{path.name}: not readable as CSV: no header")
        if first is None:
            raise UnreadableDataError(f"{path.name}: has a header but no rows")
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            raise UnreadableDataError(f"{path.name}: one column {header[0]!r}: wrong delimiter (expected ',')")
        return header
    try:
        metadata = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        raise UnreadableDataError(f"{path.name}: not readable as Parquet: {type(exc).__name__}: {exc}") from exc
    if metadata.num_rows == 0:
        raise UnreadableDataError(f"{path.name}: has a header but no rows")
    return [n for n in metadata.schema.to_arrow_schema().names if not n.startswith("__index_level_")]


def read_drop(spark: SparkSession, folder: Path) -> DataFrame:
    """All data files of a drop as one DataFrame (Parquet and CSV may mix); their columns must agree."""
    files = data_files(folder)
    if not files:
        raise DataError(f"{folder}: no CSV or Parquet files in the drop")
    first_columns: list[str] | None = None
    for path in files:
        columns = _columns_of(path)
        if first_columns is None:
            first_columns = columns
        elif columns != first_columns:
            missing = sorted(set(first_columns) - set(columns))
            extra = sorted(set(columns) - set(first_columns))
            raise DataError(f"{path.name}: columns differ from {files[0].name} (missing {missing}, extra {extra}, "
                            f"or reordered)")
    assert first_columns is not None
    parquet = [str(p) for p in files if p.suffix.lower() != ".csv"]
    csv_files = [str(p) for p in files if p.suffix.lower() == ".csv"]
    parts: list[DataFrame] = []
    if parquet:
        parts.append(spark.read.parquet(*parquet))
    if csv_files:
        parts.append(spark.read.csv(csv_files, header=True, inferSchema=True, encoding="UTF-8", mode="FAILFAST"))
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part, allowMissingColumns=False)
    log.info("reading %s files of %s with Spark", len(files), folder)
    return frame.select(*first_columns)
