import json
import os

import pytest

from ml_tasks.errors import ConfigError, DataError, UnsafePathError
from ml_tasks.storage import local_path, safe_relative, split_uri, sync, sync_drop


def _drop(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def test_drop_sync_copies_writes_manifest_last_and_is_incremental(ratchet_home, tmp_path):
    source = _drop(tmp_path / "landing", {"a.csv": b"x,y\n1,2\n", "sub/b.parquet": b"PAR1", "notes.txt": b"skip"})
    staging = tmp_path / "staging"
    first = sync_drop(source.as_uri(), staging)
    assert (first["files"], first["copied"], first["reused"]) == (2, 2, 0)
    manifest = json.loads((staging / "manifest.json").read_text())
    assert set(manifest["files"]) == {"a.csv", "sub/b.parquet"}
    assert manifest["files"]["a.csv"]["checksum"].startswith("sha256:")
    assert not (staging / "raw" / "notes.txt").exists()

    second = sync_drop(source.as_uri(), staging)
    assert (second["copied"], second["reused"]) == (0, 2)

    (source / "a.csv").write_bytes(b"x,y\n3,4\n")
    (source / "sub" / "b.parquet").unlink()
    third = sync_drop(str(source), staging)
    assert (third["copied"], third["reused"], third["deleted"]) == (1, 0, 1)
    assert (staging / "raw" / "a.csv").read_bytes() == b"x,y\n3,4\n"
    assert not list(staging.rglob("*.tmp"))


def test_local_to_local_mirror_with_dry_run(ratchet_home, tmp_path):
    source = _drop(tmp_path / "a", {"one.bin": b"1" * 100, "two/three.bin": b"3" * 10})
    plan = sync(source.as_uri(), (tmp_path / "b").as_uri(), dry_run=True)
    assert plan.to_copy == ["one.bin", "two/three.bin"] and not (tmp_path / "b").exists()
    done = sync(source.as_uri(), (tmp_path / "b").as_uri())
    assert done.copied == 2 and (tmp_path / "b" / "_ratchet_manifest.json").is_file()
    assert (tmp_path / "b" / "two" / "three.bin").read_bytes() == b"3" * 10


def test_empty_or_missing_drop_is_a_clear_error(ratchet_home, tmp_path):
    with pytest.raises(DataError, match="0 matching files"):
        sync_drop((tmp_path / "nothing").as_uri(), tmp_path / "staging")
    _drop(tmp_path / "empty", {"readme.md": b"no data"})
    with pytest.raises(DataError, match="CSV or Parquet"):
        sync_drop((tmp_path / "empty").as_uri(), tmp_path / "staging")


@pytest.mark.parametrize("key", ["../x.csv", "/abs.csv", "a\\b.csv", "a//b.csv", "a/./b.csv", ""])
def test_traversal_keys_are_refused(key):
    with pytest.raises(UnsafePathError):
        safe_relative(key)


def test_uris_are_parsed_and_unsupported_schemes_named():
    assert split_uri("s3://bucket/a/b") == ("s3", "bucket", "a/b")
    assert split_uri("hdfs://nn:9870/data") == ("hdfs", "nn:9870", "/data")
    assert split_uri("/tmp/x") == ("file", "", "/tmp/x")
    with pytest.raises(ConfigError, match="ftp"):
        split_uri("ftp://host/x")
    with pytest.raises(ConfigError, match="bucket"):
        split_uri("s3:///nobucket")
    with pytest.raises(ConfigError, match="local path"):
        local_path("s3://bucket/prefix")


def test_a_no_change_resync_hashes_nothing_and_a_touched_file_is_hashed_again(ratchet_home, tmp_path, monkeypatch):
    from ml_tasks.storage import local

    source = _drop(tmp_path / "a", {"one.bin": b"1" * 100, "sub/two.bin": b"2" * 10, ".partial.tmp": b"x"})
    target = (tmp_path / "b").as_uri()
    assert sync(source.as_uri(), target).copied == 2
    hashed = []
    real = local._digest_file
    monkeypatch.setattr(local, "_digest_file", lambda path, with_etag: hashed.append(path.name) or real(path, with_etag))
    again = sync(source.as_uri(), target)
    assert (again.copied, again.reused, hashed) == (0, 2, [])  # the cache's hashes, by size and mtime

    os.utime(source / "one.bin", ns=(1, 1))  # same bytes, another mtime: hashed again, still unchanged
    third = sync(source.as_uri(), target)
    assert (third.copied, third.reused) == (0, 2) and "one.bin" in hashed
    (source / "sub" / "two.bin").write_bytes(b"3" * 10)  # same size, new bytes: copied
    assert sync(source.as_uri(), target).to_copy == ["sub/two.bin"]
    assert (tmp_path / "b" / "sub" / "two.bin").read_bytes() == b"3" * 10


def test_local_listing_is_sorted_skips_dot_names_and_linked_folders(tmp_path):
    from ml_tasks.storage.local import LocalStore

    root = _drop(tmp_path / "root", {"b.csv": b"b", "a/z.csv": b"z", "a/.hidden": b"h", ".git/x": b"x", "c.csv": b"cc"})
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    listed = [(info.key, info.size) for info in LocalStore(root).list()]
    assert listed == [("b.csv", 1), ("c.csv", 2), ("a/z.csv", 1)]
    assert list(LocalStore(tmp_path / "missing").list()) == []


def test_s3_listing_follows_continuation_tokens():
    from ml_tasks.storage.options import S3Options
    from ml_tasks.storage.s3 import S3Store

    pages = {
        None: {"Contents": [{"Key": "p/a.csv", "Size": 1, "ETag": '"e1"'}, {"Key": "p/", "Size": 0, "ETag": '"d"'}],
               "IsTruncated": True, "NextContinuationToken": "t1"},
        "t1": {"Contents": [{"Key": "p/sub/b.csv", "Size": 2, "ETag": '"e2-3"'}], "IsTruncated": False},
    }
    asked = []

    class Client:
        def list_objects_v2(self, **request):
            asked.append(request)
            return pages[request.get("ContinuationToken")]

    store = S3Store("bucket", "p", S3Options(region="us-east-1"))
    store.client = Client()
    assert [(i.key, i.size, i.checksum) for i in store.list()] == [("a.csv", 1, "etag:e1"), ("sub/b.csv", 2, "etag:e2-3")]
    assert asked == [{"Bucket": "bucket", "Prefix": "p/"}, {"Bucket": "bucket", "Prefix": "p/", "ContinuationToken": "t1"}]


@pytest.mark.parametrize("value", ["2026-11-29T03:29:02.000Z", "2026-11-29T03:29:02Z", "2026-11-29T03:29:02.123456Z",
                                   "Thu, 01 Jan 2015 00:00:00 GMT", "1700000000"])
def test_s3_timestamps_parse_as_botocore_parses_them(value):
    from botocore.utils import parse_timestamp

    from ml_tasks.storage.s3 import _parse_timestamp

    parsed = _parse_timestamp(value)
    assert parsed == parse_timestamp(value) and parsed.tzinfo is not None
