"""The HTTP server of `ratchet serve MODEL`: models:/MODEL@champion, swapped to a new champion without dropping requests.

The endpoint speaks MLflow's scoring protocol (`POST /invocations` with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` JSON, or CSV;
answers `{"predictions": [...]}`), plus `/health`, `/ping` and `/version`, and
describes its payloads in `/openapi.json`. It never builds an environment from
the registry: the model runs in this process, with our code.

Why not `mlflow models serve`: it loads one version for the life of the
process, builds a virtualenv unless told not to, and calls the pyfunc's
`predict` (Keras `predict` costs tens of milliseconds for one row). Here the
parts of the package meet: a `ModelWatcher` keeps the served version current,
each request takes the model it starts with, its body is checked
(`ml_tasks.serving.payloads`), small requests that arrive together are scored
as one batch (`MicroBatcher`), larger ones in a worker thread, and sampled rows
go to the inference log from a writer thread, off the request path.
`/invocations` and `/version` need the bearer token (`ml_tasks.serving.config`);
`/health` stays open for load balancers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # runtime imports: FastAPI reads the handlers' annotations
from starlette.responses import Response

from ml_tasks.serving.batching import MicroBatcher
from ml_tasks.serving.config import (
    ServeConfig,
    bearer_token_matches,
    config_from_args,
    config_from_environment,
    pass_to_workers,
    serving_token,
    token_source,
)
from ml_tasks.serving.inference_log import InferenceLog
from ml_tasks.serving.loading import LoadedModel, Scored
from ml_tasks.serving.payloads import (
    CSV_TYPE,
    JSON_TYPE,
    PayloadError,
    checked_media_type,
    parse_csv,
    parse_json,
    predictions_json,
    read_body,
    request_schema,
)
from ml_tasks.serving.watcher import ModelWatcher
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# Bodies up to this size (a few dozen rows) are scored on the event loop (no thread hop); larger ones in a worker thread.
INLINE_BYTES = 8192
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _error(status: int, message: str, error_code: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error_code": error_code, "message": message})
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def _score(model: LoadedModel, mime: str, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int, Scored]:
    columns, n_rows = (parse_json if mime == JSON_TYPE else parse_csv)(model, body, max_rows)
    return columns, n_rows, model.predict(columns, n_rows)


def create_app(config: ServeConfig, token: str | None = None) -> FastAPI:
    """The FastAPI app of one server process: its own watcher thread and inference-log writer."""
    from fastapi import FastAPI
    from fastapi.openapi.utils import get_openapi
    from starlette.concurrency import run_in_threadpool

    secret = (token if token is not None else serving_token()).encode()
    watcher = ModelWatcher(config)
    batcher = MicroBatcher()
    inference_log = InferenceLog(get_settings().inference_logs, config.model, config.log_sample)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            inference_log.close()

    app = FastAPI(title=f"ratchet serve {config.model}@{config.alias}", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.watcher = watcher
    app.state.batcher = batcher
    app.state.inference_log = inference_log
    unauthorized = {"WWW-Authenticate": "Bearer"}

    def authorized(request: Request) -> bool:
        return bearer_token_matches(request.headers.get("authorization", ""), secret)

    def not_loaded() -> Response:
        reason = watcher.last_error or "loading"
        return _error(503, f"no model loaded yet: {reason}", "TEMPORARILY_UNAVAILABLE", {"Retry-After": "1"})

    async def health() -> Response:
        model = watcher.current
        if model is None:
            return not_loaded()
        return Response(json.dumps({"status": "ok", "model": model.name, "version": model.version}),
                        media_type=JSON_TYPE)

    app.get("/health", summary="200 once a model is loaded, 503 before")(health)
    app.get("/ping", summary="the same as /health (MLflow's name)")(health)

    @app.get("/version", summary="the version served: name, version, alias, run id, when it was loaded")
    async def version(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", "UNAUTHENTICATED", unauthorized)
        model = watcher.current
        if model is None:
            return not_loaded()
        return Response(json.dumps(model.describe()), media_type=JSON_TYPE)

    @app.post("/invocations", summary="score rows in MLflow's scoring formats; answers {\"predictions\": [...]}")
    async def invocations(request: Request) -> Response:
        request_id = request.headers.get("x-request-id")
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not REQUEST_ID.fullmatch(request_id):
            return _error(400, "X-Request-ID must be 1-64 characters of letters, digits, '.', '_', ':', '-'",
                          "BAD_REQUEST")
        headers = {"X-Request-ID": request_id}
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", "UNAUTHENTICATED", {**headers, **unauthorized})
        model = watcher.current  # this request's model, even if the alias moves meanwhile
        if model is None:
            return not_loaded()
        headers["X-Model-Version"] = model.version
        try:
            mime = checked_media_type(request.headers.get("content-type"))
            body = await read_body(request, config.max_body_bytes)
            if len(body) <= INLINE_BYTES:  # a few rows: parsed on the loop, scored with the others that came along
                columns, n_rows = (parse_json if mime == JSON_TYPE else parse_csv)(model, body, config.max_rows)
                scored = await batcher.submit(model, columns, n_rows)
            else:
                columns, n_rows, scored = await run_in_threadpool(_score, model, mime, body, config.max_rows)
        except PayloadError as exc:
            return _error(exc.status, exc.message, exc.error_code, headers)
        inference_log.submit(request_id, model.version, columns, n_rows, scored.probability, scored.prediction)
        return Response(predictions_json(scored.outputs), media_type=JSON_TYPE, headers=headers)

    def openapi() -> dict[str, Any]:
        """The schema of the version served now (columns can change with the champion)."""
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        model = watcher.current
        columns = model.columns if model is not None else ()
        security: list[dict[str, list[str]]] = [{"bearer": []}]
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        error = {"content": {JSON_TYPE: {"schema": {"type": "object", "properties": {
            "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
        operation = schema["paths"]["/invocations"]["post"]
        operation["security"] = security
        operation["parameters"] = [{"name": "X-Request-ID", "in": "header", "required": False,
                                    "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"}}]
        operation["requestBody"] = {"required": True, "content": {
            JSON_TYPE: {"schema": request_schema(columns, config.max_rows) if columns else {"type": "object"}},
            CSV_TYPE: {"schema": {"type": "string"}},
        }}
        operation["responses"] = {
            "200": {"description": "one prediction per row, in order", "content": {JSON_TYPE: {"schema": {
                "type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array", "items": {
                    "type": "object", "properties": {"probability": {"type": "number"},
                                                     "prediction": {"type": "integer"}}}}}}}}},
            **{code: {"description": text, **error} for code, text in (
                ("400", "malformed payload, unknown or missing columns"), ("401", "missing or wrong bearer token"),
                ("413", "too many rows or bytes"), ("415", "unsupported Content-Type"),
                ("422", "a value of the wrong type or out of range"), ("503", "no model loaded yet"))},
        }
        schema["paths"]["/version"]["get"]["security"] = security
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The app factory uvicorn's worker processes call (`--workers` > 1): the configuration comes in the environment."""
    # a spawned worker starts with bare logging: the same set-up as `ratchet` itself, so swaps are logged
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    return create_app(config_from_environment())


def serve(config: ServeConfig) -> int:
    import uvicorn

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per load is noise in a server log
    token = serving_token()  # created before any worker starts, so every worker reads the same one
    print(f"serving models:/{config.model}@{config.alias} on http://{config.host}:{config.port} "
          f"(bearer token in {token_source()}; inference log under {get_settings().inference_logs / config.model}, "
          f"sample {config.log_sample:g})", flush=True)
    common: dict[str, Any] = {"host": config.host, "port": config.port, "access_log": False,
                              "log_level": "warning", "timeout_graceful_shutdown": 30}
    if config.workers > 1:
        pass_to_workers(config)
        uvicorn.run("ml_tasks.serving.app:app_from_environment", factory=True, workers=config.workers, **common)
    else:
        uvicorn.run(create_app(config, token), **common)
    return 0


def serve_from_args(args: argparse.Namespace) -> int:
    """`ratchet serve` (see ml_tasks.ops.cli)."""
    return serve(config_from_args(args))
