"""Validate a drop with its Great Expectations suite, and bootstrap first suites.

Suites are committed JSON in `expectations/suites/`. Each validation runs in an
ephemeral GX context whose Data Docs site is the run's own folder under
`RATCHET_HOME/gx/`, so results never land in the repository. The task checks
the result itself: a failure raises `DataValidationError` naming every failed
expectation, its column and counts, with a few example values, never rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.config import checked_name
from ml_tasks.constants import VALIDATION_RESULT_FILE
from ml_tasks.datasets import DatasetSpec, get_dataset
from ml_tasks.errors import ConfigError, DataValidationError
from ml_tasks.io import read_drop, write_json
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.data.spark.session import SparkOptions
    from ml_tasks.storage.options import StorageOptions

log = logging.getLogger(__name__)

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float32", "float64", "Float64"]
# GX 1.24's in-type-list check misreads pandas 3's `str` dtype; of-type "str" reads it right.
STRING_TYPE = "str"
_EXAMPLES = 5
DATA_DOCS_POLICIES = ("always", "on_failure", "never")
# GE names column types in its engine's own terms. A committed suite names pandas dtypes; on Spark each is read as
# its kind (any integer width, any float width, text, boolean): a CSV's integers are int64 in pandas, int32 in Spark.
_SPARK_INTEGERS = ["ByteType", "ShortType", "IntegerType", "LongType"]
_SPARK_FLOATS = ["FloatType", "DoubleType"]
SPARK_TYPES: dict[str, list[str]] = {
    **{name: _SPARK_INTEGERS for name in ("int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64",
                                          "uint8", "uint16", "uint32", "uint64")},
    **{name: _SPARK_FLOATS for name in ("float16", "float32", "float64", "Float32", "Float64")},
    **{name: ["StringType"] for name in ("str", "string", "object", "String")},
    **{name: ["BooleanType"] for name in ("bool", "boolean")},
}


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    suite: str
    rows: int
    evaluated: int
    failed: int
    failures: list[dict[str, Any]]
    data_docs_uri: str
    result_uri: str
    engine: str = "pandas"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suite_path(suite: str, expectations_dir: Path | None = None) -> Path:
    checked_name(suite, "suite")
    return (expectations_dir or get_settings().expectations_dir) / "suites" / f"{suite}.json"


def checkpoint_path(suite: str, expectations_dir: Path | None = None) -> Path:
    checked_name(suite, "suite")
    return (expectations_dir or get_settings().expectations_dir) / "checkpoints" / f"{suite}.json"


def load_suite_payload(suite: str) -> dict[str, Any]:
    path = suite_path(suite)
    if not path.is_file():
        raise ConfigError(f"expectation suite {suite!r} not found at {path}; bootstrap one with "
                          f"`ratchet expectations bootstrap DATASET --from URI`")
    payload: dict[str, Any] = json.loads(path.read_text())
    return payload


def _describe_failure(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    details = result.result or {}
    failure: dict[str, Any] = {
        "expectation": config.type,
        "column": kwargs.get("column"),
    }
    for key in ("unexpected_count", "unexpected_percent", "element_count", "missing_count"):
        if details.get(key) is not None:
            failure[key] = details[key]
    if details.get("observed_value") is not None:
        observed = details["observed_value"]
        failure["observed"] = observed[:20] if isinstance(observed, list) else observed
    examples = details.get("partial_unexpected_list")
    if examples:
        failure["examples"] = [str(v)[:40] for v in examples[:_EXAMPLES]]
    for key in ("min_value", "max_value", "mostly", "column_list"):
        if key in kwargs and kwargs[key] is not None:
            failure[key] = kwargs[key]
    if "value_set" in kwargs:
        failure["allowed"] = f"{len(kwargs['value_set'])} values"
    if "type_list" in kwargs or "type_" in kwargs:
        failure["allowed_types"] = kwargs.get("type_list") or [kwargs["type_"]]
    if result.exception_info and result.exception_info.get("raised_exception"):
        failure["error"] = str(result.exception_info.get("exception_message"))[:200]
    return failure


def _collapse_missing_columns(failures: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Every expectation on a column that is not there fails; report the absence once per column."""
    present = {str(c) for c in columns}
    kept: list[dict[str, Any]] = []
    missing: dict[str, int] = {}
    for failure in failures:
        column = failure.get("column")
        if column is None and failure["expectation"] != "expect_table_columns_to_match_ordered_list":
            # a multi-column expectation (duplicate rows) fails because one of its columns is absent
            column = next((c for c in failure.get("column_list") or [] if c not in present), None)
        if column is not None and column not in present:
            missing[column] = missing.get(column, 0) + 1
        else:
            kept.append(failure)
    for column, count in missing.items():
        kept.insert(0, {"expectation": "column_missing", "column": column, "expectations_failed": count})
    return kept


