"""Data set declarations: one committed YAML file per data set, checked against a JSON schema we ship.

A file is refused with its path, the field, the value and what is allowed:
first by the schema (`declaration.schema.json`, which editors can use too),
then by the checks a schema cannot express (a slice that is not a feature, a
metric of another task kind). The schema's tuning bounds are the DAG Params'
own (`tests/unit/test_declarations.py` keeps them equal).
Reading is cheap (PyYAML's C loader, jsonschema, no pandas), so DAG files read
the declarations at parse time; the result is cached per folder and refreshed
when a file changes.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    from ml_tasks.datasets.spec import DatasetSpec

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).with_name("declaration.schema.json")
DECLARATION_SUFFIX = ".yaml"
PLAIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    with open(SCHEMA_FILE) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def check_name(name: str) -> str:
    if not isinstance(name, str) or not PLAIN_NAME.match(name):
        raise ConfigError(f"data set name {name!r} is not a plain name: lower-case letters, digits and underscores, "
                          "starting with a letter, at most 63 characters")
    return name


def _yaml_load(text: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_errors(document: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    messages = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = _field(error.absolute_path)
        allowed = ""
        if error.validator == "enum":
            allowed = f"; allowed: {', '.join(map(str, error.validator_value))}"
        elif error.validator == "additionalProperties" and isinstance(error.schema, dict):
            known = sorted(error.schema.get("properties", {}))
            allowed = f"; allowed fields: {', '.join(known)}" if known else ""
        elif error.validator == "pattern":
            allowed = f"; allowed: values matching {error.validator_value}"
        elif error.validator == "required":
            allowed = ""
        value = "" if error.validator in ("required", "additionalProperties") else f" (value {error.instance!r})"
        messages.append(f"field {where}{value}: {error.message}{allowed}")
    return messages


def spec_from_document(document: dict[str, Any], where: str) -> DatasetSpec:
    """A DatasetSpec from a parsed declaration, refusing what the schema or the cross-field checks refuse."""
    from ml_tasks.constants import DEFAULT_PRIMARY_METRIC, ROBUSTNESS_MEASURES, TASK_METRICS
    from ml_tasks.datasets.spec import REGRESSION, DatasetSpec

    errors = _schema_errors(document)
    if errors:
        raise ConfigError(f"{where}: invalid declaration:\n  " + "\n  ".join(errors))
    task = document["task"]
    features = document["features"]
    cleaning = document.get("cleaning", {})
    behaviour = document.get("behaviour", {})
    gate = document.get("gate", {})
    source = document.get("source", {})
    easy = behaviour.get("easy_cases", [])
    declared = [*features["numeric"], *features["categorical"]]
    problems: list[str] = []

    def problem(field: str, value: Any, allowed: str) -> None:
        problems.append(f"field {field} (value {value!r}): {allowed}")

    if len(set(declared)) != len(declared):
        problem("features", declared, "a column is either numeric or categorical, not both")
    if document["target"] in declared:
        problem("target", document["target"], "the target cannot also be a feature")
    excluded = {e["column"]: e["reason"] for e in document.get("excluded_columns", [])}
    for column in excluded:
        if column in declared or column == document["target"]:
            problem("excluded_columns", column, "an excluded column is neither a feature nor the target")
    for field_name, values in (("slices", document.get("slices", [])),
                               ("behaviour.invariant_features", behaviour.get("invariant_features", []))):
        for value in values:
            if value not in declared:
                problem(field_name, value, f"a declared feature ({', '.join(declared)})")
    metrics = TASK_METRICS[task]
    primary = document.get("primary_metric", DEFAULT_PRIMARY_METRIC[task])
    if primary not in metrics:
        problem("primary_metric", primary, f"a {task} metric: {', '.join(metrics)}")
    for kind in ("absolute", "change", "slice"):
        for metric in gate.get(kind, {}):
            if metric not in metrics:
                problem(f"gate.{kind}.{metric}", metric, f"a {task} metric: {', '.join(metrics)}")
    for measure in gate.get("robustness", {}):
        if measure not in ROBUSTNESS_MEASURES:
            problem(f"gate.robustness.{measure}", measure, f"one of {', '.join(ROBUSTNESS_MEASURES)}")
    if task == REGRESSION and easy:
        problem("behaviour.easy_cases", [e["name"] for e in easy], "easy cases expect a class: classification only")
    classes = tuple(document.get("classes", ()))
    for case in easy:
        if str(case["expected"]) not in map(str, classes):
            problem(f"behaviour.easy_cases[{case['name']}].expected", case["expected"],
                    f"one of the declared classes {list(classes)!r}")
    template = source.get("template", "")
    if template and not re.match(r"^(file|s3|hdfs)://", template):
        problem("source.template", template, "a file://, s3:// or hdfs:// URI")
    if problems:
        raise ConfigError(f"{where}: invalid declaration:\n  " + "\n  ".join(problems))
    try:
        spec = DatasetSpec(
            name=document["name"], description=document["description"], target=document["target"],
            numeric_features=tuple(features["numeric"]), categorical_features=tuple(features["categorical"]),
            suite=document["suite"], registered_model=document["registered_model"], primary_metric=primary,
            task=task, classes=classes, slices=tuple(document.get("slices", ())),
            **_cleaning(cleaning),
            invariant_features=tuple(behaviour.get("invariant_features", ())),
            easy_cases=tuple((e["name"], e["query"], e["expected"], float(e["least_accuracy"])) for e in easy),
            required_behaviour=tuple(e["name"] for e in easy if e.get("required")),
            baseline_margin=float(gate.get("baseline_margin", 0.0)),
            excluded_columns=excluded, source_template=template, schedule=source.get("schedule"),
            absolute_thresholds=dict(gate.get("absolute", {})), change_thresholds=dict(gate.get("change", {})),
            slice_thresholds=dict(gate.get("slice", {})), robustness_thresholds=dict(gate.get("robustness", {})),
            tuning=dict(document.get("tuning", {})),
            attribution_gate_min_ndcg=document.get("explanation", {}).get("gate_min_ndcg"),
            attribution_monitoring_min_ndcg=document.get("explanation", {}).get("monitoring_min_ndcg"),
            **_engine(document.get("engine", {})),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: invalid declaration: {exc}") from None
    return spec


def _engine(engine: dict[str, Any]) -> dict[str, Any]:
    """The `engine` section as DatasetSpec's keyword arguments."""
    out: dict[str, Any] = {}
    if "name" in engine:
        out["engine"] = engine["name"]
    if "spark_above_mb" in engine:
        out["spark_above_mb"] = int(engine["spark_above_mb"])
    return out


