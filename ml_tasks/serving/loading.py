"""Loading one registered version for serving: refused unless it is ours, then loaded, unwrapped and warmed up.

The version goes through the one checked loader (`ml_tasks.release.model_loading`, which evaluation and infra
validation use too): nothing in it is unpickled unless it is our pyfunc class or our TFLite loader module, with no
shipped code. A `LoadedModel` then scores on the fast path where it can: the same
`FittedTransform.apply` as in training over column arrays, then the unwrapped Keras network (a traced
`tf.function`) or scikit-learn estimator; other pyfuncs (TFLite) go through their `predict`.

The version's explainer (`ml_tasks.explain.model_explainer`) is built from that same pyfunc when the version
loads, and warmed up with it: `/explain` answers from the model that answers `/invocations`. A version that
cannot be explained (a compressed TFLite runtime) still serves predictions; `/explain` then says why not (501).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.release.model_loading import ModelLoadError, load_checked
from ml_tasks.serving.payloads import BOOLEAN, CATEGORY, INTEGER, NUMBER, STRING, Column, PayloadError

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.explain import ModelExplainer, RowExplanations

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """One request's (or batch's) answer: the prediction contract's columns in order (`prediction` in the target's
    original values; `probability` and `probability_<class>` for classification), one list per column."""

    outputs: dict[str, list[Any]]

    @property
    def prediction(self) -> list[Any]:
        return self.outputs["prediction"]

    @property
    def probability(self) -> list[float] | None:
        """The positive class's probability (binary and versions without a target record), else None."""
        return self.outputs.get("probability")

    def __len__(self) -> int:
        return len(self.outputs["prediction"])

    def __iter__(self) -> Any:
        """`probability, prediction = model.predict(...)`, as callers unpacked the answer before the contract."""
        return iter((self.probability, self.prediction))

    def rows(self, start: int, stop: int) -> Scored:
        return Scored({name: values[start:stop] for name, values in self.outputs.items()})


@dataclass
class Explained:
    """One `/explain` request's answer: the rows' predictions (as `/invocations` gives them), their attributions on
    the raw input columns, and the class each row's attributions explain (target values; None for regression)."""

    scored: Scored
    rows: RowExplanations
    classes: list[Any] | None


_KINDS = {"double": NUMBER, "float": NUMBER, "long": INTEGER, "integer": INTEGER, "string": STRING, "boolean": BOOLEAN}


