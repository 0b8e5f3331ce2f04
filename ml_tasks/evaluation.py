"""Score the candidate and the current champion on the same held-out rows.

Both models are loaded through pyfunc exactly as serving loads them and get
the raw test rows, each applying its own fitted transform. Runs in a fresh
process, since loading a Keras model imports its backend.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ml_tasks.config import RunContext
from ml_tasks.constants import TEST_RAW_FILE
from ml_tasks.isolation import run_isolated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    champion_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classification_metrics(y_true: Any, probability: Any, threshold: float = 0.5) -> dict[str, float]:
    """The gate's metrics for a binary classifier."""
    import numpy as np
    from sklearn import metrics

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(probability, dtype="float64"), 1e-7, 1 - 1e-7)
    predicted = (p >= threshold).astype(int)
    return {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y, p)) if len(set(y.tolist())) > 1 else float("nan"),
        "log_loss": float(metrics.log_loss(y, p, labels=[0, 1])),
    }


def evaluate(ctx: RunContext, candidate_model_uri: str, champion_version: str | None, parent_run_id: str) -> EvaluationResult:
    result = run_isolated(
        "ml_tasks.evaluation:evaluate_in_process",
        {"ctx": ctx.to_dict(), "candidate_model_uri": candidate_model_uri,
         "champion_version": champion_version, "parent_run_id": parent_run_id},
    )
    return EvaluationResult(**result)


def evaluate_in_process(ctx: dict[str, str], candidate_model_uri: str, champion_version: str | None,
                        parent_run_id: str) -> dict[str, Any]:
    import mlflow
    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset

    run_ctx = RunContext.from_dict(ctx)
    spec = get_dataset(run_ctx.dataset)
    tracking.configure()
    test = pd.read_parquet(run_ctx.prepared_dir / TEST_RAW_FILE)
    features, labels = test[list(spec.features)], test[spec.target]

    candidate_scores = mlflow.pyfunc.load_model(candidate_model_uri).predict(features)
    candidate = classification_metrics(labels, candidate_scores["probability"])
    champion = None
    champion_error = None
    if champion_version is not None:
        uri = f"models:/{spec.registered_model}/{champion_version}"
        try:
            champion_scores = mlflow.pyfunc.load_model(uri).predict(features)
            champion = classification_metrics(labels, champion_scores["probability"])
        except Exception as exc:  # a champion that cannot score today's rows is reported, not hidden
            champion_error = f"{uri} could not score the held-out rows: {type(exc).__name__}: {exc}"
            log.error("%s", champion_error)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"test.{k}": v for k, v in candidate.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test.{k}": v for k, v in champion.items()})
    log.info("candidate on %s held-out rows: %s; champion v%s: %s", len(test), candidate, champion_version, champion)
    return EvaluationResult(rows=len(test), candidate=candidate, champion=champion,
                            champion_version=champion_version, champion_error=champion_error).to_dict()