def format_failures(suite: str, rows: int, failures: list[dict[str, Any]], docs: str) -> str:
    count = sum(int(f.get("expectations_failed", 1)) for f in failures)
    lines = [f"{count} expectation(s) of suite {suite!r} failed on {rows} rows:"]
    for f in failures:
        where = f"column {f['column']!r}" if f.get("column") else "table"
        parts = [f"- {f['expectation']} on {where}"]
        if "unexpected_count" in f:
            parts.append(f"{f['unexpected_count']} unexpected ({f.get('unexpected_percent', 0):.2f}%)")
        if "observed" in f:
            parts.append(f"observed {f['observed']}")
        if "min_value" in f or "max_value" in f:
            parts.append(f"expected between {f.get('min_value')} and {f.get('max_value')}")
        if "allowed_types" in f:
            parts.append(f"expected types {f['allowed_types']}")
        if "column_list" in f:
            parts.append(f"expected columns {f['column_list']}")
        if f["expectation"] == "column_missing":
            parts = [f"- column {f['column']!r} is missing ({f['expectations_failed']} expectations on it failed)"]
        if "examples" in f:
            parts.append(f"e.g. {f['examples']}")
        if "error" in f:
            parts.append(f"error: {f['error']}")
        lines.append(", ".join(parts))
    lines.append(f"Data Docs: {docs}")
    return "\n".join(lines)


def speed_up_pandas_engine() -> None:
    """Remove two costs of GE 1.x's pandas engine that change no result.

    Profiled on a large drop, they were most of a validation (README, Benchmarks):
    - `column.mean`/`sum`/`stdev` first scan every value in Python for
      `decimal.Decimal` objects, even in a float64 column;
      only an object-dtype array can hold one, so other dtypes skip the scan.
    - every batch under 1 GB is hashed whole for a `pandas_data_fingerprint`
      batch marker that GE itself skips above 1 GB and that nothing
      reads; the drop's manifest already records each file's checksum.
    """
    import great_expectations.util as gx_util
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    scan = gx_util.does_ndarray_contain_decimal_dtype
    if getattr(scan, "ratchet_fast_path", False):
        return

    def contains_decimal(data: Any) -> bool:
        if getattr(getattr(data, "dtype", None), "kind", "O") != "O":
            return False
        return bool(scan(data))

    contains_decimal.ratchet_fast_path = True  # type: ignore[attr-defined]
    gx_util.does_ndarray_contain_decimal_dtype = contains_decimal  # type: ignore[assignment]


COMPOUND_UNIQUE_CONDITION = "compound_columns.unique.condition"


