"""Serving a compressed TFLite model: the interpreter, batched inference, and the pyfunc that takes raw rows.

This is all a server needs to load a registered TFLite version; the offline job
that makes those versions (`ml_tasks.compression.job`) imports it too, to measure
each file in the runtime that will serve it. TensorFlow is imported only when a
model is loaded, and only when `ai-edge-litert` is not installed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

# The files of a registered TFLite version's data folder: the flatbuffer and the fitted transform of the original.
TFLITE_FILE = "model.tflite"
TRANSFORM_COPY = "transform.json"
# Rows per interpreter call: larger inputs are scored in chunks of this many.
TFLITE_CHUNK_ROWS = 4096
DECISION_THRESHOLD = 0.5


def _interpreter(model_path: str) -> tuple[Any, str]:
    """A LiteRT interpreter (`ai-edge-litert` when installed, else TensorFlow's deprecated `tf.lite.Interpreter`)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=model_path), "tf.lite"
    return Interpreter(model_path=model_path), "ai_edge_litert"


class TFLiteRunner:
    """Outputs (probabilities, or a regression's predictions) of a TFLite flatbuffer for any number of rows.

    The input is resized as needed; one call at a time.
    """

    def __init__(self, model_path: str) -> None:
        self.interpreter, self.runtime = _interpreter(model_path)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_dtype = str(self.input["dtype"].__name__)
        self.rows = int(self.input["shape"][0])
        self.lock = threading.Lock()

    def _quantize(self, x: Any) -> Any:
        import numpy as np

        scale, zero = self.input["quantization"]
        if self.input["dtype"] == np.float32 or not scale:
            return x.astype(np.float32, copy=False)
        return np.clip(np.round(x / scale + zero), np.iinfo(self.input["dtype"]).min,
                       np.iinfo(self.input["dtype"]).max).astype(self.input["dtype"])

    def _dequantize(self, y: Any) -> Any:
        import numpy as np

        scale, zero = self.output["quantization"]
        if self.output["dtype"] == np.float32 or not scale:
            return y.astype(np.float64)
        return (y.astype(np.float64) - zero) * scale

    def __call__(self, x: Any) -> Any:
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float32)
        width = int(np.prod(self.output["shape"][1:])) if len(self.output["shape"]) > 1 else 1
        # One value per row (a sigmoid or linear head), or one per class (softmax).
        out = np.empty((len(x), width) if width > 1 else len(x), dtype=np.float64)
        with self.lock:
            for start in range(0, len(x), TFLITE_CHUNK_ROWS):
                part = self._quantize(x[start:start + TFLITE_CHUNK_ROWS])
                if len(part) != self.rows:
                    self.interpreter.resize_tensor_input(self.input["index"], list(part.shape))
                    self.interpreter.allocate_tensors()
                    self.rows = len(part)
                self.interpreter.set_tensor(self.input["index"], part)
                self.interpreter.invoke()
                result = self._dequantize(self.interpreter.get_tensor(self.output["index"]))
                out[start:start + len(part)] = result.reshape(len(part), width) if width > 1 else result.reshape(-1)
        return out


class TFLiteClassifier:
    """The pyfunc of a registered TFLite model: raw rows, the fitted transform, the interpreter."""

    def __init__(self, folder: str) -> None:
        from ml_tasks.data.transform import FittedTransform
        from ml_tasks.release.pyfunc import TARGET_FILE

        self.transform = FittedTransform.from_dict(json.loads((Path(folder) / TRANSFORM_COPY).read_text()))
        self.runner = TFLiteRunner(str(Path(folder) / TFLITE_FILE))
        # What the model predicts (task, classes); versions compressed before it existed are binary 0/1.
        record = Path(folder) / TARGET_FILE
        self.target: dict[str, Any] | None = json.loads(record.read_text()) if record.is_file() else None

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """The same prediction contract as every other version (`ml_tasks.release.pyfunc.prediction_frame`)."""
        import pandas as pd

        from ml_tasks.release.pyfunc import prediction_frame

        return prediction_frame(self.runner(self.transform.apply(pd.DataFrame(model_input))), self.target)
