"""An HDFS folder as a store, over WebHDFS REST (the `hdfs` package's InsecureClient).

Standard WebHDFS: the NameNode answers CREATE and OPEN with a 307 redirect to
a DataNode, which the client follows. Writes go to a temporary name beside the
target and are renamed when complete, so no reader sees a partial file.
Checksums are HDFS's own (GETFILECHECKSUM, e.g. MD5-of-MD5-of-CRC32C).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from ml_tasks.storage.base import ObjectInfo, Store, safe_relative
from ml_tasks.storage.options import HdfsOptions
from ml_tasks.storage.retry import with_retries


def _transient(exc: Exception) -> bool:
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    return getattr(exc, "exception", None) in ("RetriableException", "StandbyException")


def _missing(exc: Exception) -> bool:
    return getattr(exc, "exception", None) == "FileNotFoundException"


class HdfsStore(Store):
    def __init__(self, authority: str, root: str, options: HdfsOptions) -> None:
        from hdfs import InsecureClient

        self.root = posixpath.normpath("/" + root.lstrip("/"))
        self.uri = f"hdfs://{authority}{self.root}"
        self.attempts = options.max_attempts
        self.client = InsecureClient(options.resolved_url(authority), user=options.resolved_user())

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, safe_relative(key).as_posix())

    def _retry(self, what: str, call: Any) -> Any:
        return with_retries(call, _transient, self.attempts, f"WebHDFS {what}")

    def _status(self, path: str) -> dict[str, Any] | None:
        """FileStatus, or None only when the NameNode says the path does not exist.

        (The client's own strict=False also answers None on any other error, which
        would make a busy NameNode look like an empty folder.)
        """
        from hdfs.util import HdfsError

        try:
            status: dict[str, Any] = self._retry("status", lambda: self.client.status(path))
            return status
        except HdfsError as exc:
            if _missing(exc):
                return None
            raise

    def list(self) -> Iterator[ObjectInfo]:
        if self._status(self.root) is None:
            return
        walked = self._retry("walk", lambda: list(self.client.walk(self.root, depth=0, status=True)))
        for (dirpath, _), _, files in walked:
            for name, status in sorted(files):
                if name.startswith("."):
                    continue  # temporary files of writes in progress
                key = posixpath.relpath(posixpath.join(dirpath, name), self.root)
                safe_relative(key)
                yield ObjectInfo(key, int(status["length"]))

    def checksum(self, key: str) -> str:
        found = self._retry("checksum", lambda: self.client.checksum(self._path(key)))
        return f"hdfs:{found['algorithm']}:{found['bytes']}"

    def open_read(self, key: str) -> Any:
        return self.client.read(self._path(key))

    def write(self, key: str, reader: BinaryIO, size: int) -> str:
        target = self._path(key)
        folder, name = posixpath.split(target)
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        self._retry("mkdirs", lambda: self.client.makedirs(folder))
        try:
            self.client.write(tmp, data=reader, overwrite=True)
            if self._status(target) is not None:
                self._retry("delete", lambda: self.client.delete(target))
            self._retry("rename", lambda: self.client.rename(tmp, target))
        except Exception:
            try:
                self.client.delete(tmp)
            except Exception:  # the original error matters more than this cleanup
                pass
            raise
        return self.checksum(key)

    def get_bytes(self, key: str) -> bytes | None:
        if self._status(self._path(key)) is None:
            return None
        with self.client.read(self._path(key)) as reader:
            data: bytes = reader.read()
            return data

    def delete(self, key: str) -> None:
        self._retry("delete", lambda: self.client.delete(self._path(key)))
