"""Every "module:function" string target and `python -m` module named in the source resolves.

Such strings (targets of `run_isolated`, the uvicorn app factory, trainer processes started with `python -m`)
are invisible to imports, ruff and mypy: a moved module or a renamed function breaks them only when that stage
runs. This test finds them the way a reader would, by their shape in the source, and resolves each.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("ml_tasks", "dags", "plugins", "bench", "tests")
TARGET = re.compile(r"[\"'](ml_tasks\.[a-z_.]+):([A-Za-z_]+)[\"']")
MODULE_RUN = re.compile(r"[\"']-m[\"'],\s*[\"'](ml_tasks(?:\.[a-z_]+)*)[\"']")


def _sources() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py") if p.resolve() != Path(__file__).resolve())


def _found(pattern: re.Pattern[str]) -> dict[tuple[str, ...], list[str]]:
    """Each match's groups, with the places (path:line) that name it."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                found.setdefault(match.groups(), []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


TARGETS = _found(TARGET)
MODULE_RUNS = _found(MODULE_RUN)


def test_the_scan_finds_the_targets_we_know_of() -> None:
    # Not vacuous: the isolated training stage and the multi-worker trainer are among what it found.
    assert ("ml_tasks.training.trainer", "train_in_process") in TARGETS
    assert ("ml_tasks.training.multiworker",) in MODULE_RUNS


@pytest.mark.parametrize("module, function", sorted(TARGETS), ids=lambda value: str(value))
def test_string_target_resolves_to_a_callable(module: str, function: str) -> None:
    where = ", ".join(TARGETS[(module, function)])
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module}:{function} (named at {where}): module does not import: {exc}")
    assert callable(getattr(imported, function, None)), f"{module}:{function} (named at {where}): no such callable"


@pytest.mark.parametrize("module", sorted(m for (m,) in MODULE_RUNS))
def test_python_dash_m_module_exists_and_runs_as_a_script(module: str) -> None:
    where = ", ".join(MODULE_RUNS[(module,)])
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"python -m {module} (named at {where}): no such module"
    assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), \
        f"python -m {module} (named at {where}): the module has no __main__ block, so running it does nothing"
