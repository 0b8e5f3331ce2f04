"""Storage sync across file://, s3:// (moto's real S3 server) and hdfs:// (a WebHDFS stand-in).

S3: moto's server on 127.0.0.1 speaks the real S3 protocol; results are checked
with the AWS CLI (awscli, in its own environment through `uv tool run`) as an
independent client. HDFS: no cluster can be installed here; `webhdfs_server.py`
implements the WebHDFS REST API and stands in for one, and the client code is
the standard `hdfs` package, unchanged for a real cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ml_tasks.errors import DataError, UnsafePathError
from ml_tasks.storage import HdfsOptions, S3Options, StorageError, StorageOptions, sync, sync_drop

from .s3_proxy import S3Proxy
from .webhdfs_server import WebHdfs, hdfs_checksum

pytestmark = pytest.mark.integration
AWSCLI = "awscli==1.46.2"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}", port
    server.stop()


@pytest.fixture
def s3(moto, monkeypatch):
    """A fresh bucket on the moto server, and a client to inspect it."""
    import uuid

    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    url, _ = moto
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return url, bucket, client


@pytest.fixture
def hdfs(tmp_path):
    server = WebHdfs(tmp_path / "hdfs-root").start()
    yield server
    server.stop()


def options(s3_url: str | None = None, hdfs_url: str | None = None, **kw) -> StorageOptions:
    return StorageOptions(s3=S3Options(endpoint_url=s3_url, access_key_id="test", secret_access_key="test",
                                       region="us-east-1", **kw),
                          hdfs=HdfsOptions(url=hdfs_url, user="ratchet"), workers=8)


def make_tree(root: Path, count: int = 12, size: int = 3000) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        key = f"part-{i:03d}.csv" if i % 3 else f"nested/deeper/part-{i:03d}.parquet"
        data = os.urandom(size + i)
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        files[key] = data
    return files


def aws(*args: str, endpoint: str) -> str:
    """The AWS CLI, in its own environment (it vendors its own botocore), as an independent client."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to run the AWS CLI in its own environment"
    done = subprocess.run([uv, "tool", "run", "--quiet", "--from", AWSCLI, "aws", *args, "--endpoint-url", endpoint],
                          capture_output=True, text=True, env={**os.environ, **CREDENTIALS}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_local_to_s3_then_checked_by_the_aws_cli(ratchet_home, tmp_path, s3):
    url, bucket, client = s3
    files = make_tree(tmp_path / "src")
    result = sync((tmp_path / "src").as_uri(), f"s3://{bucket}/landing/day1", options=options(url))
    assert (result.files, result.copied, result.reused) == (len(files), len(files), 0)

    listing = aws("s3", "ls", f"s3://{bucket}/landing/day1/", "--recursive", endpoint=url)
    listed = {line.split()[-1].removeprefix("landing/day1/"): int(line.split()[2]) for line in listing.splitlines()}
    assert listed == {**{k: len(v) for k, v in files.items()}, "_ratchet_manifest.json": listed["_ratchet_manifest.json"]}
    copy_back = tmp_path / "via-awscli"
    aws("s3", "cp", f"s3://{bucket}/landing/day1/", str(copy_back), "--recursive", endpoint=url)
    for key, data in files.items():
        assert (copy_back / key).read_bytes() == data
    manifest = json.loads((copy_back / "_ratchet_manifest.json").read_text())
    assert set(manifest["files"]) == set(files) and manifest["total_bytes"] == sum(map(len, files.values()))


def test_resync_is_incremental_by_content_not_mtime(ratchet_home, tmp_path, s3):
    url, bucket, _ = s3
    src = tmp_path / "src"
    files = make_tree(src)
    target = f"s3://{bucket}/d"
    sync(src.as_uri(), target, options=options(url))
    again = sync(src.as_uri(), target, options=options(url))
    assert (again.copied, again.reused) == (0, len(files))

    # same bytes, new mtime: still unchanged; same size, new bytes: copied
    key_touched, key_changed = sorted(files)[0], sorted(files)[1]
    os.utime(src / key_touched, (1, 1))
    data = bytearray(files[key_changed])
    data[0] ^= 0xFF
    (src / key_changed).write_bytes(bytes(data))
    third = sync(src.as_uri(), target, options=options(url))
    assert third.to_copy == [key_changed]


def test_a_destination_changed_by_someone_else_is_seen(ratchet_home, tmp_path, s3):
    """Each sync lists the destination: an object replaced (same size) or removed there is copied again."""
    url, bucket, client = s3
    src = tmp_path / "src"
    files = make_tree(src, count=5)
    target = f"s3://{bucket}/watched"
    sync(src.as_uri(), target, options=options(url))
    replaced, removed = sorted(files)[:2]
    client.put_object(Bucket=bucket, Key=f"watched/{replaced}", Body=os.urandom(len(files[replaced])))
    client.delete_object(Bucket=bucket, Key=f"watched/{removed}")
    again = sync(src.as_uri(), target, options=options(url))
    assert again.to_copy == sorted([replaced, removed]) and again.reused == len(files) - 2
    for key in (replaced, removed):
        assert client.get_object(Bucket=bucket, Key=f"watched/{key}")["Body"].read() == files[key]


def test_local_sync_without_history_compares_content(ratchet_home, tmp_path, s3):
    """A destination filled by someone else (the AWS CLI) is recognised by ETag, not recopied."""
    url, bucket, _ = s3
    src = tmp_path / "src"
    files = make_tree(src, count=6)
    aws("s3", "cp", str(src), f"s3://{bucket}/by-cli/", "--recursive", endpoint=url)
    result = sync(src.as_uri(), f"s3://{bucket}/by-cli", options=options(url))
    assert (result.copied, result.reused) == (0, len(files))


def test_s3_to_local_and_large_multipart_objects(ratchet_home, tmp_path, s3):
    url, bucket, client = s3
    big = os.urandom(20 * 1024 * 1024 + 123)  # multipart: three 8 MiB parts
    client.put_object(Bucket=bucket, Key="in/small.csv", Body=b"a,b\n1,2\n")
    src = tmp_path / "big"
    src.mkdir()
    (src / "big.parquet").write_bytes(big)
    sync(src.as_uri(), f"s3://{bucket}/in", options=options(url))
    etag = client.head_object(Bucket=bucket, Key="in/big.parquet")["ETag"]
    assert etag.strip('"').endswith("-3")

    out = tmp_path / "out"
    result = sync(f"s3://{bucket}/in", out.as_uri(), options=options(url))
    assert result.files == 2 and (out / "big.parquet").read_bytes() == big
    assert sync(f"s3://{bucket}/in", out.as_uri(), options=options(url)).copied == 0


def test_delete_and_dry_run(ratchet_home, tmp_path, s3):
    url, bucket, client = s3
    src = tmp_path / "src"
    files = make_tree(src, count=4)
    target = f"s3://{bucket}/mirror"
    sync(src.as_uri(), target, options=options(url))
    gone = sorted(files)[0]
    (src / gone).unlink()
    plan = sync(src.as_uri(), target, delete=True, dry_run=True, options=options(url))
    assert plan.dry_run and plan.to_delete == [gone] and plan.copied == 0
    assert client.head_object(Bucket=bucket, Key=f"mirror/{gone}")  # a dry run changes nothing
    kept = sync(src.as_uri(), target, options=options(url))
    assert kept.deleted == 0
    done = sync(src.as_uri(), target, delete=True, options=options(url))
    assert done.deleted == 1
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="mirror/")["Contents"]}
    assert f"mirror/{gone}" not in keys


