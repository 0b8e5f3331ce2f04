"""nightly_retrain through a real Airflow scheduler, triggered through the REST API as the UI does.

`airflow standalone` runs the scheduler (LocalExecutor on SQLite), the DAG
processor, the triggerer and the API server with the simple auth manager;
the test logs in with the generated password, triggers a run with a conf,
waits for it, then reads the registry with MlflowClient.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from ml_tasks.data.landing import land_frame
from ml_tasks.datasets import SYNTHETIC, synthetic

from .airflow_stack import REPARSE_INTERVAL_S
from .helpers import SMALL_BUDGET, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG_ID = "nightly_retrain"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def airflow_api(module_home):
    from ml_tasks.ops.airflow_cli import airflow_env, init_airflow
    from ml_tasks.settings import get_settings

    init_airflow()
    port = _free_port()
    env = {**airflow_env(), "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(REPARSE_INTERVAL_S)}
    log_path = module_home / "standalone.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=3).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(2)
        else:
            pytest.fail(f"Airflow API did not come up: {log_path.read_text()[-3000:]}")
        passwords = get_settings().airflow_home / "simple_auth_manager_passwords.json.generated"
        while not passwords.is_file() and time.monotonic() < deadline:
            time.sleep(1)
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        token = requests.post(f"{base}/auth/token", json={"username": username, "password": password}, timeout=10)
        token.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        # wait for the DAG processor to serialise the DAG
        while time.monotonic() < deadline:
            if session.get(f"{base}/api/v2/dags/{DAG_ID}", timeout=10).ok:
                break
            time.sleep(2)
        yield base, session
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_api_refuses_requests_without_credentials(airflow_api):
    base, _ = airflow_api
    assert requests.get(f"{base}/api/v2/dags", timeout=10).status_code in (401, 403)


def test_invalid_conf_is_refused_before_any_task_runs(airflow_api):
    base, session = airflow_api
    response = session.post(f"{base}/api/v2/dags/{DAG_ID}/dagRuns",
                            json={"logical_date": None, "conf": {"dataset": "synthetic", "tuning_trials": 0}}, timeout=30)
    assert response.status_code in (400, 422), response.text
    runs = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "manual"}, timeout=30).json()
    assert runs["total_entries"] == 0


def _param_schemas(base: str, session: requests.Session) -> dict[str, dict]:
    details = session.get(f"{base}/api/v2/dags/{DAG_ID}/details", timeout=30)
    assert details.ok, details.text
    params = details.json()["params"]
    return {name: spec.get("schema") or {} for name, spec in params.items()}


def _boundary_values(schema: dict) -> list:
    values: list = []
    for key, step in (("minimum", -1), ("maximum", 1), ("exclusiveMinimum", 0), ("exclusiveMaximum", 0)):
        if isinstance(schema.get(key), int | float):
            values.append(schema[key] + step)
    return values


def test_fuzzed_params_are_refused_through_the_rest_api_before_any_task_runs(airflow_api):
    """Property-based (hypothesis): one Param at a time gets a value its JSON schema refuses; the trigger must 4xx."""
    import jsonschema
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    base, session = airflow_api
    schemas = {name: schema for name, schema in _param_schemas(base, session).items() if schema}
    assert {"dataset", "tuning_trials", "source_uri", "absolute_thresholds"} <= set(schemas)
    before = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30).json()["total_entries"]
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
        max_leaves=6,
    )

    @st.composite
    def invalid_conf(draw):
        name = draw(st.sampled_from(sorted(schemas)))
        schema = schemas[name]
        value = draw(st.sampled_from(_boundary_values(schema)) if _boundary_values(schema) and draw(st.booleans())
                     else json_values)
        assume(not jsonschema.Draft7Validator(schema).is_valid(value))
        return {**SMALL_BUDGET, name: value}

    refused: list[int] = []

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(conf=invalid_conf())
    def trigger_refused(conf):
        response = session.post(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf},
                                timeout=30)
        assert response.status_code in (400, 422), f"{conf} was accepted: {response.status_code} {response.text[:300]}"
        refused.append(response.status_code)

    trigger_refused()
    assert len(refused) >= 30
    after = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30).json()["total_entries"]
    assert after == before  # no run was created, so no task could run


def _trigger(base: str, session: requests.Session, conf: dict) -> str:
    created = session.post(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30)
    assert created.status_code == 200, created.text
    return str(created.json()["dag_run_id"])


def _wait_for_run(base: str, session: requests.Session, run_id: str, seconds: float = 600) -> tuple[str, dict]:
    deadline = time.monotonic() + seconds
    state = "queued"
    while time.monotonic() < deadline:
        state = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30).json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)  # a run's end is noticed within a second, not up to five later
    tasks = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", timeout=30).json()
    return state, {t["task_id"]: t["state"] for t in tasks["task_instances"]}


def test_triggered_run_trains_and_promotes_a_champion(airflow_api, module_home):
    base, session = airflow_api
    drop = land_frame(synthetic.generate(3000, seed=11), "synthetic", "api-drop")
    assert session.patch(f"{base}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=30).ok
    run_id = _trigger(base, session, {**SMALL_BUDGET, "source_uri": drop.as_uri()})
    state, states = _wait_for_run(base, session, run_id)
    assert state == "success", f"run {run_id} ended {state}: {states}"
    assert states.pop("approve_promotion") == "skipped"  # require_approval was off
    assert states.pop("train_worker") == "skipped"  # train_workers=1: the empty mapping is skipped
    assert set(states.values()) == {"success"}

    champion = registry_state(SYNTHETIC.registered_model)
    assert champion["champion"] == "1" and champion["versions"] == [1]
    from ml_tasks import tracking

    version = tracking.client().get_model_version_by_alias(SYNTHETIC.registered_model, "champion")
    assert version.tags["ratchet.airflow.run_id"] == run_id
    assert version.tags["ratchet.gate.decision"] == "promote"


# The reviewed runs' family: scikit-learn trains at once, where a Keras slot, trainer and infra check each start
# TensorFlow in a fresh interpreter; the first run above trains the Keras champion.
REVIEWED_FAMILY = "logistic_regression"


def _review(base: str, session: requests.Session, run_id: str, answer: str, champion: str) -> dict:
    """Wait until approve_promotion asks, check that `champion` has not moved meanwhile, then answer as a reviewer
    does in the UI. Returns what the task asked."""
    detail_url = f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"
    deadline = time.monotonic() + 600
    detail = None
    while time.monotonic() < deadline:
        response = session.get(detail_url, timeout=30)
        if response.ok:
            detail = response.json()
            break
        state = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30).json()["state"]
        assert state not in ("success", "failed"), f"run ended {state} before asking for approval"
        time.sleep(2)
    assert detail is not None, "approve_promotion never asked"
    assert registry_state(SYNTHETIC.registered_model)["champion"] == champion  # nothing moves while it waits
    # Answer, and again if the task was retried and asks afresh: an answer that lands while the task is still
    # being paused can be lost to a retry of approve_promotion (seen once on a loaded machine).
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        current = session.get(detail_url, timeout=30)
        if current.ok and not current.json().get("response_received"):
            answered = session.patch(detail_url, json={"chosen_options": [answer]}, timeout=30)
            assert answered.ok, answered.text
        state = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30).json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(2)
    return detail


def test_a_reviewer_approves_a_blessed_candidate_in_the_ui_before_it_becomes_champion(airflow_api, module_home):
    """require_approval: the run waits at approve_promotion (a human-in-the-loop task) until answered through the API."""
    base, session = airflow_api
    drop = land_frame(synthetic.generate(3000, seed=12), "synthetic", "api-drop-2")
    # no change threshold: the candidate is blessed on absolute thresholds alone, so the review decides. What is
    # under test is the review, not the network: the candidates are another family (REVIEWED_FAMILY), which
    # the gate holds against the Keras champion on the same held-out rows.
    run_id = _trigger(base, session, {**SMALL_BUDGET, "source_uri": drop.as_uri(), "change_thresholds": {},
                                      "require_approval": True, "model_family": REVIEWED_FAMILY})
    detail = _review(base, session, run_id, "Approve", champion="1")
    assert detail["options"] == ["Approve", "Reject"] and "v2" in detail["subject"]
    state, states = _wait_for_run(base, session, run_id)
    assert state == "success", states
    assert states["approve_promotion"] == "success" and states["no_review_needed"] == "skipped"
    assert registry_state(SYNTHETIC.registered_model)["champion"] == "2"
    from ml_tasks import tracking

    assert tracking.client().get_model_version(SYNTHETIC.registered_model, "2").tags["ratchet.review"] == "Approve"


def test_a_reviewer_rejects_a_blessed_candidate_and_the_champion_stays(airflow_api, module_home):
    """Reject: promote still runs and records the answer on the version; champion stays, the version stays
    challenger, and the run completes with a report that says why nothing moved."""
    base, session = airflow_api
    drop = land_frame(synthetic.generate(3000, seed=13), "synthetic", "api-drop-3")
    run_id = _trigger(base, session, {**SMALL_BUDGET, "source_uri": drop.as_uri(), "change_thresholds": {},
                                      "require_approval": True, "model_family": REVIEWED_FAMILY})
    detail = _review(base, session, run_id, "Reject", champion="2")
    assert "v3" in detail["subject"]
    state, states = _wait_for_run(base, session, run_id)
    assert state == "success", states
    assert states["approve_promotion"] == states["promote"] == states["report"] == "success", states
    assert registry_state(SYNTHETIC.registered_model) == {"champion": "2", "challenger": "3", "versions": [1, 2, 3]}
    from ml_tasks import tracking

    version = tracking.client().get_model_version(SYNTHETIC.registered_model, "3")
    assert version.tags["ratchet.review"] == "Reject"
    assert version.tags["ratchet.gate.decision"] == "promote"  # blessed by the gate: only the reviewer said no
    reported = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value",
                           timeout=30)
    assert reported.ok, reported.text
    value = reported.json()["value"]  # the stored JSON, as a string or already parsed, depending on the database
    report_uri = (json.loads(value) if isinstance(value, str) else value)["report_uri"]
    report = json.loads(Path(urlparse(report_uri).path).read_text())
    assert report["completed"] and report["stopped_at"] is None
    assert report["versions"]["review"] == "Reject" and report["versions"]["promoted"] is False
    assert report["versions"]["reason"] == "reviewer's answer: Reject" and report["versions"]["champion"] == "2"


# --- The UI in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright. ---------------------
# Screenshots are saved as test artifacts under .ratchet/test-artifacts/ui/ in the repository root (ignored by git).

ARTIFACTS = Path(__file__).resolve().parents[2] / ".ratchet" / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui(airflow_api):
    """A logged-in Chromium page on the running Airflow UI (the simple auth manager's generated password)."""
    from playwright.sync_api import sync_playwright

    from ml_tasks.settings import get_settings

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the UI tests need Debian's Chromium (apt-get install chromium)")
    base, _ = airflow_api
    passwords = get_settings().airflow_home / "simple_auth_manager_passwords.json.generated"
    username, password = next(iter(json.loads(passwords.read_text()).items()))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/")
            page.wait_for_url("**/auth/login**")  # auth is on: the UI sends a stranger to its login page
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/")
            yield base, page
        finally:
            browser.close()


def _manual_runs(base: str, session: requests.Session) -> int:
    runs = session.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "manual"}, timeout=30).json()
    return int(runs["total_entries"])


