"""Declared data sets: where they come from, their target, feature types, suite.

Importing this package is cheap (no pandas): DAG files read the names for
their Params. Loaders import their heavy dependencies inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_tasks.errors import ConfigError


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
    positive_label: int = 1
    slices: tuple[str, ...] = field(default=())
    # Exact duplicate rows are dropped unless they are legitimate (survey data).
    drop_duplicates: bool = True

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def columns(self) -> tuple[str, ...]:
        return self.features + (self.target,)


ACS_EMPLOYMENT = DatasetSpec(
    name="acs_employment",
    description=(
        "US Census American Community Survey, Massachusetts, 2015-2018: is a person employed? "
        "277,677 real rows shipped inside the nannyml wheel; one drop per survey year."
    ),
    target="employed",
    numeric_features=("AGEP",),
    categorical_features=(
        "SCHL", "MAR", "RELP", "DIS", "ESP", "CIT", "MIG", "MIL", "ANC",
        "NATIVITY", "DEAR", "DEYE", "DREM", "SEX", "RAC1P",
    ),
    suite="acs_employment",
    registered_model="acs_employment_classifier",
    slices=("SEX", "RAC1P"),
    # Different people share the same 16 coded answers: duplicates are real rows here.
    drop_duplicates=False,
)

SYNTHETIC = DatasetSpec(
    name="synthetic",
    description="Seeded synthetic binary classification data: any size, drift and corruption on demand.",
    target="label",
    numeric_features=("x0", "x1", "x2", "x3", "x4", "x5"),
    categorical_features=("segment", "channel"),
    suite="synthetic",
    registered_model="synthetic_classifier",
    slices=("segment",),
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (ACS_EMPLOYMENT, SYNTHETIC)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; declared: {', '.join(sorted(DATASETS))}") from None
