"""Monitoring of the served champion: input drift and live performance, one window at a time.

`ratchet serve` logs every served row (inputs, probability, prediction, request id) to the inference
log; labels that arrive later land in a feedback folder as (request_id, label); the format of both and
their reader live in `ml_tasks.serving.inference_log`. `monitor` reads one window of that log, measures
it against the drift reference stored with the champion (the same `ml_tasks.data.drift` statistics the
nightly drift stage uses), scores the rows whose labels have arrived, and judges both against
`MonitorConfig`. It also explains a seeded sample of the window's rows with the champion's explainer
and ranks their global attributions against the champion's own at evaluation (NDCG@10, as SageMaker
Clarify measures feature-attribution drift), judged against the data set's declared
`explanation.monitoring_min_ndcg`. Each window's result is a JSON record keyed by the window (a rerun
rewrites the same file), a point per metric in one MLflow run per model (step = the window's end, so
the points form a time series), and a plot of every window so far. Too few rows in the window, or a
champion with no attributions to compare with, means no judgement, said so in the result, never a guess.

This module stays light at import time: DAG files import `retrain_request_uri` from it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.config import DriftConfig, checked_name
from ml_tasks.constants import ALL_METRICS, LOWER_IS_BETTER
from ml_tasks.datasets import DatasetSpec, declared
from ml_tasks.errors import ConfigError
from ml_tasks.params import check_knobs, knob
from ml_tasks.serving.inference_log import read_feedback, read_log_window
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# The Airflow Asset a drifting or decaying model updates; nightly_retrain is scheduled on it as well.
RETRAIN_REQUEST_URI = "ratchet://models/{model}/retrain-request"
MONITORING_EXPERIMENT = "ratchet-monitoring"
TAG_MONITORED_MODEL = "ratchet.monitoring.model"
MONITORING_REPORT_DIR = "monitoring"
MONITORING_PLOT_FILE = "monitoring_over_time.png"
MONITORING_ARTIFACT_DIR = "monitoring"
# The plot shows at most this many of the latest windows.
PLOT_WINDOWS = 500


def retrain_request_uri(model: str) -> str:
    """The URI of `model`'s retrain-request Asset (one per registered model)."""
    return RETRAIN_REQUEST_URI.format(model=checked_name(model, "registered model"))


def monitored_models() -> list[str]:
    """Every registered model of a declared data set."""
    return sorted({spec.registered_model for spec in declared().values()})


def spec_for_model(model: str) -> DatasetSpec:
    for spec in declared().values():
        if spec.registered_model == model:
            return spec
    raise ConfigError(f"{model!r} is not the registered model of a declared data set; known: {monitored_models()}")


def dataset_for_asset_uri(uri: str) -> str | None:
    """The data set whose model's retrain-request Asset has this URI (None for any other URI)."""
    for spec in declared().values():
        if retrain_request_uri(spec.registered_model) == uri:
            return spec.name
    return None


# Every task kind's metric names (binary's first): what a decay threshold may name.

