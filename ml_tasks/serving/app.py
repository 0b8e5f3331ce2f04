"""The HTTP server of `ratchet serve MODEL`: models:/MODEL@champion, swapped to a new champion without dropping requests.

The endpoint speaks MLflow's scoring protocol (`POST /invocations` with
`dataframe_split`, `dataframe_records`, `instances` or `inputs` JSON, or CSV;
answers `{"predictions": [...]}`), plus `/health`, `/ping` and `/version`, and
describes its payloads in `/openapi.json`. `POST /explain` takes the same
bodies and answers each row's prediction with its attributions on the raw
input columns, from the explainer built with the served version (see
`ml_tasks.explain`). It never builds an environment from the registry: the
model runs in this process, with our code.

Why not `mlflow models serve`: it loads one version for the life of the
process, builds a virtualenv unless told not to, and calls the pyfunc's
`predict` (Keras `predict` costs tens of milliseconds for one row). Here the
parts of the package meet: a `ModelWatcher` keeps the served version current,
each request takes the model it starts with, its body is checked
(`ml_tasks.serving.payloads`), small requests that arrive together are scored
as one batch (`MicroBatcher`), larger ones in a worker thread, and sampled rows
go to the inference log from a writer thread, off the request path.
Explanations run in a worker thread whatever their size (a tree walk or
integrated gradients costs more than a prediction) and are not logged: they
look again at rows, not at new traffic.
`/invocations`, `/explain` and `/version` need the bearer token
(`ml_tasks.serving.config`); `/health` stays open for load balancers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # runtime imports: FastAPI reads the handlers' annotations
from starlette.responses import Response

from ml_tasks.explain.explainers import EXPLAINER_METHODS, LOG_ODDS, LOGIT, PREDICTION, PROBABILITY
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
    explanations_json,
    parse_csv,
    parse_json,
    predictions_json,
    read_body,
    request_schema,
    top_k_param,
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


def _parse(model: LoadedModel, mime: str, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    return (parse_json if mime == JSON_TYPE else parse_csv)(model, body, max_rows)


def _score(model: LoadedModel, mime: str, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int, Scored]:
    columns, n_rows = _parse(model, mime, body, max_rows)
    return columns, n_rows, model.predict(columns, n_rows)


def _explain(model: LoadedModel, mime: str, body: bytes, max_rows: int, top_k: int | None) -> str:
    """`/explain`'s work, in a worker thread: parse as /invocations does, predict, explain, write the answer."""
    columns, n_rows = _parse(model, mime, body, max_rows)
    return explanations_json(model, model.explain(columns, n_rows), top_k)


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

    def scoring(work: Callable[[Request, dict[str, str], LoadedModel], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        """A scoring endpoint (/invocations, /explain): the request id, the token and the model this request takes
        are checked here; `work` answers with them, and a `PayloadError` it raises is answered as its 4xx/501."""

        async def endpoint(request: Request) -> Response:
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
                return await work(request, headers, model)
            except PayloadError as exc:
                return _error(exc.status, exc.message, exc.error_code, headers)

        return endpoint

    async def scoring_body(request: Request) -> tuple[str, bytes]:
        """A scoring request's media type (JSON or CSV) and its body, within the byte limit."""
        return checked_media_type(request.headers.get("content-type")), await read_body(request, config.max_body_bytes)

    async def invocations(request: Request, headers: dict[str, str], model: LoadedModel) -> Response:
        mime, body = await scoring_body(request)
        if len(body) <= INLINE_BYTES:  # a few rows: parsed on the loop, scored with the others that came along
            columns, n_rows = _parse(model, mime, body, config.max_rows)
            scored = await batcher.submit(model, columns, n_rows)
        else:
            columns, n_rows, scored = await run_in_threadpool(_score, model, mime, body, config.max_rows)
        inference_log.submit(headers["X-Request-ID"], model.version, columns, n_rows, scored.probability,
                             scored.prediction)
        return Response(predictions_json(scored.outputs), media_type=JSON_TYPE, headers=headers)

    async def explain(request: Request, headers: dict[str, str], model: LoadedModel) -> Response:
        model.check_explainable()
        top_k = top_k_param(request.query_params.get("top_k"))
        mime, body = await scoring_body(request)
        answer = await run_in_threadpool(_explain, model, mime, body, config.explain_max_rows, top_k)
        return Response(answer, media_type=JSON_TYPE, headers=headers)

    app.post("/invocations", summary="score rows in MLflow's scoring formats; answers {\"predictions\": [...]}")(
        scoring(invocations))
    app.post("/explain", summary="each row's prediction and its attributions on the raw input columns (same bodies "
                                 "as /invocations; ?top_k=N keeps each row's N largest)")(scoring(explain))

    def openapi() -> dict[str, Any]:
        """The schema of the version served now (columns can change with the champion)."""
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        model = watcher.current
        columns = model.columns if model is not None else ()
        security: list[dict[str, list[str]]] = [{"bearer": []}]
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        error = {"content": {JSON_TYPE: {"schema": {"type": "object", "properties": {
            "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
        errors = [("400", "malformed payload, unknown or missing columns"), ("401", "missing or wrong bearer token"),
                  ("413", "too many rows or bytes"), ("415", "unsupported Content-Type"),
                  ("422", "a value of the wrong type or out of range"), ("503", "no model loaded yet")]
        request_id = {"name": "X-Request-ID", "in": "header", "required": False,
                      "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"}}

        def scoring(path: str, max_rows: int, answer: dict[str, Any], parameters: list[dict[str, Any]],
                    refusals: list[tuple[str, str]]) -> None:
            operation = schema["paths"][path]["post"]
            operation["security"] = security
            operation["parameters"] = [request_id, *parameters]
            operation["requestBody"] = {"required": True, "content": {
                JSON_TYPE: {"schema": request_schema(columns, max_rows) if columns else {"type": "object"}},
                CSV_TYPE: {"schema": {"type": "string"}},
            }}
            operation["responses"] = {"200": answer, **{code: {"description": text, **error} for code, text in refusals}}

        prediction = {"description": "the target's own value (a class, or a number for regression)"}
        scoring("/invocations", config.max_rows, {"description": "one prediction per row, in order", "content": {
            JSON_TYPE: {"schema": {"type": "object", "required": ["predictions"], "properties": {"predictions": {
                "type": "array", "items": {"type": "object", "required": ["prediction"], "properties": {
                    "prediction": prediction, "probability": {"type": "number"}}}}}}}}}, [], errors)
        scoring("/explain", config.explain_max_rows, {"description": "one explanation per row, in order", "content": {
            JSON_TYPE: {"schema": explanation_schema(prediction)}}},
            [{"name": "top_k", "in": "query", "required": False, "description": "answer each row's top_k largest "
              "|attribution| (default: every input column)", "schema": {"type": "integer", "minimum": 1}}],
            [*errors, ("501", "this version cannot be explained (a compressed runtime); the message says why")])
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


def explanation_schema(prediction: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of `/explain`'s answer (written by `ml_tasks.serving.payloads.explanations_json`)."""
    number = {"type": "number"}
    attribution = {"type": "object", "required": ["feature", "attribution"],
                   "properties": {"feature": {"type": "string"}, "attribution": number}}
    row = {"type": "object", "required": ["prediction", "output", "base_value", "output_space", "attributions"],
           "properties": {
               "prediction": prediction,
               "explained_class": {"description": "classification: the class whose output is explained (binary: the "
                                                  "positive class; multiclass: the predicted one)"},
               "output": {**number, "description": "the explained output, in output_space"},
               "base_value": {**number, "description": "the output at the baseline; attributions add up to "
                                                       "output - base_value"},
               "output_space": {"type": "string", "enum": [LOG_ODDS, LOGIT, PROBABILITY, PREDICTION]},
               "attributions": {"type": "array", "items": attribution,
                                "description": "one per raw input column, largest |attribution| first"}}}
    explainer = {"type": "object", "required": ["method", "output_space", "exact", "tolerance", "baseline"],
                 "properties": {"method": {"type": "string", "enum": list(EXPLAINER_METHODS)},
                                "output_space": {"type": "string"}, "exact": {"type": "boolean"},
                                "tolerance": number, "baseline": {"type": "string"}}}
    return {"type": "object", "required": ["model", "version", "explainer", "max_additivity_error", "explanations"],
            "properties": {"model": {"type": "string"}, "version": {"type": "string"}, "explainer": explainer,
                           "max_additivity_error": number, "explanations": {"type": "array", "items": row}}}
