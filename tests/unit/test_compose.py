"""docker-compose.yml: valid Compose, and the same commands and variables as the profile the tests run.

No Docker engine runs here, so the file is checked against the Compose Specification's JSON schema,
vendored as tests/fixtures/compose-spec.json from github.com/compose-spec/compose-spec,
schema/compose-spec.json at commit b2835e8acc1e42e7aecbc27a9bc4a1fc66ef21ba (draft 2019-09; the spec
has no version number of its own since Compose v2). Then every command and environment of the compose
services is compared with `ml_tasks.ops.production.ProductionProfile.for_compose()`, whose code also starts the
processes of tests/integration/test_production_profile.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_tasks.ops.production import AIRFLOW_SERVICES, SECRET_NAMES, ProductionProfile, ProfileSecrets

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
AIRFLOW_PROCESSES = ("airflow-init", *AIRFLOW_SERVICES)
LONG_RUNNING = ("postgres", "redis", "minio", "mlflow", *AIRFLOW_SERVICES)
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def profile() -> ProductionProfile:
    return ProductionProfile.for_compose()


def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(compose)]
    assert not errors, errors


def test_the_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0].pop("capabilities")
    broken["services"]["redis"]["helthcheck"] = {}
    assert len(list(_validator().iter_errors(broken))) >= 2


def test_services_are_those_of_the_profile_with_health_checks_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "minio", "minio-init", "mlflow", *AIRFLOW_PROCESSES}
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
    declared = set(compose["volumes"])
    used = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])}
    assert used == declared == {"postgres", "redis", "minio", "ratchet"}
    for name in AIRFLOW_PROCESSES:  # one RATCHET_HOME for every Airflow component and worker
        assert "ratchet:/var/lib/ratchet" in services[name]["volumes"], name


def test_commands_are_the_ones_the_profile_runs(compose: dict[str, Any], profile: ProductionProfile) -> None:
    commands = profile.commands()
    assert set(commands) == {"mlflow", *AIRFLOW_PROCESSES}
    for name, command in commands.items():
        assert compose["services"][name]["command"] == command, name


def test_environments_are_the_ones_the_profile_sets(compose: dict[str, Any], profile: ProductionProfile) -> None:
    services = compose["services"]
    for name in AIRFLOW_PROCESSES:  # only their commands differ
        assert services[name]["environment"] == profile.environment(), name
    assert services["mlflow"]["environment"] == profile.mlflow_environment()
    assert compose["configs"]["mlflow-auth"]["content"] == profile.mlflow_auth_ini()
    assert services["mlflow"]["configs"][0]["target"] == profile.auth_config_path


def test_postgres_creates_every_database_of_the_profile(compose: dict[str, Any], profile: ProductionProfile) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    created = {postgres["POSTGRES_DB"], *re.findall(r"CREATE DATABASE (\w+);", compose["configs"]["postgres-init"]["content"])}
    assert created == set(profile.databases)
    assert profile.postgres_url.startswith(f"postgresql+psycopg2://{postgres['POSTGRES_USER']}:")


def test_minio_bucket_is_the_mlflow_artifact_destination(compose: dict[str, Any], profile: ProductionProfile) -> None:
    bucket = profile.artifacts_destination.removeprefix("s3://").split("/")[0]
    assert f"mb --ignore-existing local/{bucket}" in compose["services"]["minio-init"]["command"][0]
    assert compose["services"]["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_gpu_worker_reserves_gpus_and_serves_the_gpu_queue(compose: dict[str, Any], profile: ProductionProfile) -> None:
    gpu = compose["services"]["airflow-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == profile.gpu_slots == int(gpu["environment"]["RATCHET_GPU_SLOTS"])
    assert gpu["build"]["args"]["GPU"] == "1"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    default = compose["services"]["airflow-worker"]["command"]
    assert default[default.index("--queues") + 1] == "default"


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    """Every credential is an interpolation that fails when `.env` lacks it; .env.example names them all."""
    text = COMPOSE.read_text()
    for key, value in _env_items(compose):
        if re.search(r"PASSWORD|SECRET|FERNET|ACCESS_KEY", key):
            assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{key} must come from .env"
        for match in re.finditer(r"://[^:/@]*:([^@]*)@", value):  # user:password@ in URLs
            assert match.group(1).startswith("${"), f"{key} carries a literal password"
    required = {m.group(1) for m in INTERPOLATION.finditer(text)}
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required == example
    assert set(SECRET_NAMES) <= required


def _env_items(compose: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, str(value)) for service in compose["services"].values()
            for key, value in (service.get("environment") or {}).items()]


def test_secrets_stay_out_of_command_lines_and_reprs() -> None:
    """Process lists and logs show commands: the generated secrets and the database URLs are not in them."""
    secrets = ProfileSecrets.generate()
    profile = ProductionProfile(
        home="/tmp/ratchet-profile", secrets=secrets,
        postgres_url="postgresql+psycopg2://ratchet:pg-pass@db:5432",  # pragma: allowlist secret
        redis_url="redis://:redis-pass@redis:6379/0", s3_endpoint="http://s3:9000", s3_access_key="key",
        s3_secret_key="s3-pass",  # pragma: allowlist secret
    )
    argv = " ".join(" ".join(command) for command in profile.commands().values())
    for value in (*vars(secrets).values(), "pg-pass", "redis-pass", "s3-pass"):
        assert value not in argv
        assert value not in repr(profile)
    assert profile.environment()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert profile.environment()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert profile.mlflow_environment()["MLFLOW_BACKEND_STORE_URI"].endswith("@db:5432/mlflow")


def test_from_env_generates_missing_secrets_once_into_private_files(ratchet_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`ratchet up --profile production` on one host: addresses from RATCHET_*, secrets kept under RATCHET_HOME."""
    for name in SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RATCHET_POSTGRES_URL", "postgresql+psycopg2://ratchet@db:5432")
    monkeypatch.setenv("RATCHET_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "key")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "from-the-environment")
    monkeypatch.delenv("RATCHET_S3_ENDPOINT", raising=False)
    first = ProductionProfile.from_env()
    assert first.secrets == ProductionProfile.from_env().secrets  # generated once, then read back
    assert first.secrets.jwt_secret == "from-the-environment"  # pragma: allowlist secret
    files = sorted((ratchet_home / "secrets").iterdir())
    assert len(files) == len(SECRET_NAMES) - 1
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
    assert "MLFLOW_S3_ENDPOINT_URL" not in first.mlflow_environment()  # AWS S3 itself
    assert first.environment()["RATCHET_OPTUNA_STORAGE"] == "postgresql+psycopg2://ratchet@db:5432/optuna"
