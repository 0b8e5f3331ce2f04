"""Clean, split and transform a validated drop into train/val/test sets.

The split is stratified and seeded, so the same drop always gives the same
rows; the transform (imputed values, clip bounds, scaling, vocabularies) is
fitted on the training split only and saved beside the sets, so serving
applies the same transform. The test split is also kept raw, so the candidate
and the champion (each with its own transform) are scored on exactly the same
held-out rows. Cleaning follows the policies the data set declares, and every
row dropped, value imputed and value clipped is counted in the report.

Augmentation (noise copies, SMOTE-style oversampling; `ml_tasks.data.augmentation`)
touches the training split only, after the split, so validation and test stay real rows.

Scale: a drop of millions of rows is read one declared column at a time
(Parquet is columnar), held as one float64 array per numeric and int32 codes
per categorical, cleaned with boolean masks, split with index arrays, and each
split transformed column by column into one preallocated float32 matrix that
goes to Parquet without a pandas copy. Peak memory stays within a small
multiple of the data's own size.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.config import RunContext
from ml_tasks.constants import (
    DRIFT_REFERENCE_FILE,
    MLFLOW_DATA_DIR,
    PREPARATION_FILE,
    TAG_FINGERPRINT,
    TEST_FILE,
    TEST_RAW_FILE,
    TRAIN_FILE,
    TRANSFORM_FILE,
    VALIDATION_SPLIT_FILE,
)
from ml_tasks.data.augmentation import augment_into, augment_plan, rows_to_add
from ml_tasks.data.transform import FittedTransform, category_text, fit_categorical, fit_numeric, outlier_bounds, standardise_into
from ml_tasks.datasets import DatasetSpec, get_dataset
from ml_tasks.errors import ConfigError, DataError, UnreadableDataError
from ml_tasks.io import atomic_dir, data_files, read_table, write_json

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_ROWS_PER_SPLIT = 20
# One row per row of train.parquet: its cross-validation fold, and whether augmentation made it.
FOLDS_FILE = "folds.parquet"
FOLD_COLUMN = "fold"
AUGMENTED_COLUMN = "augmented"
# Drift reference statistics come from up to this many training rows (bins within ~0.001 of all rows).
DRIFT_SAMPLE_ROWS = 1_000_000
_MISSING_LABEL_HASH_KEY = "\x00missing"


@dataclass(frozen=True)
class PreparedData:
    prepared_uri: str
    fingerprint: str
    rows_in: int
    rows_out: int
    duplicates_dropped: int
    missing_target_dropped: int
    missing_values_imputed: int
    train_rows: int
    val_rows: int
    test_rows: int
    n_features: int
    # Binary: the positive class's share of the prepared rows (None for the other task kinds).
    positive_rate: float | None
    # Rows dropped because a feature was missing (policy "drop_row"), and training rows dropped as outliers.
    missing_rows_dropped: int = 0
    outlier_rows_dropped: int = 0
    imputed_per_column: dict[str, int] = field(default_factory=dict)
    clipped_per_column: dict[str, int] = field(default_factory=dict)
    # Training values beyond the outlier bounds (policies "clip" and "drop_row").
    outliers_per_column: dict[str, int] = field(default_factory=dict)
    # Rows augmentation added to train.parquet (included in train_rows), per method.
    augmented_rows: dict[str, int] = field(default_factory=dict)
    cv_folds: int = 0
    # A content hash of each prepared set as written (features and labels).
    split_fingerprints: dict[str, str] = field(default_factory=dict)
    policies: dict[str, Any] = field(default_factory=dict)
    task: str = "binary"
    # Classification: prepared rows per class (original values as text). Regression: the target's mean and std.
    class_counts: dict[str, int] = field(default_factory=dict)
    target_summary: dict[str, float] = field(default_factory=dict)
    # The engine that prepared the sets (ml_tasks.data.engine) and what it approximated (Spark: quantiles' error).
    engine: str = "pandas"
    approximations: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Category:
    codes: np.ndarray  # int32 per row, -1 where missing
    labels: list[str]  # the category text of each code
    dictionary: pa.Array  # the raw value of each code, to write the raw test rows with their own types
    raw_type: pa.DataType


@dataclass
class _Columns:
    """The declared columns of a drop: one array each, no frame."""

    n_rows: int
    numeric: dict[str, np.ndarray]  # float64, NaN where missing
    numeric_types: dict[str, pa.DataType]
    categorical: dict[str, _Category]
    target: np.ndarray  # float64, NaN where missing: the class code (classification) or the value (regression)


# ---------------------------------------------------------------- reading


def _open_sources(folder: Path, spec: DatasetSpec) -> list[Any]:
    """Each data file as a Parquet reader (columns read on demand) or, for CSV, a table of the declared columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = data_files(folder)
    if not files:
        raise DataError(f"{folder}: no CSV or Parquet files in the drop")
    sources: list[Any] = []
    first_columns: list[str] | None = None
    for path in files:
        source: Any
        if path.suffix.lower() == ".csv":
            frame = read_table(path)
            columns = [str(c) for c in frame.columns]
            _require_columns(columns, spec)
            try:
                source = pa.Table.from_pandas(frame[list(spec.columns)], preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise DataError(f"{path.name}: columns of mixed types: {exc}") from exc
        else:
            try:
                schema = pq.read_schema(path)
                # String categoricals come as dictionaries: int32 codes, not one string per row.
                strings = [c for c in spec.categorical_features if c in schema.names
                           and (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type))]
                source = pq.ParquetFile(path, read_dictionary=strings)
                rows = source.metadata.num_rows
            except Exception:  # read_table names the file and the cause
                read_table(path)
                raise
            if rows == 0:
                read_table(path)  # raises "has a header but no rows"
                raise UnreadableDataError(f"{path.name}: has a header but no rows")
            columns = [n for n in source.schema_arrow.names if not n.startswith("__index_level_")]
        if first_columns is None:
            first_columns = columns
            _require_columns(columns, spec)
        elif columns != first_columns:
            missing = sorted(set(first_columns) - set(columns))
            extra = sorted(set(columns) - set(first_columns))
            raise DataError(f"{path.name}: columns differ from {files[0].name} (missing {missing}, extra {extra}, or reordered)")
        sources.append((path, source))
    return sources


