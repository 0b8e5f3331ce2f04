"""The house style is enforced by the suite: ruff (with import sorting, AIR3, banned imports) and mypy."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- the import rules of ARCHITECTURE.md

PACKAGE = ROOT / "ml_tasks"
ORCHESTRATION = ("ml_tasks.pipeline", "ml_tasks.ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every ml_tasks module → the ml_tasks modules it imports when it runs (function-level imports included)."""
    import ast

    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _runtime_nodes(tree: Any) -> Iterator[Any]:
    """Every node of a module except what sits under `if TYPE_CHECKING:` (annotations only, never imported)."""
    import ast

    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_ml_tasks_has_no_import_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_stages_never_import_the_orchestration_glue():
    """`ml_tasks.pipeline` (what the DAG tasks call) and `ml_tasks.ops` (CLI, demo, profile) sit on top of the stages."""
    offenders = [f"{module} imports {target}"
                 for module, targets in _import_graph().items() if not any(_is_under(module, o) for o in ORCHESTRATION)
                 for target in sorted(targets) if any(_is_under(target, o) for o in ORCHESTRATION)]
    assert offenders == []
