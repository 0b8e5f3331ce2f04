"""model_monitoring as a real DagRun (`airflow dags test`) on a drifted inference log.

Real Airflow (SQLite), a real MLflow store, a real SMTP conversation and a real HTTP webhook (both tiny
servers on 127.0.0.1 in this process, standing in for a mail relay and Slack, which cannot be reached
here). The champion is a registered stand-in (a constant pyfunc with the drift reference and evaluated
metric a nightly run stores): drift and decay never load the model, attribution drift is skipped (the
stand-in's run holds no attributions from an evaluation; tests/unit/test_monitoring.py explains a real
champion), and a nightly run to make a real one would add minutes to the suite
(tests/integration/test_nightly_dag.py checks what a real one stores).
"""

from __future__ import annotations

import json
import os
import socketserver
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_tasks.datasets import SYNTHETIC, synthetic
from tests.unit.test_monitoring import register_stand_in_champion, write_feedback, write_log

from .helpers import dags_test

pytestmark = [pytest.mark.integration]
MODEL = SYNTHETIC.registered_model
ASSET_URI = f"ratchet://models/{MODEL}/retrain-request"
END = datetime(2026, 3, 1, 10, tzinfo=UTC)
START = END - timedelta(hours=1)


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT; every message is kept."""

    def handle(self) -> None:
        def say(line: str) -> None:
            self.wfile.write(f"{line}\r\n".encode())

        say("220 localhost test SMTP")
        message = {"rcpt": [], "data": ""}
        while line := self.rfile.readline().decode(errors="replace"):
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                say("250 localhost")
            elif verb == "MAIL":
                say("250 OK")
            elif verb == "RCPT":
                message["rcpt"].append(line.split(":", 1)[1].strip(" <>\r\n"))
                say("250 OK")
            elif verb == "DATA":
                say("354 end with .")
                lines = []
                while (data := self.rfile.readline().decode(errors="replace")) not in (".\r\n", ".\n", ""):
                    lines.append(data)
                message["data"] = "".join(lines)
                self.server.messages.append(dict(message))  # type: ignore[attr-defined]
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("250 OK")


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def channels():
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    smtp.messages = []
    slack = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    slack.posts = []
    for server in (smtp, slack):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_SMTP_DEFAULT", "AIRFLOW_CONN_RATCHET_SLACK",
                                            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION")}
    # `dags test` writes every DAG of the folder to the database first: nightly_retrain lands there unpaused,
    # with its schedule on the Assets, so the asset event queues it as a scheduler would see it.
    os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.server_address[1],
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "ratchet@localhost"}})
    os.environ["AIRFLOW_CONN_RATCHET_SLACK"] = json.dumps({
        "conn_type": "http", "password": f"http://127.0.0.1:{slack.server_address[1]}/services/T0/B0/secret"})
    yield smtp, slack
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for server in (smtp, slack):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def monitored(module_home, channels):
    from ml_tasks.ops.airflow_cli import airflow
    from ml_tasks.settings import get_settings

    get_settings().airflow_home.mkdir(parents=True, exist_ok=True)
    airflow("db", "migrate")  # model_monitoring uses no pools: each airflow CLI call costs seconds
    register_stand_in_champion(module_home)
    frame = synthetic.generate(1500, seed=21)
    frame["x0"] = frame["x0"] + 1.0
    write_log(frame, START, prefix="live")
    write_feedback(frame, prefix="live", name="labels.csv")
    conf = {"models": [MODEL], "alert_emails": ["ops@example.com"]}
    code, text = dags_test("model_monitoring", conf, module_home / "logs" / "model_monitoring.log", END.isoformat())
    return code, text, module_home


@pytest.fixture(scope="module")
def next_hour(monitored):
    """The hour after: still drifted, within the retrain cooldown."""
    _, _, home = monitored
    frame = synthetic.generate(1500, seed=22)
    frame["x0"] = frame["x0"] + 1.0
    write_log(frame, END, prefix="next", part="next")
    return dags_test("model_monitoring", {"models": [MODEL]}, home / "logs" / "model_monitoring_next.log",
                     (END + timedelta(hours=1)).isoformat())


def test_the_run_succeeds_and_alerts_in_the_task_log(monitored):
    code, text, _ = monitored
    assert code == 0, text[-3000:]
    alert = next(line for line in text.splitlines() if "RATCHET ALERT" in line)
    assert MODEL in alert and "20260301T090000Z_20260301T100000Z" in alert and "feature x0 drifted (psi" in alert
    assert "/services/T0/B0/secret" not in text  # the webhook URL is a secret


def test_metrics_are_a_point_of_the_models_series_in_mlflow(monitored, next_hour):
    from ml_tasks import tracking
    from ml_tasks.monitoring import MONITORING_EXPERIMENT

    client = tracking.client()
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`ratchet.monitoring.model` = '{MODEL}'")
    step = int(END.timestamp())
    history = client.get_metric_history(run.info.run_id, "drift.x0.psi")
    assert sorted(m.step for m in history) == [step, step + 3600]  # one point per window
    assert run.data.metrics["drift.x0.psi"] > 0.2 and run.data.metrics["drift.x1.psi"] < 0.2
    labeled = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "monitoring.rows_labeled")}
    assert labeled == {step: 1500, step + 3600: 0}  # labels have arrived for the first hour only
    assert [m.step for m in client.get_metric_history(run.info.run_id, "live.roc_auc")] == [step]
    assert run.data.metrics["live.roc_auc"] > 0.7
    assert "monitoring/monitoring_over_time.png" in {a.path for a in client.list_artifacts(run.info.run_id, "monitoring")}


def test_the_retrain_request_asset_event_is_recorded_and_queues_nightly_retrain(monitored, next_hour):
    _, _, home = monitored
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        events = db.execute(
            "select e.extra, e.source_dag_id, e.source_task_id from asset_event e join asset a on a.id = e.asset_id "
            "where a.uri = ?", (ASSET_URI,)).fetchall()
        queued = db.execute(
            "select q.target_dag_id from asset_dag_run_queue q join asset a on a.id = q.asset_id where a.uri = ?",
            (ASSET_URI,)).fetchall()
    assert len(events) == 1, events
    extra, dag_id, task_id = events[0]
    extra = json.loads(extra)
    assert (dag_id, task_id) == ("model_monitoring", f"{MODEL}.request_retrain")
    assert extra["model"] == MODEL and extra["dataset"] == "synthetic" and extra["drift"] is True
    assert any("x0" in reason for reason in extra["reasons"])
    assert queued == [("nightly_retrain",)]  # the scheduler would start nightly_retrain now, not at 02:00
    # the next hour drifted too, but within retrain_cooldown_hours: the one request above stands
    code, text = next_hour
    assert code == 0, text[-3000:]
    assert "less than retrain_cooldown_hours" in text and "feature x0 drifted" in text


def test_email_and_slack_alerts_were_delivered(monitored, channels):
    smtp, slack = channels
    assert [m["rcpt"] for m in smtp.messages] == [["ops@example.com"]]
    assert MODEL in smtp.messages[0]["data"]
    ((path, payload),) = slack.posts
    assert path == "/services/T0/B0/secret" and MODEL in payload["text"] and "x0" in payload["text"]


def test_nightly_retrain_is_scheduled_on_the_asset_as_well_as_at_two(monitored):
    """As Airflow stored it: the serialized DAG's timetable, and the DAG-to-Asset reference the scheduler reads."""
    _, _, home = monitored
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        (data,) = db.execute("select data from serialized_dag where dag_id = 'nightly_retrain'").fetchone()
        references = db.execute("select r.dag_id from dag_schedule_asset_reference r join asset a on a.id = r.asset_id "
                                "where a.uri = ?", (ASSET_URI,)).fetchall()
    timetable = json.loads(data)["dag"]["timetable"]
    assert timetable["__type"].endswith("AssetOrTimeSchedule")
    assert timetable["__var"]["timetable"]["__var"]["expression"] == "0 2 * * *"
    assert ASSET_URI in {a["uri"] for a in timetable["__var"]["asset_condition"]["objects"]}
    assert references == [("nightly_retrain",)]
