"""The offline compression job: a registered Keras version into quantized TFLite files, a pruned and a distilled model.

Serving a smaller or faster model is only worth it if it still decides like
the original, so every result is measured the same way (file size, gzip size,
single-row and batch latency in the runtime that would serve it, accuracy and
ROC AUC on the prepared test rows against the original's on the same rows) and
gated on its accuracy loss. Results that pass are registered as their own
models, `<source>_<method>`, as pyfuncs that take raw rows like the original.

- dynamic_range / float16 / int8: `tf.lite.TFLiteConverter` post-training
  quantization; int8 is full-integer with a representative sample of the
  training split, keeping float input and output (quantize/dequantize at the
  edges), which every runtime handles. `tensorflow-model-optimization` works
  only with legacy tf_keras, so it is not used.
- pruned: magnitude pruning in Keras 3 itself: the smallest weights of every
  Dense kernel are zeroed, then a short fine-tune re-applies the masks after
  every batch so zeros stay zero. A dense .keras file does not shrink; its
  gzip size shows the gain.
- distilled: a smaller MLP trained on a mix of the teacher's probabilities
  and the labels.

TensorFlow is not fork-safe, so the work runs in a fresh process
(`run_isolated`). A rerun for the same source version and artifact settings
reuses the measurements of `compression.json` and the registered versions
(found by their key tag) instead of registering duplicates. TFLite results are
registered with the loader module `ml_tasks.compression` and served by
`ml_tasks.compression.tflite_runtime`.

Task kinds: every Keras head compresses (binary sigmoid, multiclass softmax,
regression in original units). The source version's target record
(`TARGET_ARTIFACT`) says which; a version without one is binary. The gate's
quality loss is task-appropriate: accuracy loss for binary (as before), for
multiclass the share of test rows whose argmax class differs from the
original's (1 - agreement), for regression the relative RMSE increase
(rmse / original rmse - 1). Compressed versions carry the target record too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ml_tasks.compression import LOADER_MODULE
from ml_tasks.compression.tflite_runtime import DECISION_THRESHOLD, TFLITE_FILE, TRANSFORM_COPY, TFLiteRunner
from ml_tasks.constants import TAG_DATASET, TAG_EXPLAINER, TAG_FINGERPRINT, TAG_RUN_KEY, TAG_TOP_FEATURES, TAG_VALIDATION
from ml_tasks.errors import ConfigError, DataError
from ml_tasks.isolation import run_isolated

log = logging.getLogger(__name__)

DYNAMIC_RANGE = "dynamic_range"
FLOAT16 = "float16"
INT8 = "int8"
PRUNED = "pruned"
DISTILLED = "distilled"
TFLITE_METHODS = (DYNAMIC_RANGE, FLOAT16, INT8)
KERAS_METHODS = (PRUNED, DISTILLED)
METHODS = TFLITE_METHODS + KERAS_METHODS
# Measured for reference, never registered: the original as .keras, and its unquantized TFLite conversion.
ORIGINAL = "original"
TFLITE_FLOAT32 = "tflite_float32"

COMPRESSION_FILE = "compression.json"
KERAS_FILE = "model.keras"

TAG_KEY = "ratchet.compression.key"
TAG_RUN = "ratchet.compression.run"
TAG_SOURCE_MODEL = "ratchet.compression.source_model"
TAG_SOURCE_VERSION = "ratchet.compression.source_version"
TAG_METHOD = "ratchet.compression.method"
TAG_GATE = "ratchet.compression.gate"
TAG_PREFIX = "ratchet.compression."
# Tags of the source version that every compressed version of it carries too.
LINEAGE_TAGS = (TAG_FINGERPRINT, TAG_DATASET, TAG_RUN_KEY, TAG_VALIDATION)


@dataclass(frozen=True)
class CompressionConfig:
    """Which methods to run, their settings, how to measure, and the accuracy-loss gate."""

    methods: tuple[str, ...] = METHODS
    # A result passes when original accuracy - its accuracy <= this (on the same test rows).
    max_accuracy_loss: float = 0.01
    # Fraction of every Dense kernel zeroed, and the fine-tune that follows.
    pruning_sparsity: float = 0.5
    finetune_epochs: int = 2
    finetune_learning_rate: float = 1e-4
    # The student MLP: hidden layers of `distill_units`, trained on alpha * teacher + (1 - alpha) * label.
    distill_units: int = 16
    distill_layers: int = 1
    distill_epochs: int = 8
    distill_alpha: float = 0.7
    distill_learning_rate: float = 3e-3
    batch_size: int = 256
    # Training rows used to fine-tune and distil (a seeded sample), and the int8 representative sample.
    max_train_rows: int = 50_000
    representative_rows: int = 200
    # Latency: median of `latency_runs` single-row calls and of max(3, latency_runs // 5) batches.
    latency_runs: int = 50
    latency_batch_rows: int = 1024
    seed: int = 0
    # Register results that fail the gate too (tagged `failed`); by default only passing ones are registered.
    register_failed: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ConfigError(f"compression methods must be a non-empty subset of {', '.join(METHODS)}; got {list(self.methods)}")
        if not 0.0 < self.pruning_sparsity < 1.0:
            raise ConfigError(f"pruning_sparsity must be in (0, 1), got {self.pruning_sparsity}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ConfigError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        for name in ("distill_units", "distill_layers", "batch_size", "max_train_rows", "representative_rows",
                     "latency_runs", "latency_batch_rows"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("finetune_epochs", "distill_epochs"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "methods": list(self.methods)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CompressionConfig:
        known = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__}
        if "methods" in known:
            known["methods"] = tuple(known["methods"])
        return cls(**known)

    @property
    def artifact_key(self) -> str:
        """A short hash of the settings that change the compressed files (not the gate, nor how latency is measured)."""
        ignored = {"methods", "max_accuracy_loss", "latency_runs", "latency_batch_rows", "register_failed"}
        settings = {k: v for k, v in self.to_dict().items() if k not in ignored}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CompressedModel:
    """One measured model: a compressed result, or a reference (the original, the float32 TFLite)."""

    method: str
    runtime: str  # "tflite" or "keras"
    path: str
    size_bytes: int
    gzip_bytes: int
    latency_single_ms: float
    latency_batch_ms: float
    batch_rows: int
    accuracy: float
    roc_auc: float
    accuracy_loss: float = 0.0
    roc_auc_loss: float = 0.0
    passed: bool = True
    # Task kind of the model; regression's RMSE on the test rows (NaN otherwise); agreement with the original's
    # decisions (argmax class, or thresholded probability); the loss the gate compares (see the module doc).
    task: str = "binary"
    rmse: float = float("nan")
    agreement: float = 1.0
    quality_loss: float = 0.0
    # Fraction of Dense kernel weights that are exactly zero (pruned, and the original for comparison).
    sparsity: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    registered_name: str | None = None
    registered_version: str | None = None
    reused_version: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CompressedModel:
        return cls(**{k: v for k, v in payload.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CompressionResult:
    """What the stage returns (XCom-sized); the full record is `record_path` (compression.json)."""

    source_model: str
    source_version: str
    artifact_key: str
    record_path: str
    mlflow_run_id: str
    test_rows: int
    max_accuracy_loss: float
    original: dict[str, float]
    results: dict[str, dict[str, Any]]
    passed: list[str]
    failed: list[str]
    registered: dict[str, str]
    newly_registered: list[str]
    measurements_reused: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, as XCom needs: a measure that does not apply to the task kind (NaN) becomes null."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------- entry points


def compress(dataset: str, version: str | None = None, methods: list[str] | None = None,
             max_accuracy_loss: float | None = None) -> dict[str, Any]:
    """Compress a registered Keras version of `dataset`'s model (default: the champion) with the prepared data of
    the run that made it (`compress_model` DAG, `ratchet compress`)."""
    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release import registry

    name = get_dataset(dataset).registered_model
    version = version or registry.current_champion(name)
    if version is None:
        raise ConfigError(f"{name} has no champion to compress; name a version")
    tracking_key = tracking.client().get_model_version(name, version).tags.get(TAG_RUN_KEY, "")
    if not tracking_key.startswith(f"{dataset}/"):
        raise ConfigError(f"{name} v{version} carries no Ratchet run key: its prepared data cannot be found")
    ctx = RunContext(dataset, tracking_key.split("/", 1)[1])
    options: dict[str, Any] = {}
    if methods:
        options["methods"] = tuple(methods)
    if max_accuracy_loss is not None:
        options["max_accuracy_loss"] = float(max_accuracy_loss)
    return compress_model_version(name, ctx.prepared_dir.as_uri(), version, CompressionConfig(**options)).to_dict()


def compress_model_version(model_name: str, prepared_uri: str, version: str | None = None,
                           config: CompressionConfig | None = None, *, output_dir: str | None = None,
                           timeout_s: float | None = None) -> CompressionResult:
    """Compress version `version` of registered model `model_name` (default: its champion), in a fresh process.

    `prepared_uri`: the prepared folder (train.parquet, test_raw.parquet, transform.json) of the model's data.
    """
    from ml_tasks.release import registry

    config = config or CompressionConfig()
    if version is None:
        version = registry.current_champion(model_name)
        if version is None:
            raise ConfigError(f"{model_name} has no champion to compress; pass a version")
    result = run_isolated(
        "ml_tasks.compression.job:compress_in_process",
        {"model_name": model_name, "version": str(version), "prepared_uri": prepared_uri,
         "config": config.to_dict(), "output_dir": output_dir},
        timeout_s=timeout_s,
    )
    return CompressionResult(**result)


def default_output_dir(model_name: str, version: str, config: CompressionConfig) -> Path:
    from ml_tasks.config import safe_key
    from ml_tasks.settings import get_settings

    return get_settings().models / "compression" / safe_key(model_name) / f"v{safe_key(version)}-{config.artifact_key}"


def compress_in_process(model_name: str, version: str, prepared_uri: str, config: dict[str, Any],
                        output_dir: str | None = None) -> dict[str, Any]:
    from ml_tasks.io import read_json, write_json

    settings = CompressionConfig.from_dict(config)
    out = Path(output_dir) if output_dir else default_output_dir(model_name, version, settings)
    record_path = out / COMPRESSION_FILE
    record: dict[str, Any] = {}
    if record_path.is_file():
        record = read_json(record_path)
        if record.get("artifact_key") != settings.artifact_key or record.get("source") != f"{model_name}/{version}":
            record = {}
    measured = {m: CompressedModel.from_dict(r) for m, r in record.get("results", {}).items()
                if Path(r["path"]).exists()}
    missing = [m for m in settings.methods if m not in measured]
    reused = not missing
    if missing:
        log.info("compressing %s v%s: %s", model_name, version, ", ".join(missing))
        fresh = _measure_all(model_name, version, prepared_uri, settings, out, missing, record.get("references"))
        record = {**record, **{k: v for k, v in fresh.items() if k != "results"}}
        measured.update({m: CompressedModel.from_dict(r) for m, r in fresh["results"].items()})
    else:
        log.info("%s v%s already compressed with key %s; reusing %s", model_name, version, settings.artifact_key, record_path)
    original = CompressedModel.from_dict(record["references"][ORIGINAL])
    gated = {m: _gate(measured[m], original, settings.max_accuracy_loss) for m in settings.methods}
    run_id = _mlflow_run(model_name, version, settings)
    registered = _register_all(model_name, version, settings, gated, prepared_uri, record["transform_path"], run_id,
                               log_metrics=not reused)
    record.update({
        "source": f"{model_name}/{version}", "artifact_key": settings.artifact_key, "config": settings.to_dict(),
        "mlflow_run_id": run_id, "results": {**record.get("results", {}), **{m: r.to_dict() for m, r in registered.items()}},
    })
    write_json(record_path, record)
    _log_record(run_id, record_path)
    result = _summary(model_name, version, settings, record, registered, str(record_path), run_id, reused)
    log.info("compressed %s v%s: passed %s, failed %s, registered %s", model_name, version, result.passed, result.failed,
             result.registered)
    return result.to_dict()


def quality_loss(result: CompressedModel, original: CompressedModel) -> float:
    """What the gate holds against `max_accuracy_loss`: accuracy loss (binary), 1 - argmax agreement with the
    original (multiclass), relative RMSE increase (regression)."""
    if result.task == "multiclass":
        return 1.0 - result.agreement
    if result.task == "regression":
        return result.rmse / original.rmse - 1.0 if original.rmse > 0 else result.rmse - original.rmse
    return original.accuracy - result.accuracy


def _gate(result: CompressedModel, original: CompressedModel, max_loss: float) -> CompressedModel:

    loss = quality_loss(result, original)
    passed = not math.isnan(loss) and loss <= max_loss
    return replace(result, accuracy_loss=original.accuracy - result.accuracy, quality_loss=loss,
                   roc_auc_loss=original.roc_auc - result.roc_auc, passed=passed)


def _summary(model_name: str, version: str, config: CompressionConfig, record: dict[str, Any],
             results: dict[str, CompressedModel], record_path: str, run_id: str, reused: bool) -> CompressionResult:
    original = record["references"][ORIGINAL]
    keep = ("passed", "accuracy", "accuracy_loss", "roc_auc", "size_bytes", "gzip_bytes", "latency_single_ms",
            "latency_batch_ms", "sparsity", "registered_version", "quality_loss", "agreement", "rmse")
    return CompressionResult(
        source_model=model_name, source_version=version, artifact_key=config.artifact_key, record_path=record_path,
        mlflow_run_id=run_id, test_rows=int(record["test_rows"]), max_accuracy_loss=config.max_accuracy_loss,
        original={k: original[k] for k in ("accuracy", "roc_auc", "size_bytes", "gzip_bytes", "latency_single_ms",
                                            "latency_batch_ms", "rmse") if k in original},
        results={m: {k: getattr(r, k) for k in keep} for m, r in results.items()},
        passed=[m for m, r in results.items() if r.passed], failed=[m for m, r in results.items() if not r.passed],
        registered={r.registered_name: str(r.registered_version) for r in results.values()
                    if r.registered_name and r.registered_version},
        newly_registered=[m for m, r in results.items() if r.registered_version and not r.reused_version],
        measurements_reused=reused,
    )


# ---------------------------------------------------------------- loading and measuring


def _find_one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if len(found) != 1:
        raise ConfigError(f"expected one {what} ({pattern}) in {folder}, found {len(found)}")
    return found[0]


def _download_source(model_name: str, version: str, target: Path) -> tuple[Path, Path]:
    """The source version's `model.keras` and fitted transform, copied into `target` (and its target record,
    as TARGET_FILE, when it has one)."""
    import shutil
    import tempfile

    import mlflow

    from ml_tasks import tracking

    tracking.configure()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=tmp))
        keras_files = sorted(local.rglob("*.keras"))
        if not keras_files:
            raise ConfigError(f"{model_name} v{version} holds no Keras model (.keras): only Keras champions are compressed")
        keras_path = _find_one(local, "*.keras", "Keras model")
        transform_path = _find_one(local, "transform*.json", "fitted transform")
        shutil.copyfile(keras_path, target / KERAS_FILE)
        shutil.copyfile(transform_path, target / TRANSFORM_COPY)
        from ml_tasks.release.pyfunc import EXPLANATION_FILE, TARGET_FILE

        for record_file in (TARGET_FILE, EXPLANATION_FILE):
            records = sorted(local.rglob(record_file))
            if records:
                shutil.copyfile(records[0], target / record_file)
    return target / KERAS_FILE, target / TRANSFORM_COPY


def _target_record(folder: Path) -> dict[str, Any]:
    """The source's target record (task kind, target, classes) from `folder`; binary 0/1 when it had none."""
    from ml_tasks.io import read_json
    from ml_tasks.release.pyfunc import TARGET_FILE

    path = folder / TARGET_FILE
    return read_json(path) if path.is_file() else {"task": "binary", "classes": [0, 1]}


