"""`ratchet serve MODEL`: models:/MODEL@champion over HTTP, swapped to a new champion without dropping requests.

The endpoint speaks MLflow's scoring protocol (`POST /invocations` with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` JSON, or CSV;
answers `{"predictions": [...]}`), plus `/health`, `/ping` and `/version`, and
describes its payloads in `/openapi.json`. It never builds an environment from
the registry: the model runs in this process, with our code.

Why not `mlflow models serve`: it loads one version for the life of the
process, builds a virtualenv unless told not to, and calls the pyfunc's
`predict` (Keras `predict` costs tens of milliseconds for one row). Here a
thread watches the alias, loads a new version completely, warms it up and
swaps one reference; a request holds the model it started with, so in-flight
requests finish on the old one. Rows pass the same `FittedTransform.apply` as
in training, then the unwrapped Keras network (a traced `tf.function`) or
scikit-learn estimator; other pyfuncs (TFLite) go through their `predict`.
Small requests that arrive together are scored as one batch (`MicroBatcher`):
under many clients the fixed cost per call, not the rows, is what limits.

Every payload is checked against the version's logged signature before it
reaches the model: unknown or missing columns, wrong types, non-finite
numbers, too many rows or bytes get a 4xx naming the problem. Sampled rows and
their predictions go to the inference log (see `ml_tasks.constants`) from a
writer thread, off the request path. `/invocations` and `/version` need
`Authorization: Bearer <token>` (RATCHET_SERVE_TOKEN, or a generated token in
a 0600 file under RATCHET_HOME); `/health` stays open for load balancers.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import io
import json
import logging
import math
import os
import pickle
import queue
import random
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # runtime imports: FastAPI reads the handlers' annotations
from starlette.responses import Response

from ml_tasks.config import checked_name
from ml_tasks.constants import CHAMPION_ALIAS, INFERENCE_LOG_PARTITION, INFERENCE_LOG_SUFFIX
from ml_tasks.errors import ConfigError, RatchetError
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    from fastapi import FastAPI

log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Bodies up to this size (a few dozen rows) are scored on the event loop (no thread hop); larger ones in a worker thread.
INLINE_BYTES = 8192
# A failed load of a version is retried after this long (or at once if the alias moves elsewhere).
RETRY_FAILED_SECONDS = 60.0
LOG_QUEUE_REQUESTS = 10_000
LOG_FLUSH_SECONDS = 0.25
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
TOKEN_ENV = "RATCHET_SERVE_TOKEN"
CONFIG_ENV = "RATCHET_SERVE_CONFIG"
SAMPLE_ENV = "RATCHET_INFERENCE_LOG_SAMPLE"
MAX_ROWS_ENV = "RATCHET_SERVE_MAX_ROWS"
MAX_BODY_ENV = "RATCHET_SERVE_MAX_BODY_BYTES"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
# What a registered version may be made of: our pyfunc class (pickled by reference) or our TFLite loader module.
# `ml_tasks.pyfunc_model` is where versions registered before the stage packages pickled the class (a shim now).
ALLOWED_LOADERS = frozenset({"mlflow.pyfunc.model", "ml_tasks.compression"})
ALLOWED_PICKLE_GLOBALS = frozenset({
    ("ml_tasks.release.pyfunc", "RatchetClassifier"),
    ("ml_tasks.pyfunc_model", "RatchetClassifier"),
    ("mlflow.models.signature", "_TypeHints"),
})
NUMBER, INTEGER, STRING, BOOLEAN, CATEGORY = "number", "integer", "string", "boolean", "category"
_KINDS = {"double": NUMBER, "float": NUMBER, "long": INTEGER, "integer": INTEGER, "string": STRING, "boolean": BOOLEAN}


class PayloadError(Exception):
    """A request the model cannot take: answered with `status` and a message naming the problem."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


