"""The `ratchet` command: demo, environment, landing drops, suites, services, rollback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ml_tasks.settings import environment_exports, get_settings

log = logging.getLogger(__name__)
# Container allocations between two young collections (Python's default: 700). A `ratchet sync` starts by
# building some 80,000 long-lived objects (botocore's modules and service models): with this threshold they
# are not walked over and over for nothing, and garbage still never stays above ~100,000 objects.
GC_THRESHOLD = 100_000


def cmd_env(args: argparse.Namespace) -> int:
    import shlex

    for key, value in environment_exports().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ml_tasks.ops import demo

    logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress
    return demo.main(reset=not args.keep)


def cmd_land(args: argparse.Namespace) -> int:
    from ml_tasks.data.landing import land_frame
    from ml_tasks.datasets import get_dataset
    from ml_tasks.datasets.corruption import corrupt

    spec = get_dataset(args.dataset)
    if spec.name == "acs_employment":
        from ml_tasks.datasets import acs_employment

        frame = acs_employment.load_year(args.year)
    else:
        from ml_tasks.datasets import synthetic

        frame = synthetic.generate(args.rows, seed=args.seed, drift=args.drift, label_noise=args.label_noise)
    for kind in args.corrupt or []:
        frame = corrupt(frame, spec, kind, seed=args.seed)
    print(land_frame(frame, spec.name, args.date, file_format=args.format, parts=args.parts).as_uri())
    return 0


def _local_drop(uri: str, scratch: Path) -> Path:
    """A drop as a local folder: file:// as is, s3:// and hdfs:// mirrored into `scratch` first."""
    from ml_tasks.storage import local_path, split_uri, sync_drop

    if "://" not in uri or split_uri(uri)[0] == "file":
        return local_path(uri if "://" in uri else Path(uri).resolve().as_uri())
    return local_path(sync_drop(uri, scratch)["staging_uri"])


