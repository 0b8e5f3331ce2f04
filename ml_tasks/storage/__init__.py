"""One storage interface over file://, s3:// and hdfs://, and the sync between any two.

`sync(src, dst)` is the capability (CLI `ratchet sync`, DAG `storage_sync`);
`sync_drop` is the first task of every nightly run: it mirrors a drop into
the run's local staging area with the manifest beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_tasks.constants import DATA_FILE_SUFFIXES, MANIFEST_FILE, RAW_DIR
from ml_tasks.storage.base import ObjectInfo, Store, safe_relative, split_uri
from ml_tasks.storage.options import HdfsOptions, S3Options, StorageOptions
from ml_tasks.storage.sync import MANIFEST_NAME, StorageError, SyncResult, open_store, sync

__all__ = [
    "MANIFEST_NAME", "HdfsOptions", "ObjectInfo", "S3Options", "StorageError", "StorageOptions", "Store",
    "SyncResult", "local_path", "open_store", "safe_relative", "split_uri", "sync", "sync_drop",
]


def local_path(uri: str) -> Path:
    """A `file://` URI or plain path as a Path; other schemes are refused by name."""
    from ml_tasks.errors import ConfigError

    scheme, _, path = split_uri(uri)
    if scheme != "file":
        raise ConfigError(f"{uri}: a local path is needed here, not {scheme}://")
    return Path(path)


def is_data_file(key: str) -> bool:
    return key.lower().endswith(DATA_FILE_SUFFIXES)


def sync_drop(source_uri: str, staging_dir: Path, options: StorageOptions | None = None) -> dict[str, Any]:
    """Mirror a drop's CSV/Parquet files into `staging_dir/raw`; the manifest goes beside it, last."""
    result = sync(source_uri, (staging_dir / RAW_DIR).as_uri(), delete=True, options=options,
                  include=is_data_file, manifest_path=staging_dir / MANIFEST_FILE, min_files=1)
    return {**result.to_dict(), "staging_uri": (staging_dir / RAW_DIR).as_uri()}
