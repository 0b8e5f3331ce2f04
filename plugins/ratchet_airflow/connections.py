"""Storage endpoints and credentials from Airflow Connections, handed to ml_tasks as typed options.

An `aws` Connection follows the Amazon provider's conventions: login is the
access key id, password the secret key, extra `endpoint_url` and
`region_name`. An HDFS Connection gives the WebHDFS host and port (schema
`http` or `https`) and the user as login. A connection id that does not exist
falls back to the standard environment (AWS chain, HADOOP_USER_NAME). Airflow
masks the secrets of every Connection read in a task in that task's log.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def optional_connection(conn_id: str) -> Any | None:
    """The Airflow Connection `conn_id`, or None when the id is empty or no such Connection exists."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    if not conn_id:
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow Connection %r; using the standard environment for it", conn_id)
        return None


def storage_options(s3_conn_id: str = "", hdfs_conn_id: str = "", workers: int = 16) -> Any:
    from ml_tasks.storage import HdfsOptions, S3Options, StorageOptions

    s3 = S3Options()
    if (conn := optional_connection(s3_conn_id)) is not None:
        extra = conn.extra_dejson or {}
        s3 = S3Options(
            endpoint_url=extra.get("endpoint_url") or None,
            access_key_id=conn.login or None,
            secret_access_key=conn.password or None,
            region=extra.get("region_name") or None,
        )
    hdfs = HdfsOptions()
    if (conn := optional_connection(hdfs_conn_id)) is not None:
        scheme = conn.schema or "http"
        hdfs = HdfsOptions(url=f"{scheme}://{conn.host}:{conn.port or 9870}", user=conn.login or None)
    return StorageOptions(s3=s3, hdfs=hdfs, workers=workers)


def spark_options(conn_id: str) -> Any:
    """The Spark master of a `spark` Connection as the Apache Spark provider reads it (host with its scheme:
    `spark://host`, `yarn`, `k8s://...`, `local[4]`; port appended), and its `spark.*` extras as settings.
    No such Connection: RATCHET_SPARK_MASTER, else local mode."""
    from ml_tasks.data.spark.session import SparkOptions

    conn = optional_connection(conn_id)
    if conn is None or not conn.host:
        return SparkOptions()
    host = conn.host
    if "://" not in host and not host.startswith(("yarn", "local")):
        host = f"spark://{host}"
    master = f"{host}:{conn.port}" if conn.port else host
    extra = conn.extra_dejson or {}
    return SparkOptions(master=master, conf={k: str(v) for k, v in extra.items() if k.startswith("spark.")})
