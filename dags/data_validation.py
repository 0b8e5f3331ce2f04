"""data_validation: validate any drop against any committed Great Expectations suite, on demand.

Wiring only: the task calls `ml_tasks.data.validation.validate`, named as the task id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from ml_tasks.constants import (
    CONN_ID_PATTERN,
    DEFAULT_HDFS_CONN_ID,
    DEFAULT_S3_CONN_ID,
    DEFAULT_SPARK_CONN_ID,
    STORAGE_URI_PATTERN,
)
from ml_tasks.data.validation import DATA_DOCS_POLICIES

# The suites committed beside this repo's DAGs, read from the folder (no GX import) so the form lists them.
SUITES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "expectations" / "suites").glob("*.json"))

DOC = """
### Data validation
Runs a committed expectation suite (`expectations/suites/<suite>.json`, with its
checkpoint in `expectations/checkpoints/`) on a folder of CSV/Parquet files, the
same way `nightly_retrain`'s **validate** task does, so a data engineer can check
a drop before the nightly run sees it.

* **source_uri**: `file:///path`, `s3://bucket/prefix` or `hdfs://namenode:port/path`;
  remote drops are mirrored into `RATCHET_HOME/staging/_validation/` first.
* A failure fails the task with every failed expectation, its column, counts and a
  few example values (never whole rows), and the link to this run's Data Docs.
* **data_docs**: `always`, `on_failure` or `never` (the suite's checkpoint decides by default).
* **engine**: `pandas`, or `spark` for a drop larger than one machine's memory: GE's Spark engine runs the same
  suite on the master of the Airflow Connection `spark_default` (none: local mode).
"""


@dag(
    dag_id="data_validation",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=DOC,
    tags=["ratchet", "data-quality"],
    default_args={"owner": "ratchet", "retries": 1},
    params={
        "source_uri": Param("file:///", type="string", pattern=STORAGE_URI_PATTERN, maxLength=2048,
                            title="Drop to validate",
                            description="Folder of CSV/Parquet files: file:// (inside RATCHET_HOME or RATCHET_LOCAL_ROOTS), "
                                        "s3://bucket/prefix or hdfs://..."),
        "suite": Param(SUITES[0] if SUITES else "", type="string", enum=SUITES, title="Expectation suite",
                       description="A suite committed in expectations/suites/."),
        "data_docs": Param("checkpoint", type="string", enum=["checkpoint", *DATA_DOCS_POLICIES],
                           title="Build Data Docs", description="checkpoint: as the suite's committed checkpoint says."),
        "engine": Param("pandas", type="string", enum=["pandas", "spark"], title="Engine",
                        description="pandas (one process) or spark (the spark_default Connection's master)."),
        "s3_conn_id": Param(DEFAULT_S3_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="S3 Connection id",
                            description="Airflow Connection of the S3 endpoint (missing: the AWS environment)."),
        "hdfs_conn_id": Param(DEFAULT_HDFS_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="HDFS Connection id",
                              description="Airflow Connection of the WebHDFS endpoint (missing: the environment)."),
    },
)
def data_validation() -> None:
    @task(multiple_outputs=False)
    def validate() -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from ratchet_airflow.connections import spark_options, storage_options
        from ratchet_airflow.failures import permanent_errors_fail_the_task

        from ml_tasks.config import confined_uri, run_key_for
        from ml_tasks.data import validation

        context = get_current_context()
        params = context["params"]
        run_key = run_key_for(None, context["dag_run"].run_id)
        options = storage_options(params["s3_conn_id"], params["hdfs_conn_id"])
        docs = None if params["data_docs"] == "checkpoint" else params["data_docs"]
        with permanent_errors_fail_the_task():  # the same drop fails the same way: no retry
            source = confined_uri(params["source_uri"], "source_uri")
            spark = spark_options(DEFAULT_SPARK_CONN_ID) if params["engine"] == "spark" else None
            return validation.validate(source, params["suite"], run_key, options, data_docs=docs,
                                       engine=params["engine"], spark=spark).to_dict()

    validate()


data_validation()