def test_trigger_form_shows_documented_params_and_refuses_bad_values(ui, airflow_api):
    """The trigger form renders the Params' titles and descriptions; out-of-bounds and malformed values never run."""
    base, page = ui
    _, session = airflow_api
    runs_before = _manual_runs(base, session)
    page.goto(f"{base}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    for text in ("Data set", "Tuning trials", "Optuna trials (budget) for this run.", "Model family",
                 "Require a reviewer's approval", "Per-feature limits: population stability index"):
        assert dialog.get_by_text(text).count() >= 1, text
    trials = dialog.locator("[name=element_tuning_trials]")
    assert trials.get_attribute("aria-valuemin") == "1" and trials.get_attribute("aria-valuemax") == "500"
    trials.fill("0")
    trials.press("Tab")
    assert trials.input_value() == "1"  # the form clamps to the Param's minimum: 0 trials is never sent
    trials.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "trigger_form_tuning_trials.png"))
    # A value the form cannot check itself (a pattern) is refused by the API behind it, before any run exists.
    source = dialog.locator("#element_source_uri")
    source.fill("ftp://host/drop")
    with page.expect_response(lambda r: r.url.endswith(f"/dags/{DAG_ID}/dagRuns") and r.request.method == "POST") as posted:
        dialog.get_by_role("button", name="Trigger").click()
    assert posted.value.status == 400 and "source_uri" in posted.value.text()
    page.get_by_text("Failed to Trigger Dag").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "trigger_form_refused.png"))
    assert _manual_runs(base, session) == runs_before
    page.keyboard.press("Escape")


