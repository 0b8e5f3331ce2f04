"""What a data set declaration holds: `DatasetSpec`, its task kinds and cleaning policies (no I/O, no pandas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ml_tasks.errors import ConfigError

# Declared cleaning policies. Missing values and outlier bounds are fitted on the training split
# only and saved in the transform, so serving imputes and clips exactly as training did.
NUMERIC_MISSING_POLICIES = ("median", "mean", "drop_row", "fail")
CATEGORICAL_MISSING_POLICIES = ("constant", "most_frequent", "drop_row", "fail")
OUTLIER_POLICIES = ("keep", "clip", "drop_row")
OUTLIER_METHODS = ("quantile", "iqr")
BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
# The engine of the data stages (validation, drift, preparation): ml_tasks.data.engine.
PANDAS_ENGINE, SPARK_ENGINE, AUTO_ENGINE = "pandas", "spark", "auto"
ENGINES = (PANDAS_ENGINE, SPARK_ENGINE, AUTO_ENGINE)
DEFAULT_SPARK_ABOVE_MB = 1024
TASK_KINDS = (BINARY, MULTICLASS, REGRESSION)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    target: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    # The expectation suite in expectations/suites/<suite>.json.
    suite: str
    registered_model: str
    primary_metric: str = "roc_auc"
    # The task kind, and for classification the target's values in code order: the prepared label of a row is the
    # index of its value here. Binary: (negative, positive), so code 1 is the positive class. Regression: ().
    task: str = BINARY
    classes: tuple[Any, ...] = (0, 1)
    slices: tuple[str, ...] = field(default=())
    # Exact duplicate rows are dropped unless they are legitimate (survey data).
    drop_duplicates: bool = True
    # Missing feature values: numerics take the train median or mean, categoricals the constant
    # "__missing__" category or the train's most frequent one; "drop_row" drops the row before the
    # split (serving, which cannot drop, imputes the train median / "__missing__"), "fail" refuses the drop.
    numeric_missing: str = "median"
    categorical_missing: str = "constant"
    # Numeric outliers, with bounds from train quantiles or Tukey's IQR fences: "clip" saves the bounds
    # in the transform (serving clips too); "drop_row" drops those rows from the training split only.
    outliers: str = "keep"
    outlier_method: str = "quantile"
    outlier_quantiles: tuple[float, float] = (0.001, 0.999)
    outlier_iqr_factor: float = 1.5
    # Behavioural tests of every candidate (Made-With-ML style), run in the evaluate stage:
    # features whose values must not move predictions (shuffled: mean |change in probability| at most 0.05) ...
    invariant_features: tuple[str, ...] = ()
    # ... and easy cases: (name, pandas query on raw rows, expected label, least accuracy on them).
    easy_cases: tuple[tuple[str, str, int, float], ...] = ()
    # Easy cases that must run: too few held-out rows for one of these fails the gate instead of skipping it.
    required_behaviour: tuple[str, ...] = ()
    # A first champion must beat the naive baseline (class prior / training mean) on the same held-out rows by this
    # much of the primary metric, with the gate's confidence: no hand-set number is needed, and a useless model fails.
    baseline_margin: float = 0.0
    # Columns of the drop that are not features (ids, free text, timestamps): validated by the suite, never learned.
    excluded_columns: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    # Where a night's drop is: a URI template with {ds} (the run's date, YYYY-MM-DD) and {ds_nodash}; "" = landing.
    source_template: str = ""
    # The generated DAG's schedule (cron or an Airflow preset); None: triggered only (by hand or by its Asset).
    schedule: str | None = None
    # Gate thresholds (metric -> value) as the DAG Params' defaults for this data set.
    absolute_thresholds: dict[str, float] = field(default_factory=dict)
    change_thresholds: dict[str, float] = field(default_factory=dict)
    slice_thresholds: dict[str, float] = field(default_factory=dict)
    robustness_thresholds: dict[str, float] = field(default_factory=dict)
    # Tuning defaults as the DAG Params' defaults (model_family, tuning_trials, tuning_sampler, ...).
    tuning: dict[str, Any] = field(default_factory=dict)
    # What drives the model (ml_tasks.explain.drift): the least NDCG@10 of the candidate's attribution ranking against
    # the champion's at the gate, and of the served rows' against the champion's evaluation in monitoring.
    # None: measured and recorded, not judged.
    attribution_gate_min_ndcg: float | None = None
    attribution_monitoring_min_ndcg: float | None = None
    # pandas, spark, or auto: spark when the drop's data files exceed spark_above_mb (ml_tasks.data.engine).
    engine: str = PANDAS_ENGINE
    spark_above_mb: int = DEFAULT_SPARK_ABOVE_MB

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("numeric_missing", self.numeric_missing, NUMERIC_MISSING_POLICIES),
            ("categorical_missing", self.categorical_missing, CATEGORICAL_MISSING_POLICIES),
            ("outliers", self.outliers, OUTLIER_POLICIES),
            ("outlier_method", self.outlier_method, OUTLIER_METHODS),
            ("engine", self.engine, ENGINES),
        ):
            if value not in allowed:
                raise ConfigError(f"dataset {self.name!r}: {name}={value!r}; allowed: {', '.join(allowed)}")
        low, high = self.outlier_quantiles
        if not 0.0 <= low < high <= 1.0:
            raise ConfigError(f"dataset {self.name!r}: outlier_quantiles {self.outlier_quantiles} must be 0 <= low < high <= 1")
        if self.task not in TASK_KINDS:
            raise ConfigError(f"dataset {self.name!r}: task={self.task!r}; allowed: {', '.join(TASK_KINDS)}")
        wanted = {BINARY: "exactly 2", MULTICLASS: "at least 3", REGRESSION: "no"}[self.task]
        count_ok = {BINARY: len(self.classes) == 2, MULTICLASS: len(self.classes) >= 3,
                    REGRESSION: not self.classes}[self.task]
        if not count_ok or len(set(map(str, self.classes))) != len(self.classes):
            raise ConfigError(f"dataset {self.name!r}: a {self.task} target has {wanted} distinct classes; "
                              f"classes={list(self.classes)!r}")
        if self.outlier_iqr_factor <= 0:
            raise ConfigError(f"dataset {self.name!r}: outlier_iqr_factor must be positive")

    @property
    def is_classification(self) -> bool:
        return self.task != REGRESSION

    @property
    def positive_label(self) -> Any:
        """The positive class of a binary target (its original value)."""
        if self.task != BINARY:
            raise ConfigError(f"dataset {self.name!r} is {self.task}: it has no positive class")
        return self.classes[1]

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def columns(self) -> tuple[str, ...]:
        return self.features + (self.target,)