@dataclass(frozen=True)
class DecayConfig:
    """When live performance counts as decayed: a floor, and a largest drop below the champion's evaluation.

    For lower-is-better metrics (log_loss, brier) `min_value` is a ceiling and the drop is an increase.
    """

    metric: str = knob("roc_auc", "decay_metric", choices=ALL_METRICS)
    # None switches a check off.
    min_value: float | None = knob(0.70, "decay_min_value", minimum=0, maximum=1000, nullable=True)
    max_drop: float | None = knob(0.05, "decay_max_drop", minimum=0, maximum=1000, nullable=True)
    min_labeled_rows: int = knob(200, "min_labeled_rows", minimum=1, maximum=10_000_000)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds of one monitoring window. Drift thresholds are the nightly drift stage's (`DriftConfig`)."""

    drift: DriftConfig = field(default_factory=DriftConfig)
    decay: DecayConfig = field(default_factory=DecayConfig)
    # Rows in the window before drift is judged (PSI and KS of a handful of rows are noise).
    min_rows: int = knob(500, "min_rows", minimum=1, maximum=10_000_000)
    # Rows read per window at most; above it a seeded uniform sample of this many (bounded memory).
    max_rows: int = knob(200_000, "max_rows", minimum=1, maximum=10_000_000)

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.max_rows < self.min_rows:
            raise ConfigError(f"max_rows must be >= min_rows ({self.min_rows}), got {self.max_rows!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MonitorConfig:
        """From the model_monitoring DAG's flat Params."""
        decay = DecayConfig(
            metric=str(params.get("decay_metric", DecayConfig.metric)),
            min_value=_optional_float(params.get("decay_min_value", DecayConfig.min_value)),
            max_drop=_optional_float(params.get("decay_max_drop", DecayConfig.max_drop)),
            min_labeled_rows=int(params.get("min_labeled_rows", DecayConfig.min_labeled_rows)),
        )
        return cls(
            drift=DriftConfig.from_params("warn", params.get("drift_thresholds")),
            decay=decay,
            min_rows=int(params.get("min_rows", cls.min_rows)),
            max_rows=int(params.get("max_rows", cls.max_rows)),
        )

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["drift"].pop("action", None)  # monitoring never stops anything; it requests a retrain
        return payload


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- the window ----------------------------------------------------------------------------------------------


def _utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        raise ConfigError(f"window bound {moment.isoformat()} has no time zone; give UTC times")
    return moment.astimezone(UTC)


def window_key(start: datetime, end: datetime) -> str:
    return f"{start.strftime('%Y%m%dT%H%M%SZ')}_{end.strftime('%Y%m%dT%H%M%SZ')}"




# --- judgement -----------------------------------------------------------------------------------------------


def _champion_metric(model: str, version: str | None, metric: str) -> float | None:
    """The champion's metric on its held-out rows at evaluation (`test.<metric>` on its MLflow run)."""
    if version is None:
        return None
    from ml_tasks import tracking

    client = tracking.client()
    run_id = client.get_model_version(model, version).run_id
    value = client.get_run(str(run_id)).data.metrics.get(f"test.{metric}")
    return None if value is None else float(value)


def _positive(labels: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Raw labels as 1 (the data set's positive label) or 0; labels that are no declared class are NaN and dropped."""
    codes = _codes(labels, spec)
    return (codes == 1).astype("float64").where(codes.notna())


def _codes(values: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Original class values (feedback labels, logged predictions) as codes, compared as text; others NaN."""
    import pandas as pd

    from ml_tasks.data.transform import category_text

    lookup = {category_text(c): float(i) for i, c in enumerate(spec.classes)}
    return pd.Series([lookup.get(category_text(v), math.nan) if v is not None else math.nan for v in values],
                     index=values.index, dtype="float64")


def _judge_drift(frame: pd.DataFrame, spec: DatasetSpec, reference: dict[str, Any] | None, why_not: str,
                 config: MonitorConfig) -> dict[str, Any]:
    from ml_tasks.data import drift

    if reference is None:
        return {"judged": False, "why_not": why_not}
    if len(frame) < config.min_rows:
        return {"judged": False, "why_not": f"too few served rows to judge drift: {len(frame)} < min_rows {config.min_rows}"}
    thresholds = drift.DriftThresholds.from_dict(config.drift.thresholds)
    found = drift.compare(reference, frame[list(spec.features)], spec, thresholds)
    features = {name: {m: stats[m] for m in ("psi", "ks", "js") if stats.get(m) is not None}
                | {"drifted": stats["drifted"], "fired": stats["fired"]} for name, stats in found.features.items()}
    prediction = _prediction_shift(frame, spec, reference, thresholds.psi)
    largest = {m: max((f[m] for f in features.values() if m in f), default=None) for m in ("psi", "ks", "js")}
    return {"judged": True, "drifted_features": found.drifted_features, "features": features,
            "prediction_shift": prediction, "largest": largest, "thresholds": thresholds.to_dict(),
            "summary": found.summary()}


def _prediction_shift(frame: pd.DataFrame, spec: DatasetSpec, reference: dict[str, Any],
                      psi_threshold: float) -> dict[str, Any] | None:
    """The served rows' expected positive rate (mean probability) against the training labels' positive rate.

    The mean probability, not the share of thresholded predictions: for a calibrated model on undrifted data
    the two rates agree, while thresholded predictions of an imbalanced problem differ from the label rate
    even on the training data and would raise a false alarm every window.
    """
    import numpy as np

    from ml_tasks.data import drift

    if spec.task != "binary":
        return _target_shift(frame, spec, reference, psi_threshold)
    frequencies = (reference.get("label") or {}).get("frequencies") or {}
    key = next((k for k in (str(spec.positive_label), str(bool(spec.positive_label))) if k in frequencies), None)
    if key is None or len(frequencies) > 2 or not len(frame):
        return None  # not a binary label the reference knows
    trained = float(frequencies[key])
    served = float(frame["probability"].mean())
    buckets_ref, buckets_now = np.array([1 - trained, trained]), np.array([1 - served, served])
    value = drift.psi(buckets_ref, buckets_now)
    return {"psi": value, "js": drift.js_distance(buckets_ref, buckets_now), "training_positive_rate": trained,
            "mean_probability": served, "predicted_positive_rate": float((frame["prediction"] >= 1).mean()),
            "drifted": value > psi_threshold}


def _target_shift(frame: pd.DataFrame, spec: DatasetSpec, reference: dict[str, Any],
                  psi_threshold: float) -> dict[str, Any] | None:
    """Multiclass: the served predictions' class frequencies against the training labels' (PSI). Regression: the
    served predictions' mean against the training target's, in its std, where the reference holds them."""
    import numpy as np

    from ml_tasks.data import drift
    from ml_tasks.data.transform import category_text

    label = reference.get("label") or {}
    if not len(frame):
        return None
    if spec.task == "regression":
        mean, std = label.get("mean"), label.get("std")
        if mean is None or not std:
            return None  # the reference keeps no numeric statistics of the target
        served = float(np.nanmean(np.asarray(frame["prediction"], dtype="float64")))
        shift = abs(served - float(mean)) / float(std)
        return {"kind": "regression", "training_mean": float(mean), "mean_prediction": served, "shift_in_std": shift,
                "psi": math.nan, "drifted": False}
    frequencies = label.get("frequencies") or {}
    keys = [next((k for k in (category_text(c), str(i)) if k in frequencies), None) for i, c in enumerate(spec.classes)]
    if any(k is None for k in keys):
        return None  # not the declared classes the reference knows
    trained = np.asarray([float(frequencies[k]) for k in keys if k is not None])
    codes = _codes(frame["prediction"], spec).dropna().to_numpy(dtype=int)
    if not len(codes):
        return None
    shares = np.bincount(codes, minlength=len(spec.classes)) / len(codes)
    value = drift.psi(trained, shares)
    return {"kind": "multiclass", "psi": value, "js": drift.js_distance(trained, shares),
            "training_frequencies": dict(zip(map(category_text, spec.classes), trained.tolist(), strict=True)),
            "predicted_frequencies": dict(zip(map(category_text, spec.classes), shares.tolist(), strict=True)),
            "drifted": value > psi_threshold}


def live_metrics(frame: pd.DataFrame, labels: pd.Series, spec: DatasetSpec) -> dict[str, float]:
    """Live metrics of served rows with their feedback labels: every classification metric from the logged
    probability (binary), accuracy and F1/precision/recall from the logged predictions (multiclass), RMSE, MAE, R²
    and MAPE (regression)."""
    import numpy as np

    from ml_tasks.release import metrics

    if spec.task == "binary":
        return metrics.classification_metrics(labels.to_numpy(), frame["probability"].to_numpy())
    if spec.task == "regression":
        return metrics.regression_metrics(labels.to_numpy(dtype="float64"),
                                          np.asarray(frame["prediction"], dtype="float64"))
    from sklearn import metrics as sk

    y = labels.to_numpy().astype(int)
    predicted = _codes(frame["prediction"], spec).fillna(-1).to_numpy().astype(int)
    kw: dict[str, Any] = {"labels": list(range(len(spec.classes))), "zero_division": 0}
    return {"accuracy": float(np.mean(predicted == y)),
            "f1_macro": float(sk.f1_score(y, predicted, average="macro", **kw)),
            "f1_weighted": float(sk.f1_score(y, predicted, average="weighted", **kw)),
            "precision_macro": float(sk.precision_score(y, predicted, average="macro", **kw)),
            "recall_macro": float(sk.recall_score(y, predicted, average="macro", **kw))}


def _feedback_labels(values: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Feedback labels as the live metrics read them: 0/1 (binary), codes (multiclass), numbers (regression)."""
    import pandas as pd

    if spec.task == "binary":
        return _positive(values, spec)
    if spec.task == "multiclass":
        return _codes(values, spec)
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _judge_decay(frame: pd.DataFrame, labels: dict[str, Any], spec: DatasetSpec, config: MonitorConfig,
                 champion_value: float | None) -> dict[str, Any]:
    decay = config.decay
    labeled = frame.assign(label=_feedback_labels(frame["request_id"].map(labels), spec)).dropna(subset=["label"])
    ambiguous = labeled["shared"]
    labeled = labeled[~ambiguous]
    out: dict[str, Any] = {"labeled_rows": len(labeled), "metric": decay.metric, "champion_value": champion_value,
                           "ambiguous_label_rows": int(ambiguous.sum())}
    if len(labeled) < decay.min_labeled_rows:
        out.update(judged=False, why_not=f"too few rows with labels to judge performance: {len(labeled)} < "
                                         f"min_labeled_rows {decay.min_labeled_rows}")
        return out
    scores = live_metrics(labeled, labeled["label"], spec)
    live: dict[str, float | None] = {k: (v if math.isfinite(v) else None) for k, v in scores.items()}
    value = live.get(decay.metric)
    reasons: list[str] = []
    lower = decay.metric in LOWER_IS_BETTER
    if decay.metric not in live:
        out.update(judged=False, live=live, why_not=f"live {decay.metric} is not measured for a {spec.task} model "
                                                    f"(measured: {', '.join(live)})")
        return out
    if value is None:
        out.update(judged=False, live=live, why_not=f"live {decay.metric} is undefined (one class among the labels)")
        return out
    if decay.min_value is not None and (value > decay.min_value if lower else value < decay.min_value):
        reasons.append(f"live {decay.metric} {value:.4f} {'above' if lower else 'below'} "
                       f"{'maximum' if lower else 'minimum'} {decay.min_value:g} on {len(labeled)} labeled rows")
    drop = None
    if champion_value is not None:
        drop = (value - champion_value) if lower else (champion_value - value)
        if decay.max_drop is not None and drop > decay.max_drop:
            reasons.append(f"live {decay.metric} {value:.4f} is {drop:.4f} worse than the champion's evaluated "
                           f"{champion_value:.4f} (max_drop {decay.max_drop:g})")
    out.update(judged=True, live=live, value=value, drop=drop, decayed=bool(reasons), reasons=reasons)
    return out


def champion_attributions(model: str, version: str) -> tuple[dict[str, Any] | None, str]:
    """The champion's global attributions from its evaluation (GLOBAL_ATTRIBUTIONS_FILE in its run), or why not."""
    import tempfile

    import mlflow

    from ml_tasks import tracking
    from ml_tasks.constants import EXPLANATION_ARTIFACT_DIR, GLOBAL_ATTRIBUTIONS_FILE
    from ml_tasks.io import read_json

    client = tracking.client()
    run_id = str(client.get_model_version(model, version).run_id)
    stored = {Path(a.path).name for a in client.list_artifacts(run_id, EXPLANATION_ARTIFACT_DIR)}
    if GLOBAL_ATTRIBUTIONS_FILE not in stored:
        return None, (f"champion version {version} has no {EXPLANATION_ARTIFACT_DIR}/{GLOBAL_ATTRIBUTIONS_FILE} in its "
                      f"run (evaluated before explanations were recorded): no attributions to compare with")
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{EXPLANATION_ARTIFACT_DIR}/{GLOBAL_ATTRIBUTIONS_FILE}", dst_path=tmp,
            tracking_uri=get_settings().mlflow_tracking_uri)
        payload = read_json(Path(local))
    if not isinstance(payload, dict) or not payload.get("global"):
        return None, f"champion version {version}'s {GLOBAL_ATTRIBUTIONS_FILE} holds no global attributions"
    return payload, ""


def served_attributions(model: str, version: str, rows: dict[str, list[Any]]) -> dict[str, Any]:
    """Global attributions of served rows (columns of raw inputs) with the champion's explainer, or why it cannot
    explain them. Runs through `run_isolated`: loading a Keras champion imports TensorFlow."""
    import tempfile

    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.explain import ExplainerError, model_explainer
    from ml_tasks.release.model_loading import ModelLoadError, load_checked

    tracking.configure()
    frame = pd.DataFrame(rows)
    with tempfile.TemporaryDirectory(prefix="ratchet-monitoring-") as tmp:
        try:
            loaded, _ = load_checked(f"models:/{model}/{version}", Path(tmp))
            explainer = model_explainer(loaded)
            explained = explainer.explain(frame)
        except (ExplainerError, ModelLoadError) as exc:
            return {"skipped": f"champion version {version} cannot be explained: {exc}"}
    return {"explainer": explainer.describe(), "rows": len(frame), "global": explained.global_importance(),
            "max_additivity_error": explained.max_additivity_error()}


def _judge_attributions(frame: pd.DataFrame, spec: DatasetSpec, model: str, version: str | None,
                        config: MonitorConfig) -> dict[str, Any]:
    """Attribution drift: NDCG of the served rows' attribution ranking against the champion's at evaluation.

    Measured whenever it can be; judged only where the data set declares `explanation.monitoring_min_ndcg`.
    What cannot be measured (no champion, too few rows, no reference, a champion that cannot be explained) is
    skipped with its reason, never passed.
    """
    from ml_tasks.constants import MONITORING_ATTRIBUTION_ROWS, MONITORING_ATTRIBUTION_SEED
    from ml_tasks.errors import RatchetError
    from ml_tasks.explain import attribution_shift
    from ml_tasks.isolation import run_isolated
    from ml_tasks.release.pyfunc import needs_tensorflow

    def skipped(why: str) -> dict[str, Any]:
        return {"judged": False, "skipped": True, "why_not": f"attribution drift skipped: {why}"}

    if version is None:
        return skipped(f"{model} has no champion yet: no explainer to measure with")
    if len(frame) < config.min_rows:
        return skipped(f"too few served rows: {len(frame)} < min_rows {config.min_rows}")
    reference, why_not = champion_attributions(model, version)
    if reference is None:
        return skipped(why_not)
    sample = frame[list(spec.features)]
    if len(sample) > MONITORING_ATTRIBUTION_ROWS:
        sample = sample.sample(n=MONITORING_ATTRIBUTION_ROWS, random_state=MONITORING_ATTRIBUTION_SEED)
    uri = f"models:/{model}/{version}"
    try:
        current = run_isolated("ml_tasks.monitoring:served_attributions",
                               {"model": model, "version": version, "rows": sample.to_dict(orient="list")},
                               fresh_process=needs_tensorflow(uri))
    except RatchetError as exc:  # the fresh process failed (its traceback is in the task log) or was killed
        return skipped(f"explaining champion version {version} failed: {exc}")
    if "skipped" in current:
        return skipped(current["skipped"])
    threshold = spec.attribution_monitoring_min_ndcg
    shift = attribution_shift(reference["global"], current["global"], threshold)
    out = {**shift.to_dict(), "rows": current["rows"], "explainer": current["explainer"],
           "max_additivity_error": current["max_additivity_error"], "reference_rows": reference.get("rows"),
           "reference_explainer": reference.get("explainer"), "skipped": False, "judged": threshold is not None}
    if threshold is None:
        out["why_not"] = (f"attribution drift measured (NDCG@{shift.k} {shift.ndcg:.3f}), not judged: data set "
                          f"{spec.name} declares no explanation.monitoring_min_ndcg")
    return out


# --- MLflow, records and the plot ----------------------------------------------------------------------------


def record_dir(model: str) -> Path:
    return get_settings().reports / MONITORING_REPORT_DIR / checked_name(model, "registered model")


def monitoring_run(model: str) -> str:
    """The one MLflow run of this model's monitoring time series: found by its tag, or created once."""
    from ml_tasks import tracking
    from ml_tasks.release import registry

    client = tracking.client()
    with registry.model_lock(f"monitoring-{model}"):
        experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
        if experiment is None:
            experiment_id = client.create_experiment(MONITORING_EXPERIMENT,
                                                     artifact_location=get_settings().mlflow_artifact_root)
        else:
            experiment_id = experiment.experiment_id
        found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_MONITORED_MODEL}` = '{model}'",
                                   max_results=1)
        if found:
            return str(found[0].info.run_id)
        run = client.create_run(experiment_id, run_name=f"monitoring-{model}", tags={TAG_MONITORED_MODEL: model})
        client.set_terminated(run.info.run_id, status="FINISHED")  # a series, not a job: always "finished"
        log.info("created MLflow monitoring run %s for %s", run.info.run_id, model)
        return str(run.info.run_id)


def series_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one window that go into MLflow as time-series points."""
    out: dict[str, float] = {"monitoring.rows": float(record["rows"]["served"]),
                             "monitoring.rows_labeled": float(record["decay"].get("labeled_rows", 0))}
    drift = record["drift"]
    if drift.get("judged"):
        out["drift.features_drifted"] = float(len(drift["drifted_features"]))
        for measure, value in drift["largest"].items():
            if value is not None:
                out[f"drift.max_{measure}"] = float(value)
        for name, stats in drift["features"].items():
            for measure in ("psi", "ks", "js"):
                if stats.get(measure) is not None:
                    out[f"drift.{name}.{measure}"] = float(stats[measure])
        if drift.get("prediction_shift"):
            out["drift.prediction.psi"] = float(drift["prediction_shift"]["psi"])
    ndcg = (record.get("attribution_drift") or {}).get("ndcg")
    if ndcg is not None:
        out["attribution.ndcg"] = float(ndcg)
    for name, value in (record["decay"].get("live") or {}).items():
        if value is not None:
            out[f"live.{name}"] = float(value)
    return out


def _log_points(run_id: str, points: dict[str, float], step: int, timestamp_ms: int) -> int:
    """Log each point once per window: a rerun of a window adds no second point at the same step."""
    from mlflow.entities import Metric

    from ml_tasks import tracking

    client = tracking.client()
    logged = client.get_run(run_id).data.metrics
    new = []
    for key, value in sorted(points.items()):
        if key in logged and any(m.step == step for m in client.get_metric_history(run_id, key)):
            continue
        new.append(Metric(key, value, timestamp_ms, step))
    for chunk in range(0, len(new), 500):
        client.log_batch(run_id, metrics=new[chunk:chunk + 500])
    return len(new)


def _load_records(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(folder.glob("*.json"))[-PLOT_WINDOWS:]:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            log.warning("skipping unreadable monitoring record %s", path)
    return records


def plot_over_time(records: list[dict[str, Any]], target: Path, config: MonitorConfig) -> Path:
    """Rows, drift, attribution NDCG and live performance per window, with their thresholds (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml_tasks.io import atomic_path

    ends = [datetime.fromisoformat(r["window"]["end"]) for r in records]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(ends, [r["rows"]["served"] for r in records], marker=".", label="served rows")
    axes[0].plot(ends, [r["decay"].get("labeled_rows", 0) for r in records], marker=".", label="rows with labels")
    axes[0].set_ylabel("rows")
    thresholds = config.drift.thresholds
    for measure, colour in (("psi", "tab:red"), ("ks", "tab:blue"), ("js", "tab:green")):
        values = [(r["drift"].get("largest") or {}).get(measure) for r in records]
        axes[1].plot(ends, [math.nan if v is None else v for v in values], marker=".", color=colour,
                     label=f"max {measure}")
        axes[1].axhline(thresholds[measure], color=colour, linestyle=":", linewidth=1)
    axes[1].set_ylabel("drift (largest feature)")
    values = [(r.get("attribution_drift") or {}).get("ndcg") for r in records]
    axes[2].plot(ends, [math.nan if v is None else v for v in values], marker=".", label="attribution NDCG@k")
    floor = next((t for r in reversed(records) if (t := (r.get("attribution_drift") or {}).get("threshold")) is not None),
                 None)  # the latest declared monitoring_min_ndcg
    if floor is not None:
        axes[2].axhline(floor, color="tab:red", linestyle=":", linewidth=1, label="threshold")
    axes[2].set_ylabel("attribution NDCG")
    metric = config.decay.metric
    values = [((r["decay"].get("live") or {}).get(metric)) for r in records]
    axes[3].plot(ends, [math.nan if v is None else v for v in values], marker=".", label=f"live {metric}")
    if config.decay.min_value is not None:
        axes[3].axhline(config.decay.min_value, color="tab:red", linestyle=":", linewidth=1, label="threshold")
    axes[3].set_ylabel(metric)
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{records[-1]['model']}: monitoring per window" if records else "monitoring")
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return target


# --- the entry point -----------------------------------------------------------------------------------------


def monitor(model_name: str, window_start: datetime | str, window_end: datetime | str,
            config: MonitorConfig | None = None) -> dict[str, Any]:
    """Judge one window of the served model: drift against the champion's training data, attribution drift against
    the champion's evaluation, live performance.

    Returns small JSON: {model, window, drift_detected (input, prediction or attribution drift),
    attribution_drift_detected, decay_detected, judged, reasons, metrics, record_uri, mlflow_run_id,
    champion_version}.
    """
    from ml_tasks.io import write_json
    from ml_tasks.release.registry import champion_drift_reference

    config = config or MonitorConfig()
    model = checked_name(model_name, "registered model")
    spec = spec_for_model(model)
    start, end = _utc(window_start), _utc(window_end)
    if not start < end:
        raise ConfigError(f"monitoring window must end after it starts: {start.isoformat()} .. {end.isoformat()}")
    key = window_key(start, end)

    window = read_log_window(model, spec, start, end, config.max_rows)
    version, reference, why_not = champion_drift_reference(model)
    drift_result = _judge_drift(window.frame, spec, reference, why_not, config)
    labels, feedback_problems = read_feedback(model, set(window.frame["request_id"])) if len(window.frame) else ({}, [])
    decay_result = _judge_decay(window.frame, labels, spec, config, _champion_metric(model, version, config.decay.metric))
    attribution_result = _judge_attributions(window.frame, spec, model, version, config)

    reasons: list[str] = []
    if drift_result.get("judged"):
        for name in drift_result["drifted_features"]:
            stats = drift_result["features"][name]
            fired = ", ".join(f"{m} {stats[m]:.3f} > {drift_result['thresholds'][m]:g}" for m in stats["fired"])
            reasons.append(f"feature {name} drifted ({fired})")
        shift = drift_result.get("prediction_shift")
        if shift and shift["drifted"] and shift.get("kind") == "multiclass":
            reasons.append(f"prediction shift: predicted class frequencies {shift['predicted_frequencies']} against "
                           f"training {shift['training_frequencies']} (psi {shift['psi']:.3f})")
        elif shift and shift["drifted"]:
            reasons.append(f"prediction shift: mean probability {shift['mean_probability']:.3f} against a training "
                           f"positive rate of {shift['training_positive_rate']:.3f} (psi {shift['psi']:.3f} > "
                           f"{drift_result['thresholds']['psi']:g})")
    attribution_detected = bool(attribution_result.get("judged") and attribution_result["shifted"])
    if attribution_detected:
        a = attribution_result
        reasons.append(f"attribution drift: NDCG@{a['k']} {a['ndcg']:.3f} < {a['threshold']:g} of the served rows' "
                       f"attribution ranking against the champion's evaluation (top now {', '.join(a['current_top'][:3])};"
                       f" was {', '.join(a['reference_top'][:3])}; {a['rows']} rows explained)")
    drift_detected = bool(reasons)  # input, prediction or attribution drift: each may request a retrain
    reasons.extend(decay_result.get("reasons", []))
    decay_detected = bool(decay_result.get("decayed"))
    not_judged = [r["why_not"] for r in (drift_result, decay_result, attribution_result) if not r.get("judged")]

    record: dict[str, Any] = {
        "model": model,
        "dataset": spec.name,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "key": key},
        "champion_version": version,
        "rows": {"served": window.rows, "used": len(window.frame), "files": window.files,
                 "malformed_lines": window.malformed, "by_version": window.versions},
        "drift": drift_result,
        "decay": decay_result,
        "attribution_drift": attribution_result,
        "feedback_problems": feedback_problems,
        "drift_detected": drift_detected,
        "attribution_drift_detected": attribution_detected,
        "decay_detected": decay_detected,
        "reasons": reasons,
        "not_judged": not_judged,
        "config": config.to_dict(),
    }
    record = json.loads(json.dumps(record, default=str, allow_nan=False))  # plain JSON, as a rerun reads it back
    points = series_metrics(record)
    run_id = monitoring_run(model)
    logged = _log_points(run_id, points, step=int(end.timestamp()), timestamp_ms=int(end.timestamp() * 1000))
    folder = record_dir(model)
    record_path = write_json(folder / f"{key}.json", record)
    plot = plot_over_time(_load_records(folder), folder / MONITORING_PLOT_FILE, config)
    from ml_tasks import tracking

    tracking.client().log_artifact(run_id, str(plot), artifact_path=MONITORING_ARTIFACT_DIR)
    tracking.client().log_artifact(run_id, str(record_path), artifact_path=f"{MONITORING_ARTIFACT_DIR}/records")

    if drift_detected or decay_detected:
        log.warning("%s window %s: %s", model, key, "; ".join(reasons))
    else:
        log.info("%s window %s: no drift or decay%s", model, key,
                 f" (not judged: {'; '.join(not_judged)})" if not_judged else "")
    headline = {k: v for k, v in points.items() if not k.startswith("drift.") or k.startswith("drift.max_")
                or k in ("drift.features_drifted", "drift.prediction.psi")}
    return {
        "model": model, "dataset": spec.name, "window": record["window"], "champion_version": version,
        "drift_detected": drift_detected, "attribution_drift_detected": attribution_detected,
        "decay_detected": decay_detected,
        "judged": {"drift": bool(drift_result.get("judged")), "decay": bool(decay_result.get("judged")),
                   "attribution": bool(attribution_result.get("judged"))},
        "reasons": reasons, "not_judged": not_judged, "metrics": headline,
        "record_uri": record_path.as_uri(), "mlflow_run_id": run_id, "points_logged": logged,
    }


@dataclass(frozen=True)
class RetrainRequest:
    """What `request_retrain` decided: the retrain-request event's extra, or why no request is made."""

    extra: dict[str, Any] | None = None
    skipped: str | None = None


def request_retrain(model: str, result: dict[str, Any], cooldown: timedelta,
                    last_request_end: Callable[[], datetime | None]) -> RetrainRequest:
    """Whether `monitor`'s `result` asks for a retrain of `model`: only on drift or decay, and not again within
    `cooldown` of the window that last asked (`last_request_end`, looked up only when needed).

    The extra names the model, its data set, the window and the reasons, for `nightly_retrain` and the alerts.
    """
    if not (result["drift_detected"] or result["decay_detected"]):
        return RetrainRequest(skipped=f"{model}: no drift or decay in window {result['window']['key']}")
    end = datetime.fromisoformat(result["window"]["end"])
    previous = last_request_end() if cooldown else None
    if previous is not None and timedelta(0) <= end - previous < cooldown:
        return RetrainRequest(skipped=(
            f"{model}: drift or decay again, but a retrain was requested for the window ending {previous.isoformat()}, "
            f"less than retrain_cooldown_hours ({cooldown}) before this one; reasons: {'; '.join(result['reasons'])}"))
    return RetrainRequest(extra={
        "model": model, "dataset": result["dataset"], "window": result["window"]["key"],
        "window_end": end.isoformat(), "drift": result["drift_detected"], "decay": result["decay_detected"],
        "reasons": result["reasons"][:20], "record_uri": result["record_uri"]})
