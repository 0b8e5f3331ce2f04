"""Preparation on Spark: the pandas engine's cleaning, split and transform, computed with Spark aggregations.

What comes out is what `ml_tasks.data.preparation.prepare` writes: train/val/test Parquet files of float32 features
and labels, the raw test rows, the same `FittedTransform` (JSON), the drift reference and the preparation record.
Training, evaluation and serving read them unchanged.

Where Spark differs from pandas, by design and stated in the record (`approximations`):
- Medians, outlier quantiles and split thresholds are Spark's approximate percentiles: a value of the data whose
  rank is within `relative_error` x rows of the exact rank (pandas interpolates between the two middle values).
- A row's split is decided by a 64-bit hash of its declared values and the seed, not by a shuffle: a rerun gives
  the same splits on any cluster, equal rows always land in the same split (no leakage of a duplicate into test),
  and for classification each class is cut at its own hash quantiles, so the split is stratified.
- Each set's partitions are ordered by that hash (a pseudo-random order, no shuffle) and merged into one Parquet
  file on the driver, row group by row group, so the driver never holds a set. A set's fingerprint is its rows'
  hashes summed with the transform, so it does not depend on how Spark partitioned them.
The drift reference is the pandas engine's (`ml_tasks.data.spark.drift`). The driver holds counts, quantiles,
vocabularies, and for the drift reference's sketch at most `drift.SKETCH_ROWS` values of each numeric column; every
other pass over rows runs on the executors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.config import RunContext
from ml_tasks.constants import (
    DRIFT_REFERENCE_FILE,
    PREPARATION_FILE,
    TEST_FILE,
    TEST_RAW_FILE,
    TRAIN_FILE,
    TRANSFORM_FILE,
    VALIDATION_SPLIT_FILE,
)
from ml_tasks.data.augmentation import augment_plan
from ml_tasks.data.preparation import MIN_ROWS_PER_SPLIT, SPLIT_FRACTIONS, PreparedData, _policies
from ml_tasks.data.spark.columns import QUANTILE_ACCURACY, RELATIVE_ERROR, col, numeric_value, value_counts
from ml_tasks.data.spark.frames import read_drop
from ml_tasks.data.transform import MIN_STD, MISSING_CATEGORY, FittedTransform, NumericFit, category_text, fit_categorical_counts
from ml_tasks.datasets import DatasetSpec, get_dataset
from ml_tasks.datasets.spec import SPARK_ENGINE
from ml_tasks.errors import ConfigError, DataError
from ml_tasks.io import atomic_dir, write_json

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

# More distinct target values than this in a classification drop is a declaration error, not a class list.
MAX_TARGET_VALUES = 1_000
_HASH, _U, _LABEL, _SPLIT = "_ratchet_hash", "_ratchet_u", "_ratchet_label", "_ratchet_split"
SPLITS = ("train", "val", "test")
_U_SCALE = 2**53


def _check_numeric(frame: DataFrame, spec: DatasetSpec, names: list[str], what: str) -> None:
    """Refuse text in numeric columns, naming the column, the row count and examples (Spark would read null)."""
    from pyspark.sql import functions as F

    textual = [n for n in names if frame.schema[n].dataType.typeName() == "string"]
    if not textual:
        return
    bad = {n: col(n).isNotNull() & col(n).try_cast("double").isNull() for n in textual}
    counts = frame.agg(*[F.sum(F.when(c, 1).otherwise(0)).alias(n) for n, c in bad.items()]).collect()[0]
    for name in textual:
        if counts[name]:
            examples = [r[0] for r in frame.filter(bad[name]).select(col(name)).distinct().limit(5).collect()]
            if what == "target":
                raise DataError(f"{spec.name}: regression target {name!r} holds {counts[name]} non-numeric values, "
                                f"e.g. {examples}")
            raise DataError(f"numeric column {name!r} holds non-numeric values: {counts[name]} rows, e.g. {examples}")


def _label_expression(frame: DataFrame, spec: DatasetSpec, folder: Path) -> Column:
    """The target as the prepared label: the class code of the declared classes, or the value (regression)."""
    from pyspark.sql import functions as F

    if not spec.is_classification:
        _check_numeric(frame, spec, [spec.target], "target")
        return numeric_value(spec.target)
    values = frame.groupBy(col(spec.target)).count().limit(MAX_TARGET_VALUES + 1).collect()
    if len(values) > MAX_TARGET_VALUES:
        raise DataError(f"{folder}: target {spec.target!r} has over {MAX_TARGET_VALUES} distinct values; "
                        f"declared classes: {list(spec.classes)!r}")
    lookup = {category_text(c): i for i, c in enumerate(spec.classes)}
    unknown = {category_text(v): n for v, n in values if v is not None and category_text(v) not in lookup}
    if unknown:
        counts = dict(list(unknown.items())[:5])
        raise DataError(f"{folder}: target {spec.target!r} has values the declaration does not list "
                        f"(rows per value: {counts}); declared classes: {list(spec.classes)!r}")
    label: Column = F.lit(None).cast("long")
    for value, _ in values:
        if value is not None and category_text(value) != MISSING_CATEGORY:
            label = F.when(col(spec.target) == F.lit(value), F.lit(lookup[category_text(value)]).cast("long")) \
                .otherwise(label)
    return label


def _missing(name: str, spec: DatasetSpec) -> Column:
    return numeric_value(name).isNull() if name in spec.numeric_features else col(name).isNull()


def _clean(frame: DataFrame, spec: DatasetSpec) -> tuple[DataFrame, dict[str, int]]:
    """Drop missing targets, then rows with missing features under "drop_row"; refuse them under "fail"."""
    from pyspark.sql import functions as F

    policies = {**dict.fromkeys(spec.numeric_features, spec.numeric_missing),
                **dict.fromkeys(spec.categorical_features, spec.categorical_missing)}
    failing = [n for n, p in policies.items() if p == "fail"]
    dropping = [n for n, p in policies.items() if p == "drop_row"]
    target_present = col(_LABEL).isNotNull()
    any_dropped = F.lit(False)
    for name in dropping:
        any_dropped = any_dropped | _missing(name, spec)
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(~target_present, 1).otherwise(0)).alias("missing_target"),
        F.sum(F.when(target_present & any_dropped, 1).otherwise(0)).alias("dropped"),
        *[F.sum(F.when(target_present & ~any_dropped & _missing(n, spec), 1).otherwise(0)).alias(f"fail_{i}")
          for i, n in enumerate(failing)],
    ).collect()[0]
    found = {name: int(row[f"fail_{i}"]) for i, name in enumerate(failing) if row[f"fail_{i}"]}
    if found:
        raise DataError(f"dataset {spec.name!r} declares missing values a failure; found {found}")
    counts = {"rows": int(row["rows"]), "missing_target_dropped": int(row["missing_target"] or 0),
              "missing_rows_dropped": int(row["dropped"] or 0)}
    return frame.filter(target_present & ~any_dropped), counts


def _split_thresholds(rows: DataFrame, spec: DatasetSpec) -> dict[Any, tuple[float, float]]:
    """Per class (classification) or overall: the hash values that cut 70/15/15 (too few rows or classes raise)."""
    from pyspark.sql import functions as F

    cuts = F.percentile_approx(col(_U), [SPLIT_FRACTIONS[0], SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]],
                               QUANTILE_ACCURACY).alias("cuts")
    if not spec.is_classification:
        row = rows.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(col(_LABEL)).alias("distinct"), cuts).collect()[0]
        if row["n"] < 3 * MIN_ROWS_PER_SPLIT or row["distinct"] < 2:
            raise DataError(f"target {spec.target!r}: {row['n']} rows with {row['distinct']} distinct values; "
                            f"a regression needs at least {3 * MIN_ROWS_PER_SPLIT} rows and two values")
        return {None: tuple(row["cuts"])}
    per_class = rows.groupBy(col(_LABEL)).agg(F.count(F.lit(1)).alias("n"), cuts).collect()
    counts = {int(r[_LABEL]): int(r["n"]) for r in per_class}
    if len(counts) < 2:
        only = spec.classes[next(iter(counts))] if counts else None
        raise DataError(f"target {spec.target!r} has a single class ({only!r}); nothing to learn")
    if min(counts.values()) < MIN_ROWS_PER_SPLIT:
        raise DataError(f"target {spec.target!r}: the rarest class has fewer than {MIN_ROWS_PER_SPLIT} rows")
    return {int(r[_LABEL]): tuple(r["cuts"]) for r in per_class}


def _split_expression(thresholds: dict[Any, tuple[float, float]]) -> Column:
    from pyspark.sql import functions as F

    def cut(low: float, high: float) -> Column:
        return F.when(col(_U) <= low, 0).when(col(_U) <= high, 1).otherwise(2)

    if None in thresholds:
        return cut(*thresholds[None])
    expression: Column = F.lit(2)
    for label, (low, high) in thresholds.items():
        expression = F.when(col(_LABEL) == label, cut(low, high)).otherwise(expression)
    return expression


def _quantiles(frame: DataFrame, names: list[str], probabilities: list[float]) -> dict[str, list[float | None]]:
    """Approximate quantiles of numeric columns (missing ignored), all in one pass."""
    from pyspark.sql import functions as F

    if not names:
        return {}
    row = frame.agg(*[F.percentile_approx(numeric_value(n), probabilities, QUANTILE_ACCURACY).alias(f"q{i}")
                      for i, n in enumerate(names)]).collect()[0]
    return {n: list(row[f"q{i}"]) if row[f"q{i}"] is not None else [None] * len(probabilities)
            for i, n in enumerate(names)}


def _outlier_bounds(train: DataFrame, spec: DatasetSpec) -> dict[str, tuple[float, float]]:
    names = list(spec.numeric_features)
    if spec.outlier_method == "quantile":
        found = _quantiles(train, names, list(spec.outlier_quantiles))
        return {n: (q[0], q[1]) if q[0] is not None else (-math.inf, math.inf) for n, q in found.items()}  # type: ignore[misc]
    found = _quantiles(train, names, [0.25, 0.75])
    factor = spec.outlier_iqr_factor
    return {n: (q[0] - factor * (q[1] - q[0]), q[1] + factor * (q[1] - q[0]))  # type: ignore[operator]
            if q[0] is not None else (-math.inf, math.inf) for n, q in found.items()}


def _clipped(name: str, bounds: tuple[float, float] | None) -> Column:
    from pyspark.sql import functions as F

    value = numeric_value(name)
    if bounds is None:
        return value
    low, high = bounds
    if math.isfinite(low):
        value = F.when(value < low, F.lit(low)).otherwise(value)
    if math.isfinite(high):
        value = F.when(value > high, F.lit(high)).otherwise(value)
    return value


def _numeric_fits(train: DataFrame, spec: DatasetSpec, bounds: dict[str, tuple[float, float]],
                  clip: bool) -> list[tuple[str, NumericFit]]:
    """`fit_numeric` of each numeric in one pass over the training rows: the median (approximate; clipping is
    monotone, so it is the clipped median of the raw values), and the exact mean and population variance of the
    present clipped values, from which those of the imputed values follow without a second pass."""
    from pyspark.sql import functions as F

    names = list(spec.numeric_features)
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for i, name in enumerate(names):
        clipped = _clipped(name, bounds.get(name) if clip else None)
        aggregates += [F.count(clipped).alias(f"n{i}"), F.avg(clipped).alias(f"m{i}"), F.var_pop(clipped).alias(f"v{i}"),
                       F.percentile_approx(clipped, [0.5], QUANTILE_ACCURACY).alias(f"q{i}")]
    row = train.agg(*aggregates).collect()[0]
    total = int(row["rows"])
    fits = []
    for i, name in enumerate(names):
        present = int(row[f"n{i}"])
        fit_bounds = bounds.get(name) if clip else None
        if not present:
            fits.append((name, NumericFit(median=0.0, fill=0.0, mean=0.0, std=1.0, bounds=fit_bounds)))
            continue
        median, mean_present, var_present = float(row[f"q{i}"][0]), float(row[f"m{i}"]), float(row[f"v{i}"])
        fill = mean_present if spec.numeric_missing == "mean" else median
        missing = total - present
        mean = (present * mean_present + missing * fill) / total
        variance = (present * (var_present + (mean_present - mean) ** 2) + missing * (fill - mean) ** 2) / total
        std = math.sqrt(max(variance, 0.0))
        fits.append((name, NumericFit(median=median, fill=fill, mean=mean, std=std if std > MIN_STD else 1.0,
                                      bounds=fit_bounds)))
    return fits


def _categorical_fit(name: str, values: dict[Any, list[int]], train_missing: int,
                     spec: DatasetSpec) -> tuple[str, list[str], str]:
    by_text: dict[str, int] = {}
    for value, per_split in values.items():
        by_text[category_text(value)] = by_text.get(category_text(value), 0) + per_split[0]
    vocab, fill = fit_categorical_counts(by_text, train_missing, spec.categorical_missing)
    return name, vocab, fill


def _feature_columns(transform: FittedTransform, raw_values: dict[str, dict[Any, list[int]]]) -> list[Column]:
    """The transform as Spark expressions: float32 standardised numerics, then one-hot categories (unseen: zeros).

    A one-hot column is 1 where the raw value's category text is that category: the raw values of each category
    are listed (they are few), so 1, 1.0 and "1" agree exactly as in `FittedTransform.one_hot_into`.
    """
    from pyspark.sql import functions as F

    out = []
    for j, name in enumerate(transform.numeric):
        bounds = (transform.clip_low[j], transform.clip_high[j]) if transform.clip_low else None
        fill = transform.numeric_fill[j] if transform.numeric_fill else transform.medians[j]
        value = F.coalesce(_clipped(name, None), F.lit(fill))
        if bounds is not None:
            value = F.least(F.greatest(value, F.lit(bounds[0])), F.lit(bounds[1]))
        out.append(((value - F.lit(transform.means[j])) / F.lit(transform.stds[j])).cast("float").alias(name))
    for k, (name, vocab) in enumerate(transform.categorical):
        fill_category = transform.categorical_fill[k] if transform.categorical_fill else MISSING_CATEGORY
        raw_by_text: dict[str, list[Any]] = {}
        for value in raw_values[name]:
            raw_by_text.setdefault(category_text(value), []).append(value)
        for category in vocab:
            raws = raw_by_text.get(category, [])
            hit = col(name).isin(*raws) if raws else F.lit(False)
            if category == fill_category:
                hit = hit | col(name).isNull()
            out.append(F.coalesce(hit, F.lit(False)).cast("float").alias(f"{name}={category}"))
    return out


def _merge_parts(folder: Path, target: Path, dictionary_columns: list[str]) -> None:
    """Spark's part files (in part order) as one Parquet file, row group by row group."""
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    writer = None
    try:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(target, table.schema, use_dictionary=dictionary_columns,
                                              compression="none")
                writer.write_table(table)
            if writer is None and source.metadata.num_rows == 0 and part == parts[-1]:
                writer = pq.ParquetWriter(target, source.schema_arrow, compression="none")
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataError(f"{folder}: Spark wrote no part files")
    shutil.rmtree(folder)


