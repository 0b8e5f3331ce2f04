"""nightly_retrain end to end on the production profile, on this machine's real servers.

PostgreSQL (127.0.0.1:5432, trust auth; `.ci/run` starts it) holds Airflow's metadata, MLflow's tracking
store and users, and the Optuna studies, each in a fresh database dropped at the end. Redis (127.0.0.1:6379,
database 5 only, flushed before and after) is the Celery broker. moto's S3 server stands in for MinIO/S3
behind the MLflow server's artifact proxy. Every component is a subprocess started by `ml_tasks.ops.production`
with the same commands and variables as docker-compose.yml: API server, scheduler, DAG processor,
triggerer, a Celery worker on the `default` queue, one on the `gpu` queue, and MLflow with basic auth.
Nothing is mocked; the S3 credentials are moto's dummy `test` values.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.ops.production import AIRFLOW_SERVICES, ProductionProfile, ProfileSecrets, init, start, stop, write_auth_config

from .helpers import SMALL_BUDGET, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG_ID = "nightly_retrain"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS_DB = 5
BUCKET = "ratchet"
S3_DUMMY = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # moto accepts any key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def _pg(database: str = "postgres") -> Iterator[Any]:
    """A cursor on one database of the local PostgreSQL server, autocommit (CREATE/DROP DATABASE need it)."""
    import psycopg2

    conn = psycopg2.connect(**{**PG, "dbname": database})
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _flush_redis() -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


def _wait_http(url: str, seconds: float, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5).status_code < 500:
                return
        except requests.RequestException:
            pass
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited {proc.returncode}: {(logs / f'{name}.log').read_text()[-3000:]}")
        time.sleep(2)
    pytest.fail(f"{url} did not answer within {seconds:.0f}s; logs in {logs}")


def _check_drivers() -> None:
    """Airflow 3 on PostgreSQL needs asyncpg; the Celery provider 3.26 imports what Celery 5.7 removed."""
    import importlib.util

    import celery.backends.database as celery_db

    assert importlib.util.find_spec("asyncpg"), "Airflow's async engine on PostgreSQL needs asyncpg installed"
    assert hasattr(celery_db, "retry"), "apache-airflow-providers-celery needs celery<5.7 (celery.backends.database.retry)"


@dataclass
class Stack:
    profile: ProductionProfile
    home: Path
    logs: Path
    session: requests.Session
    s3_endpoint: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (_reachable(5432) and _reachable(6379)):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL or Redis is not running on 127.0.0.1 (.ci/run starts them)")
        pytest.skip("PostgreSQL (5432) and Redis (6379) are needed on 127.0.0.1; .ci/run starts them")
    _check_drivers()
    from ml_tasks.settings import get_settings

    home = tmp_path_factory.mktemp("production")
    logs = home / "logs"
    prefix = f"ratchet_{secrets.token_hex(4)}"
    moto_port = _free_port()
    s3_endpoint = f"http://127.0.0.1:{moto_port}"
    profile = ProductionProfile(
        home=str(home), secrets=ProfileSecrets.generate(),
        postgres_url=f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}",
        airflow_database=f"{prefix}_airflow", mlflow_database=f"{prefix}_mlflow",
        mlflow_auth_database=f"{prefix}_mlflow_auth", optuna_database=f"{prefix}_optuna",
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        s3_endpoint=s3_endpoint, s3_access_key=S3_DUMMY["AWS_ACCESS_KEY_ID"], s3_secret_key=S3_DUMMY["AWS_SECRET_ACCESS_KEY"],
        artifacts_destination=f"s3://{BUCKET}/mlflow", worker_concurrency=2, mlflow_workers=1,
    ).with_ports(_free_port(), _free_port(), _free_port())
    procs: dict[str, subprocess.Popen[bytes]] = {}
    monkeypatch = pytest.MonkeyPatch()
    created: list[str] = []
    try:
        with _pg() as cur:
            for name in profile.databases:
                cur.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        _flush_redis()
        logs.mkdir(parents=True)
        procs["moto"] = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=(logs / "moto.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"{s3_endpoint}/", 60, procs, logs)
        import boto3

        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=BUCKET)  # pragma: allowlist secret

        write_auth_config(profile)
        procs["mlflow"] = start(profile, "mlflow", logs)
        init(profile, logs)  # while MLflow starts
        for name in AIRFLOW_SERVICES:
            procs[name] = start(profile, name, logs)
        airflow = f"http://127.0.0.1:{profile.airflow_port}"
        _wait_http(f"{airflow}/api/v2/monitor/health", 240, procs, logs)
        _wait_http(f"http://127.0.0.1:{profile.mlflow_port}/health", 120, procs, logs)
        _wait_http(f"http://127.0.0.1:{profile.scheduler_health_port}/health", 120, procs, logs)

        passwords = Path(profile.airflow_home) / "simple_auth_manager_passwords.json.generated"
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        token = requests.post(f"{airflow}/auth/token", json={"username": username, "password": password}, timeout=30)
        token.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

        # this process is a client like the workers: same MLflow address and credentials, same RATCHET_HOME
        client_env = profile.environment()
        for key in ("RATCHET_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME",
                    "MLFLOW_TRACKING_PASSWORD", "RATCHET_OPTUNA_STORAGE", "RATCHET_MLFLOW_ARTIFACT_ROOT"):
            monkeypatch.setenv(key, client_env[key])
        get_settings.cache_clear()
        yield Stack(profile, home, logs, session, s3_endpoint)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        stop(procs, grace=10)
        _flush_redis()
        with _pg() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_airflow_and_mlflow_refuse_requests_without_credentials(stack: Stack) -> None:
    profile = stack.profile
    airflow = f"http://127.0.0.1:{profile.airflow_port}"
    mlflow = f"http://127.0.0.1:{profile.mlflow_port}"
    assert requests.get(f"{airflow}/api/v2/dags", timeout=30).status_code == 401
    assert requests.post(f"{airflow}/auth/token", json={"username": "admin", "password": "wrong"},  # pragma: allowlist secret
                         timeout=30).status_code == 401
    search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=("admin", "wrong"), timeout=30).status_code == 401
    assert requests.get(search, auth=("admin", profile.secrets.mlflow_admin_password), timeout=30).ok


def _trigger_and_wait(stack: Stack, conf: dict[str, Any], seconds: float = 900) -> tuple[str, str, list[dict]]:
    base = f"http://127.0.0.1:{stack.profile.airflow_port}/api/v2/dags/{DAG_ID}"
    session = stack.session
    deadline = time.monotonic() + 240
    while not session.get(base, timeout=30).ok:  # the DAG processor serialises the DAG first
        assert time.monotonic() < deadline, "nightly_retrain never appeared"
        time.sleep(2)
    # Unpausing makes the scheduler create the latest scheduled run too (catchup off, max_active_runs=1): a
    # run_after a day back queues ours ahead of it, so the test does not wait for a run it does not look at.
    run_after = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    created = session.post(f"{base}/dagRuns", json={"logical_date": None, "run_after": run_after, "conf": conf},
                           timeout=30)
    assert created.status_code == 200, created.text
    assert session.patch(base, json={"is_paused": False}, timeout=30).ok
    run_id = str(created.json()["dag_run_id"])
    deadline = time.monotonic() + seconds
    state = "queued"
    while time.monotonic() < deadline:
        state = session.get(f"{base}/dagRuns/{run_id}", timeout=30).json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)  # a run's end is noticed within a second, not up to five later
    tasks = session.get(f"{base}/dagRuns/{run_id}/taskInstances", timeout=30).json()["task_instances"]
    return run_id, state, tasks


def test_nightly_retrain_runs_end_to_end_on_the_production_profile(stack: Stack) -> None:
    from ml_tasks.data.landing import land_frame

    drop = land_frame(synthetic.generate(3000, seed=21), "synthetic", "production-drop")
    conf = {**SMALL_BUDGET, "source_uri": drop.as_uri(), "model_family": "logistic_regression", "tuning_workers": 2}
    started = time.monotonic()
    run_id, state, tasks = _trigger_and_wait(stack, conf)
    elapsed = time.monotonic() - started
    by_task: dict[str, list[dict]] = {}
    for ti in tasks:
        by_task.setdefault(ti["task_id"], []).append(ti)
    assert state == "success", f"{run_id} ended {state}: {[(t['task_id'], t['state']) for t in tasks]}; logs {stack.logs}"
    print(f"\nPROFILE nightly_retrain on the production profile: {elapsed:.0f}s from trigger to success")

    # Celery routed train to the gpu queue, and only the gpu-queue worker ran it
    (train,) = by_task["train"]
    assert train["queue"] == "gpu" and train["pool"] == "ratchet_gpu"
    assert {ti["queue"] for ti in tasks if ti["task_id"] != "train" and ti["state"] == "success"} == {"default"}
    assert len(by_task["tune_slot"]) == 2  # two trial slots in parallel on one PostgreSQL study...
    first, second = sorted(by_task["tune_slot"], key=lambda ti: ti["start_date"])
    assert second["start_date"] < first["end_date"], (first, second)  # ...at the same time, on two Celery slots
    gpu_log = (stack.logs / "airflow-worker-gpu.log").read_text(errors="replace")
    default_log = (stack.logs / "airflow-worker.log").read_text(errors="replace")
    assert "task_id='train'" in gpu_log and "task_id='train'" not in default_log
    assert "task_id='prepare'" in default_log and "task_id='prepare'" not in gpu_log

    # the champion, through the MLflow server with basic auth (the environment's admin credentials)
    state_now = registry_state(SYNTHETIC.registered_model)
    assert state_now["champion"] == "1" and state_now["versions"] == [1]
    from ml_tasks import tracking

    version = tracking.client().get_model_version_by_alias(SYNTHETIC.registered_model, "champion")
    assert version.tags["ratchet.airflow.run_id"] == run_id
    assert version.source.startswith(("models:/", "mlflow-artifacts:"))

    # the model's files are in the S3 bucket behind the MLflow proxy
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")  # pragma: allowlist secret
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow/")
            for obj in page.get("Contents", [])]
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]

    # Optuna's study and trials, and Airflow's metadata, in PostgreSQL
    profile = stack.profile
    with _pg(profile.optuna_database) as cur:
        cur.execute("SELECT count(*) FROM studies")
        assert cur.fetchone()[0] >= 1
        cur.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
        assert cur.fetchone()[0] >= 1
    with _pg(profile.airflow_database) as cur:
        cur.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
        assert cur.fetchone()[0] == "success"
        cur.execute("SELECT queue FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = 'train'",
                    (DAG_ID, run_id))
        assert cur.fetchone()[0] == "gpu"


@pytest.mark.load
@pytest.mark.timeout(20 * 240 + 600)
def test_twenty_runs_at_once_on_the_production_profile(stack: Stack) -> None:
    """The load test of test_load.py, here on Celery, PostgreSQL, Redis and the MLflow server behind auth."""
    from .load import (
        LOAD_RUNS,
        check_drained_load,
        land_load_drops,
        registry_baseline,
        trigger_at_once,
        wait_until_drained,
        write_summary,
    )

    airflow = f"http://127.0.0.1:{stack.profile.airflow_port}/api/v2"

    def api(method: str, path: str, **kwargs: Any) -> requests.Response:
        return stack.session.request(method, f"{airflow}{path}", timeout=30, **kwargs)

    deadline = time.monotonic() + 240
    while not api("GET", f"/dags/{DAG_ID}").ok:  # the DAG processor serialises the DAG first
        assert time.monotonic() < deadline, "nightly_retrain never appeared"
        time.sleep(2)
    drops = land_load_drops(LOAD_RUNS)
    baseline = registry_baseline()
    started = time.monotonic()
    # run_after a day back, like _trigger_and_wait: ahead of any run the schedule adds meanwhile
    run_ids = trigger_at_once(api, drops, run_after=datetime.now(UTC) - timedelta(days=1))
    assert api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).ok
    # Unpausing creates last night's scheduled run (unless an earlier test did); it is not one of the twenty.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scheduled = api("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"}).json()["dag_runs"]
        for run in scheduled:
            if run["state"] not in ("success", "failed"):
                api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})
        if scheduled:
            break
        time.sleep(2)
    # Slower than the embedded default per run: every artifact goes through the MLflow server to S3.
    runs = wait_until_drained(api, run_ids, timeout_s=LOAD_RUNS * 240)
    summary = check_drained_load(api, run_ids, runs, baseline)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    write_summary(Path(__file__).resolve().parents[2] / ".ratchet" / "test-artifacts" / "load" / "production.json",
                  summary)
    print(f"\nLOAD production profile: {summary}")