class ModelLoadError(RatchetError):
    """A registered version that this server refuses or fails to load."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ServeConfig:
    model: str
    alias: str = CHAMPION_ALIAS
    host: str = "127.0.0.1"
    port: int = 5001
    poll_seconds: float = 5.0
    log_sample: float = 1.0
    workers: int = 1
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        checked_name(self.model, "registered model name")
        checked_name(self.alias, "alias")
        if not 0.0 <= self.log_sample <= 1.0:
            raise ConfigError(f"log sample must be a fraction 0..1, got {self.log_sample}")
        if not 0.05 <= self.poll_seconds <= 3600:
            raise ConfigError(f"poll seconds must be 0.05..3600, got {self.poll_seconds}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be 1..64, got {self.workers}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.max_rows < 1 or self.max_body_bytes < 1024:
            raise ConfigError("max rows must be at least 1 and max body bytes at least 1024")

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def _env_number(name: str, default: float, cast: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    sample = args.log_sample if args.log_sample is not None else _env_number(SAMPLE_ENV, 1.0, float)
    return ServeConfig(
        model=args.model, alias=args.alias, host=args.host, port=args.port, poll_seconds=float(args.poll_seconds),
        log_sample=float(sample), workers=int(args.workers),
        max_rows=int(_env_number(MAX_ROWS_ENV, DEFAULT_MAX_ROWS, int)),
        max_body_bytes=int(_env_number(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES, int)),
    )


def token_path() -> Path:
    return get_settings().home / "serving" / "token"


def serving_token() -> str:
    """RATCHET_SERVE_TOKEN, or a generated token kept in a 0600 file under RATCHET_HOME (created once)."""
    given = os.environ.get(TOKEN_ENV, "").strip()
    if given:
        return given
    path = token_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        except FileExistsError:
            pass  # another worker wrote it first
    return path.read_text().strip()


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Column:
    name: str
    kind: str


def _columns_from_schema(schema: Any) -> tuple[Column, ...]:
    columns = []
    for spec in schema.inputs:
        kind = _KINDS.get(str(getattr(spec.type, "name", spec.type)))
        if spec.name is None or kind is None:
            raise ModelLoadError(f"input {spec.name!r} of type {spec.type} is not a column this server can check")
        columns.append(Column(str(spec.name), kind))
    return tuple(columns)


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise ModelLoadError(f"the pickled model refers to {module}.{name}, which is not ours; refused")
        return super().find_class(module, name)


def check_model_files(folder: Path) -> None:
    """Refuse a downloaded version that is not made of our pyfunc, before anything in it is loaded."""
    import yaml

    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = (mlmodel.get("flavors") or {}).get("python_function") or {}
    loader = flavor.get("loader_module")
    if loader not in ALLOWED_LOADERS:
        raise ModelLoadError(f"python_function loader {loader!r} is not one of ours ({', '.join(sorted(ALLOWED_LOADERS))})")
    if flavor.get("code"):
        raise ModelLoadError("the version ships code paths; refused (our models run our installed code)")
    if loader == "mlflow.pyfunc.model":
        pickled = folder / str(flavor.get("python_model") or "python_model.pkl")
        try:
            _AllowListUnpickler(io.BytesIO(pickled.read_bytes())).load()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{pickled.name} does not unpickle as our pyfunc: {exc}") from exc


@dataclass
class LoadedModel:
    """One registered version, loaded and warmed up; requests hold it for their whole life."""

    name: str
    version: str
    alias: str
    run_id: str
    loaded_at: str
    columns: tuple[Column, ...]
    pyfunc: Any
    transform: Any = None  # FittedTransform on the fast path
    score: Callable[[Any], Any] | None = None  # float32 features -> probabilities
    folder: Any = None  # keeps the downloaded files for the life of the model
    column_names: tuple[str, ...] = field(init=False)
    column_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.column_names = tuple(c.name for c in self.columns)
        self.column_set = frozenset(self.column_names)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "loaded_at": self.loaded_at, "columns": {c.name: c.kind for c in self.columns},
                "fast_path": self.score is not None}

    def arrays(self, columns: dict[str, list[Any]]) -> dict[str, Any]:
        """Validated columns as numpy arrays: float64 numbers (NaN where missing), int64 integers, objects otherwise."""
        import numpy as np

        data: dict[str, Any] = {}
        for column in self.columns:
            values = columns[column.name]
            if column.kind == NUMBER or (column.kind == INTEGER and None in values):
                data[column.name] = np.array(values, dtype="float64")
            elif column.kind == INTEGER:
                try:
                    data[column.name] = np.array(values, dtype="int64")
                except OverflowError:
                    raise PayloadError(422, f"column {column.name!r}: an integer beyond 64 bits",
                                       "INVALID_PARAMETER_VALUE") from None
            else:
                data[column.name] = np.array(values, dtype=object)
        return data

    def frame(self, columns: dict[str, list[Any]]) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.arrays(columns))

    def predict(self, columns: dict[str, list[Any]], n_rows: int) -> tuple[list[float], list[int]]:
        """Probabilities and 0/1 predictions of validated columns; a PayloadError for values the model cannot take."""
        import numpy as np

        from ml_tasks.errors import DataError
        from ml_tasks.release.pyfunc import DECISION_THRESHOLD

        if self.score is not None:
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # an overflow to inf is answered below
                    features = self.transform.apply(_ColumnFrame(self.arrays(columns), n_rows))
            except DataError as exc:
                raise PayloadError(422, str(exc), "INVALID_PARAMETER_VALUE") from exc
            finite = np.isfinite(features)
            if not finite.all():
                _raise_out_of_range(self, finite, columns)
            probability = np.asarray(self.score(features), dtype="float64").reshape(-1)
            prediction = (probability >= DECISION_THRESHOLD).astype("int64")
        else:
            out = self.pyfunc.predict(self.frame(columns))
            probability = np.asarray(out["probability"], dtype="float64").reshape(-1)
            prediction = np.asarray(out["prediction"], dtype="int64").reshape(-1)
        if probability.shape[0] != n_rows or not np.isfinite(probability).all():
            bad = np.flatnonzero(~np.isfinite(probability))[:5].tolist()
            raise PayloadError(422, f"the model gives no finite probability for rows {bad}: inputs out of the range it "
                                    "can take", "INVALID_PARAMETER_VALUE")
        return probability.tolist(), prediction.tolist()


class _ColumnFrame:
    """What `FittedTransform.apply` reads of a frame (`columns`, `len`, `frame[name]`), over numpy arrays.

    The transform is the same object and the same code as in training (preparation feeds it column arrays too);
    only the per-request pandas frame is skipped, which is most of a one-row request's cost.
    """

    def __init__(self, arrays: dict[str, Any], n_rows: int) -> None:
        self._arrays = arrays
        self.columns = list(arrays)
        self._rows = n_rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name]


def _raise_out_of_range(model: LoadedModel, finite: Any, columns: dict[str, list[Any]]) -> None:
    import numpy as np

    rows, features = np.nonzero(~finite)
    row, feature = int(rows[0]), int(features[0])
    numeric = list(model.transform.numeric)
    name = numeric[feature] if feature < len(numeric) else "a categorical column"
    value = columns.get(name, [None] * (row + 1))[row] if feature < len(numeric) else None
    raise PayloadError(422, f"column {name!r} row {row}: value {value!r} is too large for the model "
                            "(it overflows float32 after scaling)", "INVALID_PARAMETER_VALUE")


def _keras_scorer(network: Any, width: int) -> Callable[[Any], Any]:
    """The network as one traced graph: ~0.5 ms for one row where `model.predict` takes tens of milliseconds."""
    try:
        import tensorflow as tf

        graph = tf.function(lambda x: network(x, training=False),
                            input_signature=[tf.TensorSpec([None, width], tf.float32)], reduce_retracing=True)
        return lambda features: graph(features).numpy()
    except ImportError:  # another Keras backend: the eager call is still far cheaper than predict
        import numpy as np

        return lambda features: np.asarray(network(features, training=False))


def load_version(name: str, version: str, alias: str) -> LoadedModel:
    """Download one version from our registry, check it is ours, load it, warm it up with one prediction."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.release.pyfunc import RatchetClassifier

    client = tracking.client()
    details = client.get_model_version(name, version)
    folder = tempfile.TemporaryDirectory(prefix="ratchet-serve-")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder.name))
    check_model_files(local)
    pyfunc = mlflow.pyfunc.load_model(str(local))
    schema = pyfunc.metadata.get_input_schema()
    inner: Any = None
    try:
        inner = pyfunc.unwrap_python_model()
    except Exception:  # a loader-module pyfunc (TFLite): served through its own predict
        inner = None
    transform = score = None
    if isinstance(inner, RatchetClassifier):
        transform = inner.transform
        if inner.network is not None:
            score = _keras_scorer(inner.network, len(transform.feature_names))
        else:
            estimator = inner.estimator
            score = lambda features: estimator.predict_proba(features)[:, 1]
    if schema is not None and schema.has_input_names():
        columns = _columns_from_schema(schema)
    elif transform is not None:
        columns = tuple(Column(c, NUMBER) for c in transform.numeric) + tuple(
            Column(c, CATEGORY) for c, _ in transform.categorical)
    else:
        raise ModelLoadError(f"{name} v{version} has no input signature with column names; cannot check payloads")
    model = LoadedModel(name=name, version=str(version), alias=alias, run_id=str(details.run_id or ""),
                        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"), columns=columns, pyfunc=pyfunc,
                        transform=transform, score=score, folder=folder)
    warm = {c.name: [None if c.kind in (STRING, CATEGORY, BOOLEAN) else 0] for c in columns}
    probability, _ = model.predict(warm, 1)
    if len(probability) != 1:
        raise ModelLoadError(f"{name} v{version} did not answer one row with one prediction")
    return model


