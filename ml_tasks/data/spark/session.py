"""A Spark session for one stage: the master from the caller (an Airflow Connection, the environment, or local mode).

The driver runs inside the task; on a cluster the executors do the scans, shuffles and aggregations, and only
small results (counts, quantiles, vocabularies) come back. No Python runs on the executors (no UDFs), so a cluster
needs no Ratchet install. Spark's web UI is off unless asked for: it has no authentication of its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks import environment_variables as env
from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LOCAL_MASTER = "local[*]"
# Java 17 is what pyspark 4 runs on; Debian's package is named in the error when java is missing.
JAVA_PACKAGE = "openjdk-17-jre-headless"


@dataclass(frozen=True)
class SparkOptions:
    """Where Spark runs: `master` (None: RATCHET_SPARK_MASTER, else local mode) and extra `spark.*` settings."""

    master: str | None = None
    conf: dict[str, str] = field(default_factory=dict)

    def resolved_master(self) -> str:
        return self.master or env.RATCHET_SPARK_MASTER.get() or LOCAL_MASTER

    def to_dict(self) -> dict[str, Any]:
        return {"master": self.resolved_master(), "conf": dict(self.conf)}


def require_java() -> str:
    java_home = env.JAVA_HOME.get()
    java = shutil.which("java", path=os.path.join(java_home, "bin") if java_home else None)
    if not java:
        raise ConfigError(f"the spark engine needs Java 17 and no `java` was found (JAVA_HOME or PATH); "
                          f"on Debian: apt-get install {JAVA_PACKAGE}")
    return java


def _settings(options: SparkOptions, app_name: str) -> dict[str, str]:
    from ml_tasks.settings import get_settings

    local_dir = env.RATCHET_SPARK_LOCAL_DIR.get() or str(get_settings().home / "spark" / "local")
    os.makedirs(local_dir, exist_ok=True)
    settings = {
        "spark.app.name": app_name,
        "spark.driver.memory": env.RATCHET_SPARK_DRIVER_MEMORY.get(),
        "spark.executor.memory": env.RATCHET_SPARK_EXECUTOR_MEMORY.get(),
        "spark.local.dir": local_dir,
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        # Small stages (a nightly drop of thousands of rows) should not pay for 200 shuffle partitions.
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.shuffle.partitions": "16",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.parquet.compression.codec": "snappy",
    }
    if options.resolved_master().startswith(("local", "spark://127.", "spark://localhost")):
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
    settings.update(options.conf)
    return settings


@contextmanager
def spark_session(options: SparkOptions | None = None, app_name: str = "ratchet") -> Iterator[SparkSession]:
    """A session on the resolved master, stopped on exit (an active session on the same master is reused, not stopped).

    The driver's JVM outlives the session in this process (pyspark keeps its gateway), so later sessions start fast.
    """
    options = options or SparkOptions()
    require_java()
    if not env.PYSPARK_PYTHON.is_set:
        env.PYSPARK_PYTHON.set(sys.executable)
    from pyspark.sql import SparkSession

    master = options.resolved_master()
    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master == master:
        yield active
        return
    if active is not None:
        active.stop()
    builder = SparkSession.builder.master(master)
    for key, value in _settings(options, app_name).items():
        builder = builder.config(key, value)
    log.info("starting a Spark session on %s", master)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    try:
        yield session
    finally:
        session.stop()
