"""The spark engine's stages submitted with the Apache Spark provider (`SparkSubmitHook`), as the production profile does.

With RATCHET_SPARK_SUBMIT set, validate, drift and prepare of a data set on the spark engine do not start a driver in
the task: the task writes the stage's arguments (`ml_tasks.ops.spark_submitted`) and the provider's hook runs
`spark-submit` with what the Connection `spark_default` says (master, deploy mode, queue, principal and keytab,
spark-binary), the stage's Spark settings as `--conf`, and the driver's heap. spark-submit's Python driver calls
the same `ml_tasks.pipeline` function the task would have called, and the task returns its JSON result. A data
error raised in the application fails the task as it would in the task itself (no retry); a failed submission
(no cluster, a killed driver) is an ordinary failure, retried.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def submit_stage(stage: str, conn_id: str, ctx: Any, params: dict[str, Any], synced: dict[str, Any],
                 spark: Any) -> dict[str, Any]:
    """Run `ml_tasks.pipeline.<stage>` as a Spark application through the provider's hook; its JSON result."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from airflow.sdk.exceptions import AirflowException

    from ml_tasks.data.spark.session import session_settings
    from ml_tasks.errors import ConfigError
    from ml_tasks.ops import spark_submitted as submitted
    from ml_tasks.pipeline import record_failure
    from ratchet_airflow.connections import optional_connection

    connection = optional_connection(conn_id)
    if connection is None or not connection.host:
        # the hook would fall back to YARN: say what is missing instead
        raise ConfigError(f"RATCHET_SPARK_SUBMIT is set and the data set {ctx.dataset} is on the spark engine, but no "
                          f"Airflow Connection {conn_id!r} names a master to submit to")
    submitted.refuse_cluster_deploy_mode((connection.extra_dejson or {}).get("deploy-mode"))
    with tempfile.TemporaryDirectory(prefix="ratchet-submit-") as folder:
        job = submitted.write_stage(Path(folder), stage, ctx.to_dict(), params, synced, spark.to_dict())
        settings = session_settings(spark, job.name)
        hook = SparkSubmitHook(
            conn_id=conn_id, name=job.name, application_args=job.arguments,
            conf={key: value for key, value in settings.items() if key not in ("spark.app.name", "spark.driver.memory")},
            driver_memory=settings["spark.driver.memory"],
            # spark-submit comes with pyspark in this interpreter's environment; its driver is this interpreter
            env_vars={"PATH": _path_with_this_environment(),
                      "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
        )
        log.info("submitting %s with spark-submit (Connection %s)", job.name, conn_id)
        try:
            hook.submit(str(job.application))
        except AirflowException as exc:
            if not job.result.is_file():  # no answer from the stage: the submission itself failed (retried)
                record_failure(ctx, stage, exc, where="spark-submit")
                raise
            return submitted.read_result(job, returncode=1)  # the stage's own error, raised again with its type
        return submitted.read_result(job, returncode=0)


def _path_with_this_environment() -> str:
    """PATH with this interpreter's bin folder first, where pyspark installs `spark-submit`."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # env: pass-through
