"""promote_model and rollback_model: move `champion` by hand, after a review or when something went wrong.

Wiring only: each task calls the `ml_tasks` function named as the task id
(`ml_tasks.release.registry.promote`, `.rollback`, `ml_tasks.compression.job.compress`).
Both moves are compare-and-set under the registry lock and are appended to the
registered model's alias history, like the nightly's.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from ml_tasks.compression.job import METHODS, CompressionConfig
from ml_tasks.constants import PROMOTION_POOL
from ml_tasks.datasets import DATASETS

MODELS = sorted({spec.registered_model for spec in DATASETS.values()})
VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"

PROMOTE_DOC = """
### Promote a reviewed version
Moves the `champion` alias of **model** to **version** after a reviewer has read
its model card (the version's description in the MLflow registry). Versions that
failed infra validation are refused. With **expected_champion** set, the move
happens only if `champion` still points there (compare-and-set), so a review of
stale numbers cannot promote over a newer champion. The move is appended to the
model's alias history with **reason**.
"""

ROLLBACK_DOC = """
### Roll back the champion
Moves the `champion` alias of **model** back to the champion before the current
one, or to **to_version**. Serving (`ratchet serve`) follows the alias. The move
is appended to the model's alias history.
"""

COMMON = {"owner": "ratchet", "retries": 0}


@dag(dag_id="promote_model", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     doc_md=PROMOTE_DOC, tags=["ratchet", "registry"], default_args=COMMON, max_active_runs=1,
     params={
         "model": Param(MODELS[0], type="string", enum=MODELS, title="Registered model",
                        description="The registered model whose champion alias moves."),
         "version": Param("1", type="string", pattern=VERSION_PATTERN, title="Version to promote",
                          description="A registered version of that model (its gate record and model card are in MLflow)."),
         "expected_champion": Param(None, type=["null", "string"], pattern=VERSION_PATTERN, title="Expected champion",
                                    description="Promote only if champion still points here (empty: no check)."),
         "reason": Param("approved after review", type="string", minLength=3, maxLength=300, title="Reason",
                         description="Kept in the alias history with the run id."),
     })
def promote_model() -> None:
    @task(multiple_outputs=False, pool=PROMOTION_POOL)
    def promote() -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from ratchet_airflow.failures import permanent_errors_fail_the_task

        from ml_tasks.release import registry

        context = get_current_context()
        params = context["params"]
        expected = params["expected_champion"] or None
        reason = f"{params['reason']} (promote_model run {context['dag_run'].run_id})"
        with permanent_errors_fail_the_task():
            return registry.promote(params["model"], params["version"], reason, expected_champion=expected,
                                    check_expected=bool(expected)).to_dict()

    promote()


@dag(dag_id="rollback_model", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     doc_md=ROLLBACK_DOC, tags=["ratchet", "registry"], default_args=COMMON, max_active_runs=1,
     params={
         "model": Param(MODELS[0], type="string", enum=MODELS, title="Registered model",
                        description="The registered model whose champion alias moves back."),
         "to_version": Param(None, type=["null", "string"], pattern=VERSION_PATTERN, title="Version to restore",
                             description="Empty: the champion before the current one."),
     })
def rollback_model() -> None:
    @task(multiple_outputs=False, pool=PROMOTION_POOL)
    def rollback() -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from ratchet_airflow.failures import permanent_errors_fail_the_task

        from ml_tasks.release import registry

        params = get_current_context()["params"]
        with permanent_errors_fail_the_task():
            return registry.rollback(params["model"], params["to_version"] or None).to_dict()

    rollback()


promote_model()
rollback_model()


COMPRESS_DOC = """
### Compress a model
Post-training dynamic-range, float16 and int8 quantization (TFLite, int8 with a
representative sample of the training data), magnitude pruning (Keras 3 masks)
and distillation into a smaller MLP, of a Keras version of **dataset**'s model
(default: the champion). Each result is measured against the original on the same
held-out rows (size, latency, accuracy) and registered as its own model
(`<model>_<method>`) only when it loses at most **max_accuracy_loss** accuracy.
"""


@dag(dag_id="compress_model", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     doc_md=COMPRESS_DOC, tags=["ratchet", "registry", "compression"], default_args=COMMON, max_active_runs=1,
     params={
         "dataset": Param(sorted(DATASETS)[0], type="string", enum=sorted(DATASETS), title="Data set",
                          description="The data set whose registered model is compressed (its held-out rows score it)."),
         "version": Param(None, type=["null", "string"], pattern=VERSION_PATTERN, title="Version",
                          description="Empty: the current champion."),
         "methods": Param(list(CompressionConfig.methods), type="array", title="Methods",
                          description="Each makes one registered model <model>_<method>, checked through pyfunc.",
                          items={"type": "string", "enum": list(METHODS)}, minItems=1, uniqueItems=True),
         "max_accuracy_loss": Param(CompressionConfig.max_accuracy_loss, type="number", minimum=0, maximum=0.5,
                                    title="Largest accuracy loss",
                                    description="A compressed model that loses more accuracy than this is not registered."),
     })
def compress_model() -> None:
    @task(multiple_outputs=False)
    def compress() -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from ratchet_airflow.failures import permanent_errors_fail_the_task

        from ml_tasks.compression import job

        params = get_current_context()["params"]
        with permanent_errors_fail_the_task():
            result = job.compress(params["dataset"], params["version"] or None, list(params["methods"]),
                                  float(params["max_accuracy_loss"]))
        return {k: result[k] for k in ("source_model", "source_version", "registered", "passed", "failed", "results")}

    compress()


compress_model()