def _write_in_hash_order(frame: DataFrame, scratch: Path, target: Path, dictionary_columns: list[str]) -> None:
    """Each partition ordered by the row hash (a fixed pseudo-random order, no shuffle), merged into one file."""
    frame.sortWithinPartitions(col(_HASH)).drop(_HASH).write.mode("overwrite").parquet(scratch.as_uri())
    _merge_parts(scratch, target, dictionary_columns)


def prepare(ctx: RunContext, staging_uri: str, spark: SparkSession, seed: int = 0, *,
            augment: dict[str, Any] | None = None, cv_folds: int = 0, spec: DatasetSpec | None = None) -> PreparedData:
    """Clean, split, fit the transform and write the prepared sets of a staged drop, on Spark."""
    from pyspark.sql import functions as F

    from ml_tasks.storage import local_path

    spec = spec or get_dataset(ctx.dataset)
    if augment_plan(augment) or cv_folds:
        raise ConfigError(f"{spec.name}: augmentation and cross-validation folds are pandas-engine features; the "
                          f"spark engine prepares train/val/test splits only (set them to 0, or engine: pandas)")
    folder = local_path(staging_uri)
    raw = read_drop(spark, folder)
    missing_columns = [c for c in spec.columns if c not in raw.columns]
    if missing_columns:
        raise DataError(f"drop lacks declared columns {missing_columns} of dataset {spec.name!r}")
    raw = raw.select(*[col(c) for c in spec.columns])
    _check_numeric(raw, spec, list(spec.numeric_features), "feature")
    rows_in = raw.count()
    frame = raw
    if spec.drop_duplicates:
        frame = frame.dropDuplicates(list(spec.columns))
    frame = frame.withColumn(_LABEL, _label_expression(raw, spec, folder))
    frame = frame.withColumn(_HASH, F.xxhash64(*[col(c) for c in spec.columns], F.lit(seed)))
    frame = frame.withColumn(_U, F.pmod(col(_HASH), F.lit(_U_SCALE)).cast("double") / F.lit(float(_U_SCALE)))
    target_dir = ctx.prepared_dir
    with atomic_dir(target_dir) as tmp:
        scratch = tmp / "_spark"
        # The deduplicated, labelled rows are written once; every later pass reads only the columns it needs.
        frame.write.mode("overwrite").parquet((scratch / "rows").as_uri())
        staged = spark.read.parquet((scratch / "rows").as_uri())
        kept, counts = _clean(staged, spec)
        counts["duplicates_dropped"] = rows_in - counts["rows"]
        rows = kept.withColumn(_SPLIT, _split_expression(_split_thresholds(kept, spec))).drop(_U)
        result = _prepare_split_rows(rows, ctx, spec, scratch, tmp, target_dir, seed, rows_in, counts)
        shutil.rmtree(scratch, ignore_errors=True)
        write_json(tmp / PREPARATION_FILE, result.to_dict())
    log.info("prepared %s on Spark: %s rows in, %s out (train %s, val %s, test %s), %s features; fingerprint %s",
             ctx.tracking_key, result.rows_in, result.rows_out, result.train_rows, result.val_rows, result.test_rows,
             result.n_features, result.fingerprint[:12])
    return result


