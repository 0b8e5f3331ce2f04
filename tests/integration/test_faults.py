"""Faults, each really injected, each checked for lost or doubled work.

1. The scheduler SIGKILLed mid-run and a fresh one started: the run completes, no duplicate version.
2. Later in the same run, the Airflow worker of `train` SIGKILLed (its LocalExecutor worker, the task process
   and the trainer): the scheduler notices the missing heartbeats, the retry resumes from the Keras checkpoint,
   one version registered.
3. A finished run cleared and rerun through the REST API: same report and blessing record, no new version,
   alias history unchanged.
4. The MLflow tracking server (a real `mlflow server`) stopped during `register`: restarted within the
   client's retry budget the stage succeeds; killed right after it created a version and down for longer, the
   stage fails with an error naming the server, champion and challenger stay, and the rerun completes that
   version instead of making a second. A response lost on its way back (a proxy hangs up after the server
   created the version; the client retries the POST) still leaves one version for the run.

Airflow runs as four separate processes (tests/integration/airflow_stack.py) so one of them can be killed.
Covered elsewhere, not repeated here: the trainer SIGKILLed mid-epoch resuming from its checkpoint, without
Airflow (test_training_resume.py); the S3 endpoint stopped mid-sync (test_storage_sync.py::
test_s3_endpoint_stopped_mid_sync_then_back); a rerun of a finished night via `airflow dags test`
(test_nightly_dag.py::test_rerun_of_a_finished_night_is_idempotent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from ml_tasks.constants import BLESSING_FILE, MLFLOW_SERVER_ENV, RUN_REPORT_FILE, TAG_AIRFLOW_RUN_ID, TAG_RUN_KEY
from ml_tasks.data.landing import land_frame
from ml_tasks.datasets import SYNTHETIC, synthetic

from .airflow_stack import AirflowStack, free_port
from .helpers import SMALL_BUDGET, checkpointed_epoch, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "nightly_retrain"
MODEL = SYNTHETIC.registered_model
TRAINER = "ml_tasks.training.trainer:train_in_process"
# A lost task is noticed after this many seconds without a heartbeat (default 300); tasks heartbeat every 5 s.
HEARTBEAT_TIMEOUT_S = 30
FAST = {**SMALL_BUDGET, "model_family": "logistic_regression"}


@pytest.fixture(scope="module")
def stack(module_home: Path) -> Iterator[AirflowStack]:
    extra = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # a dead scheduler's job is declared failed (and its task instances adopted or reset) this soon
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "20",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
    }
    with AirflowStack(module_home, extra) as started:
        started.wait_for_dag(DAG_ID)
        started.unpause(DAG_ID)
        # Unpausing schedules last night's 02:00 run at once (catchup only skips older ones); with
        # max_active_runs=1 it would hold up the runs under test, so it is marked failed.
        started.fail_scheduled_runs(DAG_ID)
        yield started


def _versions_of_run(run_id: str) -> list[Any]:
    from ml_tasks import tracking

    versions = tracking.client().search_model_versions(f"name='{MODEL}'")
    return [v for v in versions if v.tags.get(TAG_AIRFLOW_RUN_ID) == run_id]


def _run_context(run_id: str) -> Any:
    from ml_tasks.config import RunContext

    (version,) = _versions_of_run(run_id)
    dataset, run_key = version.tags[TAG_RUN_KEY].split("/", 1)
    return RunContext(dataset, run_key)


def _trainer(stack: AirflowStack) -> Any:
    for proc in stack.stray_processes():
        try:
            if TRAINER in " ".join(proc.cmdline()):
                return proc
        except Exception:  # it ended meanwhile
            continue
    return None


def _wait_for_running_task(stack: AirflowStack, run_id: str, deadline: float) -> list[str]:
    running: list[str] = []
    while not running and time.monotonic() < deadline:
        assert stack.run_state(DAG_ID, run_id) not in ("success", "failed"), stack.task_instances(DAG_ID, run_id)
        states = {task: ti["state"] for task, ti in stack.task_instances(DAG_ID, run_id).items()}
        running = [task for task, s in states.items() if s == "running" and task != "sync"]
        time.sleep(1)
    return running


def _kill_the_training_worker(stack: AirflowStack, deadline: float) -> dict[str, Any]:
    """SIGKILL the LocalExecutor worker running `train`, its task process and the trainer, after a checkpoint."""
    import psutil

    from ml_tasks.config import RunContext

    trainer = None
    while trainer is None and time.monotonic() < deadline:
        trainer = _trainer(stack)
        time.sleep(0.5)
    assert trainer is not None, "train never started"
    args_path = Path(trainer.cmdline()[-2])
    model_dir = RunContext.from_dict(json.loads(args_path.read_text())["ctx"]).model_dir
    backup_dir = model_dir / "checkpoints"
    # trainer <- task process (forked by the supervisor) <- LocalExecutor worker (the supervisor) <- scheduler.
    # All three below the scheduler die at once, as when the worker's machine or container is OOM-killed.
    runner = trainer.parent()
    worker = runner.parent()
    assert worker.ppid() == stack.procs["scheduler"].pid, (worker.cmdline(), runner.cmdline())
    while checkpointed_epoch(backup_dir) < 1 and time.monotonic() < deadline:
        assert trainer.is_running(), "the trainer ended before its first checkpoint"
        time.sleep(0.05)
    for proc in (worker, runner, trainer):
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs([worker, runner, trainer], timeout=30)
    return {"killed_at_epoch": checkpointed_epoch(backup_dir),
            "finished_before_kill": (model_dir / "train_result.json").exists()}


@pytest.fixture(scope="module")
def faulted_run(stack: AirflowStack) -> dict[str, Any]:
    """One Keras run through both Airflow faults (one run, not two, to keep the module short):
    the scheduler SIGKILLed while an early task runs and a new one started, then the training worker SIGKILLed."""
    drop = land_frame(synthetic.generate(3000, seed=31), "synthetic", "faults")
    # Keras (it checkpoints every epoch); more epochs than SMALL_BUDGET so that the kill lands mid-fit.
    run_id = stack.trigger(DAG_ID, {**SMALL_BUDGET, "model_family": "keras_mlp", "max_epochs": 30,
                                    "source_uri": drop.as_uri()})
    deadline = time.monotonic() + 480
    observed: dict[str, Any] = {"run_id": run_id, "running_at_scheduler_kill": _wait_for_running_task(stack, run_id, deadline)}
    observed["old_scheduler"] = stack.kill("scheduler")
    time.sleep(3)
    observed["new_scheduler"] = stack.start_component("scheduler").pid
    observed.update(_kill_the_training_worker(stack, deadline))
    observed["state"], observed["states"] = stack.wait_for_run(DAG_ID, run_id, timeout_s=600)
    observed["tries"] = {task: ti["try_number"] for task, ti in stack.task_instances(DAG_ID, run_id).items()}
    observed["scheduler_log"] = stack.log_tail("scheduler")
    return observed


def test_scheduler_killed_mid_run_and_restarted_completes_the_run(faulted_run: dict[str, Any]) -> None:
    assert faulted_run["running_at_scheduler_kill"], "no task was running when the scheduler was killed"
    assert faulted_run["new_scheduler"] != faulted_run["old_scheduler"]
    states = dict(faulted_run["states"])
    assert faulted_run["state"] == "success", (faulted_run["tries"], states, faulted_run["scheduler_log"])
    assert states.pop("approve_promotion") == "skipped" and states.pop("no_review_needed") == "success"
    assert states.pop("train_worker") == "skipped"  # train_workers=1: the empty mapping is skipped
    assert set(states.values()) == {"success"}, states
    assert len(_versions_of_run(faulted_run["run_id"])) == 1
    assert registry_state(MODEL) == {"champion": "1", "challenger": "1", "versions": [1]}


def test_worker_killed_mid_training_retries_from_the_checkpoint(faulted_run: dict[str, Any]) -> None:
    from ml_tasks import records

    assert faulted_run["killed_at_epoch"] >= 1
    assert not faulted_run["finished_before_kill"], "killed too late: training had finished"
    assert faulted_run["state"] == "success", (faulted_run["tries"], faulted_run["states"], faulted_run["scheduler_log"])
    assert faulted_run["tries"]["train"] == 2, faulted_run["tries"]  # failed for its missing heartbeats, retried
    trained = records.read_stage(_run_context(faulted_run["run_id"]), "train")
    assert trained is not None and trained["ok"] and not trained["reused"]
    # resumed from the checkpoint, not from epoch 0
    assert trained["initial_epoch"] >= faulted_run["killed_at_epoch"] >= 1, trained
    assert len(_versions_of_run(faulted_run["run_id"])) == 1 and registry_state(MODEL)["versions"] == [1]


def test_clearing_a_finished_run_reruns_it_idempotently(stack: AirflowStack, faulted_run: dict[str, Any]) -> None:
    from ml_tasks.io import read_json
    from ml_tasks.release.registry import alias_history

    run_id = faulted_run["run_id"]
    ctx = _run_context(run_id)
    report, blessing = read_json(ctx.report_dir / RUN_REPORT_FILE), read_json(ctx.report_dir / BLESSING_FILE)
    registry, history = registry_state(MODEL), alias_history(MODEL)
    assert report["versions"]["promoted"] is True

    stack.clear_run(DAG_ID, run_id)
    state, states = stack.wait_for_run(DAG_ID, run_id, timeout_s=600)
    assert state == "success", states
    tries = {task: ti["try_number"] for task, ti in stack.task_instances(DAG_ID, run_id).items()}
    assert tries["train"] > faulted_run["tries"]["train"] and tries["report"] > faulted_run["tries"]["report"], tries
    rerun_report, rerun_blessing = read_json(ctx.report_dir / RUN_REPORT_FILE), read_json(ctx.report_dir / BLESSING_FILE)
    # The same decision on the same numbers. Only the compare-and-set expectation differs: champion is now this
    # run's own version (the rerun's promote is then a no-op, not a conflict).
    assert blessing.pop("expected_champion") is None and rerun_blessing.pop("expected_champion") == "1"
    assert rerun_blessing == blessing
    # The same report, except that this time nothing was promoted: the version already was champion.
    moved, kept = report.pop("versions"), rerun_report.pop("versions")
    drift, rerun_drift = report.pop("drift"), rerun_report.pop("drift")
    assert rerun_report == report
    assert kept["version"] == moved["version"] == "1" and kept["promoted"] is False and kept["champion"] == "1"
    assert registry_state(MODEL) == registry and alias_history(MODEL) == history
    assert len(_versions_of_run(run_id)) == 1
    assert rerun_drift == drift  # measured against the champion the run replaced, not its own version


# ---- Airflow's SQLite database busy ---------------------------------------------------------------------------

def test_a_trigger_waits_for_another_writer_to_release_airflows_database(stack: AirflowStack) -> None:
    """SQLite lets one process write at a time. A writer holding the lock longer than Python's default wait (5 s)
    once made a trigger fail with a 500 "Database error" (seen in CI on a loaded machine). The embedded default's
    Airflow waits up to `SQLITE_BUSY_TIMEOUT_S` for it instead, so the trigger is answered once the lock is free.
    The DAG triggered is paused, so its run stays queued and takes nothing from the other tests."""
    import sqlite3
    import threading

    from ml_tasks.ops.airflow_db import SQLITE_BUSY_TIMEOUT_S
    from ml_tasks.settings import get_settings

    hold_s = 8.0  # over sqlite3's default 5 s, well under SQLITE_BUSY_TIMEOUT_S
    assert hold_s < SQLITE_BUSY_TIMEOUT_S - 10
    dag_id = "data_validation"
    stack.wait_for_dag(dag_id)
    assert stack.api("GET", f"/dags/{dag_id}").json()["is_paused"] is True
    database = get_settings().airflow_home / "airflow.db"
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        writer = sqlite3.connect(database, timeout=60, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # the write lock, as a long scheduler transaction holds it
            locked.set()
            release.wait(hold_s)
            writer.execute("COMMIT")
        finally:
            writer.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert locked.wait(60), "could not take Airflow's database write lock"
        started = time.monotonic()
        created = stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}})
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert created.status_code == 200, created.text
    assert waited >= hold_s - 1, f"answered after {waited:.1f} s: the lock was not held while it was written"
    run = stack.api("GET", f"/dags/{dag_id}/dagRuns/{created.json()['dag_run_id']}").json()
    assert run["state"] == "queued", run


# ---- the MLflow tracking server unreachable ------------------------------------------------------------------

class MlflowServer:
    """A real `mlflow server` (SQLite store) that can be killed and started again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                   "--port", self.uri.rsplit(":", 1)[1], "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--default-artifact-root", (self.root / "artifacts").as_uri()]
        with (self.root / f"server.{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **MLFLOW_SERVER_ENV,
                                              "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})

    def wait_until_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc is not None and self.proc.poll() is None, (self.root / f"server.{self.starts}.log").read_text()
            time.sleep(0.5)
        raise RuntimeError("mlflow server did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class LosesOneResponse(ThreadingHTTPServer):
    """An HTTP proxy in front of the MLflow server that loses the response to the first POST to `path`.

    The server did the work; the client never hears back and retries the request, as after a network cut or a
    server killed between its commit and its answer (seen with the kill above on a loaded machine).
    """

    def __init__(self, upstream: str, path: str) -> None:
        self.upstream, self.path, self.dropped = upstream, path, 0
        super().__init__(("127.0.0.1", 0), _Forward)
        self.uri = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Forward(BaseHTTPRequestHandler):
    server: LosesOneResponse

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        answer = requests.request(self.command, f"{self.server.upstream}{self.path}", data=body, headers=headers,
                                  timeout=60)
        if self.command == "POST" and self.path.startswith(self.server.path) and not self.server.dropped:
            self.server.dropped += 1
            self.close_connection = True  # hang up without a word
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        pass


def _tiny_logged_model() -> tuple[str, str]:
    import mlflow

    from ml_tasks import tracking

    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any) -> Any:
            return model_input

    with mlflow.start_run(experiment_id=tracking.configure()) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Identity(), pip_requirements=["mlflow"])
    return run.info.run_id, info.model_uri


