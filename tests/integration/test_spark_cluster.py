"""The spark engine on a real Spark standalone cluster: nightly_retrain end to end, and a worker lost mid-stage.

Real: a Spark standalone master and worker (JVMs of the installed pyspark on 127.0.0.1, `spark_cluster.py`), the
Airflow Connection `spark_default` read by the tasks (`AIRFLOW_CONN_SPARK_DEFAULT`), `airflow dags test` on SQLite,
Great Expectations' Spark engine, a real MLflow registry. The drivers run where a task runs them (in the DagRun's
interpreter, or in this process for the fault tests); the executors run on the worker. Nothing is mocked; the data
set `synthetic_spark` is `datasets/synthetic.yaml` declared with `engine: {name: spark}` in a folder of this module.

1. nightly_retrain of a drop of `synthetic_spark`, its data stages submitted as on the production profile
   (RATCHET_SPARK_SUBMIT: spark-submit through the Apache Spark provider's hook): validated and prepared on the
   cluster (the master lists the stages' applications, the worker ran their executors), a version registered and
   promoted, and the champion scores raw rows through pyfunc.
2. The worker SIGKILLed mid-stage (`prepare`, as the Airflow task calls it) and none coming back: Spark alone would
   wait for ever, so the stage's watch fails it after RATCHET_SPARK_EXECUTOR_WAIT_S with SparkClusterError (retried
   by Airflow), leaving no prepared folder and no temporary one; the retry on a fresh worker succeeds.
3. The worker SIGKILLed mid-stage and a fresh worker started: Spark re-runs the lost work on it and the stage writes
   what the undisturbed run of 2 wrote (same fingerprint and split content hashes), with nothing left beside it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.config import RunContext
from ml_tasks.data.landing import land_frame
from ml_tasks.datasets import synthetic

from .helpers import SMALL_BUDGET, registry_state, run_dag_test
from .spark_cluster import SparkCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DATASET = "synthetic_spark"
MODEL = "synthetic_spark_classifier"
# What the Connection hands the drivers: one executor of 2 cores and 1 GiB (the worker offers 2 cores, 2 GiB); 4
# shuffle partitions, not 16 (the drops here are small, and each task is a round trip to the executor); and JVMs
# that stop at the first JIT tier: each stage's application gets a fresh executor JVM that lives seconds, and on 2
# shared cores the optimising compiler's threads cost more than they give back (about half the stages' time here).
JIT = "-XX:TieredStopAtLevel=1"
SPARK_CONF = {"spark.executor.memory": "1g", "spark.executor.cores": "2", "spark.cores.max": "2",
              "spark.sql.shuffle.partitions": "4", "spark.executor.extraJavaOptions": JIT,
              "spark.driver.extraJavaOptions": JIT}
# The fault tests' drop: large enough for a stage of many jobs that a kill lands in, small enough to be quick.
FAULT_ROWS = 20_000
# A job with no executor fails the stage after this long in the fault tests (600 s by default). Longer than a fresh
# application's executor takes to start on a busy 2-core machine: its first job waits for it too.
EXECUTOR_WAIT_S = 12


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A real standalone master and one worker (2 cores, 2 GiB), logs and work dirs in the module's tmp dir."""
    with SparkCluster(tmp_path_factory.mktemp("spark-cluster"), workers=1, cores=2, memory="2g") as started:
        yield started


