"""Sync: ours against the S3 server's own ceiling and against `aws s3 sync`, one local S3 server.

The S3 server is moto's (`moto_server`, a separate process on 127.0.0.1); on a
2-core machine it is the bottleneck, so the honest reference for a full sync
is the server's ceiling: raw concurrent boto3 PUTs of the same files with as
many threads as help. `aws s3 sync` (awscli from the registry, in its own
environment made by `uv tool run`) is timed as the command a user types, `aws`
itself (the environment's console script, not through `uv tool run`, whose
environment lookup costs ~0.4 s a call), and so is ours (`ratchet sync`).
Each command runs under a small launcher that times it and reads its own peak
RSS with `os.wait4` (each side's own, nothing of the other's or of this process).

No-change re-sync is compared like with like twice: as commands (two fresh
processes, interpreter start and imports included on both sides), and warm in a
running process (as in an Airflow task: ours `ml_tasks.storage.sync`, theirs
awscli's own driver, `awscli.clidriver`, in awscli's environment), each side in
its own process that imports, syncs once to warm up, then times its syncs.
"""

from __future__ import annotations

import json
import os
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
WARM_SYNCS = 3  # timed no-change syncs per warm process, after one untimed
# Times one command and reads its peak RSS (os.wait4: the command's own, children included) into argv[1].
# posix_spawn shares this small launcher's memory until the exec, so the command's figure starts from it, not
# from the bench process's (a child's ru_maxrss carries its parent's RSS at the fork otherwise).
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""
# A warm process: the same no-change sync, once untimed, then WARM_SYNCS timed; prints the times as JSON.
OURS_WARM = """
import json, sys, time
from ml_tasks.storage import sync
times = []
for attempt in range(1 + int(sys.argv[3])):
    start = time.perf_counter()
    assert sync(sys.argv[1], sys.argv[2]).copied == 0
    times.append(time.perf_counter() - start)
print(json.dumps(times[1:]))
"""
AWS_WARM = """
import json, sys, time
from awscli.clidriver import create_clidriver
driver = create_clidriver()
times = []
for attempt in range(1 + int(sys.argv[1])):
    start = time.perf_counter()
    assert driver.main(sys.argv[2:]) == 0
    times.append(time.perf_counter() - start)
print(json.dumps(times[1:]))
"""


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
    """Wall seconds of `command` and its own peak RSS in MB."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as result:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, result.name, *command], env=env,
                              capture_output=True, text=True)
        figures = result.read().split()
    if done.returncode != 0 or len(figures) != 3 or figures[1] != "0":
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return float(figures[0]), int(figures[2]) // 1024


def awscli_python(uv: str, env: dict[str, str]) -> Path:
    """The interpreter of awscli's own environment (made by `uv tool run`, once)."""
    done = subprocess.run([uv, "tool", "run", "--quiet", "--from", AWSCLI, "python", "-c", "import sys; print(sys.executable)"],
                          env=env, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def aws_command(aws: Path, *args: str, endpoint: str) -> list[str]:
    return [str(aws), *args, "--endpoint-url", endpoint]


def ours_command(src: str, dst: str) -> list[str]:
    return [str(BIN / "ratchet"), "sync", src, dst, "--quiet"]


def warm_syncs(command: list[str], env: dict[str, str]) -> list[float]:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"warm sync failed: {done.stderr[-2000:]}")
    return [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])]


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
    aws_python = awscli_python(uv, env)
    aws = aws_python.parent / "aws"
    server = start_moto(port)
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    env["RATCHET_HOME"] = str(work / "home")
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              config=Config(max_pool_connections=64))
        bucket = "bench"
        client.create_bucket(Bucket=bucket)
        timed(aws_command(aws, "--version", endpoint=endpoint), env)  # its environment's files into the page cache

        def clean(prefix: str) -> None:
            """Free the server's memory between runs (moto keeps objects in RAM): later runs must not pay for it."""
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})

        def best_pair(files: Path, name: str, keep_first: bool) -> tuple[float, float, int, int]:
            """Best of two runs each, alternating, into fresh prefixes: (ours s, aws s, our peak MB, aws peak MB)."""
            ours_times, aws_times, ours_peak, aws_peak = [], [], 0, 0
            for attempt in range(2):
                seconds, rss = timed(ours_command(files.as_uri(), f"s3://{bucket}/ours-{name}-{attempt}"), env)
                ours_times.append(seconds)
                ours_peak = max(ours_peak, rss)
                seconds, rss = timed(aws_command(aws, "s3", "sync", str(files), f"s3://{bucket}/aws-{name}-{attempt}",
                                                 endpoint=endpoint), env)
                aws_times.append(seconds)
                aws_peak = max(aws_peak, rss)
                if attempt or not keep_first:
                    clean(f"ours-{name}-{attempt}/")
                    clean(f"aws-{name}-{attempt}/")
            return min(ours_times), min(aws_times), ours_peak, aws_peak

        small = work / "small"
        write_files(small, SMALL_FILES, SMALL_SIZE)
        os.sync()  # no write-back of the fresh files competing with the first contender
        ceiling = raw_put_ceiling(client, bucket, small)
        for threads in (8, 16, 32, 64):
            clean(f"ceiling-{threads}/")
        ours_full, aws_full, _, _ = best_pair(small, "small", keep_first=True)
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

        # no change, as commands: a fresh process each, taking turns
        ours_again, aws_again = [], []
        for _ in range(3):
            ours_again.append(timed(ours_command(small.as_uri(), f"s3://{bucket}/ours-small-0"), env)[0])
            aws_again.append(timed(aws_command(aws, "s3", "sync", str(small), f"s3://{bucket}/aws-small-0",
                                               endpoint=endpoint), env)[0])
        bench_line(f"sync.nochange_{label}_cli_vs_aws_s3_sync", min(ours_again), min(aws_again), target=2.5)

        # no change, warm in a running process on both sides, taking turns
        ours_warm, aws_warm = [], []
        for _ in range(2):
            ours_warm += warm_syncs([sys.executable, "-c", OURS_WARM, small.as_uri(), f"s3://{bucket}/ours-small-0",
                                     str(WARM_SYNCS)], env)
            aws_warm += warm_syncs([str(aws_python), "-c", AWS_WARM, str(WARM_SYNCS), "s3", "sync", str(small),
                                    f"s3://{bucket}/aws-small-0", "--endpoint-url", endpoint], env)
        bench_line(f"sync.nochange_{label}_in_process_vs_aws_s3_sync_in_process", min(ours_warm), min(aws_warm),
                   target=2.5)

        shutil.rmtree(small)
        large = work / "large"
        write_files(large, LARGE_FILES, LARGE_SIZE)
        os.sync()
        clean("")
        ours_large, aws_large, ours_peak, aws_peak = best_pair(large, "large", keep_first=False)
        label = f"{LARGE_FILES}x{LARGE_SIZE // 2**20}MB"
        bench_line(f"sync.full_{label}_cli_vs_aws_s3_sync", ours_large, aws_large, target=1.0)
        bench_line(f"sync.peak_rss_{label}_cli_vs_aws_s3_sync", float(ours_peak), float(aws_peak), target=1.0, unit="MB")
        bench_line(f"sync.peak_rss_{label}_cli_vs_200MB_budget", float(ours_peak), 200.0, target=1.0, unit="MB")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