# ---------------------------------------------------------------- payloads


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


# ---------------------------------------------------------------- inference log


def _json_values(values: list[Any]) -> list[str]:
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


class InferenceLog:
    """Sampled rows and predictions, appended as JSON lines by one writer thread, batched and flushed often.

    One file per process per day: <root>/<model>/date=YYYY-MM-DD/part-<process uuid>.jsonl. Every
    LOG_FLUSH_SECONDS the writer appends what arrived as whole lines in one write, then flushes.
    When the writer falls behind, requests are not slowed: rows are dropped and counted.
    """

    def __init__(self, root: Path, model: str, sample: float, seed: int | None = None) -> None:
        self.root = root / checked_name(model, "registered model name")
        self.model = model
        self.sample = sample
        self.part = uuid.uuid4().hex
        self.dropped = 0
        self.written = 0
        self._random = random.Random(seed)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE_REQUESTS)
        self._files: dict[str, Any] = {}
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        if sample > 0:
            self._thread.start()

    def submit(self, request_id: str, version: str, columns: dict[str, list[Any]], n_rows: int,
               probability: list[float], prediction: list[int]) -> None:
        if self.sample <= 0:
            return
        rows: Any = None  # all rows
        if self.sample < 1:
            rows = [i for i in range(n_rows) if self._random.random() < self.sample]
            if not rows:
                return
        item = (time.time(), request_id, version, columns, n_rows, rows, probability, prediction)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += len(rows) if rows is not None else n_rows

    def _lines(self, item: Any) -> tuple[str, str]:
        """The request's sampled rows as JSON lines, encoded a column at a time (json.dumps per row costs 10x)."""
        stamp, request_id, version, columns, n_rows, rows, probability, prediction = item
        when = datetime.fromtimestamp(stamp, UTC)
        ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if rows is not None:
            columns = {name: [values[i] for i in rows] for name, values in columns.items()}
            probability, prediction = [probability[i] for i in rows], [prediction[i] for i in rows]
        head = (f'{{"ts":{json.dumps(ts)},"request_id":{json.dumps(request_id)},"model":{json.dumps(self.model)},'
                f'"version":{json.dumps(version)},"inputs":{{')
        keys = [json.dumps(name) + ":" for name in columns]
        pieces = [[key + text for text in _json_values(values)] for key, values in zip(keys, columns.values(), strict=True)]
        lines = [f'{head}{inputs}}},"probability":{p},"prediction":{int(k)}}}\n' for inputs, p, k in
                 zip(map(",".join, zip(*pieces, strict=True)), _json_values(probability), prediction, strict=True)]
        return when.strftime("%Y-%m-%d"), "".join(lines)

    def _file(self, day: str) -> Any:
        handle = self._files.get(day)
        if handle is None:
            for old in list(self._files):  # a new day: the previous day's file is complete
                self._files.pop(old).close()
            folder = self.root / INFERENCE_LOG_PARTITION.format(date=day)
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"part-{self.part}{INFERENCE_LOG_SUFFIX}").open("a", encoding="utf-8")
            self._files[day] = handle
        return handle

    def _run(self) -> None:
        closing = False
        while not closing:
            # wake a few times a second, not once per request: one write and flush per turn
            closing = self._closing.wait(LOG_FLUSH_SECONDS)
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if items:
                self._write(items)
        for handle in self._files.values():
            handle.close()

    def _write(self, items: list[Any]) -> None:
        by_day: dict[str, list[str]] = {}
        for item in items:
            day, text = self._lines(item)
            by_day.setdefault(day, []).append(text)
            self.written += 1
        try:
            for day in sorted(by_day):
                handle = self._file(day)
                handle.write("".join(by_day[day]))
                handle.flush()
        except OSError:
            log.exception("could not append to the inference log under %s", self.root)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        if not self._thread.is_alive():
            return
        self._closing.set()
        self._thread.join(timeout)
        if self.dropped:
            log.warning("inference log: %s rows dropped while the writer was behind", self.dropped)


