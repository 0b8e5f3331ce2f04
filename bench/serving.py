"""Serving: `ratchet serve` against `mlflow models serve --env-manager local` of the same version, same client.

A temp RATCHET_HOME gets two registered versions from the real training stage
(logistic regression and a small Keras MLP on 4,000 synthetic rows), each the
`champion` of its own registered model. For each, both servers run side by side
on free ports: ours (`ratchet serve NAME`, one worker, inference log on at the
default sample 1.0) and MLflow's (`mlflow models serve -m models:/NAME/V
--env-manager local`, one worker). One client (`http.client`, keep-alive, one
request at a time) sends the same pre-encoded `dataframe_split` bodies to both,
in alternating rounds so that other load on the machine hits both alike:
single-row requests (p50 and p99 latency) and 1,000-row requests (rows/s).

BENCH lines per family: `serving.p50_single_row_<family>`, `serving.p99_single_row_<family>`
(ratio = MLflow's latency / ours) and `serving.batch_rows_per_s_<family>` (ours / MLflow's); target 1.0: no slower.
`BENCH_SERVING_SINGLE=250` single-row and `BENCH_SERVING_BATCHES=4` batched requests per round and server,
`BENCH_SERVING_ROUNDS=6`, `BENCH_SERVING_ROUND_SECONDS=4` (each part of a round stops early at that budget:
MLflow's Keras path takes ~0.1 s a row),
`BENCH_SERVING_FAMILIES=logistic_regression,keras_mlp`.
Run alone: `uv run python bench/serving.py` (about 4-6 minutes on 2 cores, most of it training and start-up).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

SINGLE = int(os.environ.get("BENCH_SERVING_SINGLE", "250"))
BATCHES = int(os.environ.get("BENCH_SERVING_BATCHES", "4"))
BATCH_ROWS = 1000
ROUNDS = int(os.environ.get("BENCH_SERVING_ROUNDS", "6"))
ROUND_SECONDS = float(os.environ.get("BENCH_SERVING_ROUND_SECONDS", "4"))
FAMILIES = {"logistic_regression": {},
            "keras_mlp": {"n_layers": 2, "units": 64, "dropout": 0.0, "l2": 1e-6, "learning_rate": 3e-3, "batch_size": 128}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _register(family: str, params: dict[str, Any], drop_uri: str) -> tuple[str, str]:
    from ml_tasks import tracking
    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.data.preparation import prepare
    from ml_tasks.release import registry
    from ml_tasks.training.trainer import train

    ctx = RunContext("synthetic", f"bench-serving-{family}")
    prepare(ctx, drop_uri)
    parent = tracking.ensure_parent_run(ctx)
    trained = train(ctx, TrainConfig(max_epochs=4, patience=4, seed=0, family=family), params, parent)
    name = f"bench_serving_{family}"
    version = registry.register_candidate(name, trained.model_uri, parent, {})
    registry.compare_and_set_champion(name, version, None, "serving benchmark")
    return name, version


def _wait(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on {port} not healthy after {seconds}s: {log.read_text()[-2000:]}")


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(self, body: bytes) -> bytes:
        self.conn.request("POST", "/invocations", body=body, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {raw[:300]!r}")
        return raw

    def run(self, bodies: list[bytes], limit: int, seconds: float, start: int) -> list[float]:
        # a fresh keep-alive connection (the server closes one left idle while the other server had its turn),
        # opened by one untimed request
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.post(bodies[start % len(bodies)])
        times = []
        began = time.perf_counter()
        for i in range(limit):
            body = bodies[(start + i) % len(bodies)]
            t = time.perf_counter()
            self.post(body)
            times.append(time.perf_counter() - t)
            if time.perf_counter() - began > seconds:
                break
        return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(family: str, name: str, version: str, home: Path, env: dict[str, str], token: str) -> None:
    from ml_tasks.datasets import SYNTHETIC, synthetic

    bin_dir = Path(sys.executable).parent
    ours_port, ref_port = _free_port(), _free_port()
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        with (logs / f"ours-{family}.log").open("w") as out:
            procs.append(subprocess.Popen([str(bin_dir / "ratchet"), "serve", name, "--port", str(ours_port)],
                                          env=env, stdout=out, stderr=subprocess.STDOUT))
        _wait(ours_port, procs[-1], logs / f"ours-{family}.log")
        with (logs / f"mlflow-{family}.log").open("w") as out:
            procs.append(subprocess.Popen(
                [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(ref_port), "-w", "1"], env=env, stdout=out, stderr=subprocess.STDOUT))
        _wait(ref_port, procs[-1], logs / f"mlflow-{family}.log")

        rows = synthetic.generate(BATCH_ROWS, seed=21).drop(columns=[SYNTHETIC.target])
        columns = list(rows.columns)
        singles = [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
                   for row in rows.values.tolist()]
        batch = json.dumps({"dataframe_split": {"columns": columns, "data": rows.values.tolist()}}).encode()
        clients = {"ours": Client(ours_port, token), "mlflow": Client(ref_port, token)}
        answers = {who: json.loads(c.post(batch))["predictions"] for who, c in clients.items()}
        gap = max(abs(a["probability"] - b["probability"]) for a, b in zip(answers["ours"], answers["mlflow"], strict=True))
        assert gap < 1e-6, f"the two servers disagree by {gap}"
        for client in clients.values():  # warm-up: connections, first calls, traced graphs
            client.run(singles, 20, ROUND_SECONDS, 0)
        single: dict[str, list[float]] = {"ours": [], "mlflow": []}
        batched: dict[str, list[float]] = {"ours": [], "mlflow": []}
        for round_ in range(ROUNDS):
            for who, client in (clients.items() if round_ % 2 == 0 else reversed(clients.items())):
                single[who] += client.run(singles, SINGLE, ROUND_SECONDS, round_ * SINGLE)
                batched[who] += client.run([batch], BATCHES, ROUND_SECONDS, 0)
        for who in clients:
            print(f"# {family} {who}: {len(single[who])} single-row requests, p50 {1000 * _percentile(single[who], 0.5):.2f} ms, "
                  f"p99 {1000 * _percentile(single[who], 0.99):.2f} ms; {len(batched[who])} batches of {BATCH_ROWS}, "
                  f"{BATCH_ROWS * len(batched[who]) / sum(batched[who]):.0f} rows/s", flush=True)
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            bench_line(f"serving.{label}_single_row_{family}", 1000 * _percentile(single["ours"], q),
                       1000 * _percentile(single["mlflow"], q), target=1.0, unit="ms")
        rate = {who: BATCH_ROWS * len(times) / sum(times) for who, times in batched.items()}
        bench_line(f"serving.batch_rows_per_s_{family}", rate["ours"], rate["mlflow"], target=1.0, unit="rows/s",
                   higher_is_better=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-serving-") as tmp:
        home = Path(tmp) / "home"
        os.environ["RATCHET_HOME"] = str(home)
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RATCHET_MLFLOW_ARTIFACT_ROOT", "RATCHET_INFERENCE_LOG_DIR"):
            os.environ.pop(key, None)
        from ml_tasks import tracking
        from ml_tasks.datasets import synthetic
        from ml_tasks.settings import environment_exports

        drop = home / "drop"
        drop.mkdir(parents=True)
        synthetic.generate(4000, seed=4).to_parquet(drop / "part-000.parquet", index=False)
        tracking.configure()
        chosen = os.environ.get("BENCH_SERVING_FAMILIES", ",".join(FAMILIES)).split(",")
        registered = {family: _register(family, FAMILIES[family], drop.as_uri()) for family in chosen}
        token = secrets.token_urlsafe(16)
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, **environment_exports(), "RATCHET_SERVE_TOKEN": token,
               "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        for family, (name, version) in registered.items():
            _measure(family, name, version, home, env, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
