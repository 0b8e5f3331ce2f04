"""A Spark session for one stage: the master from the caller (an Airflow Connection, the environment, or local mode).

The driver runs inside the task; on a cluster the executors do the scans, shuffles and aggregations, and only
small results (counts, quantiles, vocabularies) come back. No Python runs on the executors (no UDFs), so a cluster
needs no Ratchet install. Spark's web UI is off unless asked for: it has no authentication of its own.

On a cluster, Spark re-runs the tasks of an executor it lost once executors come back, but while none is there it
waits for ever (standalone: also with its master gone, "waiting for reconnection"). A stage must not hang a task for
ever, so a watch cancels the session's jobs once they have waited RATCHET_SPARK_EXECUTOR_WAIT_S with no executor,
and the stage fails with `SparkClusterError`, which Airflow retries.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks import environment_variables as env
from ml_tasks.errors import ConfigError, SparkClusterError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LOCAL_MASTER = "local[*]"
SPARK_MEMORY_FRACTION = "0.3"
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


def application_name(stage: str, dataset: str) -> str:
    """A stage's Spark application name (the master's UI and logs list it), driven in the task or submitted."""
    return f"ratchet-{stage}-{dataset}"


def require_java() -> str:
    java_home = env.JAVA_HOME.get()
    java = shutil.which("java", path=os.path.join(java_home, "bin") if java_home else None)
    if not java:
        raise ConfigError(f"the spark engine needs Java 17 and no `java` was found (JAVA_HOME or PATH); "
                          f"on Debian: apt-get install {JAVA_PACKAGE}")
    return java


def session_settings(options: SparkOptions, app_name: str) -> dict[str, str]:
    """Every `spark.*` setting of a stage's session: ours, then the caller's (a submitted stage passes them to
    spark-submit too, where the JVM-start ones, such as the driver's heap, take effect)."""
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
        # Spark's default (0.6) hands most of the heap to its accounted execution and storage memory. What it does
        # not account for must fit in the rest: above all the Parquet reader's buffers, a whole row group's column
        # chunks per running task (a pyarrow-written row group of 1M rows x 30 columns is about 176 MB). With the
        # default 1g heap and two tasks, deduplicating 50M such rows died with "Java heap space" in the reader;
        # at 0.3 it completed. Sorts and aggregations spill sooner instead. A Connection's extras may set it.
        "spark.memory.fraction": SPARK_MEMORY_FRACTION,
        # Hadoop's vectored reads fetch a row group's column chunks at once into buffers of their own; with them on,
        # validating 50M rows (1g heap, two tasks) died with "Java heap space" in that read, twice. Off, the same
        # validation completed in 459 s with no memory error. The read path only: results are the same.
        "spark.hadoop.parquet.hadoop.vectored.io.enabled": "false",
    }
    if options.resolved_master().startswith(("local", "spark://127.", "spark://localhost")):
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
    settings.update(options.conf)
    return settings


def is_local(master: str) -> bool:
    return master.startswith("local")


class ExecutorWatch:
    """Cancels a session's jobs once they have waited `wait_s` seconds with no executor registered.

    A daemon thread asks the driver every `poll_s` seconds (two Py4J calls): are jobs active, and how many executors
    are alive? Once it has cancelled, later jobs of the session that find no executor are cancelled at once (a
    caller that catches a job's failure and goes on must not wait again). `reason` says why it cancelled, if it did.
    """

    def __init__(self, session: SparkSession, master: str, wait_s: float, poll_s: float = 1.0) -> None:
        self.context = session.sparkContext
        self.master = master
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.reason: str | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ratchet-spark-executor-watch", daemon=True)
        self._thread.start()

    def executors(self) -> int:
        """Executors alive now (the status tracker lists the driver too)."""
        return max(len(self.context._jsc.sc().statusTracker().getExecutorInfos()) - 1, 0)

    def _watch(self) -> None:
        waiting_since: float | None = None
        while not self._stopped.wait(self.poll_s):
            try:
                waiting = bool(self.context.statusTracker().getActiveJobsIds()) and self.executors() == 0
            except Exception:  # the context is stopping (or stopped): nothing left to watch
                return
            if not waiting:
                waiting_since = None
                continue
            now = time.monotonic()
            waiting_since = waiting_since or now
            if self.reason is None and now - waiting_since < self.wait_s:
                continue
            if self.reason is None:
                self.reason = (f"no Spark executor on {self.master} for {now - waiting_since:.0f} s while a "
                               f"job waited (RATCHET_SPARK_EXECUTOR_WAIT_S={self.wait_s:g}): the cluster lost its "
                               f"workers, or has none free; the stage's jobs were cancelled")
                log.error("%s", self.reason)
            self.context.cancelAllJobs()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self.poll_s + 5)


@contextmanager
def _watched(session: SparkSession, master: str) -> Iterator[SparkSession]:
    """The block on `session`, failing with SparkClusterError if the watch had to cancel its jobs."""
    wait_s = env.RATCHET_SPARK_EXECUTOR_WAIT_S.get()
    if is_local(master) or wait_s <= 0:
        yield session
        return
    watch = ExecutorWatch(session, master, wait_s)
    try:
        yield session
    except Exception as exc:
        if watch.reason is not None:
            raise SparkClusterError(watch.reason) from exc
        raise
    finally:
        watch.stop()
    if watch.reason is not None:  # the block caught the cancelled job's error itself: still no result to trust
        raise SparkClusterError(watch.reason)


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
        with _watched(active, master):
            yield active
        return
    if active is not None:
        active.stop()
    builder = SparkSession.builder.master(master)
    for key, value in session_settings(options, app_name).items():
        builder = builder.config(key, value)
    log.info("starting a Spark session on %s", master)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    try:
        with _watched(session, master):
            yield session
    finally:
        session.stop()