def _require_columns(columns: list[str], spec: DatasetSpec) -> None:
    missing = [c for c in spec.columns if c not in columns]
    if missing:
        raise DataError(f"drop lacks declared columns {missing} of dataset {spec.name!r}")


def _read_column(sources: list[Any], name: str) -> pa.ChunkedArray:
    """One column of every file, as one chunked array (no copy across files)."""
    import pandas as pd
    import pyarrow as pa

    parts: list[pa.ChunkedArray] = []
    for path, source in sources:
        if isinstance(source, pa.Table):
            parts.append(source.column(name))
            continue
        try:
            table = source.read(columns=[name])
        except Exception as exc:
            raise UnreadableDataError(f"{path.name}: column {name!r} not readable as Parquet: {type(exc).__name__}: {exc}") from exc
        parts.append(table.column(0))
    try:
        return pa.chunked_array([chunk for part in parts for chunk in part.chunks], type=parts[0].type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Files disagree on the column's type (int in one, float in another): unify as pandas' concat would.
        series = pd.concat([part.to_pandas() for part in parts], ignore_index=True)
        return pa.chunked_array([pa.array(series, from_pandas=True)])


def _as_float64(column: pa.ChunkedArray, name: str) -> np.ndarray:
    import numpy as np
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        floats = column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"numeric column {name!r} holds non-numeric values: {exc}") from exc
    return np.asarray(floats.to_numpy(), dtype="float64")


def _categories(column: pa.ChunkedArray) -> _Category:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    raw_type = column.type
    if pa.types.is_dictionary(raw_type):
        raw_type = raw_type.value_type
    elif pa.types.is_boolean(raw_type):
        column = column.cast(pa.int8())
    combined = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    del column
    encoded = combined if pa.types.is_dictionary(combined.type) else pc.dictionary_encode(combined)
    del combined
    codes = np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32)
    labels = [category_text(v) for v in encoded.dictionary.to_pylist()]
    return _Category(codes=codes, labels=labels, dictionary=encoded.dictionary, raw_type=raw_type)


