"""Score the candidate and the current champion on the same held-out rows.

Both models are loaded through the one checked loader serving uses and get
the raw test rows, each applying its own fitted transform. Runs in a fresh
process, since loading a Keras model imports its backend.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks.config import RunContext
from ml_tasks.constants import FGSM_EPSILONS, NOISE_LEVELS, TEST_RAW_FILE
from ml_tasks.isolation import run_isolated

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)


INVARIANCE_TOLERANCE = 0.05  # mean |change in probability| allowed when an invariant feature is shuffled
MIN_EASY_ROWS = 10
IMPORTANCE_ROWS = 5000
EVALUATION_ARTIFACT_DIR = "evaluation"


@dataclass(frozen=True)
class EvaluationResult:
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    champion_error: str | None
    # Paired bootstrap intervals of the candidate's improvement over the champion, per metric.
    intervals: dict[str, dict[str, Any]] | None = None
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    champion_slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    behaviour: list[dict[str, Any]] = field(default_factory=list)
    robustness: dict[str, float] = field(default_factory=dict)
    importance: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(ctx: RunContext, candidate_model_uri: str, champion_version: str | None, parent_run_id: str) -> EvaluationResult:
    """Score candidate and champion in a fresh process when either is a Keras model, else here."""
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release.pyfunc import needs_tensorflow

    uris = [candidate_model_uri]
    if champion_version is not None:
        uris.append(f"models:/{get_dataset(ctx.dataset).registered_model}/{champion_version}")
    result = run_isolated(
        "ml_tasks.release.evaluation:evaluate_in_process",
        {"ctx": ctx.to_dict(), "candidate_model_uri": candidate_model_uri,
         "champion_version": champion_version, "parent_run_id": parent_run_id},
        fresh_process=any(needs_tensorflow(uri) for uri in uris),
    )
    return EvaluationResult(**result)


def behavioural_tests(predict: Any, features: pd.DataFrame, spec: DatasetSpec, seed: int = 0) -> list[dict[str, Any]]:
    """Made-With-ML style tests of a model's behaviour on raw rows: invariances and easy cases."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = np.asarray(predict(features))
    results = []
    for feature in spec.invariant_features:
        shuffled = features.copy()
        shuffled[feature] = shuffled[feature].to_numpy()[rng.permutation(len(features))]
        change = float(np.mean(np.abs(np.asarray(predict(shuffled)) - base)))
        passed = change <= INVARIANCE_TOLERANCE
        results.append({"test": f"invariant to {feature}", "kind": "invariance", "value": round(change, 6),
                        "threshold": INVARIANCE_TOLERANCE, "passed": passed, "status": _status(passed),
                        "detail": f"mean |change in probability| {change:.4f} when {feature} is shuffled"})
    for name, query, label, least in spec.easy_cases:
        mask = features.eval(query).to_numpy(dtype=bool)
        rows = int(mask.sum())
        if rows < MIN_EASY_ROWS:
            # Never recorded as passed: skipped, or failed when the data set requires the test to run.
            required = name in spec.required_behaviour
            results.append({"test": name, "kind": "easy_case", "value": None, "threshold": least,
                            "passed": False if required else None, "status": "failed" if required else "skipped",
                            "required": required,
                            "detail": (f"required, but only {rows} held-out rows match {query!r} (needs {MIN_EASY_ROWS})"
                                       if required else
                                       f"skipped: {rows} held-out rows match {query!r} (needs {MIN_EASY_ROWS})")})
            continue
        accuracy = float(np.mean((base[mask] >= 0.5).astype(int) == label))
        results.append({"test": name, "kind": "easy_case", "value": round(accuracy, 6), "threshold": least,
                        "passed": accuracy >= least, "status": _status(accuracy >= least),
                        "detail": f"accuracy {accuracy:.3f} on {rows} rows where {query}"})
    return results


def _status(passed: bool) -> str:
    return "passed" if passed else "failed"


