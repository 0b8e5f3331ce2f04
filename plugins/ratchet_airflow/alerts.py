"""Alerts as Airflow callbacks: a log line always; e-mail and Slack when their Connections exist.

The log line (WARNING) names the model, the window and the reasons, so the task log alone tells
what happened. E-mail goes through the SMTP provider's hook when the SMTP Connection (Param
`smtp_conn_id`, default `smtp_default`) exists and `alert_emails` names recipients. Slack goes to
an incoming-webhook URL kept in the `ratchet_slack` Connection (Param `slack_conn_id`): its
password, or its host when the password is empty; no Slack provider is installed, so the JSON is
POSTed with urllib. A missing Connection is skipped with a log line, and a channel that fails is
logged: an alert never fails the task it reports on. The webhook URL is a secret and is never
logged; Airflow masks Connection passwords in task logs as well.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ratchet_airflow.connections import optional_connection

log = logging.getLogger(__name__)

SLACK_TIMEOUT_S = 10
MAX_REASONS = 20
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def alert_text(result: Mapping[str, Any]) -> tuple[str, str, str]:
    """Subject, body and one-line summary (for the log) of a retrain request raised by model_monitoring."""
    window = result.get("window") or {}
    kinds = [k for k, flag in (("drift", result.get("drift_detected")), ("decay", result.get("decay_detected"))) if flag]
    subject = f"[ratchet] {result.get('model')}: {' and '.join(kinds) or 'alert'} in window {window.get('key', '?')}"
    reasons = list(result.get("reasons") or [])[:MAX_REASONS]
    lines = [
        f"model {result.get('model')} (champion v{result.get('champion_version')}), "
        f"window {window.get('start')} .. {window.get('end')}: {' and '.join(kinds) or 'alert'}; "
        f"retrain requested through Asset {result.get('asset_uri', '?')}",
        *(f"  - {reason}" for reason in reasons),
        f"record: {result.get('record_uri')}",
    ]
    summary = f"{subject}: {'; '.join(reasons) or 'no reasons given'} (record {result.get('record_uri')})"
    return subject, "\n".join(lines), summary


def send_email(conn_id: str, recipients: list[str], subject: str, body: str) -> bool:
    """E-mail through the SMTP Connection, if it exists and there is someone to write to."""
    if optional_connection(conn_id) is None:
        log.info("no SMTP Connection %r: e-mail alert skipped", conn_id)
        return False
    if not recipients:
        log.info("SMTP Connection %r exists but the run names no alert_emails: e-mail alert skipped", conn_id)
        return False
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    try:
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(to=recipients, subject=subject,
                                 html_content=f"<pre>{html.escape(body)}</pre>",
                                 from_email=hook.from_email or "ratchet@localhost")
    except Exception as exc:  # an alert channel that is down must not fail the task it reports on
        log.warning("e-mail alert through %r failed: %s: %s", conn_id, type(exc).__name__, exc)
        return False
    log.info("e-mail alert sent through %r to %d recipient(s)", conn_id, len(recipients))
    return True


def webhook_url(connection: Any) -> str | None:
    """The webhook URL of a Slack Connection: https anywhere, plain http only to this host."""
    for candidate in (connection.password, connection.host):
        if candidate and str(candidate).startswith(("https://", "http://")):
            url = str(candidate)
            parts = urlsplit(url)
            if parts.scheme == "https" or parts.hostname in _LOCAL_HOSTS:
                return url
            return None
    return None


def send_slack(conn_id: str, text: str) -> bool:
    """POST {"text": ...} to the incoming webhook of the Slack Connection, if it exists."""
    connection = optional_connection(conn_id)
    if connection is None:
        log.info("no Slack Connection %r: Slack alert skipped", conn_id)
        return False
    url = webhook_url(connection)
    if url is None:
        log.warning("Slack Connection %r has no https webhook URL in its password or host: Slack alert skipped", conn_id)
        return False
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=SLACK_TIMEOUT_S) as response:  # the scheme was checked
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "code", None) or getattr(exc, "reason", None) or type(exc).__name__
        log.warning("Slack alert through %r failed: %s", conn_id, reason)
        return False
    log.info("Slack alert sent through %r (HTTP %s)", conn_id, status)
    return True


def notify(subject: str, body: str, params: Mapping[str, Any], summary: str = "") -> dict[str, bool]:
    """The log line (one line: `summary`, else the subject), then every configured channel; which delivered."""
    log.warning("RATCHET ALERT %s", summary or subject)
    return {
        "email": send_email(str(params.get("smtp_conn_id") or "smtp_default"), list(params.get("alert_emails") or []),
                            subject, body),
        "slack": send_slack(str(params.get("slack_conn_id") or "ratchet_slack"), f"*{subject}*\n{body}"),
    }


def retrain_requested(context: Mapping[str, Any]) -> None:
    """on_success_callback of a retrain request: the monitoring result it returned, as an alert."""
    ti = context["ti"]
    try:
        result = ti.xcom_pull(task_ids=ti.task_id) or {}
        subject, body, summary = alert_text(result)
        notify(subject, body, context.get("params") or {}, summary)
    except Exception:  # a callback that raises would only hide the alert: log it whole
        log.exception("alert for %s could not be sent", ti.task_id)


def task_failed(context: Mapping[str, Any]) -> None:
    """on_failure_callback: monitoring itself failed, which is worth the same channels."""
    ti = context["ti"]
    try:
        error = context.get("exception")
        subject = f"[ratchet] {ti.dag_id}.{ti.task_id} failed"
        body = f"run {ti.run_id}, try {ti.try_number}: {type(error).__name__ if error else 'error'}: {error}"
        notify(subject, body, context.get("params") or {}, f"{subject}: {body}")
    except Exception:
        log.exception("failure alert for %s could not be sent", ti.task_id)
