"""Helpers for the integration tests: land drops, run the DAG, read the registry."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from ml_tasks.config import RunContext, run_key_for
from ml_tasks.constants import RUN_REPORT_FILE

SMALL_BUDGET = {"dataset": "synthetic", "tuning_trials": 2, "tuning_epochs": 2, "max_epochs": 6}


class _DagTestInterpreter:
    """`dag_test_runner.py` in a process of its own, started with the `airflow` CLI's environment, and started
    afresh whenever that environment changes (each module has its own RATCHET_HOME)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        read, write = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.dag_test_runner", str(write)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write,), text=True,
                                     cwd=Path(__file__).resolve().parents[2], start_new_session=True)
        os.close(write)
        self.done = os.fdopen(read)

    def run(self, argv: list[str], log: Path) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        answer = self.done.readline()
        if not answer:  # the interpreter died mid-command: say so in the log the test reads
            self.proc.wait()
            with log.open("a") as handle:
                handle.write(f"\ndag_test_runner exited {self.proc.returncode} during this command\n")
            return self.proc.returncode or 1
        return int(answer)

    def stop(self) -> None:
        """Kill it and whatever it started (a stage's fresh process included)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.done.close()


_interpreter: _DagTestInterpreter | None = None


@atexit.register
def _stop_interpreter() -> None:
    if _interpreter is not None:
        _interpreter.stop()


def dags_test(dag_id: str, conf: dict[str, Any], log: Path, logical: str | None = None) -> tuple[int, str]:
    """`airflow dags test` of any DAG: a real DagRun in Airflow's database. Returns the exit code and the log.

    The command runs as the `airflow` executable runs it, in one interpreter kept for the commands that follow
    with the same environment (`dag_test_runner.py` says why)."""
    global _interpreter
    from ml_tasks.ops.airflow_cli import airflow_env

    env = {k: v for k, v in airflow_env().items() if k != "PYTEST_CURRENT_TEST"}  # pytest sets it per test
    if _interpreter is None or _interpreter.env != env or _interpreter.proc.poll() is not None:
        _stop_interpreter()
        _interpreter = _DagTestInterpreter(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    code = _interpreter.run(["dags", "test", dag_id, *([logical] if logical else []), "-c", json.dumps(conf)], log)
    return code, log.read_text()


def run_dag_test(date: str, conf: dict[str, Any], log_dir: Path) -> tuple[int, dict[str, Any]]:
    """`airflow dags test` for one night of nightly_retrain. Returns exit code and report."""
    logical = f"{date}T02:00:00+00:00"
    code, _ = dags_test("nightly_retrain", conf, log_dir / f"{date}.log", logical)
    ctx = RunContext(conf["dataset"], run_key_for(datetime.fromisoformat(logical), None))
    report_path = ctx.report_dir / RUN_REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return code, report


def registry_state(name: str) -> dict[str, Any]:
    from ml_tasks import tracking
    from ml_tasks.release.registry import alias_version

    client = tracking.client()
    versions = client.search_model_versions(f"name='{name}'")
    return {
        "champion": alias_version(name, "champion"),
        "challenger": alias_version(name, "challenger"),
        "versions": sorted(int(v.version) for v in versions),
    }


def checkpointed_epoch(backup_dir: Path) -> int:
    """The last epoch Keras' BackupAndRestore saved under `backup_dir` (0 before the first)."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return 0
