"""The DAGs besides nightly_retrain, each run end to end as a real DagRun (`airflow dags test`), effects checked.

`data_validation` passes a good drop and fails a bad one, naming the expectation; `promote_model` moves
`champion` to a reviewed version and refuses one without a passed infra validation; `rollback_model` moves it
back; both write the alias history. `compress_model` compresses a small trained Keras version and registers
the gated result with its lineage. Real Airflow (SQLite), real Great Expectations, a real MLflow registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_tasks.constants import TAG_INFRA_VALIDATION
from ml_tasks.data.landing import land_frame
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.datasets.corruption import corrupt

from .helpers import dags_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = SYNTHETIC.registered_model


@pytest.fixture(scope="module")
def airflow_home(module_home: Path) -> Path:
    from ml_tasks.ops.airflow_cli import init_airflow

    init_airflow()
    return module_home


def test_data_validation_passes_a_good_drop_and_fails_a_bad_one_naming_the_expectation(airflow_home):
    good = land_frame(synthetic.generate(2000, seed=21), SYNTHETIC.name, "2026-05-01")
    code, log = dags_test("data_validation", {"source_uri": good.as_uri(), "suite": SYNTHETIC.suite},
                           airflow_home / "logs" / "validation-good.log")
    assert code == 0, log[-3000:]
    assert "state=success" in log
    bad = land_frame(corrupt(synthetic.generate(2000, seed=22), SYNTHETIC, "out_of_range"), SYNTHETIC.name, "2026-05-02")
    code, log = dags_test("data_validation", {"source_uri": bad.as_uri(), "suite": SYNTHETIC.suite},
                           airflow_home / "logs" / "validation-bad.log")
    assert code != 0 and "state=failed" in log
    assert f"expectation(s) of suite '{SYNTHETIC.suite}' failed" in log and "x0" in log
    assert "expect_column_values_to_be_between" in log


@pytest.fixture(scope="module")
def versions(airflow_home: Path) -> list[str]:
    """Three versions of the synthetic model: v1 champion, v2 infra-validated, v3 never validated."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    from ml_tasks import tracking
    from ml_tasks.release import registry

    class Constant(PythonModel):  # the registry DAGs move aliases; they never load the model
        def predict(self, context, model_input, params=None):
            return model_input

    tracking.configure()
    made = []
    for tags in ({TAG_INFRA_VALIDATION: "passed: v1"}, {TAG_INFRA_VALIDATION: "passed: v2"}, {}):
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
        made.append(registry.register_candidate(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id, tags))
    registry.compare_and_set_champion(MODEL, made[0], None, "first champion")
    return made


def test_promote_model_moves_champion_and_refuses_an_unvalidated_version(versions, airflow_home):
    from ml_tasks.release.registry import alias_history, current_champion

    v1, v2, v3 = versions
    code, log = dags_test("promote_model", {"model": MODEL, "version": v3, "expected_champion": v1,
                                             "reason": "reviewed by the test"}, airflow_home / "logs" / "promote-v3.log")
    assert code != 0 and "has no passed infra validation" in log
    assert current_champion(MODEL) == v1
    code, log = dags_test("promote_model", {"model": MODEL, "version": v2, "expected_champion": v1,
                                             "reason": "reviewed by the test"}, airflow_home / "logs" / "promote-v2.log")
    assert code == 0, log[-3000:]
    assert current_champion(MODEL) == v2
    last = alias_history(MODEL)[-1]
    assert (last["alias"], last["previous"], last["version"]) == ("champion", v1, v2)
    assert "reviewed by the test" in last["reason"]


def test_rollback_model_restores_the_previous_champion(versions, airflow_home):
    from ml_tasks.release.registry import alias_history, current_champion

    assert current_champion(MODEL) == versions[1]  # after the promotion above
    code, log = dags_test("rollback_model", {"model": MODEL}, airflow_home / "logs" / "rollback.log")
    assert code == 0, log[-3000:]
    assert current_champion(MODEL) == versions[0]
    last = alias_history(MODEL)[-1]
    assert (last["previous"], last["version"]) == (versions[1], versions[0])
    assert last["reason"] == f"rollback from v{versions[1]}"


def test_compress_model_registers_a_gated_compressed_version_with_its_lineage(versions, airflow_home):
    from ml_tasks import tracking
    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.constants import TAG_FINGERPRINT, TAG_RUN_KEY
    from ml_tasks.data.preparation import prepare
    from ml_tasks.release import registry
    from ml_tasks.training.trainer import train

    drop = airflow_home / "compress-drop"
    drop.mkdir()
    synthetic.generate(1500, seed=23).to_parquet(drop / "part-000.parquet", index=False)
    ctx = RunContext(SYNTHETIC.name, "compress-dag")
    prepared = prepare(ctx, drop.as_uri())
    parent = tracking.ensure_parent_run(ctx)
    params = {"n_layers": 1, "units": 8, "dropout": 0.0, "l2": 1e-6, "learning_rate": 1e-2, "batch_size": 256}
    trained = train(ctx, TrainConfig(max_epochs=2, patience=2, seed=0), params, parent)
    keras_version = registry.register_candidate(MODEL, trained.model_uri, parent, {
        TAG_RUN_KEY: ctx.tracking_key, TAG_FINGERPRINT: prepared.fingerprint, TAG_INFRA_VALIDATION: "passed"})
    conf = {"dataset": SYNTHETIC.name, "version": keras_version, "methods": ["dynamic_range"], "max_accuracy_loss": 0.1}
    code, log = dags_test("compress_model", conf, airflow_home / "logs" / "compress.log")
    assert code == 0, log[-3000:]
    name = f"{MODEL}_dynamic_range"
    (compressed,) = tracking.client().search_model_versions(f"name = '{name}'")
    assert compressed.tags["ratchet.compression.source_version"] == keras_version
    assert compressed.tags["ratchet.compression.gate"].startswith("passed")
    assert compressed.tags[TAG_FINGERPRINT] == prepared.fingerprint
    code, log = dags_test("compress_model", {**conf, "version": versions[2]}, airflow_home / "logs" / "compress-bad.log")
    assert code != 0 and "carries no Ratchet run key" in log
