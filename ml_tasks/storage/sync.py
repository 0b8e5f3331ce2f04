"""`sync(src, dst)`: mirror one store into another, incrementally by content.

An object is copied unless the destination provably holds the same content:
the journal or previous manifest recorded this very pair of checksums, or the
two stores' checksums are of one kind and equal (or a local file's S3-style
ETag equals the object's). Copies run in a bounded thread pool and stream;
each finished copy is journaled, so an interrupted sync resumes without
recopying. The manifest (sizes and checksums of the whole set) is written
last: a consumer that sees it knows the set is whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ml_tasks.errors import DataError, RatchetError, StorageError
from ml_tasks.io import atomic_path
from ml_tasks.settings import get_settings
from ml_tasks.storage.base import ObjectInfo, Store, split_uri
from ml_tasks.storage.local import HashCache, LocalStore
from ml_tasks.storage.options import StorageOptions

log = logging.getLogger(__name__)

MANIFEST_NAME = "_ratchet_manifest.json"
OBJECT_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class SyncResult:
    source_uri: str
    destination_uri: str
    manifest_uri: str
    files: int
    bytes: int
    copied: int
    copied_bytes: int
    reused: int
    deleted: int
    dry_run: bool
    seconds: float
    to_copy: list[str]
    to_delete: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["to_copy"] = out["to_copy"][:50]  # small enough for XCom
        out["to_delete"] = out["to_delete"][:50]
        return out


def open_store(uri: str, options: StorageOptions, cache: HashCache | None = None) -> Store:
    scheme, authority, path = split_uri(uri)
    if scheme == "file":
        return LocalStore(Path(path), cache)
    if scheme == "s3":
        from ml_tasks.storage.s3 import S3Store

        return S3Store(authority, path, options.s3, pool_size=options.workers + 4)
    from ml_tasks.storage.hdfs import HdfsStore

    return HdfsStore(authority, path, options.hdfs)


def _same_content(src: Store, src_token: str, dst: Store, dst_token: str, key: str) -> bool:
    """Equal checksums of one kind, or a local file whose S3-style ETag is the object's."""
    if src_token.split(":", 1)[0] == dst_token.split(":", 1)[0]:
        return src_token == dst_token
    for local, remote_token in ((src, dst_token), (dst, src_token)):
        if isinstance(local, LocalStore) and remote_token.startswith("etag:"):
            return f"etag:{local.s3_etag(key)}" == remote_token
    return False


def _copy(src: Store, dst: Store, info: ObjectInfo) -> str:
    """Stream one object across; the fastest path the pair allows."""
    from ml_tasks.storage.s3 import S3Store

    if isinstance(src, LocalStore) and isinstance(dst, S3Store):
        return dst.write_file(info.key, src.local_file(info.key))
    if isinstance(src, S3Store) and isinstance(dst, S3Store) and src.client.meta.endpoint_url == dst.client.meta.endpoint_url:
        return dst.copy_within(src, info.key)
    if isinstance(src, S3Store) and isinstance(dst, LocalStore) and info.size >= 64 * 1024 * 1024:
        target = dst.local_file(info.key)
        with atomic_path(target) as tmp:
            src.download_to(info.key, tmp)
        return dst.checksum(info.key)
    with src.open_read(info.key) as reader:
        return dst.write(info.key, reader, info.size)


