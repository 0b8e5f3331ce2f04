"""One declaration per environment variable (ml_tasks/environment_variables.py), read lazily, documented in the README."""

import re
from pathlib import Path

import pytest

from ml_tasks import environment_variables as env
from ml_tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[")


def test_readme_table_is_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- environment-variables:start -->\n", 1)[1].split("\n<!-- environment-variables:end -->", 1)[0]
    assert block == env.markdown_table(), "regenerate with: uv run python -m ml_tasks.environment_variables"


def test_each_variable_is_declared_once():
    names = [variable.name for variable in env.DECLARED]
    assert len(names) == len(set(names))


def test_no_module_reads_the_environment_directly():
    """Reads go through the declarations; os.environ is only written (child processes) or copied whole."""
    offenders = []
    for path in [*(ROOT / "ml_tasks").rglob("*.py"), *(ROOT / "dags").glob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        if path.name == "environment_variables.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if READ.search(line) and "# env: pass-through" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_values_are_read_when_asked_and_converted(monkeypatch):
    monkeypatch.delenv("RATCHET_SERVE_MAX_ROWS", raising=False)
    assert env.RATCHET_SERVE_MAX_ROWS.get() == 10_000
    monkeypatch.setenv("RATCHET_SERVE_MAX_ROWS", "25")
    assert env.RATCHET_SERVE_MAX_ROWS.get() == 25
    monkeypatch.setenv("RATCHET_SERVE_MAX_ROWS", " ")
    assert env.RATCHET_SERVE_MAX_ROWS.get() == 10_000  # empty counts as unset
    monkeypatch.setenv("RATCHET_PRELOAD", "off")
    assert env.RATCHET_PRELOAD.get() is False


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("RATCHET_GPU_SLOTS", "two")
    with pytest.raises(ConfigError, match="RATCHET_GPU_SLOTS='two' is not a valid integer"):
        env.RATCHET_GPU_SLOTS.get()
