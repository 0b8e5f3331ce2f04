"""The production profile: the same DAGs and ml_tasks on PostgreSQL, Celery + Redis, an MLflow server and S3.

Nothing here changes what a task does; it only builds the environment and the
process commands of each component. The end-to-end test starts exactly these
processes on this machine, and `docker-compose.yml` declares the same commands
and variables for real machines (a unit test keeps the two in agreement).

Every component reads one shared RATCHET_HOME (staging, prepared splits, task
logs): one folder on a single machine, a shared volume in compose, a network
file system when workers sit on other hosts. Credentials are never in code:
they come from the environment (`.env` in compose) or are generated into
0600 files under RATCHET_HOME by `up_production`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from ml_tasks.constants import DEFAULT_QUEUE, GPU_QUEUE, MLFLOW_SERVER_ENV
from ml_tasks.ops.airflow_cli import warm_execution_api
from ml_tasks.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

MLFLOW_ADMIN = "admin"
# Airflow's simple auth manager: this user, as admin; its password is generated at first start
# into AIRFLOW_HOME/simple_auth_manager_passwords.json.generated.
AIRFLOW_USERS = "admin:admin"
# Experiments get artifact locations under the MLflow server's proxy: clients never hold S3 credentials.
PROXIED_ARTIFACT_ROOT = "mlflow-artifacts:/ratchet"
# Order in which the components are started (and the compose services that run them).
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-worker-gpu")
SECRET_NAMES = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


@dataclass(frozen=True)
class ProfileSecrets:
    """Shared secrets: JWTs between scheduler, workers and API server; Fernet for connections; MLflow's admin."""

    jwt_secret: str = field(repr=False)
    api_secret_key: str = field(repr=False)
    fernet_key: str = field(repr=False)
    mlflow_admin_password: str = field(repr=False)
    mlflow_flask_secret: str = field(repr=False)

    @classmethod
    def generate(cls) -> ProfileSecrets:
        import base64
        import secrets

        return cls(
            jwt_secret=secrets.token_urlsafe(64),  # HS512 wants a key of 64 bytes or more
            api_secret_key=secrets.token_urlsafe(32),
            fernet_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            mlflow_admin_password=secrets.token_urlsafe(16),
            mlflow_flask_secret=secrets.token_urlsafe(32),
        )

    @classmethod
    def placeholders(cls) -> ProfileSecrets:
        """Compose interpolation that refuses to start when a secret is missing from `.env`."""
        values = [f"${{{name}:?set {name} in .env}}" for name in SECRET_NAMES]
        return cls(*values)

    @classmethod
    def stored(cls, folder: Path) -> ProfileSecrets:
        """Taken from the environment where set, else generated once into 0600 files under `folder`."""
        generated = cls.generate()
        values = []
        for name, value in zip(SECRET_NAMES, (generated.jwt_secret, generated.api_secret_key, generated.fernet_key,
                                              generated.mlflow_admin_password, generated.mlflow_flask_secret),
                               strict=True):
            values.append(os.environ.get(name) or _private_file(folder / name.lower(), value))  # env: pass-through
        return cls(*values)


def _private_file(path: Path, value: str) -> str:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(value)
    return path.read_text().strip()