def test_traversal_keys_in_a_bucket_are_refused(ratchet_home, tmp_path, s3):
    url, bucket, client = s3
    client.put_object(Bucket=bucket, Key="evil/../../outside.csv", Body=b"x")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        sync(f"s3://{bucket}/evil", (tmp_path / "dst").as_uri(), options=options(url))
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "dst").exists()


def test_throttling_replies_are_retried(ratchet_home, tmp_path, s3, moto):
    url, bucket, client = s3
    proxy = S3Proxy(moto[1]).start()
    try:
        files = make_tree(tmp_path / "src", count=3)
        proxy.throttle_next(4)
        result = sync((tmp_path / "src").as_uri(), f"s3://{bucket}/t", options=options(proxy.url))
        assert result.copied == len(files)
        assert proxy.throttled == 4
    finally:
        proxy.stop()


def test_s3_endpoint_stopped_mid_sync_then_back(ratchet_home, tmp_path, s3, moto):
    url, bucket, client = s3
    proxy = S3Proxy(moto[1]).start()
    src = tmp_path / "src"
    files = {}
    for i in range(60):
        data = os.urandom(200_000 if i % 10 else 9 * 1024 * 1024)  # some multipart objects among them
        (src / f"f{i:03d}.bin").parent.mkdir(parents=True, exist_ok=True)
        (src / f"f{i:03d}.bin").write_bytes(data)
        files[f"f{i:03d}.bin"] = data
    target = f"s3://{bucket}/interrupted"

    def stop_once_some_objects_landed() -> None:
        """Cut the endpoint mid-sync: once a few objects are whole on the server (asked directly, not via the proxy)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.list_objects_v2(Bucket=bucket, Prefix="interrupted/").get("KeyCount", 0) >= 5:
                break
            time.sleep(0.02)
        proxy.stop()

    stopper = threading.Thread(target=stop_once_some_objects_landed)
    stopper.start()
    with pytest.raises(StorageError, match="rerun to resume"):
        sync(src.as_uri(), target, options=options(proxy.url, max_attempts=2, connect_timeout=1, read_timeout=3))
    stopper.join()

    # nothing partial is visible: every object there is whole, and there is no manifest yet
    listed = client.list_objects_v2(Bucket=bucket, Prefix="interrupted/").get("Contents", [])
    names = {o["Key"].split("/", 1)[1]: o["Size"] for o in listed}
    assert "_ratchet_manifest.json" not in names
    for name, size in names.items():
        assert size == len(files[name])
        assert client.get_object(Bucket=bucket, Key=f"interrupted/{name}")["Body"].read() == files[name]
    assert len(names) < len(files)

    proxy.start()  # the endpoint is back, moto's state intact
    try:
        resumed = sync(src.as_uri(), target, options=options(proxy.url))
    finally:
        proxy.stop()
    assert resumed.copied == len(files) - len(names)
    assert resumed.reused == len(names)
    assert resumed.files == len(files)


def test_hdfs_round_trip_with_hdfs_checksums(ratchet_home, tmp_path, hdfs):
    files = make_tree(tmp_path / "src", count=5)
    target = "hdfs://namenode/data/landing"
    opts = options(hdfs_url=hdfs.url)
    result = sync((tmp_path / "src").as_uri(), target, options=opts)
    assert result.copied == len(files)
    for key, data in files.items():
        assert (hdfs.root / "data" / "landing" / key).read_bytes() == data
    manifest = json.loads((hdfs.root / "data" / "landing" / "_ratchet_manifest.json").read_text())
    entry = manifest["files"][sorted(files)[0]]
    expected = hdfs_checksum(hdfs.root / "data" / "landing" / sorted(files)[0])
    assert entry["checksum"] == f"hdfs:{expected['algorithm']}:{expected['bytes']}"
    assert not [r for r in hdfs.requests if "CREATE" in r and ".tmp" not in r]  # written under temporary names
    assert any(r.startswith("dn PUT CREATE") for r in hdfs.requests)  # via the DataNode redirect

    assert sync((tmp_path / "src").as_uri(), target, options=opts).copied == 0
    back = tmp_path / "back"
    hdfs.fail_next(2)  # the NameNode is busy for two requests: retried
    pulled = sync(target, back.as_uri(), options=opts)
    assert pulled.files == len(files)
    assert all((back / k).read_bytes() == v for k, v in files.items())

    # a NameNode that stays busy is an error, never an empty folder (which --delete would mirror)
    hdfs.fail_next(50)
    with pytest.raises(StorageError, match="cannot list"):
        sync(target, back.as_uri(), delete=True, options=opts)
    hdfs.fail_next(0)
    assert all((back / k).read_bytes() == v for k, v in files.items())


def test_hdfs_to_s3_and_back(ratchet_home, tmp_path, hdfs, s3):
    url, bucket, client = s3
    files = make_tree(tmp_path / "src", count=4)
    opts = options(url, hdfs.url)
    sync((tmp_path / "src").as_uri(), "hdfs://nn/x", options=opts)
    to_s3 = sync("hdfs://nn/x", f"s3://{bucket}/from-hdfs", options=opts)
    assert to_s3.copied == len(files)
    assert sync("hdfs://nn/x", f"s3://{bucket}/from-hdfs", options=opts).copied == 0
    back = sync(f"s3://{bucket}/from-hdfs", "hdfs://nn/y", options=opts)
    assert back.copied == len(files)
    assert all((hdfs.root / "y" / k).read_bytes() == v for k, v in files.items())


def test_nightly_drop_from_s3(ratchet_home, tmp_path, s3, monkeypatch):
    url, bucket, client = s3
    client.put_object(Bucket=bucket, Key="drops/2026-01-01/part-000.csv", Body=b"x0,label\n1.0,1\n")
    client.put_object(Bucket=bucket, Key="drops/2026-01-01/README.txt", Body=b"not data")
    staging = tmp_path / "staging"
    result = sync_drop(f"s3://{bucket}/drops/2026-01-01", staging, options(url))
    assert result["files"] == 1 and (staging / "raw" / "part-000.csv").is_file()
    assert json.loads((staging / "manifest.json").read_text())["files"].keys() == {"part-000.csv"}
    with pytest.raises(DataError, match="0 matching files"):
        sync_drop(f"s3://{bucket}/drops/2026-01-09", tmp_path / "s2", options(url))


def test_storage_sync_dag_uses_an_airflow_connection_and_masks_its_secret(module_home, tmp_path, s3):
    """storage_sync as a real DagRun; the endpoint and credentials come from an Airflow Connection."""
    from ml_tasks.ops.airflow_cli import airflow, init_airflow

    url, bucket, client = s3
    init_airflow()
    files = make_tree(tmp_path / "src", count=3)
    secret = "ratchet-secret-key-that-must-not-leak"  # pragma: allowlist secret (the test plants it to prove masking)
    connection = {"conn_type": "aws", "login": "test", "password": secret,
                  "extra": {"endpoint_url": url, "region_name": "us-east-1"}}
    os.environ["AIRFLOW_CONN_RATCHET_S3"] = json.dumps(connection)
    os.environ["RATCHET_LOCAL_ROOTS"] = str(tmp_path)  # the source folder lies outside RATCHET_HOME
    try:
        conf = {"src": (tmp_path / "src").as_uri(), "dst": f"s3://{bucket}/via-dag", "s3_conn_id": "ratchet_s3"}
        log = tmp_path / "dag.log"
        done = airflow("dags", "test", "storage_sync", "-c", json.dumps(conf), log_path=log, check=False)
    finally:
        del os.environ["AIRFLOW_CONN_RATCHET_S3"], os.environ["RATCHET_LOCAL_ROOTS"]
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="via-dag/")["Contents"]}
    assert keys == {f"via-dag/{k}" for k in files} | {"via-dag/_ratchet_manifest.json"}
    assert secret not in text
    for path in (module_home / "airflow" / "logs").rglob("*.log"):
        assert secret not in path.read_text(errors="replace")


def test_datasets_add_reads_a_drop_on_s3_and_on_hdfs(s3, hdfs, tmp_path):
    """`ratchet datasets add --from s3://... | hdfs://...`: the drop is read where it lies (copied to a scratch folder
    by the same sync), and the declaration written is the one a local copy of the drop gives."""
    from ml_tasks.datasets import inference, public_tables
    from ml_tasks.datasets.declarations import load_declaration

    url, bucket, client = s3
    frame = public_tables.load("wa_churn", rows=1500)
    body = frame.to_csv(index=False).encode()
    client.put_object(Bucket=bucket, Key="drops/churn/2026-03-01/part-000.csv", Body=body)
    (hdfs.root / "landing" / "churn").mkdir(parents=True)
    (hdfs.root / "landing" / "churn" / "part-000.csv").write_bytes(body)
    local = public_tables.write_drop(frame, tmp_path / "local")
    written = {}
    for name, source, opts in (("churn_s3", f"s3://{bucket}/drops/churn/2026-03-01/", options(s3_url=url)),
                               ("churn_hdfs", "hdfs://namenode/landing/churn", options(hdfs_url=hdfs.url)),
                               ("churn_local", local, None)):
        _, paths = inference.add(name, source, "churn", options=opts, datasets_dir=tmp_path / "datasets",
                                 expectations_dir=tmp_path / "expectations")
        written[name] = load_declaration(paths.declaration)
    for name in ("churn_s3", "churn_hdfs"):
        spec, local_spec = written[name], written["churn_local"]
        assert spec.task == "binary" and spec.classes == ("No", "Yes")
        assert (spec.numeric_features, spec.categorical_features) == (local_spec.numeric_features,
                                                                       local_spec.categorical_features)
