"""`ratchet datasets add`: a first declaration and suite inferred from a drop, for a person to review.

The drop (a folder or one file, CSV or Parquet, over file://, s3:// or hdfs://)
is read column by column with pyarrow, never as a whole pandas frame: each
column's nulls, distinct count, range, mean and spread come from
`pyarrow.compute`; value counts are taken only where there are few values, and
string lengths on a sample of rows. Parquet is read one column at a time; CSV,
which has to be parsed whole anyway, is read once into Arrow.

Every decision carries its reason (`ColumnProfile.reason`, `TargetProfile.reason`):
the command prints them, and the declaration it writes repeats the ones a
reviewer needs as comments. Nothing here trains anything.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.constants import DATA_FILE_SUFFIXES, DEFAULT_PRIMARY_METRIC
from ml_tasks.datasets import BINARY, MULTICLASS, REGRESSION, TASK_KINDS, DatasetSpec
from ml_tasks.datasets.suite_bootstrap import VALUE_SET_LIMIT, bootstrap_checkpoint, bootstrap_from_profiles
from ml_tasks.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_tasks.storage.options import StorageOptions

log = logging.getLogger(__name__)

# Column kinds. Booleans and strings with few values are categorical; the others are excluded with a reason.
NUMERIC, CATEGORICAL, DATETIME, ID, CONSTANT, TEXT, HIGH_CARDINALITY, EMPTY, UNSUPPORTED = (
    "numeric", "categorical", "datetime", "id-like", "constant", "free text", "high-cardinality", "empty", "unsupported")
FEATURE_KINDS = (NUMERIC, CATEGORICAL)
# A categorical feature is one-hot encoded: more distinct values than this and it is excluded.
CATEGORY_LIMIT = 100
# Slices: categoricals with 2 to this many values.
SLICE_LIMIT = 10
# A numeric target with at most this many distinct integer values is multiclass (and the summary says so).
FEW_INTEGER_CLASSES = 20
# A string target with more distinct values than this is refused: not a class label.
CLASS_LIMIT = 50
# Free text: strings whose sampled values average at least this many characters, with many distinct values.
TEXT_MEAN_LENGTH = 30.0
TEXT_SAMPLE = 10_000
ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key|rownames|index|row_?number)$|^(id|uuid|guid|rownames|index)(_|$)",
                     re.IGNORECASE)
# Positive classes of binary targets, compared in lower case; the first rule that picks exactly one value wins.
POSITIVE_WORDS = frozenset({
    "1", "yes", "y", "true", "t", "positive", "pos", "churn", "churned", "fraud", "fraudulent", "default",
    "defaulted", "bad", "spam", "fail", "failed", "failure", "sick", "disease", "diseased", "malignant", "abnormal",
    "anomaly", "attack", "click", "clicked", "converted", "purchase", "purchased", "left", "died", "dead", "event",
})
NEGATIVE_WORDS = frozenset({
    "0", "no", "n", "false", "f", "negative", "neg", "good", "ham", "ok", "pass", "passed", "benign", "normal",
    "healthy", "stayed", "alive", "none", "legit", "legitimate",
})
BASELINE_MARGIN = 0.02  # of ROC AUC / F1 macro
REGRESSION_MARGIN = 0.05  # of the target's standard deviation, in RMSE units
# New declarations search the task's families in one study (issue 16: the family is searched, not guessed).
NEW_DATASET_FAMILY = "auto"


@dataclass
class ColumnProfile:
    """What the drop says about one column, and what the declaration makes of it."""

    name: str
    arrow_type: str
    rows: int
    nulls: int
    distinct: int
    kind: str = ""
    reason: str = ""
    physical: str = ""  # numeric | integer | string | boolean | datetime | dictionary | other
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    integral: bool = False
    counts: dict[Any, int] = field(default_factory=dict)  # value -> rows, only where distinct <= VALUE_SET_LIMIT
    mean_length: float | None = None
    note: str = ""

    @property
    def null_fraction(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def is_feature(self) -> bool:
        return self.kind in FEATURE_KINDS


@dataclass
class TargetProfile:
    column: str
    task: str
    reason: str
    classes: list[Any]
    counts: dict[Any, int]
    positive: Any = None
    positive_rule: str = ""
    suggestion: str = ""
    missing: int = 0


@dataclass
class Proposal:
    """Everything `datasets add` infers from a drop: the declaration (as a document and as commented YAML),
    the suite and its checkpoint, and what a reviewer must check."""

    name: str
    source: str
    rows: int
    columns: list[ColumnProfile]
    target: TargetProfile
    document: dict[str, Any]
    yaml_text: str
    spec: DatasetSpec
    suite: dict[str, Any]
    checkpoint: dict[str, Any]
    thresholds: list[str]
    family_note: str = ""

    def review(self) -> list[str]:
        lines = [f"task: {self.target.task} ({self.target.reason})"]
        if self.target.suggestion:
            lines.append(f"  {self.target.suggestion}")
        if self.target.task == BINARY:
            lines.append(f"positive class: {self.target.positive!r} ({self.target.positive_rule}); "
                         f"classes in code order {self.target.classes!r}")
        elif self.target.task == MULTICLASS:
            lines.append(f"classes: {self.target.classes!r}: every value the drop has; a new one later fails validation")
        for c in self.columns:
            if c.name != self.target.column and not c.is_feature:
                lines.append(f"excluded {c.name}: {c.kind}: {c.reason}")
        for c in self.columns:
            if c.note and c.is_feature:
                lines.append(f"{c.name}: {c.note}")
        lines.extend(f"threshold {t}" for t in self.thresholds)
        if self.family_note:
            lines.append(self.family_note)
        ranges = [e["kwargs"] for e in self.suite["expectations"] if e["type"] == "expect_column_values_to_be_between"]
        if ranges:
            lines.append("suite ranges (the drop's own, widened by 10% each side; put real bounds where they exist): "
                         + ", ".join(f"{kw['column']} [{kw['min_value']}, {kw['max_value']}]" for kw in ranges))
        rows = next(e["kwargs"] for e in self.suite["expectations"] if e["type"] == "expect_table_row_count_to_be_between")
        lines.append(f"suite row count: {rows['min_value']} to {rows['max_value']} rows per drop (half to twice this one)")
        return lines


# ---------------------------------------------------------------------------------------------------------------
# Reading


@contextmanager
def local_drop(uri: str, options: StorageOptions | None = None) -> Iterator[list[Path]]:
    """The data files of a drop as local paths: file:// (or a plain path) in place, s3:// and hdfs:// mirrored into
    a temporary folder first with the storage package's sync (removed afterwards)."""
    from ml_tasks.io import data_files
    from ml_tasks.storage import is_data_file, local_path, split_uri, sync

    scheme = split_uri(uri)[0] if "://" in uri else "file"
    if scheme == "file":
        path = local_path(uri) if "://" in uri else Path(uri).resolve()
        if path.is_file():
            files = [path] if path.suffix.lower() in DATA_FILE_SUFFIXES else []
        elif path.is_dir():
            files = data_files(path)
        else:
            raise DataError(f"{uri}: no such file or folder")
        if not files:
            raise DataError(f"{uri}: no CSV or Parquet files ({', '.join(DATA_FILE_SUFFIXES)})")
        yield files
        return
    with tempfile.TemporaryDirectory(prefix="ratchet-datasets-add-") as scratch:
        source = uri.rstrip("/")
        include: Callable[[str], bool] = is_data_file
        if uri.lower().endswith(DATA_FILE_SUFFIXES):  # one remote file: mirror its folder, that file only
            source, _, wanted = uri.rpartition("/")
            include = _only(wanted)
        sync(source, Path(scratch).as_uri(), options=options, include=include, min_files=1)
        files = data_files(Path(scratch))
        if not files:
            raise DataError(f"{uri}: no CSV or Parquet files")
        yield files


