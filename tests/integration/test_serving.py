"""`ratchet serve` as a real process on a real MLflow registry: formats, refusals, explanations, swaps, rollback,
log, fuzzing, load.

One module-scoped registry holds v1 (logistic regression), v2 (a tiny Keras MLP)
and v3 (v1's model registered again), all trained by the real training stage;
one `ratchet serve` process on a free port serves `champion` and polls it every
half second. Tests build on each other in file order (v1, then v2, then a
rollback to v1, then a compressed TFLite version and back). Nothing is mocked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.constants import TAG_INFRA_VALIDATION
from ml_tasks.datasets import SYNTHETIC, synthetic

pytestmark = pytest.mark.integration
MODEL = SYNTHETIC.registered_model
POLL_SECONDS = 0.5
# A swap loads the new version completely first: up to this long on a busy 2-core machine (Keras imports TensorFlow).
SWAP_SECONDS = 120
FEATURES = list(SYNTHETIC.features)
MLP = {"n_layers": 1, "units": 16, "dropout": 0.0, "l2": 1e-6, "learning_rate": 3e-3, "batch_size": 128}
EXPLAIN_MAX_ROWS = 30
LEGACY_TFLITE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models" / "tflite_dynamic_range"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, port: int, token: str, log_path: Path) -> None:
        self.port, self.token, self.log_path = port, token, log_path

    def request(self, method: str, path: str, body: bytes | str | None = None, content_type: str = "application/json",
                headers: dict[str, str] | None = None, auth: bool = True,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], Any]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Content-Type": content_type, **(headers or {})}
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            if own:
                conn.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return response.status, found, payload

    def score(self, payload: dict[str, Any], **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", "/invocations", json.dumps(payload), **kwargs)

    def explain(self, payload: dict[str, Any], query: str = "", **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", f"/explain{query}", json.dumps(payload), **kwargs)

    def version(self) -> str | None:
        status, _, body = self.request("GET", "/version")
        return body["version"] if status == 200 else None

    def wait_for_version(self, version: str, seconds: float = SWAP_SECONDS) -> float:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if self.version() == version:
                return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(f"server still on v{self.version()} {seconds}s after the alias moved to v{version}; "
                             f"log tail: {self.log_path.read_text()[-2000:]}")


def _train(family: str, drop_uri: str, params: dict[str, Any]) -> tuple[str, str]:
    from ml_tasks import tracking
    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.data.preparation import prepare
    from ml_tasks.training.trainer import train

    ctx = RunContext("synthetic", f"serve-{family}")
    prepare(ctx, drop_uri)
    parent = tracking.ensure_parent_run(ctx)
    trained = train(ctx, TrainConfig(max_epochs=3, patience=3, seed=0, family=family), params, parent)
    return trained.model_uri, parent


@pytest.fixture(scope="module")
def versions(module_home: Path) -> dict[str, str]:
    """v1 logistic regression (champion), v2 Keras MLP, v3 the logistic regression again."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.release import registry

    drop = module_home / "drop"
    drop.mkdir(parents=True)
    synthetic.generate(2000, seed=11).to_parquet(drop / "part-000.parquet", index=False)
    tracking.configure()
    with ThreadPoolExecutor(2) as pool:  # each trains in its own spawned process
        lr, mlp = pool.map(lambda args: _train(*args), [("logistic_regression", drop.as_uri(), {}),
                                                        ("keras_mlp", drop.as_uri(), MLP)])
    # Infra validation is tested where it runs (tests/unit/test_infra_validation.py, the nightly DAG tests); these
    # versions carry its passed tag so that the reviewed promotion below may move champion between them.
    passed = {TAG_INFRA_VALIDATION: "passed: served by this test"}
    v1 = registry.register_candidate(MODEL, lr[0], lr[1], passed)
    v2 = registry.register_candidate(MODEL, mlp[0], mlp[1], passed)
    v3 = str(mlflow.register_model(lr[0], MODEL, tags=passed).version)
    registry.compare_and_set_champion(MODEL, v1, None, "first champion")
    return {"lr": v1, "mlp": v2, "lr_again": v3}