def cmd_bootstrap(args: argparse.Namespace) -> int:
    import tempfile

    from ml_tasks.data.validation import bootstrap_suite, suite_path, write_suite
    from ml_tasks.datasets import get_dataset
    from ml_tasks.io import read_drop

    spec = get_dataset(args.dataset)
    target = suite_path(spec.suite)
    if target.exists() and not args.force:
        print(f"{target} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ratchet-bootstrap-") as scratch:
        payload = bootstrap_suite(spec, read_drop(_local_drop(args.source, Path(scratch))))
    print(f"wrote {write_suite(payload)} with {len(payload['expectations'])} expectations; review it, then commit it")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """`ratchet validate URI --suite S`: what the data_validation DAG does, from a shell."""
    import time

    from ml_tasks.data.spark.session import SparkOptions
    from ml_tasks.data.validation import validate
    from ml_tasks.errors import DataError

    run_key = args.run_key or time.strftime("cli-%Y%m%dT%H%M%S")
    try:
        spark = SparkOptions(master=args.spark_master) if args.engine == "spark" else None
        outcome = validate(args.uri, args.suite, run_key, data_docs=args.data_docs, engine=args.engine, spark=spark)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"passed {outcome.evaluated} expectations of suite {outcome.suite!r} on {outcome.rows} rows; "
          f"Data Docs: {outcome.data_docs_uri or 'not built'}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """`ratchet sync SRC DST`: endpoints and credentials from the standard AWS / Hadoop environment."""
    import gc

    # Most of a sync with little to copy is start-up: collect seldom (not never: a long sync frees its cycles) ...
    gc.set_threshold(GC_THRESHOLD)
    try:
        return _sync_command(args)
    finally:
        # ... and at exit leave the heap to the OS rather than walk it once more in a last collection.
        gc.freeze()


def _sync_command(args: argparse.Namespace) -> int:
    from ml_tasks.storage import HdfsOptions, StorageOptions, sync

    logging.getLogger("botocore").setLevel(logging.WARNING)  # "found credentials in ..." is not news
    options = StorageOptions(hdfs=HdfsOptions(url=args.webhdfs_url), workers=args.workers)
    result = sync(args.src, args.dst, delete=args.delete, dry_run=args.dry_run, options=options,
                  progress=not args.quiet)
    if args.dry_run:
        for key in result.to_copy:
            print(f"would copy   {key}")
        for key in result.to_delete:
            print(f"would delete {key}")
        print(f"dry run: {len(result.to_copy)} to copy, {result.reused} unchanged, {len(result.to_delete)} to delete")
    elif not args.quiet:
        print(f"{result.files} objects, {result.bytes} bytes: {result.copied} copied ({result.copied_bytes} bytes), "
              f"{result.reused} unchanged, {result.deleted} deleted in {result.seconds:.2f}s; "
              f"manifest {result.manifest_uri}")
    return 0


def cmd_datasets_add(args: argparse.Namespace) -> int:
    """`ratchet datasets add NAME --from URI --target COLUMN`: a declaration and a suite to review, from a drop."""
    from ml_tasks.datasets.inference import add, report
    from ml_tasks.storage import HdfsOptions, StorageOptions

    logging.getLogger("botocore").setLevel(logging.WARNING)
    options = StorageOptions(hdfs=HdfsOptions(url=args.webhdfs_url))
    proposal, written = add(args.name, args.source, args.target, task=args.task, schedule=args.schedule,
                            source_template=args.source_template or "", force=args.force, options=options)
    print("\n".join(report(proposal, written)))
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from ml_tasks.datasets import declarations_dir
    from ml_tasks.datasets.declarations import declaration_files, load_declaration

    folder = declarations_dir()
    rows = [("NAME", "TASK", "TARGET", "FEATURES", "SCHEDULE", "FILE")]
    for path in declaration_files(folder):
        spec = load_declaration(path)
        rows.append((spec.name, spec.task, spec.target, str(len(spec.features)), spec.schedule or "-", str(path)))
    if len(rows) == 1:
        print(f"no declarations in {folder}")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from ml_tasks.datasets import declarations_dir, get_dataset
    from ml_tasks.datasets.declarations import DECLARATION_SUFFIX, check_name

    check_name(args.name)
    spec = get_dataset(args.name)  # refuses an unknown or invalid declaration, naming the declared ones
    path = declarations_dir() / f"{spec.name}{DECLARATION_SUFFIX}"
    print(f"# {path}")
    print(path.read_text(), end="")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from ml_tasks.release.registry import promote

    user = os.environ.get("USER", "unknown")  # env: pass-through (the OS user, for the audit trail)
    reason = f"{args.reason} (ratchet promote by {user})"
    result = promote(args.model, args.version, reason, expected_champion=args.expect, check_expected=args.expect is not None)
    if result.promoted:
        print(f"{result.name}: champion v{result.previous_champion} -> v{result.champion}")
    else:
        print(f"{result.name}: v{result.version} already is the champion")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from ml_tasks.compression.job import compress

    result = compress(args.dataset, args.version, args.method, args.max_accuracy_loss)
    for method, figures in result["results"].items():
        print(f"{method:14s} {'passed' if figures.get('passed') else 'FAILED'} {figures}")
    print(f"registered: {result['registered'] or 'nothing'}; record {result['record_path']}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from ml_tasks.release.registry import rollback

    result = rollback(args.model, args.to)
    print(f"{result.name}: champion v{result.previous_champion} -> v{result.champion}")
    return 0


def _wait_http(url: str, seconds: float) -> bool:
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError as exc:
            if getattr(exc, "code", None) in (401, 403):
                return True  # up, and refusing anonymous requests as it should
            time.sleep(1)
    return False


def _private_secret(path: Path) -> str:
    """A generated secret kept in a 0600 file under RATCHET_HOME, created once."""
    import secrets

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def mlflow_auth_config() -> tuple[Path, str]:
    """MLflow's basic-auth config with a generated admin password, kept under RATCHET_HOME."""
    import configparser
    import secrets

    folder = get_settings().home / "mlflow"
    path = folder / "basic_auth.ini"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": "READ",
            "database_uri": f"sqlite:///{folder / 'basic_auth.db'}",
            "admin_username": "admin",
            "admin_password": secrets.token_urlsafe(16),
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        }
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            config.write(handle)
    config = configparser.ConfigParser()
    config.read(path)
    return path, config["mlflow"]["admin_password"]