def _target_labels(column: pa.ChunkedArray, spec: DatasetSpec, folder: Path) -> np.ndarray:
    """The target as float64 labels, NaN where missing: class codes of the declared classes, or regression values."""
    import numpy as np

    from ml_tasks.data import target as target_labels

    if not spec.is_classification:
        try:
            return _as_float64(column, spec.target)
        except DataError as exc:
            raise DataError(f"{folder}: regression target {spec.target!r} is not numeric: {exc}") from exc
    values = column.to_numpy() if column.num_chunks else np.empty(0, dtype=object)
    codes = target_labels.encode(values, spec, where=str(folder))
    out = codes.astype("float64")
    out[codes < 0] = np.nan
    return out


def read_columns(folder: Path, spec: DatasetSpec) -> _Columns:
    """The declared columns of a drop, one column read at a time; unreadable files raise naming the file."""
    import pyarrow as pa

    sources = _open_sources(folder, spec)
    numeric: dict[str, np.ndarray] = {}
    numeric_types: dict[str, pa.DataType] = {}
    for name in spec.numeric_features:
        column = _read_column(sources, name)
        numeric_types[name] = column.type
        numeric[name] = _as_float64(column, name)
        del column
        pa.default_memory_pool().release_unused()
    categorical = {name: _categories(_read_column(sources, name)) for name in spec.categorical_features}
    target = _target_labels(_read_column(sources, spec.target), spec, folder)
    pa.default_memory_pool().release_unused()
    n_rows = len(target)
    log.info("read %s rows of %s declared columns from %s files in %s", n_rows, len(spec.columns), len(sources), folder)
    return _Columns(n_rows=n_rows, numeric=numeric, numeric_types=numeric_types, categorical=categorical, target=target)


# ---------------------------------------------------------------- cleaning


def _row_hashes(columns: _Columns) -> np.ndarray:
    """A 64-bit hash per row over every declared column: equal rows, equal hashes."""
    import numpy as np
    from pandas.util import hash_array

    hashes = np.zeros(columns.n_rows, dtype=np.uint64)

    def mix(values: np.ndarray, position: int) -> None:
        np.bitwise_xor(hashes, values, out=hashes)
        np.multiply(hashes, np.uint64(1099511628211 + 2 * position), out=hashes)

    position = 0
    for values in columns.numeric.values():
        mix(hash_array(values), position)
        position += 1
    for category in columns.categorical.values():
        label_hashes = hash_array(np.asarray([*category.labels, _MISSING_LABEL_HASH_KEY], dtype=object))
        mix(label_hashes[category.codes], position)  # code -1 takes the last: missing
        position += 1
    mix(hash_array(columns.target), position)
    return hashes


def _duplicate_rows(columns: _Columns, hashes: np.ndarray) -> np.ndarray:
    """Positions of rows equal to an earlier row; hash matches are confirmed on the values, so collisions cannot drop rows."""
    import numpy as np
    import pandas as pd

    candidates = np.flatnonzero(pd.Series(hashes, copy=False).duplicated(keep=False).to_numpy())
    if candidates.size == 0:
        return candidates
    values: dict[str, Any] = {f"n{i}": v[candidates] for i, v in enumerate(columns.numeric.values())}
    values |= {f"c{i}": c.codes[candidates] for i, c in enumerate(columns.categorical.values())}
    values["target"] = columns.target[candidates]
    return candidates[pd.DataFrame(values).duplicated(keep="first").to_numpy()]


