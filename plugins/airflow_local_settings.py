"""Airflow's local settings hook: preload the heavy third-party libraries in the processes that fork tasks.

Airflow imports `airflow_local_settings` (the plugins folder is on its path) in every process it starts.
Only the scheduler (whose LocalExecutor forks its workers, which fork each task) and a Celery worker
preload; the DAG processor, the API server and the CLI do not, so parsing a DAG file stays light. Each task
then starts with pandas, MLflow (its SQL stores too), scikit-learn, Great Expectations and matplotlib already
imported, which was most of the per-task orchestration overhead `bench/overhead.py` measures.
Nothing preloaded starts a thread or opens a connection at import, so forking after it is safe.
Our own code (`ml_tasks`) is not preloaded, so a task always runs the code on disk. TensorFlow is never
preloaded: training runs in a spawned interpreter (TF is not fork-safe). `RATCHET_PRELOAD=0` switches this off.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

log = logging.getLogger(__name__)

PRELOADED = ("numpy", "pandas", "pyarrow.parquet", "sklearn", "scipy.stats", "mlflow", "mlflow.pyfunc",
             "mlflow.tracking", "great_expectations", "optuna", "skops.io",
             # MLflow's SQL stores pull in alembic and mako in every task that opens the tracking store
             "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
             # plots (training curves, evaluation, the study's history)
             "matplotlib.pyplot", "optuna.visualization.matplotlib", "optuna.importance",
             # what each task's supervisor and runner import after the fork
             "airflow.sdk.execution_time.supervisor", "airflow.providers.standard.decorators.python",
             # what the runner's parse of a Ratchet DAG file imports from Airflow (the review task, the schedules,
             # croniter), paid by every task otherwise; our own modules it imports are left to load from disk
             "airflow.providers.standard.operators.hitl", "airflow.providers.standard.operators.empty",
             "airflow.timetables.base", "airflow.sdk.definitions.timetables._cron",
             "airflow.sdk.definitions.timetables._delta", "airflow.sdk.definitions.decorators.setup_teardown")
FORKING_COMMANDS = ("scheduler", "celery")


def _preload() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    from ml_tasks.environment_variables import RATCHET_PRELOAD

    if not RATCHET_PRELOAD.get() or command not in FORKING_COMMANDS:
        return
    os.environ.setdefault("MPLBACKEND", "Agg")  # headless: pyplot must not pick a GUI backend
    for name in PRELOADED:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library must never stop the scheduler
            log.warning("not preloading %s: %s", name, exc)
    _prebuild_api_client_tls()


def _prebuild_api_client_tls() -> None:
    """Build the Task SDK client's TLS context once, before the executor's workers fork.

    Each task's supervisor opens an Execution API client whose TLS context (certifi's CA bundle) is cached per
    process; LocalExecutor starts a pool of workers and hands each task to an idle one, so without this nearly
    every task paid the build (seen in the scheduler log: "Using Public CAs from certifi" per task).
    """
    try:
        from airflow.sdk.api import client

        client.Client._get_ssl_context_cached(client.API_SSL_CA_FILE_PATH, client.API_SSL_CERT_PATH)
    except Exception as exc:  # an Airflow without this cache: tasks build it themselves, as before
        log.warning("not prebuilding the Execution API client's TLS context: %s", exc)


_preload()
