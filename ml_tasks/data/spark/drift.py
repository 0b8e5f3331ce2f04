"""The drift reference and the nightly drift check on Spark, in `ml_tasks.data.drift`'s format and measures.

The reference is the pandas engine's, computed as it computes it: exact counts, null fractions, moments and bin
fractions over every training row (aggregations); the bin edges and the KS quantile sketch from each column's sorted
values, all of them up to `SKETCH_ROWS` (then equal to the pandas engine's), else a seeded uniform sample of that
many, brought to the driver (`sketch_exact` says which). The check of a new drop measures a seeded uniform sample of
at most `SKETCH_ROWS` rows with the pandas engine's `compare`, which already samples above that size.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.data import drift
from ml_tasks.data.spark.columns import col, numeric_value, value_counts

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from ml_tasks.config import DriftThresholds
    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)

_SAMPLE_SEED = 20240601


def _finite(name: str) -> Column:
    from pyspark.sql import functions as F

    value = numeric_value(name)
    return F.when(F.abs(value) == F.lit(float("inf")), F.lit(None).cast("double")).otherwise(value)


def _sorted_values(frame: DataFrame, names: list[str], counts: dict[str, int], rows: int) -> dict[str, Any]:
    """Per column: its finite values sorted, all of them up to `drift.SKETCH_ROWS` (as the pandas engine sorts
    them), else a seeded uniform sample of that many; and whether they are all."""
    import numpy as np
    from pyspark.sql import functions as F

    out: dict[str, Any] = {}
    whole = [n for n in names if 0 < counts[n] <= drift.SKETCH_ROWS]
    sampled = [n for n in names if counts[n] > drift.SKETCH_ROWS]
    if whole and rows <= drift.SKETCH_ROWS:
        table = frame.select(*[_finite(n).alias(f"v{i}") for i, n in enumerate(whole)]).toArrow()
        for i, name in enumerate(whole):
            out[name] = (np.sort(table.column(f"v{i}").drop_null().to_numpy()), True)
    else:  # few rows of many have values: each such column's values alone
        for name in whole:
            table = frame.select(_finite(name).alias("v")).where(F.col("v").isNotNull()).toArrow()
            out[name] = (np.sort(table.column("v").to_numpy()), True)
    if sampled:
        fraction = min(1.0, 1.1 * drift.SKETCH_ROWS / min(counts[n] for n in sampled))
        table = frame.select(*[_finite(n).alias(f"v{i}") for i, n in enumerate(sampled)]) \
            .sample(withReplacement=False, fraction=fraction, seed=_SAMPLE_SEED).toArrow()
        rng = np.random.default_rng(_SAMPLE_SEED)
        for i, name in enumerate(sampled):
            values = table.column(f"v{i}").drop_null().to_numpy()
            if len(values) > drift.SKETCH_ROWS:
                values = rng.choice(values, size=drift.SKETCH_ROWS, replace=False)
            out[name] = (np.sort(values), False)
    return out


def _numeric_references(frame: DataFrame, names: list[str], rows: int, bins: int, quantiles: int) -> dict[str, Any]:
    """`drift`'s numeric reference of each column: exact moments and bin fractions from aggregations, the bin edges
    and the sketch from the sorted values `_sorted_values` brings to the driver (at most `SKETCH_ROWS` each)."""
    from pyspark.sql import functions as F

    if not names:
        return {}
    aggregates = []
    for i, name in enumerate(names):
        value = _finite(name)
        aggregates += [F.count(value).alias(f"n{i}"), F.avg(value).alias(f"mean{i}"),
                       F.stddev_pop(value).alias(f"std{i}"), F.min(value).alias(f"min{i}"),
                       F.max(value).alias(f"max{i}")]
    row = frame.agg(*aggregates).collect()[0]
    counts = {n: int(row[f"n{i}"]) for i, n in enumerate(names)}
    values = _sorted_values(frame, names, counts, rows)
    sketches = {n: drift.sketch_of_sorted(values[n][0], bins, quantiles, float(row[f"min{i}"]), float(row[f"max{i}"]))
                for i, n in enumerate(names) if counts[n]}
    # Bin fractions are exact: from the sorted values where they are all, else counted over every row.
    counted = [n for n in sketches if not values[n][1] and sketches[n][0]]
    below = frame.agg(*[F.count(F.when(_finite(n) <= F.lit(e), 1)).alias(f"b{i}_{j}")
                        for i, n in enumerate(counted) for j, e in enumerate(sketches[n][0])]).collect()[0] \
        if counted else None
    out = {}
    for i, name in enumerate(names):
        count = counts[name]
        moments: dict[str, float | None] = {"mean": None, "std": None, "min": None, "max": None}
        edges: list[float] = []
        fractions = [0.0]
        sketch: list[float] = []
        if count:
            moments = {"mean": drift._finite(float(row[f"mean{i}"])), "std": drift._finite(float(row[f"std{i}"])),
                       "min": float(row[f"min{i}"]), "max": float(row[f"max{i}"])}
            edges, sketch = sketches[name]
            if below is not None and name in counted:
                k = counted.index(name)
                cumulative = [0, *[int(below[f"b{k}_{j}"]) for j in range(len(edges))], count]
                fractions = [(cumulative[m + 1] - cumulative[m]) / count for m in range(len(cumulative) - 1)]
            else:
                fractions = drift.bin_fractions(values[name][0], edges)
        out[name] = {"count": count, "null_fraction": (rows - count) / rows, **moments, "edges": edges,
                     "bin_fractions": fractions, "quantiles": sketch,
                     "sketch_exact": bool(count == 0 or values[name][1])}
    return out


def _categorical_reference(values: dict[Any, int], missing: int, rows: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for value, n in values.items():
        if n:
            key = drift._category_key(value)
            counts[key] = counts.get(key, 0) + int(n)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return drift.categorical_reference_from_counts(ordered, missing, rows)


def compute_reference(frame: DataFrame, spec: DatasetSpec, bins: int = 10, quantiles: int = 1000,
                      counts: dict[str, tuple[dict[Any, int], int]] | None = None) -> dict[str, Any]:
    """`drift.compute_reference` of the rows of `frame` (raw declared columns), by Spark aggregations.

    `counts`: each categorical's (and a class target's) rows per raw value and missing rows in `frame`, when the
    caller has them already; otherwise one grouping-sets job counts them."""
    from pyspark.sql import functions as F

    from ml_tasks.errors import ConfigError, DataError

    if bins < 2 or quantiles < 10:
        raise ConfigError(f"drift reference needs bins >= 2 and quantiles >= 10, got bins={bins} quantiles={quantiles}")
    rows = frame.count()
    if rows == 0:
        raise DataError("cannot compute a drift reference from an empty training frame")
    numeric_names = list(spec.numeric_features) + ([] if spec.is_classification else [spec.target])
    numeric = _numeric_references(frame, numeric_names, rows, bins, quantiles)
    counted = [*spec.categorical_features, *([spec.target] if spec.is_classification else [])]
    if counts is None:
        counts = {name: ({v: c[0] for v, c in values.items()}, missing[0])
                  for name, (values, missing) in value_counts(frame, counted, F.lit(0), 1).items()}
    label: dict[str, Any]
    if spec.is_classification:
        label = {"column": spec.target, **_categorical_reference(*counts[spec.target], rows)}
    else:
        label = {"column": spec.target, "kind": "numeric", **numeric.pop(spec.target)}
    reference = {
        "format_version": drift.FORMAT_VERSION, "dataset": spec.name, "rows": rows, "bins": bins,
        "quantiles": quantiles, "numeric": numeric,
        "categorical": {name: _categorical_reference(*counts[name], rows) for name in spec.categorical_features},
        "label": label, "engine": "spark",
    }
    log.info("drift reference of %s on Spark: %d rows, %d numeric and %d categorical features",
             spec.name, rows, len(numeric), len(spec.categorical_features))
    return reference


def compare_drop(spark: SparkSession, folder: Path, reference: dict[str, Any], spec: DatasetSpec,
                 thresholds: DriftThresholds | None = None) -> drift.DriftReport:
    """`drift.compare` of a staged drop: every row up to `SKETCH_ROWS`, else a seeded uniform sample of that many."""
    from ml_tasks.data.spark.frames import read_drop

    frame = read_drop(spark, folder)
    columns = [c for c in spec.columns if c in frame.columns]
    frame = frame.select(*[col(c) for c in columns])
    rows = frame.count()
    if rows > drift.SKETCH_ROWS:
        frame = frame.sample(withReplacement=False, fraction=min(1.0, 1.02 * drift.SKETCH_ROWS / rows),
                             seed=_SAMPLE_SEED).limit(drift.SKETCH_ROWS)
    sample = frame.toArrow().to_pandas()
    report = drift.compare(reference, sample, spec, thresholds)
    if len(sample) < rows:
        log.info("drift of %s measured on a seeded sample of %d of the drop's %d rows", spec.name, len(sample), rows)
    return replace(report, rows_current=rows)