def test_models_view_shows_champion_gate_decisions_and_alias_history(ui, airflow_api):
    """The "Models" nav entry opens the plugin's page inside the UI, with what the registry says."""
    from ml_tasks import tracking
    from ml_tasks.release.registry import alias_history

    base, page = ui
    name = SYNTHETIC.registered_model
    champion = tracking.client().get_model_version_by_alias(name, "champion")
    assert requests.get(f"{base}/ratchet/models/", timeout=30).status_code == 401  # behind Airflow's auth
    page.goto(f"{base}/")
    page.get_by_role("link", name="Models").click()
    page.wait_for_url("**/plugin/ratchet-models")
    frame = page.frame_locator("iframe")
    section = frame.locator(f"section[data-model='{name}']")
    section.wait_for()
    row = section.locator("tr[data-role=champion]")
    assert f"v{champion.version}" in row.inner_text()
    assert champion.tags["ratchet.gate.decision"] in row.locator(".badge").inner_text()
    recent = section.locator("table.recent").inner_text()
    assert champion.tags["ratchet.gate.decision"] in recent and champion.tags["ratchet.gate.reasons"].split("; ")[0] in recent
    history = section.locator("table.history tbody tr")
    assert history.count() == len(alias_history(name))
    assert "champion" in history.first.inner_text() or "challenger" in history.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "models_view.png"), full_page=True)


