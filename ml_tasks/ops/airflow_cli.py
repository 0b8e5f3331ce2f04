"""The `airflow` CLI of this environment, run as a subprocess on Ratchet's state.

Used by the demo, `ratchet up` and the tests. ml_tasks never imports Airflow;
it only runs the CLI with the environment `ratchet env` prints.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ml_tasks.constants import GPU_POOL, PROMOTION_POOL
from ml_tasks.settings import environment_exports, get_settings

log = logging.getLogger(__name__)


def airflow_env() -> dict[str, str]:
    env = {**os.environ, **environment_exports()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def airflow(*args: str, log_path: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `airflow` CLI of this environment on Ratchet's state."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    if log_path is None:
        return subprocess.run(command, env=airflow_env(), check=check, capture_output=True, text=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as handle:
        return subprocess.run(command, env=airflow_env(), check=check, stdout=handle, stderr=subprocess.STDOUT, text=True)


def warm_execution_api(airflow_url: str, timeout: float = 120.0, server_workers: int = 1) -> bool:
    """Make the API server build its Task Execution API now, not on the first task's first call.

    Airflow's execution API is a Cadwyn app that generates its versioned routers on its first request, on the
    server's event loop: seconds of CPU, during which the API server answers nothing (UI included),
    and the first task's `run` call times out and is retried. One unauthenticated GET of its health route pays
    that at start-up; it waits for the server to listen. With several server worker processes each builds its
    own, so as many requests go at once: a worker busy building accepts no connection, so another takes the next.
    True when every request was answered.
    """
    if server_workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(server_workers) as pool:
            return all(pool.map(lambda _: warm_execution_api(airflow_url, timeout), range(server_workers)))
    url = f"{airflow_url.rstrip('/')}/execution/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, deadline - time.monotonic())):
                return True
        except urllib.error.HTTPError as exc:  # it answered: the routers are built
            return exc.code < 500
        except OSError as exc:  # not listening yet, or too slow
            if time.monotonic() >= deadline:
                log.warning("the Task Execution API at %s did not answer its warm-up request: %s", url, exc)
                return False
            time.sleep(1)


def ratchet_pools(gpu_slots: int | None = None) -> dict[str, dict[str, Any]]:
    """The pools Ratchet's DAGs use, in the file format of `airflow pools import`."""
    from ml_tasks.environment_variables import RATCHET_GPU_SLOTS

    slots = gpu_slots if gpu_slots is not None else RATCHET_GPU_SLOTS.get()
    return {
        PROMOTION_POOL: {"slots": 1, "description": "Moves of the champion alias: one at a time"},
        GPU_POOL: {"slots": max(1, slots), "description": "Training tasks: one slot per GPU (1 on a CPU-only host)"},
    }


def init_airflow(gpu_slots: int | None = None) -> None:
    """Migrate Airflow's database and create or update the pools Ratchet's DAGs use.

    The pools go in one `airflow pools import` (an upsert, as `pools set` is): each `airflow` command pays for
    Airflow's imports before it does anything.
    """
    get_settings().airflow_home.mkdir(parents=True, exist_ok=True)
    airflow("db", "migrate")
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ratchet-pools-", delete=False) as handle:
        json.dump(ratchet_pools(gpu_slots), handle)
    try:
        airflow("pools", "import", handle.name)
    finally:
        os.unlink(handle.name)


def main(argv: list[str] | None = None) -> int:
    """`python -m ml_tasks.ops.airflow_cli init`: the airflow-init step of the production profile (and compose)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ml_tasks.ops.airflow_cli")
    parser.add_argument("command", choices=["init"])
    parser.parse_args(argv)
    try:
        init_airflow()
    except subprocess.CalledProcessError as exc:
        print(f"{' '.join(map(str, exc.cmd))} failed:\n{exc.stdout or ''}{exc.stderr or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
