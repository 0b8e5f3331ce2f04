"""Model families: declared spaces, isolated training of every family, the pyfunc scoring raw rows."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.config import ConfigError, RunContext, TrainConfig
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.training.families import (
    AUTO,
    DEFAULT_PARAMS,
    FAMILIES,
    MODEL_FAMILIES,
    SEARCH_SPACES,
    SKLEARN_FAMILIES,
    check_family,
    coerce_params,
    families_for,
    grid_size,
    grid_space,
)
from ml_tasks.training.sklearn_models import SKLEARN_MODEL_FILE
from ml_tasks.training.trainer import OVERFIT_GAP, diagnose_fit

SMALL_PARAMS = {
    "keras_mlp": {"n_layers": 1, "units": 32, "dropout": 0.1, "l2": 1e-5, "learning_rate": 1e-2, "batch_size": 256},
    "logistic_regression": {"C": 1.0, "class_weight": "none"},
    "random_forest": {"n_estimators": 30, "max_depth": 6, "min_samples_leaf": 4, "max_features": "sqrt"},
    "hist_gradient_boosting": {"learning_rate": 0.1, "max_iter": 60, "max_leaf_nodes": 15, "min_samples_leaf": 20,
                               "l2_regularization": 1e-6},
}


@pytest.fixture(autouse=True)
def one_openmp_thread(monkeypatch):
    """HGB's OpenMP threads spin-wait badly on tiny data when the 2 cores are shared: one thread per process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def prepare_synthetic(home: Path, rows: int = 2000, run_key: str = "t1", label_noise: float = 0.0) -> tuple[RunContext, str]:
    """A prepared synthetic drop and its parent MLflow run, under the test's RATCHET_HOME."""
    from ml_tasks import tracking
    from ml_tasks.data.preparation import prepare

    drop = home / "drops" / run_key
    drop.mkdir(parents=True)
    synthetic.generate(rows, seed=1, label_noise=label_noise).to_parquet(drop / "part-000.parquet", index=False)
    ctx = RunContext("synthetic", run_key)
    prepare(ctx, drop.as_uri())
    return ctx, tracking.ensure_parent_run(ctx)


def test_every_family_declares_a_space_defaults_and_a_grid_inside_it():
    assert set(SEARCH_SPACES) == set(FAMILIES) == set(DEFAULT_PARAMS)
    assert set(MODEL_FAMILIES) == {*FAMILIES, AUTO}
    for family, space in SEARCH_SPACES.items():
        assert set(DEFAULT_PARAMS[family]) == set(space), family
        for name, dim in space.items():
            assert dim.contains(DEFAULT_PARAMS[family][name]), (family, name)
            assert dim.grid and all(dim.contains(v) for v in dim.grid), (family, name)
        assert grid_size(family) == len(list(itertools.product(*grid_space(family).values())))


def test_params_read_back_as_text_regain_their_types():
    for family in FAMILIES:
        text = {k: str(v) for k, v in DEFAULT_PARAMS[family].items()}
        assert coerce_params(family, text) == DEFAULT_PARAMS[family]
    assert coerce_params("logistic_regression", {"C": "1e9", "class_weight": "none"}) is None  # off-space
    assert coerce_params("logistic_regression", {"C": "1.0"}) is None  # missing


def test_unknown_family_is_refused():
    with pytest.raises(ConfigError, match="model family"):
        check_family("xgboost")
    with pytest.raises(ConfigError):
        TrainConfig(family="svm")


def test_fit_diagnosis_names_each_case_from_the_train_and_validation_auc():
    assert diagnose_fit(0.99, 0.80).startswith("overfitting: train AUC 0.990 exceeds validation AUC 0.800 by more than")
    assert diagnose_fit(0.55, 0.52).startswith("underfitting: train AUC 0.550 and validation AUC 0.520 both below 0.6")
    assert diagnose_fit(0.91, 0.89) == "good fit: train AUC 0.910, validation AUC 0.890"
    assert diagnose_fit(0.90, 0.90 - OVERFIT_GAP / 2).startswith("good fit")  # the gap must exceed OVERFIT_GAP
    assert diagnose_fit(0.59, 0.70).startswith("good fit")  # underfitting needs both below the floor


def test_a_forest_that_memorises_noisy_labels_is_diagnosed_as_overfitting(ratchet_home):
    from ml_tasks.training.trainer import train

    ctx, run_id = prepare_synthetic(ratchet_home, run_key="noisy", label_noise=0.3)
    deep = {"n_estimators": 30, "max_depth": 24, "min_samples_leaf": 1, "max_features": "1.0"}
    result = train(ctx, TrainConfig(family="random_forest"), deep, run_id)
    assert result.train_auc - result.val_auc > OVERFIT_GAP, (result.train_auc, result.val_auc)
    assert result.fit_diagnosis.startswith("overfitting")


def train_and_score(home: Path, family: str) -> tuple[RunContext, str, Any]:
    """Train `family` in its own process, score raw rows through its logged pyfunc, check the common contract."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.training.trainer import train

    ctx, run_id = prepare_synthetic(home)
    result = train(ctx, TrainConfig(max_epochs=3, family=family), SMALL_PARAMS[family], run_id)
    assert result.family == family and not result.reused and result.epochs_run >= 1
    assert 0.65 < result.val_auc <= 1 and 0.65 < result.train_auc <= 1
    # the recorded diagnosis is the one its own train and validation AUCs call for
    assert result.fit_diagnosis == diagnose_fit(result.train_auc, result.val_auc)
    tracking.configure()
    scores = mlflow.pyfunc.load_model(result.model_uri).predict(
        synthetic.generate(30, seed=9).drop(columns=[SYNTHETIC.target]))
    assert list(scores.columns) == ["prediction", "probability", "probability_0", "probability_1"] and len(scores) == 30
    assert scores["probability"].between(0, 1).all() and set(scores["prediction"]) <= {0, 1}
    assert tracking.client().get_run(run_id).data.params["train.family"] == family
    return ctx, run_id, result


@pytest.mark.parametrize("family", [f for f in SKLEARN_FAMILIES if f in families_for("binary")])
def test_sklearn_family_trains_in_its_process_and_its_pyfunc_scores_raw_rows(ratchet_home, family):
    ctx, run_id, first = train_and_score(ratchet_home, family)
    assert first.model_path.endswith(SKLEARN_MODEL_FILE)
    if family == "logistic_regression":  # a retry killed after the fit reuses the finished model file
        from ml_tasks.training.trainer import train

        model_file = ctx.model_dir / SKLEARN_MODEL_FILE
        fitted_at = model_file.stat().st_mtime_ns
        (ctx.model_dir / "train_result.json").unlink()
        second = train(ctx, TrainConfig(max_epochs=3, family=family), SMALL_PARAMS[family], run_id)
        assert model_file.stat().st_mtime_ns == fitted_at and second.val_auc == first.val_auc


def test_skops_loader_refuses_foreign_types(tmp_path):
    import skops.io

    from ml_tasks.errors import RatchetError
    from ml_tasks.training.sklearn_models import load_sklearn

    path = tmp_path / "odd.skops"
    skops.io.dump({"f": Path("x")}, path)
    with pytest.raises(RatchetError, match="outside scikit-learn"):
        load_sklearn(path)