def _clean_rows(columns: _Columns, spec: DatasetSpec, hashes: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Positions of the rows kept, in drop order, and what was dropped: duplicates, missing targets, then missing features."""
    import numpy as np

    keep = np.ones(columns.n_rows, dtype=bool)
    counts = {"duplicates_dropped": 0, "missing_target_dropped": 0, "missing_rows_dropped": 0}
    if spec.drop_duplicates:
        duplicates = _duplicate_rows(columns, hashes)
        keep[duplicates] = False
        counts["duplicates_dropped"] = int(duplicates.size)
    missing_target = np.isnan(columns.target) & keep
    counts["missing_target_dropped"] = int(np.count_nonzero(missing_target))
    keep &= ~missing_target
    del missing_target
    groups = (
        (spec.numeric_missing, lambda: ((n, np.isnan(v)) for n, v in columns.numeric.items())),
        (spec.categorical_missing, lambda: ((n, c.codes < 0) for n, c in columns.categorical.items())),
    )
    for policy, masks in groups:
        if policy == "fail":
            found = {name: int(np.count_nonzero(mask & keep)) for name, mask in masks()}
            found = {name: n for name, n in found.items() if n}
            if found:
                raise DataError(f"dataset {spec.name!r} declares missing values a failure; found {found}")
        elif policy == "drop_row":
            for _, mask in masks():
                dropped = mask & keep
                counts["missing_rows_dropped"] += int(np.count_nonzero(dropped))
                keep &= ~dropped
    return np.flatnonzero(keep), counts


def split_positions(labels: np.ndarray, target: str, seed: int = 0,
                    stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test positions (70/15/15) into `labels`: stratified by class for classification."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if not stratify:
        if len(labels) < 3 * MIN_ROWS_PER_SPLIT or np.unique(labels).size < 2:
            raise DataError(f"target {target!r}: {len(labels)} rows with {np.unique(labels).size} distinct values; "
                            f"a regression needs at least {3 * MIN_ROWS_PER_SPLIT} rows and two values")
        every = np.arange(len(labels))
        train, rest = train_test_split(every, test_size=1 - SPLIT_FRACTIONS[0], random_state=seed)
        val, test = train_test_split(rest, test_size=0.5, random_state=seed)
        return train, val, test
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"target {target!r} has a single class ({labels[0]!r}); nothing to learn")
    if counts.min() < MIN_ROWS_PER_SPLIT:
        raise DataError(f"target {target!r}: the rarest class has fewer than {MIN_ROWS_PER_SPLIT} rows")
    positions = np.arange(len(labels))
    train, rest = train_test_split(positions, test_size=1 - SPLIT_FRACTIONS[0], stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return train, val, test


def _data_fingerprint(spec: DatasetSpec, hashes: np.ndarray, rows: np.ndarray) -> str:
    """The content hash of the cleaned rows: the declared columns by kind, then every kept row's hash in order."""
    digest = hashlib.sha256()
    digest.update(repr([spec.numeric_features, spec.categorical_features, spec.target]).encode())
    digest.update(hashes[rows].tobytes())
    return digest.hexdigest()


def _outliers(columns: _Columns, spec: DatasetSpec,
              train: np.ndarray) -> tuple[dict[str, tuple[float, float]], dict[str, int], np.ndarray]:
    """Bounds per numeric from the training rows, the training values beyond them, and the training rows to drop."""
    import numpy as np

    bounds: dict[str, tuple[float, float]] = {}
    beyond: dict[str, int] = {}
    drop = np.zeros(len(train), dtype=bool)
    for name, values in columns.numeric.items():
        train_values = values[train]
        low, high = outlier_bounds(train_values, spec.outlier_method, spec.outlier_quantiles, spec.outlier_iqr_factor)
        bounds[name] = (low, high)
        outside = (train_values < low) | (train_values > high)
        beyond[name] = int(np.count_nonzero(outside))
        if spec.outliers == "drop_row":
            drop |= outside
    return bounds, beyond, drop


# ---------------------------------------------------------------- transforming and writing


def _transform_into(transform: FittedTransform, columns: _Columns, rows: np.ndarray, out: np.ndarray,
                    imputed: dict[str, int], clipped: dict[str, int], numeric: bool = True) -> None:
    """The transform of the given rows, column by column, into the float32 matrix `out` (categoricals only if not `numeric`)."""
    import numpy as np

    for j, name in enumerate(transform.numeric if numeric else ()):
        values = np.take(columns.numeric[name], rows)
        imputed[name] += int(np.count_nonzero(np.isnan(values)))
        clipped[name] += transform.numeric_into(j, values, out[:, j])
    offset = len(transform.numeric)
    for k, (name, vocab) in enumerate(transform.categorical):
        category = columns.categorical[name]
        codes = np.take(category.codes, rows)
        imputed[name] += int(np.count_nonzero(codes < 0))
        transform.one_hot_into(k, codes, category.labels, out[:, offset:offset + len(vocab)])
        offset += len(vocab)


def _write_matrix(path: Path, names: list[str], n_numeric: int, matrix: np.ndarray, labels: np.ndarray, target: str) -> str:
    """Write features and labels to Parquet straight from numpy; returns their content hash."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    digest.update(repr(names).encode())
    digest.update(matrix.T.data if matrix.flags.f_contiguous else matrix.T.tobytes())
    digest.update(labels.data)
    table = pa.Table.from_arrays([*(pa.array(matrix[:, j]) for j in range(matrix.shape[1])), pa.array(labels)],
                                 names=[*names, target])
    # Dictionary encoding only pays for one-hot columns (a few distinct values); standardised floats hardly
    # compress, so they go uncompressed: half the write time, a smaller file than snappy on everything.
    pq.write_table(table, path, use_dictionary=names[n_numeric:], compression="none")
    del table
    pa.default_memory_pool().release_unused()
    return digest.hexdigest()


class _LabelSummary:
    """Counts per class, or the sums a regression target's mean and std need, over the prepared real rows."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.counts = [0] * len(spec.classes)
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, labels: np.ndarray) -> None:
        import numpy as np

        self.n += len(labels)
        if self.spec.is_classification:
            for code, count in enumerate(np.bincount(labels.astype("int64"), minlength=len(self.counts))):
                self.counts[code] += int(count)
        else:
            self.total += float(labels.sum())
            self.squares += float(np.square(labels).sum())

    def positive_rate(self) -> float | None:
        return round(self.counts[1] / self.n, 6) if self.spec.task == "binary" and self.n else None

    def class_counts(self) -> dict[str, int]:
        from ml_tasks.data.transform import category_text

        return {category_text(c): n for c, n in zip(self.spec.classes, self.counts, strict=True)}

    def target_summary(self) -> dict[str, float]:
        if self.spec.is_classification or not self.n:
            return {}
        mean = self.total / self.n
        return {"mean": round(mean, 6), "std": round(max(self.squares / self.n - mean * mean, 0.0) ** 0.5, 6)}