def _encode_raw(values: Any, record: dict[str, Any]) -> Any:
    """Raw test targets as the model's labels: codes into the record's classes (compared as text), or floats."""
    import numpy as np

    from ml_tasks.data.transform import category_text

    if record["task"] == "regression":
        return np.asarray(values, dtype="float64")
    lookup = {category_text(c): i for i, c in enumerate(record["classes"])}
    codes = np.asarray([lookup.get(category_text(v), -1) for v in values], dtype="int64")
    if (codes < 0).any():
        raise DataError(f"test targets hold values outside the declared classes {record['classes']!r}")
    return codes


def _load_data(prepared: Path, transform: Any, config: CompressionConfig,
               record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Training features/labels (a seeded sample) and the raw test rows transformed as serving does."""
    import numpy as np
    import pandas as pd

    from ml_tasks.constants import TEST_RAW_FILE, TRAIN_FILE, TRANSFORM_FILE
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.io import read_json

    prepared_transform = FittedTransform.from_dict(read_json(prepared / TRANSFORM_FILE))
    if prepared_transform.to_dict() != transform.to_dict():
        raise ConfigError(f"{prepared} was transformed differently from the model's training data; "
                          "compress with the prepared folder of the run that trained it")
    test_raw = pd.read_parquet(prepared / TEST_RAW_FILE)
    targets = [c for c in test_raw.columns if c not in transform.input_columns]
    if len(targets) != 1:
        raise DataError(f"{prepared / TEST_RAW_FILE}: expected one target column beside the features, found {targets}")
    target = targets[0]
    train = pd.read_parquet(prepared / TRAIN_FILE, columns=[*transform.feature_names, target])
    if len(train) > config.max_train_rows:
        train = train.sample(n=config.max_train_rows, random_state=config.seed)
    return {
        "x_train": train[transform.feature_names].to_numpy(dtype="float32"),
        "y_train": train[target].to_numpy(dtype="float32"),
        "x_test": transform.apply(test_raw),
        "y_test": _encode_raw(test_raw[target].to_numpy(), record or {"task": "binary", "classes": [0, 1]}),
        "rng": np.random.default_rng(config.seed),
        "task": (record or {}).get("task", "binary"),
        "n_classes": len((record or {}).get("classes", [0, 1])),
    }


def _file_sizes(path: Path) -> tuple[int, int]:
    import gzip

    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9))


def _median_ms(call: Any, x: Any, runs: int) -> float:
    import statistics
    import time

    for _ in range(3):
        call(x)  # warm-up: graph tracing, tensor allocation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 4)


def _measure(method: str, runtime: str, path: Path, predict: Any, data: dict[str, Any], config: CompressionConfig,
             **extra: Any) -> CompressedModel:
    """Size, latency (in the runtime that serves it) and test metrics of one model, and its agreement with the
    original's decisions (`data["reference"]`, the original's output on the test rows, when measured)."""
    import numpy as np

    from ml_tasks.release.metrics import classification_metrics

    x_test = data["x_test"]
    batch = np.resize(x_test, (config.latency_batch_rows, x_test.shape[1])).astype("float32")
    single = np.ascontiguousarray(x_test[:1])
    latency_single = _median_ms(predict, single, config.latency_runs)
    latency_batch = _median_ms(predict, batch, max(3, config.latency_runs // 5))
    task = data.get("task", "binary")
    output = np.asarray(predict(x_test), dtype="float64")
    reference = data.get("reference")
    quality: dict[str, Any] = {"task": task}
    if task == "regression":
        predicted = output.reshape(-1)
        quality["rmse"] = float(np.sqrt(np.mean((predicted - data["y_test"]) ** 2)))
        accuracy = roc_auc = float("nan")
    elif task == "multiclass":
        from ml_tasks.training.scoring import score

        y, k = data["y_test"], int(data["n_classes"])
        accuracy = score("accuracy", y, output, task, k)
        roc_auc = score("roc_auc", y, output, task, k)
        if reference is not None:
            quality["agreement"] = float(np.mean(output.argmax(axis=1) == np.asarray(reference).argmax(axis=1)))
    else:
        probability = output.reshape(-1)
        metrics = classification_metrics(data["y_test"], probability, threshold=DECISION_THRESHOLD)
        accuracy, roc_auc = metrics["accuracy"], metrics["roc_auc"]
        if reference is not None:
            quality["agreement"] = float(np.mean((probability >= DECISION_THRESHOLD)
                                                 == (np.asarray(reference).reshape(-1) >= DECISION_THRESHOLD)))
    size, gzipped = _file_sizes(path)
    result = CompressedModel(
        method=method, runtime=runtime, path=str(path), size_bytes=size, gzip_bytes=gzipped,
        latency_single_ms=latency_single, latency_batch_ms=latency_batch, batch_rows=config.latency_batch_rows,
        accuracy=accuracy, roc_auc=roc_auc, **quality, **extra,
    )
    log.info("%s: %s bytes (gzip %s), %.3f ms/row, %.3f ms per %s rows, accuracy %.4f, AUC %.4f", method, size, gzipped,
             latency_single, latency_batch, config.latency_batch_rows, result.accuracy, result.roc_auc)
    return result


def _keras_predict(model: Any) -> Any:
    """The model's output on a batch: (n,) for a one-column head (binary probability, regression), else (n, k)."""
    import numpy as np

    def predict(x: Any) -> Any:
        out = np.asarray(model.predict_on_batch(x))
        return out.reshape(-1) if out.ndim == 1 or out.shape[1] == 1 else out

    return predict