@pytest.fixture(scope="module")
def server(versions: dict[str, str], module_home: Path) -> Any:
    port, token = _free_port(), secrets.token_urlsafe(16)
    log_path = module_home / "serve.log"
    env = {**os.environ, "RATCHET_HOME": str(module_home), "RATCHET_SERVE_TOKEN": token, "RATCHET_SERVE_MAX_ROWS": "500",
           "RATCHET_SERVE_EXPLAIN_MAX_ROWS": str(EXPLAIN_MAX_ROWS)}
    ratchet = Path(sys.executable).parent / "ratchet"
    with log_path.open("w") as out:
        proc = subprocess.Popen([str(ratchet), "serve", MODEL, "--port", str(port), "--poll-seconds", str(POLL_SECONDS)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Server(port, token, log_path)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if running.request("GET", "/health", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no model after 180s: {log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        yield running
    finally:
        proc.terminate()  # SIGTERM: uvicorn drains, then the inference log is flushed and closed
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rows(n: int, seed: int) -> Any:
    return synthetic.generate(n, seed=seed).drop(columns=[SYNTHETIC.target])


def _expected(version: str, rows: Any) -> Any:
    """What MLflow's own scoring server would answer: pyfunc predict, serialised by MLflow's serialiser."""
    import io

    import mlflow
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from ml_tasks import tracking

    tracking.configure()
    out = io.StringIO()
    predictions_to_json(mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(rows), out)
    return json.loads(out.getvalue())


def _assert_same(answer: Any, expected: Any) -> None:
    assert list(answer) == ["predictions"] and len(answer["predictions"]) == len(expected["predictions"])
    for got, want in zip(answer["predictions"], expected["predictions"], strict=True):
        assert set(got) == set(want) == {"prediction", "probability", "probability_0", "probability_1"}
        assert got["prediction"] == want["prediction"]
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)


def test_health_and_version_name_the_champion(server: Server, versions: dict[str, str]) -> None:
    assert server.request("GET", "/health", auth=False)[0] == 200
    status, _, body = server.request("GET", "/version")
    assert status == 200 and body["name"] == MODEL and body["version"] == versions["lr"] and body["alias"] == "champion"
    assert body["run_id"] and body["loaded_at"] and body["fast_path"] is True
    assert server.request("GET", "/version", auth=False)[0] == 401


def test_every_mlflow_format_scores_like_pyfunc_predict(server: Server, versions: dict[str, str]) -> None:
    rows = _rows(25, seed=5)
    rows.loc[3, "x2"] = None  # a missing numeric: imputed by the fitted transform, as in training
    expected = _expected(versions["lr"], rows)
    records = json.loads(rows.to_json(orient="records"))
    payloads = {
        "dataframe_split": json.loads(rows.to_json(orient="split", index=False)),
        "dataframe_records": records,
        "instances": records,
        "inputs": {c: [r[c] for r in records] for c in FEATURES},
    }
    for key, payload in payloads.items():
        status, headers, answer = server.score({key: payload})
        assert status == 200, (key, answer)
        assert headers["x-model-version"] == versions["lr"] and headers["x-request-id"]
        _assert_same(answer, expected)
    status, _, answer = server.request("POST", "/invocations", rows.to_csv(index=False), content_type="text/csv")
    assert status == 200, answer
    _assert_same(answer, expected)
    status, _, answer = server.score({"dataframe_records": records[:1]}, content_type="application/json; charset=utf-8")
    assert status == 200 and answer["predictions"][0] == pytest.approx(expected["predictions"][0])


BAD = [  # (body, content type, status, words the message must hold)
    ("{not json", "application/json", 400, "not valid JSON"),
    ("[1, 2]", "application/json", 400, "exactly one of"),
    ('{"dataframe_records": [], "instances": []}', "application/json", 400, "exactly one of"),
    ('{"dataframe_records": []}', "application/json", 400, "no rows"),
    ('{"dataframe_records": {"x0": 1}}', "application/json", 400, "list of row objects"),
    ('{"dataframe_split": {"columns": ["x0"], "data": [[1]]}}', "application/json", 400, "missing columns"),
    ('{"dataframe_records": [{"x0": NaN}]}', "application/json", 422, "NaN"),
    ('{"dataframe_records": [1]}', "application/json", 400, "object keyed by column name"),
    ('{"inputs": {"x0": [1, 2], "x1": [1]}}', "application/json", 400, "missing columns"),
    ("x0,x1\n1,2\n", "text/csv", 400, "missing columns"),
    ('{"dataframe_records": []}', "application/xml", 415, "not supported"),
    ('{"dataframe_records": []}', "application/json; charset=latin-1", 415, "charset"),
    (b"\xff\xfe{}", "application/json", 400, "not UTF-8"),
]


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"x0": 0.5, "x1": -1.0, "x2": 0.0, "x3": 1, "x4": 2.0, "x5": 0.1, "segment": "retail",
                           "channel": "web"}
    row.update(changes)
    return row


def test_bad_payloads_get_a_4xx_that_names_the_problem(server: Server) -> None:
    for body, content_type, status, words in BAD:
        got, _, answer = server.request("POST", "/invocations", body, content_type=content_type)
        assert got == status and words in answer["message"], (body, got, answer)
        assert answer["error_code"]
    cases = [
        ({"dataframe_records": [_row(x0="1.5")]}, 422, "column 'x0' row 0: expected a number or null, got string"),
        ({"dataframe_records": [_row(), _row(segment=7)]}, 422, "column 'segment' row 1: expected a string"),
        ({"dataframe_records": [_row(x1=True)]}, 422, "column 'x1' row 0"),
        ({"dataframe_records": [_row(x4=[1, 2])]}, 422, "column 'x4' row 0"),
        ({"dataframe_records": [_row(x0=1e300)]}, 422, "column 'x0' row 0: value 1e+300 is too large"),
        ({"dataframe_records": [_row(x0=10**400)]}, 422, "not a finite number"),
        ({"dataframe_records": [_row(extra=1)]}, 400, "unknown columns ['extra']"),
        ({"dataframe_records": [_row(), {k: v for k, v in _row().items() if k != "x5"}]}, 400, "row 1: missing columns ['x5']"),
        ({"dataframe_split": {"columns": FEATURES, "data": [[1, 2]]}}, 400, "row 0: expected a list of 8 values"),
        ({"dataframe_split": {"columns": FEATURES + ["x0"], "data": []}}, 400, "more than once"),
        ({"dataframe_records": [_row()] * 501}, 413, "at most 500"),
        ({"dataframe_records": [_row()], "params": {"top_k": 3}}, 400, "no params"),
        ({"dataframe_records": [_row()], "other": 1}, 400, "exactly one of"),
    ]
    for payload, status, words in cases:
        got, _, answer = server.score(payload)
        assert got == status and words in answer["message"], (payload if len(str(payload)) < 300 else words, got, answer)
    big = b'{"dataframe_records": [' + b" " * (17 * 1024 * 1024) + b"]}"
    got, _, answer = server.request("POST", "/invocations", big)
    assert got == 413 and "bytes" in answer["message"]


def _assert_explained(answer: Any, predictions: list[dict[str, Any]], version: str, method: str) -> None:
    """/explain's contract: the version, its explainer once, per row /invocations' prediction, the explained class,
    attributions on every raw column, largest |attribution| first, adding up to output - base_value."""
    assert answer["model"] == MODEL and answer["version"] == version
    explainer = answer["explainer"]
    assert explainer["method"] == method and explainer["output_space"] == "log_odds"
    assert explainer["baseline"] == "training_mean"  # the version's logged record, not the fallback
    tolerance = explainer["tolerance"]
    assert answer["max_additivity_error"] <= tolerance
    assert len(answer["explanations"]) == len(predictions)
    for row, predicted in zip(answer["explanations"], predictions, strict=True):
        assert row["prediction"] == predicted["prediction"] and row["explained_class"] == 1  # the positive class
        assert row["output_space"] == "log_odds"
        assert (row["output"] > 0) == (predicted["probability"] > 0.5)  # the log-odds of what /invocations answers
        features = [a["feature"] for a in row["attributions"]]
        magnitudes = [abs(a["attribution"]) for a in row["attributions"]]
        assert sorted(features) == sorted(FEATURES) and magnitudes == sorted(magnitudes, reverse=True)
        total = sum(a["attribution"] for a in row["attributions"]) + row["base_value"]
        assert total == pytest.approx(row["output"], abs=tolerance)


def test_explain_answers_the_predictions_with_attributions_that_add_up(server: Server, versions: dict[str, str]) -> None:
    rows = _rows(EXPLAIN_MAX_ROWS, seed=6)
    rows.loc[2, "x2"] = None
    split = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    _, _, scored = server.score(split)
    status, headers, answer = server.explain(split, headers={"X-Request-ID": "why-1"})
    assert status == 200, answer
    assert headers["x-model-version"] == versions["lr"] and headers["x-request-id"] == "why-1"
    _assert_explained(answer, scored["predictions"], versions["lr"], "linear_shap")
    status, _, top = server.request("POST", "/explain?top_k=3", rows.to_csv(index=False), content_type="text/csv")
    assert status == 200, top
    assert [row["attributions"] for row in top["explanations"]] == [
        row["attributions"][:3] for row in answer["explanations"]]


def test_explain_refuses_what_invocations_refuses(server: Server) -> None:
    for body, content_type, status, words in BAD:
        refused = [server.request("POST", path, body, content_type=content_type) for path in ("/invocations", "/explain")]
        assert [got for got, _, _ in refused] == [status, status] and refused[0][2] == refused[1][2], (body, refused)
        assert words in refused[1][2]["message"]
    status, _, answer = server.explain({"dataframe_records": [_row()] * (EXPLAIN_MAX_ROWS + 1)})
    assert status == 413 and f"at most {EXPLAIN_MAX_ROWS}" in answer["message"], answer
    assert answer["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    for query in ("?top_k=0", "?top_k=-2", "?top_k=two"):
        status, _, answer = server.explain({"dataframe_records": [_row()]}, query)
        assert status == 422 and "top_k" in answer["message"], (query, answer)
    assert server.explain({"dataframe_records": [_row()]}, auth=False)[0] == 401
    status, headers, _ = server.explain({"dataframe_records": [_row()]}, headers={"Authorization": "Bearer no"}, auth=False)
    assert status == 401 and headers["www-authenticate"] == "Bearer"


def test_request_ids_and_auth(server: Server) -> None:
    status, headers, _ = server.score({"dataframe_records": [_row()]}, headers={"X-Request-ID": "order-42.a"})
    assert status == 200 and headers["x-request-id"] == "order-42.a"
    status, _, answer = server.score({"dataframe_records": [_row()]}, headers={"X-Request-ID": "../../etc/passwd"})
    assert status == 400 and "X-Request-ID" in answer["message"]
    assert server.score({"dataframe_records": [_row()]}, auth=False)[0] == 401
    status, _, _ = server.score({"dataframe_records": [_row()]}, headers={"Authorization": "Bearer wrong"}, auth=False)
    assert status == 401


class Hammer:
    """Client threads scoring one row after another over keep-alive connections; every answer is recorded."""

    def __init__(self, server: Server, clients: int) -> None:
        self.server, self.stop = server, threading.Event()
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.versions: set[str] = set()
        self.body = json.dumps({"dataframe_records": [_row()]})
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.server.token}"}
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=self.body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200 or len(json.loads(raw)["predictions"]) != 1:
                    self.failures.append(f"{response.status} {raw[:200]!r}")
                else:
                    self.versions.add(response.getheader("X-Model-Version") or "?")
                    self.latencies.append(time.perf_counter() - start)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        conn.close()

    def __enter__(self) -> Hammer:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_promotion_is_picked_up_without_a_failed_request(server: Server, versions: dict[str, str]) -> None:
    from ml_tasks.release.registry import promote

    with Hammer(server, clients=4) as hammer:
        time.sleep(1)
        promote(MODEL, versions["mlp"], "serving test: a Keras champion")
        took = server.wait_for_version(versions["mlp"])
        time.sleep(1)
    assert not hammer.failures, hammer.failures[:5]
    assert hammer.versions == {versions["lr"], versions["mlp"]}, hammer.versions
    print(f"swap to the Keras version took {took:.1f}s; {len(hammer.latencies)} requests, none failed")
    rows = _rows(40, seed=8)
    status, _, answer = server.score({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    assert status == 200
    _assert_same(answer, _expected(versions["mlp"], rows))  # the Keras fast path equals pyfunc predict
    status, _, explained = server.explain({"dataframe_split": json.loads(rows.head(10).to_json(orient="split", index=False))})
    assert status == 200, explained  # the swapped-in version explains with its own explainer, built when it loaded
    _assert_explained(explained, answer["predictions"][:10], versions["mlp"], "integrated_gradients")


def test_rollback_restores_the_previous_champion_within_a_poll(server: Server, versions: dict[str, str]) -> None:
    from ml_tasks.release.registry import rollback

    result = rollback(MODEL)
    assert result.champion == versions["lr"] and result.previous_champion == versions["mlp"]
    took = server.wait_for_version(versions["lr"])
    print(f"rollback served after {took:.1f}s (poll every {POLL_SECONDS}s, then load and warm-up)")
    status, headers, _ = server.score({"dataframe_records": [_row()]})
    assert status == 200 and headers["x-model-version"] == versions["lr"]


def test_inference_log_holds_the_served_rows(server: Server, module_home: Path, versions: dict[str, str]) -> None:
    from ml_tasks.settings import get_settings

    status, _, answer = server.score({"dataframe_records": [_row(x0=0.25), _row(x0=-0.75)]},
                                     headers={"X-Request-ID": "log-check-1"})
    assert status == 200
    root = get_settings().inference_logs / MODEL
    deadline, found = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(found) < 2:
        time.sleep(0.3)
        found = []
        for path in root.glob("date=*/part-*.jsonl"):
            found += [json.loads(line) for line in path.read_text().splitlines() if "log-check-1" in line]
    assert len(found) == 2, list(root.rglob("*"))
    assert [row["inputs"]["x0"] for row in found] == [0.25, -0.75]
    for row, prediction in zip(found, answer["predictions"], strict=True):
        assert set(row) == {"ts", "request_id", "model", "version", "inputs", "probability", "prediction"}
        assert row["model"] == MODEL and row["version"] == versions["lr"] and row["ts"].endswith("Z")
        assert row["probability"] == prediction["probability"] and row["prediction"] == prediction["prediction"]
        assert set(row["inputs"]) == set(FEATURES)
    partitions = {p.parent.name for p in root.glob("date=*/part-*.jsonl")}
    assert all(p.startswith("date=") and len(p) == len("date=2026-01-01") for p in partitions)


def test_fuzzed_payloads_never_get_a_server_error(server: Server, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(exe), "run", f"http://127.0.0.1:{server.port}/openapi.json", "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {server.token}", "--max-examples", "40", "--max-time", "50", "--seed", "7",
         "--workers", "1", "--no-color", "--generation-database", ":memory:", "--suppress-health-check", "all"],
        cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )
    print(done.stdout[-1500:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # every generated case passed (a warning about how often the schema's values are refused is not an issue)
    assert re.search(r"Tested: 5\b", done.stdout), done.stdout[-2000:]  # /health, /ping, /version, /invocations, /explain
    assert re.search(r"(\d+) generated, \1 passed", done.stdout), done.stdout[-2000:]


def test_a_compressed_version_serves_but_says_why_it_cannot_explain(server: Server, versions: dict[str, str]) -> None:
    """A TFLite version (made by `ml_tasks.compression`, see tests/fixtures/legacy_models) has no model to walk or
    differentiate: /explain answers 501 naming why, /invocations keeps serving it."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.release.registry import promote

    tracking.configure()
    with mlflow.start_run(run_name="serve-tflite") as run:
        mlflow.log_artifacts(str(LEGACY_TFLITE), artifact_path="model")
    tflite = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL,
                                       tags={TAG_INFRA_VALIDATION: "passed: served by this test"}).version)
    promote(MODEL, tflite, "serving test: a compressed champion")
    server.wait_for_version(tflite)
    status, _, answer = server.explain({"dataframe_records": [_row()]})
    assert status == 501 and answer["error_code"] == "NOT_IMPLEMENTED", answer
    assert f"{MODEL} v{tflite}: this version cannot be explained: it is a compressed runtime" in answer["message"]
    status, headers, scored = server.score({"dataframe_records": [_row()]})
    assert status == 200 and headers["x-model-version"] == tflite and len(scored["predictions"]) == 1
    promote(MODEL, versions["lr"], "serving test: back to the logistic regression")
    server.wait_for_version(versions["lr"])


@pytest.mark.slow
def test_100_clients_for_60_seconds_while_champion_moves_twice(server: Server, versions: dict[str, str]) -> None:
    from ml_tasks.release.registry import promote

    with Hammer(server, clients=100) as hammer:
        time.sleep(10)
        promote(MODEL, versions["lr_again"], "load test: first move")
        server.wait_for_version(versions["lr_again"], 45)
        time.sleep(5)
        promote(MODEL, versions["mlp"], "load test: second move")
        server.wait_for_version(versions["mlp"], 60)
        time.sleep(max(0.0, 60 - (time.monotonic() - hammer.started)))
    count = len(hammer.latencies)
    print(f"100 clients: {count} requests, {len(hammer.failures)} failed, p50 {hammer.percentile_ms(0.5):.1f} ms, "
          f"p99 {hammer.percentile_ms(0.99):.1f} ms, "
          f"versions served {sorted(hammer.versions)}")
    assert not hammer.failures, hammer.failures[:5]
    assert {versions["lr"], versions["lr_again"], versions["mlp"]} <= hammer.versions
    assert count > 1000