@dataclass(frozen=True)
class ProductionProfile:
    """Where the production profile's services are, as every component sees them."""

    home: str
    secrets: ProfileSecrets
    # SQLAlchemy URL of the PostgreSQL server without a database: postgresql+psycopg2://user[:password]@host:port
    postgres_url: str = field(repr=False)
    redis_url: str = field(repr=False)  # the Celery broker, with its database index: redis://[:password@]host:6379/0
    s3_endpoint: str  # seen by the MLflow server only (MinIO, moto; empty for AWS S3)
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    artifacts_destination: str = "s3://ratchet/mlflow"
    project_root: str = str(PROJECT_ROOT)
    airflow_database: str = "airflow"
    mlflow_database: str = "mlflow"
    mlflow_auth_database: str = "mlflow_auth"
    optuna_database: str = "optuna"
    bind_host: str = "127.0.0.1"  # what the servers listen on (0.0.0.0 in a container)
    airflow_host: str = "127.0.0.1"  # how the workers reach the API server
    airflow_port: int = 8080
    mlflow_host: str = "127.0.0.1"  # how clients reach the MLflow server
    mlflow_port: int = 5000
    scheduler_health_port: int = 8974
    api_workers: int = 1
    mlflow_workers: int = 2
    worker_concurrency: int = 4
    gpu_slots: int = 1  # GPUs of the gpu-queue worker: its concurrency and the ratchet_gpu pool's slots
    mlflow_auth_config: str = ""  # path of the auth ini (default: RATCHET_HOME/mlflow/basic_auth_production.ini)

    @classmethod
    def for_compose(cls) -> ProductionProfile:
        """The values docker-compose.yml uses: service names as hosts, secrets from `.env`."""
        postgres_login = "ratchet:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"  # compose fills it in
        return cls(
            home="/var/lib/ratchet",
            secrets=ProfileSecrets.placeholders(),
            postgres_url=f"postgresql+psycopg2://{postgres_login}@postgres:5432",
            redis_url="redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis:6379/0",
            s3_endpoint="http://minio:9000",
            s3_access_key="${MINIO_ROOT_USER:?set MINIO_ROOT_USER in .env}",
            s3_secret_key="${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in .env}",
            project_root="/opt/ratchet",
            bind_host="0.0.0.0",
            airflow_host="airflow-apiserver",
            mlflow_host="mlflow",
            mlflow_workers=4,
            api_workers=2,
            mlflow_auth_config="/etc/ratchet/mlflow_auth.ini",
        )

    @classmethod
    def from_env(cls) -> ProductionProfile:
        """`ratchet up --profile production` on one host: service addresses from RATCHET_* variables."""
        from ml_tasks.settings import get_settings

        home = get_settings().home

        from ml_tasks import environment_variables as env

        def need(variable: env.EnvironmentVariable[str | None]) -> str:
            value = variable.get()
            if not value:
                from ml_tasks.errors import ConfigError

                raise ConfigError(f"the production profile needs {variable.name} in the environment")
            return value

        return cls(
            home=str(home),
            secrets=ProfileSecrets.stored(home / "secrets"),
            postgres_url=need(env.RATCHET_POSTGRES_URL),
            redis_url=need(env.RATCHET_REDIS_URL),
            s3_endpoint=env.RATCHET_S3_ENDPOINT.get(),  # empty: AWS S3 itself
            s3_access_key=need(env.AWS_ACCESS_KEY_ID),
            s3_secret_key=need(env.AWS_SECRET_ACCESS_KEY),
            artifacts_destination=env.RATCHET_ARTIFACTS_DESTINATION.get(),
            gpu_slots=env.RATCHET_GPU_SLOTS.get(),
        )

    # ------------------------------------------------------------------ derived addresses

    def database_url(self, database: str) -> str:
        return f"{self.postgres_url}/{database}"

    @property
    def databases(self) -> tuple[str, ...]:
        return (self.airflow_database, self.mlflow_database, self.mlflow_auth_database, self.optuna_database)

    @property
    def airflow_home(self) -> str:
        return f"{self.home}/airflow"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.airflow_host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.mlflow_host}:{self.mlflow_port}"

    @property
    def auth_config_path(self) -> str:
        return self.mlflow_auth_config or f"{self.home}/mlflow/basic_auth_production.ini"

    # ------------------------------------------------------------------ environment

    def environment(self) -> dict[str, str]:
        """Every Airflow component and Celery worker: the same variables, nothing else differs."""
        airflow_db = self.database_url(self.airflow_database)
        return {
            "RATCHET_HOME": self.home,
            "AIRFLOW_HOME": self.airflow_home,
            "AIRFLOW__CORE__DAGS_FOLDER": f"{self.project_root}/dags",
            "AIRFLOW__CORE__PLUGINS_FOLDER": f"{self.project_root}/plugins",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": AIRFLOW_USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.secrets.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
            # a task still unacknowledged after this long is handed to another worker: longer than any training
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self.secrets.api_secret_key,
            # A task's supervisor can miss its process's exit when the last socket closes first, and then sleeps
            # this long before it notices (Airflow's default: 5 s), holding the Celery slot: the second tuning slot
            # waited for it (README, Production profile). It also heartbeats each running task this often.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": self.bind_host,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_REGISTRY_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
            "MLFLOW_TRACKING_PASSWORD": self.secrets.mlflow_admin_password,
            "RATCHET_MLFLOW_ARTIFACT_ROOT": PROXIED_ARTIFACT_ROOT,
            "RATCHET_OPTUNA_STORAGE": self.database_url(self.optuna_database),
            "RATCHET_GPU_SLOTS": str(self.gpu_slots),
            # the spark engine's stages go to the Connection spark_default's cluster through spark-submit
            "RATCHET_SPARK_SUBMIT": "true",
        }

    def mlflow_environment(self) -> dict[str, str]:
        """The MLflow server: its stores and S3 credentials (the store URL stays out of the command line)."""
        env = {
            **MLFLOW_SERVER_ENV,
            "MLFLOW_BACKEND_STORE_URI": self.database_url(self.mlflow_database),
            "MLFLOW_AUTH_CONFIG_PATH": self.auth_config_path,
            "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_ADMIN,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.mlflow_flask_secret,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
        }
        if not self.s3_endpoint:
            del env["MLFLOW_S3_ENDPOINT_URL"]
        return env

    def mlflow_auth_ini(self) -> str:
        """MLflow's basic-auth config: users in PostgreSQL, nobody may read without logging in."""
        return (
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = {self.database_url(self.mlflow_auth_database)}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )

    # ------------------------------------------------------------------ commands

    def commands(self) -> dict[str, list[str]]:
        """Each component's command line, keyed by its compose service name."""

        def worker(queue: str, concurrency: int) -> list[str]:
            # Logs go to AIRFLOW_HOME/logs on the shared RATCHET_HOME, where the API server reads them.
            return ["airflow", "celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
                    "--celery-hostname", f"{queue}@%h", "--skip-serve-logs"]

        allowed_hosts = ",".join(dict.fromkeys(
            [f"{self.mlflow_host}:{self.mlflow_port}", f"localhost:{self.mlflow_port}", f"127.0.0.1:{self.mlflow_port}"]))
        return {
            "airflow-init": ["python", "-m", "ml_tasks.ops.airflow_cli", "init"],
            "mlflow": ["mlflow", "server", "--app-name", "basic-auth", "--host", self.bind_host,
                       "--port", str(self.mlflow_port), "--workers", str(self.mlflow_workers),
                       "--artifacts-destination", self.artifacts_destination, "--allowed-hosts", allowed_hosts],
            "airflow-apiserver": ["airflow", "api-server", "--host", self.bind_host, "--port", str(self.airflow_port),
                                  "--workers", str(self.api_workers)],
            "airflow-scheduler": ["airflow", "scheduler"],
            "airflow-dag-processor": ["airflow", "dag-processor"],
            "airflow-triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
            "airflow-worker": worker(DEFAULT_QUEUE, self.worker_concurrency),
            "airflow-worker-gpu": worker(GPU_QUEUE, self.gpu_slots),
        }

    def with_ports(self, airflow_port: int, mlflow_port: int, scheduler_health_port: int) -> ProductionProfile:
        return replace(self, airflow_port=airflow_port, mlflow_port=mlflow_port,
                       scheduler_health_port=scheduler_health_port)


