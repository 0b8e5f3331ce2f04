"""storage_sync: mirror one storage location into another (file://, s3://, hdfs://), on demand.

Wiring only: the task calls `ml_tasks.storage.sync`, named as the task id.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from ml_tasks.constants import CONN_ID_PATTERN, DEFAULT_HDFS_CONN_ID, DEFAULT_S3_CONN_ID, STORAGE_URI_PATTERN
from ml_tasks.storage.options import StorageOptions

DOC = """
### Storage sync
Copies every object under **src** to **dst**, incrementally by content: an object
is copied only when the destination does not already hold the same bytes
(S3 ETags, HDFS file checksums, local SHA-256 cached by size and time). Writes are
atomic (temporary name then rename, or a completed multipart upload), transfers
run concurrently and stream, throttling and transient errors are retried, and an
interrupted sync resumes without recopying. A manifest (`_ratchet_manifest.json`)
listing every object with its size and checksum is written **last**, so a
consumer that sees it knows the set is whole.

* **delete** removes objects at dst that src no longer has.
* **dry_run** only reports what would be copied and deleted.
* **s3_conn_id** / **hdfs_conn_id** name the Airflow Connections of the endpoints
  (an `aws` Connection: login = access key id, password = secret, extra
  `endpoint_url`, `region_name`; an HDFS Connection: WebHDFS host, port, user).
  A missing Connection falls back to the standard AWS / Hadoop environment.
"""


@dag(
    dag_id="storage_sync",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=DOC,
    tags=["ratchet", "storage"],
    default_args={"owner": "ratchet", "retries": 2},
    params={
        "src": Param("file:///", type="string", pattern=STORAGE_URI_PATTERN, maxLength=2048, title="Source",
                     description="file:///path (inside RATCHET_HOME or RATCHET_LOCAL_ROOTS), s3://bucket/prefix or "
                                 "hdfs://namenode:port/path"),
        "dst": Param("file:///", type="string", pattern=STORAGE_URI_PATTERN, maxLength=2048, title="Destination",
                     description="file:///path (inside RATCHET_HOME or RATCHET_LOCAL_ROOTS), s3://bucket/prefix or "
                                 "hdfs://namenode:port/path"),
        "delete": Param(False, type="boolean", title="Delete extra objects at the destination",
                        description="Objects under the destination prefix that the source lacks are deleted."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Report only; change nothing."),
        "workers": Param(StorageOptions.workers, type="integer", minimum=1, maximum=64, title="Concurrent transfers",
                         description="Files copied at once (threads)."),
        "s3_conn_id": Param(DEFAULT_S3_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="S3 Connection id",
                            description="Airflow Connection of the S3 endpoint (missing: the AWS environment)."),
        "hdfs_conn_id": Param(DEFAULT_HDFS_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="HDFS Connection id",
                              description="Airflow Connection of the WebHDFS endpoint (missing: the environment)."),
    },
)
def storage_sync() -> None:
    @task(multiple_outputs=False)
    def sync() -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from ratchet_airflow.connections import storage_options
        from ratchet_airflow.failures import permanent_errors_fail_the_task

        from ml_tasks import storage
        from ml_tasks.config import confined_uri

        params = get_current_context()["params"]
        options = storage_options(params["s3_conn_id"], params["hdfs_conn_id"], int(params["workers"]))
        with permanent_errors_fail_the_task():  # the same input fails the same way: no retry
            src, dst = confined_uri(params["src"], "src"), confined_uri(params["dst"], "dst")
            result = storage.sync(src, dst, delete=bool(params["delete"]),
                                  dry_run=bool(params["dry_run"]), options=options)
        return result.to_dict()

    sync()


storage_sync()
