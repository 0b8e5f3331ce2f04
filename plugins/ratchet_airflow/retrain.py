"""The retraining DAG, built for each use: `nightly_retrain` (any declared data set, chosen by a Param) and one
`retrain__<name>` per declaration (`dags/retrain_datasets.py`), each with its own schedule, Params and history.

Wiring only: every task calls the function of `ml_tasks.pipeline` named as the task id, as
`(ctx, config, *inputs)`; `ml_tasks.pipeline` imports its stage modules only when a task runs, so
parsing a DAG file built here stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, task

from ml_tasks import pipeline
from ml_tasks.config import (
    METRIC_THRESHOLDS_SCHEMA,
    ROBUSTNESS_THRESHOLDS_SCHEMA,
    AugmentConfig,
    DriftConfig,
    DriftThresholds,
    GateConfig,
    RunConfig,
    TrainConfig,
    TuneConfig,
)
from ml_tasks.constants import (
    CONN_ID_PATTERN,
    DEFAULT_HDFS_CONN_ID,
    DEFAULT_S3_CONN_ID,
    DEFAULT_SPARK_CONN_ID,
    GPU_POOL,
    GPU_QUEUE,
    PROMOTION_POOL,
    REVIEW_OPTIONS,
    REVIEW_REJECT,
    STORAGE_URI_PATTERN,
)
from ml_tasks.params import object_param_schema, param_schema

if TYPE_CHECKING:
    from ml_tasks.datasets import DatasetSpec

NIGHTLY_DOC = """
### Nightly retraining
Retrains the declared data set's model every night at 02:00 UTC, **or earlier** when `model_monitoring`
updates a model's retrain-request Asset (`ratchet://models/<model>/retrain-request`: drift or decay of the
served champion), and promotes it
to the `champion` alias in the MLflow registry **only** when the drop passed its
Great Expectations suite and the candidate clears the gate's thresholds against
the current champion on the same held-out rows.

* **sync** copies the drop (file://, s3:// or hdfs://; default `RATCHET_HOME/landing/<dataset>/<date>/`)
  into staging, incrementally, with a manifest written last.
* **validate** runs the suite from `expectations/suites/`; a failure stops the run and links Data Docs.
* **drift** compares the drop with the statistics stored with the champion's training data (PSI, KS,
  Jensen-Shannon per feature, label shift); every distance is recorded in MLflow; drift above the thresholds
  warns, or stops the run when `drift_action` is `stop`.
* **prepare** cleans, splits (stratified, seeded) and fits the transform on the training split.
* **tune_plan** creates the run's Optuna study (warm-started with the champion's parameters when it is of the
  same `model_family`); **tune_slot** runs `tuning_workers` mapped slots that share the study (every trial a
  nested MLflow run, pruned on its per-epoch validation AUC); **tune** picks the best trial and logs the plots.
* **train** trains the best configuration of the family (Keras in a fresh process; checkpointed, early stopping).
  With `train_workers` N > 1 (keras_mlp only), **train_plan** maps N **train_worker** tasks (queue `gpu`, pool
  `ratchet_gpu`, one slot each) that find each other by rendezvous in the run's model folder, form one
  `MultiWorkerMirroredStrategy` cluster (`TF_CONFIG` built at run time; worker 0 is the chief) and train with a
  custom `strategy.run` loop; **train** then logs the chief's model exactly as a single-host one. With N = 1 the
  mapping is empty, train_worker is skipped and **train** trains on its own host as before.
* **evaluate** scores candidate and champion through pyfunc on the same rows.
* **gate** writes the blessing record; **register** registers the version, moves `challenger`, and `champion` on a pass.
* **report** writes `run_report.json` whatever happened, and fails the run if it stopped early.

