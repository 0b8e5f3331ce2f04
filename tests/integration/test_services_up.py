"""`ratchet up` (make up): Airflow and the MLflow UI start on localhost with authentication on."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_serves_both_uis_and_refuses_anonymous_requests(tmp_path):
    airflow_port, mlflow_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env["RATCHET_HOME"] = str(tmp_path / "home")
    out = tmp_path / "up.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ratchet"), "up", "--airflow-port", str(airflow_port),
         "--mlflow-port", str(mlflow_port)],
        env=env, stdout=out.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops both" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()[-3000:]
            time.sleep(2)
        text = out.read_text()
        assert "services are up" in text, text[-3000:]
        airflow_password = re.search(r"Airflow UI .* login admin / (\S+)", text).group(1)
        mlflow_password = re.search(r"MLflow UI .* login admin / (\S+)", text).group(1)
        airflow, mlflow = f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}"
        search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"

        assert requests.get(f"{airflow}/api/v2/dags", timeout=10).status_code == 401
        assert requests.get(search, timeout=10).status_code == 401
        assert requests.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
        assert requests.get(search, auth=("admin", mlflow_password), timeout=10).status_code == 200
        token = requests.post(f"{airflow}/auth/token", json={"username": "admin", "password": airflow_password},
                              timeout=10).json()["access_token"]
        dags = requests.get(f"{airflow}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert dags.status_code == 200
        secret_file = tmp_path / "home" / "mlflow" / "basic_auth.ini"
        assert secret_file.stat().st_mode & 0o077 == 0  # the generated password is readable by its owner only
    finally:
        proc.send_signal(signal.SIGTERM)  # to `ratchet up` alone: it must stop what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)
    for port in (airflow_port, mlflow_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
