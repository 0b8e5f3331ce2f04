"""Typed configuration of one nightly run, built from the DAG's Params.

Every knob a DAG Param sets is declared once here, as a dataclass field with its default and bounds
(`ml_tasks.params.knob`); the DAG builds its Params from these fields and the configs check the same
bounds, so a call from the CLI or a test gets the same refusals as the Airflow trigger form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ml_tasks.constants import ALL_METRICS, MAX_TRAIN_WORKERS, ROBUSTNESS_MEASURES, STAGE_RECORD_DIR, TASK_METRICS
from ml_tasks.datasets import get_dataset
from ml_tasks.errors import ConfigError, UnsafePathError
from ml_tasks.params import check_knobs, knob, same_knob
from ml_tasks.settings import get_settings
from ml_tasks.training.families import KERAS_MLP, MODEL_FAMILIES

_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}")

DEFAULT_ABSOLUTE_THRESHOLDS: dict[str, float] = {"roc_auc": 0.70, "accuracy": 0.65}
DEFAULT_CHANGE_THRESHOLDS: dict[str, float] = {"roc_auc": 0.001}


def safe_key(raw: str) -> str:
    """A path-safe partition name: no separators, no dot-dot, never empty."""
    key = _SAFE_KEY.sub("_", raw).strip("._")
    if not key:
        raise UnsafePathError(f"{raw!r} gives an empty partition name")
    return key[:120]


def checked_name(raw: str, what: str) -> str:
    """A name from outside (a suite, a run key) that becomes a path segment: refused, not rewritten."""
    if not isinstance(raw, str) or not _PLAIN_NAME.fullmatch(raw) or ".." in raw:
        raise UnsafePathError(f"{what} {raw!r} is not a plain name (letters, digits, '_', '-', '.'; no '..')")
    return raw


def local_roots() -> list[Path]:
    """Folders a file:// URI from outside (a DAG Param) may point into: RATCHET_HOME and RATCHET_LOCAL_ROOTS."""
    import os

    from ml_tasks.environment_variables import RATCHET_LOCAL_ROOTS

    roots = [get_settings().home]
    roots += [Path(p) for p in RATCHET_LOCAL_ROOTS.get().split(os.pathsep) if p.strip()]
    return [root.resolve() for root in roots]