A run started by a retrain request has no data interval: it retrains the data set of the model that asked
(the latest request when several did), with the other Params at their defaults, on the drop of the day it
starts (`RATCHET_HOME/landing/<dataset>/<date>/`); its outputs are keyed by its run id
(`asset_triggered__<time>`), so it never overwrites a nightly run's and a rerun of it reuses its own.
"""

REVIEW_BODY = """
The gate **blessed** this candidate and it passed infra validation; `require_approval` asks a person to decide.

* Model card, metrics with confidence intervals, slices and plots: the version's page in the MLflow registry
  (**{{ ti.xcom_pull(task_ids='register')['registered_model'] }}**, version
  **{{ ti.xcom_pull(task_ids='register')['version'] }}**); the same card is in
  `{{ ti.xcom_pull(task_ids='register')['model_card_uri'] }}`.
* Gate: {{ ti.xcom_pull(task_ids='gate')['reasons'] | join('; ') }}

**Approve** moves `champion` to this version (compare-and-set: only if the champion is still
v{{ ti.xcom_pull(task_ids='register')['expected_champion'] }}). **Reject** keeps the champion; the version stays `challenger`.
"""

def _run(params: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The run's context (partition key, Airflow ids) and typed config from its Params (`_params()` unless given)."""
    from airflow.sdk import get_current_context

    from ml_tasks.config import RunConfig, RunContext, run_key_for

    context = get_current_context()
    dag_run = context["dag_run"]
    params = params if params is not None else _params()
    run_ctx = RunContext(
        dataset=params["dataset"], run_key=run_key_for(context.get("data_interval_start"), dag_run.run_id),
        dag_id=dag_run.dag_id, run_id=dag_run.run_id,
    )
    return run_ctx, RunConfig.from_params(params)


def _params() -> dict[str, Any]:
    """The run's Params, with the data set of the retrain request that started it, if one did."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    params = dict(context["params"])
    if context.get("data_interval_start") is None and (requested := _requested_dataset(context)) is not None:
        params["dataset"] = requested
    return params


def _drop_date() -> str:
    """The day whose landing folder sync reads by default: the data interval's start, else the run's date."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    day = context.get("data_interval_start") or context.get("logical_date") or context["dag_run"].run_after
    return day.strftime("%Y-%m-%d")


def _storage_options() -> Any:
    """Endpoints and credentials of the run's storage Connections (Params `s3_conn_id`, `hdfs_conn_id`)."""
    from airflow.sdk import get_current_context

    from ratchet_airflow.connections import storage_options

    params = get_current_context()["params"]
    return storage_options(params.get("s3_conn_id", DEFAULT_S3_CONN_ID), params.get("hdfs_conn_id", DEFAULT_HDFS_CONN_ID))


def _requested_dataset(context: Any) -> str | None:
    """The data set whose retrain-request Asset started this run (the latest event), or None."""
    from ml_tasks.monitoring import dataset_for_asset_uri

    latest: tuple[Any, str] | None = None
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            dataset = dataset_for_asset_uri(event.asset.uri)
            if dataset is not None and (latest is None or event.timestamp > latest[0]):
                latest = (event.timestamp, dataset)
    return latest[1] if latest else None


def _review_answer() -> str | None:
    """The reviewer's answer at approve_promotion ("Approve" or "Reject"), or None when nobody was asked."""
    from airflow.sdk import get_current_context

    answer = get_current_context()["ti"].xcom_pull(task_ids="approve_promotion") or {}
    return (answer.get("chosen_options") or [None])[0]


def _spark_options() -> Any:
    """The Spark master from the Connection `spark_default` (only data sets on the spark engine use it)."""
    from ratchet_airflow.connections import spark_options

    return spark_options(DEFAULT_SPARK_CONN_ID)


def _stage(function: Callable[..., Any], *inputs: Any) -> Any:
    """`function(ctx, config, *inputs)`: permanent errors (bad data, bad config) fail the task without retries."""
    from ratchet_airflow.failures import permanent_errors_fail_the_task

    with permanent_errors_fail_the_task():
        # Inside: a Param combination the config refuses (ConfigError) fails the first task, unretried.
        run_ctx, config = _run()
        return function(run_ctx, config, *inputs)