def _tflite_predict(path: Path, data: dict[str, Any]) -> Any:
    """The runner that measures a TFLite file: the serving runtime's `TFLiteRunner` for one-column heads; for a
    multiclass head (whose (n, k) output that runner does not return) a plain interpreter over the file."""
    if data.get("task", "binary") != "multiclass":
        return TFLiteRunner(str(path))
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    state = {"rows": -1}

    def predict(x: Any) -> Any:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) != state["rows"]:
            interpreter.resize_tensor_input(source["index"], list(x.shape))
            interpreter.allocate_tensors()
            state["rows"] = len(x)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(sink["index"]), dtype="float64")

    predict.runtime = "tf.lite"  # type: ignore[attr-defined]
    predict.input_dtype = "float32"  # type: ignore[attr-defined]
    return predict


def _measure_all(model_name: str, version: str, prepared_uri: str, config: CompressionConfig, out: Path,
                 methods: list[str], references: dict[str, Any] | None) -> dict[str, Any]:
    """Build and measure `methods` (and the references, unless already measured)."""
    import shutil

    import keras

    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.storage import local_path

    keras.utils.set_random_seed(config.seed)
    from ml_tasks.release.pyfunc import EXPLANATION_FILE, TARGET_FILE

    keras_path, transform_path = _download_source(model_name, version, out / ORIGINAL)
    record = _target_record(keras_path.parent)
    transform = FittedTransform.from_dict(json.loads(transform_path.read_text()))
    data = _load_data(local_path(prepared_uri), transform, config, record)
    original = keras.saving.load_model(keras_path, compile=False)
    teacher_train = _keras_predict(original)(data["x_train"])
    data["reference"] = _keras_predict(original)(data["x_test"])
    refs = dict(references or {})
    if ORIGINAL not in refs:
        refs[ORIGINAL] = _measure(ORIGINAL, "keras", keras_path, _keras_predict(original), data, config,
                                  sparsity=_sparsity(original)).to_dict()
    if TFLITE_FLOAT32 not in refs:
        path = _write_tflite(original, out / TFLITE_FLOAT32 / TFLITE_FILE, None, data)
        refs[TFLITE_FLOAT32] = _measure(TFLITE_FLOAT32, "tflite", path, _tflite_predict(path, data), data,
                                        config).to_dict()
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        folder = out / method
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(transform_path, folder / TRANSFORM_COPY)
        for record_file in (TARGET_FILE, EXPLANATION_FILE):  # logged with the compressed version (`_log_model`)
            if (keras_path.parent / record_file).is_file():
                shutil.copyfile(keras_path.parent / record_file, folder / record_file)
        if method in TFLITE_METHODS:
            path = _write_tflite(original, folder / TFLITE_FILE, method, data, config.representative_rows)
            runner = _tflite_predict(path, data)
            results[method] = _measure(method, "tflite", path, runner, data, config,
                                       details={"interpreter": runner.runtime, "input_dtype": runner.input_dtype}).to_dict()
        elif method == PRUNED:
            model, details = _prune(keras_path, data, config)
            path = _save_keras(model, folder / KERAS_FILE)
            results[method] = _measure(method, "keras", path, _keras_predict(model), data, config,
                                       sparsity=_sparsity(model), details=details).to_dict()
        else:
            model, details = _distil(data, teacher_train, config)
            path = _save_keras(model, folder / KERAS_FILE)
            results[method] = _measure(method, "keras", path, _keras_predict(model), data, config,
                                       sparsity=_sparsity(model), details=details).to_dict()
    return {"references": refs, "results": results, "test_rows": len(data["y_test"]),
            "transform_path": str(transform_path)}


