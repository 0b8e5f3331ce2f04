import json

import pytest

from ml_tasks.errors import ConfigError, DataError, UnsafePathError
from ml_tasks.storage import local_path, safe_relative, sync_drop


def _drop(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def test_sync_copies_writes_manifest_last_and_is_incremental(tmp_path):
    source = _drop(tmp_path / "landing", {"a.csv": b"x,y\n1,2\n", "sub/b.parquet": b"PAR1", "notes.txt": b"skip"})
    staging = tmp_path / "staging"
    first = sync_drop(source.as_uri(), staging)
    assert (first.files, first.copied, first.reused) == (2, 2, 0)
    manifest = json.loads((staging / "manifest.json").read_text())
    assert set(manifest["files"]) == {"a.csv", "sub/b.parquet"}
    assert not (staging / "raw" / "notes.txt").exists()

    second = sync_drop(source.as_uri(), staging)
    assert (second.copied, second.reused) == (0, 2)

    (source / "a.csv").write_bytes(b"x,y\n3,4\n")
    (source / "sub" / "b.parquet").unlink()
    third = sync_drop(str(source), staging)
    assert (third.copied, third.reused, third.deleted) == (1, 0, 1)
    assert (staging / "raw" / "a.csv").read_bytes() == b"x,y\n3,4\n"
    assert not list(staging.rglob("*.tmp"))


def test_empty_or_missing_drop_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sync_drop((tmp_path / "nothing").as_uri(), tmp_path / "staging")
    _drop(tmp_path / "empty", {"readme.md": b"no data"})
    with pytest.raises(DataError, match="no CSV or Parquet"):
        sync_drop((tmp_path / "empty").as_uri(), tmp_path / "staging")


@pytest.mark.parametrize("key", ["../x.csv", "/abs.csv", "a\\b.csv", "a//b.csv", "a/./b.csv", ""])
def test_traversal_keys_are_refused(key):
    with pytest.raises(UnsafePathError):
        safe_relative(key)


def test_unsupported_schemes_are_named():
    with pytest.raises(ConfigError, match="ftp"):
        local_path("ftp://host/x")
    with pytest.raises(ConfigError, match="s3://"):
        local_path("s3://bucket/prefix")
