"""`airflow dags test`, one command after another in one interpreter (`helpers.dags_test` drives it).

Each request is the argv of an `airflow` command, read as a JSON line from stdin, and is run as the `airflow`
executable runs it: the CLI's own parser and the function it picks (`dags test` calls `DAG.test()`, a real
DagRun in Airflow's database). A command's stdout and stderr, and those of the processes it starts, go to the
log file the request names; its exit status goes back as one line on the file descriptor given as argv[1].

Why one interpreter: a fresh `airflow dags test` pays seconds before its first task (Airflow's imports, building
the in-process Task Execution API, then pandas, MLflow and GX on the first tasks) and a module of integration
tests runs a dozen of them. A scheduler's workers preload the same (`plugins/airflow_local_settings.py`).
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _run(argv: list[str]) -> int:
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    args = cli_parser.get_parser().parse_args(argv)
    write_default_airflow_configuration_if_needed()
    try:
        args.func(args)
    except SystemExit as exc:  # what the CLI raises for a failed DagRun ("DagRun failed") or a bad argument
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    done = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        code = _run(request["argv"])
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        done.write(f"{code}\n")


if __name__ == "__main__":
    main()