def _only(name: str) -> Callable[[str], bool]:
    return lambda key: key == name


class Columns:
    """The drop's columns, one at a time, as Arrow arrays: Parquet reads only the column asked for."""

    def __init__(self, files: list[Path]) -> None:
        import pyarrow.csv as pa_csv
        import pyarrow.dataset as ds

        parquet = [str(p) for p in files if p.suffix.lower() != ".csv"]
        csv = [str(p) for p in files if p.suffix.lower() == ".csv"]
        parts = []
        try:
            if parquet:
                parts.append(ds.dataset(parquet, format="parquet"))
            if csv:
                # CSV is parsed whole in any case: parse it once, keep it as Arrow.
                # Empty strings are missing, as pandas reads them (read_drop, validation).
                csv_format = ds.CsvFileFormat(convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))
                parts.append(ds.dataset(ds.dataset(csv, format=csv_format).to_table()))
            self.dataset = parts[0] if len(parts) == 1 else ds.dataset(parts)
        except Exception as exc:  # pyarrow raises several types for one cause: an unreadable or inconsistent file
            raise DataError(f"cannot read the drop ({len(files)} files): {type(exc).__name__}: {exc}") from exc
        self.names = [str(n) for n in self.dataset.schema.names]
        self.rows = int(self.dataset.count_rows())
        if self.rows == 0:
            raise DataError("the drop has a header but no rows")

    def column(self, name: str) -> pa.ChunkedArray:
        return self.dataset.to_table(columns=[name]).column(0)


