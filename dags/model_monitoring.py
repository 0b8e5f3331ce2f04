"""model_monitoring: drift and live performance of each served champion, and a retrain request when they slip.

Wiring only: each task calls the `ml_tasks.monitoring` function named as the task id (`monitor`,
`request_retrain`); alerts are callbacks from `ratchet_airflow.alerts`, imported when they run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable, Param, TaskGroup, dag, task

from ml_tasks.config import DriftThresholds
from ml_tasks.constants import CONN_ID_PATTERN
from ml_tasks.environment_variables import RATCHET_MONITORING_SCHEDULE
from ml_tasks.monitoring import DecayConfig, MonitorConfig, monitored_models, retrain_request_uri
from ml_tasks.params import object_param_schema, param_schema

MODELS = monitored_models()
# Cron of the monitoring runs (UTC); each run judges the `window_hours` before its scheduled time.
SCHEDULE = RATCHET_MONITORING_SCHEDULE.get()

DOC = f"""
### Model monitoring
Every hour (cron `{SCHEDULE}` UTC, set by `RATCHET_MONITORING_SCHEDULE`), for each registered model
(`{"`, `".join(MODELS)}`):

* **monitor** reads the window's inference log (`RATCHET_HOME/inference/<model>/date=YYYY-MM-DD/`, written by
  `ratchet serve`; the `window_hours` before the run's time), measures it against the drift reference stored
  with the champion (PSI, KS, Jensen-Shannon per feature, prediction shift against the training labels:
  `drift_thresholds`), and scores the rows whose labels have arrived in `RATCHET_HOME/feedback/<model>/`
  (`request_id,label`) against `decay_min_value` and the champion's evaluated `decay_metric` less
  `decay_max_drop`. It explains up to 500 of the window's rows with the champion's explainer and ranks their
  attributions against the champion's at evaluation (NDCG@10): attribution drift below the data set's
  `explanation.monitoring_min_ndcg`. Too few rows (`min_rows`, `min_labeled_rows`), or a champion without
  attributions from its evaluation, means no judgement, said so.
  The numbers go to MLflow (experiment `ratchet-monitoring`, one run per model, one point per window) with a
  plot over time; a JSON record per window goes to `RATCHET_HOME/reports/monitoring/<model>/`.