def _cleaning(cleaning: dict[str, Any]) -> dict[str, Any]:
    """The cleaning policies as DatasetSpec's keyword arguments (YAML lists become tuples)."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in cleaning.items()}


def load_declaration(path: Path) -> DatasetSpec:
    """One declaration file; its name must be its file's stem."""
    where = str(path)
    try:
        document = _yaml_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the declaration: {exc}") from None
    except Exception as exc:  # yaml.YAMLError: the parser names the line and column
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: a declaration is a YAML mapping, not {type(document).__name__}")
    spec = spec_from_document(document, where)
    if spec.name != path.stem:
        raise ConfigError(f"{where}: field name (value {spec.name!r}): must equal the file's stem {path.stem!r}")
    return spec


def declaration_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{DECLARATION_SUFFIX}"))


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in declaration_files(folder):
        stat = path.stat()
        out.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@lru_cache(maxsize=8)
def _load_folder(folder: str, signature: tuple[tuple[str, int, int], ...]) -> dict[str, DatasetSpec]:
    specs: dict[str, DatasetSpec] = {}
    for path in declaration_files(Path(folder)):
        spec = load_declaration(path)
        specs[spec.name] = spec
    return specs


def load_folder(folder: Path) -> dict[str, DatasetSpec]:
    """Every declaration in `folder`, by name (cached until a file there changes)."""
    return _load_folder(str(folder), _signature(folder))
