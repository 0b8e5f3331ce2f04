"""What every store offers the sync: list, read, write atomically, delete, checksum.

Keys are relative POSIX paths below a store's root. A key from outside (a
listing, an object name, a parameter) is checked by `safe_relative` before it
becomes a path, so nothing is written outside the destination.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlparse

from ml_tasks.errors import ConfigError, UnsafePathError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # The store's own content checksum, prefixed by its kind: "sha256:..", "etag:..", "hdfs:..".
    # None when listing does not give it (HDFS); `Store.checksum` then asks for it.
    checksum: str | None = None


def safe_relative(key: str) -> PurePosixPath:
    """An object key as a relative path that cannot leave its root."""
    if not key or "\\" in key or key.startswith("/") or "\x00" in key:
        raise UnsafePathError(f"refusing key {key!r}: absolute, empty or with backslashes")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"refusing key {key!r}: empty, '.' or '..' segments would leave the destination")
    return PurePosixPath(*parts)


def split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, authority, path) of a storage URI; a plain path is file://."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{uri}: file URIs must be local (file:///path)")
        from urllib.parse import unquote

        return "file", "", unquote(parsed.path) if parsed.scheme else uri
    if parsed.scheme in ("s3", "hdfs"):
        if not parsed.netloc:
            raise ConfigError(f"{uri}: {parsed.scheme}:// needs a {'bucket' if parsed.scheme == 's3' else 'host'}")
        return parsed.scheme, parsed.netloc, parsed.path.lstrip("/") if parsed.scheme == "s3" else parsed.path or "/"
    raise ConfigError(f"{uri}: unsupported scheme {parsed.scheme!r} (file://, s3://, hdfs://)")


class Store(abc.ABC):
    """One storage root: a local folder, an S3 bucket prefix, or an HDFS folder."""

    uri: str

    @abc.abstractmethod
    def list(self) -> Iterator[ObjectInfo]:
        """Every object below the root, recursively, keys relative to it."""

    @abc.abstractmethod
    def open_read(self, key: str) -> Any:
        """A context manager giving a streaming binary reader of one object."""

    @abc.abstractmethod
    def write(self, key: str, reader: BinaryIO, size: int) -> str:
        """Write an object atomically (no reader ever sees it partial); return its checksum."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def checksum(self, key: str) -> str:
        """The store's own content checksum of one object (see ObjectInfo.checksum)."""

    def cached_checksum(self, key: str) -> str | None:
        """`checksum` when it is known without reading the object (a cache), else None; after `list`."""
        return None

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) atomically."""
        import io

        self.write(key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, or None when it does not exist."""
        try:
            with self.open_read(key) as reader:
                data: bytes = reader.read()
                return data
        except FileNotFoundError:
            return None

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""
