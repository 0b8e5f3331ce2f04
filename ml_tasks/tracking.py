"""MLflow set-up shared by the stages: one parent run per nightly run.

The parent run is found again by its run-key tag, so a retried or cleared task
logs into the same run instead of creating a second one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ml_tasks.config import RunContext
from ml_tasks.constants import TAG_AIRFLOW_DAG_ID, TAG_AIRFLOW_RUN_ID, TAG_DATASET, TAG_RUN_KEY
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# How the MLflow REST client rides out a tracking server that is briefly unreachable (a restart, a network blip):
# urllib3 retries every request with exponential backoff (0, 2, 4, 8, 16, 32 s: about a minute), then raises an
# error naming the server's URL; Airflow's task retry is the next layer. MLflow's own defaults (7 retries, factor 2,
# 120 s timeout) keep a task waiting over four minutes. A value the user set in the environment wins.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def _set_uris() -> None:
    import os

    import mlflow

    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)  # read by MLflow on every request; inherited by spawned stages
    settings = get_settings()
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def configure() -> str:
    """Point MLflow at our tracking store and return the experiment id."""
    import mlflow

    settings = get_settings()
    _set_uris()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_root))
    except Exception:  # another task created it first
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def client() -> MlflowClient:
    """A client on our tracking store and registry (registry calls need no experiment)."""
    import mlflow

    _set_uris()
    return mlflow.MlflowClient()


def ensure_parent_run(ctx: RunContext) -> str:
    """The MLflow run of this nightly run: found by its tag, or created once."""
    import mlflow

    experiment_id = configure()
    tracking = mlflow.MlflowClient()
    found = tracking.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_RUN_KEY}` = '{ctx.tracking_key}' and tags.`mlflow.parentRunId` IS NULL",
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    run = tracking.create_run(
        experiment_id,
        run_name=f"{ctx.dataset}-{ctx.run_key}",
        tags={
            TAG_RUN_KEY: ctx.tracking_key,
            TAG_DATASET: ctx.dataset,
            TAG_AIRFLOW_DAG_ID: ctx.dag_id,
            TAG_AIRFLOW_RUN_ID: ctx.run_id,
        },
    )
    log.info("created MLflow run %s for %s", run.info.run_id, ctx.tracking_key)
    return str(run.info.run_id)
