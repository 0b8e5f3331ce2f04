"""Names shared by every stage: aliases, tags, artifact and file names."""

from __future__ import annotations

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

# Tags on MLflow runs and registered model versions.
TAG_RUN_KEY = "ratchet.run_key"
TAG_DATASET = "ratchet.dataset"
TAG_FINGERPRINT = "ratchet.data_fingerprint"
TAG_VALIDATION = "ratchet.validation"
TAG_AIRFLOW_DAG_ID = "ratchet.airflow.dag_id"
TAG_AIRFLOW_RUN_ID = "ratchet.airflow.run_id"
TAG_GATE_DECISION = "ratchet.gate.decision"
TAG_GATE_REASONS = "ratchet.gate.reasons"
TAG_PREVIOUS_CHAMPION = "ratchet.previous_champion_version"
TAG_ALIAS_HISTORY = "ratchet.alias_history"
TAG_DRIFT = "ratchet.drift"
TAG_INFRA_VALIDATION = "ratchet.infra_validation"
TAG_REVIEW = "ratchet.review"
# A reviewer's answers at approve_promotion (the first moves champion; the second, also the answer when nobody
# answers in time, keeps it). TAG_REVIEW records the answer on the version.
REVIEW_APPROVE, REVIEW_REJECT = "Approve", "Reject"
REVIEW_OPTIONS = (REVIEW_APPROVE, REVIEW_REJECT)
# Explanations (ml_tasks.explain): the explainer of a version ({"method", "output_space", "exact", "tolerance",
# "baseline", "additivity_error"}, JSON) and its top features by mean |attribution| on the held-out rows (JSON list).
TAG_EXPLAINER = "ratchet.explainer"
TAG_TOP_FEATURES = "ratchet.top_features"

# Files inside a run's folders.
MANIFEST_FILE = "manifest.json"
RAW_DIR = "raw"
TRAIN_FILE = "train.parquet"
VALIDATION_SPLIT_FILE = "val.parquet"
TEST_FILE = "test.parquet"
TEST_RAW_FILE = "test_raw.parquet"
TRANSFORM_FILE = "transform.json"
PREPARATION_FILE = "preparation.json"
MODEL_FILE = "model.keras"
RUN_REPORT_FILE = "run_report.json"
BLESSING_FILE = "blessing.json"
VALIDATION_RESULT_FILE = "validation_result.json"
# Statistics of the training split, stored with the model; what later drops are compared with.
DRIFT_REFERENCE_FILE = "drift_reference.json"
DRIFT_REPORT_FILE = "drift_report.json"
STAGE_RECORD_DIR = "stages"

# MLflow artifact paths and names.
MLFLOW_MODEL_NAME = "model"
MLFLOW_REPORT_DIR = "reports"
MLFLOW_DATA_DIR = "data"
MODEL_CARD_FILE = "model_card.md"
INFRA_VALIDATION_FILE = "infra_validation.json"
LEARNING_CURVE_FILE = "learning_curve.png"
# Under the run's evaluation artifacts: attributions of the held-out rows, their summary and plots.
EXPLANATION_ARTIFACT_DIR = "evaluation/explanation"
# {"explainer": {...}, "rows", "global": [{"feature", "mean_abs_attribution", "mean_attribution"}, ...]}: the
# version's global attributions, the reference that the gate and attribution-drift monitoring rank against.
GLOBAL_ATTRIBUTIONS_FILE = "global_attributions.json"
# How many top features NDCG compares (SageMaker Clarify's default for attribution drift), and the top features a
# version's tag, the model card and the Models view name.
ATTRIBUTION_TOP_K = 10
TOP_FEATURES_SHOWN = 5
# Attribution drift in monitoring: served rows of a window explained with the champion's explainer, at most this many
# (a seeded uniform sample above it): explaining costs per row (integrated gradients: a forward and backward pass per
# step), while a window may hold `MonitorConfig.max_rows` rows.
MONITORING_ATTRIBUTION_ROWS = 500
MONITORING_ATTRIBUTION_SEED = 0

DATA_FILE_SUFFIXES = (".csv", ".parquet", ".pq")

# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "calibration_error", "rmse", "mae", "mape"})
EVALUATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier", "calibration_error")
# The metrics of each task kind (keys are ml_tasks.datasets.TASK_KINDS); binary's are EVALUATION_METRICS.
# Multiclass ROC AUC is one-vs-rest, macro-averaged; regression's MAPE is left out where a true value is 0.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": EVALUATION_METRICS,
    "multiclass": ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "log_loss", "roc_auc",
                   "calibration_error"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
# Every metric of any task kind, each once (threshold Params and the decay metric choose among these).
ALL_METRICS = tuple(dict.fromkeys(m for metrics in TASK_METRICS.values() for m in metrics))
# What a declaration gets when it names no primary metric.
DEFAULT_PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
# Robustness measured in `evaluate`: accuracy with Gaussian noise on the numerics (in units of each feature's std) and
# under FGSM steps on the standardised inputs (Keras models); the gate's robustness thresholds name these.
NOISE_LEVELS = (0.1, 0.25, 0.5)
FGSM_EPSILONS = (0.05, 0.1, 0.25)
ROBUSTNESS_MEASURES = ("clean", *(f"noise_{level:g}" for level in NOISE_LEVELS),
                       *(f"fgsm_{epsilon:g}" for epsilon in FGSM_EPSILONS))

# An Airflow Connection id in a DAG Param (the trigger form and the REST API refuse anything else), and the
# Connections the DAGs' storage Params name by default.
CONN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,250}$"
DEFAULT_S3_CONN_ID = "ratchet_s3"
DEFAULT_HDFS_CONN_ID = "ratchet_hdfs"
# The Spark master of data sets on the spark engine, as the Apache Spark provider defines the Connection.
DEFAULT_SPARK_CONN_ID = "spark_default"
# A storage location in a DAG Param: a local folder, an S3 prefix or an HDFS path.
STORAGE_URI_PATTERN = r"^(file|s3|hdfs)://.+"

# Airflow queues and pools. Celery workers of the production profile consume the queues (docker-compose.yml declares
# the same); `ml_tasks.ops.airflow_cli.init_airflow` creates the pools.
DEFAULT_QUEUE = "default"
# Training tasks: the queue that GPU hosts' Celery workers consume, and the pool whose slots count their GPUs.
GPU_QUEUE = "gpu"
GPU_POOL = "ratchet_gpu"
# Tasks that move `champion` run in this pool of one slot: two runs never race the compare-and-set.
PROMOTION_POOL = "ratchet_promotion"

# Multi-host training (`train_workers` > 1): at most this many hosts, and the rendezvous through which the mapped
# `train_worker` tasks form one MultiWorkerMirroredStrategy cluster.
MAX_TRAIN_WORKERS = 8
# How often each worker rewrites its rendezvous entry. The worker's address and ports, how long it waits for all N
# to register and after how long without a new heartbeat a worker counts as gone are environment variables
# (`ml_tasks.environment_variables`: RATCHET_WORKER_HOST, RATCHET_WORKER_PORTS, RATCHET_RENDEZVOUS_TIMEOUT_S,
# RATCHET_RENDEZVOUS_STALE_S; a shared file system's attribute cache must be shorter than the last).
RENDEZVOUS_HEARTBEAT_S = 2.0
MULTIWORKER_DIR = "multiworker"

# Every MLflow server we start: MLflow 3's server also starts a job runner (huey) for its GenAI jobs, which Ratchet
# does not use. Off, the server is two processes instead of ten and listens in 13-14 s instead of 20-22 s on 2 cores.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