def test_task_instance_page_links_to_mlflow_run_model_version_and_data_docs(ui):
    """Extra links on a nightly_retrain task instance; the Data Docs open through the plugin with the UI's session."""
    from urllib.parse import quote

    from ml_tasks import tracking
    from ml_tasks.release.model_overview import version_url

    base, page = ui
    name = SYNTHETIC.registered_model
    champion = tracking.client().get_model_version_by_alias(name, "champion")
    run_id = champion.tags["ratchet.airflow.run_id"]
    page.goto(f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/validate/details")
    page.get_by_text("Extra Links").wait_for()
    links = {n: page.get_by_role("link", name=n, exact=True) for n in ("MLflow run", "Model version", "Data Docs")}
    page.screenshot(path=str(ARTIFACTS / "task_instance_extra_links.png"))
    assert links["Model version"].get_attribute("href") == version_url(name, champion.version)
    redirect = page.request.get(f"{base}{links['MLflow run'].get_attribute('href')}", max_redirects=0)
    assert redirect.status == 307
    assert redirect.headers["location"].endswith(f"/runs/{champion.run_id}") and "/#/experiments/" in redirect.headers["location"]
    links["Data Docs"].click()
    page.wait_for_url("**/ratchet/data-docs/**/validations/**")
    text = page.inner_text("body")
    assert "Expectation Validation Result" in text and "Expectation Suite: synthetic" in text
    page.screenshot(path=str(ARTIFACTS / "data_docs.png"))


def test_a_landed_drop_event_starts_the_data_sets_own_dag(airflow_api, module_home):
    """An event on `ratchet://datasets/synthetic/landed` (here through the REST API, as an upstream system would
    post it) makes the scheduler start `retrain__synthetic`, which syncs the day's landed drop. The run is then
    stopped: the rest of a retraining run is what the other tests here run to the end."""
    from datetime import UTC, datetime

    from ml_tasks.datasets import landed_asset_uri

    base, session = airflow_api
    dag_id = "retrain__synthetic"
    land_frame(synthetic.generate(2000, seed=12), "synthetic", datetime.now(UTC).strftime("%Y-%m-%d"))
    deadline = time.monotonic() + 120
    while not session.get(f"{base}/api/v2/dags/{dag_id}", timeout=10).ok and time.monotonic() < deadline:
        time.sleep(2)
    assert session.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30).ok
    assets = session.get(f"{base}/api/v2/assets", params={"uri_pattern": "datasets/synthetic/landed"}, timeout=30).json()
    (asset,) = [a for a in assets["assets"] if a["uri"] == landed_asset_uri("synthetic")]
    posted = session.post(f"{base}/api/v2/assets/events", json={"asset_id": asset["id"], "extra": {"drop": "today"}},
                          timeout=30)
    assert posted.ok, posted.text
    run: dict = {}
    synced = None
    while time.monotonic() < deadline + 180 and synced != "success":
        runs = session.get(f"{base}/api/v2/dags/{dag_id}/dagRuns", timeout=30).json()["dag_runs"]
        run = next((r for r in runs if r["run_type"] == "asset_triggered"), {})
        if run:
            tasks = session.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances",
                                timeout=30).json()["task_instances"]
            synced = next((t["state"] for t in tasks if t["task_id"] == "sync"), None)
            assert synced != "failed", tasks
        time.sleep(3)
    assert run, "no asset-triggered run of retrain__synthetic"
    assert synced == "success"
    session.patch(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"state": "failed"}, timeout=30)
    session.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": True}, timeout=30)