def _prepare_split_rows(rows: DataFrame, ctx: RunContext, spec: DatasetSpec, scratch: Path, tmp: Path,
                        target_dir: Path, seed: int, rows_in: int, counts: dict[str, int]) -> PreparedData:
    from pyspark.sql import functions as F

    from ml_tasks.data.spark import drift as spark_drift

    train = rows.filter(col(_SPLIT) == 0)
    bounds: dict[str, tuple[float, float]] = {}
    outliers_per_column: dict[str, int] = {}
    outlier_rows_dropped = 0
    if spec.outliers != "keep":
        bounds = _outlier_bounds(train, spec)
        outside = {n: (numeric_value(n) < F.lit(low)) | (numeric_value(n) > F.lit(high))
                   for n, (low, high) in bounds.items()}
        any_outside = F.lit(False)
        for condition in outside.values():
            any_outside = any_outside | F.coalesce(condition, F.lit(False))
        found = train.agg(*[F.sum(F.when(c, 1).otherwise(0)).alias(f"o{i}") for i, c in enumerate(outside.values())],
                          F.sum(F.when(any_outside, 1).otherwise(0)).alias("rows")).collect()[0]
        outliers_per_column = {n: int(found[f"o{i}"] or 0) for i, n in enumerate(outside)}
        if spec.outliers == "drop_row":
            outlier_rows_dropped = int(found["rows"] or 0)
            rows = rows.filter((col(_SPLIT) != 0) | ~any_outside)
            train = rows.filter(col(_SPLIT) == 0)
    numeric_fits = _numeric_fits(train, spec, bounds, clip=spec.outliers == "clip")
    raw_values: dict[str, dict[Any, list[int]]] = {}
    categorical_fits = []
    imputed: dict[str, int] = {}
    value_counts_by_split = value_counts(rows, [*spec.categorical_features, spec.target], col(_SPLIT), len(SPLITS))
    for name in spec.categorical_features:
        values, missing = value_counts_by_split[name]
        raw_values[name] = values
        imputed[name] = sum(missing)
        categorical_fits.append(_categorical_fit(name, values, missing[0], spec))
    transform = FittedTransform.from_fits(numeric_fits, categorical_fits)
    names = transform.feature_names
    n_numeric = len(transform.numeric)
    clip_bounds = {n: f.bounds for n, f in numeric_fits if f.bounds is not None}
    split_counts = rows.groupBy(col(_SPLIT)).agg(
        F.count(F.lit(1)).alias("n"),
        *[F.sum(F.when(numeric_value(n).isNull(), 1).otherwise(0)).alias(f"m{i}")
          for i, n in enumerate(spec.numeric_features)],
        *[F.sum(F.when((numeric_value(n) < F.lit(b[0])) | (numeric_value(n) > F.lit(b[1])), 1).otherwise(0)).alias(f"c{i}")
          for i, (n, b) in enumerate(clip_bounds.items())],
        *([F.sum(col(_LABEL)).alias("sum"), F.sum(col(_LABEL) * col(_LABEL)).alias("squares")]
          if not spec.is_classification else []),
        *[F.sum(F.when(col(_LABEL) == code, 1).otherwise(0)).alias(f"k{code}")
          for code in range(len(spec.classes))],
        F.sum(col(_HASH).cast("decimal(38,0)")).alias("split_hash"),
        F.sum(F.xxhash64(*[col(c) for c in spec.columns]).cast("decimal(38,0)")).alias("xx"),
        F.sum(F.hash(*[col(c) for c in spec.columns]).cast("decimal(38,0)")).alias("murmur"),
    ).collect()
    per_split = {int(r[_SPLIT]): r for r in split_counts}
    sizes = [int(per_split[s]["n"]) if s in per_split else 0 for s in range(3)]
    for i, name in enumerate(spec.numeric_features):
        imputed[name] = sum(int(r[f"m{i}"] or 0) for r in per_split.values())
    clipped = {n: sum(int(r[f"c{i}"] or 0) for r in per_split.values()) for i, n in enumerate(clip_bounds)}
    label_type = "long" if spec.is_classification else "double"
    features = _feature_columns(transform, raw_values)
    fingerprints = {}
    transform_json = json.dumps(transform.to_dict(), sort_keys=True)
    # One scan writes all three sets (a folder per split), uncompressed as the pandas engine writes them.
    rows.select(*features, col(_LABEL).cast(label_type).alias(spec.target), col(_SPLIT), col(_HASH)) \
        .sortWithinPartitions(col(_HASH)).drop(_HASH).write.mode("overwrite").partitionBy(_SPLIT) \
        .option("compression", "none").parquet((scratch / "sets").as_uri())
    for code, (split_name, file_name) in enumerate((("train", TRAIN_FILE), ("val", VALIDATION_SPLIT_FILE),
                                                   ("test", TEST_FILE))):
        _merge_parts(scratch / "sets" / f"{_SPLIT}={code}", tmp / file_name, names[n_numeric:])
        split_row = per_split.get(code)
        fingerprints[split_name] = hashlib.sha256(
            f"{transform_json}|{sizes[code]}|{split_row['split_hash'] if split_row else 0}".encode()).hexdigest()
    test_raw = rows.filter(col(_SPLIT) == 2).select(*[col(c) for c in spec.columns], col(_HASH))
    _write_in_hash_order(test_raw, scratch / "test_raw", tmp / TEST_RAW_FILE, [])
    write_json(tmp / TRANSFORM_FILE, transform.to_dict())
    train_counts = {name: ({value: c[0] for value, c in values.items()}, missing[0])
                    for name, (values, missing) in value_counts_by_split.items()}
    reference = spark_drift.compute_reference(train, spec, counts=train_counts)
    reference["training_rows"] = sizes[0]
    reference["sampled_rows"] = sizes[0]
    write_json(tmp / DRIFT_REFERENCE_FILE, reference)
    digest = hashlib.sha256()
    digest.update(repr([spec.numeric_features, spec.categorical_features, spec.target, SPARK_ENGINE]).encode())
    digest.update(f"{sum(sizes)}:{sum(r['xx'] or 0 for r in per_split.values())}:"
                  f"{sum(r['murmur'] or 0 for r in per_split.values())}".encode())
    fingerprint = digest.hexdigest()
    class_counts: dict[str, int] = {}
    positive_rate = None
    target_summary: dict[str, float] = {}
    total = sum(sizes)
    if spec.is_classification:
        class_counts = {category_text(c): sum(int(r[f"k{code}"] or 0) for r in per_split.values())
                        for code, c in enumerate(spec.classes)}
        if spec.task == "binary" and total:
            positive_rate = round(class_counts[category_text(spec.classes[1])] / total, 6)
    elif total:
        s = sum(float(r["sum"] or 0.0) for r in per_split.values())
        squares = sum(float(r["squares"] or 0.0) for r in per_split.values())
        mean = s / total
        target_summary = {"mean": round(mean, 6), "std": round(max(squares / total - mean * mean, 0.0) ** 0.5, 6)}
    return PreparedData(
        prepared_uri=target_dir.as_uri(), fingerprint=fingerprint, rows_in=rows_in, rows_out=total,
        duplicates_dropped=counts["duplicates_dropped"], missing_target_dropped=counts["missing_target_dropped"],
        missing_values_imputed=sum(imputed.values()), train_rows=sizes[0], val_rows=sizes[1], test_rows=sizes[2],
        n_features=len(names), positive_rate=positive_rate, missing_rows_dropped=counts["missing_rows_dropped"],
        outlier_rows_dropped=outlier_rows_dropped, imputed_per_column={k: v for k, v in imputed.items() if v},
        clipped_per_column={k: v for k, v in clipped.items() if v}, outliers_per_column=outliers_per_column,
        split_fingerprints=fingerprints, policies=_policies(spec), task=spec.task, class_counts=class_counts,
        target_summary=target_summary, engine=SPARK_ENGINE,
        approximations={"quantile_relative_error": RELATIVE_ERROR, "split": "xxhash64 of the row and the seed",
                        "seed": seed},
    )