def _save_keras(model: Any, path: Path) -> Path:
    from ml_tasks.io import atomic_path

    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        model.save(keras_tmp)
        keras_tmp.replace(tmp)
    return path


# ---------------------------------------------------------------- TFLite


def _write_tflite(model: Any, path: Path, method: str | None, data: dict[str, Any], representative_rows: int = 200) -> Path:
    """Convert the Keras model: unquantized (None), dynamic-range, float16 or full-integer int8 with float I/O."""
    import tensorflow as tf

    from ml_tasks.io import atomic_path

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if method is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if method == FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif method == INT8:
        x_train, rng = data["x_train"], data["rng"]
        rows = x_train[rng.choice(len(x_train), size=min(len(x_train), representative_rows), replace=False)]

        def representative() -> Any:
            for row in rows:
                yield [row[None, :]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return path


# ---------------------------------------------------------------- pruning and distillation


def _dense_kernels(model: Any) -> list[Any]:
    import keras

    return [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def _sparsity(model: Any) -> float:
    import numpy as np

    kernels = [np.asarray(k.numpy()) for k in _dense_kernels(model)]
    total = sum(k.size for k in kernels)
    return round(sum(int(np.count_nonzero(k == 0)) for k in kernels) / total, 6) if total else 0.0


def _prune(keras_path: Path, data: dict[str, Any], config: CompressionConfig) -> tuple[Any, dict[str, Any]]:
    """Zero the smallest `pruning_sparsity` of every Dense kernel, then fine-tune with the masks held."""
    import keras
    import numpy as np

    model = keras.saving.load_model(keras_path, compile=False)
    masks = []
    for kernel in _dense_kernels(model):
        values = np.asarray(kernel.numpy())
        k = int(round(config.pruning_sparsity * values.size))
        mask = np.ones(values.size, dtype=values.dtype)
        mask[np.argsort(np.abs(values), axis=None, kind="stable")[:k]] = 0
        mask = mask.reshape(values.shape)
        kernel.assign(values * mask)
        masks.append((kernel, keras.ops.convert_to_tensor(mask)))

    def apply_masks() -> None:
        for variable, mask in masks:
            variable.assign(keras.ops.multiply(variable, mask))

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            apply_masks()

    history: dict[str, list[float]] = {}
    if config.finetune_epochs:
        head = _head(data)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.finetune_learning_rate), loss=head["loss"],
                      loss_weights=head["loss_weights"])
        fit = model.fit(data["x_train"], data["y_train"], epochs=config.finetune_epochs, batch_size=config.batch_size,
                        callbacks=[KeepMasks()], verbose=0, shuffle=True)
        history = {k: [round(float(v), 6) for v in values] for k, values in fit.history.items()}
    apply_masks()
    return model, {"target_sparsity": config.pruning_sparsity, "finetune_epochs": config.finetune_epochs,
                   "finetune_loss": history.get("loss", [])}