def _columns_from_schema(schema: Any) -> tuple[Column, ...]:
    columns = []
    for spec in schema.inputs:
        kind = _KINDS.get(str(getattr(spec.type, "name", spec.type)))
        if spec.name is None or kind is None:
            raise ModelLoadError(f"input {spec.name!r} of type {spec.type} is not a column this server can check")
        columns.append(Column(str(spec.name), kind))
    return tuple(columns)


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
    score: Callable[[Any], Any] | None = None  # float32 features -> the model's raw scores (RatchetClassifier.raw_scores)
    target: dict[str, Any] | None = None  # the version's target record; None: a binary 0/1 classifier
    folder: Any = None  # keeps the downloaded files for the life of the model
    explainer: ModelExplainer | None = None  # built from `pyfunc` at load; None when the version cannot be explained
    explain_error: str | None = None  # why it cannot (answered by /explain)
    column_names: tuple[str, ...] = field(init=False)
    column_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.column_names = tuple(c.name for c in self.columns)
        self.column_set = frozenset(self.column_names)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "loaded_at": self.loaded_at, "columns": {c.name: c.kind for c in self.columns},
                "fast_path": self.score is not None,
                "explainer": self.explainer.describe() if self.explainer is not None else None}

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

    def predict(self, columns: dict[str, list[Any]], n_rows: int) -> Scored:
        """The prediction contract's columns for validated columns; a PayloadError for values the model cannot take."""
        import numpy as np

        from ml_tasks.errors import DataError
        from ml_tasks.release.pyfunc import prediction_frame

        if self.score is not None:
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # an overflow to inf is answered below
                    features = self.transform.apply(_ColumnFrame(self.arrays(columns), n_rows))
            except DataError as exc:
                raise PayloadError(422, str(exc), "INVALID_PARAMETER_VALUE") from exc
            finite = np.isfinite(features)
            if not finite.all():
                _raise_out_of_range(self, finite, columns)
            out = prediction_frame(np.asarray(self.score(features), dtype="float64"), self.target)
        else:
            out = self.pyfunc.predict(self.frame(columns))
        numbers = [c for c in out.columns if c.startswith("probability")] or (
            ["prediction"] if self.target is not None and self.target.get("task") == "regression" else [])
        values = np.asarray(out[numbers], dtype="float64").reshape(len(out), -1) if numbers else np.zeros((len(out), 0))
        if len(out) != n_rows or not np.isfinite(values).all():
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))[:5].tolist()
            raise PayloadError(422, f"the model gives no finite probability or prediction for rows {bad}: inputs out "
                                    "of the range it can take", "INVALID_PARAMETER_VALUE")
        return Scored({name: out[name].tolist() for name in out.columns})

    def check_explainable(self) -> ModelExplainer:
        """The version's explainer; a 501 naming why when this version cannot be explained."""
        if self.explainer is None:
            why = self.explain_error or "this version cannot be explained"
            raise PayloadError(501, f"{self.name} v{self.version}: {why}; /invocations still serves its predictions",
                               "NOT_IMPLEMENTED")
        return self.explainer

    def explain(self, columns: dict[str, list[Any]], n_rows: int) -> Explained:
        """Validated columns' predictions (exactly as `predict`) and each row's attributions on the raw columns.

        Binary classifiers explain the positive class's output, multiclass ones each row's predicted class (the
        explainer picks the largest output, which is the predicted class), regressors the prediction itself.
        """
        import numpy as np

        explainer = self.check_explainable()
        scored = self.predict(columns, n_rows)  # refuses what /invocations refuses, with the same messages
        with np.errstate(over="ignore", invalid="ignore"):
            rows = explainer.explain(_ColumnFrame(self.arrays(columns), n_rows))
        finite = np.isfinite(rows.values).all(axis=1) & np.isfinite(rows.base_values) & np.isfinite(rows.outputs)
        if not finite.all():
            bad = np.flatnonzero(~finite)[:5].tolist()
            raise PayloadError(422, f"the explainer gives no finite attributions for rows {bad}: inputs out of the "
                                    "range it can take", "INVALID_PARAMETER_VALUE")
        classes: list[Any] | None = None
        if explainer.task != "regression":
            codes = rows.classes if rows.classes is not None else np.ones(n_rows, dtype="int64")  # binary: positive
            classes = [explainer.class_value(int(code)) for code in codes]
        return Explained(scored, rows, classes)


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
    """The network as one traced graph: one row costs far less than through `model.predict`'s per-call setup."""
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
    from ml_tasks import tracking
    from ml_tasks.release.pyfunc import RatchetClassifier

    client = tracking.client()
    details = client.get_model_version(name, version)
    folder = tempfile.TemporaryDirectory(prefix="ratchet-serve-")
    pyfunc, _ = load_checked(f"models:/{name}/{version}", Path(folder.name))
    schema = pyfunc.metadata.get_input_schema()
    inner: Any = None
    try:
        inner = pyfunc.unwrap_python_model()
    except Exception:  # a loader-module pyfunc (TFLite): served through its own predict
        inner = None
    transform = score = target = None
    if isinstance(inner, RatchetClassifier):
        transform = inner.transform
        target = getattr(inner, "target", None)
        if inner.network is not None:
            network_score = _keras_scorer(inner.network, len(transform.feature_names))
            multiclass = inner.task == "multiclass"
            score = lambda features: (network_score(features) if multiclass
                                      else network_score(features).reshape(-1))
        else:
            score = inner.raw_scores
    if schema is not None and schema.has_input_names():
        columns = _columns_from_schema(schema)
    elif transform is not None:
        columns = tuple(Column(c, NUMBER) for c in transform.numeric) + tuple(
            Column(c, CATEGORY) for c, _ in transform.categorical)
    else:
        raise ModelLoadError(f"{name} v{version} has no input signature with column names; cannot check payloads")
    model = LoadedModel(name=name, version=str(version), alias=alias, run_id=str(details.run_id or ""),
                        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"), columns=columns, pyfunc=pyfunc,
                        transform=transform, score=score, target=target, folder=folder)
    warm = {c.name: [None if c.kind in (STRING, CATEGORY, BOOLEAN) else 0] for c in columns}
    if len(model.predict(warm, 1)) != 1:
        raise ModelLoadError(f"{name} v{version} did not answer one row with one prediction")
    _attach_explainer(model, warm)
    return model


def _attach_explainer(model: LoadedModel, warm: dict[str, list[Any]]) -> None:
    """The version's explainer, from the pyfunc that serves it, warmed up on the warm-up row; or why there is none.

    Predictions keep serving either way: a version the explainer cannot take (a compressed runtime, a family with no
    explainer), or whose explainer fails to build, answers /explain with a 501 that says why.
    """
    from ml_tasks.explain import ExplainerError, model_explainer

    try:
        model.explainer = model_explainer(model.pyfunc)
        model.explain(warm, 1)  # the first tree walk or gradient pays its set-up here, not in a request
    except ExplainerError as exc:
        model.explainer, model.explain_error = None, str(exc)
        log.info("%s v%s serves no explanations: %s", model.name, model.version, exc)
    except Exception as exc:  # served anyway: predictions do not depend on the explainer
        model.explainer = None
        model.explain_error = f"this version cannot be explained: its explainer failed ({type(exc).__name__}: {exc})"
        log.exception("%s v%s serves no explanations: %s", model.name, model.version, model.explain_error)
