"""The bodies of `/invocations` and `/explain`: a request parsed and checked against the served version's columns,
the answer written.

A request speaks MLflow's scoring protocol: JSON in one of `FORMATS` (`dataframe_split`, `dataframe_records`,
`instances`, `inputs`) or CSV with a header row. Every body is checked before it reaches the model (unknown or
missing columns, wrong types, non-finite numbers, too many rows or bytes) and refused with a `PayloadError` whose
status and message name the problem. The checks work a column at a time on plain lists: no pandas frame per
request, which would cost more than scoring a few rows. The JSON schema of the same rules goes into `/openapi.json`.
`/explain` takes the same bodies (with its own row limit) and answers each row's attributions (`explanations_json`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_tasks.serving.loading import Explained, LoadedModel

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
# The kinds of value a column takes (read from the version's signature, or from its transform).
NUMBER, INTEGER, STRING, BOOLEAN, CATEGORY = "number", "integer", "string", "boolean", "category"


class PayloadError(Exception):
    """A request the model cannot take: answered with `status` and a message naming the problem."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


@dataclass(frozen=True)
class Column:
    """One input column of the served version and the kind of value it takes."""

    name: str
    kind: str


_NONE = type(None)
_FAST_TYPES: dict[str, set[type]] = {NUMBER: {float, int, _NONE}, INTEGER: {float, int, _NONE}, STRING: {str, _NONE},
               BOOLEAN: {bool, _NONE}, CATEGORY: {str, int, _NONE}}


def _fits(kind: str, values: list[Any]) -> bool:
    """Whether every value fits, checked a column at a time (C loops); False sends the column to the slow check."""
    present = set(map(type, values))
    if not present <= _FAST_TYPES[kind]:
        return False
    if kind not in (NUMBER, INTEGER) or not present & {float, int}:
        return True
    numbers = values if _NONE not in present else [v for v in values if v is not None]
    try:
        if not all(map(math.isfinite, numbers)):
            return False
    except OverflowError:
        return False
    return kind == NUMBER or float not in present or all(v.is_integer() for v in numbers if type(v) is float)


def _check_values(column: Column, values: list[Any]) -> list[Any]:
    """The column's values if every one fits its declared type; a 422 naming the first that does not."""
    kind = column.kind
    if _fits(kind, values):
        return values
    for row, value in enumerate(values):
        if value is None:
            continue
        kind_of = type(value)
        if kind in (NUMBER, INTEGER):
            if kind_of is float or kind_of is int:
                try:
                    ok = math.isfinite(value)
                except OverflowError:
                    ok = False
                if not ok:
                    raise PayloadError(422, f"column {column.name!r} row {row}: {str(value)[:40]} is not a finite number",
                                       "INVALID_PARAMETER_VALUE")
                if kind == INTEGER and kind_of is float and not value.is_integer():
                    raise PayloadError(422, f"column {column.name!r} row {row}: expected an integer, got {value!r}",
                                       "INVALID_PARAMETER_VALUE")
                continue
        elif kind == STRING:
            if kind_of is str:
                continue
        elif kind == BOOLEAN:
            if kind_of is bool:
                continue
        elif kind_of is str or kind_of is int or (kind_of is float and math.isfinite(value)):
            continue  # a category given as text or as a number (category_text makes 1, 1.0 and "1" agree)
        raise PayloadError(422, f"column {column.name!r} row {row}: expected {_expected(kind)}, got "
                                f"{_json_type(value)} {_short(value)}", "INVALID_PARAMETER_VALUE")
    return values


