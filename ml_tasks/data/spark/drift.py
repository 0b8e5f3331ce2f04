"""The drift reference and the nightly drift check on Spark, in `ml_tasks.data.drift`'s format and measures.

The reference is computed with aggregations over every training row: exact counts, null fractions, moments and
bin fractions; bin edges and the KS quantile sketch from Spark's approximate percentiles (rank error at most
`relative_error` x rows, recorded in the reference). The check of a new drop measures a seeded uniform sample of
at most `SKETCH_ROWS` rows with the pandas engine's `compare`, which already samples above that size.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.data import drift
from ml_tasks.data.spark.columns import QUANTILE_ACCURACY, col, numeric_value, value_counts

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


def _numeric_references(frame: DataFrame, names: list[str], rows: int, bins: int, quantiles: int) -> dict[str, Any]:
    from pyspark.sql import functions as F

    if not names:
        return {}
    edges_p = [k / bins for k in range(1, bins)]
    sketch_p = [k / quantiles for k in range(1, quantiles + 1)]
    aggregates = []
    for i, name in enumerate(names):
        value = _finite(name)
        # One sketch per column serves the bin edges and the KS quantiles.
        aggregates += [F.count(value).alias(f"n{i}"), F.avg(value).alias(f"mean{i}"),
                       F.stddev_pop(value).alias(f"std{i}"), F.min(value).alias(f"min{i}"),
                       F.max(value).alias(f"max{i}"),
                       F.percentile_approx(value, edges_p + sketch_p, QUANTILE_ACCURACY).alias(f"q{i}")]
    row = frame.agg(*aggregates).collect()[0]
    edges = {n: sorted(set(float(e) for e in row[f"q{i}"][:len(edges_p)])) if row[f"n{i}"] else []
             for i, n in enumerate(names)}
    below = frame.agg(*[F.count(F.when(_finite(n) <= F.lit(e), 1)).alias(f"b{i}_{j}")
                        for i, n in enumerate(names) for j, e in enumerate(edges[n])]).collect()[0] \
        if any(edges.values()) else None
    out = {}
    for i, name in enumerate(names):
        count = int(row[f"n{i}"])
        moments: dict[str, float | None] = {"mean": None, "std": None, "min": None, "max": None}
        fractions = [0.0] * (len(edges[name]) + 1)
        sketch: list[float] = []
        if count:
            moments = {"mean": drift._finite(float(row[f"mean{i}"])), "std": drift._finite(float(row[f"std{i}"])),
                       "min": float(row[f"min{i}"]), "max": float(row[f"max{i}"])}
            at_or_below = [int(below[f"b{i}_{j}"]) for j in range(len(edges[name]))] if below else []
            cumulative = [0, *at_or_below, count]
            fractions = [(cumulative[k + 1] - cumulative[k]) / count for k in range(len(cumulative) - 1)]
            sketch = [float(q) for q in row[f"q{i}"][len(edges_p):]]
            sketch[-1] = float(row[f"max{i}"])
            sketch = [float(row[f"min{i}"]), *sketch]
        out[name] = {"count": count, "null_fraction": (rows - count) / rows, **moments, "edges": edges[name],
                     "bin_fractions": fractions, "quantiles": sketch, "sketch_exact": False}
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
                      relative_error: float = 1.0 / QUANTILE_ACCURACY,
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
        "label": label, "engine": "spark", "quantile_relative_error": relative_error,
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