# ---------------------------------------------------------------------------------------------------------------
# Profiling


def _python(value: Any) -> Any:
    """An Arrow or numpy scalar as a plain value YAML and JSON can hold."""
    if hasattr(value, "as_py"):
        value = value.as_py()
    if hasattr(value, "item"):
        value = value.item()
    return value


def _physical(arrow_type: pa.DataType) -> str:
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_integer(arrow_type):
        return "integer"
    if t.is_floating(arrow_type):
        return "numeric"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return "string"
    if t.is_dictionary(arrow_type):
        return "dictionary"
    if t.is_timestamp(arrow_type) or t.is_date(arrow_type) or t.is_time(arrow_type) or t.is_duration(arrow_type):
        return "datetime"
    return "other"


def profile_column(name: str, array: pa.ChunkedArray, rows: int) -> ColumnProfile:
    """Column-wise statistics with pyarrow.compute; value counts only where the values are few."""
    import pyarrow as pa
    import pyarrow.compute as pc

    physical = _physical(array.type)
    if physical == "dictionary":  # a pandas category saved to Parquet: profile its values
        array = array.cast(array.type.value_type)
    profile = ColumnProfile(name=name, arrow_type=str(array.type), rows=rows, nulls=int(array.null_count),
                            distinct=0, physical=physical)
    if profile.nulls == rows or physical == "other":
        return profile
    if physical == "numeric":
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)  # NaN is missing, as in pandas
        profile.nulls = int(array.null_count)
        if profile.nulls == rows:
            return profile
    profile.distinct = int(pc.count_distinct(array, mode="only_valid").as_py())
    if physical in ("numeric", "integer"):
        bounds = pc.min_max(array)
        profile.minimum, profile.maximum = float(bounds["min"].as_py()), float(bounds["max"].as_py())
        profile.mean = float(pc.mean(array).as_py())
        std = pc.stddev(array, ddof=1).as_py() if rows - profile.nulls > 1 else 0.0
        profile.std = float(std or 0.0)
        profile.integral = physical == "integer" or bool(pc.all(pc.equal(pc.floor(array), array)).as_py())
    if physical == "datetime":
        return profile
    if profile.distinct <= VALUE_SET_LIMIT:
        counted = pc.value_counts(array.drop_null() if profile.nulls else array)
        pairs = [(_python(v), int(c.as_py())) for v, c in zip(counted.field("values"), counted.field("counts"),
                                                                strict=True)]
        profile.counts = dict(sorted(pairs, key=lambda vc: (str(type(vc[0])), vc[0])))
    if physical in ("string", "dictionary"):
        valid = array.drop_null()
        step = max(1, len(valid) // TEXT_SAMPLE)
        sample = valid.take(pa.array(range(0, len(valid), step), type=pa.int64())) if step > 1 else valid
        profile.mean_length = float(pc.mean(pc.utf8_length(sample)).as_py() or 0.0)
    return profile


def classify_column(p: ColumnProfile) -> ColumnProfile:
    """The column's kind, with its reason; features are numeric or categorical, the rest excluded."""
    valid = p.rows - p.nulls
    nulls = f", {p.nulls} missing ({p.null_fraction:.1%})" if p.nulls else ""
    id_name = bool(ID_NAME.search(p.name))
    if valid == 0:
        p.kind, p.reason = EMPTY, "every value is missing"
    elif p.physical == "other":
        p.kind, p.reason = UNSUPPORTED, f"type {p.arrow_type} is neither numeric, text, boolean nor a date"
    elif p.distinct == 1:
        p.kind, p.reason = CONSTANT, f"one value only ({next(iter(p.counts), '?')!r}{nulls}): nothing to learn"
    elif p.physical == "datetime":
        p.kind, p.reason = DATETIME, (f"{p.arrow_type}: timestamps are not features as they are; derive what matters "
                                      "(day of week, age, ...) upstream and declare it")
    elif p.physical == "boolean":
        p.kind, p.reason = CATEGORICAL, f"boolean{nulls}: categorical"
    elif p.physical in ("integer", "numeric"):
        unique = p.integral and p.distinct == valid and valid >= 20
        if unique and (id_name or _sequential(p)):
            why = "its name says id" if id_name else "its values are consecutive"
            p.kind, p.reason = ID, f"integer, unique per row ({p.distinct} values) and {why}: an identifier"
        elif id_name and p.integral and p.distinct > 0.5 * valid:
            p.kind, p.reason = ID, f"named like an id with {p.distinct} distinct values in {valid} rows: an identifier"
        else:
            p.kind = NUMERIC
            kind = "integer" if p.physical == "integer" else "whole-number float" if p.integral else "float"
            p.reason = f"{kind}, {p.distinct} distinct values in [{_num(p.minimum)}, {_num(p.maximum)}]{nulls}"
            if p.integral and 2 < p.distinct <= FEW_INTEGER_CLASSES:
                p.note = (f"integer with {p.distinct} values: kept numeric; move it to categorical if the values are "
                          "codes rather than amounts")
    else:  # strings
        length = f"mean length {p.mean_length:.0f} chars" if p.mean_length is not None else ""
        if p.distinct == valid and valid >= 20 and (id_name or (p.mean_length or 0) < TEXT_MEAN_LENGTH):
            p.kind, p.reason = ID, f"text unique per row ({p.distinct} values, {length}): an identifier"
        elif id_name and p.distinct > 0.5 * valid:
            p.kind, p.reason = ID, f"named like an id with {p.distinct} distinct values in {valid} rows: an identifier"
        elif p.distinct > VALUE_SET_LIMIT and (p.mean_length or 0) >= TEXT_MEAN_LENGTH:
            p.kind, p.reason = TEXT, f"{p.distinct} distinct values, {length}: free text, not a category"
        elif p.distinct > CATEGORY_LIMIT:
            p.kind, p.reason = HIGH_CARDINALITY, (f"{p.distinct} distinct values (more than {CATEGORY_LIMIT}, one "
                                                  "one-hot column each): group them upstream to use it")
        else:
            p.kind, p.reason = CATEGORICAL, f"text, {p.distinct} distinct values{nulls}"
            if p.distinct > VALUE_SET_LIMIT:
                p.note = (f"high-cardinality categorical: {p.distinct} values (kept: at most {CATEGORY_LIMIT}); "
                          "the suite does not list them")
    return p


def _sequential(p: ColumnProfile) -> bool:
    """Unique integers that fill their range (1..n, 1000..1000+n): row numbers."""
    return p.minimum is not None and p.maximum is not None and p.maximum - p.minimum + 1 == p.distinct


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:g}" if not float(value).is_integer() else str(int(value))