@pytest.fixture
def mlflow_server(ratchet_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    from ml_tasks.settings import get_settings

    root = ratchet_home / "mlflow-server"
    root.mkdir(parents=True)
    server = MlflowServer(root)
    server.start()
    try:
        server.wait_until_up()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)  # tracking.py's defaults apply (and are undone afterwards)
        get_settings.cache_clear()
        yield server
    finally:
        server.kill()
        get_settings.cache_clear()


def _until_gate(run_key: str, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """The DAG's stages up to the gate, called as its `_stage` calls them (bench/overhead.py::plain_pipeline).

    Tuning is left out (the family's default parameters): the faults here are at registration.
    """
    from ml_tasks import pipeline
    from ml_tasks.config import DEFAULT_ABSOLUTE_THRESHOLDS, DEFAULT_CHANGE_THRESHOLDS, RunConfig, RunContext

    drop = land_frame(synthetic.generate(3000, seed=seed), "synthetic", run_key)
    ctx = RunContext(dataset="synthetic", run_key=run_key, dag_id=DAG_ID, run_id=run_key)
    config = RunConfig.from_params({**FAST, "source_uri": drop.as_uri(), "absolute_thresholds": DEFAULT_ABSOLUTE_THRESHOLDS,
                                    "change_thresholds": DEFAULT_CHANGE_THRESHOLDS})
    synced = pipeline.sync(ctx, config, "2026-03-01", None)
    validated = pipeline.validate(ctx, config, synced)
    pipeline.drift(ctx, config, synced)
    prepared = pipeline.prepare(ctx, config, synced)
    trained = pipeline.train(ctx, config, prepared, {"best_params": {}})
    gated = pipeline.gate(ctx, config, prepared, pipeline.evaluate(ctx, config, prepared, trained))
    return ctx, config, {"prepared": prepared, "validated": validated, "trained": trained, "gated": gated}


def _register(ctx: Any, config: Any, stages: dict[str, Any]) -> dict[str, Any]:
    from ml_tasks import pipeline

    return pipeline.register(ctx, config, stages["prepared"], stages["validated"], stages["trained"], stages["gated"])


def _kill_when_versions_reach(server: MlflowServer, count: int, stop: threading.Event) -> None:
    """Kill the server the moment its store holds `count` model versions: mid-`register`."""
    import sqlite3

    while not stop.is_set():
        try:
            with sqlite3.connect(f"file:{server.root / 'mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
                if db.execute("SELECT count(*) FROM model_versions").fetchone()[0] >= count:
                    server.kill()
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)


def test_mlflow_server_unreachable_during_registration(mlflow_server: MlflowServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_tasks import pipeline, records, tracking
    from ml_tasks.constants import TAG_INFRA_VALIDATION
    from ml_tasks.release.registry import alias_history

    # Stopped just before register and back a few seconds later: the client's retries ride it out.
    ctx, config, stages = _until_gate("outage-short", seed=41)
    mlflow_server.kill()
    restart = threading.Timer(3.0, mlflow_server.start)
    restart.start()
    started = time.monotonic()
    try:
        registered = _register(ctx, config, stages)
    finally:
        restart.join()  # never leave a server starting after the fixture has stopped it
    waited = time.monotonic() - started
    assert registered["version"] == "1" and waited > 3.0
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == tracking.HTTP_RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert pipeline.promote(ctx, config, registered)["promoted"]
    assert registry_state(MODEL) == {"champion": "1", "challenger": "1", "versions": [1]}
    history = alias_history(MODEL)

    # Killed the moment the next version is created, and down for longer than the retry budget (the user's
    # smaller one here, which tracking.py respects): the stage fails with an error naming the server.
    ctx2, config2, stages2 = _until_gate("outage-long", seed=42)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_versions_reach, args=(mlflow_server, 2, stop), daemon=True)
    killer.start()
    try:
        with pytest.raises(Exception) as failure:  # MlflowException, or RatchetError from a spawned stage
            _register(ctx2, config2, stages2)
    finally:
        stop.set()
        killer.join()
    assert mlflow_server.proc is not None and mlflow_server.proc.poll() is not None, "the server was never killed"
    assert mlflow_server.uri in str(failure.value), str(failure.value)
    print(f"register failed as it should: {failure.value}")
    assert "may have been deleted" not in str(failure.value)  # MLflow's own words for a logged model it could not fetch
    record = records.read_stage(ctx2, "register")
    assert record is not None and not record["ok"] and mlflow_server.uri in record["error"]["message"]

    mlflow_server.start()
    mlflow_server.wait_until_up()
    # champion and challenger did not move; the version made before the outage is not aliased anywhere
    assert registry_state(MODEL) == {"champion": "1", "challenger": "1", "versions": [1, 2]}
    assert alias_history(MODEL) == history
    assert tracking.client().get_model_version(MODEL, "2").tags[TAG_RUN_KEY] == ctx2.tracking_key
    # the rerun completes that version instead of registering a second one for the same run
    assert _register(ctx2, config2, stages2)["version"] == "2"
    assert registry_state(MODEL) == {"champion": "1", "challenger": "2", "versions": [1, 2]}
    assert TAG_INFRA_VALIDATION in tracking.client().get_model_version(MODEL, "2").tags

    # A response lost on its way back: the server created the version, the client retried the POST.
    # Still one version for the run.
    from ml_tasks.release import registry
    from ml_tasks.settings import get_settings

    proxy = LosesOneResponse(mlflow_server.uri, "/api/2.0/mlflow/model-versions/create")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.uri)
    get_settings.cache_clear()
    try:
        run_id, model_uri = _tiny_logged_model()
        version = registry.register_candidate("faults_lost_response", model_uri, run_id, {"ratchet.probe": "yes"})
        versions = tracking.client().search_model_versions("name='faults_lost_response'")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.dropped == 1
    assert version == "1" and [v.version for v in versions] == ["1"], [(v.version, v.run_id) for v in versions]