def _original_values(labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """The target's own values of float64 labels with no missing ones ("Premium", "yes", 1, 326.0)."""
    from ml_tasks.data import target as target_labels

    if not spec.is_classification:
        return labels
    decoded = target_labels.decode(labels.astype("int64"), spec)
    kinds = {type(c) for c in spec.classes}
    return decoded.astype(kinds.pop()) if kinds in ({int}, {bool}) else decoded


def _write_raw(path: Path, columns: _Columns, spec: DatasetSpec, rows: np.ndarray, labels: np.ndarray) -> None:
    """The given rows of the declared columns with their drop's types, as test_raw for evaluation."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays: list[pa.Array] = []
    for name in spec.numeric_features:
        values = np.take(columns.numeric[name], rows)
        array = pa.array(values, mask=np.isnan(values))
        raw_type = columns.numeric_types[name]
        if raw_type != pa.float64() and (pa.types.is_integer(raw_type) or pa.types.is_floating(raw_type)):
            array = array.cast(raw_type)
        arrays.append(array)
    for name in spec.categorical_features:
        category = columns.categorical[name]
        codes = np.take(category.codes, rows)
        array = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), category.dictionary).dictionary_decode()
        arrays.append(array.cast(category.raw_type) if array.type != category.raw_type else array)
    arrays.append(pa.array(labels))
    pq.write_table(pa.Table.from_arrays(arrays, names=list(spec.columns)), path)


# ---------------------------------------------------------------- folds


def _fold_ids(labels: np.ndarray, n_folds: int, seed: int, stratify: bool = True) -> np.ndarray:
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    folds = np.empty(len(labels), dtype=np.int8)
    try:
        splitter = (StratifiedKFold if stratify else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros((len(labels), 1)), labels)):
            folds[held_out] = k
    except ValueError as exc:
        raise DataError(f"cannot make {n_folds} stratified folds of the training split: {exc}") from exc
    return folds


def iter_folds(prepared_uri: str, include_augmented: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row positions into train.parquet for each cross-validation fold.

    Validation folds hold real rows only; an augmented row trains in every fold but the one of the real row it
    was made from (a SMOTE row's neighbour may still sit in that fold).
    """
    import numpy as np
    import pyarrow.parquet as pq

    from ml_tasks.storage import local_path

    path = local_path(prepared_uri) / FOLDS_FILE
    if not path.is_file():
        raise DataError(f"{path.parent} was prepared without cross-validation folds (prepare with cv_folds >= 2)")
    table = pq.read_table(path)
    folds = table.column(FOLD_COLUMN).to_numpy()
    augmented = table.column(AUGMENTED_COLUMN).to_numpy()
    for k in range(int(folds.max()) + 1):
        in_fold = folds == k
        train = ~in_fold if include_augmented else ~in_fold & ~augmented
        yield np.flatnonzero(train), np.flatnonzero(in_fold & ~augmented)


# ---------------------------------------------------------------- the stage


def drift_reference(columns: _Columns, spec: DatasetSpec, train: np.ndarray, seed: int) -> dict[str, Any]:
    """Statistics of the real training rows (their raw values), stored with the model for later drift checks."""
    import numpy as np
    import pandas as pd

    from ml_tasks.data import drift

    rows = train
    if len(rows) > DRIFT_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, DRIFT_SAMPLE_ROWS, replace=False))
    data: dict[str, Any] = {name: columns.numeric[name][rows] for name in spec.numeric_features}
    for name in spec.categorical_features:
        category = columns.categorical[name]
        values = np.empty(len(category.dictionary) + 1, dtype=object)
        values[:-1] = category.dictionary.to_pylist()
        data[name] = values[category.codes[rows]]  # code -1 (missing) picks the trailing None
    data[spec.target] = _original_values(columns.target[rows], spec)
    reference = drift.compute_reference(pd.DataFrame(data), spec)
    reference["training_rows"] = int(len(train))
    reference["sampled_rows"] = int(len(rows))
    return reference


