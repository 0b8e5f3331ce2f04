"""The ACS employment data (US Census, Massachusetts) bundled in the nannyml wheel.

nannyml is installed for these Parquet files only and never imported: we find
its folder with `importlib.util.find_spec`, which does not execute the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.datasets import get_dataset
from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

YEARS = (2015, 2016, 2017, 2018)


def data_dir() -> Path:
    spec = importlib.util.find_spec("nannyml")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the nannyml wheel (which carries the ACS employment files) is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_all() -> pd.DataFrame:
    """All 277,677 rows with the target, the survey year, and the declared columns."""
    import pandas as pd

    acs = get_dataset("acs_employment")  # its declaration: datasets/acs_employment.yaml
    folder = data_dir()
    reference = pd.read_parquet(folder / "employment_MA_reference.pq")
    analysis = pd.read_parquet(folder / "employment_MA_analysis.pq")
    targets = pd.read_parquet(folder / "employment_MA_analysis_target.pq")
    analysis = analysis.merge(targets, on="id", how="inner", validate="one_to_one")
    frame = pd.concat([reference, analysis], ignore_index=True)
    columns = list(acs.columns)
    out = frame[[*columns, "year"]].copy()
    for column in acs.categorical_features:
        out[column] = out[column].astype("int64")
    out["AGEP"] = out["AGEP"].astype("float64")
    out[acs.target] = out[acs.target].astype("int64")
    return out


def load_year(year: int) -> pd.DataFrame:
    """One survey year as a drop: the declared columns in their declared order."""
    if year not in YEARS:
        raise ConfigError(f"ACS employment has years {YEARS}, not {year}")
    frame = load_all()
    return frame.loc[frame["year"] == year, list(get_dataset("acs_employment").columns)].reset_index(drop=True)
