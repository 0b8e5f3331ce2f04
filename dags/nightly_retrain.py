"""nightly_retrain: sync → validate → drift → prepare → tune → train → evaluate → gate → register.

Any declared data set, chosen by the `dataset` Param; each declaration also has a DAG of its own
(`retrain__<name>`, dags/retrain_datasets.py). The wiring is `ratchet_airflow.retrain`: every task calls the
function of `ml_tasks.pipeline` named as the task id.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable
from ratchet_airflow.retrain import NIGHTLY_DOC, build_retrain_dag, retrain_params

from ml_tasks.datasets import declared
from ml_tasks.monitoring import monitored_models, retrain_request_uri

# model_monitoring updates one of these when a served champion drifts or decays: retraining starts early.
RETRAIN_REQUESTS = [Asset(retrain_request_uri(model)) for model in monitored_models()]
DATASET_CHOICES = sorted(declared())

nightly_retrain = build_retrain_dag(
    "nightly_retrain",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
                                 assets=AssetAny(*RETRAIN_REQUESTS)),
    params=retrain_params("acs_employment" if "acs_employment" in DATASET_CHOICES else DATASET_CHOICES[0],
                          DATASET_CHOICES),
    doc_md=NIGHTLY_DOC,
    tags=["ratchet", "training"],
)