def _policies(spec: DatasetSpec) -> dict[str, Any]:
    policies: dict[str, Any] = {"drop_duplicates": spec.drop_duplicates, "numeric_missing": spec.numeric_missing,
                                "categorical_missing": spec.categorical_missing, "outliers": spec.outliers}
    if spec.outliers != "keep":
        policies["outlier_method"] = spec.outlier_method
        policies["outlier_bounds"] = list(spec.outlier_quantiles) if spec.outlier_method == "quantile" else spec.outlier_iqr_factor
    return policies


def prepare(ctx: RunContext, staging_uri: str, seed: int = 0, *, augment: dict[str, Any] | None = None, cv_folds: int = 0,
            spec: DatasetSpec | None = None) -> PreparedData:
    """Read the staged drop, clean, split, fit the transform, augment, write the prepared sets.

    `augment`: e.g. {"noise": {"copies": 1, "scale": 0.05}, "smote": {"ratio": 1.0}} (see `augmentation.AUGMENT_DEFAULTS`),
    training split only. `cv_folds` >= 2 writes stratified fold ids of the training rows (see `iter_folds`).
    `spec` overrides the data set declared for `ctx` (benchmarks of other shapes).
    """
    import numpy as np

    from ml_tasks.storage import local_path

    spec = spec or get_dataset(ctx.dataset)
    plan = augment_plan(augment)
    if cv_folds < 0 or cv_folds == 1:
        raise ConfigError(f"cv_folds={cv_folds}: 0 (none) or at least 2")
    columns = read_columns(local_path(staging_uri), spec)
    hashes = _row_hashes(columns)
    rows, counts = _clean_rows(columns, spec, hashes)
    digest = _data_fingerprint(spec, hashes, rows)
    del hashes
    label_type = "int64" if spec.is_classification else "float64"
    if not spec.is_classification and "smote" in plan:
        raise ConfigError(f"{spec.name} is a regression: SMOTE makes rows of minority classes, which it has none of")
    labels = columns.target[rows].astype(label_type)
    train_pos, val_pos, test_pos = split_positions(labels, spec.target, seed, stratify=spec.is_classification)
    train, val, test = rows[train_pos], rows[val_pos], rows[test_pos]
    del rows, labels, train_pos, val_pos, test_pos

    bounds: dict[str, tuple[float, float]] = {}
    outliers_per_column: dict[str, int] = {}
    outlier_rows_dropped = 0
    if spec.outliers != "keep":
        bounds, outliers_per_column, drop = _outliers(columns, spec, train)
        if spec.outliers == "drop_row":
            outlier_rows_dropped = int(np.count_nonzero(drop))
            train = train[~drop]
    imputed = dict.fromkeys(spec.features, 0)
    clipped = dict.fromkeys(spec.numeric_features, 0)
    n_real = len(train)
    n_augmented = rows_to_add(plan, columns.target[train].astype(label_type))
    fingerprints: dict[str, str] = {}
    target_dir = ctx.prepared_dir
    with atomic_dir(target_dir) as tmp:
        categorical_fits = [
            (name, *fit_categorical(columns.categorical[name].codes[train], columns.categorical[name].labels,
                                    spec.categorical_missing))
            for name in spec.categorical_features
        ]
        n_features = len(spec.numeric_features) + sum(len(vocab) for _, vocab, _ in categorical_fits)
        matrix = np.empty((n_real + n_augmented, n_features), dtype="float32", order="F")
        # Each numeric's training values are gathered once: fitted, then transformed into the matrix.
        numeric_fits = []
        for j, name in enumerate(spec.numeric_features):
            values = np.take(columns.numeric[name], train)
            imputed[name] += int(np.count_nonzero(np.isnan(values)))
            fit = fit_numeric(values, spec.numeric_missing, bounds[name] if spec.outliers == "clip" else None)
            clipped[name] += standardise_into(values, fit.fill, fit.bounds, fit.mean, fit.std, matrix[:n_real, j])
            numeric_fits.append((name, fit))
            del values
        transform = FittedTransform.from_fits(numeric_fits, categorical_fits)
        names = transform.feature_names
        n_numeric = len(transform.numeric)
        _transform_into(transform, columns, train, matrix[:n_real], imputed, clipped, numeric=False)
        train_labels = np.empty(len(matrix), dtype=label_type)
        train_labels[:n_real] = columns.target[train]
        base = np.arange(len(matrix), dtype=np.int64)  # the real row each augmented row was made from
        augmented = augment_into(matrix, train_labels, n_real, plan, n_numeric, np.random.default_rng(seed), base)
        fingerprints["train"] = _write_matrix(tmp / TRAIN_FILE, names, n_numeric, matrix, train_labels, spec.target)
        if cv_folds:
            import pyarrow as pa
            import pyarrow.parquet as pq

            folds = _fold_ids(train_labels[:n_real], cv_folds, seed, stratify=spec.is_classification)[base]
            is_augmented = np.arange(len(matrix)) >= n_real
            pq.write_table(pa.table({FOLD_COLUMN: folds, AUGMENTED_COLUMN: is_augmented}), tmp / FOLDS_FILE)
        train_rows = len(matrix)
        summary = _LabelSummary(spec)
        summary.add(train_labels[:n_real])
        del matrix, train_labels, base
        for name, part in ((VALIDATION_SPLIT_FILE, val), (TEST_FILE, test)):
            matrix = np.empty((len(part), len(names)), dtype="float32", order="F")
            part_labels = columns.target[part].astype(label_type)
            summary.add(part_labels)
            _transform_into(transform, columns, part, matrix, imputed, clipped)
            fingerprints["val" if name == VALIDATION_SPLIT_FILE else "test"] = _write_matrix(
                tmp / name, names, n_numeric, matrix, part_labels, spec.target)
            del matrix
        _write_raw(tmp / TEST_RAW_FILE, columns, spec, test, _original_values(columns.target[test], spec))
        write_json(tmp / TRANSFORM_FILE, transform.to_dict())
        write_json(tmp / DRIFT_REFERENCE_FILE, drift_reference(columns, spec, train, seed))
        rows_out = n_real + len(val) + len(test)
        result = PreparedData(
            prepared_uri=target_dir.as_uri(),
            fingerprint=digest,
            rows_in=columns.n_rows,
            rows_out=rows_out,
            duplicates_dropped=counts["duplicates_dropped"],
            missing_target_dropped=counts["missing_target_dropped"],
            missing_values_imputed=sum(imputed.values()),
            train_rows=train_rows,
            val_rows=len(val),
            test_rows=len(test),
            n_features=len(names),
            positive_rate=summary.positive_rate(),
            task=spec.task,
            class_counts=summary.class_counts(),
            target_summary=summary.target_summary(),
            missing_rows_dropped=counts["missing_rows_dropped"],
            outlier_rows_dropped=outlier_rows_dropped,
            imputed_per_column={k: v for k, v in imputed.items() if v},
            clipped_per_column={k: v for k, v in clipped.items() if v},
            outliers_per_column=outliers_per_column,
            augmented_rows=augmented,
            cv_folds=cv_folds,
            split_fingerprints=fingerprints,
            policies=_policies(spec),
        )
        write_json(tmp / PREPARATION_FILE, result.to_dict())
    log.info("prepared %s: %s rows in, %s out (train %s incl. %s augmented, val %s, test %s), %s features, "
             "dropped %s duplicates, %s missing targets, %s rows with missing values, %s outlier rows; fingerprint %s",
             ctx.tracking_key, columns.n_rows, rows_out, train_rows, sum(augmented.values()), len(val), len(test), len(names),
             counts["duplicates_dropped"], counts["missing_target_dropped"], counts["missing_rows_dropped"],
             outlier_rows_dropped, digest[:12])
    return result