def _class_value(value: Any) -> Any:
    """A class as the declaration holds it: int, bool or str (an integral float is its int, 1.0 -> 1)."""
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def infer_target(p: ColumnProfile, task: str | None) -> TargetProfile:
    """The task kind (with its reason), the classes in code order and, for a binary target, the positive class."""
    valid = p.rows - p.nulls
    if valid == 0:
        raise ConfigError(f"target {p.name!r} has only missing values ({p.rows} rows): nothing to learn")
    if p.distinct == 1:
        raise ConfigError(f"target {p.name!r} has a single value ({next(iter(p.counts))!r} in {valid} rows): "
                          "nothing to learn")
    numeric = p.physical in ("integer", "numeric")
    if p.physical in ("datetime", "other"):
        raise ConfigError(f"target {p.name!r} is {p.arrow_type}: a target is a number, a label or a boolean")
    suggestion = ""
    if p.physical == "boolean":
        inferred, reason = BINARY, "boolean"
    elif p.distinct == 2:
        inferred, reason = BINARY, f"two distinct values ({p.physical})"
    elif not numeric:
        if p.distinct > CLASS_LIMIT:
            if task != REGRESSION:
                raise ConfigError(f"target {p.name!r} is text with {p.distinct} distinct values: more than "
                                  f"{CLASS_LIMIT} classes; is it the right column?")
        inferred, reason = MULTICLASS, f"text with {p.distinct} distinct values"
    elif p.integral and p.distinct <= FEW_INTEGER_CLASSES:
        inferred, reason = MULTICLASS, f"numeric with only {p.distinct} distinct integer values"
        suggestion = (f"{p.name!r} is numeric with {p.distinct} integer values, taken as classes: if they are counts or "
                      "a scale, pass --task regression")
    else:
        kind = "integer" if p.physical == "integer" else "whole-number float" if p.integral else "float"
        inferred, reason = REGRESSION, f"{kind} with {p.distinct} distinct values"
    if task is not None and task != inferred:
        if task not in TASK_KINDS:
            raise ConfigError(f"--task {task!r}; allowed: {', '.join(TASK_KINDS)}")
        if task == REGRESSION and not numeric:
            raise ConfigError(f"--task regression: target {p.name!r} is {p.arrow_type}, not numeric")
        if task == BINARY and p.distinct != 2:
            raise ConfigError(f"--task binary: target {p.name!r} has {p.distinct} distinct values, not 2")
        if task == MULTICLASS and (p.distinct < 3 or p.distinct > max(CLASS_LIMIT, VALUE_SET_LIMIT)):
            raise ConfigError(f"--task multiclass: target {p.name!r} has {p.distinct} distinct values "
                              f"(3 to {CLASS_LIMIT} allowed)")
        reason, suggestion = f"--task {task} (inferred: {inferred}, {reason})", ""
        inferred = task
    target = TargetProfile(column=p.name, task=inferred, reason=reason, classes=[], counts=dict(p.counts),
                           suggestion=suggestion, missing=p.nulls)
    if inferred == REGRESSION:
        return target
    values = sorted(p.counts, key=lambda v: (isinstance(v, str), v))
    if inferred == BINARY:
        positive, rule = _positive(p.counts)
        negative = next(v for v in values if v != positive)
        target.positive, target.positive_rule = _class_value(positive), rule
        values = [negative, positive]
    target.classes = [_class_value(v) for v in values]
    return target


