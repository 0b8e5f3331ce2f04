"""Permanent errors fail the task at once: the one place where `ml_tasks` errors meet Airflow's retries.

Errors in `ml_tasks.errors.PERMANENT_ERRORS` (bad data, bad configuration, a
promotion conflict, a version that cannot serve) give the same answer on every
try, so retrying them only delays the failure: they become
`AirflowFailException`, which Airflow does not retry, with the task id in the
message. Every other error (storage, a killed process, an unreachable server)
propagates unchanged and is retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def permanent_errors_fail_the_task(task_id: str | None = None) -> Iterator[None]:
    """Turn a permanent error raised inside the block into a failure without retries: "<task id>: <error>".

    `task_id` defaults to the running task's (in a TaskGroup, with its group's prefix).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from ml_tasks.errors import PERMANENT_ERRORS

    try:
        yield
    except PERMANENT_ERRORS as exc:
        raise AirflowFailException(f"{task_id or _running_task_id()}: {exc}") from exc


def _running_task_id() -> str:
    from airflow.sdk import get_current_context

    return str(get_current_context()["ti"].task_id)
