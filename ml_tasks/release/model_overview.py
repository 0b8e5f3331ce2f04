"""What the Airflow UI's "Models" view shows, read from the MLflow registry alone.

Per registered model: the champion and the challenger with the key metrics of
the run that made them, the gate decision of recent versions, each version's
top features by mean |attribution| (and the attribution shift that held it,
if one did), and the alias history that `registry` keeps in a tag (MLflow
keeps none). Read-only, and free of Airflow, so the CLI or a test can call it
as the plugin does.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from ml_tasks.constants import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    TAG_AIRFLOW_DAG_ID,
    TAG_AIRFLOW_RUN_ID,
    TAG_GATE_DECISION,
    TAG_GATE_REASONS,
    TAG_INFRA_VALIDATION,
    TAG_REVIEW,
    TAG_TOP_FEATURES,
)
from ml_tasks.release.gate import ATTRIBUTION_REASON
from ml_tasks.release.registry import history_from_tags

log = logging.getLogger(__name__)

KEY_METRICS = ("roc_auc", "accuracy", "f1", "log_loss", "brier")
# The key metrics of each task kind (binary's are KEY_METRICS); evaluation tags the run with its task.
TASK_KEY_METRICS = {"binary": KEY_METRICS, "multiclass": ("f1_macro", "accuracy", "roc_auc", "log_loss"),
                    "regression": ("rmse", "mae", "r2", "mape")}
TAG_TASK = "ratchet.task"
RECENT_VERSIONS = 10
# The newest alias moves the view lists (the registry keeps them all).
ALIAS_MOVES_SHOWN = 50


def mlflow_ui_url() -> str:
    """Where people open MLflow's UI: `RATCHET_MLFLOW_UI_URL` (the tracking store itself may be a file)."""
    from ml_tasks.environment_variables import RATCHET_MLFLOW_UI_URL

    return RATCHET_MLFLOW_UI_URL.get().rstrip("/")


def run_url(experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_url()}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(run_id, safe='')}"


def version_url(name: str, version: str) -> str:
    return f"{mlflow_ui_url()}/#/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}"


def _key_metrics(metrics: dict[str, float], names: tuple[str, ...] = KEY_METRICS) -> dict[str, float]:
    """The held-out metrics of a run (`test.<metric>` as evaluation logs them; a bare name as a fallback)."""
    found = {}
    for name in names:
        value = metrics.get(f"test.{name}", metrics.get(name))
        if value is not None:
            found[name] = float(value)
    return found


def _top_features(tag: str | None) -> list[str]:
    """TAG_TOP_FEATURES' JSON list; empty for versions registered before it, or a tag that is not a list."""
    try:
        value = json.loads(tag or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _version_summary(client: Any, name: str, version: Any, aliases: list[str],
                     runs: dict[str, Any]) -> dict[str, Any]:
    tags = dict(version.tags or {})
    run_id = version.run_id or ""
    if run_id and run_id not in runs:
        try:
            runs[run_id] = client.get_run(run_id)
        except Exception as exc:  # a deleted run must not hide the model from the page
            log.warning("%s v%s: run %s unreadable: %s", name, version.version, run_id, exc)
            runs[run_id] = None
    run = runs.get(run_id)
    task = str((run.data.tags or {}).get(TAG_TASK, "binary")) if run is not None else "binary"
    reasons = [r for r in tags.get(TAG_GATE_REASONS, "").split("; ") if r]
    held = tags.get(TAG_GATE_DECISION) == "keep_champion"
    return {
        "task": task,
        "version": str(version.version),
        "aliases": sorted(aliases),
        "created_at": int(version.creation_timestamp or 0),
        "run_id": run_id,
        "metrics": _key_metrics(dict(run.data.metrics), TASK_KEY_METRICS.get(task, KEY_METRICS))
        if run is not None else {},
        "gate_decision": tags.get(TAG_GATE_DECISION, ""),
        "gate_reasons": reasons,
        "top_features": _top_features(tags.get(TAG_TOP_FEATURES)),
        # Kept out by the attribution check: its reason (a failed check's; a passed one's reason is not a hold).
        "attribution_hold": next((r for r in reasons if r.startswith(ATTRIBUTION_REASON)), "") if held else "",
        "review": tags.get(TAG_REVIEW, ""),
        "infra_validation": tags.get(TAG_INFRA_VALIDATION, ""),
        "airflow": {"dag_id": tags.get(TAG_AIRFLOW_DAG_ID, ""), "run_id": tags.get(TAG_AIRFLOW_RUN_ID, "")},
        "mlflow_url": version_url(name, str(version.version)),
        "run_url": run_url(run.info.experiment_id, run_id) if run is not None else "",
    }


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    """Asked one by one: aliases may be missing from search results (mlflow#16734)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def model_overview(client: Any, name: str, recent: int = RECENT_VERSIONS) -> dict[str, Any]:
    """One registered model: champion, challenger, the `recent` newest versions and the alias history."""
    model = client.get_registered_model(name)
    history = history_from_tags(model.tags)
    aliases = {alias: _alias_version(client, name, alias) for alias in (CHAMPION_ALIAS, CHALLENGER_ALIAS)}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        if version is not None:
            by_version.setdefault(version, []).append(alias)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    runs: dict[str, Any] = {}
    wanted = {str(v.version) for v in versions[:recent]} | set(by_version)
    summaries = {str(v.version): _version_summary(client, name, v, by_version.get(str(v.version), []), runs)
                 for v in versions if str(v.version) in wanted}
    shown = summaries.get(aliases[CHAMPION_ALIAS] or "") or next(iter(summaries.values()), None)
    task = shown["task"] if shown else "binary"
    return {
        "name": name,
        "task": task,
        "key_metrics": list(TASK_KEY_METRICS.get(task, KEY_METRICS)),
        "champion": summaries.get(aliases[CHAMPION_ALIAS] or ""),
        "challenger": summaries.get(aliases[CHALLENGER_ALIAS] or ""),
        "versions": [summaries[str(v.version)] for v in versions[:recent]],
        "version_count": len(versions),
        "alias_history": list(reversed(history[-ALIAS_MOVES_SHOWN:])),
        "mlflow_url": f"{mlflow_ui_url()}/#/models/{quote(name, safe='')}",
    }


def overview(recent: int = RECENT_VERSIONS) -> dict[str, Any]:
    """Every registered model of the tracking store, by name, for the Models view and its JSON endpoint."""
    from ml_tasks import tracking

    client = tracking.client()
    names = sorted(m.name for m in client.search_registered_models())
    return {"mlflow_ui_url": mlflow_ui_url(), "key_metrics": list(KEY_METRICS),
            "models": [model_overview(client, name, recent) for name in names]}
