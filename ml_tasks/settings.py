"""Where Ratchet keeps its state, read once from the environment.

Everything lives under `RATCHET_HOME` (default `.ratchet/` in the project
root), so deleting that folder resets the embedded default. The production
profile points the same names elsewhere through the environment alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ml_tasks import environment_variables as env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
DATASETS_DIR = PROJECT_ROOT / "datasets"


def _default_home() -> Path:
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / ".ratchet"
    return Path.cwd() / ".ratchet"


@dataclass(frozen=True)
class Settings:
    home: Path
    airflow_home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    mlflow_experiment: str
    optuna_storage: str
    expectations_dir: Path
    datasets_dir: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def staging(self) -> Path:
        return self.home / "staging"

    @property
    def prepared(self) -> Path:
        return self.home / "prepared"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def gx(self) -> Path:
        return self.home / "gx"

    @property
    def data_docs(self) -> Path:
        return self.gx / "data_docs"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    @property
    def bench(self) -> Path:
        return self.home / "bench"

    @property
    def inference_logs(self) -> Path:
        """Sampled request inputs and predictions that `ratchet serve` writes; `model_monitoring` reads them."""
        return Path(env.RATCHET_INFERENCE_LOG_DIR.get() or self.home / "inference")

    @property
    def feedback(self) -> Path:
        """Labels that arrive after the fact (request_id, label), one folder per registered model."""
        return Path(env.RATCHET_FEEDBACK_DIR.get() or self.home / "feedback")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(env.RATCHET_HOME.get() or _default_home()).resolve()
    mlflow_dir = home / "mlflow"
    return Settings(
        home=home,
        airflow_home=Path(env.AIRFLOW_HOME.get() or home / "airflow"),
        mlflow_tracking_uri=env.MLFLOW_TRACKING_URI.get() or f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        mlflow_artifact_root=env.RATCHET_MLFLOW_ARTIFACT_ROOT.get() or (mlflow_dir / "artifacts").as_uri(),
        mlflow_experiment=env.RATCHET_MLFLOW_EXPERIMENT.get(),
        optuna_storage=env.RATCHET_OPTUNA_STORAGE.get() or f"sqlite:///{home / 'optuna' / 'optuna.db'}",
        expectations_dir=Path(env.RATCHET_EXPECTATIONS_DIR.get() or EXPECTATIONS_DIR),
        datasets_dir=Path(env.RATCHET_DATASETS_DIR.get() or DATASETS_DIR),
    )


def environment_exports(settings: Settings | None = None) -> dict[str, str]:
    """The variables that make the plain `airflow` and `mlflow` CLIs see our state."""
    s = settings or get_settings()
    exports = {
        "RATCHET_HOME": str(s.home),
        "AIRFLOW_HOME": str(s.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The scheduler sleeps this long only when a loop found nothing to do (Airflow's default is longer); a task
        # that finishes is followed by its downstream task sooner.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(env.AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME.get()),
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "MLFLOW_REGISTRY_URI": s.mlflow_tracking_uri,
        "RATCHET_MLFLOW_ARTIFACT_ROOT": s.mlflow_artifact_root,
    }
    if (env.AIRFLOW__DATABASE__SQL_ALCHEMY_CONN.get() or "sqlite").startswith("sqlite"):
        # Airflow's engines wait for SQLite's write lock instead of failing after 5 s (ml_tasks.ops.airflow_db).
        exports["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = "ml_tasks.ops.airflow_db.SQLITE_CONNECT_ARGS"
        exports["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"] = "ml_tasks.ops.airflow_db.SQLITE_CONNECT_ARGS_ASYNC"
    return exports