def log_to_mlflow(run_id: str, ctx: RunContext, prepared: PreparedData) -> None:
    """Record what data made this run: `log_input` of each set with its fingerprint, and the counts."""
    import mlflow
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    from ml_tasks.storage import local_path

    folder = local_path(prepared.prepared_uri)
    splits = (("train", TRAIN_FILE, "training"), ("val", VALIDATION_SPLIT_FILE, "validation"), ("test", TEST_FILE, "testing"))
    with mlflow.start_run(run_id=run_id):
        for split_name, file_name, context in splits:
            digest = prepared.split_fingerprints.get(split_name, prepared.fingerprint)
            # The schema from a few rows: reading a set of millions of rows whole only to name its columns is waste.
            sample = next(pq.ParquetFile(folder / file_name).iter_batches(batch_size=100)).to_pandas()
            dataset = MetaDataset(  # type: ignore[abstract]
                resolve_dataset_source(f"{prepared.prepared_uri}/{file_name}"), name=f"{ctx.dataset}-{split_name}",
                digest=digest[:36], schema=infer_signature(sample).inputs,
            )
            mlflow.log_input(dataset, context=context, tags={"fingerprint": prepared.fingerprint, "content_hash": digest})
        mlflow.set_tag(TAG_FINGERPRINT, prepared.fingerprint)
        if (folder / DRIFT_REFERENCE_FILE).is_file():
            mlflow.log_artifact(str(folder / DRIFT_REFERENCE_FILE), artifact_path=MLFLOW_DATA_DIR)
        mlflow.log_params({
            "data.rows_in": prepared.rows_in, "data.rows_out": prepared.rows_out,
            "data.train_rows": prepared.train_rows, "data.val_rows": prepared.val_rows,
            "data.test_rows": prepared.test_rows, "data.n_features": prepared.n_features,
            "data.cv_folds": prepared.cv_folds, "data.engine": prepared.engine,
            **{f"data.policy.{k}": v for k, v in prepared.policies.items()},
        })
        mlflow.log_metrics({
            "data.duplicates_dropped": prepared.duplicates_dropped,
            "data.missing_target_dropped": prepared.missing_target_dropped,
            "data.missing_rows_dropped": prepared.missing_rows_dropped,
            "data.outlier_rows_dropped": prepared.outlier_rows_dropped,
            "data.missing_values_imputed": prepared.missing_values_imputed,
            "data.values_clipped": sum(prepared.clipped_per_column.values()),
            "data.augmented_rows": sum(prepared.augmented_rows.values()),
            **({"data.positive_rate": prepared.positive_rate} if prepared.positive_rate is not None else {}),
            **{f"data.target_{k}": v for k, v in prepared.target_summary.items()},
        })
