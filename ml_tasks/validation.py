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

from ml_tasks.constants import VALIDATION_RESULT_FILE
from ml_tasks.datasets import DatasetSpec, get_dataset
from ml_tasks.errors import ConfigError, DataValidationError
from ml_tasks.io import read_drop, write_json
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int64", "float32", "float64", "Float64"]
# GX 1.24's in-type-list check misreads pandas 3's `str` dtype; of-type "str" reads it right.
STRING_TYPE = "str"
_EXAMPLES = 5


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suite_path(suite: str, expectations_dir: Path | None = None) -> Path:
    return (expectations_dir or get_settings().expectations_dir) / "suites" / f"{suite}.json"


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


def _collapse_missing_columns(failures: list[dict[str, Any]], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Every expectation on a column that is not there fails; report the absence once per column."""
    present = {str(c) for c in frame.columns}
    kept: list[dict[str, Any]] = []
    missing: dict[str, int] = {}
    for failure in failures:
        column = failure.get("column")
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


def validate_frame(frame: pd.DataFrame, suite: str, docs_dir: Path, run_name: str) -> tuple[bool, Any, str]:
    """Run `suite` on `frame` in an ephemeral context; build Data Docs into `docs_dir`."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    payload = load_suite_payload(suite)
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
    batch_definition = (
        context.data_sources.add_pandas("drops")
        .add_dataframe_asset(name=suite)
        .add_batch_definition_whole_dataframe("whole_drop")
    )
    gx_suite = context.suites.add(
        ExpectationSuite(name=payload.get("name", suite), expectations=payload["expectations"], meta=payload.get("meta"))
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite}-{run_name}", data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite}-checkpoint",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=["ratchet"])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    docs_index = docs_dir / "index.html"
    return bool(result.success), result, docs_index.as_uri()


def validate_drop(staging_uri: str, dataset: str, run_key: str) -> ValidationOutcome:
    """Validate the staged drop; raise `DataValidationError` (after writing the result) when it fails."""
    from ml_tasks.storage import local_path

    spec = get_dataset(dataset)
    settings = get_settings()
    frame = read_drop(local_path(staging_uri))
    docs_dir = settings.data_docs / dataset / run_key
    success, result, docs_uri = validate_frame(frame, spec.suite, docs_dir, run_key)
    evaluated = [r for run in result.run_results.values() for r in run.results]
    failures = _collapse_missing_columns([_describe_failure(r) for r in evaluated if not r.success], frame)
    result_path = settings.gx / "results" / dataset / run_key / VALIDATION_RESULT_FILE
    write_json(result_path, result.describe_dict())
    outcome = ValidationOutcome(
        success=success,
        suite=spec.suite,
        rows=len(frame),
        evaluated=len(evaluated),
        failed=len(failures),
        failures=failures,
        data_docs_uri=docs_uri,
        result_uri=result_path.as_uri(),
    )
    if not success:
        message = format_failures(spec.suite, len(frame), failures, docs_uri)
        log.error("%s", message)
        raise DataValidationError(message, failures)
    log.info("drop passed %s expectations of suite %s (%s rows); Data Docs: %s",
             len(evaluated), spec.suite, len(frame), docs_uri)
    return outcome


def bootstrap_suite(spec: DatasetSpec, reference: pd.DataFrame, row_band: tuple[float, float] = (0.5, 2.0)) -> dict[str, Any]:
    """A first suite from a reference drop; GX 1.x has no profiler, so we write one.

    Schema and order, types, null fractions, numeric ranges with a 10% margin,
    means within a standard deviation, allowed categories, and a row-count band.
    A human reviews and commits the result.
    """
    import pandas as pd

    def expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {}}

    missing = [c for c in spec.columns if c not in reference.columns]
    if missing:
        raise ConfigError(f"reference drop lacks declared columns {missing}")
    rows = len(reference)
    out = [
        expectation("expect_table_columns_to_match_ordered_list", column_list=list(spec.columns)),
        expectation("expect_table_row_count_to_be_between",
                    min_value=int(rows * row_band[0]), max_value=int(rows * row_band[1])),
    ]
    for column in spec.columns:
        series = reference[column]
        null_fraction = float(series.isna().mean())
        strict = column == spec.target
        mostly = 1.0 if strict else round(max(0.0, 1.0 - max(0.01, 2 * null_fraction)), 4)
        out.append(expectation("expect_column_values_to_not_be_null", column=column, mostly=mostly))
        numeric = pd.api.types.is_numeric_dtype(series)
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