def _positive(counts: dict[Any, int]) -> tuple[Any, str]:
    from ml_tasks.data.transform import category_text

    values = list(counts)
    words = {v: category_text(v).strip().lower() for v in values}
    known = [v for v in values if words[v] in POSITIVE_WORDS]
    if len(known) == 1:
        return known[0], f"{words[known[0]]!r} is a known positive word"
    not_negative = [v for v in values if words[v] not in NEGATIVE_WORDS]
    if len(not_negative) == 1:
        return not_negative[0], f"the other value, {words[next(v for v in values if v != not_negative[0])]!r}, is a " \
                                "known negative word"
    minority = min(values, key=lambda v: (counts[v], str(v)))
    share = counts[minority] / sum(counts.values())
    return minority, f"no known positive word: the minority class ({share:.1%} of rows)"


# ---------------------------------------------------------------------------------------------------------------
# Thresholds, the declaration and its YAML


def thresholds(target: TargetProfile, target_profile: ColumnProfile) -> tuple[float, dict[str, float], dict[str, float],
                                                                              list[str]]:
    """baseline_margin, absolute and change thresholds of the primary metric, and a comment for each."""
    primary = DEFAULT_PRIMARY_METRIC[target.task]
    if target.task == BINARY:
        margin = BASELINE_MARGIN
        absolute = round(0.5 + margin, 4)
        notes = [f"baseline_margin {margin}: a first champion must beat the class prior (ROC AUC 0.5) on the same "
                 f"held-out rows by {margin} ROC AUC",
                 f"absolute roc_auc {absolute}: the class prior's 0.5 plus the margin"]
        return margin, {primary: absolute}, {primary: 0.001}, notes
    if target.task == MULTICLASS:
        total = sum(target.counts.values())
        share = max(target.counts.values()) / total
        k = len(target.counts)
        naive = (2 * share / (1 + share)) / k  # always the majority class: F1 of that class, 0 for the others
        margin = BASELINE_MARGIN
        absolute = round(naive + margin, 4)
        majority = max(target.counts, key=lambda v: target.counts[v])
        notes = [f"baseline_margin {margin}: a first champion must beat always predicting the majority class "
                 f"({majority!r}, {share:.1%} of rows) on the same held-out rows by {margin} F1 macro",
                 f"absolute f1_macro {absolute}: that naive model's F1 macro on this drop ({naive:.4f}) plus the margin"]
        return margin, {primary: absolute}, {primary: 0.001}, notes
    std = float(target_profile.std or 0.0)
    margin = _round_sig(REGRESSION_MARGIN * std)
    absolute = _round_sig(std - margin)
    notes = [f"baseline_margin {margin}: a first champion's RMSE must be below the training mean's by "
             f"{REGRESSION_MARGIN:.0%} of the target's standard deviation ({std:.6g}) on the same held-out rows",
             f"absolute rmse {absolute}: the mean's RMSE on this drop (the standard deviation) less the margin",
             f"change rmse {_round_sig(0.001 * std)}: a challenger must not be worse than the champion by more"]
    return margin, {primary: absolute}, {primary: _round_sig(0.001 * std)}, notes


