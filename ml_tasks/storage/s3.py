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
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from ml_tasks.storage.base import ObjectInfo, Store, safe_relative
from ml_tasks.storage.local import S3_PART_SIZE
from ml_tasks.storage.options import S3Options


def _parse_timestamp(value: Any) -> Any:
    """An ISO 8601 UTC timestamp ("2024-05-01T12:00:00.000Z", as S3 lists them) as an aware datetime;
    anything else (RFC 822 headers, epoch seconds) by botocore's own parser."""
    if isinstance(value, str) and value.endswith("Z") and len(value) >= 20 and value[10] == "T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

    return DEFAULT_TIMESTAMP_PARSER(value)


def make_client(options: S3Options, pool_size: int) -> Any:
    """A botocore S3 client. (boto3 itself is not imported: it costs start-up time in every process,
    which is most of a no-change re-sync; its transfer manager is loaded for large objects only.)"""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    # Timestamps (LastModified of every listed object) the quick way; botocore's dateutil parsing costs
    # more than the rest of parsing a listing.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    if options.access_key_id and options.secret_access_key:
        session.set_credentials(options.access_key_id, options.secret_access_key)
    config = Config(
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        request_checksum_calculation=options.request_checksums,
        response_checksum_validation=options.request_checksums,
        s3={"addressing_style": "path"} if options.endpoint_url else None,
    )
    return session.create_client("s3", region_name=options.region or None, endpoint_url=options.endpoint_url or None,
                                 config=config)


def transfer(client: Any, max_concurrency: int) -> Any:
    """s3transfer's manager (multipart uploads, ranged downloads, copies) over our client."""
    from s3transfer.manager import TransferConfig, TransferManager

    config = TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE,
                            max_request_concurrency=max_concurrency)
    return TransferManager(client, config)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, options: S3Options, pool_size: int = 32,
                 part_concurrency: int = 4) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = make_client(options, pool_size)
        self.part_concurrency = part_concurrency
        self._transfer: Any = None

    @property
    def transfer(self) -> Any:
        if self._transfer is None:
            self._transfer = transfer(self.client, self.part_concurrency)
        return self._transfer

    def _key(self, key: str) -> str:
        relative = safe_relative(key).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def list(self) -> Iterator[ObjectInfo]:
        start = f"{self.prefix}/" if self.prefix else ""
        request = {"Bucket": self.bucket, "Prefix": start}
        while True:  # pages by hand: botocore's paginator loads its own model first
            page = self.client.list_objects_v2(**request)
            for item in page.get("Contents", []):
                name = item["Key"][len(start):]
                if not name or name.endswith("/"):
                    continue  # the prefix itself, or a folder marker
                safe_relative(name)  # a key that would leave the destination is refused here, by name
                yield ObjectInfo(name, int(item["Size"]), f"etag:{item['ETag'].strip(chr(34))}")
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            if token == request.get("ContinuationToken"):
                raise RuntimeError(f"listing {self.uri}: the server repeated its continuation token")
            request["ContinuationToken"] = token

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
        # a stream of unknown provenance (HDFS, another S3): multipart from the stream
        self.transfer.upload(reader, self.bucket, self._key(key)).result()
        return self.checksum(key)

    def write_file(self, key: str, source: Path) -> str:
        size = source.stat().st_size
        if size < S3_PART_SIZE:
            with source.open("rb") as handle:
                return self.write(key, handle, size)
        self.transfer.upload(str(source), self.bucket, self._key(key)).result()
        return self.checksum(key)

    def download_to(self, key: str, target: Path) -> None:
        """Ranged, parallel download of a large object into a local file."""
        with target.open("wb") as handle:
            self.transfer.download(self.bucket, self._key(key), handle).result()

    def copy_within(self, source: S3Store, key: str) -> str:
        """Server-side copy from another prefix on the same endpoint."""
        copy_source = {"Bucket": source.bucket, "Key": source._key(key)}
        self.transfer.copy(copy_source, self.bucket, self._key(key)).result()
        return self.checksum(key)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:  # botocore's modeled error
            return None
        return body.read()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def close(self) -> None:
        if self._transfer is not None:
            self._transfer.shutdown()
        self.client.close()