def noise_robustness(predict: Any, features: pd.DataFrame, labels: Any, spec: DatasetSpec, seed: int = 0) -> dict[str, float]:
    """Accuracy when numerics get Gaussian noise (in units of their std) and as many categoricals are resampled."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.asarray(labels).astype(int)
    out = {"clean": float(np.mean((np.asarray(predict(features)) >= 0.5) == y))}
    for level in NOISE_LEVELS:
        noisy = features.copy()
        for column in spec.numeric_features:
            values = noisy[column].astype("float64")
            noisy[column] = values + rng.normal(scale=level * float(values.std() or 1.0), size=len(noisy))
        for column in spec.categorical_features:
            swap = rng.random(len(noisy)) < level
            noisy.loc[swap, column] = rng.choice(noisy[column].to_numpy(), size=int(swap.sum()))
        out[f"noise_{level:g}"] = float(np.mean((np.asarray(predict(noisy)) >= 0.5) == y))
    return out


def fgsm_robustness(python_model: Any, features: pd.DataFrame, labels: Any,
                    epsilons: tuple[float, ...] = FGSM_EPSILONS) -> dict[str, float]:
    """Accuracy under the fast gradient sign method (Goodfellow et al.) for Keras models under TensorFlow.

    The step moves each standardised numeric input by epsilon in the direction
    that increases the loss most; one-hot columns stay as they are, since a
    fractional category is no input a real row can have. Empty for other
    families and backends (the noise test covers every family).
    """
    network = getattr(python_model, "network", None)
    transform = getattr(python_model, "transform", None)
    if network is None or transform is None:
        return {}  # checked before importing Keras: a scikit-learn candidate must not pay TensorFlow's import
    import keras
    import numpy as np

    if keras.backend.backend() != "tensorflow":
        return {}
    import tensorflow as tf

    x = transform.apply(features)
    y = np.asarray(labels, dtype="float32").reshape(-1, 1)
    numeric = np.zeros(x.shape[1], dtype="float32")
    numeric[: len(transform.numeric)] = 1.0
    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = keras.losses.binary_crossentropy(y, tf.cast(network(inputs, training=False), "float32"))
    direction = np.sign(tape.gradient(loss, inputs).numpy()) * numeric
    out = {}
    for epsilon in epsilons:
        predicted = network.predict(x + epsilon * direction, batch_size=4096, verbose=0).reshape(-1) >= 0.5
        out[f"fgsm_{epsilon:g}"] = float(np.mean(predicted == (y.reshape(-1) == 1)))
    return out


def evaluate_in_process(ctx: dict[str, str], candidate_model_uri: str, champion_version: str | None,
                        parent_run_id: str) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    import mlflow
    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release import metrics
    from ml_tasks.release.model_loading import load_checked

    run_ctx = RunContext.from_dict(ctx)
    spec = get_dataset(run_ctx.dataset)
    tracking.configure()
    test = pd.read_parquet(run_ctx.prepared_dir / TEST_RAW_FILE)
    features, labels = test[list(spec.features)], test[spec.target].to_numpy()

    # Both models through the loader serving uses: a version that is not our pyfunc is refused, not unpickled.
    model_files = tempfile.TemporaryDirectory(prefix="ratchet-evaluate-")  # kept while the models score
    candidate_model, _ = load_checked(candidate_model_uri, Path(model_files.name) / "candidate")

    def predict(rows: pd.DataFrame) -> Any:
        return candidate_model.predict(rows)["probability"].to_numpy()

    candidate_p = predict(features)
    candidate = metrics.classification_metrics(labels, candidate_p)
    slices = metrics.slice_metrics(features, labels, candidate_p, spec.slices)
    champion = champion_error = intervals = None
    champion_slices: dict[str, dict[str, Any]] = {}
    if champion_version is not None:
        uri = f"models:/{spec.registered_model}/{champion_version}"
        try:
            champion_model, _ = load_checked(uri, Path(model_files.name) / "champion")
            champion_p = champion_model.predict(features)["probability"].to_numpy()
            champion = metrics.classification_metrics(labels, champion_p)
            champion_slices = metrics.slice_metrics(features, labels, champion_p, spec.slices)
            intervals = {m: i.to_dict() for m, i in metrics.paired_bootstrap(
                labels, candidate_p, champion_p, metrics.BOOTSTRAP_METRICS).items()}
        except Exception as exc:  # a champion that cannot score today's rows is reported, not hidden
            champion_error = f"{uri} could not score the held-out rows: {type(exc).__name__}: {exc}"
            log.error("%s", champion_error)
    behaviour = behavioural_tests(predict, features, spec)
    robustness = noise_robustness(predict, features, labels, spec)
    robustness.update(fgsm_robustness(candidate_model.unwrap_python_model(), features, labels))
    sample = features.sample(min(IMPORTANCE_ROWS, len(features)), random_state=0)
    importance = metrics.permutation_importance(predict, sample, labels[features.index.get_indexer(sample.index)],
                                                list(spec.features), repeats=2)
    with mlflow.start_run(run_id=parent_run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics({f"test.{k}": v for k, v in candidate.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test.{k}": v for k, v in champion.items()})
        for name, values in slices.items():
            mlflow.log_metrics({f"slice.{_metric_key(name)}.{k}": v for k, v in values.items() if k != "rows"})
        mlflow.log_metrics({f"robustness.{k}.accuracy": v for k, v in robustness.items()})
        folder = Path(tmp)
        metrics.save_plots(labels, candidate_p, folder, "candidate", importance)
        pd.DataFrame(importance).to_csv(folder / "permutation_importance.csv", index=False)
        (folder / "behaviour.json").write_text(json.dumps(behaviour, indent=2))
        mlflow.log_artifacts(str(folder), artifact_path=EVALUATION_ARTIFACT_DIR)
    log.info("candidate on %s held-out rows: %s; champion v%s: %s; behaviour: %s", len(test), candidate, champion_version,
             champion, [(b["test"], b["status"]) for b in behaviour])
    return EvaluationResult(
        rows=len(test), candidate=candidate, champion=champion, champion_version=champion_version,
        champion_error=champion_error, intervals=intervals, slices=slices, champion_slices=champion_slices,
        behaviour=behaviour, robustness=robustness, importance=importance[:10],
    ).to_dict()


def _metric_key(slice_name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: keep a slice's name readable."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", slice_name.replace("=", "_"))
