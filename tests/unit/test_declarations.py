"""Data set declarations are files checked against the shipped schema: a bad one is refused naming the file, the
field, the value and what is allowed; the built-in data sets load from theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ml_tasks.constants import DEFAULT_PRIMARY_METRIC, TASK_METRICS
from ml_tasks.datasets import (
    CATEGORICAL_MISSING_POLICIES,
    NUMERIC_MISSING_POLICIES,
    OUTLIER_METHODS,
    OUTLIER_POLICIES,
    TASK_KINDS,
)
from ml_tasks.datasets.declarations import load_declaration, load_folder, schema
from ml_tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC = yaml.safe_load((ROOT / "datasets" / "synthetic.yaml").read_text())


def _write(folder: Path, document: dict, name: str | None = None) -> Path:
    path = folder / f"{name or document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_built_in_data_sets_are_declared_in_files_only():
    specs = load_folder(ROOT / "datasets")
    assert set(specs) == {"acs_employment", "synthetic"}
    assert specs["synthetic"].classes == (0, 1) and specs["synthetic"].positive_label == 1
    assert specs["acs_employment"].drop_duplicates is False
    assert specs["synthetic"].easy_cases[0] == ("strong positive signal", "x0 > 1.5 and x1 < -1.0", 1, 0.9)
    for module in ("__init__.py", "spec.py", "acs_employment.py"):
        source = (ROOT / "ml_tasks" / "datasets" / module).read_text()
        assert " = DatasetSpec(" not in source, f"a data set is declared in Python again ({module})"


def test_the_synthetic_generator_makes_the_declared_columns():
    from ml_tasks.datasets import synthetic

    spec = load_folder(ROOT / "datasets")["synthetic"]
    assert (spec.numeric_features, spec.categorical_features, spec.target) == (
        synthetic.NUMERIC_FEATURES, synthetic.CATEGORICAL_FEATURES, synthetic.TARGET)
    assert list(synthetic.generate(5).columns) == list(spec.columns)


def test_the_synthetic_rule_logit_is_the_rule_the_labels_follow():
    """bench/tuning.py scores the rule's own logit as the oracle: without label noise, the rows' labels follow
    sigmoid(2 * logit) decile by decile."""
    import numpy as np

    from ml_tasks.datasets import synthetic

    frame = synthetic.generate(200_000, seed=5)
    probability = 1 / (1 + np.exp(-2 * synthetic.rule_logit(frame)))
    deciles = np.digitize(probability, np.quantile(probability, np.linspace(0.1, 0.9, 9)))
    for decile in range(10):
        rows = deciles == decile
        assert abs(frame[synthetic.TARGET].to_numpy()[rows].mean() - probability[rows].mean()) < 0.01, decile


def test_the_schema_allows_exactly_what_the_code_does():
    properties = schema()["properties"]
    assert properties["task"]["enum"] == list(TASK_KINDS)
    assert set(properties["primary_metric"]["enum"]) == {m for ms in TASK_METRICS.values() for m in ms}
    cleaning = properties["cleaning"]["properties"]
    assert cleaning["numeric_missing"]["enum"] == list(NUMERIC_MISSING_POLICIES)
    assert cleaning["categorical_missing"]["enum"] == list(CATEGORICAL_MISSING_POLICIES)
    assert cleaning["outliers"]["enum"] == list(OUTLIER_POLICIES)
    assert cleaning["outlier_method"]["enum"] == list(OUTLIER_METHODS)
    assert set(DEFAULT_PRIMARY_METRIC) == set(TASK_KINDS)


def test_the_schemas_tuning_bounds_are_the_dag_params_own():
    from ml_tasks.config import RunConfig, TrainConfig, TuneConfig
    from ml_tasks.params import param_schema

    tuning = schema()["properties"]["tuning"]["properties"]
    sources = {"model_family": (TuneConfig, "family"), "tuning_trials": (TuneConfig, "trials"),
               "tuning_epochs": (TuneConfig, "epochs"), "tuning_sampler": (TuneConfig, "sampler"),
               "tuning_pruner": (TuneConfig, "pruner"), "tuning_workers": (TuneConfig, "workers"),
               "max_epochs": (TrainConfig, "max_epochs"), "cv_folds": (RunConfig, "cv_folds")}
    assert set(tuning) == set(sources)
    for name, (config, field) in sources.items():
        expected = param_schema(config, field)
        expected.pop("default")
        assert tuning[name] == expected, name


@pytest.mark.parametrize("change, field, allowed", [
    ({"task": "ranking"}, "task", "allowed: binary, multiclass, regression"),
    ({"cleaning": {"numeric_missing": "zero"}}, "cleaning.numeric_missing", "allowed: median, mean, drop_row, fail"),
    ({"colour": "blue"}, "(top level)", "allowed fields"),
    ({"name": "Bad-Name"}, "name", "matching"),
    ({"primary_metric": "rmse"}, "primary_metric", "a binary metric"),
    ({"slices": ["nope"]}, "slices", "a declared feature"),
    ({"gate": {"absolute": {"rmse": 1.0}}}, "gate.absolute.rmse", "a binary metric"),
    ({"classes": [0, 1, 2]}, "classes", "exactly 2"),
    ({"tuning": {"tuning_trials": 0}}, "tuning.tuning_trials", "minimum"),
    ({"tuning": {"tuning_sampler": "annealing"}}, "tuning.tuning_sampler", "allowed: tpe, random, grid"),
    ({"source": {"template": "ftp://host/{ds}"}}, "source.template", "file://, s3:// or hdfs://"),
    ({"features": {"numeric": ["x0", "label"], "categorical": []}}, "target", "cannot also be a feature"),
])
def test_a_bad_declaration_is_refused_naming_file_field_value_and_what_is_allowed(tmp_path, change, field, allowed):
    document = {**SYNTHETIC, **change}
    path = _write(tmp_path, document, name="synthetic")
    with pytest.raises(ConfigError) as refused:
        load_declaration(path)
    message = str(refused.value)
    assert str(path) in message and allowed in message, message
    if field != "(top level)" and field != "target" and field != "classes":
        assert f"field {field}" in message, message


def test_a_file_whose_stem_is_not_its_name_is_refused(tmp_path):
    path = _write(tmp_path, SYNTHETIC, name="other")
    with pytest.raises(ConfigError, match="must equal the file's stem 'other'"):
        load_declaration(path)


def test_unreadable_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntask: [binary\n")
    with pytest.raises(ConfigError, match=r"(?s)broken.yaml: not valid YAML.*line 2"):
        load_declaration(path)


def test_regression_and_multiclass_declarations_load(tmp_path):
    regression = {**SYNTHETIC, "name": "prices", "task": "regression", "classes": [], "primary_metric": "rmse",
                  "behaviour": {}, "gate": {"baseline_margin": 10.0, "absolute": {"rmse": 500.0}}}
    multiclass = {**SYNTHETIC, "name": "tiers", "task": "multiclass", "classes": ["Fair", "Good", "Premium"],
                  "primary_metric": "f1_macro", "behaviour": {}, "gate": {"absolute": {"f1_macro": 0.4}},
                  "excluded_columns": [{"column": "id", "reason": "unique per row"}]}
    _write(tmp_path, regression)
    _write(tmp_path, multiclass)
    specs = load_folder(tmp_path)
    assert specs["prices"].task == "regression" and specs["prices"].absolute_thresholds == {"rmse": 500.0}
    assert specs["tiers"].classes == ("Fair", "Good", "Premium") and specs["tiers"].excluded_columns == {"id": "unique per row"}
    with pytest.raises(ConfigError, match="no positive class"):
        _ = specs["tiers"].positive_label


def test_easy_cases_must_expect_a_declared_class(tmp_path):
    document = {**SYNTHETIC, "behaviour": {"easy_cases": [
        {"name": "odd", "query": "x0 > 1", "expected": "yes", "least_accuracy": 0.9}]}}
    with pytest.raises(ConfigError, match=r"behaviour.easy_cases\[odd\].expected"):
        load_declaration(_write(tmp_path, document))


def test_thresholds_and_tuning_defaults_reach_the_run_config(tmp_path, monkeypatch):
    from ml_tasks import settings
    from ml_tasks.config import RunConfig

    regression = {**SYNTHETIC, "name": "prices", "task": "regression", "classes": [], "primary_metric": "rmse",
                  "behaviour": {}, "gate": {"absolute": {"rmse": 500.0}, "change": {"rmse": 1.0}},
                  "tuning": {"tuning_trials": 7, "tuning_sampler": "random"}}
    _write(tmp_path, regression)
    monkeypatch.setenv("RATCHET_DATASETS_DIR", str(tmp_path))
    settings.get_settings.cache_clear()
    try:
        config = RunConfig.from_params({"dataset": "prices", "absolute_thresholds": None})
        assert config.gate.absolute == {"rmse": 500.0} and config.gate.change == {"rmse": 1.0}
        assert config.tune.trials == 7 and config.tune.sampler == "random"
        assert RunConfig.from_params({"dataset": "prices", "tuning_trials": 3}).tune.trials == 3  # a Param wins
        with pytest.raises(ConfigError, match="roc_auc, which prices \\(regression\\) does not measure"):
            RunConfig.from_params({"dataset": "prices", "absolute_thresholds": {"roc_auc": 0.7}})
    finally:
        settings.get_settings.cache_clear()