def speed_up_spark_engine() -> None:
    """Make GE 1.x's Spark check of `expect_compound_columns_to_be_unique` cheaper, with the same verdict.

    GE counts each row's copies with a window partitioned by a struct of every listed column, so Spark sorts the
    whole drop comparing those structs, once for the count and again for the examples: most of a validation
    (README, Scaling out). Partitioning by a 64-bit hash of the columns first and the same struct second puts the
    same rows in the same groups (the struct still decides equality), while the sort compares a long.
    """
    import great_expectations  # noqa: F401  (registers GE's metrics)
    from great_expectations.execution_engine import SparkDFExecutionEngine
    from great_expectations.expectations.metrics.map_metric_provider import multicolumn_condition_partial
    from great_expectations.expectations.registry import _registered_metrics

    providers = _registered_metrics[COMPOUND_UNIQUE_CONDITION]["providers"]
    metric_class, current = providers[SparkDFExecutionEngine.__name__]
    if getattr(current, "ratchet_fast_path", False):
        return

    def hash_first_condition(cls: Any, column_list: Any, **kwargs: Any) -> Any:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        names = column_list.columns
        groups = Window.partitionBy(F.xxhash64(*names), F.struct(*names))
        return F.count(F.lit(1)).over(groups) <= 1

    provider = multicolumn_condition_partial(engine=SparkDFExecutionEngine)(hash_first_condition)
    provider.metric_fn_type = getattr(current, "metric_fn_type", None)
    provider.ratchet_fast_path = True
    providers[SparkDFExecutionEngine.__name__] = (metric_class, provider)


@dataclass
class SuiteRun:
    """GE's verdict on every expectation of a suite, and where its Data Docs are."""

    success: bool
    result: Any
    data_docs_uri: str

    @property
    def evaluated(self) -> list[Any]:
        return [r for validation in self.result.run_results.values() for r in validation.results]


def expectations_for_engine(expectations: list[dict[str, Any]], engine: str) -> list[dict[str, Any]]:
    """The suite's expectations as GE's engine `engine` reads them: on Spark, pandas type names become Spark's."""
    if engine != "spark":
        return expectations
    out = []
    for expectation in expectations:
        kwargs = dict(expectation.get("kwargs", {}))
        kind = expectation.get("type") or expectation.get("expectation_type")
        if kind == "expect_column_values_to_be_in_type_list" and kwargs.get("type_list"):
            kwargs["type_list"] = _spark_types(kwargs["type_list"])
        elif kind == "expect_column_values_to_be_of_type" and kwargs.get("type_"):
            names = _spark_types([kwargs["type_"]])
            if len(names) == 1:
                kwargs["type_"] = names[0]
            else:  # one pandas dtype, several Spark widths: the same check as a type list
                expectation = {**expectation, "type": "expect_column_values_to_be_in_type_list"}
                kwargs.pop("type_")
                kwargs["type_list"] = names
        out.append({**expectation, "kwargs": kwargs})
    return out


