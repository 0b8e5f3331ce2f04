"""The one checked loader: evaluation, infra validation and `ratchet serve` load a version only through it.

Loading a pyfunc unpickles it, and unpickling runs whatever the file names. So before anything in a
downloaded version is loaded, `check_model_files` allows only our pyfunc class (pickled by reference) or our
TFLite loader module, and no shipped code. One loader means a version that passes infra validation is one the
server will load, and a tampered version is refused by every stage that would touch it.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

from ml_tasks.compression import LOADER_MODULE
from ml_tasks.errors import RatchetError

log = logging.getLogger(__name__)

# What a registered version may be made of: our pyfunc class (pickled by reference) or our TFLite loader module.
# `ml_tasks.pyfunc_model` is where versions registered before the stage packages pickled the class (a shim now).
ALLOWED_LOADERS = frozenset({"mlflow.pyfunc.model", LOADER_MODULE})
ALLOWED_PICKLE_GLOBALS = frozenset({
    ("ml_tasks.release.pyfunc", "RatchetClassifier"),
    ("ml_tasks.pyfunc_model", "RatchetClassifier"),
    ("mlflow.models.signature", "_TypeHints"),
})


class ModelLoadError(RatchetError):
    """A model version that is refused (not made of our pyfunc) or fails to load."""


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


def load_checked(model_uri: str, folder: Path) -> tuple[Any, Path]:
    """Download `model_uri` (`models:/`, `runs:/` or a path) into `folder`, check it is ours, load it through pyfunc.

    The caller owns `folder` and keeps it for the model's life (a TFLite interpreter reads its file there).
    `suppress_warnings` skips MLflow's scan of every installed package against the model's requirements (ours).
    """
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder)))
    check_model_files(local)
    log.info("loading %s (checked: our pyfunc)", model_uri)
    return mlflow.pyfunc.load_model(str(local), suppress_warnings=True), local