@pytest.fixture(scope="module")
def spark_dataset(module_home: Path, cluster: SparkCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The committed declarations plus `synthetic_spark` (engine: spark) in a folder of this module
    (RATCHET_DATASETS_DIR), and the Connection `spark_default` naming the cluster, as the environment Airflow's
    processes inherit (`airflow_env()` passes it on)."""
    import yaml

    from ml_tasks.settings import get_settings

    folder = tmp_path_factory.mktemp("datasets")
    for path in (ROOT / "datasets").glob("*.yaml"):
        shutil.copy(path, folder)
    declaration = yaml.safe_load((ROOT / "datasets" / "synthetic.yaml").read_text())
    declaration.update(name=DATASET, registered_model=MODEL, engine={"name": "spark"})
    (folder / f"{DATASET}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    connection = {"conn_type": "spark", "host": "spark://127.0.0.1", "port": cluster.port, "extra": SPARK_CONF}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RATCHET_DATASETS_DIR", str(folder))
        patch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(connection))
        get_settings.cache_clear()
        yield folder
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def first_night(spark_dataset: Path, module_home: Path, cluster: SparkCluster) -> tuple[int, dict[str, Any]]:
    from ml_tasks.ops.airflow_cli import init_airflow

    init_airflow()
    land_frame(synthetic.generate(4000, seed=1), DATASET, "2026-02-01")
    # The model family is the fastest to train: what this module checks is where the data stages ran.
    conf = {**SMALL_BUDGET, "dataset": DATASET, "model_family": "logistic_regression"}
    # As on the production profile: the data stages are submitted with spark-submit through the Spark provider's
    # hook (the fault tests below run a stage's driver in the test process, as a task does without it).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RATCHET_SPARK_SUBMIT", "true")
        return run_dag_test("2026-02-01", conf, module_home / "logs")


def test_nightly_retrain_runs_its_data_stages_on_the_cluster(first_night, cluster, module_home):
    """Real `airflow dags test` of nightly_retrain; validate and prepare submitted with spark-submit (the Apache Spark
    provider's hook, the Connection's master) run as applications of the real master."""
    code, report = first_night
    assert code == 0, report.get("error")
    assert report["completed"] and report["stopped_at"] is None
    assert report["validation"]["success"] and report["validation"]["engine"] == "spark"
    assert report["data"]["engine"] == "spark" and report["data"]["rows"] == 4000
    assert report["data"]["fingerprint"] and sum(report["data"]["splits"].values()) == 4000
    assert report["gate"]["decision"] == "promote"
    assert report["versions"]["promoted"] and report["versions"]["champion"] == "1"
    assert registry_state(MODEL) == {"champion": "1", "challenger": "1", "versions": [1]}
    # on the cluster, not in local mode: the master ran each stage's driver as an application to its end...
    apps = cluster.applications()
    finished = {app["name"]: app for app in apps["completed"]}
    assert {f"ratchet-validate-{DATASET}", f"ratchet-prepare-{DATASET}"} <= set(finished), apps
    assert all(app["state"] == "FINISHED" for app in finished.values()), apps
    # ...submitted by the tasks through the Spark provider's hook, with the Connection's master and settings
    log = (module_home / "logs" / "2026-02-01.log").read_text()
    for name in (f"ratchet-validate-{DATASET}", f"ratchet-prepare-{DATASET}"):
        submits = [line for line in log.splitlines() if "Spark-Submit cmd" in line and f"--name {name}" in line]
        assert submits and cluster.master_url in submits[0] and "spark.cores.max=2" in submits[0], name
    # ...and the worker launched their executors (one folder per application in its work dir, with the executor's log)
    work_dir = cluster.folder / "worker-1"
    for name in (f"ratchet-validate-{DATASET}", f"ratchet-prepare-{DATASET}"):
        executor_logs = list((work_dir / finished[name]["id"]).glob("*/stderr"))
        assert executor_logs, f"no executor of {name} on the worker: {sorted(p.name for p in work_dir.iterdir())}"


def test_champion_trained_on_spark_prepared_sets_scores_raw_rows(first_night):
    """Real MLflow registry: the champion loads through pyfunc and applies the transform fitted on Spark."""
    import mlflow

    from ml_tasks import tracking

    tracking.configure()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    rows = synthetic.generate(20, seed=99).drop(columns=["label"])
    scores = model.predict(rows)
    assert list(scores.columns) == ["prediction", "probability", "probability_0", "probability_1"] and len(scores) == 20
    assert scores["prediction"].dtype == "int64"
    assert scores["probability"].between(0, 1).all()


# ---- a worker lost mid-stage -------------------------------------------------------------------------------


class Stage:
    """`ml_tasks.pipeline.prepare(ctx, config, synced, spark)` in a thread, as the Airflow task calls it (its
    driver in this process); `result` or `error` once it ends."""

    def __init__(self, work: Callable[[], dict[str, Any]]) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="prepare-stage", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], dict[str, Any]]) -> None:
        try:
            self.result = work()
        except BaseException as exc:  # handed to the test
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the stage still runs after {timeout_s} s"


@pytest.fixture(scope="module")
def fault_drop(spark_dataset: Path) -> dict[str, Any]:
    """A drop of FAULT_ROWS rows synced to staging, as `sync` leaves it for `prepare`."""
    from ml_tasks import pipeline
    from ml_tasks.config import RunConfig

    land_frame(synthetic.generate(FAULT_ROWS, seed=11), DATASET, "2026-03-01")
    return pipeline.sync(RunContext(DATASET, "fault-sync"), RunConfig(DATASET), "2026-03-01")


def _prepare(run_key: str, synced: dict[str, Any], cluster: SparkCluster) -> tuple[Stage, RunContext]:
    from ml_tasks import pipeline
    from ml_tasks.config import RunConfig
    from ml_tasks.data.spark.session import SparkOptions

    ctx = RunContext(DATASET, run_key)
    options = SparkOptions(master=cluster.master_url, conf=SPARK_CONF)
    return Stage(lambda: pipeline.prepare(ctx, RunConfig(DATASET), synced, options)), ctx


def _temporary_folders(ctx: RunContext) -> list[Path]:
    """`atomic_dir`'s work folders beside the prepared folder (`.<run key>.*.tmp`)."""
    return sorted(ctx.prepared_dir.parent.glob(f".{ctx.prepared_dir.name}.*"))


def _kill_worker_mid_stage(stage: Stage, ctx: RunContext, cluster: SparkCluster, timeout_s: float = 120) -> None:
    """SIGKILL the worker (and its executor) once the stage writes its sets (its temporary folder exists)."""
    deadline = time.monotonic() + timeout_s
    while not _temporary_folders(ctx):
        assert stage.running, f"the stage ended before the kill: {stage.error or stage.result}"
        assert time.monotonic() < deadline, "the stage never began writing"
        time.sleep(0.05)
    cluster.kill_worker(cluster.workers[-1])
    assert _wait(lambda: cluster.alive_workers() == 0, 60), "the master still lists the killed worker"
    assert stage.running, "the stage ended as the worker died"


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture(scope="module")
def undisturbed() -> dict[str, Any]:
    """Filled by the retry of test_worker_lost_for_good_fails_the_stage_and_its_retry_succeeds."""
    return {}


def test_worker_lost_for_good_fails_the_stage_and_its_retry_succeeds(cluster, fault_drop, undisturbed, monkeypatch):
    """Real cluster, worker JVM and executor SIGKILLed mid-`prepare` with no worker to replace it. Spark itself would
    wait for an executor for ever (checked by hand: standalone also waits "for reconnection" with the master
    killed too); the session's watch cancels the jobs after RATCHET_SPARK_EXECUTOR_WAIT_S."""
    from ml_tasks import records
    from ml_tasks.errors import PERMANENT_ERRORS, SparkClusterError

    monkeypatch.setenv("RATCHET_SPARK_EXECUTOR_WAIT_S", str(EXECUTOR_WAIT_S))
    stage, ctx = _prepare("fault-lost", fault_drop, cluster)
    _kill_worker_mid_stage(stage, ctx, cluster)
    killed_at = time.monotonic()
    stage.wait(EXECUTOR_WAIT_S + 60)
    assert isinstance(stage.error, SparkClusterError), stage.error
    assert not isinstance(stage.error, PERMANENT_ERRORS)  # Airflow retries it (the retrain DAG: retries=1)
    assert "no Spark executor" in str(stage.error) and cluster.master_url in str(stage.error)
    assert time.monotonic() - killed_at < EXECUTOR_WAIT_S + 45
    assert not ctx.prepared_dir.exists() and _temporary_folders(ctx) == []
    record = records.read_stage(ctx, "prepare")
    assert record is not None and not record["ok"] and record["error"]["type"] == "SparkClusterError"

    # Airflow's retry, once a worker is back: the same call succeeds.
    cluster.start_worker()
    retry, _ = _prepare("fault-lost", fault_drop, cluster)
    retry.wait(240)
    assert retry.error is None, retry.error
    assert retry.result is not None and retry.result["engine"] == "spark" and retry.result["rows_in"] == FAULT_ROWS
    assert ctx.prepared_dir.is_dir() and _temporary_folders(ctx) == []
    assert records.read_stage(ctx, "prepare")["ok"]
    undisturbed.update(retry.result)


def test_worker_lost_and_replaced_mid_stage_writes_what_an_undisturbed_run_writes(cluster, fault_drop, undisturbed):
    """Real cluster, worker JVM and executor SIGKILLed mid-`prepare`, a fresh worker started: Spark re-runs the lost
    tasks (and recomputes the lost cached blocks) on the new worker, and the sets are those of the undisturbed run
    (the split is a hash of each row, not a shuffle)."""
    import pandas as pd

    from ml_tasks.constants import (
        DRIFT_REFERENCE_FILE,
        PREPARATION_FILE,
        TEST_FILE,
        TEST_RAW_FILE,
        TRAIN_FILE,
        TRANSFORM_FILE,
        VALIDATION_SPLIT_FILE,
    )

    assert undisturbed, "needs the undisturbed run of the previous test"
    stage, ctx = _prepare("fault-replaced", fault_drop, cluster)
    _kill_worker_mid_stage(stage, ctx, cluster)
    lost_worker = cluster.folder / f"worker-{len(cluster.workers)}"
    cluster.start_worker()
    stage.wait(240)
    assert stage.error is None, stage.error
    result = stage.result
    assert result is not None
    written = json.loads((ctx.prepared_dir / PREPARATION_FILE).read_text())
    assert written["fingerprint"] == result["fingerprint"] == undisturbed["fingerprint"]
    assert written["split_fingerprints"] == result["split_fingerprints"] == undisturbed["split_fingerprints"]
    assert [result[f"{s}_rows"] for s in ("train", "val", "test")] == \
        [undisturbed[f"{s}_rows"] for s in ("train", "val", "test")]
    # and the very files: each set's rows, in their order, with the undisturbed run's values
    reference = RunContext(DATASET, "fault-lost").prepared_dir
    for name in (TRAIN_FILE, VALIDATION_SPLIT_FILE, TEST_FILE, TEST_RAW_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(ctx.prepared_dir / name), pd.read_parquet(reference / name))
    for name in (TRANSFORM_FILE, DRIFT_REFERENCE_FILE):
        assert (ctx.prepared_dir / name).read_text() == (reference / name).read_text(), name
    assert _temporary_folders(ctx) == []
    # the application's executors ran on the lost worker, then on its replacement
    replacement = cluster.folder / f"worker-{len(cluster.workers)}"
    apps_before = {p.name for p in lost_worker.glob("app-*")}
    assert {p.name for p in replacement.glob("app-*")} & apps_before, (apps_before, list(replacement.iterdir()))
