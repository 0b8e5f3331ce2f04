"""retrain__<name>: one retraining DAG per declared data set (datasets/<name>.yaml), generated at parse time.

Each has its declaration's schedule, source template, thresholds and tuning defaults as its Params' defaults, and
its own history; it can be paused on its own. It also runs when its landed-data Asset
(`ratchet://datasets/<name>/landed`) gets an event (a drop arrived: an upstream DAG's
outlet, or `POST /api/v2/assets/events`). A retrain request from `model_monitoring` starts nightly_retrain, which
retrains the model's data set. The tasks are `nightly_retrain`'s (`ratchet_airflow.retrain`).
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable
from ratchet_airflow.retrain import build_retrain_dag, retrain_params

from ml_tasks.datasets import declarations_dir, declared, landed_asset_uri

DAG_ID_PREFIX = "retrain__"


def _doc(name: str, description: str, schedule: str | None, template: str) -> str:
    when = f"on `{schedule}` (UTC)" if schedule else "only when triggered"
    source = f"`{template}`" if template else f"`RATCHET_HOME/landing/{name}/<date>/`"
    return (f"### Retrain {name}\n{description}\n\nDeclared in `{declarations_dir() / (name + '.yaml')}`. Runs "
            f"{when} and when a drop lands (Asset `{landed_asset_uri(name)}`). "
            f"Reads the drop from {source}; promotes only what passes the suite and the gate, as nightly_retrain.")


for spec in declared().values():
    landed = Asset(landed_asset_uri(spec.name))
    schedule = (AssetOrTimeSchedule(timetable=CronTriggerTimetable(spec.schedule, timezone="UTC"), assets=landed)
                if spec.schedule else landed)
    globals()[DAG_ID_PREFIX + spec.name] = build_retrain_dag(
        DAG_ID_PREFIX + spec.name,
        schedule=schedule,
        params=retrain_params(spec.name, [spec.name], spec),
        doc_md=_doc(spec.name, spec.description, spec.schedule, spec.source_template),
        tags=["ratchet", "training", f"dataset:{spec.name}"],
    )
