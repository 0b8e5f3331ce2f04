"""Training per task kind without Keras: the primary-metric objective and its direction, scikit-learn families
for every task, the auto family searching several families in one study, cross-validation folds in tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_tasks.errors import ConfigError
from ml_tasks.training.families import (
    AUTO,
    FAMILY_PARAM,
    KERAS_MLP,
    SEARCH_SPACES,
    families_for,
    grid_points,
    grid_size,
    is_sklearn,
    plain_params,
    split_family,
    suggest,
)
from ml_tasks.training.scoring import Objective
from tests import task_problems

FAST = {"random_forest": {"n_estimators": 40, "max_depth": 8, "min_samples_leaf": 2, "max_features": "1.0"},
        "hist_gradient_boosting": {"max_iter": 60}}


@pytest.fixture(autouse=True)
def one_openmp_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_objective_direction_follows_the_metric():
    assert Objective("regression", "rmse", 0).direction == "minimize"
    assert Objective("regression", "r2", 0).direction == "maximize"
    assert Objective("multiclass", "f1_macro", 3).direction == "maximize"
    assert Objective("multiclass", "log_loss", 3).direction == "minimize"
    assert Objective().direction == "maximize" and Objective().metric == "roc_auc"
    rmse = Objective("regression", "rmse", 0)
    assert rmse.best([3.0, 1.0, 2.0]) == 1.0 and rmse.best_index([3.0, 1.0, 2.0]) == 1 and rmse.better(1.0, 2.0)
    with pytest.raises(ConfigError):
        Objective("regression", "roc_auc", 0)


def test_objective_of_a_declaration_is_its_primary_metric_for_its_task():
    from types import SimpleNamespace

    assert Objective.for_spec(SimpleNamespace(task="regression", classes=(), primary_metric="rmse")) == \
        Objective("regression", "rmse", 0)
    # a binary-only default left on a multiclass declaration falls back to the task's default
    assert Objective.for_spec(SimpleNamespace(task="multiclass", classes=("a", "b", "c"), primary_metric="pr_auc")) == \
        Objective("multiclass", "f1_macro", 3)


def test_families_per_task_and_the_auto_grid_is_the_union_of_their_grids():
    assert "ridge" in families_for("regression") and "logistic_regression" not in families_for("regression")
    assert "logistic_regression" in families_for("multiclass") and "ridge" not in families_for("binary")
    assert grid_size(AUTO, "regression") == sum(grid_size(f) for f in families_for("regression"))
    points = grid_points(AUTO, "regression")
    assert len(points) == grid_size(AUTO, "regression")
    for point in points:  # each grid point names its family and only that family's parameters
        family = point[FAMILY_PARAM]
        assert {k for k in point if k != FAMILY_PARAM} == {f"{family}__{name}" for name in SEARCH_SPACES[family]}
    assert split_family(AUTO, {FAMILY_PARAM: "ridge", "alpha": 0.1}) == ("ridge", {"alpha": 0.1})
    with pytest.raises(ConfigError, match="names no family"):
        split_family(AUTO, {"alpha": 0.1})
    from ml_tasks.training.sklearn_models import build_sklearn

    with pytest.raises(ConfigError, match="cannot learn a regression target"):
        build_sklearn("logistic_regression", {}, task="regression")


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_every_sklearn_family_learns_each_task_and_beats_the_trivial_baseline(task):
    from ml_tasks.training.sklearn_models import fit_sklearn

    if task == "multiclass":
        x, y = task_problems.multiclass()
        objective = Objective("multiclass", "f1_macro", 3)
        majority = np.bincount(y[:630]).argmax()
        baseline = objective.score(y[630:], np.eye(3)[np.full(len(y) - 630, majority)])
    else:
        x, y = task_problems.regression()
        objective = Objective("regression", "rmse", 0)
        baseline = objective.score(y[630:], np.full(len(y) - 630, y[:630].mean()))
    for family in [f for f in families_for(task) if is_sklearn(f)]:
        model, fit = fit_sklearn(family, FAST.get(family, {}), *task_problems.split(x, y), objective=objective)
        assert fit.metric == objective.metric
        assert objective.better(fit.val_auc, baseline), (family, fit.val_auc, baseline)
        assert fit.val_auc == pytest.approx(objective.score(y[630:], objective.output(model, x[630:])))
        if task == "multiclass":
            assert list(model.classes_) == [0, 1, 2] and model.predict_proba(x[:3]).shape == (3, 3)
        else:  # original units, not standardised ones
            assert abs(float(np.mean(model.predict(x))) - float(np.mean(y))) < 0.2 * float(np.std(y))
        if family == "hist_gradient_boosting" and task == "regression":  # early stopping on RMSE, a positive curve
            assert min(fit.history["val_auc"]) > 0 and fit.best_epoch == int(np.argmin(fit.history["val_auc"]))


def test_a_regression_trial_reports_rmse_and_returns_its_lowest():
    from ml_tasks.training.trials import run_trial

    x, y = task_problems.regression()
    seen: list[float] = []
    best = run_trial("random_forest", FAST["random_forest"], task_problems.split(x, y), 4, 0,
                     lambda step, value, last: seen.append(value), objective=Objective("regression", "rmse", 0))
    assert len(seen) == 4 and best == min(seen) and best < float(np.std(y))


def test_a_study_of_a_lower_is_better_metric_minimises(ratchet_home):
    from ml_tasks.config import TuneConfig
    from ml_tasks.training.tuning import _best, load_study

    study = load_study("rmse-study", TuneConfig(family="ridge"), objective=Objective("regression", "rmse", 0))
    assert study.direction.name == "MINIMIZE"
    for value in (3.0, 1.0, 2.0):
        study.enqueue_trial({"alpha": 1.0})
        study.optimize(lambda trial, v=value: (trial.suggest_float("alpha", 1e-4, 1e2, log=True), v)[1], n_trials=1)
    assert _best(study)[1] == 1.0


def test_auto_searches_the_tasks_families_in_one_study_with_each_trials_own_parameters():
    import optuna

    from ml_tasks.training.trials import run_trial

    x, y = task_problems.regression(rows=500)
    data = task_problems.split(x, y)
    objective = Objective("regression", "rmse", 0)
    candidates = [f for f in families_for("regression") if f != KERAS_MLP]  # Keras is covered by the model tests

    def trial_objective(trial: optuna.Trial) -> float:
        params = suggest(trial, AUTO, "regression")
        family = params.pop(FAMILY_PARAM)
        if family == KERAS_MLP:
            raise optuna.TrialPruned("keras is not trained in this unit test")
        small = {**params, **({"n_estimators": 30} if family == "random_forest" else {}),
                 **({"max_iter": 40} if family == "hist_gradient_boosting" else {})}
        return run_trial(family, small, data, 2, 0, lambda *_: None, objective=objective)

    study = optuna.create_study(direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=3))
    for family in candidates:  # each family at least once, as a warm start or a grid would enqueue it
        study.enqueue_trial({FAMILY_PARAM: family})
    study.optimize(trial_objective, n_trials=8)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert {t.params[FAMILY_PARAM] for t in complete} == set(candidates)
    for trial in study.trials:  # define-by-run: a trial holds its own family's parameters only
        family = trial.params[FAMILY_PARAM]
        assert all(k == FAMILY_PARAM or k.startswith(f"{family}__") for k in trial.params), trial.params
    best = plain_params(study.best_trial.params)
    assert best[FAMILY_PARAM] in candidates and set(best) == {FAMILY_PARAM, *SEARCH_SPACES[best[FAMILY_PARAM]]}
    # the ridge family wins on this nearly linear target or a tree family beats it: either way the best is
    # the lowest RMSE of the study
    assert study.best_value == min(t.value for t in complete)


def test_cv_folds_are_read_and_a_sklearn_trial_scores_their_mean(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml_tasks.data.preparation import AUGMENTED_COLUMN, FOLD_COLUMN, FOLDS_FILE
    from ml_tasks.training.trials import run_trial
    from ml_tasks.training.tuning import load_folds

    x, y = task_problems.multiclass(rows=600)
    fold = np.arange(600) % 3
    augmented = np.zeros(600, dtype=bool)
    augmented[::10] = True  # these rows train but are never held out
    pq.write_table(pa.table({FOLD_COLUMN: fold, AUGMENTED_COLUMN: augmented}), tmp_path / FOLDS_FILE)
    assert load_folds(tmp_path / "nowhere") is None
    folds = load_folds(tmp_path)
    assert folds is not None and len(folds) == 3
    for k, (train_rows, held_out) in enumerate(folds):
        assert set(held_out).isdisjoint(train_rows) and not augmented[held_out].any()
        assert (fold[held_out] == k).all() and (fold[train_rows] != k).all()
    rows = np.array([5, 3, 0, 10, 1, 2])  # a subsample keeps the folds of the rows it kept, in its order
    sub = load_folds(tmp_path, rows)
    assert sub is not None and [list(h) for _, h in sub] == [[1], [4], [0, 5]]  # rows 0 and 10 are augmented

    objective = Objective("multiclass", "accuracy", 3)
    reports: list[tuple[int, float, bool]] = []
    score = run_trial("logistic_regression", {}, (x, y, x[:0], y[:0]), 5, 0,
                      lambda *r: reports.append(r), objective=objective, folds=folds)
    per_fold = []
    from ml_tasks.training.sklearn_models import build_sklearn

    for train_rows, held_out in folds:
        model = build_sklearn("logistic_regression", {}, 0, "multiclass").fit(x[train_rows], y[train_rows])
        per_fold.append(objective.score(y[held_out], model.predict_proba(x[held_out])))
    assert [r[0] for r in reports] == [0, 1, 2] and [r[2] for r in reports] == [False, False, True]
    assert score == pytest.approx(np.mean(per_fold)) and reports[-1][1] == pytest.approx(np.mean(per_fold))


def test_fit_diagnosis_of_a_lower_is_better_metric():
    from ml_tasks.training.trainer import diagnose_fit

    assert diagnose_fit(10.0, 20.0, metric="rmse").startswith("overfitting: validation rmse 20")
    assert diagnose_fit(10.0, 11.0, metric="rmse").startswith("good fit")
    assert diagnose_fit(0.4, 0.3, metric="f1_macro").startswith("underfitting")
    assert diagnose_fit(0.91, 0.89) == "good fit: train AUC 0.910, validation AUC 0.890"  # binary wording unchanged


def test_auto_starts_from_each_familys_defaults_strongest_first_once():
    import optuna

    from ml_tasks.config import TuneConfig
    from ml_tasks.training.families import DEFAULT_PARAMS, HIST_GRADIENT_BOOSTING, plain_params
    from ml_tasks.training.tuning import enqueue_family_defaults

    study = optuna.create_study(direction="minimize")
    config = TuneConfig(trials=3, family="auto")
    assert enqueue_family_defaults(study, config, "regression") == 3
    assert enqueue_family_defaults(study, config, "regression") == 0  # a retried plan adds none
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]
    assert [p["family"] for p in waiting] == ["hist_gradient_boosting", "ridge", "random_forest"]
    assert plain_params(waiting[0]) == {"family": HIST_GRADIENT_BOOSTING, **DEFAULT_PARAMS[HIST_GRADIENT_BOOSTING]}