def _round_sig(value: float, digits: int = 4) -> float:
    if value == 0 or not math.isfinite(value):
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def build_document(name: str, source: str, rows: int, columns: list[ColumnProfile], target: TargetProfile,
                   target_profile: ColumnProfile, schedule: str | None, source_template: str
                   ) -> tuple[dict[str, Any], list[str], str]:
    features = [c for c in columns if c.is_feature]
    numeric = [c.name for c in features if c.kind == NUMERIC]
    categorical = [c.name for c in features if c.kind == CATEGORICAL]
    if not features:
        raise ConfigError(f"no usable feature in the drop: every column but the target is excluded "
                          f"({', '.join(f'{c.name}: {c.kind}' for c in columns if c.name != target.column)})")
    slices = [c.name for c in features if c.kind == CATEGORICAL and 2 <= c.distinct <= SLICE_LIMIT][:2]
    margin, absolute, change, notes = thresholds(target, target_profile)
    family, family_note = NEW_DATASET_FAMILY, ""
    kind = "regressor" if target.task == REGRESSION else "classifier"
    document: dict[str, Any] = {
        "name": name,
        "description": f"Added by `ratchet datasets add` from {source}: {rows} rows, {len(columns)} columns.",
        "task": target.task,
        "target": target.column,
        "classes": target.classes,
        "primary_metric": DEFAULT_PRIMARY_METRIC[target.task],
        "features": {"numeric": numeric, "categorical": categorical},
        "excluded_columns": [{"column": c.name, "reason": f"{c.kind}: {c.reason}"}
                             for c in columns if c.name != target.column and not c.is_feature],
        "suite": name,
        "registered_model": f"{name}_{kind}",
        "slices": slices,
        "gate": {"baseline_margin": margin, "absolute": absolute, "change": change},
        "source": {"template": source_template, "schedule": schedule},
        "tuning": {"model_family": family},
    }
    if not document["excluded_columns"]:
        del document["excluded_columns"]
    return document, notes, family_note


def _flow(value: Any) -> str:
    """A value in YAML flow style: JSON is YAML, and quotes every string a YAML parser could misread."""
    return json.dumps(value, ensure_ascii=False)


