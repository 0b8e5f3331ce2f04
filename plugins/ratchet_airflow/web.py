"""The plugin's FastAPI app, mounted by the API server under /ratchet: the Models view and what links open.

- `GET /ratchet/models/` the Models view (server-rendered HTML, everything escaped), shown inside the UI
  as the "Models" nav entry; `GET /ratchet/api/models` the same data as JSON (`ml_tasks.release.model_overview`).
- `GET /ratchet/data-docs/<path>` Great Expectations Data Docs, read-only, confined to RATCHET_HOME/gx/data_docs.
- `GET /ratchet/mlflow/runs/<run_id>` a redirect to the run's page in MLflow's UI (which needs its experiment id).

Airflow does not protect a plugin's app by itself: every route here asks for the same identity as the REST
API (the UI's session cookie or a bearer token) and for read access to DAGs. Read-only: no route writes.
"""

from __future__ import annotations

import html
import logging
import mimetypes
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


async def require_reader(request: Request) -> None:
    """An authenticated Airflow user allowed to read DAGs; 401/403 otherwise (Airflow's own rules and tokens)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")


app = FastAPI(title="Ratchet", description="Models view, Data Docs and MLflow links of Ratchet's DAGs.",
              dependencies=[Depends(require_reader)], docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/api/models")
def models_json() -> JSONResponse:
    from ml_tasks.release.model_overview import overview

    return JSONResponse(overview())


@app.get("/models/", response_class=HTMLResponse)
def models_page() -> HTMLResponse:
    from ml_tasks.release.model_overview import overview

    return HTMLResponse(render_models(overview()), headers={"Cache-Control": "no-store"})


@app.get("/mlflow/runs/{run_id}")
def mlflow_run(run_id: str) -> RedirectResponse:
    from mlflow.exceptions import MlflowException

    from ml_tasks import tracking
    from ml_tasks.release.model_overview import run_url

    if not RUN_ID.match(run_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not an MLflow run id")
    try:
        run = tracking.client().get_run(run_id)
    except MlflowException:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such MLflow run") from None
    return RedirectResponse(run_url(run.info.experiment_id, run_id), status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@app.get("/data-docs/{path:path}")
def data_docs(path: str) -> FileResponse:
    """A file of the Data Docs tree; anything that resolves outside it (`..`, links) is not found."""
    from ml_tasks.settings import get_settings

    root = get_settings().data_docs.resolve()
    if "\x00" in path:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    target = (root / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(root) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str, text: str) -> str:
    if not url.startswith(("http://", "https://", "/")):
        return _e(text)
    return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{_e(text)}</a>'


def _metrics(metrics: dict[str, float], names: list[str]) -> str:
    return "".join(f"<td class=num>{_e(f'{metrics[n]:.4f}') if n in metrics else '–'}</td>" for n in names)


def _decision(decision: str) -> str:
    css = {"promote": "ok", "reject": "bad"}.get(decision, "")
    return f'<span class="badge {css}">{_e(decision or "–")}</span>'


def _features(version: dict[str, Any]) -> str:
    """The version's top features by mean |attribution|, most important first (none for older versions)."""
    names = version.get("top_features") or []
    return f"<ol class=features>{''.join(f'<li>{_e(n)}</li>' for n in names)}</ol>" if names else "–"


def _reasons(version: dict[str, Any]) -> str:
    """The gate's reasons, an attribution-shift hold first and marked (what drives the model moved)."""
    hold = version.get("attribution_hold") or ""
    marked = f'<li><span class="badge bad">held: attribution shift</span> {_e(hold)}</li>' if hold else ""
    return f"<ul>{marked}{''.join(f'<li>{_e(r)}</li>' for r in version['gate_reasons'] if r != hold)}</ul>"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else "–"


