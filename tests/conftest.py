"""Shared fixtures: every test gets its own RATCHET_HOME, so state never leaks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_tasks.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent

# Airflow imported by the tests themselves (DagBag) keeps its state inside the repo's ignored .ratchet/,
# never in ~/airflow, and sees the project's DAGs and plugins.
# One per pytest-xdist worker: two processes never migrate one SQLite file at once.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEST_AIRFLOW_HOME = ROOT / ".ratchet" / (f"test-airflow-{WORKER}" if WORKER else "test-airflow")
os.environ.setdefault("AIRFLOW_HOME", str(TEST_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Test modules run two at a time on 2 cores (pytest-xdist). OpenMP's threads (HistGradientBoosting) spin-wait while
# the other worker holds the second core: a tuning test took 110 s in the suite and 7 s alone. One OpenMP thread per
# process, in the workers and in every process they start (Airflow tasks, tuning slots), set before scikit-learn
# loads OpenMP (it reads the variable once; setting it inside a test is too late for an in-process fit).
if WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def ratchet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "ratchet"
    monkeypatch.setenv("RATCHET_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_HOME", "RATCHET_OPTUNA_STORAGE",
                 "RATCHET_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def dirs(ratchet_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty declaration and GE folders (RATCHET_DATASETS_DIR, RATCHET_EXPECTATIONS_DIR) for `datasets add`."""
    out = {"datasets": tmp_path / "datasets", "expectations": tmp_path / "expectations"}
    monkeypatch.setenv("RATCHET_DATASETS_DIR", str(out["datasets"]))
    monkeypatch.setenv("RATCHET_EXPECTATIONS_DIR", str(out["expectations"]))
    get_settings.cache_clear()
    return out


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RATCHET_HOME for a module whose tests build on each other (a champion, then challengers)."""
    home = tmp_path_factory.mktemp("ratchet")
    saved = {k: os.environ.get(k) for k in ("RATCHET_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_HOME")}
    os.environ["RATCHET_HOME"] = str(home)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_HOME"):
        os.environ.pop(name, None)
    get_settings.cache_clear()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