def _data_stage(function: Callable[..., Any], synced: dict[str, Any]) -> Any:
    """validate, drift or prepare: `function(ctx, config, synced, spark)` in the task, or, with RATCHET_SPARK_SUBMIT
    and a drop on the spark engine, the same function as a Spark application submitted through the Apache Spark
    provider (`ratchet_airflow.spark_submit`)."""
    from ml_tasks import environment_variables as env
    from ratchet_airflow.failures import permanent_errors_fail_the_task

    spark = _spark_options()
    if not env.RATCHET_SPARK_SUBMIT.get():
        return _stage(function, synced, spark)
    from ratchet_airflow.spark_submit import submit_stage

    with permanent_errors_fail_the_task():
        params = _params()
        run_ctx, config = _run(params)
        if pipeline.engine(run_ctx, synced) != "spark":
            return function(run_ctx, config, synced, spark)
        return submit_stage(function.__name__, DEFAULT_SPARK_CONN_ID, run_ctx, params, synced, spark)


def _declared(spec: DatasetSpec | None, name: str) -> dict[str, float] | None:
    """A threshold Param's default: the declaration's thresholds (a data set's own DAG), else null (nightly_retrain:
    the chosen data set's declared thresholds apply)."""
    if spec is None:
        return None
    return {"absolute_thresholds": spec.absolute_thresholds, "change_thresholds": spec.change_thresholds,
            "slice_thresholds": spec.slice_thresholds, "robustness_thresholds": spec.robustness_thresholds}[name]


def _thresholds_schema(spec: DatasetSpec | None) -> dict[str, Any]:
    """A metric -> threshold Param's schema: any task's metrics, or only those of the declaration's task."""
    if spec is None:
        return METRIC_THRESHOLDS_SCHEMA
    from ml_tasks.constants import TASK_METRICS

    return {**METRIC_THRESHOLDS_SCHEMA, "propertyNames": {"enum": list(TASK_METRICS[spec.task])}}


def _tuning_param(spec: DatasetSpec | None, config: type, field: str, param: str) -> dict[str, Any]:
    """A tuning knob's Param schema, its default taken from the declaration's `tuning` when it names the knob."""
    schema = param_schema(config, field)
    if spec is not None and param in spec.tuning:
        schema["default"] = spec.tuning[param]
    return schema


# A data set's own DAG shows these Params (and the tuning knobs its declaration sets); every other knob takes
# nightly_retrain's default (RunConfig.from_params). Each Param is deep-copied into every task at parse time, so a
# short form keeps 50 generated DAGs parsing in well under a second.
DATASET_DAG_PARAMS = ("dataset", "source_uri", "absolute_thresholds", "change_thresholds")


def retrain_params(dataset: str, choices: list[str], spec: DatasetSpec | None = None) -> dict[str, Param]:
    """The trigger form: `dataset` among `choices`. With `spec` (a data set's own DAG): the declaration's
    thresholds and tuning defaults, and only the Params a declaration sets (DATASET_DAG_PARAMS)."""
    params = _all_params(dataset, choices, spec)
    if spec is None:
        return params
    declared = {"slice_thresholds": spec.slice_thresholds, "robustness_thresholds": spec.robustness_thresholds}
    return {name: param for name, param in params.items()
            if name in DATASET_DAG_PARAMS or name in spec.tuning or declared.get(name)}


