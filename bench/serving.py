"""Serving: `ratchet serve` against `mlflow models serve --env-manager local`, and `/explain` against the prediction
and against `shap.KernelExplainer`, same client, same rows.

A temp RATCHET_HOME gets one registered version per family from the real
training stage (histogram gradient boosting, random forest, logistic
regression and a small Keras MLP, on 4,000 synthetic rows), each the
`champion` of its own registered model, served by ours (`ratchet serve NAME`,
one worker, inference log on at the default sample 1.0). One client
(`http.client`, keep-alive, one request at a time) sends pre-encoded
`dataframe_split` bodies, in alternating rounds so that other load on the
machine hits both sides alike.

Prediction against MLflow's server (`BENCH_SERVING_MLFLOW_FAMILIES`, default logistic regression and the Keras MLP),
both servers side by side on free ports, one worker each; single-row requests (p50 and p99 latency) and 1,000-row
requests (rows/s):
- logistic regression: `mlflow models serve -m models:/NAME/V` of the same registered version (our pyfunc in
  MLflow's server);
- Keras MLP: the same trained network logged with MLflow's own Keras flavor (`mlflow.keras.save_model`) and served
  by `mlflow models serve -m <that model>`: what a Keras user without Ratchet deploys. That model takes the
  transformed feature vector (`{"inputs": [[...]]}`), so its client sends features already transformed: the
  reference skips the transform we do per request.
BENCH `serving.p50_single_row_<family>`, `serving.p99_single_row_<family>` (ratio = MLflow's latency / ours) and
`serving.batch_rows_per_s_<family>` (ours / MLflow's); target 1.0: no slower.

Explanations, every family: the same single rows to our `/explain` and our `/invocations`, alternating rounds.
BENCH `serving.explain_vs_predict_<family>`: p50 of a one-row explanation against p50 of the one-row prediction.
`ratio` is higher-is-better (prediction / explanation), so the budget "an explanation costs at most 5 predictions"
is target 0.2 (= 1/5); it is the target of the tree families (TreeSHAP), and the same budget is shown for the
others. Then the reference a user without Ratchet reaches for: `shap.KernelExplainer` with default settings
(`nsamples="auto"`) over the model's own predict (`predict_proba`, or the Keras `predict`) on transformed features,
with a background of 100 training rows (`shap.sample`, as shap's documentation recommends), in this process, on the
same rows: BENCH `serving.explain_vs_kernel_shap_<family>` = Kernel SHAP's seconds per row / our `/explain` p50
over HTTP (target 1.0). Ours pays HTTP, parsing and the prediction; the reference pays none of them.

`BENCH_SERVING_SINGLE=250` single-row and `BENCH_SERVING_BATCHES=4` batched requests per round and server,
`BENCH_SERVING_ROUNDS=6`, `BENCH_SERVING_ROUND_SECONDS=4` (each part of a round stops early at that budget:
MLflow's Keras path takes ~0.1 s a row), `BENCH_SERVING_KERNEL_ROWS=3` rows explained by Kernel SHAP,
`BENCH_SERVING_FAMILIES` (default: all four). `BENCH_SERVING_QUICK=1`: 60 requests, 2 rounds, 1 Kernel SHAP row.
Run alone: `uv run python bench/serving.py` (about 8-10 minutes on 2 cores, most of it training, start-up and
Kernel SHAP on the Keras MLP; quick: about 5).
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

QUICK = os.environ.get("BENCH_SERVING_QUICK", "") not in ("", "0")
SINGLE = int(os.environ.get("BENCH_SERVING_SINGLE", "60" if QUICK else "250"))
BATCHES = int(os.environ.get("BENCH_SERVING_BATCHES", "2" if QUICK else "4"))
BATCH_ROWS = 1000
ROUNDS = int(os.environ.get("BENCH_SERVING_ROUNDS", "2" if QUICK else "6"))
ROUND_SECONDS = float(os.environ.get("BENCH_SERVING_ROUND_SECONDS", "4"))
KERNEL_ROWS = int(os.environ.get("BENCH_SERVING_KERNEL_ROWS", "1" if QUICK else "3"))
KERNEL_BACKGROUND = 100
FAMILIES = {"hist_gradient_boosting": {}, "random_forest": {}, "logistic_regression": {},
            "keras_mlp": {"n_layers": 2, "units": 64, "dropout": 0.0, "l2": 1e-6, "learning_rate": 3e-3, "batch_size": 128}}
MLFLOW_FAMILIES = os.environ.get("BENCH_SERVING_MLFLOW_FAMILIES", "logistic_regression,keras_mlp").split(",")
# An explanation may cost this many predictions (p50, one row); the tree families' target.
EXPLAIN_BUDGET = 5.0


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


def _start(command: list[str], port: int, log: Path, env: dict[str, str], seconds: float = 240) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"server on {port} not healthy after {seconds}s: {log.read_text()[-2000:]}")


class Client:
    def __init__(self, port: int, token: str, path: str = "/invocations") -> None:
        self.port, self.path = port, path
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(self, body: bytes) -> bytes:
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {raw[:300]!r}")
        return raw

    def run(self, bodies: list[bytes], limit: int, seconds: float, start: int) -> list[float]:
        # a fresh keep-alive connection (the server closes one left idle while the other side had its turn),
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


def _alternate(clients: dict[str, Client], singles: dict[str, list[bytes]], batches: dict[str, bytes] | None = None
               ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Single-row (and batched) request times per side, in rounds whose order alternates."""
    for who, client in clients.items():  # warm-up: connections, first calls, traced graphs
        client.run(singles[who], 20, ROUND_SECONDS, 0)
    single: dict[str, list[float]] = {who: [] for who in clients}
    batched: dict[str, list[float]] = {who: [] for who in clients}
    for round_ in range(ROUNDS):
        for who, client in (clients.items() if round_ % 2 == 0 else reversed(clients.items())):
            single[who] += client.run(singles[who], SINGLE, ROUND_SECONDS, round_ * SINGLE)
            if batches is not None:
                batched[who] += client.run([batches[who]], BATCHES, ROUND_SECONDS, 0)
    return single, batched


