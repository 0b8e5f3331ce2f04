"""Sync: ours against the S3 server's own ceiling and against `aws s3 sync`, one local S3 server.

The S3 server is moto's (`moto_server`, a separate process on 127.0.0.1); on a
2-core machine it is the bottleneck, so the honest reference for a full sync
is the server's ceiling: raw concurrent boto3 PUTs of the same files with as
many threads as help. `aws s3 sync` (awscli from the registry, in its own
environment via `uv tool run`) is timed as the command a user types, and so
is ours (`ratchet sync`). Peak memory is the sync process's maximum RSS.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

AWSCLI = "awscli==1.46.2"
SMALL_FILES = int(os.environ.get("BENCH_SYNC_SMALL_FILES", "1000"))
SMALL_SIZE = 100 * 1024
LARGE_FILES = int(os.environ.get("BENCH_SYNC_LARGE_FILES", "4"))
LARGE_SIZE = int(os.environ.get("BENCH_SYNC_LARGE_MB", "256")) * 1024 * 1024
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto_server did not start")


def write_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        with (root / f"f{i:05d}.bin").open("wb") as handle:
            remaining = size
            while remaining:
                chunk = os.urandom(min(remaining, 8 * 1024 * 1024))
                handle.write(chunk)
                remaining -= len(chunk)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in MB."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) // 1024


def aws_command(uv: str, *args: str, endpoint: str) -> list[str]:
    return [uv, "tool", "run", "--quiet", "--from", AWSCLI, "aws", *args, "--endpoint-url", endpoint]


def ours_command(src: str, dst: str) -> list[str]:
    return [str(BIN / "ratchet"), "sync", src, dst, "--quiet"]


def raw_put_ceiling(client: object, bucket: str, root: Path) -> float:
    """The fastest of several thread counts for plain concurrent PUTs of the same files."""
    files = sorted(root.iterdir())
    best = float("inf")
    for threads in (8, 16, 32, 64):
        prefix = f"ceiling-{threads}"

        def put(path: Path, prefix: str = prefix) -> None:
            with path.open("rb") as handle:
                client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=handle)  # type: ignore[attr-defined]

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, files))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import boto3
    from botocore.config import Config

    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise SystemExit("uv is needed to run awscli in its own environment")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(CREDENTIALS)
    server = start_moto(port)
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    env["RATCHET_HOME"] = str(work / "home")
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              config=Config(max_pool_connections=64))
        bucket = "bench"
        client.create_bucket(Bucket=bucket)
        subprocess.run(aws_command(uv, "--version", endpoint=endpoint), env=env, capture_output=True)  # warm uv

        def clean(prefix: str) -> None:
            """Free the server's memory between runs (moto keeps objects in RAM): later runs must not pay for it."""
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})

        def best_pair(files: Path, name: str, keep_first: bool) -> tuple[float, float, int]:
            """Best of two runs each, alternating, into fresh prefixes: (ours, aws, our peak RSS MB)."""
            ours_times, aws_times, peak = [], [], 0
            for attempt in range(2):
                seconds, rss = timed(ours_command(files.as_uri(), f"s3://{bucket}/ours-{name}-{attempt}"), env)
                ours_times.append(seconds)
                peak = max(peak, rss)
                aws_times.append(timed(aws_command(uv, "s3", "sync", str(files), f"s3://{bucket}/aws-{name}-{attempt}",
                                                   endpoint=endpoint), env)[0])
                if attempt or not keep_first:
                    clean(f"ours-{name}-{attempt}/")
                    clean(f"aws-{name}-{attempt}/")
            return min(ours_times), min(aws_times), peak

        small = work / "small"
        write_files(small, SMALL_FILES, SMALL_SIZE)
        os.sync()  # no write-back of the fresh files competing with the first contender
        ceiling = raw_put_ceiling(client, bucket, small)
        for threads in (8, 16, 32, 64):
            clean(f"ceiling-{threads}/")
        ours_full, aws_full, _ = best_pair(small, "small", keep_first=True)
        label = f"{SMALL_FILES}x100KB"

        # against the ceiling, like for like: both in an already running process (as in an Airflow task)
        os.environ.update(RATCHET_HOME=env["RATCHET_HOME"], AWS_ENDPOINT_URL=endpoint)
        from ml_tasks.storage import sync

        in_task_full = []
        for attempt in range(2):
            start = time.perf_counter()
            assert sync(small.as_uri(), f"s3://{bucket}/in-task-{attempt}").copied == SMALL_FILES
            in_task_full.append(time.perf_counter() - start)
            clean(f"in-task-{attempt}/")
        bench_line(f"sync.full_{label}_in_task_vs_raw_put_ceiling", min(in_task_full), ceiling, target=0.9)
        bench_line(f"sync.full_{label}_cli_vs_aws_s3_sync", ours_full, aws_full, target=1.2)

        ours_again = min(timed(ours_command(small.as_uri(), f"s3://{bucket}/ours-small-0"), env)[0] for _ in range(3))
        aws_again = min(timed(aws_command(uv, "s3", "sync", str(small), f"s3://{bucket}/aws-small-0",
                                          endpoint=endpoint), env)[0] for _ in range(3))
        bench_line(f"sync.nochange_{label}_cli_vs_aws_s3_sync", ours_again, aws_again, target=2.5)

        in_task = []
        for _ in range(3):
            start = time.perf_counter()
            assert sync(small.as_uri(), f"s3://{bucket}/ours-small-0").copied == 0
            in_task.append(time.perf_counter() - start)
        bench_line(f"sync.nochange_{label}_in_task_vs_aws_s3_sync", min(in_task), aws_again, target=2.5)

        shutil.rmtree(small)
        large = work / "large"
        write_files(large, LARGE_FILES, LARGE_SIZE)
        os.sync()
        clean("")
        ours_large, aws_large, peak = best_pair(large, "large", keep_first=False)
        label = f"{LARGE_FILES}x{LARGE_SIZE // 2**20}MB"
        bench_line(f"sync.full_{label}_cli_vs_aws_s3_sync", ours_large, aws_large, target=1.0)
        bench_line(f"sync.peak_rss_{label}_vs_200MB_budget", float(peak), 200.0, target=1.0, unit="MB")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
