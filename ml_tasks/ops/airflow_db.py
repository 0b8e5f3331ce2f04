"""Connect arguments for Airflow's own engines on the embedded default's SQLite database.

Airflow imports these dicts by path (`[database] sql_alchemy_connect_args` and
`sql_alchemy_connect_args_async`, exported by `ml_tasks.settings.environment_exports`).
SQLite lets one process write at a time, and a connection that finds the write lock
held waits `timeout` seconds before failing with "database is locked" (Python's
default is 5). The scheduler, the DAG processor, the API server and every task
write to the one file: on a busy two-core machine a writer can hold the lock for
longer than 5 s, and a trigger from the UI or REST API then fails with a 500
"Database error". Waiting longer costs nothing when the lock is free. Airflow adds
its own keys to the sync dict (`check_same_thread`), so each engine gets its own.
"""

from __future__ import annotations

from typing import Any

SQLITE_BUSY_TIMEOUT_S = 30.0

SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
SQLITE_CONNECT_ARGS_ASYNC: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
