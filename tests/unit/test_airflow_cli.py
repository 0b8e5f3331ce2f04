"""warm_execution_api against a real HTTP server on 127.0.0.1 (Airflow's own API server is exercised by the
integration tests; here only the warm-up's requests, waiting and answers are checked)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_tasks.ops.airflow_cli import ratchet_pools, warm_execution_api
from tests.integration.airflow_stack import free_port


class _Recorder(BaseHTTPRequestHandler):
    paths: list[str] = []
    status = 200

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"status": "healthy"}')

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int, status: int = 200) -> ThreadingHTTPServer:
    _Recorder.paths = []
    _Recorder.status = status
    server = ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def test_it_requests_the_execution_api_health_route(port: int) -> None:
    server = _serve(port)
    try:
        assert warm_execution_api(f"http://127.0.0.1:{port}/", timeout=10)
        assert _Recorder.paths == ["/execution/health"]
    finally:
        server.shutdown()


def test_it_sends_one_request_per_server_worker(port: int) -> None:
    server = _serve(port)
    try:
        assert warm_execution_api(f"http://127.0.0.1:{port}", timeout=10, server_workers=3)
        assert _Recorder.paths == ["/execution/health"] * 3
    finally:
        server.shutdown()


def test_it_waits_for_a_server_that_starts_listening_late(port: int) -> None:
    servers: list[ThreadingHTTPServer] = []
    starter = threading.Timer(1.5, lambda: servers.append(_serve(port)))
    starter.start()
    try:
        assert warm_execution_api(f"http://127.0.0.1:{port}", timeout=20)
        assert _Recorder.paths == ["/execution/health"]
    finally:
        starter.join()
        for server in servers:
            server.shutdown()


def test_an_answer_is_enough_but_a_server_error_is_not(port: int) -> None:
    server = _serve(port, status=404)
    try:
        assert warm_execution_api(f"http://127.0.0.1:{port}", timeout=10)  # it answered: the app is built
        _Recorder.status = 500
        assert not warm_execution_api(f"http://127.0.0.1:{port}", timeout=10)
    finally:
        server.shutdown()


def test_nothing_listening_gives_up_at_the_deadline(port: int, caplog: pytest.LogCaptureFixture) -> None:
    assert not warm_execution_api(f"http://127.0.0.1:{port}", timeout=2)
    assert "did not answer its warm-up request" in caplog.text


def test_airflow_on_the_embedded_sqlite_waits_for_a_writers_lock_and_other_databases_get_no_sqlite_args(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow itself resolves the exported import paths (in a subprocess, with the environment its components get)
    to the connect args that make SQLite wait for another writer; a PostgreSQL URL gets none of them (psycopg2
    refuses a `timeout` argument). The wait itself is exercised in tests/integration/test_faults.py."""
    import json
    import subprocess
    import sys

    from ml_tasks.ops.airflow_cli import airflow_env
    from ml_tasks.ops.airflow_db import SQLITE_BUSY_TIMEOUT_S
    from ml_tasks.settings import environment_exports

    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    probe = ("import json; from airflow.configuration import conf; "
             "print(json.dumps([conf.getimport('database', k) for k in "
             "('sql_alchemy_connect_args', 'sql_alchemy_connect_args_async')]))")
    done = subprocess.run([sys.executable, "-c", probe], env=airflow_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    sync_args, async_args = json.loads(done.stdout.strip().splitlines()[-1])
    assert sync_args["timeout"] == async_args["timeout"] == SQLITE_BUSY_TIMEOUT_S > 5

    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://ratchet@127.0.0.1:5432/airflow")
    assert not any("CONNECT_ARGS" in name for name in environment_exports())


def test_the_pools_file_sizes_the_gpu_pool_from_the_hosts_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `init_airflow` imports in one `airflow pools import` (the integration stacks run it for real)."""
    from ml_tasks.constants import GPU_POOL, PROMOTION_POOL

    monkeypatch.setenv("RATCHET_GPU_SLOTS", "2")
    pools = ratchet_pools()
    assert pools[GPU_POOL]["slots"] == 2 and pools[PROMOTION_POOL]["slots"] == 1  # one alias move at a time
    assert all(set(pool) == {"slots", "description"} for pool in pools.values())  # the import's file format
    assert ratchet_pools(gpu_slots=0)[GPU_POOL]["slots"] == 1  # a CPU-only host still trains, one at a time