# ---------------------------------------------------------------- watching the alias


class ModelWatcher:
    """Polls the alias; loads a new version off the request path and swaps one reference when it is warm."""

    def __init__(self, config: ServeConfig, loader: Callable[[str, str, str], LoadedModel] = load_version) -> None:
        self.config = config
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._loader = loader
        self._failed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def poll_once(self) -> bool:
        """Load and swap in the version the alias points at now, if it is new; True when a swap happened."""
        from ml_tasks.release.registry import alias_version

        name, alias = self.config.model, self.config.alias
        target = alias_version(name, alias)
        if target is None:
            self.last_error = f"{name}@{alias} does not exist (yet)"
            if self.current is None:
                log.warning("%s; waiting for it", self.last_error)
            return False
        current = self.current
        if current is not None and current.version == target:
            return False
        failed_at = self._failed.get(target)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
            return False
        started = time.perf_counter()
        try:
            loaded = self._loader(name, target, alias)
        except Exception as exc:
            self._failed = {target: time.monotonic()}
            self.last_error = f"{name} v{target} failed to load: {exc}"
            log.exception("%s; still serving %s", self.last_error,
                          f"v{current.version}" if current is not None else "nothing")
            return False
        self.current = loaded  # one reference: requests already running keep the model they took
        self._failed.clear()
        self.last_error = None
        log.info("serving %s v%s (%s) after %.1fs to load; previously %s", name, target, alias,
                 time.perf_counter() - started, f"v{current.version}" if current is not None else "nothing")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the registry unreachable for a moment: keep serving, try again
                self.last_error = f"could not read {self.config.model}@{self.config.alias}: {exc}"
                log.warning("%s", self.last_error)
            self._stop.wait(self.config.poll_seconds)


