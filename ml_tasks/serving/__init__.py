"""`ratchet serve`: the HTTP server for `models:/NAME@alias`, and the inference log it writes for monitoring.

One module per job: `config` (what to serve, limits, the bearer token), `loading` (a registered version checked,
loaded and warmed up), `payloads` (request bodies parsed and checked, answers written), `batching` (small
requests scored together), `watcher` (the alias followed, versions swapped without dropping requests),
`inference_log` (the log's format, its writer and its reader) and `app` (the FastAPI app and `serve`).

Nothing is imported here: `ml_tasks.monitoring`, which DAG files import, imports `inference_log`, and that
must not pull in FastAPI, MLflow or pandas.
"""
