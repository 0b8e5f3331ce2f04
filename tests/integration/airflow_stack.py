"""Airflow's components as separate processes, so that a test can kill and restart one of them.

`airflow standalone` runs everything under one parent; a fault test needs to
SIGKILL the scheduler alone, or a task's own processes, and start a fresh
scheduler. `AirflowStack` starts `airflow api-server`, `airflow dag-processor`,
`airflow scheduler` and `airflow triggerer` on the embedded default (SQLite,
LocalExecutor) with one RATCHET_HOME, logs in through the simple auth manager's
generated password and drives runs over the REST API.

Every process it starts gets its own session; `stop()` kills every process
group it ever started and then any process left that carries this
RATCHET_HOME in its environment (task processes put themselves in their own
group, and a killed scheduler leaves its LocalExecutor workers behind).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
TERMINAL_RUN_STATES = ("success", "failed")
REPARSE_INTERVAL_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowStack:
    """Airflow 3 as four processes on the current RATCHET_HOME (call `start()`; always `stop()`)."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.extra_env = dict(extra_env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._groups: set[int] = set()
        self._starts: dict[str, int] = {}
        self.session = requests.Session()

    # ---- processes ---------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        from ml_tasks.ops.airflow_cli import airflow_env

        return {
            **airflow_env(),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # No test changes a DAG file or a declaration once its stack is up: each file is parsed when the DAG
            # processor starts and not again every 30 s (Airflow's default), CPU the other test worker can use.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(REPARSE_INTERVAL_S),
            # LocalExecutor forks `parallelism` workers up front: a few are plenty for one run at a time.
            "AIRFLOW__CORE__PARALLELISM": "4",
            **self.extra_env,
        }

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        assert name in COMPONENTS, name
        self._starts[name] = self._starts.get(name, 0) + 1
        log_path = self.home / f"{name}.{self._starts[name]}.log"
        with log_path.open("wb") as handle:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), name], env=self.env(),
                                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self._groups.add(proc.pid)
        log.info("started airflow %s (pid %s), log %s", name, proc.pid, log_path)
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / f"{name}.{self._starts.get(name, 1)}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def kill(self, name: str) -> int:
        """SIGKILL one component's own process (not its group: a scheduler's workers are left as a crash leaves them)."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.info("killed airflow %s (pid %s)", name, proc.pid)
        return proc.pid

    def start(self, timeout_s: float = 300) -> None:
        from ml_tasks.ops.airflow_cli import init_airflow

        init_airflow()
        for name in COMPONENTS:
            self.start_component(name)
        deadline = time.monotonic() + timeout_s
        self._wait_for_api(deadline)
        self._login(deadline)

    def _wait_for_api(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/api/v2/monitor/health", timeout=3).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or too busy to answer in time
                pass
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited {proc.returncode}: {self.log_tail(name)}")
            time.sleep(2)
        raise RuntimeError(f"the Airflow API did not come up: {self.log_tail('api-server')}")

    def _login(self, deadline: float) -> None:
        from ml_tasks.settings import get_settings

        passwords = get_settings().airflow_home / "simple_auth_manager_passwords.json.generated"
        while not passwords.is_file() and time.monotonic() < deadline:
            time.sleep(1)
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        token = requests.post(f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=30)
        token.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def stop(self) -> None:
        """Kill everything this stack started, whatever state a test left it in."""
        for pgid in sorted(self._groups):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for proc in self.stray_processes():
            try:
                proc.kill()
            except Exception:  # gone already
                pass

    def stray_processes(self) -> list[Any]:
        """Live processes (other than this one) whose environment carries this stack's RATCHET_HOME."""
        import psutil

        found = []
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            try:
                if proc.environ().get("RATCHET_HOME") == str(self.home) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- REST API ----------------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # longer than ml_tasks.ops.airflow_db.SQLITE_BUSY_TIMEOUT_S: a request may wait that long for a write lock
        return self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}").ok:
                return
            time.sleep(2)
        raise RuntimeError(f"{dag_id} was never parsed: {self.log_tail('dag-processor')}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def fail_scheduled_runs(self, dag_id: str, wait_s: float = 60) -> list[str]:
        """Mark failed the scheduled runs the scheduler creates when a DAG is unpaused (waits for the first)."""
        deadline = time.monotonic() + wait_s
        failed: list[str] = []
        while not failed and time.monotonic() < deadline:
            runs = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"run_type": "scheduled"}).json()["dag_runs"]
            for run in runs:
                if run["state"] not in TERMINAL_RUN_STATES:
                    self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})
                failed.append(run["dag_run_id"])
            time.sleep(1)
        return failed

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        created = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        if created.status_code != 200:
            raise RuntimeError(f"trigger refused ({created.status_code}): {created.text}")
        return str(created.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task id (with `[map index]` for mapped ones) -> its task instance as the API returns it."""
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
        return {t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t
                for t in found["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> tuple[str, dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        state = "queued"
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                break
            time.sleep(1)
        return state, {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}

    def clear_run(self, dag_id: str, run_id: str) -> list[str]:
        """Clear every task of a run (as the UI's "Clear" on a run does); returns the cleared task ids."""
        cleared = self.api("POST", f"/dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False})
        if not cleared.ok:
            raise RuntimeError(f"clear refused ({cleared.status_code}): {cleared.text}")
        body = cleared.json()
        return [t["task_id"] for t in body.get("task_instances", [])] if isinstance(body, dict) else []