def _expected(kind: str) -> str:
    return {NUMBER: "a number", INTEGER: "an integer", STRING: "a string", BOOLEAN: "true or false",
            CATEGORY: "a string or a number"}[kind] + " or null"


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_columns(model: LoadedModel, given: list[Any]) -> None:
    names = [str(c) for c in given]
    unknown = [n for n in names if n not in model.column_set]
    if unknown:
        raise PayloadError(400, f"unknown columns {_names(unknown)}; the model takes {list(model.column_names)}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise PayloadError(400, f"columns {_names(repeated)} given more than once")
    missing = [n for n in model.column_names if n not in set(names)]
    if missing:
        raise PayloadError(400, f"missing columns {missing}; the model takes {list(model.column_names)}")


def _names(names: list[str]) -> str:
    shown = [n if len(n) <= 40 else n[:37] + "..." for n in names[:10]]
    return str(shown) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _check_rows(model: LoadedModel, n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise PayloadError(400, "the payload holds no rows")
    if n_rows > max_rows:
        raise PayloadError(413, f"{n_rows} rows in one request; at most {max_rows} (split the batch)",
                           "REQUEST_LIMIT_EXCEEDED")


def _from_records(model: LoadedModel, records: Any, key: str, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    if not isinstance(records, list):
        raise PayloadError(400, f"{key} must be a list of row objects ({{column: value}}), got {_json_type(records)}")
    _check_rows(model, len(records), max_rows)
    first = records[0]
    if not isinstance(first, dict):
        raise PayloadError(400, f"{key} row 0: expected an object keyed by column name, got {_json_type(first)}")
    _check_columns(model, list(first))
    names = model.column_names
    width = len(names)
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise PayloadError(400, f"{key} row {row}: expected an object keyed by column name, got {_json_type(record)}")
        if len(record) != width or not model.column_set.issuperset(record):
            try:
                _check_columns(model, list(record))
            except PayloadError as exc:
                raise PayloadError(400, f"{key} row {row}: {exc.message}") from None
    columns = {name: _check_values(column, list(map(itemgetter(name), records)))
               for name, column in zip(names, model.columns, strict=True)}
    return columns, len(records)


def _from_columnar(model: LoadedModel, data: dict[str, Any], key: str, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    _check_columns(model, list(data))
    values = list(data.values())
    if all(not isinstance(v, list) for v in values):
        data = {name: [value] for name, value in data.items()}  # one row given as {column: value}
    elif not all(isinstance(v, list) for v in values):
        raise PayloadError(400, f"{key}: give every column a list of values (or every column one value)")
    lengths = {len(v) for v in data.values()}
    if len(lengths) != 1:
        raise PayloadError(400, f"{key}: columns have different lengths {sorted(lengths)}")
    n_rows = lengths.pop()
    _check_rows(model, n_rows, max_rows)
    columns = {c.name: _check_values(c, data[c.name]) for c in model.columns}
    return columns, n_rows


def _from_split(model: LoadedModel, split: Any, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    if not isinstance(split, dict):
        raise PayloadError(400, f"dataframe_split must be an object with 'columns' and 'data', got {_json_type(split)}")
    extra = sorted(set(split) - {"columns", "data", "index"})
    if extra or "data" not in split or "columns" not in split:
        raise PayloadError(400, f"dataframe_split takes 'columns', 'data' and optionally 'index'; got {sorted(split)}")
    names, data = split["columns"], split["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PayloadError(400, "dataframe_split 'columns' must be a list of column names")
    if not isinstance(data, list):
        raise PayloadError(400, f"dataframe_split 'data' must be a list of rows, got {_json_type(data)}")
    _check_columns(model, names)
    _check_rows(model, len(data), max_rows)
    index = split.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise PayloadError(400, f"dataframe_split 'index' must be a list as long as 'data' ({len(data)} rows)")
    width = len(names)
    for row, values in enumerate(data):
        if not isinstance(values, list) or len(values) != width:
            got = f"{len(values)} values" if isinstance(values, list) else _json_type(values)
            raise PayloadError(400, f"dataframe_split row {row}: expected a list of {width} values, got {got}")
    given = dict(zip(names, map(list, zip(*data, strict=True)), strict=True))
    columns = {c.name: _check_values(c, given[c.name]) for c in model.columns}
    return columns, len(data)


def _reject_constant(name: str) -> Any:
    raise PayloadError(422, f"{name} is not a finite number (JSON has no NaN or Infinity)", "INVALID_PARAMETER_VALUE")


def parse_json(model: LoadedModel, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from any of MLflow's JSON scoring formats."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except PayloadError:
        raise
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise PayloadError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise PayloadError(400, "the body nests too deeply") from None
    if not isinstance(doc, dict):
        raise PayloadError(400, f"the body must be a JSON object with exactly one of {list(FORMATS)}, "
                                f"got {_json_type(doc)}")
    keys = [k for k in doc if k in FORMATS]
    other = sorted(set(doc) - set(FORMATS) - {"params"})
    if len(keys) != 1 or other:
        raise PayloadError(400, f"the body must be a JSON object with exactly one of {list(FORMATS)} "
                                f"(and optionally params); got keys {_names(sorted(doc))}")
    if doc.get("params") not in (None, {}):
        raise PayloadError(400, "this model takes no params")
    key = keys[0]
    payload = doc[key]
    if key == "dataframe_split":
        return _from_split(model, payload, max_rows)
    if key == "dataframe_records" or isinstance(payload, list):
        return _from_records(model, payload, key, max_rows)
    if isinstance(payload, dict):
        return _from_columnar(model, payload, key, max_rows)
    raise PayloadError(400, f"{key} must be a list of row objects or an object of columns, got {_json_type(payload)}")


def parse_csv(model: LoadedModel, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from CSV with a header row; an empty field is a missing value."""
    import csv

    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise PayloadError(400, f"the body is not valid CSV: {exc}") from None
    rows = [r for r in rows if r]
    if not rows:
        raise PayloadError(400, "the CSV body needs a header row naming the columns")
    header, data = rows[0], rows[1:]
    _check_columns(model, [h.strip() for h in header])
    _check_rows(model, len(data), max_rows)
    width = len(header)
    for row, values in enumerate(data):
        if len(values) != width:
            raise PayloadError(400, f"CSV row {row}: {len(values)} fields, the header has {width}")
    position = {h.strip(): i for i, h in enumerate(header)}
    columns: dict[str, list[Any]] = {}
    for column in model.columns:
        raw = [values[position[column.name]] for values in data]
        columns[column.name] = _check_values(column, [_csv_value(column, row, v) for row, v in enumerate(raw)])
    return columns, len(data)


def _csv_value(column: Column, row: int, text: str) -> Any:
    if text == "":
        return None
    if column.kind in (NUMBER, INTEGER):
        try:
            value = float(text) if column.kind == NUMBER or not text.lstrip("+-").isdigit() else int(text)
        except ValueError:
            raise PayloadError(422, f"column {column.name!r} row {row}: expected a number, got {_short(text)}",
                               "INVALID_PARAMETER_VALUE") from None
        return value
    if column.kind == BOOLEAN:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return text



def _row_schema(columns: tuple[Column, ...]) -> dict[str, Any]:
    types = {NUMBER: ["number", "null"], INTEGER: ["integer", "null"], STRING: ["string", "null"],
             BOOLEAN: ["boolean", "null"], CATEGORY: ["string", "number", "null"]}
    return {"type": "object", "additionalProperties": False, "required": [c.name for c in columns],
            "properties": {c.name: {"type": types[c.kind]} for c in columns}}


def request_schema(columns: tuple[Column, ...], max_rows: int) -> dict[str, Any]:
    """The JSON schema of a request body for these columns, as `/openapi.json` describes it."""
    row = _row_schema(columns)
    rows = {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
    names = [c.name for c in columns]
    split = {"type": "object", "additionalProperties": False, "required": ["columns", "data"], "properties": {
        "columns": {"type": "array", "items": {"type": "string", "enum": names}, "minItems": len(names),
                    "maxItems": len(names), "uniqueItems": True},
        "data": {"type": "array", "minItems": 1, "maxItems": max_rows,
                 "items": {"type": "array", "minItems": len(names), "maxItems": len(names),
                           "prefixItems": [row["properties"][c.name] for c in columns], "items": False}},
        "index": {"type": "array"},
    }}
    columnar = {"type": "object", "additionalProperties": False, "required": names, "properties": {
        c.name: {"type": "array", "items": row["properties"][c.name], "minItems": 1} for c in columns}}
    params = {"type": "object", "maxProperties": 0}

    def one(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "required": [key],
                "properties": {key: schema, "params": params}}

    return {"oneOf": [one("dataframe_split", split), one("dataframe_records", rows),
                      one("instances", {"oneOf": [rows, columnar]}), one("inputs", {"oneOf": [rows, columnar]})]}


async def read_body(request: Any, limit: int) -> bytes:
    """The request's body, refused with a 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(413, f"the body has {declared} bytes; at most {limit}", "REQUEST_LIMIT_EXCEEDED")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, f"the body exceeds {limit} bytes", "REQUEST_LIMIT_EXCEEDED")
        chunks.append(chunk)
    return b"".join(chunks)


def checked_media_type(header: str | None) -> str:
    """The body's media type, JSON or CSV (charset utf-8 only); a 415 for anything else."""
    if not header:
        raise PayloadError(415, f"no Content-Type; send {JSON_TYPE} or {CSV_TYPE}", "UNSUPPORTED_MEDIA_TYPE")
    parts = [p.strip() for p in header.split(";")]
    mime = parts[0].lower()
    for parameter in parts[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise PayloadError(415, f"unsupported Content-Type parameter {parameter[:40]!r}; only charset=utf-8",
                               "UNSUPPORTED_MEDIA_TYPE")
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise PayloadError(415, f"Content-Type {mime[:60]!r} is not supported; send {JSON_TYPE} or {CSV_TYPE}",
                           "UNSUPPORTED_MEDIA_TYPE")
    return mime


def json_values(values: list[Any]) -> list[str]:
    """Each value as JSON text: numbers by repr (what json.dumps writes for finite ones), others cached."""
    if set(map(type, values)) == {float} and all(map(math.isfinite, values)):
        return list(map(float.__repr__, values))
    cache: dict[Any, str] = {}
    out = []
    for value in values:
        kind_of = type(value)
        if kind_of is float or kind_of is int:
            out.append(repr(value) if kind_of is int or math.isfinite(value) else "null")
        else:
            text = cache.get(value)
            if text is None:
                text = cache[value] = json.dumps(value)
            out.append(text)
    return out



def predictions_json(outputs: dict[str, list[Any]]) -> str:
    """MLflow's answer, {"predictions": [{"probability": p, "prediction": k, ...}, ...]}: one object per row with the
    prediction contract's columns in order, written a column at a time (no dict per row)."""
    keys = [json.dumps(name) + ": " for name in outputs]
    pieces = [[key + text for text in json_values(values)] for key, values in zip(keys, outputs.values(), strict=True)]
    rows = ["{" + ", ".join(row) + "}" for row in zip(*pieces, strict=True)]
    return '{"predictions": [' + ", ".join(rows) + "]}"


def top_k_param(text: str | None) -> int | None:
    """`/explain?top_k=N`: how many of each row's attributions to answer (largest |attribution| first); None: all."""
    if text is None:
        return None
    digits = text.strip()
    try:
        value = int(digits) if digits.isdigit() else None
    except ValueError:  # more digits than Python converts, or digits of another script
        value = None
    if value is None or value < 1:
        raise PayloadError(422, f"top_k must be a whole number of at least 1, got {_short(text)}", "INVALID_PARAMETER_VALUE")
    return value


def explanations_json(model: LoadedModel, explained: Explained, top_k: int | None) -> str:
    """`/explain`'s answer: the version, its explainer once, then per row its prediction (as `/invocations` gives it),
    the class explained (classification), the explained output, its base value and the attributions on the raw
    input columns, largest |attribution| first (`top_k` of them, or all); they add up to output - base_value."""
    rows, predictions = explained.rows, explained.scored.prediction
    space = rows.output_space
    answers = []
    for i, prediction in enumerate(predictions):
        answer: dict[str, Any] = {"prediction": prediction}
        if explained.classes is not None:
            answer["explained_class"] = explained.classes[i]
        answer.update(output=float(rows.outputs[i]), base_value=float(rows.base_values[i]), output_space=space,
                      attributions=rows.row(i, top_k))
        answers.append(answer)
    return json.dumps({"model": model.name, "version": model.version, "explainer": model.check_explainable().describe(),
                       "max_additivity_error": rows.max_additivity_error(), "explanations": answers})
