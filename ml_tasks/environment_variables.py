"""Every environment variable Ratchet reads, declared once: name, type, default and what it is for.

In the style of MLflow's `environment_variables.py`: code reads `RATCHET_HOME.get()`, never `os.environ`
directly, and only when the value is needed (nothing is read at import time), so a test or a task that sets a
variable is seen at once. An empty value counts as unset. The README's configuration table is generated from
`DECLARED` (`python -m ml_tasks.environment_variables`), and a test keeps the two equal.

Variables that only pass through (set by us for a child process, or read by Airflow and MLflow themselves)
are not declared here; the secrets of the production profile are listed in `ml_tasks.ops.production.SECRET_NAMES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DECLARED: list[EnvironmentVariable[Any]] = []


class EnvironmentVariable(Generic[T]):
    """One variable: `get()` converts the set value with `kind`, or returns `default` when it is unset or empty.

    `T` is the type `get()` returns: `int` for a variable with an integer default, `str | None` for one whose
    default is None, so callers never repeat a default to satisfy the type checker.
    """

    def __init__(self, name: str, kind: Callable[[str], T], default: T, doc: str, *,
                 default_doc: str | None = None, group: str = "Ratchet") -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.doc = doc
        self.default_doc = default_doc
        self.group = group
        DECLARED.append(self)

    @property
    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())

    def get_raw(self) -> str | None:
        raw = os.environ.get(self.name)
        return raw if raw is not None and raw.strip() else None

    def get(self) -> T:
        raw = self.get_raw()
        if raw is None:
            return self.default
        try:
            return self.kind(raw.strip())
        except ValueError as exc:
            from ml_tasks.errors import ConfigError

            raise ConfigError(f"environment variable {self.name}={raw!r} is not a valid {_kind_name(self.kind)}: {exc}")\
                from exc

    def set(self, value: Any) -> None:
        os.environ[self.name] = str(value)

    def unset(self) -> None:
        os.environ.pop(self.name, None)

    def __repr__(self) -> str:
        return f"EnvironmentVariable({self.name!r})"


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _kind_name(kind: Callable[..., Any]) -> str:
    return {str: "string", int: "integer", float: "number", _boolean: "boolean"}.get(kind, getattr(kind, "__name__", "value"))


# ---------------------------------------------------------------- state (ml_tasks.settings)

RATCHET_HOME = EnvironmentVariable(
    "RATCHET_HOME", str, None, "Where all state of the embedded default lives; deleting it resets everything.",
    default_doc="`.ratchet/` in the project root")
RATCHET_MLFLOW_ARTIFACT_ROOT = EnvironmentVariable(
    "RATCHET_MLFLOW_ARTIFACT_ROOT", str, None, "Artifact location of the experiment Ratchet creates.",
    default_doc="`RATCHET_HOME/mlflow/artifacts`")
RATCHET_MLFLOW_EXPERIMENT = EnvironmentVariable(
    "RATCHET_MLFLOW_EXPERIMENT", str, "ratchet-nightly", "MLflow experiment of the nightly runs.")
RATCHET_OPTUNA_STORAGE = EnvironmentVariable(
    "RATCHET_OPTUNA_STORAGE", str, None, "Optuna storage URL shared by the tuning slots (PostgreSQL in production).",
    default_doc="SQLite under `RATCHET_HOME/optuna/`")
RATCHET_EXPECTATIONS_DIR = EnvironmentVariable(
    "RATCHET_EXPECTATIONS_DIR", str, None, "The committed Great Expectations project (suites, checkpoints).",
    default_doc="`expectations/` in the project root")
RATCHET_DATASETS_DIR = EnvironmentVariable(
    "RATCHET_DATASETS_DIR", str, None, "The data set declarations (one YAML file per data set).",
    default_doc="`datasets/` in the project root")
RATCHET_INFERENCE_LOG_DIR = EnvironmentVariable(
    "RATCHET_INFERENCE_LOG_DIR", str, None, "Where `ratchet serve` writes the inference log `model_monitoring` reads.",
    default_doc="`RATCHET_HOME/inference`")
RATCHET_FEEDBACK_DIR = EnvironmentVariable(
    "RATCHET_FEEDBACK_DIR", str, None, "Labels that arrive after the fact (request_id, label), one folder per model.",
    default_doc="`RATCHET_HOME/feedback`")
RATCHET_LOCAL_ROOTS = EnvironmentVariable(
    "RATCHET_LOCAL_ROOTS", str, "", "Extra folders (os.pathsep-separated) that file:// sources may read besides "
    "`RATCHET_HOME`.", default_doc="none")

# ---------------------------------------------------------------- training

RATCHET_GPU_SLOTS = EnvironmentVariable(
    "RATCHET_GPU_SLOTS", int, 1, "Slots of the `ratchet_gpu` pool: the number of GPUs across the GPU hosts.")
RATCHET_TRAIN_MEMORY_BUDGET = EnvironmentVariable(
    "RATCHET_TRAIN_MEMORY_BUDGET", float, None, "Bytes the training arrays may take in memory; above it the "
    "prepared Parquet is streamed.", default_doc="a quarter of free memory")
RATCHET_INPUT_PIPELINE = EnvironmentVariable(
    "RATCHET_INPUT_PIPELINE", str, None, "Streamed input: `tf.data` or `pydataset`.",
    default_doc="`tf.data` under TensorFlow, else `pydataset`")
RATCHET_TF_BATCHES_PER_BLOCK = EnvironmentVariable(
    "RATCHET_TF_BATCHES_PER_BLOCK", int, 128, "Streamed input under TensorFlow: batches per Python call of the generator.")
RATCHET_TF_BLOCKS_AHEAD = EnvironmentVariable(
    "RATCHET_TF_BLOCKS_AHEAD", int, 4, "Streamed input under TensorFlow: blocks produced ahead of the model.")
RATCHET_WORKER_HOST = EnvironmentVariable(
    "RATCHET_WORKER_HOST", str, None, "Multi-host training: the address other workers reach this host at.",
    default_doc="the host's FQDN")
RATCHET_WORKER_PORTS = EnvironmentVariable(
    "RATCHET_WORKER_PORTS", str, "", "Multi-host training: ports a worker may listen on (`2222`, `2222-2231`).",
    default_doc="any free port")
RATCHET_RENDEZVOUS_TIMEOUT_S = EnvironmentVariable(
    "RATCHET_RENDEZVOUS_TIMEOUT_S", float, 900.0, "Multi-host training: seconds a worker waits for all to register.")
RATCHET_RENDEZVOUS_STALE_S = EnvironmentVariable(
    "RATCHET_RENDEZVOUS_STALE_S", float, 60.0, "Multi-host training: seconds without a heartbeat after which a worker "
    "counts as gone.")
RATCHET_PARENT_PID = EnvironmentVariable(
    "RATCHET_PARENT_PID", int, None, "Internal: a multi-host trainer exits when this process does.", default_doc="unset")

# ---------------------------------------------------------------- serving

RATCHET_SERVE_TOKEN = EnvironmentVariable(
    "RATCHET_SERVE_TOKEN", str, None, "Bearer token `ratchet serve` requires.",
    default_doc="generated once into `RATCHET_HOME/serving/token`")
RATCHET_SERVE_MAX_ROWS = EnvironmentVariable(
    "RATCHET_SERVE_MAX_ROWS", int, 10_000, "Most rows one request may carry (413 above).")
RATCHET_SERVE_MAX_BODY_BYTES = EnvironmentVariable(
    "RATCHET_SERVE_MAX_BODY_BYTES", int, 16 * 1024 * 1024, "Largest request body in bytes (413 above).")
RATCHET_SERVE_EXPLAIN_MAX_ROWS = EnvironmentVariable(
    "RATCHET_SERVE_EXPLAIN_MAX_ROWS", int, 100, "Most rows one `POST /explain` request may carry (413 above).")
RATCHET_INFERENCE_LOG_SAMPLE = EnvironmentVariable(
    "RATCHET_INFERENCE_LOG_SAMPLE", float, 1.0, "Fraction of served rows written to the inference log.")
RATCHET_SERVE_CONFIG = EnvironmentVariable(
    "RATCHET_SERVE_CONFIG", str, None, "Internal: the server's config as JSON, for uvicorn's app factory.",
    default_doc="unset")

# ---------------------------------------------------------------- Airflow, monitoring, storage

RATCHET_MLFLOW_UI_URL = EnvironmentVariable(
    "RATCHET_MLFLOW_UI_URL", str, "http://127.0.0.1:5000", "Where people open the MLflow UI (links in Airflow).")
RATCHET_MONITORING_SCHEDULE = EnvironmentVariable(
    "RATCHET_MONITORING_SCHEDULE", str, "0 * * * *", "Cron schedule (UTC) of `model_monitoring`.")
RATCHET_PRELOAD = EnvironmentVariable(
    "RATCHET_PRELOAD", _boolean, True, "Airflow's scheduler and Celery workers preload pandas, scikit-learn and "
    "MLflow before they fork tasks.")
RATCHET_WEBHDFS_URL = EnvironmentVariable(
    "RATCHET_WEBHDFS_URL", str, None, "WebHDFS endpoint when no Airflow Connection names one.",
    default_doc="from the hdfs:// URI")

# ---------------------------------------------------------------- the Spark engine (ml_tasks.data.spark)

RATCHET_SPARK_MASTER = EnvironmentVariable(
    "RATCHET_SPARK_MASTER", str, None, "Spark master of data sets on the spark engine when no Airflow Connection "
    "`spark_default` names one (`spark://host:7077`, `yarn`, `local[4]`).", default_doc="`local[*]`")
RATCHET_SPARK_DRIVER_MEMORY = EnvironmentVariable(
    "RATCHET_SPARK_DRIVER_MEMORY", str, "1g", "Heap of the Spark driver a task starts (JVM size, e.g. `2g`).")
RATCHET_SPARK_EXECUTOR_MEMORY = EnvironmentVariable(
    "RATCHET_SPARK_EXECUTOR_MEMORY", str, "1g", "Heap of each Spark executor on a cluster (JVM size).")
RATCHET_SPARK_EXECUTOR_WAIT_S = EnvironmentVariable(
    "RATCHET_SPARK_EXECUTOR_WAIT_S", float, 600.0, "Seconds a stage's Spark job may wait with no executor on a "
    "cluster (its workers lost, or none free) before the stage fails and is retried; 0 waits for ever.")
RATCHET_SPARK_LOCAL_DIR = EnvironmentVariable(
    "RATCHET_SPARK_LOCAL_DIR", str, None, "Spark's scratch space (shuffle and spill files).",
    default_doc="`RATCHET_HOME/spark/local`")
RATCHET_SPARK_SUBMIT = EnvironmentVariable(
    "RATCHET_SPARK_SUBMIT", _boolean, False, "Tasks submit the spark engine's stages with `spark-submit` (the Apache "
    "Spark provider's hook, the Connection `spark_default`) instead of running their driver in the task; the "
    "production profile sets it.")

# ---------------------------------------------------------------- the production profile (`ratchet up --profile production`)

RATCHET_POSTGRES_URL = EnvironmentVariable(
    "RATCHET_POSTGRES_URL", str, None, "PostgreSQL server URL (databases airflow, mlflow, optuna).",
    default_doc="required")
RATCHET_REDIS_URL = EnvironmentVariable("RATCHET_REDIS_URL", str, None, "Celery broker.", default_doc="required")
RATCHET_S3_ENDPOINT = EnvironmentVariable(
    "RATCHET_S3_ENDPOINT", str, "", "S3 endpoint of the artifact store.", default_doc="AWS S3 itself")
RATCHET_ARTIFACTS_DESTINATION = EnvironmentVariable(
    "RATCHET_ARTIFACTS_DESTINATION", str, "s3://ratchet/mlflow", "Where the MLflow server keeps artifacts.")

# ---------------------------------------------------------------- other tools' variables that Ratchet reads

AIRFLOW_HOME = EnvironmentVariable(
    "AIRFLOW_HOME", str, None, "Airflow's home.", default_doc="`RATCHET_HOME/airflow`", group="other tools")
MLFLOW_TRACKING_URI = EnvironmentVariable(
    "MLFLOW_TRACKING_URI", str, None, "MLflow tracking store and registry.",
    default_doc="SQLite under `RATCHET_HOME/mlflow/`", group="other tools")
MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL = EnvironmentVariable(
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", float, 5.0, "Seconds between CPU/memory/GPU samples of training.",
    group="other tools")
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = EnvironmentVariable(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", str, None, "Airflow's metadata database. On SQLite, Ratchet's "
    "environment makes Airflow's connections wait up to 30 s for another writer's lock (Python's default is 5 s).",
    default_doc="SQLite under `RATCHET_HOME/airflow/`", group="other tools")
AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME = EnvironmentVariable(
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", float, 0.25, "Seconds the scheduler sleeps after a loop that "
    "found nothing to do (Airflow's own default is 1).", group="other tools")
HADOOP_USER_NAME = EnvironmentVariable(
    "HADOOP_USER_NAME", str, None, "WebHDFS user when no Airflow Connection names one.", default_doc="none",
    group="other tools")
JAVA_HOME = EnvironmentVariable(
    "JAVA_HOME", str, None, "The Java 17 the spark engine starts Spark's driver with.", default_doc="`java` on PATH",
    group="other tools")
PYSPARK_PYTHON = EnvironmentVariable(
    "PYSPARK_PYTHON", str, None, "The Python of Spark's Python workers, should a stage need one.",
    default_doc="the task's own interpreter", group="other tools")
AWS_ACCESS_KEY_ID = EnvironmentVariable(
    "AWS_ACCESS_KEY_ID", str, None, "The production profile's S3 key (boto3 reads the AWS chain itself).",
    default_doc="required by the production profile", group="other tools")
AWS_SECRET_ACCESS_KEY = EnvironmentVariable(
    "AWS_SECRET_ACCESS_KEY", str, None, "The production profile's S3 secret.",
    default_doc="required by the production profile", group="other tools")


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | type | default | what it is for |", "|---|---|---|---|"]
    for variable in DECLARED:
        default = variable.default_doc or (f"`{variable.default}`" if variable.default not in (None, "") else "unset")
        lines.append(f"| `{variable.name}` | {_kind_name(variable.kind)} | {default} | {variable.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