class _Journal:
    """Finished copies, one JSON line each, kept until the manifest is written."""

    def __init__(self, src_uri: str, dst_uri: str) -> None:
        digest = hashlib.sha256(f"{src_uri}\n{dst_uri}".encode()).hexdigest()[:24]
        self.path = get_settings().home / "sync-journals" / f"{digest}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle: Any = None

    def load(self) -> dict[str, tuple[str, str]]:
        known: dict[str, tuple[str, str]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                known[entry["key"]] = (entry["source"], entry["destination"])
        return known

    def add(self, key: str, source: str, destination: str) -> None:
        line = json.dumps({"key": key, "source": source, "destination": destination}) + "\n"
        with self._lock:
            if self._handle is None:
                self._handle = self.path.open("a")
            self._handle.write(line)
            self._handle.flush()  # in the OS's hands: survives the process being killed

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _read_manifest(store: Store, key: str) -> dict[str, Any]:
    raw = store.get_bytes(key)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def sync(
    source_uri: str,
    destination_uri: str,
    *,
    delete: bool = False,
    dry_run: bool = False,
    options: StorageOptions | None = None,
    include: Callable[[str], bool] | None = None,
    manifest_path: Path | None = None,
    progress: bool = False,
    min_files: int = 0,
) -> SyncResult:
    """Mirror `source_uri` into `destination_uri`; see the module docstring for the rules."""
    started = time.monotonic()
    options = options or StorageOptions()
    cache = HashCache(get_settings().home / "cache" / "hashes.sqlite")
    src = open_store(source_uri, options, cache)
    dst = open_store(destination_uri, options, cache)
    try:
        return _sync(src, dst, source_uri, destination_uri, delete, dry_run, options, include, manifest_path,
                     progress, started, min_files)
    finally:
        src.close()
        dst.close()
        cache.close()


def _in_background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` in a daemon thread: a sync that fails early (its source) does not wait for it to finish."""
    future: Future[T] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever asks for the result
                future.set_exception(exc)

    threading.Thread(target=run, name=f"sync-{getattr(fn, '__name__', 'task')}", daemon=True).start()
    return future


def _list(store: Store, uri: str, wanted: Callable[[str], bool]) -> dict[str, ObjectInfo]:
    try:
        return {info.key: info for info in store.list() if wanted(info.key)}
    except RatchetError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot list {uri}: {type(exc).__name__}: {exc}") from exc


def _sync(src: Store, dst: Store, source_uri: str, destination_uri: str, delete: bool, dry_run: bool,
          options: StorageOptions, include: Callable[[str], bool] | None, manifest_path: Path | None,
          progress: bool, started: float, min_files: int) -> SyncResult:
    # The manifest lives in the destination, or at `manifest_path` (the nightly keeps it beside raw/).
    manifest_store: Store = LocalStore(manifest_path.parent) if manifest_path is not None else dst
    manifest_key = manifest_path.name if manifest_path is not None else MANIFEST_NAME
    manifest_uri = f"{manifest_store.uri.rstrip('/')}/{manifest_key}"

    def read_previous() -> dict[str, Any]:
        try:
            return _read_manifest(manifest_store, manifest_key)
        except Exception as exc:
            raise StorageError(f"cannot read the manifest at {destination_uri}: {type(exc).__name__}: {exc}") from exc

    # The destination is listed, and its manifest read, while the source is listed and its cached checksums
    # looked up: on a sync with little to copy, the local work then hides in the waits for the endpoint.
    listing = _in_background(_list, dst, destination_uri, lambda key: key != MANIFEST_NAME)
    reading = _in_background(read_previous)
    sources = _list(src, source_uri, lambda key: key != MANIFEST_NAME and (include is None or include(key)))
    if len(sources) < min_files:
        raise DataError(f"{source_uri}: {len(sources)} matching files, expected at least {min_files} "
                        "(is the folder there, and does it hold CSV or Parquet files?)")
    cheap_tokens = {key: info.checksum or src.cached_checksum(key) for key, info in sources.items()}
    journal = _Journal(source_uri, destination_uri)
    known = journal.load()
    existing = listing.result()
    previous = reading.result()
    for key, entry in previous.get("files", {}).items():
        known.setdefault(key, (entry.get("source_checksum", ""), entry.get("checksum", "")))  # the journal is newer
    to_delete = sorted(set(existing) - set(sources)) if delete else []
    bar = _progress_bar(sum(i.size for i in sources.values()), progress and not dry_run)
    lock = threading.Lock()
    manifest_removed = False

    def set_in_flux() -> None:
        """Before the first change, remove the manifest: until the new one is written the set is not whole."""
        nonlocal manifest_removed
        with lock:
            if not manifest_removed:
                manifest_store.delete(manifest_key)  # absent is fine; any other failure stops the sync
                manifest_removed = True

    def copy(info: ObjectInfo) -> str:
        for attempt in range(1, OBJECT_ATTEMPTS + 1):
            try:
                return _copy(src, dst, info)
            except RatchetError:
                raise
            except Exception as exc:
                if attempt == OBJECT_ATTEMPTS:
                    raise
                log.warning("copy of %s failed (%s); attempt %s of %s", info.key, exc, attempt + 1, OBJECT_ATTEMPTS)
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def unchanged(info: ObjectInfo) -> tuple[str, str] | None:
        """(source, dest checksum) when both are known without reading either object and prove the same content;
        None when it takes a look at the objects (`handle`) to tell."""
        there = existing.get(info.key)
        src_token = cheap_tokens.get(info.key)
        if there is None or there.size != info.size or not src_token:
            return None
        dst_token = there.checksum or dst.cached_checksum(info.key)
        if not dst_token:
            return None
        if known.get(info.key) == (src_token, dst_token) or (
                src_token.split(":", 1)[0] == dst_token.split(":", 1)[0] and src_token == dst_token):
            return src_token, dst_token
        return None

    def handle(info: ObjectInfo) -> tuple[bool, str, str]:
        """Decide, and copy when the destination does not hold the same content: (copied, source, dest checksum).

        One task per object, so hashing and comparing overlap with the transfers of other objects."""
        src_token = cheap_tokens.get(info.key) or src.checksum(info.key)
        there = existing.get(info.key)
        if there is not None and there.size == info.size:
            dst_token = there.checksum or dst.checksum(info.key)
            if known.get(info.key) == (src_token, dst_token) or _same_content(src, src_token, dst, dst_token, info.key):
                return False, src_token, dst_token
        if dry_run:
            return True, src_token, ""
        set_in_flux()
        dst_token = copy(info)
        journal.add(info.key, src_token, dst_token)
        return True, src_token, dst_token

    entries: dict[str, dict[str, Any]] = {}
    copied: list[str] = []
    copied_bytes = 0
    failures: list[str] = []

    def record(info: ObjectInfo, was_copied: bool, src_token: str, dst_token: str) -> None:
        nonlocal copied_bytes
        if was_copied:
            copied.append(info.key)
            copied_bytes += info.size
        if not dry_run:
            entries[info.key] = {"size": info.size, "checksum": dst_token, "source_checksum": src_token}
        if bar is not None:
            bar.update(info.size)

    pending = []
    for info in sources.values():
        same = unchanged(info)
        if same is None:
            pending.append(info)
        else:
            record(info, False, *same)
    if pending:
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            futures = {pool.submit(handle, info): info for info in pending}
            for future in as_completed(futures):
                info = futures[future]
                try:
                    was_copied, src_token, dst_token = future.result()
                except RatchetError:
                    raise
                except Exception as exc:
                    failures.append(f"{info.key}: {type(exc).__name__}: {exc}")
                    continue
                record(info, was_copied, src_token, dst_token)
    journal.close()
    if bar is not None:
        bar.close()
    total = sum(i.size for i in sources.values())
    copied.sort()
    if dry_run:
        return SyncResult(source_uri, destination_uri, "", len(sources), total, 0, 0, len(sources) - len(copied), 0,
                          True, round(time.monotonic() - started, 3), copied, to_delete)
    if failures:
        raise StorageError(
            f"sync {source_uri} -> {destination_uri}: {len(failures)} of {len(copied) + len(failures)} transfers "
            f"failed ({len(copied)} copied and journaled; rerun to resume). First: {failures[0]}"
        )
    if to_delete:
        set_in_flux()
        for key in to_delete:
            dst.delete(key)
    if manifest_removed or previous.get("files") != entries:
        manifest = {"source": source_uri, "destination": destination_uri, "files": entries, "total_bytes": total,
                    "file_count": len(entries)}
        manifest_store.put_bytes(manifest_key, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    # else: nothing changed, and the manifest there already describes exactly this set
    journal.remove()
    result = SyncResult(source_uri, destination_uri, manifest_uri, len(entries), total, len(copied), copied_bytes,
                        len(entries) - len(copied), len(to_delete), False, round(time.monotonic() - started, 3),
                        copied, to_delete)
    log.info("synced %s -> %s: %s objects (%s copied, %s unchanged, %s deleted), %s bytes in %.2fs",
             source_uri, destination_uri, result.files, result.copied, result.reused, result.deleted, total,
             result.seconds)
    return result


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="sync")
