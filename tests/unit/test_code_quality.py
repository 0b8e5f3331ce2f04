"""The house style is enforced by the suite: ruff (with import sorting, AIR3, banned imports) and mypy."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_passes():
    done = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]


@pytest.mark.slow
def test_mypy_passes_on_ml_tasks():
    done = subprocess.run([str(BIN / "mypy"), "ml_tasks"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]


def test_ml_tasks_never_imports_airflow():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ml_tasks").rglob("*.py")
                 if any(line.lstrip().startswith(("import airflow", "from airflow")) for line in p.read_text().splitlines())]
    assert offenders == []