def cmd_up(args: argparse.Namespace) -> int:
    """Airflow (scheduler, DAG processor, triggerer, API server) and the MLflow UI, with auth on."""
    if args.profile == "production":
        from ml_tasks.ops.production import up_production

        return up_production(airflow_port=args.airflow_port, mlflow_port=args.mlflow_port)
    import signal
    import subprocess
    import time

    from ml_tasks.constants import MLFLOW_SERVER_ENV
    from ml_tasks.ops.airflow_cli import airflow_env, init_airflow, warm_execution_api

    settings = get_settings()
    # SIGTERM (a service manager, `kill`) stops the children too, like Ctrl-C
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    init_airflow()
    env = airflow_env()
    auth_path, mlflow_password = mlflow_auth_config()
    bin_dir = Path(sys.executable).parent
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    mlflow_url = f"http://127.0.0.1:{args.mlflow_port}"
    airflow_url = f"http://127.0.0.1:{args.airflow_port}"
    procs = [
        subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(args.mlflow_port), "--backend-store-uri", settings.mlflow_tracking_uri,
             "--default-artifact-root", settings.mlflow_artifact_root],
            env={**env, **MLFLOW_SERVER_ENV, "MLFLOW_AUTH_CONFIG_PATH": str(auth_path),
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": _private_secret(auth_path.parent / "flask_secret_key")},
            stdout=(logs / "mlflow.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        ),
        subprocess.Popen(
            [str(bin_dir / "airflow"), "standalone"],
            env={**env, "AIRFLOW__API__PORT": str(args.airflow_port),
                 "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/"},
            stdout=(logs / "airflow.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        ),
    ]
    try:
        up = _wait_http(f"{airflow_url}/api/v2/monitor/health", 180) and _wait_http(f"{mlflow_url}/health", 60)
        up = up and warm_execution_api(airflow_url)
        password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        airflow_login = "(see logs/airflow.log)"
        if password_file.is_file():
            import json

            airflow_login = ", ".join(f"{user} / {pw}" for user, pw in json.loads(password_file.read_text()).items())
        print(f"""{'services are up' if up else 'services did not answer in time; see ' + str(logs)}
  Airflow UI   {airflow_url}   login {airflow_login}
  MLflow UI    {mlflow_url}   login admin / {mlflow_password}   (kept in {auth_path})
  logs         {logs}
Ctrl-C stops both.""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve models:/MODEL@champion over HTTP; the real work lives in ml_tasks.serving.app."""
    from ml_tasks.serving.app import serve_from_args

    return serve_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ratchet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("env", help="print export lines for the airflow and mlflow CLIs").set_defaults(func=cmd_env)

    demo = sub.add_parser("demo", help="three nights of nightly_retrain on the embedded default")
    demo.add_argument("--keep", action="store_true", help="keep the existing RATCHET_HOME state")
    demo.set_defaults(func=cmd_demo)

    land = sub.add_parser("land", help="land a drop under RATCHET_HOME/landing/<dataset>/<date>/")
    land.add_argument("dataset")
    land.add_argument("--date", required=True, help="YYYY-MM-DD of the drop")
    land.add_argument("--year", type=int, default=2015, help="ACS survey year (acs_employment)")
    land.add_argument("--rows", type=int, default=5000, help="rows (synthetic)")
    land.add_argument("--seed", type=int, default=0)
    land.add_argument("--drift", type=float, default=0.0)
    land.add_argument("--label-noise", type=float, default=0.0)
    land.add_argument("--corrupt", action="append", help="a named corruption (repeatable)")
    land.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    land.add_argument("--parts", type=int, default=1)
    land.set_defaults(func=cmd_land)

    expectations = sub.add_parser("expectations", help="Great Expectations suites")
    exp_sub = expectations.add_subparsers(dest="expectations_command", required=True)
    bootstrap = exp_sub.add_parser("bootstrap", help="write a first suite from a reference drop")
    bootstrap.add_argument("dataset")
    bootstrap.add_argument("--from", dest="source", required=True,
                           help="the reference drop: a folder, file://, s3://bucket/prefix or hdfs://...")
    bootstrap.add_argument("--force", action="store_true")
    bootstrap.set_defaults(func=cmd_bootstrap)

    datasets = sub.add_parser("datasets", help="declared data sets: add one from a drop, list, show")
    ds_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    ds_add = ds_sub.add_parser("add", help="infer datasets/NAME.yaml and its suite from a drop, for review")
    ds_add.add_argument("name", help="a plain name: lower-case letters, digits, underscores")
    ds_add.add_argument("--from", dest="source", required=True,
                        help="the drop: a folder or one CSV/Parquet file, as a path, file://, s3://... or hdfs://...")
    ds_add.add_argument("--target", required=True, help="the column to predict")
    ds_add.add_argument("--task", choices=("binary", "multiclass", "regression"), help="override the inferred task")
    ds_add.add_argument("--schedule", help="the data set's DAG schedule (cron or an Airflow preset; default: none)")
    ds_add.add_argument("--source-template", help="where a night's drop lands: a URI with {ds} (default: landing)")
    ds_add.add_argument("--webhdfs-url", help="WebHDFS base URL for hdfs:// (default: from the URI, port 9870)")
    ds_add.add_argument("--force", action="store_true", help="overwrite an existing declaration, suite and checkpoint")
    ds_add.set_defaults(func=cmd_datasets_add)
    ds_sub.add_parser("list", help="every declared data set").set_defaults(func=cmd_datasets_list)
    ds_show = ds_sub.add_parser("show", help="print a declaration")
    ds_show.add_argument("name")
    ds_show.set_defaults(func=cmd_datasets_show)

    validate = sub.add_parser("validate", help="validate a drop (file://, s3://, hdfs://) against a committed suite")
    validate.add_argument("uri")
    validate.add_argument("--suite", required=True, help="a suite in expectations/suites/")
    validate.add_argument("--data-docs", choices=("always", "on_failure", "never"),
                          help="build Data Docs (default: as the suite's checkpoint says)")
    validate.add_argument("--run-key", help="names this validation's results and Data Docs (default: cli-<time>)")
    validate.add_argument("--engine", choices=("pandas", "spark"), default="pandas",
                          help="spark: GE's Spark engine, the same suite (for drops larger than memory)")
    validate.add_argument("--spark-master", help="with --engine spark (default: RATCHET_SPARK_MASTER, else local[*])")
    validate.set_defaults(func=cmd_validate)

    sync = sub.add_parser("sync", help="mirror SRC into DST (file://, s3://, hdfs://), incrementally by content")
    sync.add_argument("src")
    sync.add_argument("dst")
    sync.add_argument("--delete", action="store_true", help="delete objects at DST that SRC does not have")
    sync.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    sync.add_argument("--workers", type=int, default=16, help="concurrent transfers")
    sync.add_argument("--webhdfs-url", help="WebHDFS base URL (default: from the hdfs:// URI, port 9870)")
    sync.add_argument("--quiet", action="store_true", help="no progress bar or summary (for tasks)")
    sync.set_defaults(func=cmd_sync)

    promote = sub.add_parser("promote", help="move champion to a reviewed version (compare-and-set with --expect)")
    promote.add_argument("model")
    promote.add_argument("version")
    promote.add_argument("--expect", help="promote only if champion still is this version")
    promote.add_argument("--reason", default="approved after review", help="recorded in the alias history")
    promote.set_defaults(func=cmd_promote)

    compress = sub.add_parser("compress", help="quantize, prune and distil a Keras version (default: the champion)")
    compress.add_argument("dataset")
    compress.add_argument("--version")
    compress.add_argument("--method", action="append", choices=("dynamic_range", "float16", "int8", "pruned", "distilled"),
                          help="repeatable; default: all")
    compress.add_argument("--max-accuracy-loss", type=float, help="gate on accuracy lost vs the original (default 0.01)")
    compress.set_defaults(func=cmd_compress)

    rollback = sub.add_parser("rollback", help="move champion back to the previous (or a given) version")
    rollback.add_argument("model")
    rollback.add_argument("--to", help="version to restore")
    rollback.set_defaults(func=cmd_rollback)

    up = sub.add_parser("up", help="start Airflow and the MLflow UI on localhost, with auth")
    up.add_argument("--airflow-port", type=int, default=8080)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--profile", choices=("embedded", "production"), default="embedded",
                    help="production: PostgreSQL, Celery + Redis, MLflow server with S3 artifacts (README: Scaling out)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="serve models:/MODEL@champion over HTTP (/invocations, /health, /version)")
    serve.add_argument("model", help="registered model name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--alias", default="champion", help="the alias to serve and watch")
    serve.add_argument("--poll-seconds", type=float, default=5.0, help="how often the alias is checked for a new version")
    serve.add_argument("--log-sample", type=float, default=None,
                       help="fraction of served rows written to the inference log (default RATCHET_INFERENCE_LOG_SAMPLE or 1.0)")
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from ml_tasks.errors import RatchetError

    try:
        return int(args.func(args))
    except RatchetError as exc:
        print(f"ratchet: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
