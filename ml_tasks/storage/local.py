"""A local folder as a store, with content hashes cached by (path, size, mtime).

The cache makes a no-change re-sync cost a `stat` per file, while still
comparing content: a file whose size or modification time changed is hashed
again. The S3-style ETag (MD5, or MD5 of 8 MiB part MD5s) is computed only when
a local file must be compared with an S3 object that has no sync history.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ml_tasks.io import atomic_path
from ml_tasks.storage.base import ObjectInfo, Store, safe_relative

CHUNK = 1 << 20
S3_PART_SIZE = 8 * 1024 * 1024


class _S3EtagHasher:
    """The S3 ETag of a byte stream fed in order: MD5, or MD5 of the 8 MiB parts' MD5s and "-N"."""

    def __init__(self) -> None:
        self.part = hashlib.md5()
        self.part_fill = 0
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), S3_PART_SIZE - self.part_fill)
            self.part.update(view[:take])
            self.part_fill += take
            view = view[take:]
            if self.part_fill == S3_PART_SIZE:
                self.parts.append(self.part.digest())
                self.part, self.part_fill = hashlib.md5(), 0

    def result(self) -> str:
        parts = self.parts + ([self.part.digest()] if self.part_fill or not self.parts else [])
        if len(parts) == 1:
            return parts[0].hex()
        return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def _digest_file(path: Path, with_etag: bool) -> tuple[str, str | None]:
    sha = hashlib.sha256()
    etag = _S3EtagHasher() if with_etag else None
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            if etag is not None:
                etag.update(chunk)
    return sha.hexdigest(), etag.result() if etag is not None else None


def _walk(folder: str, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    """(key, stat) of every file below `folder`: files first, then sub-folders, each sorted, like `os.walk`
    (no descent into linked folders); dot-names are skipped (temporary files of writes in progress)."""
    with os.scandir(folder) as scan:
        entries = sorted((entry for entry in scan if not entry.name.startswith(".")), key=lambda entry: entry.name)
    folders = []
    for entry in entries:
        if entry.is_dir():
            if not entry.is_symlink():
                folders.append(entry)
        else:
            yield f"{prefix}{entry.name}", entry.stat()  # one stat per file, kept for the hash cache's check
    for entry in folders:
        yield from _walk(entry.path, f"{prefix}{entry.name}/")


class HashCache:
    """(path, size, mtime_ns) → SHA-256 and, once asked for, the S3 ETag; in SQLite, shared by threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last entries on power loss is fine
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
            "sha256 TEXT, etag TEXT)"
        )

    def under(self, root: Path) -> dict[str, tuple[int, int, str, str | None]]:
        """Every entry below `root`, in one query: path -> (size, mtime_ns, SHA-256, ETag or None)."""
        prefix = str(root).rstrip(os.sep) + os.sep
        upper = prefix[:-1] + chr(ord(os.sep) + 1)  # the primary key's range of paths that start with `prefix`
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, sha256, etag FROM hashes WHERE path >= ? AND path < ?", (prefix, upper),
            ).fetchall()
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}

    def get(self, path: Path, stat: os.stat_result) -> tuple[str, str | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, etag FROM hashes WHERE path=? AND size=? AND mtime_ns=?",
                (str(path), stat.st_size, stat.st_mtime_ns),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, path: Path, stat: os.stat_result, sha256: str, etag: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                (str(path), stat.st_size, stat.st_mtime_ns, sha256, etag),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LocalStore(Store):
    def __init__(self, root: Path, cache: HashCache | None = None) -> None:
        self.root = root
        self.uri = root.as_uri() if root.is_absolute() else str(root)
        self.cache = cache
        # What the last listing saw, key -> (size, mtime_ns), and the cache's entries below the root, read in one
        # query on first use: a no-change sync then costs one stat per file (the listing's) and no further query.
        self._listed: dict[str, tuple[int, int]] = {}
        self._cached: dict[str, tuple[int, int, str, str | None]] | None = None
        self._cached_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / safe_relative(key)

    def list(self) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        listed: dict[str, tuple[int, int]] = {}
        for key, stat in _walk(str(self.root), ""):
            listed[key] = (stat.st_size, stat.st_mtime_ns)
            yield ObjectInfo(key, stat.st_size)
        self._listed = listed

    def _cached_entries(self) -> dict[str, tuple[int, int, str, str | None]]:
        if self._cached is None:
            with self._cached_lock:
                if self._cached is None:
                    self._cached = self.cache.under(self.root) if self.cache is not None else {}
        return self._cached

    def cached_checksum(self, key: str) -> str | None:
        """The SHA-256 from the cache when the file's size and mtime at listing time match; no hashing, no syscall."""
        seen = self._listed.get(key)
        if seen is None or self.cache is None:
            return None
        entry = self._cached_entries().get(str(self._path(key)))
        if entry is None or (entry[0], entry[1]) != seen:
            return None
        return f"sha256:{entry[2]}"

    def _hashes(self, key: str, with_etag: bool) -> tuple[str, str | None]:
        """(SHA-256, S3-style ETag or None), from the cache while size and mtime still match."""
        path = self._path(key)
        stat = path.stat()
        cached = self.cache.get(path, stat) if self.cache is not None else None
        if cached is not None and (cached[1] is not None or not with_etag):
            return cached
        sha, etag = _digest_file(path, with_etag)
        if self.cache is not None:
            self.cache.put(path, stat, sha, etag)
        return sha, etag

    def checksum(self, key: str) -> str:
        return f"sha256:{self._hashes(key, with_etag=False)[0]}"

    def s3_etag(self, key: str) -> str:
        """The ETag S3 gives this file uploaded in 8 MiB parts: to compare with an object without history."""
        etag = self._hashes(key, with_etag=True)[1]
        assert etag is not None
        return etag

    def open_read(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def local_file(self, key: str) -> Path:
        return self._path(key)

    def write(self, key: str, reader: BinaryIO, size: int) -> str:
        target = self._path(key)
        sha = hashlib.sha256()
        with atomic_path(target) as tmp:
            with tmp.open("wb") as writer:
                while chunk := reader.read(CHUNK):
                    sha.update(chunk)
                    writer.write(chunk)
        if self.cache is not None:
            self.cache.put(target, target.stat(), sha.hexdigest(), None)
        return f"sha256:{sha.hexdigest()}"

    def write_file(self, key: str, source: Path) -> str:
        with source.open("rb") as reader:
            return self.write(key, reader, source.stat().st_size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
