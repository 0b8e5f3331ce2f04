"""Every TaskFlow task of every DAG calls the `ml_tasks` function named as its task id.

So `grep -rn "def <task id>" ml_tasks` finds what a task does. Read from the DAG
files' syntax (imports resolved, module-level helpers of the DAG file followed),
then each name is imported and checked to be a function of `ml_tasks`; the
loaded DagBag confirms that no TaskFlow task escaped the check.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
# The files that declare TaskFlow tasks: the DAG files, and the retraining DAGs' factory that nightly_retrain and the
# generated retrain__<name> DAGs share (those two DAG files only call it).
FACTORY = ROOT / "plugins" / "ratchet_airflow" / "retrain.py"
TASK_FILES = [*(p for p in DAG_FILES if p.name not in ("nightly_retrain.py", "retrain_datasets.py")), FACTORY]


@dataclass
class TaskFunction:
    name: str
    task_id: str
    node: ast.FunctionDef
    references: set[str] = field(default_factory=set)  # dotted names of ml_tasks objects it refers to


def _imports(body: list[ast.stmt]) -> dict[str, str]:
    """Local name -> dotted path, for the `ml_tasks` imports directly in `body` (not in nested functions)."""
    found: dict[str, str] = {}
    for node in body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ml_tasks":
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "ml_tasks":
                    continue
                if alias.asname:  # import ml_tasks.x as y
                    found[alias.asname] = alias.name
                else:  # import ml_tasks.x binds ml_tasks
                    found["ml_tasks"] = "ml_tasks"
    return found


def _decorated_task_id(function: ast.FunctionDef) -> str | None:
    """The task id of a TaskFlow function (`@task`, `@task(...)`, `@task.branch`, ...), or None."""
    for decorator in function.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        base = target.value if isinstance(target, ast.Attribute) else target
        if isinstance(base, ast.Name) and base.id == "task":
            for keyword in call.keywords if call else []:
                if keyword.arg == "task_id" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
            return function.name
    return None


def _dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _references(function: ast.FunctionDef, module_imports: dict[str, str], helpers: dict[str, ast.FunctionDef],
                seen: set[str]) -> set[str]:
    """Dotted ml_tasks names used in `function`, and in the module-level helpers of the DAG file it calls."""
    names = {**module_imports, **_imports(function.body)}
    found: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name | ast.Attribute) and (dotted := _dotted(node, names)):
            found.add(dotted)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers
                and node.func.id not in seen):
            seen.add(node.func.id)
            found |= _references(helpers[node.func.id], module_imports, helpers, seen)
    return found


def task_functions(path: Path) -> list[TaskFunction]:
    tree = ast.parse(path.read_text(), filename=str(path))
    module_imports = _imports(tree.body)
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    tasks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (task_id := _decorated_task_id(node)) is not None:
            task = TaskFunction(node.name, task_id, node)
            task.references = _references(node, module_imports, helpers, set())
            tasks.append(task)
    return tasks


def _resolve(dotted: str) -> Any:
    """What `dotted` names at run time: attributes first (as the task's own code reads them), submodules imported."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for depth, part in enumerate(parts[1:], start=2):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[:depth]))
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("path", TASK_FILES, ids=[p.stem for p in TASK_FILES])
def test_every_task_calls_the_ml_tasks_function_named_as_its_task_id(path: Path):
    tasks = task_functions(path)
    assert tasks, f"{path.name} declares no TaskFlow task"
    for task in tasks:
        candidates = sorted(r for r in task.references if r.rsplit(".", 1)[-1] == task.task_id)
        assert candidates, (f"{path.name}: task {task.task_id!r} ({task.name}) uses no ml_tasks function named "
                            f"{task.task_id!r}; it uses {sorted(task.references)}")
        for dotted in candidates:
            function = _resolve(dotted)
            assert callable(function) and function.__name__ == task.task_id, dotted
            assert function.__module__.split(".")[0] == "ml_tasks", f"{dotted} is defined in {function.__module__}"


def test_the_check_sees_every_taskflow_task_of_the_dagbag():
    """Each @task of the loaded DAGs is one the check above read, with the same task id."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.decorators.python import _PythonDecoratedOperator

    checked = {(str(path), t.name, t.task_id) for path in TASK_FILES for t in task_functions(path)}
    dagbag = DagBag(dag_folder=str(ROOT / "dags"))
    assert dagbag.import_errors == {}

    def taskflow(op: Any) -> bool:  # mapped tasks too (`.partial(...).expand(...)`)
        return issubclass(getattr(op, "operator_class", type(op)), _PythonDecoratedOperator)

    loaded = {(str(Path(op.python_callable.__code__.co_filename).resolve()), op.python_callable.__name__,
               op.task_id.rsplit(".", 1)[-1])
              for dag in dagbag.dags.values() for op in dag.tasks if taskflow(op)}
    assert {"tune_slot", "train_worker", "review_route"} <= {task_id for _, _, task_id in loaded}
    assert loaded <= checked, sorted(loaded - checked)


def test_the_check_refuses_a_task_that_calls_another_function(tmp_path: Path):
    dag = tmp_path / "mismatch.py"
    dag.write_text("from airflow.sdk import task\nfrom ml_tasks import pipeline\n\n\n"
                   "@task\ndef drift():\n    return pipeline.prepare()\n")
    (task,) = task_functions(dag)
    assert task.task_id == "drift" and "ml_tasks.pipeline.prepare" in task.references
    assert not [r for r in task.references if r.endswith(".drift")]
