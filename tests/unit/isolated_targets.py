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


def leave_exit_work(marker: str) -> str:
    """What a stage may leave behind at exit: an idle thread pool, a worker thread still writing, an exit handler."""
    import atexit
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    pool = ThreadPoolExecutor(2)
    list(pool.map(str, range(4)))  # never shut down: its idle workers must not hold the exit

    def write_late() -> None:
        time.sleep(0.5)
        Path(f"{marker}.thread").write_text("joined")

    threading.Thread(target=write_late).start()  # non-daemon: a normal exit waits for it
    atexit.register(lambda: Path(f"{marker}.atexit").write_text("ran"))
    return "done"
