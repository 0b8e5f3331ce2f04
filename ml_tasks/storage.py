"""Copy a drop from where it landed into the run's staging area, with a manifest.

The sync is incremental by content (SHA-256), writes every file under a
temporary name and renames it, removes staged files the source no longer has,
and writes `manifest.json` last: a consumer that sees the manifest knows the
set is whole.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from ml_tasks.constants import DATA_FILE_SUFFIXES, MANIFEST_FILE, RAW_DIR
from ml_tasks.errors import ConfigError, DataError, UnsafePathError
from ml_tasks.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SyncResult:
    source_uri: str
    staging_uri: str
    manifest_uri: str
    files: int
    bytes: int
    copied: int
    reused: int
    deleted: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def local_path(uri: str) -> Path:
    """A `file://` URI or plain path as a Path; other schemes are refused by name."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{uri}: file URIs must be local (file:///path)")
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    if parsed.scheme in ("s3", "hdfs"):
        raise ConfigError(f"{uri}: {parsed.scheme}:// sources are not supported by this build yet; use file://")
    raise ConfigError(f"{uri}: unsupported scheme {parsed.scheme!r} (file://, s3://, hdfs://)")


def safe_relative(key: str) -> PurePosixPath:
    """An object key as a relative path that cannot leave its root."""
    if not key or "\\" in key or key.startswith("/") or "\x00" in key:
        raise UnsafePathError(f"refusing key {key!r}: absolute, empty or with backslashes")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"refusing key {key!r}: empty, '.' or '..' segments would leave the destination")
    return PurePosixPath(*parts)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_with_digest(src: Path, dst: Path) -> str:
    """Stream `src` to a temporary file beside `dst`, hashing as it goes, then rename."""
    digest = hashlib.sha256()
    with atomic_path(dst) as tmp:
        with src.open("rb") as reader, tmp.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        shutil.copystat(src, tmp)
    return digest.hexdigest()


def sync_drop(source_uri: str, staging_dir: Path) -> SyncResult:
    """Mirror the data files under `source_uri` into `staging_dir/raw` and write the manifest."""
    source = local_path(source_uri)
    if not source.is_dir():
        raise DataError(f"{source_uri}: the drop folder does not exist")
    raw = staging_dir / RAW_DIR
    manifest_path = staging_dir / MANIFEST_FILE
    previous = read_json(manifest_path) if manifest_path.is_file() else {"files": {}}
    # The manifest is rewritten last; until then a reader must not trust an old one.
    manifest_path.unlink(missing_ok=True)

    entries: dict[str, dict[str, object]] = {}
    copied = reused = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in DATA_FILE_SUFFIXES:
            continue
        relative = safe_relative(path.relative_to(source).as_posix())
        target = raw / relative
        source_digest = file_sha256(path)
        known = previous["files"].get(str(relative))
        if target.is_file() and known and known["sha256"] == source_digest and file_sha256(target) == source_digest:
            reused += 1
            digest = source_digest
        else:
            digest = _copy_with_digest(path, target)
            if digest != source_digest:
                raise DataError(f"{path}: changed while it was being copied; sync again")
            copied += 1
        entries[str(relative)] = {"sha256": digest, "bytes": target.stat().st_size}
    if not entries:
        raise DataError(f"{source_uri}: no CSV or Parquet files in the drop")

    deleted = 0
    if raw.is_dir():
        for stale in sorted(p for p in raw.rglob("*") if p.is_file()):
            if stale.relative_to(raw).as_posix() not in entries:
                stale.unlink()
                deleted += 1

    total = sum(int(str(e["bytes"])) for e in entries.values())
    write_json(manifest_path, {"source_uri": source_uri, "files": entries, "total_bytes": total})
    log.info("synced %s: %s files (%s copied, %s reused, %s deleted), %s bytes",
             source_uri, len(entries), copied, reused, deleted, total)
    return SyncResult(
        source_uri=source_uri,
        staging_uri=raw.as_uri(),
        manifest_uri=manifest_path.as_uri(),
        files=len(entries),
        bytes=total,
        copied=copied,
        reused=reused,
        deleted=deleted,
    )
