"""Extra links on the task instances of `@task` Python tasks: the MLflow run, the model version, the Data Docs.

In Airflow 3 a link defined *on an operator class* is resolved by the task
runner when the task ends and stored in XCom; a link a plugin adds to an
existing operator (here `@task`'s `_PythonDecoratedOperator`) is resolved by
the API server when the task-instance page asks for it. These are of the second
kind: they read the XCom return values that nightly_retrain's tasks already
push (small JSON with the MLflow run id, the registered model and version, the
Data Docs URI) from Airflow's database, so nothing changes in the DAGs. A task
whose run produced none of them gets no link (the button stays disabled).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

URL_PREFIX = "/ratchet"


def app_url(path: str) -> str:
    """A URL of the plugin's FastAPI app, under `[api] base_url` when one is set (else relative to the UI)."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{URL_PREFIX}/{path.lstrip('/')}"


def _decoded(value: Any) -> Any:
    """An XCom value as stored: JSON, sometimes JSON inside a JSON string. Never unpickled or instantiated."""
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def run_results(ti_key: TaskInstanceKey) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(this task's return value, every task's return value in its DAG run), JSON objects only."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    results: dict[str, dict[str, Any]] = {}
    own: dict[str, Any] = {}
    with create_session() as session:
        rows = session.execute(
            XComModel.get_many(run_id=ti_key.run_id, dag_ids=ti_key.dag_id, key="return_value")
            .with_only_columns(XComModel.task_id, XComModel.map_index, XComModel.value)
        ).all()
    for task_id, map_index, raw in rows:
        value = _decoded(raw)
        if not isinstance(value, dict):
            continue
        results.setdefault(task_id, value)
        if task_id == ti_key.task_id and map_index == ti_key.map_index:
            own = value
    return own, results


def _first(own: dict[str, Any], results: dict[str, dict[str, Any]], *keys: str) -> dict[str, Any] | None:
    """This task's result when it carries `keys`, else the first result of the run that does."""
    for result in (own, *results.values()):
        if all(result.get(k) for k in keys):
            return result
    return None


class _RatchetLink(BaseOperatorLink):
    operators = [_PythonDecoratedOperator]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            own, results = run_results(ti_key)
            return self.url(own, results, ti_key) or ""
        except Exception:  # a broken link must not break the task-instance page
            log.exception("%s link for %s failed", self.name, ti_key)
            return ""

    def url(self, own: dict[str, Any], results: dict[str, dict[str, Any]], ti_key: TaskInstanceKey) -> str | None:
        raise NotImplementedError


class MlflowRunLink(_RatchetLink):
    """The run's parent MLflow run (every stage from prepare on logs into it)."""

    name = "MLflow run"

    def url(self, own: dict[str, Any], results: dict[str, dict[str, Any]], ti_key: TaskInstanceKey) -> str | None:
        found = _first(own, results, "mlflow_run_id")
        return app_url(f"mlflow/runs/{quote(str(found['mlflow_run_id']), safe='')}") if found else None


class ModelVersionLink(_RatchetLink):
    """The version the run registered, on MLflow's registry page."""

    name = "Model version"

    def url(self, own: dict[str, Any], results: dict[str, dict[str, Any]], ti_key: TaskInstanceKey) -> str | None:
        from ml_tasks.release.model_overview import version_url

        found = _first(own, results, "registered_model", "version")
        return version_url(str(found["registered_model"]), str(found["version"])) if found else None


def data_docs_path(uri: str) -> str | None:
    """The path of a Data Docs page relative to `RATCHET_HOME/gx/data_docs`, or None when it lies elsewhere."""
    from ml_tasks.settings import get_settings

    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    root = get_settings().data_docs.resolve()
    try:
        return Path(unquote(parsed.path)).resolve().relative_to(root).as_posix()
    except ValueError:
        return None


class DataDocsLink(_RatchetLink):
    """The Great Expectations Data Docs of the drop the run validated, served by the plugin's app."""

    name = "Data Docs"

    def url(self, own: dict[str, Any], results: dict[str, dict[str, Any]], ti_key: TaskInstanceKey) -> str | None:
        found = _first(own, results, "data_docs_uri")
        relative = data_docs_path(str(found["data_docs_uri"])) if found else _failed_validation_docs(ti_key)
        return app_url(f"data-docs/{quote(validation_page(relative))}") if relative else None


def validation_page(index: str) -> str:
    """The run's validation result page when there is one (the site's index lists it only with CDN scripts)."""
    from ml_tasks.settings import get_settings

    folder = (get_settings().data_docs / index).parent
    pages = sorted((folder / "validations").glob("**/*.html"))
    return pages[-1].relative_to(get_settings().data_docs).as_posix() if pages else index


def _failed_validation_docs(ti_key: TaskInstanceKey) -> str | None:
    """A failed validation returns nothing, but its Data Docs are where a reader looks first: find them by run key."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ml_tasks.config import run_key_for
    from ml_tasks.settings import get_settings

    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == ti_key.dag_id, DagRun.run_id == ti_key.run_id))
        if dag_run is None:
            return None
        run_key = run_key_for(dag_run.data_interval_start, dag_run.run_id)
        dataset = (dag_run.conf or {}).get("dataset")
    root = get_settings().data_docs
    candidates = [root / dataset / run_key / "index.html"] if isinstance(dataset, str) else []
    candidates += sorted(root.glob(f"*/{run_key}/index.html"))
    for page in candidates:
        if page.is_file():
            return data_docs_path(page.as_uri())
    return None


LINKS = [MlflowRunLink(), ModelVersionLink(), DataDocsLink()]