def _head(data: dict[str, Any]) -> dict[str, Any]:
    """The loss of the source's head (`keras_mlp.head_config`), regression's scaled by the training target's std."""
    import numpy as np

    from ml_tasks.training.keras_mlp import head_config

    task = data.get("task", "binary")
    std = float(np.std(data["y_train"])) if task == "regression" else 1.0
    return head_config(task, int(data.get("n_classes", 2)), std)


def _distil(data: dict[str, Any], teacher: Any, config: CompressionConfig) -> tuple[Any, dict[str, Any]]:
    """A smaller MLP with the source's head trained on alpha * teacher output + (1 - alpha) * label (binary: the
    probability; multiclass: the class distribution against the one-hot label; regression: the prediction,
    in standardised units through the same fixed rescaling the source has)."""
    import keras
    import numpy as np

    x_train = data["x_train"]
    task, k = data.get("task", "binary"), int(data.get("n_classes", 2))
    y_train = np.asarray(data["y_train"], dtype="float32")
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    x = inputs
    for i in range(config.distill_layers):
        x = keras.layers.Dense(config.distill_units, activation="relu", name=f"dense_{i}")(x)
    alpha = config.distill_alpha
    teacher = np.asarray(teacher, dtype="float32")
    if task == "multiclass":
        outputs = keras.layers.Dense(k, activation="softmax", dtype="float32", name="probabilities")(x)
        loss, weight = "categorical_crossentropy", None
        soft = (alpha * teacher + (1 - alpha) * np.eye(k, dtype="float32")[y_train.astype("int64")]).astype("float32")
    elif task == "regression":
        mean, std = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
        standardised = keras.layers.Dense(1, dtype="float32", name="standardised")(x)
        outputs = keras.layers.Rescaling(scale=std, offset=mean, dtype="float32", name="prediction")(standardised)
        loss, weight = "mean_squared_error", 1.0 / std**2
        soft = (alpha * teacher.reshape(-1) + (1 - alpha) * y_train).astype("float32")
    else:
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
        loss, weight = "binary_crossentropy", None
        soft = (alpha * teacher.reshape(-1) + (1 - alpha) * y_train).astype("float32")
    student = keras.Model(inputs, outputs, name="distilled_mlp")
    student.compile(optimizer=keras.optimizers.Adam(learning_rate=config.distill_learning_rate), loss=loss,
                    loss_weights=weight)
    fit = student.fit(x_train, soft, epochs=config.distill_epochs, batch_size=config.batch_size, verbose=0, shuffle=True)
    return student, {"units": config.distill_units, "layers": config.distill_layers, "alpha": config.distill_alpha,
                     "epochs": config.distill_epochs, "parameters": int(student.count_params()),
                     "distill_loss": [round(float(v), 6) for v in fit.history.get("loss", [])]}


