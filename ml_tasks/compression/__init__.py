"""Model compression: the offline job (`job`) and the TFLite runtime that serves its results (`tflite_runtime`).

Light on purpose: this package is the `loader_module` written into the MLmodel
file of every registered TFLite version (`LOADER_MODULE`), so MLflow imports it,
and calls `_load_pyfunc`, whenever such a version is loaded, for as long as the
version exists. Neither the job nor TensorFlow is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_tasks.compression.tflite_runtime import TFLiteClassifier

# Persisted in registered versions' MLmodel files: keep this module path and `_load_pyfunc` working.
LOADER_MODULE = "ml_tasks.compression"


def _load_pyfunc(data_path: str, model_config: Any = None) -> TFLiteClassifier:
    """MLflow's loader-module hook for the TFLite pyfuncs the compression job registers."""
    from ml_tasks.compression.tflite_runtime import TFLiteClassifier

    return TFLiteClassifier(data_path)