def render_yaml(document: dict[str, Any], target: TargetProfile, notes: list[str], columns: list[ColumnProfile]) -> str:
    """The declaration as a commented YAML file: what a reviewer needs beside each decision."""
    d = document
    by_name = {c.name: c for c in columns}
    lines = [
        "# Data set declaration, checked against ml_tasks/datasets/declaration.schema.json.",
        "# Written by `ratchet datasets add` from one drop: review every line, then commit it.",
        f"name: {_flow(d['name'])}",
        f"description: {_flow(d['description'])}",
        f"# {target.reason}" + (f". {target.suggestion}" if target.suggestion else ""),
        f"task: {d['task']}",
        f"target: {_flow(d['target'])}",
    ]
    if target.task == BINARY:
        lines.append(f"# [negative, positive]: positive {target.positive!r} because {target.positive_rule}")
        counts = ", ".join(f"{v!r}: {n}" for v, n in target.counts.items())
        lines.append(f"# rows per class in the drop: {counts}")
    elif target.task == MULTICLASS:
        counts = ", ".join(f"{v!r}: {n}" for v, n in target.counts.items())
        lines.append(f"# code order; rows per class in the drop: {counts}")
    else:
        lines.append("# regression: no classes")
    lines.append(f"classes: {_flow(d['classes'])}")
    lines.append(f"primary_metric: {d['primary_metric']}")
    lines.append("features:")
    for kind in ("numeric", "categorical"):
        lines.append(f"  {kind}:" + (" []" if not d["features"][kind] else ""))
        for column in d["features"][kind]:
            c = by_name[column]
            lines.append(f"    - {_flow(column)}  # {c.reason}" + (f"; {c.note}" if c.note else ""))
    if d.get("excluded_columns"):
        lines.append("# Validated by the suite, never learned:")
        lines.append("excluded_columns:")
        for entry in d["excluded_columns"]:
            lines.append(f"  - {{column: {_flow(entry['column'])}, reason: {_flow(entry['reason'])}}}")
    lines.append(f"suite: {d['suite']}")
    lines.append(f"registered_model: {d['registered_model']}")
    lines.append("# categoricals with 2 to 10 values: the gate reports each of their values")
    lines.append(f"slices: {_flow(d['slices'])}")
    gate = d["gate"]
    lines.append("gate:")
    lines.extend(f"  # {note}" for note in notes)
    lines.append(f"  baseline_margin: {gate['baseline_margin']}")
    lines.append(f"  absolute: {_flow(gate['absolute'])}")
    lines.append(f"  change: {_flow(gate['change'])}")
    lines.append("source:")
    lines.append(f"  template: {_flow(d['source']['template'])}" +
                 ("  # RATCHET_HOME/landing/<name>/<date>/" if not d["source"]["template"] else ""))
    lines.append(f"  schedule: {_flow(d['source']['schedule'])}" +
                 ("  # null: triggered only (by hand or when a drop lands)" if d["source"]["schedule"] is None else ""))
    lines.append("tuning:")
    lines.append(f"  model_family: {d['tuning']['model_family']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The whole proposal


def profile_drop(files: list[Path], target: str) -> tuple[int, list[ColumnProfile]]:
    columns = Columns(files)
    if target not in columns.names:
        raise ConfigError(f"target column {target!r} is not in the drop; its columns: {', '.join(columns.names)}")
    profiles = []
    for name in columns.names:
        array = columns.column(name)
        profiles.append(profile_column(name, array, columns.rows))
        del array
    return columns.rows, profiles


def propose(name: str, source: str, target: str, task: str | None = None, schedule: str | None = None,
            source_template: str = "", options: StorageOptions | None = None) -> Proposal:
    """Read the drop at `source` and infer the declaration, the suite and the review list; writes nothing."""
    from ml_tasks.datasets.declarations import check_name, spec_from_document

    check_name(name)
    if task is not None and task not in TASK_KINDS:
        raise ConfigError(f"--task {task!r}; allowed: {', '.join(TASK_KINDS)}")
    with local_drop(source, options) as files:
        rows, profiles = profile_drop(files, target)
    by_name = {p.name: p for p in profiles}
    for p in profiles:
        if p.name != target:
            classify_column(p)
    target_profile = infer_target(by_name[target], task)
    by_name[target].kind, by_name[target].reason = "target", target_profile.reason
    document, notes, family_note = build_document(name, source, rows, profiles, target_profile, by_name[target],
                                                  schedule, source_template)
    text = render_yaml(document, target_profile, notes, profiles)
    from ml_tasks.datasets.declarations import _yaml_load

    reread = _yaml_load(text)
    if reread != document:  # the comments and quoting must not change what is declared
        raise AssertionError(f"rendered declaration differs from the inferred one: {reread!r} != {document!r}")
    spec = spec_from_document(reread, f"datasets/{name}.yaml (proposed)")
    suite = bootstrap_from_profiles(spec, profiles, rows, source)
    return Proposal(name=name, source=source, rows=rows, columns=profiles, target=target_profile, document=document,
                    yaml_text=text, spec=spec, suite=suite, checkpoint=bootstrap_checkpoint(name),
                    thresholds=notes, family_note=family_note)


@dataclass
class Written:
    declaration: Path
    suite: Path
    checkpoint: Path


def targets(name: str, datasets_dir: Path | None = None, expectations_dir: Path | None = None) -> Written:
    from ml_tasks.data.validation import checkpoint_path, suite_path
    from ml_tasks.datasets import declarations_dir
    from ml_tasks.datasets.declarations import DECLARATION_SUFFIX, check_name

    check_name(name)
    return Written(declaration=(datasets_dir or declarations_dir()) / f"{name}{DECLARATION_SUFFIX}",
                   suite=suite_path(name, expectations_dir), checkpoint=checkpoint_path(name, expectations_dir))


def add(name: str, source: str, target: str, task: str | None = None, schedule: str | None = None,
        source_template: str = "", force: bool = False, options: StorageOptions | None = None,
        datasets_dir: Path | None = None, expectations_dir: Path | None = None) -> tuple[Proposal, Written]:
    """`ratchet datasets add`: infer, then write the declaration, the suite and its checkpoint (atomically each);
    refuses to overwrite any of them without `force`, before reading the drop."""
    from ml_tasks.datasets.declarations import load_declaration
    from ml_tasks.io import write_json

    paths = targets(name, datasets_dir, expectations_dir)
    existing = [p for p in (paths.declaration, paths.suite, paths.checkpoint) if p.exists()]
    if existing and not force:
        raise ConfigError(f"data set {name!r} exists: {', '.join(map(str, existing))}; pass --force to overwrite")
    proposal = propose(name, source, target, task=task, schedule=schedule, source_template=source_template,
                       options=options)
    paths.declaration.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.declaration.with_name(f".{paths.declaration.name}.tmp")
    partial.write_text(proposal.yaml_text)
    partial.replace(paths.declaration)
    load_declaration(paths.declaration)  # the file on disk is what the pipeline will read
    write_json(paths.suite, proposal.suite)
    write_json(paths.checkpoint, proposal.checkpoint)
    return proposal, paths


def report(proposal: Proposal, written: Written | None = None) -> list[str]:
    """What `datasets add` prints: each decision with its reason, then the REVIEW list."""
    t = proposal.target
    lines = [f"read {proposal.source}: {proposal.rows} rows, {len(proposal.columns)} columns", "",
             f"target {t.column!r}: {t.task} ({t.reason})"]
    if t.suggestion:
        lines.append(f"  note: {t.suggestion}")
    if t.counts and t.task != REGRESSION:
        lines.append("  values: " + ", ".join(f"{v!r}: {n}" for v, n in t.counts.items())
                     + (f", missing: {t.missing}" if t.missing else ""))
    if t.task == BINARY:
        lines.append(f"  positive class: {t.positive!r} ({t.positive_rule})")
    if t.task == REGRESSION:
        tp = next(c for c in proposal.columns if c.name == t.column)
        lines.append(f"  range [{_num(tp.minimum)}, {_num(tp.maximum)}], mean {tp.mean:.6g}, std {tp.std:.6g}"
                     + (f", missing: {t.missing} rows (dropped before training)" if t.missing else ""))
    lines.append("")
    lines.append("columns:")
    width = max(len(c.name) for c in proposal.columns)
    for c in proposal.columns:
        if c.name == t.column:
            continue
        verdict = "feature " if c.is_feature else "EXCLUDED"
        lines.append(f"  {c.name:<{width}}  {verdict} {c.kind}: {c.reason}" + (f"; {c.note}" if c.note else ""))
    spec = proposal.spec
    lines.append("")
    lines.append(f"features: {len(spec.numeric_features)} numeric, {len(spec.categorical_features)} categorical; "
                 f"slices: {', '.join(spec.slices) or 'none'}")
    lines.append(f"primary metric {spec.primary_metric}; registered model {spec.registered_model}; "
                 f"suite {spec.suite}: {len(proposal.suite['expectations'])} expectations")
    if written:
        lines.append("")
        lines.append(f"wrote {written.declaration}")
        lines.append(f"wrote {written.suite}")
        lines.append(f"wrote {written.checkpoint}")
    lines.append("")
    lines.append("REVIEW before committing:")
    lines.extend(f"  - {line}" for line in proposal.review())
    return lines
