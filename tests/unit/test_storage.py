import json

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