def _model_section(model: dict[str, Any], names: list[str]) -> str:
    heads = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for role in ("champion", "challenger"):
        v = model.get(role)
        if not v:
            rows.append(f"<tr data-role={role}><th>{role}</th><td colspan={len(names) + 4}>none</td></tr>")
            continue
        rows.append(
            f"<tr data-role={role}><th>{role}</th><td>{_link(v['mlflow_url'], 'v' + v['version'])}</td>"
            f"{_metrics(v['metrics'], names)}<td>{_features(v)}</td><td>{_decision(v['gate_decision'])}</td>"
            f"<td>{_e(v['airflow']['run_id'] or '–')}</td></tr>")
    recent = "".join(
        f"<tr data-version={_e(v['version'])}><td>{_link(v['mlflow_url'], 'v' + v['version'])}</td>"
        f"<td>{_e(', '.join(v['aliases']) or '')}</td><td>{_when(v['created_at'])}</td>"
        f"<td>{_decision(v['gate_decision'])}</td><td>{_e(v['review'] or '')}</td><td>{_features(v)}</td>"
        f"<td>{_reasons(v)}</td></tr>"
        for v in model["versions"])
    history = "".join(
        f"<tr><td>{_e(h.get('at', ''))}</td><td>{_e(h.get('alias', ''))}</td><td>v{_e(h.get('version', ''))}</td>"
        f"<td>{'v' + _e(h['previous']) if h.get('previous') else '–'}</td><td>{_e(h.get('reason', ''))}</td></tr>"
        for h in model["alias_history"] if isinstance(h, dict)) or "<tr><td colspan=5>no alias moves yet</td></tr>"
    task = _e(model.get("task", "binary"))
    return f"""
<section class=model data-model="{_e(model['name'])}">
  <h2>{_link(model['mlflow_url'], model['name'])} <small>{task} · {_e(model['version_count'])} versions</small></h2>
  <table class=aliases><thead><tr><th></th><th>version</th>{heads}<th>top features</th><th>gate</th>
  <th>Airflow run</th></tr></thead>
  <tbody>{''.join(rows)}</tbody></table>
  <h3>Gate decisions of recent versions</h3>
  <table class=recent><thead><tr><th>version</th><th>aliases</th><th>registered</th><th>gate</th><th>review</th>
  <th>top features</th><th>reasons</th></tr></thead><tbody>{recent}</tbody></table>
  <h3>Alias history</h3>
  <table class=history><thead><tr><th>at</th><th>alias</th><th>to</th><th>from</th><th>reason</th></tr></thead>
  <tbody>{history}</tbody></table>
</section>"""


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1a202c}
@media (prefers-color-scheme:dark){body{background:#1a202c;color:#e2e8f0}a{color:#90cdf4}}
table{border-collapse:collapse;margin:6px 0 14px}th,td{border:1px solid #a0aec0;padding:3px 8px;text-align:left;
vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}ul,ol{margin:0;padding-left:16px}
.badge{padding:1px 6px;border-radius:4px;background:#e2e8f0;color:#1a202c}.ok{background:#c6f6d5}
.bad{background:#fed7d7}h2 small{font-weight:normal;color:#718096}input{margin:0 0 8px}
"""

SCRIPT = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('section.model').forEach(function (s) {
    s.hidden = q !== '' && s.dataset.model.toLowerCase().indexOf(q) < 0;
  });
});
"""


def render_models(data: dict[str, Any]) -> str:
    """The Models view: one section per registered model. Every value from MLflow is HTML-escaped."""
    names = list(data["key_metrics"])
    sections = "".join(_model_section(m, list(m.get("key_metrics") or names)) for m in data["models"]) or \
        "<p>No registered models yet.</p>"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Ratchet models</title>
<meta name=color-scheme content="light dark"><style>{STYLE}</style></head>
<body><h1>Registered models</h1>
<p>Champion and challenger with their held-out metrics, each version's top features by mean |attribution|, the gate's
decisions (an attribution-shift hold marked) and the alias history, from the MLflow
registry ({_link(data['mlflow_ui_url'], 'open MLflow')}). <a href="../api/models">JSON</a></p>
<input id=filter type=search placeholder="Filter models" aria-label="Filter models">
{sections}
<script>{SCRIPT}</script></body></html>"""