def _spark_types(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for spark_name in SPARK_TYPES.get(name, [name]):
            if spark_name not in out:
                out.append(spark_name)
    return out


def validate_frame(frame: Any, suite: str, docs_dir: Path, run_name: str,
                   data_docs: str | None = None, engine: str = "pandas") -> SuiteRun:
    """Run `suite` on `frame` in an ephemeral GX context, as its committed checkpoint says.

    The checkpoint asks for `BASIC` results: counts and up to 20 unexpected
    values, without the per-value counts and row indexes of `SUMMARY`, which
    cost more than the checks. `data_docs` is `always`, `on_failure` (built
    when someone will read them) or `never`; by default the checkpoint's choice.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    speed_up_pandas_engine()
    if engine == "spark":
        speed_up_spark_engine()
    payload = load_suite_payload(suite)
    checkpoint_config = load_checkpoint_config(suite)
    data_docs = data_docs or checkpoint_config["data_docs"]
    if data_docs not in DATA_DOCS_POLICIES:
        raise ConfigError(f"data_docs must be one of {DATA_DOCS_POLICIES}, not {data_docs!r}")
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="ratchet",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    # On Spark, GE would cache the whole drop in the executors' memory (persist=True); a drop larger than memory is
    # why one validates on Spark, so each metric reads the columns it needs from the files instead.
    source = (context.data_sources.add_spark("drops", persist=False) if engine == "spark"
              else context.data_sources.add_pandas("drops"))
    batch_definition = source.add_dataframe_asset(name=suite).add_batch_definition_whole_dataframe("whole_drop")
    gx_suite = context.suites.add(ExpectationSuite(
        name=payload.get("name", suite), expectations=expectations_for_engine(payload["expectations"], engine),
        meta=payload.get("meta"),
    ))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite}-{run_name}", data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=checkpoint_config["name"], validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="update_data_docs", site_names=["ratchet"])] if data_docs == "always" else [],
        result_format=checkpoint_config["result_format"],
    ))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    if not result.success and data_docs == "on_failure":
        # Render the result already computed; nothing is validated twice.
        context.build_data_docs(site_names=["ratchet"])
    built = data_docs == "always" or (data_docs == "on_failure" and not result.success)
    return SuiteRun(bool(result.success), result, (docs_dir / "index.html").as_uri() if built else "")


def load_checkpoint_config(suite: str) -> dict[str, Any]:
    """The committed checkpoint beside the suite (result formats); defaults when there is none."""
    config: dict[str, Any] = {
        "name": suite,
        "data_docs": "always",
        "result_format": {"result_format": "BASIC"},
    }
    path = checkpoint_path(suite)
    if path.is_file():
        config.update(json.loads(path.read_text()))
    return config


def validate_drop(staging_uri: str, dataset: str | None, run_key: str, suite: str | None = None,
                  data_docs: str | None = None, engine: str | None = None,
                  spark: SparkOptions | None = None) -> ValidationOutcome:
    """Validate a local drop with its data set's suite (or `suite`), on the data set's engine (or `engine`).

    Writes the GX result under `RATCHET_HOME/gx/results/`, then raises
    `DataValidationError` naming every failure when the suite fails.
    """
    from ml_tasks.data.engine import choose_engine
    from ml_tasks.storage import local_path

    if suite is None:
        if dataset is None:
            raise ConfigError("validate_drop needs a dataset or a suite")
        suite = get_dataset(dataset).suite
    checked_name(suite, "suite")
    checked_name(run_key, "run key")
    settings = get_settings()
    folder_path = local_path(staging_uri)
    if engine is None:
        engine = choose_engine(get_dataset(dataset), folder_path).engine if dataset is not None else "pandas"
    folder = dataset or suite
    docs_dir = settings.data_docs / folder / run_key
    if engine == "spark":
        from ml_tasks.data.spark.frames import read_drop as read_spark_drop
        from ml_tasks.data.spark.session import application_name, spark_session

        with spark_session(spark, app_name=application_name("validate", folder)) as session:
            frame = read_spark_drop(session, folder_path)
            rows = frame.count()
            run = validate_frame(frame, suite, docs_dir, run_key, data_docs=data_docs, engine=engine)
            columns = list(frame.columns)
    else:
        frame = read_drop(folder_path)
        rows, columns = len(frame), [str(c) for c in frame.columns]
        run = validate_frame(frame, suite, docs_dir, run_key, data_docs=data_docs)
    evaluated = run.evaluated
    failures = _collapse_missing_columns([_describe_failure(r) for r in evaluated if not r.success], columns)
    result_path = settings.gx / "results" / folder / run_key / VALIDATION_RESULT_FILE
    write_json(result_path, run.result.describe_dict())
    outcome = ValidationOutcome(
        success=run.success,
        suite=suite,
        rows=rows,
        evaluated=len(evaluated),
        failed=len(failures),
        failures=failures,
        data_docs_uri=run.data_docs_uri,
        result_uri=result_path.as_uri(),
        engine=engine,
    )
    if not run.success:
        message = format_failures(suite, rows, failures, run.data_docs_uri or result_path.as_uri())
        log.error("%s", message)
        raise DataValidationError(message, failures)
    log.info("drop passed %s expectations of suite %s (%s rows, %s engine); Data Docs: %s",
             len(evaluated), suite, rows, engine, run.data_docs_uri or "not built")
    return outcome


def validate(source_uri: str, suite: str, run_key: str, options: StorageOptions | None = None,
             data_docs: str | None = None, engine: str = "pandas", spark: SparkOptions | None = None) -> ValidationOutcome:
    """Validate any drop (file://, s3://, hdfs://) against any committed suite, on demand (`data_validation` DAG,
    `ratchet validate`).

    Local drops are read in place; remote ones are first mirrored (incrementally)
    into `RATCHET_HOME/staging/_validation/<suite>/<run_key>/`.
    """
    from ml_tasks.storage import split_uri, sync_drop

    checked_name(suite, "suite")
    checked_name(run_key, "run key")
    load_suite_payload(suite)  # an unknown suite fails before anything is copied
    scheme, _, _ = split_uri(source_uri)
    staging_uri = source_uri
    if scheme != "file":
        staged = sync_drop(source_uri, get_settings().staging / "_validation" / suite / run_key, options)
        staging_uri = staged["staging_uri"]
    return validate_drop(staging_uri, None, run_key, suite=suite, data_docs=data_docs, engine=engine, spark=spark)


def committed_suites(expectations_dir: Path | None = None) -> list[str]:
    folder = (expectations_dir or get_settings().expectations_dir) / "suites"
    return sorted(p.stem for p in folder.glob("*.json"))


def bootstrap_suite(spec: DatasetSpec, reference: pd.DataFrame, row_band: tuple[float, float] = (0.5, 2.0)) -> dict[str, Any]:
    """A first suite from a reference drop; GX 1.x has no profiler, so we write one.

    Schema and order, types, null fractions, numeric ranges with a 10% margin,
    means within a standard deviation, allowed categories, a row-count band,
    uniqueness of non-float columns that are unique, and a bound on duplicate
    rows (some data sets have legitimate ones) that catches duplicate floods.
    A human reviews and commits the result.
    """
    import pandas as pd

    def expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {}}

    missing = [c for c in spec.columns if c not in reference.columns]
    if missing:
        raise ConfigError(f"reference drop lacks declared columns {missing}")
    rows = len(reference)
    duplicated = float(reference[list(spec.columns)].duplicated(keep=False).mean())
    out = [
        expectation("expect_table_columns_to_match_ordered_list", column_list=list(spec.columns)),
        expectation("expect_table_row_count_to_be_between",
                    min_value=int(rows * row_band[0]), max_value=int(rows * row_band[1])),
        expectation("expect_compound_columns_to_be_unique", column_list=list(spec.columns),
                    mostly=round(max(0.0, 1.0 - duplicated - max(0.01, 0.25 * duplicated)), 4)),
    ]
    for column in spec.columns:
        series = reference[column]
        null_fraction = float(series.isna().mean())
        strict = column == spec.target
        mostly = 1.0 if strict else round(max(0.0, 1.0 - max(0.01, 2 * null_fraction)), 4)
        out.append(expectation("expect_column_values_to_not_be_null", column=column, mostly=mostly))
        numeric = pd.api.types.is_numeric_dtype(series)
        if not pd.api.types.is_float_dtype(series) and rows > 1 and null_fraction == 0 and series.is_unique:
            out.append(expectation("expect_column_values_to_be_unique", column=column))
        if numeric:
            out.append(expectation("expect_column_values_to_be_in_type_list", column=column, type_list=NUMERIC_TYPES))
        else:
            out.append(expectation("expect_column_values_to_be_of_type", column=column, type_=STRING_TYPE))
        if column in spec.numeric_features:
            low, high = float(series.min()), float(series.max())
            margin = 0.1 * (high - low)
            out.append(expectation("expect_column_values_to_be_between", column=column,
                                   min_value=round(low - margin, 6), max_value=round(high + margin, 6), mostly=0.999))
            mean, std = float(series.mean()), float(series.std())
            out.append(expectation("expect_column_mean_to_be_between", column=column,
                                   min_value=round(mean - std, 6), max_value=round(mean + std, 6)))
        else:
            values = sorted(series.dropna().unique().tolist(), key=str)
            values = [v.item() if hasattr(v, "item") else v for v in values]
            out.append(expectation("expect_column_values_to_be_in_set", column=column, value_set=values,
                                   mostly=1.0 if strict else 0.999))
    return {
        "name": spec.suite,
        "expectations": out,
        "meta": {"dataset": spec.name, "bootstrapped_from_rows": rows,
                 "note": "Bootstrapped by `ratchet expectations bootstrap`; reviewed and committed by a human."},
        "notes": None,
    }


def write_suite(payload: dict[str, Any], expectations_dir: Path | None = None) -> Path:
    path = suite_path(payload["name"], expectations_dir)
    write_json(path, payload)
    return path
