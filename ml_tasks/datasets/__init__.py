"""Declared data sets: what a declaration holds (`DatasetSpec`) and where the declarations are.

No data set is declared in Python: each is a committed YAML file in
`datasets/` (see `ml_tasks.datasets.declarations`), which `ratchet datasets
add` writes from a drop for a person to review. Importing this package is
cheap (no pandas): DAG files read the declarations at parse time. Loaders of
the built-in data import their heavy dependencies inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_tasks.datasets.spec import (
    BINARY,
    CATEGORICAL_MISSING_POLICIES,
    MULTICLASS,
    NUMERIC_MISSING_POLICIES,
    OUTLIER_METHODS,
    OUTLIER_POLICIES,
    REGRESSION,
    TASK_KINDS,
    DatasetSpec,
)
from ml_tasks.errors import ConfigError

__all__ = ["BINARY", "CATEGORICAL_MISSING_POLICIES", "MULTICLASS", "NUMERIC_MISSING_POLICIES", "OUTLIER_METHODS",
           "OUTLIER_POLICIES", "REGRESSION", "TASK_KINDS", "DatasetSpec", "declarations_dir", "declared", "get_dataset",
           "landed_asset_uri"]

LANDED_ASSET_URI = "ratchet://datasets/{dataset}/landed"


def landed_asset_uri(dataset: str) -> str:
    """The Asset a data set's landed drops update: an event on it starts that data set's own retraining DAG."""
    return LANDED_ASSET_URI.format(dataset=dataset)


def declarations_dir() -> Path:
    """The folder of the committed declarations (`datasets/` in the project root unless RATCHET_DATASETS_DIR says)."""
    from ml_tasks.settings import get_settings

    return get_settings().datasets_dir


def declared() -> dict[str, DatasetSpec]:
    """Every declared data set, by name, read from the declaration files (cached until one changes)."""
    from ml_tasks.datasets.declarations import load_folder

    return load_folder(declarations_dir())


def get_dataset(name: str) -> DatasetSpec:
    specs = declared()
    try:
        return specs[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; declared in {declarations_dir()}: "
                          f"{', '.join(sorted(specs)) or 'none'}") from None


def __getattr__(name: str) -> Any:
    """`DATASETS` and the two built-in data sets, read from their declaration files when first asked for."""
    if name == "DATASETS":
        return declared()
    if name in ("ACS_EMPLOYMENT", "SYNTHETIC"):
        return get_dataset(name.lower())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
