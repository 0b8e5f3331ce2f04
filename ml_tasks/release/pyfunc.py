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


class RatchetClassifier(PythonModel):
    def load_context(self, context: Any) -> None:
        import json

        from ml_tasks.data.transform import FittedTransform

        with open(context.artifacts[TRANSFORM_ARTIFACT]) as handle:
            self.transform = FittedTransform.from_dict(json.load(handle))
        self.network: Any = None
        self.estimator: Any = None
        if KERAS_ARTIFACT in context.artifacts:
            import keras

            self.network = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        else:
            from ml_tasks.training.sklearn_models import load_sklearn

            self.estimator = load_sklearn(context.artifacts[SKLEARN_ARTIFACT])

    # No type hints here: MLflow would build a schema from them; the logged signature is the schema.
    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        features = self.transform.apply(pd.DataFrame(model_input))
        if self.network is not None:
            raw = self.network.predict(features, batch_size=4096, verbose=0)
        else:
            raw = self.estimator.predict_proba(features)[:, 1]
        probability = np.asarray(raw, dtype="float64").reshape(-1)
        return pd.DataFrame({
            "probability": probability,
            "prediction": (probability >= DECISION_THRESHOLD).astype("int64"),
        })
