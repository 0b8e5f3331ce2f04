"""The model as MLflow serves it: raw rows in, the fitted transform, then the family's model.

`models:/NAME@champion` loaded through pyfunc takes the declared raw columns
and applies the transform saved beside the model, exactly as in training,
whichever family (Keras MLP or scikit-learn) the version holds: the artifact
present says which. Loading needs the `ratchet` package installed (this class
is referenced by module, not copied); we only ever load models our own
pipeline registered, and scikit-learn models are skops files that load only
scikit-learn types (see `ml_tasks.training.sklearn_models.load_sklearn`).
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

KERAS_ARTIFACT = "keras_model"
SKLEARN_ARTIFACT = "sklearn_model"
TRANSFORM_ARTIFACT = "transform"
# {"task", "target", "classes"}: what the model predicts, so `prediction` holds the target's own values.
# Versions logged before it existed are binary 0/1 classifiers.
TARGET_ARTIFACT = "target"
TARGET_FILE = "target.json"
# {"baseline", "baseline_kind", "rows"}: the row explanations measure from (see ml_tasks.explain.attribution).
EXPLANATION_ARTIFACT = "explanation"
EXPLANATION_FILE = "explanation.json"
DECISION_THRESHOLD = 0.5


def target_record(spec: Any) -> dict[str, Any]:
    """The TARGET_ARTIFACT's content for a data set's declaration (JSON: classes keep str, int or bool)."""
    return {"task": spec.task, "target": spec.target, "classes": list(spec.classes)}


def needs_tensorflow(model_uri: str) -> bool:
    """Whether loading this logged model imports Keras (its MLmodel names a Keras artifact); unsure means yes."""
    from mlflow.models import Model

    try:
        artifacts = Model.load(model_uri).flavors["python_function"].get("artifacts") or {}
    except Exception:  # unreadable here: the fresh process will say why, if anything is wrong
        return True
    return KERAS_ARTIFACT in artifacts or SKLEARN_ARTIFACT not in artifacts


PROBABILITY_PREFIX = "probability_"


def probability_column(value: Any) -> str:
    """The output column holding one class's probability: `probability_<class text>`."""
    from ml_tasks.data.transform import category_text

    return f"{PROBABILITY_PREFIX}{category_text(value)}"


def prediction_frame(raw: Any, record: dict[str, Any] | None) -> Any:
    """The one prediction contract, from a model's raw output and its target record.

    `prediction` holds the target's original values; classification adds one
    `probability_<class>` column per class in class order, and binary keeps
    `probability` (the positive class). No record (versions logged before it):
    a binary 0/1 classifier, answered exactly as before (`probability`, then
    `prediction` in {0, 1}).
    """
    import numpy as np
    import pandas as pd

    if record is None:
        probability = np.asarray(raw, dtype="float64").reshape(-1)
        return pd.DataFrame({"probability": probability,
                             "prediction": (probability >= DECISION_THRESHOLD).astype("int64")})
    task, classes = record["task"], list(record.get("classes") or [])
    if task == "regression":
        return pd.DataFrame({"prediction": np.asarray(raw, dtype="float64").reshape(-1)})
    values = np.asarray(raw, dtype="float64")
    if task == "binary":
        positive = values.reshape(-1) if values.ndim == 1 or values.shape[1] == 1 else values[:, 1]
        matrix = np.column_stack([1.0 - positive, positive])
        codes = (positive >= DECISION_THRESHOLD).astype("int64")
    else:
        matrix = values.reshape(len(values), -1)
        if matrix.shape[1] != len(classes):
            raise ValueError(f"the model gives {matrix.shape[1]} class probabilities; the target has {len(classes)} "
                             f"classes {classes!r}")
        codes = matrix.argmax(axis=1)
    labels: Any = np.empty(len(codes), dtype=object)
    labels[:] = [classes[c] for c in codes]
    kinds = {type(c) for c in classes}
    if kinds in ({int}, {bool}):  # integer or boolean classes answer in that type, not as Python objects
        labels = labels.astype("int64" if kinds == {int} else "bool")
    columns: dict[str, Any] = {"prediction": labels}
    if task == "binary":
        columns["probability"] = matrix[:, 1]
    for i, value in enumerate(classes):
        columns[probability_column(value)] = matrix[:, i]
    return pd.DataFrame(columns)


def scores_from_frame(frame: Any, spec: Any) -> Any:
    """A prediction frame back to scores: the positive-class vector (binary, legacy versions too), the (n, k)
    class-probability matrix in class order (multiclass) or the predicted values (regression)."""
    import numpy as np

    if not spec.is_classification:
        return np.asarray(frame["prediction"], dtype="float64").reshape(-1)
    if spec.task == "binary":
        return np.asarray(frame["probability"], dtype="float64").reshape(-1)
    return np.asarray(frame[[probability_column(c) for c in spec.classes]], dtype="float64")


class RatchetClassifier(PythonModel):
    """Every registered version's pyfunc (the name is pickled into them): classifiers and regressors alike."""

    def load_context(self, context: Any) -> None:
        import json

        from ml_tasks.data.transform import FittedTransform

        with open(context.artifacts[TRANSFORM_ARTIFACT]) as handle:
            self.transform = FittedTransform.from_dict(json.load(handle))
        self.target: dict[str, Any] | None = None
        if TARGET_ARTIFACT in context.artifacts:
            with open(context.artifacts[TARGET_ARTIFACT]) as handle:
                self.target = json.load(handle)
        self.explanation_path: str | None = context.artifacts.get(EXPLANATION_ARTIFACT)
        self.network: Any = None
        self.estimator: Any = None
        if KERAS_ARTIFACT in context.artifacts:
            import keras

            self.network = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        else:
            from ml_tasks.training.sklearn_models import load_sklearn

            self.estimator = load_sklearn(context.artifacts[SKLEARN_ARTIFACT])

    @property
    def task(self) -> str:
        return str((getattr(self, "target", None) or {}).get("task", "binary"))

    def raw_scores(self, features: Any) -> Any:
        """The model's output on transformed features: positive-class probabilities (binary), the class-probability
        matrix (multiclass) or predicted values (regression)."""
        import numpy as np

        task = self.task
        if self.network is not None:
            raw = np.asarray(self.network.predict(features, batch_size=4096, verbose=0), dtype="float64")
            return raw if task == "multiclass" else raw.reshape(-1)
        if task == "regression":
            return np.asarray(self.estimator.predict(features), dtype="float64").reshape(-1)
        probabilities = np.asarray(self.estimator.predict_proba(features), dtype="float64")
        return probabilities if task == "multiclass" else probabilities[:, 1]

    # No type hints here: MLflow would build a schema from them; the logged signature is the schema.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        features = self.transform.apply(pd.DataFrame(model_input))
        return prediction_frame(self.raw_scores(features), getattr(self, "target", None))


# The same class under a name that says what it is now; versions keep pickling `RatchetClassifier`.
RatchetModel = RatchetClassifier