# ---------------------------------------------------------------- MLflow


def _mlflow_run(model_name: str, version: str, config: CompressionConfig) -> str:
    """The MLflow run of this source version and artifact key: found by its tag, or created once."""
    from ml_tasks import tracking

    experiment_id = tracking.configure()
    client = tracking.client()
    key = f"{model_name}/{version}/{config.artifact_key}"
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_RUN}` = '{key}'", max_results=1)
    if found:
        return str(found[0].info.run_id)
    run = client.create_run(experiment_id, run_name=f"compress-{model_name}-v{version}",
                            tags={TAG_RUN: key, TAG_SOURCE_MODEL: model_name, TAG_SOURCE_VERSION: version})
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "keras", "pandas", "numpy", "scikit-learn", "tensorflow-cpu", "ai-edge-litert"]
    found = []
    for name in names:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return found


def _tags(model_name: str, version: str, config: CompressionConfig, result: CompressedModel) -> dict[str, str]:
    gate = "passed" if result.passed else "failed"
    tags = {
        TAG_KEY: f"{model_name}/{version}/{result.method}/{config.artifact_key}",
        TAG_SOURCE_MODEL: model_name,
        TAG_SOURCE_VERSION: version,
        TAG_METHOD: result.method,
        TAG_GATE: (f"{gate}: accuracy loss {result.accuracy_loss:.4f} vs max {config.max_accuracy_loss}"
                   if result.task == "binary" else
                   f"{gate}: {'relative RMSE increase' if result.task == 'regression' else 'argmax disagreement'} "
                   f"{result.quality_loss:.4f} vs max {config.max_accuracy_loss}"),
        f"{TAG_PREFIX}runtime": result.runtime,
        f"{TAG_PREFIX}size_bytes": str(result.size_bytes),
        f"{TAG_PREFIX}gzip_bytes": str(result.gzip_bytes),
        f"{TAG_PREFIX}latency_single_ms": f"{result.latency_single_ms:.4f}",
        f"{TAG_PREFIX}latency_batch_ms": f"{result.latency_batch_ms:.4f}",
        f"{TAG_PREFIX}accuracy": f"{result.accuracy:.6f}",
        f"{TAG_PREFIX}roc_auc": f"{result.roc_auc:.6f}",
        f"{TAG_PREFIX}accuracy_loss": f"{result.accuracy_loss:.6f}",
    }
    if result.sparsity is not None:
        tags[f"{TAG_PREFIX}sparsity"] = f"{result.sparsity:.4f}"
    return tags


def _source_signature(model_name: str, version: str) -> Any:
    """The source version's own signature (what its pyfunc returns for its task kind), or None."""
    try:
        from mlflow.models import get_model_info

        return get_model_info(f"models:/{model_name}/{version}").signature
    except Exception as exc:  # an old or odd version: fall back to the binary signature
        log.info("no signature of %s v%s to reuse: %s", model_name, version, exc)
        return None


def _signature(prepared_uri: str, transform_path: str) -> Any:
    """The original's signature: the raw feature columns of the test rows in, `probability` and `prediction` out."""
    import pandas as pd
    from mlflow.models import infer_signature

    from ml_tasks.constants import TEST_RAW_FILE
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.storage import local_path

    transform = FittedTransform.from_dict(json.loads(Path(transform_path).read_text()))
    example = pd.read_parquet(local_path(prepared_uri) / TEST_RAW_FILE, columns=transform.input_columns).head(5)
    output = pd.DataFrame({"probability": [0.5] * len(example), "prediction": [1] * len(example)})
    return infer_signature(example, output.astype({"probability": "float64", "prediction": "int64"}))


def _log_model(result: CompressedModel, run_id: str, signature: Any) -> str:
    import mlflow

    from ml_tasks.release.pyfunc import (
        EXPLANATION_ARTIFACT,
        EXPLANATION_FILE,
        KERAS_ARTIFACT,
        TARGET_ARTIFACT,
        TARGET_FILE,
        TRANSFORM_ARTIFACT,
        RatchetClassifier,
    )

    folder = Path(result.path).parent
    with mlflow.start_run(run_id=run_id):
        if result.runtime == "tflite":
            info = mlflow.pyfunc.log_model(name=result.method, loader_module=LOADER_MODULE, data_path=str(folder),
                                           signature=signature, pip_requirements=_pip_requirements())
        else:
            artifacts = {KERAS_ARTIFACT: result.path, TRANSFORM_ARTIFACT: str(folder / TRANSFORM_COPY)}
            if (folder / TARGET_FILE).is_file():  # the source's target record (TFLite: inside data_path)
                artifacts[TARGET_ARTIFACT] = str(folder / TARGET_FILE)
            if (folder / EXPLANATION_FILE).is_file():  # the source's baseline: explained as the source is
                artifacts[EXPLANATION_ARTIFACT] = str(folder / EXPLANATION_FILE)
            info = mlflow.pyfunc.log_model(name=result.method, python_model=RatchetClassifier(), artifacts=artifacts,
                                           signature=signature, pip_requirements=_pip_requirements())
    return str(info.model_uri)


def _register_all(model_name: str, version: str, config: CompressionConfig, results: dict[str, CompressedModel],
                  prepared_uri: str, transform_path: str, run_id: str, log_metrics: bool) -> dict[str, CompressedModel]:
    """Register every passing result (every result with `register_failed`) once; a rerun finds it by its key tag."""

    import mlflow

    from ml_tasks import tracking

    client = tracking.client()
    if log_metrics:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({f"compression.{m}.{k}": float(getattr(r, k)) for m, r in results.items()
                                for k in ("size_bytes", "gzip_bytes", "latency_single_ms", "latency_batch_ms", "accuracy",
                                          "roc_auc", "accuracy_loss", "quality_loss", "agreement", "rmse")
                                if not math.isnan(float(getattr(r, k)))})
    signature = None
    done: dict[str, CompressedModel] = {}
    # A compressed version carries its source's lineage: the data it was trained on, validation, the run.
    source_tags = client.get_model_version(model_name, version).tags
    lineage = {key: source_tags[key] for key in LINEAGE_TAGS if key in source_tags}
    for method, result in results.items():
        if not (result.passed or config.register_failed):
            done[method] = replace(result, registered_name=None, registered_version=None, reused_version=False)
            continue
        name = f"{model_name}_{method}"
        tags = {**lineage, **_explanation_tags(source_tags, result), **_tags(model_name, version, config, result)}
        existing = client.search_model_versions(f"name = '{name}' and tags.`{TAG_KEY}` = '{tags[TAG_KEY]}'")
        if existing:
            registered, reused = str(existing[0].version), True
            log.info("%s v%s already holds %s of %s v%s; reusing it", name, registered, method, model_name, version)
        else:
            if signature is None:
                signature = _source_signature(model_name, version) or _signature(prepared_uri, transform_path)
            uri = _log_model(result, run_id, signature)
            registered, reused = str(mlflow.register_model(uri, name, tags=tags).version), False
            log.info("registered %s v%s (%s of %s v%s)", name, registered, method, model_name, version)
        for key, value in tags.items():
            client.set_model_version_tag(name, registered, key, value)
        done[method] = replace(result, registered_name=name, registered_version=registered, reused_version=reused)
    return done


def _explanation_tags(source_tags: dict[str, str], result: CompressedModel) -> dict[str, str]:
    """What explains a compressed version: a Keras one is explained as its source (integrated gradients of its own
    network, from the source's baseline); a TFLite one cannot be (no network to differentiate: `/explain` answers
    501), which its tag says. Its top features are the source's, measured on the source's held-out rows."""
    source = json.loads(source_tags.get(TAG_EXPLAINER) or "{}")
    if result.runtime == "tflite":
        explainer = {"skipped": "a compressed TFLite runtime has no network to differentiate; /explain answers 501",
                     "source_explainer": source or None}
    else:
        explainer = {**source, "note": "integrated gradients of this compressed network; top features are the source's"}
    tags = {TAG_EXPLAINER: json.dumps(explainer, sort_keys=True)}
    if TAG_TOP_FEATURES in source_tags:
        tags[TAG_TOP_FEATURES] = source_tags[TAG_TOP_FEATURES]
    return tags


def _log_record(run_id: str, record_path: Path) -> None:
    from ml_tasks import tracking

    tracking.client().log_artifact(run_id, str(record_path), artifact_path="compression")
