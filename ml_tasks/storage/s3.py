"""An S3 bucket prefix as a store (boto3).

Credentials come from the options (an Airflow Connection) or the standard AWS
chain (environment, profiles); the endpoint from the options or
`AWS_ENDPOINT_URL`. Retries use botocore's standard mode, which backs off on
throttling (SlowDown, 503) and transient errors. Small objects are one PUT
(atomic by nature, and the reply carries the ETag); large ones are multipart
uploads, visible only once completed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from ml_tasks.storage.base import ObjectInfo, Store, safe_relative
from ml_tasks.storage.local import S3_PART_SIZE
from ml_tasks.storage.options import S3Options


def make_client(options: S3Options, pool_size: int) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id or None,
        aws_secret_access_key=options.secret_access_key or None,
        region_name=options.region or None,
    )
    config = Config(
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if options.endpoint_url else None,
    )
    return session.client("s3", endpoint_url=options.endpoint_url or None, config=config)


def transfer_config(max_concurrency: int) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE,
                          max_concurrency=max_concurrency, use_threads=max_concurrency > 1)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, options: S3Options, pool_size: int = 32,
                 part_concurrency: int = 3) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = make_client(options, pool_size)
        self.transfer = transfer_config(part_concurrency)

    def _key(self, key: str) -> str:
        relative = safe_relative(key).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def list(self) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                name = item["Key"][len(start):]
                if not name or name.endswith("/"):
                    continue  # the prefix itself, or a folder marker
                safe_relative(name)  # a key that would leave the destination is refused here, by name
                yield ObjectInfo(name, int(item["Size"]), f"etag:{item['ETag'].strip(chr(34))}")

    def checksum(self, key: str) -> str:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return f"etag:{head['ETag'].strip(chr(34))}"

    def open_read(self, key: str) -> Any:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return contextlib.closing(body)

    def write(self, key: str, reader: BinaryIO, size: int) -> str:
        if size < S3_PART_SIZE:
            reply = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=reader.read(), ContentLength=size)
            return f"etag:{reply['ETag'].strip(chr(34))}"
        self.client.upload_fileobj(reader, self.bucket, self._key(key), Config=self.transfer)
        return self.checksum(key)

    def write_file(self, key: str, source: Path) -> str:
        size = source.stat().st_size
        if size < S3_PART_SIZE:
            with source.open("rb") as handle:
                return self.write(key, handle, size)
        self.client.upload_file(str(source), self.bucket, self._key(key), Config=self.transfer)
        return self.checksum(key)

    def download_to(self, key: str, target: Path) -> None:
        """Ranged, parallel download of a large object into a local file."""
        self.client.download_file(self.bucket, self._key(key), str(target), Config=self.transfer)

    def copy_within(self, source: S3Store, key: str) -> str:
        """Server-side copy from another prefix on the same endpoint."""
        self.client.copy({"Bucket": source.bucket, "Key": source._key(key)}, self.bucket, self._key(key),
                         Config=self.transfer)
        return self.checksum(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return body.read()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def close(self) -> None:
        self.client.close()
