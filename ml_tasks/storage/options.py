"""Typed storage options: endpoints and credentials, from Airflow Connections or the environment.

Secrets are `repr=False`, so an options object can be logged without leaking
them. Empty fields fall back to the standard chains: the AWS environment and
profiles for S3, `HADOOP_USER_NAME` and `RATCHET_WEBHDFS_URL` for HDFS.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    region: str | None = None
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # "when_supported": every upload carries a CRC32 the server verifies (end-to-end integrity, and S3 then
    # stores per-part checksums instead of computing a full-object one). "when_required" for S3-compatible
    # servers that reject checksum headers.
    request_checksums: str = "when_supported"


@dataclass(frozen=True)
class HdfsOptions:
    # WebHDFS base URL of the NameNode, e.g. http://namenode:9870; default: from the hdfs:// URI.
    url: str | None = None
    user: str | None = None
    max_attempts: int = 5

    def resolved_url(self, authority: str) -> str:
        if self.url:
            return self.url.rstrip("/")
        from ml_tasks.environment_variables import RATCHET_WEBHDFS_URL

        url = RATCHET_WEBHDFS_URL.get()
        if url is not None:
            return url.rstrip("/")
        host = authority if ":" in authority else f"{authority}:9870"
        return f"http://{host}"

    def resolved_user(self) -> str | None:
        from ml_tasks.environment_variables import HADOOP_USER_NAME

        return self.user or HADOOP_USER_NAME.get() or None


@dataclass(frozen=True)
class StorageOptions:
    s3: S3Options = field(default_factory=S3Options)
    hdfs: HdfsOptions = field(default_factory=HdfsOptions)
    # Concurrent object transfers (a bounded thread pool).
    workers: int = 16
