"""The Models view's data on a real MLflow store (SQLite + local artifacts), with no Airflow involved."""

from __future__ import annotations

import pytest

from ml_tasks.constants import TAG_GATE_DECISION, TAG_GATE_REASONS, TAG_INFRA_VALIDATION

MODEL = "overview_test_model"


@pytest.fixture
def registered(ratchet_home, monkeypatch):
    import mlflow
    from mlflow.pyfunc import PythonModel

    from ml_tasks import tracking
    from ml_tasks.release import registry

    class Constant(PythonModel):  # the registry only needs an artifact to point at
        def predict(self, context, model_input, params=None):
            return model_input

    monkeypatch.setenv("RATCHET_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    tracking.configure()
    made = []
    for i, decision in enumerate(["promote", "reject", "promote"]):
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
            mlflow.log_metrics({"test.roc_auc": 0.8 + i / 100, "test.accuracy": 0.7, "test.log_loss": 0.5,
                                "train.final_val_auc": 0.9})
        tags = {TAG_GATE_DECISION: decision, TAG_GATE_REASONS: f"roc_auc check {i}; <b>accuracy</b> ok",
                TAG_INFRA_VALIDATION: "passed: a stand-in that serves"}
        made.append(registry.register_candidate(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id, tags))
    registry.compare_and_set_champion(MODEL, made[0], None, "first")
    registry.set_challenger(MODEL, made[1], "candidate of run 2")
    registry.compare_and_set_champion(MODEL, made[2], made[0], "better")
    registry.set_challenger(MODEL, made[2], "candidate of run 3")
    return made


def test_overview_lists_champion_challenger_metrics_gate_and_history(registered):
    from ml_tasks.release.model_overview import overview

    result = overview()
    assert result["mlflow_ui_url"] == "http://mlflow.example:5000"
    (model,) = result["models"]
    assert model["name"] == MODEL and model["version_count"] == 3
    champion = model["champion"]
    assert champion["version"] == registered[2] and champion["aliases"] == ["challenger", "champion"]
    assert champion["metrics"] == pytest.approx({"roc_auc": 0.82, "accuracy": 0.7, "log_loss": 0.5})
    assert champion["gate_decision"] == "promote"
    assert champion["gate_reasons"] == ["roc_auc check 2", "<b>accuracy</b> ok"]
    assert champion["mlflow_url"] == f"http://mlflow.example:5000/#/models/{MODEL}/versions/{registered[2]}"
    assert "/#/experiments/" in champion["run_url"] and champion["run_id"] in champion["run_url"]
    assert model["challenger"]["version"] == registered[2]
    assert [v["version"] for v in model["versions"]] == list(reversed(registered))  # newest first
    assert model["versions"][1]["gate_decision"] == "reject" and model["versions"][1]["aliases"] == []
    history = [(h["alias"], h["version"], h["previous"]) for h in model["alias_history"]]  # newest first
    assert history == [("challenger", registered[2], registered[1]), ("champion", registered[2], registered[0]),
                       ("challenger", registered[1], None), ("champion", registered[0], None)]


def test_recent_limits_versions_but_keeps_the_aliased_ones(registered):
    from ml_tasks import tracking
    from ml_tasks.release.model_overview import model_overview
    from ml_tasks.release.registry import promote

    promote(MODEL, registered[0], "rollback test")
    model = model_overview(tracking.client(), MODEL, recent=1)
    assert [v["version"] for v in model["versions"]] == [registered[2]]
    assert model["champion"]["version"] == registered[0]  # older than `recent`, still shown as champion
    assert model["champion"]["metrics"]["roc_auc"] == pytest.approx(0.80)


def test_an_empty_registry_has_no_models(ratchet_home):
    from ml_tasks.release.model_overview import overview

    assert overview()["models"] == []


@pytest.fixture
def plugin_app(ratchet_home, monkeypatch):
    """The plugin's FastAPI app in-process; `require_reader` is Airflow's auth, tested against a real API server
    in tests/integration/test_scheduler_api.py, and replaced here by a pass."""
    import sys

    from fastapi.testclient import TestClient

    from ml_tasks.settings import PROJECT_ROOT

    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    from ratchet_airflow import web

    web.app.dependency_overrides[web.require_reader] = lambda: None
    try:
        yield TestClient(web.app), ratchet_home
    finally:
        web.app.dependency_overrides.clear()
        sys.modules.pop("ratchet_airflow.web", None)


def test_models_page_escapes_what_it_renders(monkeypatch):
    from ml_tasks.settings import PROJECT_ROOT

    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    from ratchet_airflow.web import render_models

    hostile = "<script>alert(1)</script>"
    version = {"version": "1", "aliases": ["champion"], "created_at": 0, "run_id": "r", "metrics": {"roc_auc": 0.9},
               "gate_decision": hostile, "gate_reasons": [hostile], "review": hostile, "infra_validation": "",
               "airflow": {"dag_id": "d", "run_id": hostile}, "mlflow_url": "javascript:alert(1)", "run_url": ""}
    page = render_models({"mlflow_ui_url": "http://m", "key_metrics": ["roc_auc"], "models": [
        {"name": hostile, "champion": version, "challenger": None, "versions": [version], "version_count": 1,
         "alias_history": [{"alias": hostile, "version": "1", "previous": None, "reason": hostile, "at": hostile}],
         "mlflow_url": "http://m/#/models/x"}]})
    assert hostile not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page  # a link that is not http(s) is rendered as text
    assert "0.9000" in page


def test_data_docs_are_served_read_only_and_confined(plugin_app):
    client, home = plugin_app
    docs = home / "gx" / "data_docs" / "synthetic" / "run1"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>docs</html>")
    (home / "secret.txt").write_text("no")
    assert client.get("/data-docs/synthetic/run1/index.html").text == "<html>docs</html>"
    assert client.get("/data-docs/synthetic/run1/").text == "<html>docs</html>"
    for path in ("/data-docs/../secret.txt", "/data-docs/%2e%2e/%2e%2e/secret.txt", "/data-docs/..%2f..%2fsecret.txt",
                 "/data-docs/synthetic/run1/missing.html", f"/data-docs/{home}/secret.txt"):
        assert client.get(path).status_code == 404, path
    assert client.post("/data-docs/synthetic/run1/index.html").status_code == 405
    assert client.get("/mlflow/runs/not-a-run-id").status_code == 404


def test_models_json_and_page_on_an_empty_registry(plugin_app):
    client, _ = plugin_app
    assert client.get("/api/models").json()["models"] == []
    page = client.get("/models/")
    assert page.status_code == 200 and "No registered models yet." in page.text
