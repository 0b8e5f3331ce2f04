"""Versions registered before `ml_tasks` was grouped by stage still load, score and serve.

`tests/fixtures/legacy_models/` holds model folders written by the pre-move code (commit bbba5a7, see its
README): two `RatchetClassifier` pyfuncs pickled as `ml_tasks.pyfunc_model.RatchetClassifier` (scikit-learn
and Keras) and a TFLite version whose MLmodel names `loader_module: ml_tasks.compression`. Each is registered
into a fresh MLflow store as it would sit in a long-lived registry, then loaded by MLflow's pyfunc loader and by
`ratchet serve`'s checked loader, and must answer exactly what it answered when it was made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models"
FOLDERS = ("sklearn_logistic", "keras_mlp", "tflite_dynamic_range")


def _frame(path: Path):
    import pandas as pd

    return pd.read_json(path, orient="split")


@pytest.fixture
def registered(ratchet_home):
    """Each legacy folder registered as version 1 of its own model, as the old code left it in the registry."""
    import mlflow

    from ml_tasks import tracking

    tracking.configure()
    names = {}
    for folder in FOLDERS:
        with mlflow.start_run(run_name=f"legacy-{folder}") as run:
            mlflow.log_artifacts(str(FIXTURES / folder), artifact_path="model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", f"legacy_{folder}").version
        names[folder] = (f"legacy_{folder}", str(version))
    return names


def test_the_fixtures_persist_the_old_module_paths():
    for folder in ("sklearn_logistic", "keras_mlp"):
        assert b"ml_tasks.pyfunc_model" in (FIXTURES / folder / "python_model.pkl").read_bytes()
    assert "loader_module: ml_tasks.compression" in (FIXTURES / "tflite_dynamic_range" / "MLmodel").read_text()


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_version_registered_before_the_move_loads_and_scores_as_it_did(registered, folder):
    import mlflow
    import numpy as np

    name, version = registered[folder]
    rows = _frame(FIXTURES / "input.json")
    expected = _frame(FIXTURES / f"expected_{folder}.json")
    scores = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rows)
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected["probability"].to_numpy(), atol=1e-6)
    assert scores["prediction"].tolist() == expected["prediction"].tolist()


@pytest.mark.parametrize("folder", FOLDERS)
def test_ratchet_serve_loads_a_version_registered_before_the_move(registered, folder):
    import numpy as np

    from ml_tasks.serving.loading import load_version

    name, version = registered[folder]
    rows = _frame(FIXTURES / "input.json")
    expected = _frame(FIXTURES / f"expected_{folder}.json")
    model = load_version(name, version, "champion")
    columns = {c: [None if (isinstance(v, float) and np.isnan(v)) else v for v in rows[c].tolist()] for c in rows.columns}
    probability, prediction = model.predict(columns, len(rows))
    np.testing.assert_allclose(np.asarray(probability), expected["probability"].to_numpy(), atol=1e-5)
    assert list(prediction) == expected["prediction"].tolist()