def confined_uri(uri: str, what: str) -> str:
    """A URI from outside: a local one (file://) must resolve inside `local_roots()`, symlinks followed.

    Remote URIs (s3://, hdfs://) are confined by their own credentials; their keys are checked when copied.
    A trigger form must not read /etc or write over the scheduler's files through a `file:///` Param.
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.scheme != "file":
        return uri
    if parts.netloc not in ("", "localhost"):
        raise UnsafePathError(f"{what} {uri!r}: a file:// URI names a host ({parts.netloc!r})")
    path = Path(unquote(parts.path)).resolve()
    roots = local_roots()
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise UnsafePathError(f"{what} {uri!r} resolves to {path}, outside the allowed local roots "
                              f"({', '.join(map(str, roots))}); add a folder to RATCHET_LOCAL_ROOTS to allow it")
    return uri


def run_key_for(data_interval_start: Any | None, run_id: str | None) -> str:
    """Partition by the data interval; manual runs without one by their run id."""
    if data_interval_start is not None:
        return safe_key(data_interval_start.strftime("%Y%m%dT%H%M%SZ"))
    if run_id:
        return safe_key(run_id)
    raise ConfigError("a run needs a data interval or a run id to key its outputs")


TUNING_SAMPLERS = ("tpe", "random", "grid")
TUNING_PRUNERS = ("median", "hyperband", "none")
MAX_TUNING_WORKERS = 8


@dataclass(frozen=True)
class TuneConfig:
    trials: int = knob(6, "tuning_trials", minimum=1, maximum=500)
    epochs: int = knob(6, "tuning_epochs", minimum=1, maximum=200)
    sampler: str = knob("tpe", "tuning_sampler", choices=TUNING_SAMPLERS)
    seed: int = 0
    max_train_rows: int = 20_000
    family: str = knob(KERAS_MLP, "model_family", choices=MODEL_FAMILIES)
    pruner: str = knob("median", "tuning_pruner", choices=TUNING_PRUNERS)
    # Trial slots (Airflow mapped tasks) sharing the one stored study.
    workers: int = knob(1, "tuning_workers", minimum=1, maximum=MAX_TUNING_WORKERS)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = knob(30, "max_epochs", minimum=1, maximum=1000)
    patience: int = 4
    batch_size: int = 512
    seed: int = 0
    family: str = same_knob(TuneConfig, "family")
    # FGSM adversarial training of Keras models (0: off), in standardised units of the numeric inputs.
    adversarial_epsilon: float = knob(0.0, "adversarial_epsilon", minimum=0, maximum=1)
    # Hosts (mapped `train_worker` tasks) of one MultiWorkerMirroredStrategy cluster; 1: the single-host path.
    workers: int = knob(1, "train_workers", minimum=1, maximum=MAX_TRAIN_WORKERS)

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.adversarial_epsilon and self.family != KERAS_MLP:
            raise ConfigError(f"adversarial training is for Keras models, not {self.family}")
        if self.workers > 1 and self.family != KERAS_MLP:
            raise ConfigError(f"train_workers={self.workers}: only keras_mlp trains across hosts "
                              f"(MultiWorkerMirroredStrategy); {self.family} trains on one host: set train_workers to 1")
        if self.workers > 1 and self.adversarial_epsilon:
            raise ConfigError(f"train_workers={self.workers}: adversarial training runs on one host only "
                              "(the multi-worker loop has no FGSM step): set train_workers to 1 or adversarial_epsilon to 0")


# The JSON schema of a metric -> threshold mapping (the gate's Params): the rule GateConfig enforces. Null: the
# data set's declared thresholds.
METRIC_THRESHOLDS_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "propertyNames": {"enum": list(ALL_METRICS)},
    "additionalProperties": {"type": "number"},
}
ROBUSTNESS_THRESHOLDS_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "propertyNames": {"enum": list(ROBUSTNESS_MEASURES)},
    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
}


@dataclass(frozen=True)
class GateConfig:
    """TFX-style thresholds: absolute bounds, and changes relative to the champion.

    For higher-is-better metrics an absolute threshold is a minimum and a change
    threshold the least improvement; for lower-is-better metrics (log loss) an
    absolute threshold is a maximum and a change threshold the least decrease.
    A run's defaults are its data set's declared thresholds (`RunConfig.from_params`); a config built in code
    without a gate gets `DEFAULT_ABSOLUTE_THRESHOLDS` and `DEFAULT_CHANGE_THRESHOLDS` (binary metrics).
    """

    absolute: dict[str, float] = field(default_factory=dict)
    change: dict[str, float] = field(default_factory=dict)
    # Absolute thresholds every declared slice (e.g. SEX=2) must meet as well.
    slice_absolute: dict[str, float] = field(default_factory=dict)
    # A change passes only when the paired bootstrap interval's lower bound clears it.
    require_confidence: bool = knob(True, "require_confidence")
    # Least accuracy under each named perturbation (ROBUSTNESS_MEASURES: noise_0.5, fgsm_0.1, ...), so that a more
    # accurate but brittle candidate is kept out; a measure the model does not get (FGSM needs Keras) is skipped.
    robustness: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_knobs(self)
        for kind, thresholds in (("absolute", self.absolute), ("change", self.change), ("slice", self.slice_absolute)):
            for metric, value in thresholds.items():
                if metric not in ALL_METRICS:
                    raise ConfigError(
                        f"{kind} threshold on unknown metric {metric!r}; known: {', '.join(ALL_METRICS)}"
                    )
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{kind} threshold for {metric} must be a number, got {value!r}")
        for measure, value in self.robustness.items():
            if measure not in ROBUSTNESS_MEASURES:
                raise ConfigError(f"robustness threshold on unknown measure {measure!r}; known: {', '.join(ROBUSTNESS_MEASURES)}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ConfigError(f"robustness threshold for {measure} must be an accuracy in [0, 1], got {value!r}")


DRIFT_ACTIONS = ("warn", "stop")


@dataclass(frozen=True)
class DriftThresholds:
    """Per-feature drift limits: a feature drifts when a distance is strictly above its threshold.

    PSI (population stability index), KS (Kolmogorov-Smirnov, numeric features) and the Jensen-Shannon
    distance (categorical features); KS and JS never exceed 1. One object Param (`drift_thresholds`) sets them
    in nightly_retrain and model_monitoring alike.
    """

    psi: float = knob(0.2, "drift_thresholds.psi", exclusive_minimum=0, maximum=10)
    ks: float = knob(0.1, "drift_thresholds.ks", exclusive_minimum=0, maximum=1)
    js: float = knob(0.1, "drift_thresholds.js", exclusive_minimum=0, maximum=1)

    def __post_init__(self) -> None:
        check_knobs(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> DriftThresholds:
        """From the `drift_thresholds` Param: any of psi, ks, js (the others keep their defaults)."""
        given = dict(values or {})
        known = [f.name for f in fields(DriftThresholds)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"unknown drift thresholds {unknown}; known: {', '.join(known)}")
        return cls(**given)

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(DriftThresholds)}


@dataclass(frozen=True)
class DriftConfig(DriftThresholds):
    """Drift of a drop from the champion's training data: the thresholds, and whether drift stops the run."""

    action: str = knob("warn", "drift_action", choices=DRIFT_ACTIONS)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.to_dict()

    @classmethod
    def from_params(cls, action: Any, thresholds: Any) -> DriftConfig:
        return cls(action=str(action or cls.action), **DriftThresholds.from_dict(thresholds).to_dict())


