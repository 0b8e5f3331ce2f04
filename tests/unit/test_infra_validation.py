"""Infra validation never passes a check it could not run: a version that cannot score one row fails."""

from __future__ import annotations

import pandas as pd
from mlflow.pyfunc import PythonModel


class AnswersBatchesOnly(PythonModel):
    """Scores batches like a served model, but breaks on a single row (the latency check's input)."""

    def predict(self, context, model_input, params=None):
        if len(model_input) == 1:
            raise RuntimeError("cannot score a single row")
        return pd.DataFrame({"probability": [0.5] * len(model_input), "prediction": [1] * len(model_input)})


def test_a_version_that_fails_on_one_row_fails_infra_validation(ratchet_home, monkeypatch):
    import mlflow

    from ml_tasks.release import model_loading

    # The checked loader only unpickles our own pyfunc class; this probe class is let in for this test alone.
    monkeypatch.setattr(model_loading, "ALLOWED_PICKLE_GLOBALS",
                        model_loading.ALLOWED_PICKLE_GLOBALS | {(__name__, AnswersBatchesOnly.__name__)})

    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.constants import TEST_RAW_FILE
    from ml_tasks.datasets import SYNTHETIC
    from ml_tasks.datasets.synthetic import generate
    from ml_tasks.release.infra_validation import validate_in_process

    ctx = RunContext(SYNTHETIC.name, "2026-01-01")
    rows = generate(300, seed=3)
    ctx.prepared_dir.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(ctx.prepared_dir / TEST_RAW_FILE)
    tracking.configure()
    example = rows[list(SYNTHETIC.features)].head(5)
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=AnswersBatchesOnly(), input_example=example,
                                pip_requirements=["mlflow"])  # no requirement inference subprocess
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "infra_probe").version
    result = validate_in_process(ctx.to_dict(), "infra_probe", str(version), budget_ms=250.0)
    assert result["passed"] is False
    assert any("scoring one row failed: RuntimeError: cannot score a single row" in p for p in result["problems"])
    assert result["rows_scored"] == 205  # the input example and the 200-row sample did score; the single row did not
