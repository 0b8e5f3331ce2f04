"""Score the candidate and the current champion on the same held-out rows.

Both models are loaded through the one checked loader serving uses and get
the raw test rows, each applying its own fitted transform. Runs in a fresh
process, since loading a Keras model imports its backend.

Every task kind: the held-out target is encoded from its original values
(`ml_tasks.data.target.encode`), each model's prediction frame is turned back
into scores (`ml_tasks.release.pyfunc.scores_from_frame`) and scored with the
task's metrics (TASK_METRICS). The naive baseline (the training split's class
prior, or its mean) is scored on the same rows, with the paired bootstrap of
the candidate's improvement over it on the primary metric: the gate's floor for
a first champion.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks.config import RunContext
from ml_tasks.constants import (
    EXPLANATION_ARTIFACT_DIR,
    FGSM_EPSILONS,
    NOISE_LEVELS,
    TASK_METRICS,
    TEST_RAW_FILE,
    TRAIN_FILE,
)
from ml_tasks.isolation import run_isolated

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)


# Allowed when an invariant feature is shuffled: mean max |change in class probability| (classification) or mean
# |change in prediction| / the target's std (regression).
INVARIANCE_TOLERANCE = 0.05
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
    task: str = "binary"
    # The naive baseline's metrics on the same rows, and the paired interval of the candidate's improvement over it.
    baseline: dict[str, float] | None = None
    baseline_intervals: dict[str, dict[str, Any]] | None = None
    # Classification: precision and recall per class (the class's text as key).
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    # Robustness measures not taken for this model, with the reason (never counted as passed).
    robustness_skipped: dict[str, str] = field(default_factory=dict)
    # Why it decides (ml_tasks.release.explanation.explain_evaluation): explainer, additivity error, rows, global
    # attributions of the candidate and the champion on the same rows, their NDCG, and what was skipped and why.
    explanation: dict[str, Any] = field(default_factory=dict)

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


def _outputs(result: Any, spec: DatasetSpec) -> tuple[Any, Any]:
    """(scores, predicted original values) of what a predict callable answered: a prediction frame (the contract) or,
    from older callers, bare scores (binary positive-class probabilities, a class matrix, or regression values)."""
    import numpy as np
    import pandas as pd

    from ml_tasks.release.pyfunc import DECISION_THRESHOLD, scores_from_frame

    if isinstance(result, pd.DataFrame):
        return scores_from_frame(result, spec), result["prediction"].to_numpy()
    scores = np.asarray(result, dtype="float64")
    if not spec.is_classification:
        return scores.reshape(-1), scores.reshape(-1)
    classes = np.asarray(list(spec.classes), dtype=object)
    if scores.ndim == 1:
        return scores, classes[(scores >= DECISION_THRESHOLD).astype(int)]
    return scores, classes[scores.argmax(axis=1)]


def _class_matrix(scores: Any) -> Any:
    import numpy as np

    p = np.asarray(scores, dtype="float64")
    return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


def behavioural_tests(predict: Any, features: pd.DataFrame, spec: DatasetSpec, seed: int = 0,
                      target_std: float | None = None) -> list[dict[str, Any]]:
    """Made-With-ML style tests of a model's behaviour on raw rows: invariances and easy cases.

    `predict` answers a prediction frame (or bare scores). Invariance: mean max |change in class probability|
    (classification) or mean |change in prediction| / `target_std` (regression). Easy cases name an original
    class value, compared with `prediction`; a regression target has none to compare, so they are skipped.
    """
    import numpy as np

    from ml_tasks.data.transform import category_text

    rng = np.random.default_rng(seed)
    base, predicted = _outputs(predict(features), spec)
    scale = float(target_std) if target_std and np.isfinite(target_std) and target_std > 0 else \
        float(np.std(base) or 1.0)
    results = []
    for feature in spec.invariant_features:
        shuffled = features.copy()
        shuffled[feature] = shuffled[feature].to_numpy()[rng.permutation(len(features))]
        moved, _ = _outputs(predict(shuffled), spec)
        if spec.is_classification:
            change = float(np.mean(np.abs(_class_matrix(moved) - _class_matrix(base)).max(axis=1)))
            what = "mean max |change in class probability|"
        else:
            change = float(np.mean(np.abs(np.asarray(moved) - np.asarray(base))) / scale)
            what = "mean |change in prediction| / target std"
        passed = change <= INVARIANCE_TOLERANCE
        results.append({"test": f"invariant to {feature}", "kind": "invariance", "value": round(change, 6),
                        "threshold": INVARIANCE_TOLERANCE, "passed": passed, "status": _status(passed),
                        "detail": f"{what} {change:.4f} when {feature} is shuffled"})
    for name, query, label, least in spec.easy_cases:
        required = name in spec.required_behaviour
        if not spec.is_classification:
            results.append({"test": name, "kind": "easy_case", "value": None, "threshold": least,
                            "passed": False if required else None, "status": "failed" if required else "skipped",
                            "required": required,
                            "detail": "an easy case names an expected class; a regression target has none"
                                      + (" (required)" if required else ": skipped")})
            continue
        mask = features.eval(query).to_numpy(dtype=bool)
        rows = int(mask.sum())
        if rows < MIN_EASY_ROWS:
            # Never recorded as passed: skipped, or failed when the data set requires the test to run.
            results.append({"test": name, "kind": "easy_case", "value": None, "threshold": least,
                            "passed": False if required else None, "status": "failed" if required else "skipped",
                            "required": required,
                            "detail": (f"required, but only {rows} held-out rows match {query!r} (needs {MIN_EASY_ROWS})"
                                       if required else
                                       f"skipped: {rows} held-out rows match {query!r} (needs {MIN_EASY_ROWS})")})
            continue
        expected = category_text(label)
        accuracy = float(np.mean([category_text(v) == expected for v in predicted[mask]]))
        results.append({"test": name, "kind": "easy_case", "value": round(accuracy, 6), "threshold": least,
                        "passed": accuracy >= least, "status": _status(accuracy >= least),
                        "detail": f"share predicted {expected!r}: {accuracy:.3f} on {rows} rows where {query}"})
    return results


def _status(passed: bool) -> str:
    return "passed" if passed else "failed"


def noise_robustness(predict: Any, features: pd.DataFrame, labels: Any, spec: DatasetSpec, seed: int = 0) -> dict[str, float]:
    """Accuracy (classification; `labels` are codes) or R² (regression) when numerics get Gaussian noise (in units of
    their std) and as many categoricals are resampled. `predict` answers a prediction frame or bare scores."""
    import numpy as np
    import pandas as pd

    from ml_tasks.release.metrics import regression_metrics

    rng = np.random.default_rng(seed)

    def score(rows: pd.DataFrame) -> float:
        scores, _ = _outputs(predict(rows), spec)
        if not spec.is_classification:
            return regression_metrics(labels, scores, quiet=True)["r2"]
        matrix = _class_matrix(scores)
        codes = (matrix[:, 1] >= 0.5).astype(int) if matrix.shape[1] == 2 else matrix.argmax(axis=1)
        return float(np.mean(codes == np.asarray(labels).astype(int)))

    out = {"clean": score(features)}
    for level in NOISE_LEVELS:
        noisy = features.copy()
        for column in spec.numeric_features:
            values = noisy[column].astype("float64")
            moved = values + rng.normal(scale=level * float(values.std() or 1.0), size=len(noisy))
            # An integer column stays integer (rounded): the model's signature refuses floats there, as it would
            # refuse them from a client.
            integer = pd.api.types.is_integer_dtype(noisy[column].dtype)
            noisy[column] = np.rint(moved).astype(noisy[column].dtype) if integer else moved
        for column in spec.categorical_features:
            swap = rng.random(len(noisy)) < level
            noisy.loc[swap, column] = rng.choice(noisy[column].to_numpy(), size=int(swap.sum()))
        out[f"noise_{level:g}"] = score(noisy)
    return out


def fgsm_robustness(python_model: Any, features: pd.DataFrame, labels: Any,
                    epsilons: tuple[float, ...] = FGSM_EPSILONS) -> dict[str, float]:
    """Accuracy under the fast gradient sign method (Goodfellow et al.) for Keras models under TensorFlow.

    The step moves each standardised numeric input by epsilon in the direction
    that increases the loss most; one-hot columns stay as they are, since a
    fractional category is no input a real row can have. Empty for other
    families, backends and task kinds (binary only; the noise test covers every family and task).
    """
    network = getattr(python_model, "network", None)
    transform = getattr(python_model, "transform", None)
    if network is None or transform is None or getattr(python_model, "task", "binary") != "binary":
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
    import numpy as np
    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.data import target
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release import metrics
    from ml_tasks.release.explanation import explain_evaluation
    from ml_tasks.release.model_loading import load_checked
    from ml_tasks.release.pyfunc import scores_from_frame

    run_ctx = RunContext.from_dict(ctx)
    spec = get_dataset(run_ctx.dataset)
    task, classes = spec.task, list(spec.classes)
    tracking.configure()
    test = pd.read_parquet(run_ctx.prepared_dir / TEST_RAW_FILE)
    features = test[list(spec.features)]
    labels = target.encode(test[spec.target], spec, where=f"{TEST_RAW_FILE} of {spec.name}")
    names = list(TASK_METRICS[task]) if task != "binary" else list(metrics.BOOTSTRAP_METRICS)

    # Both models through the loader serving uses: a version that is not our pyfunc is refused, not unpickled.
    model_files = tempfile.TemporaryDirectory(prefix="ratchet-evaluate-")  # kept while the models score
    candidate_model, _ = load_checked(candidate_model_uri, Path(model_files.name) / "candidate")

    def predict_frame(rows: pd.DataFrame) -> Any:
        return candidate_model.predict(rows)

    def predict(rows: pd.DataFrame) -> Any:
        return scores_from_frame(candidate_model.predict(rows), spec)

    candidate_p = predict(features)
    candidate = metrics.task_metrics(task, labels, candidate_p, classes)
    per_class = metrics.per_class_metrics(labels, candidate_p, classes) if spec.is_classification else {}
    slices = metrics.slice_metrics(features, labels, candidate_p, spec.slices, task=task, classes=classes)
    baseline_p = naive_baseline(run_ctx, spec, len(labels))
    baseline = metrics.task_metrics(task, labels, baseline_p, classes, quiet=True)
    baseline_intervals = {m: i.to_dict() for m, i in metrics.paired_bootstrap(
        labels, candidate_p, baseline_p, [spec.primary_metric], task=task, classes=classes).items()}
    champion = champion_error = intervals = champion_model = None
    champion_slices: dict[str, dict[str, Any]] = {}
    if champion_version is not None:
        uri = f"models:/{spec.registered_model}/{champion_version}"
        try:
            champion_model, _ = load_checked(uri, Path(model_files.name) / "champion")
            champion_p = scores_from_frame(champion_model.predict(features), spec)
            champion = metrics.task_metrics(task, labels, champion_p, classes)
            champion_slices = metrics.slice_metrics(features, labels, champion_p, spec.slices, task=task, classes=classes)
            intervals = {m: i.to_dict() for m, i in metrics.paired_bootstrap(
                labels, candidate_p, champion_p, names, task=task, classes=classes).items()}
        except Exception as exc:  # a champion that cannot score today's rows is reported, not hidden
            champion_error = f"{uri} could not score the held-out rows: {type(exc).__name__}: {exc}"
            champion_model = None
            log.error("%s", champion_error)
    target_std = None if spec.is_classification else float(np.std(labels))
    behaviour = behavioural_tests(predict_frame, features, spec, target_std=target_std)
    robustness = noise_robustness(predict_frame, features, labels, spec)
    robustness.update(fgsm_robustness(candidate_model.unwrap_python_model(), features, labels))
    robustness_skipped = {}
    if not any(k.startswith("fgsm_") for k in robustness):
        robustness_skipped["fgsm"] = (f"FGSM is measured for Keras binary classifiers under TensorFlow only; this "
                                      f"candidate is a {task} {_family(candidate_model)} model: skipped, not passed")
    sample = features.sample(min(IMPORTANCE_ROWS, len(features)), random_state=0)
    importance = metrics.permutation_importance(predict, sample, labels[features.index.get_indexer(sample.index)],
                                                list(spec.features), repeats=2, metric=spec.primary_metric,
                                                task=task, classes=classes)
    robustness_name = "r2" if task == "regression" else "accuracy"
    explained_files = tempfile.TemporaryDirectory(prefix="ratchet-explanation-")
    explanation = explain_evaluation(candidate_model, predict, champion_model, features, spec,
                                     Path(explained_files.name), champion_version, champion_error)
    with mlflow.start_run(run_id=parent_run_id), tempfile.TemporaryDirectory() as tmp, explained_files:
        mlflow.log_metrics({f"test.{k}": v for k, v in candidate.items()})
        mlflow.log_metrics({f"baseline_test.{k}": v for k, v in baseline.items()})
        for name, values in per_class.items():
            mlflow.log_metrics({f"test.{k}.{_metric_key(name)}": v for k, v in values.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test.{k}": v for k, v in champion.items()})
        for name, values in slices.items():
            mlflow.log_metrics({f"slice.{_metric_key(name)}.{k}": v for k, v in values.items() if k != "rows"})
        mlflow.log_metrics({f"robustness.{k}.{robustness_name}": v for k, v in robustness.items()})
        if explanation["additivity_error"] is not None:
            mlflow.log_metric("explain.additivity_error_max", explanation["additivity_error"])
        if explanation["shift"] is not None:
            mlflow.log_metric("explain.ndcg_vs_champion", explanation["shift"]["ndcg"])
        mlflow.set_tag("ratchet.task", task)
        folder = Path(tmp)
        metrics.save_plots(labels, candidate_p, folder, "candidate", importance, task=task, classes=classes,
                           metric=spec.primary_metric)
        pd.DataFrame(importance).to_csv(folder / "permutation_importance.csv", index=False)
        (folder / "behaviour.json").write_text(json.dumps(behaviour, indent=2))
        mlflow.log_artifacts(str(folder), artifact_path=EVALUATION_ARTIFACT_DIR)
        mlflow.log_artifacts(explained_files.name, artifact_path=EXPLANATION_ARTIFACT_DIR)
    log.info("%s candidate on %s held-out rows: %s; naive baseline: %s; champion v%s: %s; behaviour: %s", task,
             len(test), candidate, baseline, champion_version, champion,
             [(b["test"], b["status"]) for b in behaviour])
    return EvaluationResult(
        rows=len(test), candidate=candidate, champion=champion, champion_version=champion_version,
        champion_error=champion_error, intervals=intervals, slices=slices, champion_slices=champion_slices,
        behaviour=behaviour, robustness=robustness, importance=importance[:10], task=task, baseline=baseline,
        baseline_intervals=baseline_intervals, per_class=per_class, robustness_skipped=robustness_skipped,
        explanation=explanation,
    ).to_dict()


def naive_baseline(run_ctx: RunContext, spec: DatasetSpec, rows: int) -> Any:
    """The naive baseline's scores for `rows` held-out rows, from the label column of the prepared train split
    (int codes, or values for regression): its class prior, or its mean."""
    import pandas as pd

    train = pd.read_parquet(run_ctx.prepared_dir / TRAIN_FILE, columns=[spec.target])[spec.target].to_numpy()
    return baseline_scores(train, spec, rows)


def baseline_scores(train_labels: Any, spec: DatasetSpec, rows: int) -> Any:
    """Constant scores: the class prior of `train_labels` (binary: its positive rate) or their mean (regression)."""
    import numpy as np

    if not spec.is_classification:
        values = np.asarray(train_labels, dtype="float64")
        return np.full(rows, float(np.nanmean(values)))
    codes = np.asarray(train_labels).astype(int)
    codes = codes[codes >= 0]
    prior = np.bincount(codes, minlength=len(spec.classes)).astype("float64")
    prior = prior / prior.sum() if prior.sum() else np.full(len(spec.classes), 1.0 / len(spec.classes))
    if spec.task == "binary":
        return np.full(rows, prior[1])
    return np.tile(prior, (rows, 1))


def _family(model: Any) -> str:
    try:
        inner = model.unwrap_python_model()
    except Exception:
        return "compressed"
    return "Keras" if getattr(inner, "network", None) is not None else "scikit-learn"


def _metric_key(slice_name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: keep a slice's name readable."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", slice_name.replace("=", "_"))