@dataclass(frozen=True)
class AugmentConfig:
    """The DAG's flat augmentation Params (0 switches a method off); augmentation touches the training split only."""

    noise_copies: int = knob(0, "augment_noise_copies", minimum=0, maximum=5)
    noise_scale: float = knob(0.05, "augment_noise_scale", minimum=0, maximum=1)
    smote_ratio: float = knob(0.0, "smote_ratio", minimum=0, maximum=1)

    def __post_init__(self) -> None:
        check_knobs(self)

    def to_prepare_argument(self) -> dict[str, Any]:
        """As `preparation.prepare`'s `augment`: {"noise": {...}, "smote": {...}}, each only when on."""
        augment: dict[str, Any] = {}
        if self.noise_copies:
            augment["noise"] = {"copies": self.noise_copies, "scale": self.noise_scale}
        if self.smote_ratio:
            augment["smote"] = {"ratio": self.smote_ratio}
        return augment


def augment_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The DAG's flat augmentation Params as `preparation.prepare`'s `augment`."""
    return AugmentConfig(
        noise_copies=int(params.get("augment_noise_copies", AugmentConfig.noise_copies)),
        noise_scale=float(params.get("augment_noise_scale", AugmentConfig.noise_scale)),
        smote_ratio=float(params.get("smote_ratio", AugmentConfig.smote_ratio)),
    ).to_prepare_argument()


def _metric_thresholds(params: dict[str, Any], name: str, declared: dict[str, float]) -> dict[str, float]:
    """A threshold Param's metrics; left out or null: the data set's declared thresholds."""
    value = params.get(name)
    return {k: float(v) for k, v in dict(declared if value is None else value).items()}


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    source_uri: str = ""
    tune: TuneConfig = field(default_factory=TuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gate: GateConfig = field(
        default_factory=lambda: GateConfig(dict(DEFAULT_ABSOLUTE_THRESHOLDS), dict(DEFAULT_CHANGE_THRESHOLDS))
    )
    drift: DriftConfig = field(default_factory=DriftConfig)
    # A blessed, servable candidate waits for a reviewer's approval in Airflow before `champion` moves.
    require_approval: bool = knob(False, "require_approval")
    # Preparation: augmentation of the training split ({"noise": {...}, "smote": {...}}, see AugmentConfig)
    # and k-fold ids (0: none; preparation refuses 1).
    augment: dict[str, Any] = field(default_factory=dict)
    cv_folds: int = knob(0, "cv_folds", minimum=0, maximum=10)

    def __post_init__(self) -> None:
        spec = get_dataset(self.dataset)
        check_knobs(self)
        if self.gate == GateConfig(dict(DEFAULT_ABSOLUTE_THRESHOLDS), dict(DEFAULT_CHANGE_THRESHOLDS)):
            # Built in code without a gate: the data set's declared thresholds, as from_params gives.
            object.__setattr__(self, "gate", GateConfig(
                dict(spec.absolute_thresholds), dict(spec.change_thresholds), dict(spec.slice_thresholds),
                robustness=dict(spec.robustness_thresholds)))
        metrics = TASK_METRICS[spec.task]
        for kind, thresholds in (("absolute", self.gate.absolute), ("change", self.gate.change),
                                 ("slice", self.gate.slice_absolute)):
            wrong = sorted(set(thresholds) - set(metrics))
            if wrong:
                raise ConfigError(f"{kind} thresholds name {', '.join(wrong)}, which {self.dataset} ({spec.task}) does "
                                  f"not measure; its metrics: {', '.join(metrics)}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunConfig:
        """Build from the DAG's Params (a flat JSON object).

        A Param left out (or null) takes the data set's declared value (thresholds, tuning defaults), else the
        same default as the DAG's.
        """
        spec = get_dataset(str(params["dataset"]))
        params = {**spec.tuning, **{k: v for k, v in params.items() if v is not None}}
        return cls(
            dataset=str(params["dataset"]),
            source_uri=str(params.get("source_uri") or ""),
            tune=TuneConfig(
                trials=int(params.get("tuning_trials", TuneConfig.trials)),
                epochs=int(params.get("tuning_epochs", TuneConfig.epochs)),
                sampler=str(params.get("tuning_sampler", TuneConfig.sampler)),
                family=str(params.get("model_family", TuneConfig.family)),
                pruner=str(params.get("tuning_pruner", TuneConfig.pruner)),
                workers=int(params.get("tuning_workers", TuneConfig.workers)),
            ),
            train=TrainConfig(max_epochs=int(params.get("max_epochs", TrainConfig.max_epochs)),
                              family=str(params.get("model_family", TrainConfig.family)),
                              adversarial_epsilon=float(params.get("adversarial_epsilon", TrainConfig.adversarial_epsilon)),
                              workers=int(params.get("train_workers", TrainConfig.workers))),
            gate=GateConfig(
                absolute=_metric_thresholds(params, "absolute_thresholds", spec.absolute_thresholds),
                change=_metric_thresholds(params, "change_thresholds", spec.change_thresholds),
                slice_absolute=_metric_thresholds(params, "slice_thresholds", spec.slice_thresholds),
                robustness=_metric_thresholds(params, "robustness_thresholds", spec.robustness_thresholds),
                require_confidence=bool(params.get("require_confidence", GateConfig.require_confidence)),
            ),
            drift=DriftConfig.from_params(params.get("drift_action"), params.get("drift_thresholds")),
            require_approval=bool(params.get("require_approval", cls.require_approval)),
            augment=augment_from_params(params),
            cv_folds=int(params.get("cv_folds", cls.cv_folds)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunContext:
    """Who is running (Airflow ids) and which partition the outputs go to."""

    dataset: str
    run_key: str
    dag_id: str = ""
    run_id: str = ""

    def __post_init__(self) -> None:
        if safe_key(self.run_key) != self.run_key:
            raise UnsafePathError(f"run key {self.run_key!r} is not a safe partition name")
        get_dataset(self.dataset)

    def _partition(self, root: Path) -> Path:
        return root / self.dataset / self.run_key

    @property
    def staging_dir(self) -> Path:
        return self._partition(get_settings().staging)

    @property
    def prepared_dir(self) -> Path:
        return self._partition(get_settings().prepared)

    @property
    def model_dir(self) -> Path:
        return self._partition(get_settings().models)

    @property
    def report_dir(self) -> Path:
        return self._partition(get_settings().reports)

    @property
    def stage_dir(self) -> Path:
        return self.report_dir / STAGE_RECORD_DIR

    @property
    def tracking_key(self) -> str:
        return f"{self.dataset}/{self.run_key}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, str]) -> RunContext:
        return cls(**payload)
