"""Atomic writes and the reading of data files with errors that name the file.

Every output is written under a temporary name in the same folder and then
renamed, so a reader sees the whole file or none of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.constants import DATA_FILE_SUFFIXES
from ml_tasks.errors import DataError, UnreadableDataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; swap it in for `target` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(target: Path, payload: Any) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return target


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_parquet(frame: pd.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return target


def data_files(folder: Path) -> list[Path]:
    """The CSV and Parquet files of a drop, sorted so reads are deterministic."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_FILE_SUFFIXES)


def read_table(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file; any failure names the file and what is wrong."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise UnreadableDataError(f"{path.name}: the file is empty (0 bytes)")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise UnreadableDataError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except Exception as exc:  # pyarrow, pandas and csv raise many types for the same cause
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise UnreadableDataError(f"{path.name}: not readable as {kind}: {type(exc).__name__}: {exc}") from exc
    if frame.empty:
        raise UnreadableDataError(f"{path.name}: has a header but no rows")
    if path.suffix.lower() == ".csv" and frame.shape[1] == 1 and any(sep in str(frame.columns[0]) for sep in ";\t|"):
        raise UnreadableDataError(f"{path.name}: one column {frame.columns[0]!r}: wrong delimiter (expected ',')")
    return frame


def read_drop(folder: Path) -> pd.DataFrame:
    """All data files of a drop as one frame; their columns must agree."""
    import pandas as pd

    files = data_files(folder)
    if not files:
        raise DataError(f"{folder}: no CSV or Parquet files in the drop")
    frames = []
    first_columns: list[str] | None = None
    for path in files:
        frame = read_table(path)
        columns = [str(c) for c in frame.columns]
        if first_columns is None:
            first_columns = columns
        elif columns != first_columns:
            missing = sorted(set(first_columns) - set(columns))
            extra = sorted(set(columns) - set(first_columns))
            raise DataError(
                f"{path.name}: columns differ from {files[0].name} (missing {missing}, extra {extra}, or reordered)"
            )
        frames.append(frame)
    log.info("read %s rows from %s files in %s", sum(len(f) for f in frames), len(files), folder)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