# ---------------------------------------------------------------- the app


def _error(status: int, message: str, error_code: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error_code": error_code, "message": message})
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def _row_schema(columns: tuple[Column, ...]) -> dict[str, Any]:
    types = {NUMBER: ["number", "null"], INTEGER: ["integer", "null"], STRING: ["string", "null"],
             BOOLEAN: ["boolean", "null"], CATEGORY: ["string", "number", "null"]}
    return {"type": "object", "additionalProperties": False, "required": [c.name for c in columns],
            "properties": {c.name: {"type": types[c.kind]} for c in columns}}


def _request_schema(columns: tuple[Column, ...], max_rows: int) -> dict[str, Any]:
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


async def _read_body(request: Any, limit: int) -> bytes:
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


def _content_type(header: str | None) -> str:
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


class MicroBatcher:
    """Scores the small requests that arrive together with one transform and one model call.

    Under many concurrent clients most of a one-row request is fixed cost (building the frame, the transform's
    per-column work, the model call), so the requests that are ready in the same turn of the event loop are
    scored as one batch and the answers split again. A lone request waits for nothing: the batch runs on the
    loop's next turn. If the batch fails, each request is scored alone, so an error names its own rows.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[LoadedModel, dict[str, list[Any]], int, asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self.requests = 0

    def submit(self, model: LoadedModel, columns: dict[str, list[Any]], n_rows: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((model, columns, n_rows, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    @staticmethod
    def _alone(model: LoadedModel, columns: dict[str, list[Any]], n_rows: int, future: asyncio.Future[Any]) -> None:
        try:
            result = model.predict(columns, n_rows)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        groups: dict[int, list[Any]] = {}
        for entry in pending:
            groups.setdefault(id(entry[0]), []).append(entry)  # the model each request took: a swap splits the batch
        for entries in groups.values():
            self.batches += 1
            self.requests += len(entries)
            if len(entries) == 1:
                self._alone(*entries[0])
                continue
            model = entries[0][0]
            merged = {name: [v for entry in entries for v in entry[1][name]] for name in model.column_names}
            try:
                probability, prediction = model.predict(merged, sum(entry[2] for entry in entries))
            except Exception:
                for entry in entries:
                    self._alone(*entry)
                continue
            start = 0
            for _, _, n_rows, future in entries:
                if not future.done():
                    future.set_result((probability[start:start + n_rows], prediction[start:start + n_rows]))
                start += n_rows


def _score(model: LoadedModel, mime: str, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int, list[float],
                                                                             list[int]]:
    columns, n_rows = (parse_json if mime == JSON_TYPE else parse_csv)(model, body, max_rows)
    probability, prediction = model.predict(columns, n_rows)
    return columns, n_rows, probability, prediction


def _predictions_json(probability: list[float], prediction: list[int]) -> str:
    """MLflow's answer, {"predictions": [{"probability": p, "prediction": k}, ...]}, written without a dict per row."""
    rows = [f'{{"probability": {p}, "prediction": {int(k)}}}'
            for p, k in zip(_json_values(probability), prediction, strict=True)]
    return '{"predictions": [' + ", ".join(rows) + "]}"


def create_app(config: ServeConfig, token: str | None = None) -> FastAPI:
    """The FastAPI app of one server process: its own watcher thread and inference-log writer."""
    from fastapi import FastAPI
    from fastapi.openapi.utils import get_openapi
    from starlette.concurrency import run_in_threadpool

    secret = (token if token is not None else serving_token()).encode()
    watcher = ModelWatcher(config)
    batcher = MicroBatcher()
    inference_log = InferenceLog(get_settings().inference_logs, config.model, config.log_sample)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            inference_log.close()

    app = FastAPI(title=f"ratchet serve {config.model}@{config.alias}", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.watcher = watcher
    app.state.batcher = batcher
    app.state.inference_log = inference_log
    unauthorized = {"WWW-Authenticate": "Bearer"}

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret)

    def not_loaded() -> Response:
        reason = watcher.last_error or "loading"
        return _error(503, f"no model loaded yet: {reason}", "TEMPORARILY_UNAVAILABLE", {"Retry-After": "1"})

    async def health() -> Response:
        model = watcher.current
        if model is None:
            return not_loaded()
        return Response(json.dumps({"status": "ok", "model": model.name, "version": model.version}),
                        media_type=JSON_TYPE)

    app.get("/health", summary="200 once a model is loaded, 503 before")(health)
    app.get("/ping", summary="the same as /health (MLflow's name)")(health)

    @app.get("/version", summary="the version served: name, version, alias, run id, when it was loaded")
    async def version(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", "UNAUTHENTICATED", unauthorized)
        model = watcher.current
        if model is None:
            return not_loaded()
        return Response(json.dumps(model.describe()), media_type=JSON_TYPE)

    @app.post("/invocations", summary="score rows in MLflow's scoring formats; answers {\"predictions\": [...]}")
    async def invocations(request: Request) -> Response:
        request_id = request.headers.get("x-request-id")
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not REQUEST_ID.fullmatch(request_id):
            return _error(400, "X-Request-ID must be 1-64 characters of letters, digits, '.', '_', ':', '-'",
                          "BAD_REQUEST")
        headers = {"X-Request-ID": request_id}
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", "UNAUTHENTICATED", {**headers, **unauthorized})
        model = watcher.current  # this request's model, even if the alias moves meanwhile
        if model is None:
            return not_loaded()
        headers["X-Model-Version"] = model.version
        try:
            mime = _content_type(request.headers.get("content-type"))
            body = await _read_body(request, config.max_body_bytes)
            if len(body) <= INLINE_BYTES:  # a few rows: parsed on the loop, scored with the others that came along
                columns, n_rows = (parse_json if mime == JSON_TYPE else parse_csv)(model, body, config.max_rows)
                probability, prediction = await batcher.submit(model, columns, n_rows)
            else:
                columns, n_rows, probability, prediction = await run_in_threadpool(
                    _score, model, mime, body, config.max_rows)
        except PayloadError as exc:
            return _error(exc.status, exc.message, exc.error_code, headers)
        inference_log.submit(request_id, model.version, columns, n_rows, probability, prediction)
        return Response(_predictions_json(probability, prediction), media_type=JSON_TYPE, headers=headers)

    def openapi() -> dict[str, Any]:
        """The schema of the version served now (columns can change with the champion)."""
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        model = watcher.current
        columns = model.columns if model is not None else ()
        security: list[dict[str, list[str]]] = [{"bearer": []}]
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        error = {"content": {JSON_TYPE: {"schema": {"type": "object", "properties": {
            "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
        operation = schema["paths"]["/invocations"]["post"]
        operation["security"] = security
        operation["parameters"] = [{"name": "X-Request-ID", "in": "header", "required": False,
                                    "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"}}]
        operation["requestBody"] = {"required": True, "content": {
            JSON_TYPE: {"schema": _request_schema(columns, config.max_rows) if columns else {"type": "object"}},
            CSV_TYPE: {"schema": {"type": "string"}},
        }}
        operation["responses"] = {
            "200": {"description": "one prediction per row, in order", "content": {JSON_TYPE: {"schema": {
                "type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array", "items": {
                    "type": "object", "properties": {"probability": {"type": "number"},
                                                     "prediction": {"type": "integer"}}}}}}}}},
            **{code: {"description": text, **error} for code, text in (
                ("400", "malformed payload, unknown or missing columns"), ("401", "missing or wrong bearer token"),
                ("413", "too many rows or bytes"), ("415", "unsupported Content-Type"),
                ("422", "a value of the wrong type or out of range"), ("503", "no model loaded yet"))},
        }
        schema["paths"]["/version"]["get"]["security"] = security
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The app factory uvicorn's worker processes call (`--workers` > 1): the configuration comes in the environment."""
    # a spawned worker starts with bare logging: the same set-up as `ratchet` itself, so swaps are logged
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def serve(config: ServeConfig) -> int:
    import uvicorn

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per load is noise in a server log
    token = serving_token()  # created before any worker starts, so every worker reads the same one
    where = "RATCHET_SERVE_TOKEN" if os.environ.get(TOKEN_ENV, "").strip() else str(token_path())
    print(f"serving models:/{config.model}@{config.alias} on http://{config.host}:{config.port} "
          f"(bearer token in {where}; inference log under {get_settings().inference_logs / config.model}, "
          f"sample {config.log_sample:g})", flush=True)
    common: dict[str, Any] = {"host": config.host, "port": config.port, "access_log": False,
                              "log_level": "warning", "timeout_graceful_shutdown": 30}
    if config.workers > 1:
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("ml_tasks.serving.app:app_from_environment", factory=True, workers=config.workers, **common)
    else:
        uvicorn.run(create_app(config, token), **common)
    return 0


def serve_from_args(args: argparse.Namespace) -> int:
    """`ratchet serve` (see ml_tasks.ops.cli)."""
    return serve(config_from_args(args))
