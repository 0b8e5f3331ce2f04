"""The model as MLflow serves it: raw rows in, the fitted transform, the Keras MLP.

`models:/NAME@champion` loaded through pyfunc takes the declared raw columns
and applies the transform saved beside the network, exactly as in training.
Loading needs the `ratchet` package installed (this class is referenced by
module, not copied); we only ever load models our own pipeline registered.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

KERAS_ARTIFACT = "keras_model"
TRANSFORM_ARTIFACT = "transform"
DECISION_THRESHOLD = 0.5


class RatchetClassifier(PythonModel):
    def load_context(self, context: Any) -> None:
        import json

        import keras

        from ml_tasks.transform import FittedTransform

        with open(context.artifacts[TRANSFORM_ARTIFACT]) as handle:
            self.transform = FittedTransform.from_dict(json.load(handle))
        self.network = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    # No type hints here: MLflow would build a schema from them; the logged signature is the schema.
    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        features = self.transform.apply(pd.DataFrame(model_input))
        probability = np.asarray(self.network.predict(features, batch_size=4096, verbose=0), dtype="float64").reshape(-1)
        return pd.DataFrame({
            "probability": probability,
            "prediction": (probability >= DECISION_THRESHOLD).astype("int64"),
        })
