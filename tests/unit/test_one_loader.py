"""One checked loader: evaluation, infra validation and `ratchet serve` all refuse a tampered version.

The tampered version is a real registered version of our scikit-learn pyfunc (tests/fixtures/legacy_models)
whose `python_model.pkl` was edited to name a class that is not ours. Loading it would unpickle whatever it
names; every stage that would load it must refuse it first, with the reason. Its untampered twin is a version
registered before the stage packages (pickled at the `ml_tasks.pyfunc_model` shim): the shim widens nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models" / "sklearn_logistic"
NAME = "tampered_model"


@pytest.fixture
def tampered(ratchet_home, tmp_path):
    """(ctx, version): a tampered version registered in a fresh store, and a run context with held-out rows."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.constants import TEST_RAW_FILE
    from ml_tasks.datasets import SYNTHETIC
    from ml_tasks.datasets.synthetic import generate

    folder = tmp_path / "model"
    shutil.copytree(FIXTURE, folder)
    pickled = (folder / "python_model.pkl").read_bytes()
    (folder / "python_model.pkl").write_bytes(pickled.replace(b"ml_tasks.pyfunc_model", b"ml_tasks.pyfunc_mode_"))
    tracking.configure()
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", NAME).version)
    ctx = RunContext(SYNTHETIC.name, "2026-01-01")
    ctx.prepared_dir.mkdir(parents=True, exist_ok=True)
    generate(300, seed=5).to_parquet(ctx.prepared_dir / TEST_RAW_FILE)
    return ctx, version, run.info.run_id


REFUSAL = "refers to ml_tasks.pyfunc_mode_.RatchetClassifier, which is not ours; refused"


def test_serving_refuses_a_tampered_version(tampered):
    from ml_tasks.release.model_loading import ModelLoadError
    from ml_tasks.serving.loading import load_version

    _, version, _ = tampered
    with pytest.raises(ModelLoadError, match=REFUSAL):
        load_version(NAME, version, "champion")


def test_infra_validation_refuses_a_tampered_version(tampered):
    from ml_tasks.release.infra_validation import validate_in_process

    ctx, version, _ = tampered
    result = validate_in_process(ctx.to_dict(), NAME, version, budget_ms=250.0)
    assert result["passed"] is False and result["rows_scored"] == 0
    assert any(REFUSAL in problem for problem in result["problems"]), result["problems"]


def test_evaluation_refuses_a_tampered_candidate_and_reports_a_tampered_champion(tampered):
    from ml_tasks.release.evaluation import evaluate_in_process
    from ml_tasks.release.model_loading import ModelLoadError

    ctx, version, run_id = tampered
    with pytest.raises(ModelLoadError, match=REFUSAL):
        evaluate_in_process(ctx.to_dict(), f"models:/{NAME}/{version}", None, run_id)


def test_the_untampered_version_loads_through_the_same_loader(tmp_path, ratchet_home):
    from ml_tasks.release.model_loading import load_checked

    model, local = load_checked(str(FIXTURE), tmp_path / "copy")
    assert (local / "MLmodel").is_file() and model.metadata.get_input_schema() is not None