# ---------------------------------------------------------------------- processes on one host


def _argv(command: list[str]) -> list[str]:
    """Resolve `python`, `airflow`, `mlflow` to this environment's executables."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    local = Path(sys.executable).parent / command[0]
    return [str(local) if local.exists() else command[0], *command[1:]]


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_auth_config(profile: ProductionProfile) -> Path:
    """The MLflow auth ini, 0600 (it names the auth database; the admin password comes from the environment)."""
    path = Path(profile.auth_config_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(profile.mlflow_auth_ini())
    tmp.replace(path)
    return path


def start(profile: ProductionProfile, service: str, logs: Path) -> subprocess.Popen[bytes]:
    """Start one component in its own process group, output to logs/<service>.log."""
    env = _base_env()
    env.update(profile.mlflow_environment() if service == "mlflow" else profile.environment())
    logs.mkdir(parents=True, exist_ok=True)
    Path(profile.home).mkdir(parents=True, exist_ok=True)
    handle: IO[bytes] = (logs / f"{service}.log").open("ab")
    try:
        return subprocess.Popen(_argv(profile.commands()[service]), env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=profile.home)
    finally:
        handle.close()


def init(profile: ProductionProfile, logs: Path, timeout: float = 600) -> None:
    """`airflow-init`: migrate Airflow's database and create the pools; raises with the log tail on failure."""
    Path(profile.airflow_home).mkdir(parents=True, exist_ok=True)
    proc = start(profile, "airflow-init", logs)
    if proc.wait(timeout=timeout) != 0:
        tail = (logs / "airflow-init.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"airflow-init failed:\n{tail}")


def stop(procs: dict[str, subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM every process group, then SIGKILL what is still there after `grace` seconds."""
    for proc in procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group too: children (uvicorn workers, celery pool, task processes) may outlive the leader
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def up_production(profile: ProductionProfile | None = None, *, airflow_port: int | None = None,
                  mlflow_port: int | None = None) -> int:
    """`ratchet up --profile production`: every component of the profile on this host until Ctrl-C.

    The databases (airflow, mlflow, mlflow_auth, optuna) and the artifact bucket must exist.
    """
    profile = profile or ProductionProfile.from_env()
    profile = replace(profile, airflow_port=airflow_port or profile.airflow_port,
                      mlflow_port=mlflow_port or profile.mlflow_port)
    logs = Path(profile.home) / "logs" / "production"
    write_auth_config(profile)
    init(profile, logs)
    procs = {name: start(profile, name, logs) for name in ("mlflow", *AIRFLOW_SERVICES)}
    print(f"""production profile starting (logs in {logs})
  Airflow UI   {profile.airflow_url}   login: see {profile.airflow_home}/simple_auth_manager_passwords.json.generated
  MLflow UI    {profile.mlflow_url}   login {MLFLOW_ADMIN} / (kept in {profile.home}/secrets/mlflow_admin_password)
Ctrl-C stops everything.""", flush=True)
    try:
        warm_execution_api(profile.airflow_url, timeout=240, server_workers=profile.api_workers)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(1)
        failed = [name for name, p in procs.items() if p.poll() is not None]
        log.error("stopped: %s exited; see %s", ", ".join(failed), logs)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(procs)