* **request_retrain** runs only when drift (input, prediction or attribution) or decay was found: it updates the Asset
  `ratchet://models/<model>/retrain-request` (the reasons in the event's extra), which `nightly_retrain` is
  also scheduled on, so retraining starts early; not again within `retrain_cooldown_hours` of the model's last
  request (a model the gate would not replace is not retrained every hour). Its success callback alerts: a WARNING log line always,
  e-mail through `smtp_conn_id` to `alert_emails` and Slack through `slack_conn_id` when those Connections
  exist (skipped with a log line when not).
"""

def _alert_retrain(context: Any) -> None:
    from ratchet_airflow.alerts import retrain_requested

    retrain_requested(context)


def _alert_failure(context: Any) -> None:
    from ratchet_airflow.alerts import task_failed

    task_failed(context)


def _window() -> tuple[str, str]:
    """The window this run judges: the `window_hours` before its logical date (a manual run: its run_after)."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    end = context.get("logical_date") or context["dag_run"].run_after
    hours = int(context["params"]["window_hours"])
    return (end - timedelta(hours=hours)).isoformat(), end.isoformat()


def _monitor(model: str) -> dict[str, Any]:
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException
    from ratchet_airflow.failures import permanent_errors_fail_the_task

    from ml_tasks import monitoring

    params = get_current_context()["params"]
    if model not in params["models"]:
        raise AirflowSkipException(f"{model} is not among this run's models {params['models']}")
    start, end = _window()
    with permanent_errors_fail_the_task():
        return monitoring.monitor(model, start, end, MonitorConfig.from_params(params))


def _last_request_end(context: Any, asset: Asset) -> Any | None:
    """The end of the window that last requested a retrain of this model (the Asset's latest event)."""
    from datetime import datetime

    for event in context["inlet_events"][asset].ascending(False).limit(1):
        end = (event.extra or {}).get("window_end")
        return datetime.fromisoformat(end) if end else event.timestamp
    return None


def _request_retrain(model: str, result: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    from ml_tasks import monitoring

    context = get_current_context()
    asset = Asset(retrain_request_uri(model))
    cooldown = timedelta(hours=int(context["params"]["retrain_cooldown_hours"]))
    request = monitoring.request_retrain(model, result, cooldown, lambda: _last_request_end(context, asset))
    if request.extra is None:
        raise AirflowSkipException(request.skipped)
    context["outlet_events"][asset].extra = request.extra
    return {**result, "asset_uri": asset.uri}


@dag(
    dag_id="model_monitoring",
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["ratchet", "monitoring"],
    default_args={"owner": "ratchet", "retries": 1, "retry_delay": timedelta(seconds=30),
                  "on_failure_callback": _alert_failure},
    params={
        "models": Param(MODELS, type="array", items={"type": "string", "enum": MODELS}, minItems=1, uniqueItems=True,
                        title="Models", description="Registered models to monitor in this run."),
        "window_hours": Param(1, type="integer", minimum=1, maximum=168, title="Window (hours)",
                              description="The run judges the served rows of this many hours before its time."),
        # Defaults, types, bounds and choices of the monitoring knobs: declared once, in ml_tasks.monitoring.
        "min_rows": Param(**param_schema(MonitorConfig, "min_rows"), title="Least rows for drift",
                          description="Fewer served rows in the window: drift is not judged."),
        "max_rows": Param(**param_schema(MonitorConfig, "max_rows"), title="Rows read at most",
                          description="Above it, a seeded uniform sample of the window."),
        "min_labeled_rows": Param(**param_schema(DecayConfig, "min_labeled_rows"), title="Least labeled rows",
                                  description="Fewer rows with feedback labels: live performance is not judged."),
        "decay_metric": Param(**param_schema(DecayConfig, "metric"), title="Decay metric",
                              description="The live metric judged (log_loss, brier, calibration_error: lower is better)."),
        "decay_min_value": Param(**param_schema(DecayConfig, "min_value"), title="Decay floor",
                                 description="Live metric below this (lower-is-better: above) is decay. null: off."),
        "decay_max_drop": Param(**param_schema(DecayConfig, "max_drop"), title="Largest drop",
                                description="Live metric this much worse than the champion's evaluated value is "
                                            "decay. null: off."),
        "drift_thresholds": Param(
            **object_param_schema(DriftThresholds), title="Drift thresholds",
            description="Per-feature limits, as in nightly_retrain: PSI, KS (numeric), Jensen-Shannon (categorical).",
        ),
        "retrain_cooldown_hours": Param(
            12, type="integer", minimum=0, maximum=720, title="Retrain cooldown (hours)",
            description="No second retrain request for a model within this many hours of its last one (the drift "
                        "stays in the record and MLflow). 0: request every time.",
        ),
        "alert_emails": Param([], type="array", items={"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$"},
                              title="Alert e-mail recipients",
                              description="Written to when the SMTP Connection exists (empty: no e-mail)."),
        "smtp_conn_id": Param("smtp_default", type="string", pattern=CONN_ID_PATTERN,
                              title="SMTP Connection id", description="Skipped with a log line when it does not exist."),
        "slack_conn_id": Param("ratchet_slack", type="string", pattern=CONN_ID_PATTERN,
                               title="Slack Connection id",
                               description="Incoming-webhook URL in its password (or host); skipped when missing."),
    },
)
def model_monitoring() -> None:
    for model in MODELS:
        with TaskGroup(group_id=model):
            asset = Asset(retrain_request_uri(model))

            @task(multiple_outputs=False, task_id="monitor")
            def monitor_model(model: str = model) -> dict[str, Any]:
                return _monitor(model)

            @task(multiple_outputs=False, task_id="request_retrain", inlets=[asset], outlets=[asset],
                  on_success_callback=_alert_retrain, retries=0)
            def request_retrain(result: dict[str, Any], model: str = model) -> dict[str, Any]:
                return _request_retrain(model, result)

            request_retrain(monitor_model())


model_monitoring()