def _keras_flavor(family: str, home: Path, network: Any, features: Any) -> Path:
    """The trained network as a Keras user without Ratchet logs it: MLflow's own Keras flavor."""
    import mlflow.keras
    from mlflow.models import infer_signature

    path = home / f"keras-flavor-{family}"
    signature = infer_signature(features[:5], network.predict(features[:5], verbose=0))
    mlflow.keras.save_model(network, str(path), signature=signature)
    return path


def _versus_mlflow(family: str, name: str, version: str, inner: Any, rows: Any, ours: Client, token: str,
                   home: Path, env: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> None:
    columns = list(rows.columns)
    bodies = {"ours": [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
                       for row in rows.values.tolist()]}
    batch = {"ours": json.dumps({"dataframe_split": {"columns": columns, "data": rows.values.tolist()}}).encode()}
    if inner.network is not None:
        features = inner.transform.apply(rows)
        model = str(_keras_flavor(family, home, inner.network, features))
        bodies["mlflow"] = [json.dumps({"inputs": [row]}).encode() for row in features.tolist()]
        batch["mlflow"] = json.dumps({"inputs": features.tolist()}).encode()
    else:
        model = f"models:/{name}/{version}"
        bodies["mlflow"], batch["mlflow"] = bodies["ours"], batch["ours"]
    port = _free_port()
    procs.append(_start([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model, "--env-manager",
                         "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"], port,
                        home / "logs" / f"mlflow-{family}.log", env))
    clients = {"ours": ours, "mlflow": Client(port, token)}
    answers = {who: json.loads(c.post(batch[who]))["predictions"] for who, c in clients.items()}
    theirs = [a["probability"] if isinstance(a, dict) else (a[0] if isinstance(a, list) else a) for a in answers["mlflow"]]
    gap = max(abs(a["probability"] - b) for a, b in zip(answers["ours"], theirs, strict=True))
    assert gap < 1e-5, f"the two servers disagree by {gap}"
    single, batched = _alternate(clients, bodies, batch)
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


def _kernel_shap_seconds(inner: Any, rows: Any, training: Any) -> float:
    """Median seconds per row of `shap.KernelExplainer`, default settings, background: 100 training rows."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

    background = shap.sample(inner.transform.apply(training), KERNEL_BACKGROUND, random_state=0)
    if inner.network is not None:  # Keras `predict` as it is, without its progress bar
        predict = lambda x: inner.network.predict(x, verbose=0)
    else:
        predict = inner.estimator.predict_proba
    explainer = shap.KernelExplainer(predict, background)
    features = inner.transform.apply(rows)
    seconds = []
    for i in range(KERNEL_ROWS):
        start = time.perf_counter()
        explainer.shap_values(features[i:i + 1], silent=True)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def _measure(family: str, name: str, version: str, home: Path, env: dict[str, str], token: str) -> None:
    import mlflow

    from ml_tasks.datasets import SYNTHETIC, synthetic

    inner = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    port = _free_port()
    procs = [_start([str(Path(sys.executable).parent / "ratchet"), "serve", name, "--port", str(port)], port,
                    home / "logs" / f"ours-{family}.log", env)]
    try:
        rows = synthetic.generate(BATCH_ROWS, seed=21).drop(columns=[SYNTHETIC.target])
        ours = Client(port, token)
        if family in MLFLOW_FAMILIES:
            _versus_mlflow(family, name, version, inner, rows, ours, token, home, env, procs)

        columns = list(rows.columns)
        singles = [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
                   for row in rows.values.tolist()]
        explain = Client(port, token, "/explain")
        answer = json.loads(explain.post(singles[0]))
        assert answer["max_additivity_error"] <= answer["explainer"]["tolerance"], answer
        times, _ = _alternate({"predict": ours, "explain": explain}, {"predict": singles, "explain": singles})
        p50 = {who: 1000 * _percentile(values, 0.5) for who, values in times.items()}
        print(f"# {family}: {answer['explainer']['method']}; one row p50: prediction {p50['predict']:.2f} ms, "
              f"explanation {p50['explain']:.2f} ms ({len(times['explain'])} requests)", flush=True)
        bench_line(f"serving.explain_vs_predict_{family}", p50["explain"], p50["predict"], target=1 / EXPLAIN_BUDGET,
                   unit="ms")
        training = synthetic.generate(4000, seed=4).drop(columns=[SYNTHETIC.target])
        kernel = _kernel_shap_seconds(inner, rows, training)
        print(f"# {family}: shap.KernelExplainer {kernel:.3f} s per row ({KERNEL_ROWS} rows, background "
              f"{KERNEL_BACKGROUND})", flush=True)
        bench_line(f"serving.explain_vs_kernel_shap_{family}", p50["explain"], 1000 * kernel, target=1.0, unit="ms")
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
        (home / "logs").mkdir()
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
