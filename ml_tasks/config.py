"""Typed configuration of one nightly run, built from the DAG's Params.

Validation happens here as well as in the Params' JSON schema, so a call from
the CLI or a test gets the same refusals as the Airflow trigger form.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_tasks.constants import EVALUATION_METRICS, STAGE_RECORD_DIR
from ml_tasks.datasets import get_dataset
from ml_tasks.errors import ConfigError, UnsafePathError
from ml_tasks.settings import get_settings

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
    roots += [Path(p) for p in (RATCHET_LOCAL_ROOTS.get() or "").split(os.pathsep) if p.strip()]
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
    trials: int = 6
    epochs: int = 6
    sampler: str = "tpe"
    seed: int = 0
    max_train_rows: int = 20_000
    family: str = "keras_mlp"
    pruner: str = "median"
    # Trial slots (Airflow mapped tasks) sharing the one stored study.
    workers: int = 1

    def __post_init__(self) -> None:
        from ml_tasks.training.families import check_family

        if not 1 <= self.trials <= 500:
            raise ConfigError(f"tuning trials must be 1..500, got {self.trials}")
        if not 1 <= self.epochs <= 200:
            raise ConfigError(f"tuning epochs must be 1..200, got {self.epochs}")
        if self.sampler not in TUNING_SAMPLERS:
            raise ConfigError(f"tuning sampler must be one of {', '.join(TUNING_SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in TUNING_PRUNERS:
            raise ConfigError(f"tuning pruner must be one of {', '.join(TUNING_PRUNERS)}, got {self.pruner!r}")
        if not 1 <= self.workers <= MAX_TUNING_WORKERS:
            raise ConfigError(f"tuning workers must be 1..{MAX_TUNING_WORKERS}, got {self.workers}")
        check_family(self.family)


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 30
    patience: int = 4
    batch_size: int = 512
    seed: int = 0
    family: str = "keras_mlp"
    # FGSM adversarial training of Keras models (0: off), in standardised units of the numeric inputs.
    adversarial_epsilon: float = 0.0
    # Hosts (mapped `train_worker` tasks) of one MultiWorkerMirroredStrategy cluster; 1: the single-host path.
    workers: int = 1

    def __post_init__(self) -> None:
        from ml_tasks.constants import MAX_TRAIN_WORKERS
        from ml_tasks.training.families import check_family

        if not 1 <= self.max_epochs <= 1000:
            raise ConfigError(f"max_epochs must be 1..1000, got {self.max_epochs}")
        check_family(self.family)
        if not 0.0 <= self.adversarial_epsilon <= 1.0:
            raise ConfigError(f"adversarial_epsilon must be 0..1, got {self.adversarial_epsilon}")
        if self.adversarial_epsilon and self.family != "keras_mlp":
            raise ConfigError(f"adversarial training is for Keras models, not {self.family}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_TRAIN_WORKERS:
            raise ConfigError(f"train_workers must be 1..{MAX_TRAIN_WORKERS}, got {self.workers!r}")
        if self.workers > 1 and self.family != "keras_mlp":
            raise ConfigError(f"train_workers={self.workers}: only keras_mlp trains across hosts "
                              f"(MultiWorkerMirroredStrategy); {self.family} trains on one host: set train_workers to 1")
        if self.workers > 1 and self.adversarial_epsilon:
            raise ConfigError(f"train_workers={self.workers}: adversarial training runs on one host only "
                              "(the multi-worker loop has no FGSM step): set train_workers to 1 or adversarial_epsilon to 0")


@dataclass(frozen=True)
class GateConfig:
    """TFX-style thresholds: absolute bounds, and changes relative to the champion.

    For higher-is-better metrics an absolute threshold is a minimum and a change
    threshold the least improvement; for lower-is-better metrics (log loss) an
    absolute threshold is a maximum and a change threshold the least decrease.
    """

    absolute: dict[str, float] = field(default_factory=dict)
    change: dict[str, float] = field(default_factory=dict)
    # Absolute thresholds every declared slice (e.g. SEX=2) must meet as well.
    slice_absolute: dict[str, float] = field(default_factory=dict)
    # A change passes only when the paired bootstrap interval's lower bound clears it.
    require_confidence: bool = True

    def __post_init__(self) -> None:
        for kind, thresholds in (("absolute", self.absolute), ("change", self.change), ("slice", self.slice_absolute)):
            for metric, value in thresholds.items():
                if metric not in EVALUATION_METRICS:
                    raise ConfigError(
                        f"{kind} threshold on unknown metric {metric!r}; known: {', '.join(EVALUATION_METRICS)}"
                    )
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{kind} threshold for {metric} must be a number, got {value!r}")


DRIFT_ACTIONS = ("warn", "stop")


@dataclass(frozen=True)
class DriftConfig:
    """Drift of a drop from the champion's training data: thresholds, and whether it stops the run."""

    action: str = "warn"
    psi: float = 0.2
    ks: float = 0.1
    js: float = 0.1

    def __post_init__(self) -> None:
        if self.action not in DRIFT_ACTIONS:
            raise ConfigError(f"drift action must be one of {DRIFT_ACTIONS}, got {self.action!r}")
        for name in ("psi", "ks", "js"):
            value = getattr(self, name)
            upper = 10 if name == "psi" else 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
                raise ConfigError(f"drift threshold {name} must be a number in (0, {upper}], got {value!r}")

    @property
    def thresholds(self) -> dict[str, float]:
        return {"psi": float(self.psi), "ks": float(self.ks), "js": float(self.js)}

    @classmethod
    def from_params(cls, action: Any, thresholds: Any) -> DriftConfig:
        given = dict(thresholds or {})
        unknown = sorted(set(given) - {"psi", "ks", "js"})
        if unknown:
            raise ConfigError(f"unknown drift thresholds {unknown}; known: psi, ks, js")
        return cls(action=str(action or cls.action), **given)


def augment_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The DAG's flat augmentation Params as `preparation.prepare`'s `augment` (0 switches a method off)."""
    augment: dict[str, Any] = {}
    copies = int(params.get("augment_noise_copies", 0))
    if copies:
        augment["noise"] = {"copies": copies, "scale": float(params.get("augment_noise_scale", 0.05))}
    ratio = float(params.get("smote_ratio", 0.0))
    if ratio:
        augment["smote"] = {"ratio": ratio}
    return augment


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
    require_approval: bool = False
    # Preparation: augmentation of the training split ({"noise": {...}, "smote": {...}}) and k-fold ids.
    augment: dict[str, Any] = field(default_factory=dict)
    cv_folds: int = 0

    def __post_init__(self) -> None:
        get_dataset(self.dataset)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunConfig:
        """Build from the DAG's Params (a flat JSON object)."""
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
                              adversarial_epsilon=float(params.get("adversarial_epsilon", 0.0)),
                              workers=int(params.get("train_workers", TrainConfig.workers))),
            gate=GateConfig(
                absolute={k: float(v) for k, v in dict(params.get("absolute_thresholds") or {}).items()},
                change={k: float(v) for k, v in dict(params.get("change_thresholds") or {}).items()},
                slice_absolute={k: float(v) for k, v in dict(params.get("slice_thresholds") or {}).items()},
                require_confidence=bool(params.get("require_confidence", True)),
            ),
            drift=DriftConfig.from_params(params.get("drift_action"), params.get("drift_thresholds")),
            require_approval=bool(params.get("require_approval", False)),
            augment=augment_from_params(params),
            cv_folds=int(params.get("cv_folds", 0)),
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
