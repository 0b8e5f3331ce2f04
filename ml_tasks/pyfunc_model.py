"""Import shim: versions registered before the package was grouped by stage pickled `RatchetClassifier` here.

MLflow cloudpickles the pyfunc class by reference (module and name), so every version registered with the
old layout loads `ml_tasks.pyfunc_model.RatchetClassifier`. The class lives in `ml_tasks.release.pyfunc`;
this module must stay as long as such versions may be loaded (tests/unit/test_legacy_versions.py).
"""

from ml_tasks.release.pyfunc import (
    DECISION_THRESHOLD,
    KERAS_ARTIFACT,
    SKLEARN_ARTIFACT,
    TRANSFORM_ARTIFACT,
    RatchetClassifier,
    needs_tensorflow,
)

__all__ = [
    "DECISION_THRESHOLD", "KERAS_ARTIFACT", "SKLEARN_ARTIFACT", "TRANSFORM_ARTIFACT", "RatchetClassifier",
    "needs_tensorflow",
]