def _all_params(dataset: str, choices: list[str], spec: DatasetSpec | None) -> dict[str, Param]:
    return {
        "dataset": Param(
            dataset, type="string", enum=choices, title="Data set",
            description="A declared data set (datasets/<name>.yaml): its target, features, suite, thresholds and "
                        "registered model.",
        ),
        "source_uri": Param(
            None, type=["null", "string"], title="Source folder", maxLength=2048, pattern=STORAGE_URI_PATTERN,
            description="Folder of CSV/Parquet files: file://, s3://bucket/prefix or hdfs://namenode:port/path. "
                        "Empty: RATCHET_HOME/landing/<dataset>/<date>/.",
        ),
        "s3_conn_id": Param(DEFAULT_S3_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="S3 Connection id",
                            description="Airflow Connection of the S3 endpoint (missing: the AWS environment)."),
        "hdfs_conn_id": Param(DEFAULT_HDFS_CONN_ID, type="string", pattern=CONN_ID_PATTERN, title="HDFS Connection id",
                              description="Airflow Connection of the WebHDFS endpoint (missing: the environment)."),
        # Defaults, types, bounds and choices of the run's knobs: declared once, in ml_tasks.config.
        "tuning_trials": Param(**_tuning_param(spec, TuneConfig, "trials", "tuning_trials"), title="Tuning trials",
                               description="Optuna trials (budget) for this run."),
        "tuning_epochs": Param(**_tuning_param(spec, TuneConfig, "epochs", "tuning_epochs"), title="Epochs per trial",
                               description="Training epochs of each trial; the pruner may stop a trial sooner."),
        "model_family": Param(**_tuning_param(spec, TuneConfig, "family", "model_family"), title="Model family",
                              description="keras_mlp (Keras 3 MLP), or scikit-learn logistic_regression, "
                                          "random_forest, hist_gradient_boosting."),
        "tuning_sampler": Param(**_tuning_param(spec, TuneConfig, "sampler", "tuning_sampler"), title="Search strategy",
                                description="tpe: Bayesian (Tree-structured Parzen Estimator); random; grid: the "
                                            "family's declared grid (at most tuning_trials points)."),
        "tuning_pruner": Param(**_tuning_param(spec, TuneConfig, "pruner", "tuning_pruner"), title="Pruner",
                               description="Stops bad trials early from their per-epoch validation AUC: median, "
                                           "hyperband, or none."),
        "tuning_workers": Param(**_tuning_param(spec, TuneConfig, "workers", "tuning_workers"), title="Parallel trial slots",
                                description="Mapped tune_slot tasks sharing one stored study (Airflow workers)."),
        "train_workers": Param(
            **param_schema(TrainConfig, "workers"), title="Training hosts",
            description=f"keras_mlp only: mapped train_worker tasks (queue {GPU_QUEUE}, one {GPU_POOL} slot each) "
                        "that train one model with MultiWorkerMirroredStrategy; the pool needs this many free slots "
                        "at once. 1: train on one host.",
        ),
        "max_epochs": Param(**_tuning_param(spec, TrainConfig, "max_epochs", "max_epochs"), title="Max training epochs",
                            description="Early stopping usually ends sooner."),
        "absolute_thresholds": Param(
            _declared(spec, "absolute_thresholds"), title="Absolute thresholds", **_thresholds_schema(spec),
            description="Metric → minimum (errors and losses: maximum) the candidate must reach on held-out rows. "
                        "Empty (null): the data set's declared thresholds.",
        ),
        "change_thresholds": Param(
            _declared(spec, "change_thresholds"), title="Change thresholds", **_thresholds_schema(spec),
            description="Metric → least improvement over the champion on the same rows. Empty (null): the data set's "
                        "declared thresholds; both {}: never promote.",
        ),
        "adversarial_epsilon": Param(
            **param_schema(TrainConfig, "adversarial_epsilon"), title="Adversarial training (FGSM epsilon)",
            description="Keras MLP only: train every batch also on FGSM-perturbed copies of its rows, this far "
                        "(standardised units) along the loss gradient's sign (0: off).",
        ),
        "augment_noise_copies": Param(
            **param_schema(AugmentConfig, "noise_copies"), title="Noise copies (augmentation)",
            description="Copies of each training row with Gaussian noise on the numerics (0: off). Training split only.",
        ),
        "augment_noise_scale": Param(**param_schema(AugmentConfig, "noise_scale"), title="Noise scale",
                                     description="The noise's standard deviation, as a fraction of each feature's."),
        "smote_ratio": Param(
            **param_schema(AugmentConfig, "smote_ratio"), title="SMOTE ratio (augmentation)",
            description="Oversample the minority class (interpolating between neighbours) up to this ratio of the "
                        "majority class (0: off). Training split only.",
        ),
        "cv_folds": Param(**_tuning_param(spec, RunConfig, "cv_folds", "cv_folds"), title="Cross-validation folds",
                          description="Stratified k-fold ids of the training rows for tuning (0: none; else 2..10)."),
        "robustness_thresholds": Param(
            _declared(spec, "robustness_thresholds"), title="Robustness thresholds", **ROBUSTNESS_THRESHOLDS_SCHEMA,
            description="Perturbation → least accuracy of the candidate under it (noise_0.1/0.25/0.5: Gaussian noise "
                        "of that many std on the numerics; fgsm_0.05/0.1/0.25: FGSM steps, Keras models only; clean). "
                        "A more accurate but brittle candidate is kept out.",
        ),
        "slice_thresholds": Param(
            _declared(spec, "slice_thresholds"), title="Slice thresholds", **_thresholds_schema(spec),
            description="Metric → minimum (log_loss: maximum) on every declared slice of the held-out rows.",
        ),
        "require_confidence": Param(
            **param_schema(GateConfig, "require_confidence"), title="Require confidence",
            description="A change threshold passes only when the lower bound of the 95% paired bootstrap interval "
                        "of the improvement clears it.",
        ),
        "require_approval": Param(
            **param_schema(RunConfig, "require_approval"), title="Require a reviewer's approval",
            description="A blessed candidate waits in the Airflow UI (approve_promotion) for a reviewer who has read "
                        "its model card in MLflow before champion moves.",
        ),
        "drift_action": Param(
            **param_schema(DriftConfig, "action"), title="On drift",
            description="What drift above the thresholds does: warn (log, record, continue) or stop the run.",
        ),
        "drift_thresholds": Param(
            **object_param_schema(DriftThresholds), title="Drift thresholds",
            description="Per-feature limits: population stability index, Kolmogorov-Smirnov (numeric), "
                        "Jensen-Shannon distance (categorical).",
        ),
        }


