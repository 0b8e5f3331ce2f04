"""Run a stage in a fresh Python process (exec, never fork).

TensorFlow is not fork-safe and keeps GPU memory until its process exits, so
every stage that imports it runs as `python -m ml_tasks.isolation TARGET ...`.
Arguments and results travel as JSON files; the child's logs go to the same
stdout/stderr as the task's. An error raised on purpose in the child is raised
again here with its type and message.

A stage that will not touch TensorFlow (a scikit-learn family) can pass
`fresh_process=False`: the same call then runs here, with the same JSON round
trip. The Airflow task is already a process of its own, forked from a worker
that preloaded pandas, scikit-learn and MLflow, so a fresh interpreter would
only pay those imports again.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

from ml_tasks import errors

log = logging.getLogger(__name__)


def run_isolated(target: str, kwargs: dict[str, Any], timeout_s: float | None = None,
                 fresh_process: bool = True) -> Any:
    """Call `module:function` with `kwargs` in a new interpreter (or here) and return its JSON result."""
    if not fresh_process:
        log.info("running %s in this process (no TensorFlow)", target)
        return json.loads(json.dumps(_resolve(target)(**json.loads(json.dumps(kwargs))), default=str))
    with tempfile.TemporaryDirectory(prefix="ratchet-") as tmp:
        args_path, result_path = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args_path.write_text(json.dumps(kwargs))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("KERAS_BACKEND", "tensorflow")
        command = [sys.executable, "-m", "ml_tasks.isolation", target, str(args_path), str(result_path)]
        log.info("running %s in a fresh process", target)
        completed = subprocess.run(command, env=env, timeout=timeout_s, check=False)
        return read_outcome(target, result_path, completed.returncode)


def read_outcome(target: str, result_path: Path, returncode: int) -> Any:
    """The result `_main` wrote for `target`, or its error raised again here (a Ratchet error keeps its type)."""
    if result_path.is_file():
        outcome = json.loads(result_path.read_text())
        if "error" in outcome:
            error_type = getattr(errors, outcome["error"]["type"], None)
            if isinstance(error_type, type) and issubclass(error_type, errors.RatchetError):
                raise error_type(outcome["error"]["message"])
            raise errors.RatchetError(
                f"{target} failed in its process: {outcome['error']['type']}: {outcome['error']['message']}"
            )
        if returncode == 0:
            return outcome["result"]
    why = f"was killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with status {returncode}"
    raise errors.RatchetError(f"{target} process {why} before returning a result")


def _resolve(target: str) -> Any:
    """The function a `module:function` target names."""
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _main(argv: list[str]) -> int:
    target, args_path, result_path = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    function = _resolve(target)
    try:
        result = {"result": function(**json.loads(Path(args_path).read_text()))}
        status = 0
    except Exception as exc:
        traceback.print_exc()
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        status = 1
    tmp = Path(f"{result_path}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return status


def exit_without_teardown(status: int) -> NoReturn:
    """End a stage's process once its result is written, without the interpreter's teardown.

    Finalizing TensorFlow's modules at exit takes seconds, frees nothing the OS does not free at once, and the
    task waits for it on every fresh process. The steps of a normal exit before that teardown still run, in the
    interpreter's order: thread pools are told to stop and non-daemon threads are joined (`threading._shutdown`,
    which is what `Py_FinalizeEx` calls), then the exit handlers (MLflow ends an active run and flushes its async
    logging; logging flushes its handlers).
    """
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_without_teardown(_main(sys.argv[1:]))
