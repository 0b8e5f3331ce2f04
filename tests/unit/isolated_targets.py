"""Functions the isolation tests run in a child process."""

import os
import signal

from ml_tasks.errors import DataError


def raise_data_error(message: str) -> None:
    raise DataError(message)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def raise_storage_error() -> None:
    from ml_tasks.errors import StorageError

    raise StorageError("endpoint gone")
