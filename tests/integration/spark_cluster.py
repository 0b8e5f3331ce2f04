"""A real Spark standalone cluster on 127.0.0.1: one master and its workers, each a JVM of the installed pyspark.

pyspark's wheel carries Spark's jars and `bin/spark-class`, enough to run `org.apache.spark.deploy.master.Master`
and `org.apache.spark.deploy.worker.Worker` as a Spark distribution's `sbin/start-*.sh` would, in the foreground
(`SPARK_NO_DAEMONIZE`). Every port is a free one (RPC and web UI), so two sessions on one machine never meet.
Each worker runs in its own process group with the executors it launches, so `kill_worker` takes a worker down as
a lost machine goes down (the worker and its executors at once); `stop()` kills every group it started.

    with SparkCluster(folder) as cluster:      # master + one worker, registered
        SparkOptions(master=cluster.master_url)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from .airflow_stack import free_port

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


class SparkCluster:
    """A standalone master and `workers` workers of `cores` cores and `memory` each; logs and work dirs in `folder`."""

    def __init__(self, folder: Path, workers: int = 1, cores: int = 2, memory: str = "2g") -> None:
        self.folder = folder
        self.initial_workers = workers
        self.cores = cores
        self.memory = memory
        self.port = free_port()
        self.ui_port = free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.ui_url = f"http://127.0.0.1:{self.ui_port}"
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._groups: list[int] = []

    # ---- processes ---------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
            "SPARK_LOG_DIR": str(self.folder / "logs"),
            # The executors' scratch space (shuffle and spill files), in place of /tmp.
            "SPARK_LOCAL_DIRS": str(self.folder / "local"),
            # The daemons' own heaps (not the executors'): small, the machine runs tests beside them.
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        }

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("wb") as handle:
            proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=self.env(),
                                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self._groups.append(proc.pid)
        log.info("started Spark %s (pid %s), log %s", name, proc.pid, self.log_path(name))
        return proc

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def start_master(self) -> None:
        self.master = self._start("master", [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.port),
                                             "--webui-port", str(self.ui_port)])

    def start_worker(self) -> subprocess.Popen[bytes]:
        """One more worker (its own work dir and log: `worker-<n>`), registered with the master on return."""
        name = f"worker-{len(self.workers) + 1}"
        work_dir = self.folder / name
        work_dir.mkdir(parents=True, exist_ok=True)
        alive = self.alive_workers()
        proc = self._start(name, [WORKER_CLASS, "--host", "127.0.0.1", "--cores", str(self.cores),
                                  "--memory", self.memory, "--webui-port", str(free_port()),
                                  "--work-dir", str(work_dir), self.master_url])
        self.workers.append(proc)
        self.wait_for_workers(alive + 1, name)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and the executors it launched (its process group): a machine lost mid-job."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.info("killed Spark worker pid %s and its executors", proc.pid)

    def kill_master(self) -> None:
        assert self.master is not None
        os.killpg(self.master.pid, signal.SIGKILL)
        self.master.wait(timeout=30)
        log.info("killed Spark master pid %s", self.master.pid)

    def start(self, timeout_s: float = 90) -> None:
        self.start_master()
        self._wait_for_master(time.monotonic() + timeout_s)
        for _ in range(self.initial_workers):
            self.start_worker()

    def stop(self) -> None:
        """Kill every process group this cluster started, whatever state a test left it in."""
        for pgid in self._groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in [self.master, *self.workers]:
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    def __enter__(self) -> SparkCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the master's state (its web UI's JSON) ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The master's `/json/`: workers, active and completed applications."""
        answer = requests.get(f"{self.ui_url}/json/", timeout=10)
        answer.raise_for_status()
        return dict(answer.json())

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.state()["workers"] if w["state"] == "ALIVE")
        except (requests.ConnectionError, requests.Timeout, requests.HTTPError):
            return 0

    def applications(self) -> dict[str, list[dict[str, Any]]]:
        state = self.state()
        return {"active": list(state.get("activeapps", [])), "completed": list(state.get("completedapps", []))}

    def _wait_for_master(self, deadline: float) -> None:
        assert self.master is not None
        while time.monotonic() < deadline:
            try:
                if self.state().get("status") == "ALIVE":
                    return
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError, ValueError):
                pass
            if self.master.poll() is not None:
                raise RuntimeError(f"the Spark master exited {self.master.returncode}: {self.log_tail('master')}")
            time.sleep(0.5)
        raise RuntimeError(f"the Spark master did not come up: {self.log_tail('master')}")

    def wait_for_workers(self, count: int, name: str = "worker", timeout_s: float = 90) -> None:
        """Until `count` workers are ALIVE at the master."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.alive_workers() >= count:
                return
            for proc in self.workers:
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"a Spark worker exited {proc.returncode}: {self.log_tail(name)}")
            time.sleep(0.5)
        raise RuntimeError(f"{count} Spark worker(s) never registered: {self.log_tail(name)}\n"
                           f"master: {self.log_tail('master')}")