def build_retrain_dag(dag_id: str, schedule: Any, params: dict[str, Param], doc_md: str, tags: list[str]) -> Any:
    """One retraining DAG: the `dataset` Param decides, or the model whose retrain request started the run
    (a per-declaration DAG listens only to its own model's request, so it never switches data set)."""

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        doc_md=doc_md,
        tags=tags,
        default_args={"owner": "ratchet", "retries": 1, "retry_delay": timedelta(seconds=15)},
        params=params,
    )
    def retrain() -> None:
        # multiple_outputs=False on every task that returns a dict: Airflow infers True from `-> dict`, and then also
        # pushes each key as its own XCom, one Execution API call each (15 for gate: 0.35 s). Every consumer reads
        # the whole return value (tests/dags/test_dag_integrity.py checks this for all DAGs).
        @task(multiple_outputs=False)
        def sync() -> dict[str, Any]:
            return _stage(pipeline.sync, _drop_date(), _storage_options())

        @task(multiple_outputs=False)
        def validate(synced: dict[str, Any]) -> dict[str, Any]:
            return _data_stage(pipeline.validate, synced)

        @task(multiple_outputs=False)
        def drift(synced: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
            return _data_stage(pipeline.drift, synced)

        @task(multiple_outputs=False)
        def prepare(synced: dict[str, Any], drifted: dict[str, Any]) -> dict[str, Any]:
            return _data_stage(pipeline.prepare, synced)

        @task
        def tune_plan(prepared: dict[str, Any]) -> list[int]:
            return _stage(pipeline.tune_plan)

        @task(multiple_outputs=False)
        def tune_slot(prepared: dict[str, Any], slot: int) -> dict[str, Any]:
            return _stage(pipeline.tune_slot, prepared, slot)

        @task(multiple_outputs=False)
        def tune(prepared: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.tune, prepared)

        @task
        def train_plan(prepared: dict[str, Any]) -> list[int]:
            """Worker indices 0..N-1 for N > 1 hosts; [] for one host, which skips train_worker.

            Its own (cheap) task: a mapped task's length is that of an upstream's whole return value (Airflow keeps
            no length per `multiple_outputs` key), so `tune`'s dict cannot carry the list.
            """
            return _stage(pipeline.train_plan)

        # On the production profile a Celery worker on a GPU host consumes the `gpu` queue; the pool counts its GPUs.
        @task(multiple_outputs=False, queue=GPU_QUEUE, pool=GPU_POOL)
        def train_worker(prepared: dict[str, Any], tuned: dict[str, Any], index: int) -> dict[str, Any]:
            from airflow.sdk import get_current_context

            return _stage(pipeline.train_worker, prepared, tuned, index, f"try{get_current_context()['ti'].try_number}")

        # none_failed: runs after a skipped (empty) train_worker mapping, not after a failed worker.
        @task(multiple_outputs=False, queue=GPU_QUEUE, pool=GPU_POOL, trigger_rule="none_failed")
        def train(prepared: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.train, prepared, tuned)

        @task(multiple_outputs=False)
        def evaluate(prepared: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.evaluate, prepared, trained)

        @task(multiple_outputs=False)
        def gate(prepared: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.gate, prepared, evaluated)

        @task(multiple_outputs=False)
        def register(prepared: dict[str, Any], validated: dict[str, Any], trained: dict[str, Any],
                     gated: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.register, prepared, validated, trained, gated)

        @task.branch
        def review_route(registered: dict[str, Any]) -> str:
            """A blessed version waits for a reviewer when the run asks for one; otherwise straight to promote."""
            return _stage(pipeline.review_route, registered)

        # HITLOperator, not ApprovalOperator: a "Reject" from ApprovalOperator skips `promote`, and the version
        # would never record the reviewer's answer. Here `promote` always runs and records it (REVIEW_OPTIONS).
        approve_promotion = HITLOperator(
            task_id="approve_promotion",
            options=list(REVIEW_OPTIONS),
            subject="Promote {{ ti.xcom_pull(task_ids='register')['registered_model'] }} "
                    "v{{ ti.xcom_pull(task_ids='register')['version'] }} to champion?",
            body=REVIEW_BODY,
            defaults=REVIEW_REJECT,
            multiple=False,
            response_timeout=timedelta(days=3),
        )
        no_review_needed = EmptyOperator(task_id="no_review_needed")

        @task(multiple_outputs=False, trigger_rule="none_failed_min_one_success", pool=PROMOTION_POOL)
        def promote(registered: dict[str, Any]) -> dict[str, Any]:
            return _stage(pipeline.promote, registered, _review_answer() if registered["needs_review"] else None)

        @task(multiple_outputs=False, trigger_rule="all_done", retries=0)
        def report() -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            outcome = _stage(pipeline.report, _review_answer())
            if not outcome["completed"]:
                raise AirflowFailException(f"run stopped at {outcome['stopped_at']}: {outcome['error']}")
            return outcome

        synced = sync()
        validated = validate(synced)
        prepared = prepare(synced, drift(synced, validated))
        tuned = tune(prepared)
        tune_slot.partial(prepared=prepared).expand(slot=tune_plan(prepared)) >> tuned
        workers = train_worker.partial(prepared=prepared, tuned=tuned).expand(index=train_plan(prepared))
        trained = train(prepared, tuned)
        workers >> trained
        gated = gate(prepared, evaluate(prepared, trained))
        registered = register(prepared, validated, trained, gated)
        route = review_route(registered)
        promoted = promote(registered)
        route >> [approve_promotion, no_review_needed]
        [approve_promotion, no_review_needed] >> promoted
        promoted >> report()

    return retrain()
