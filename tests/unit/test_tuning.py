"""Tuning: samplers, pruners, warm start from the champion, slots sharing one study, the DAG's tuning Params."""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict

import pytest

from ml_tasks.config import RunConfig, TuneConfig
from ml_tasks.training.families import grid_space
from tests.unit.test_families import prepare_synthetic


@pytest.fixture(autouse=True)
def one_openmp_thread(monkeypatch):
    """HGB's OpenMP threads spin-wait badly on tiny data when the 2 cores are shared: one thread per process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _study(ctx):
    import optuna

    from ml_tasks.training.tuning import study_storage

    return optuna.load_study(study_name=ctx.tracking_key, storage=study_storage())


def _finished(study):
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def _nested_runs(parent_run_id):
    from ml_tasks import tracking

    client = tracking.client()
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


@pytest.mark.parametrize("total, n_slots", [(6, 1), (6, 4), (7, 3), (2, 2), (500, 8)])
def test_slot_shares_add_up_to_the_budget(total, n_slots):
    from ml_tasks.training.tuning import slot_share

    shares = [slot_share(total, n_slots, k) for k in range(n_slots)]
    assert sum(shares) == total and max(shares) - min(shares) <= 1


def test_config_reads_the_tuning_params():
    config = RunConfig.from_params({"dataset": "synthetic", "model_family": "random_forest", "tuning_sampler": "grid",
                                    "tuning_pruner": "hyperband", "tuning_workers": 3})
    assert (config.tune.family, config.tune.sampler, config.tune.pruner, config.tune.workers) == (
        "random_forest", "grid", "hyperband", 3)
    assert config.train.family == "random_forest"


def test_samplers_and_pruners_are_the_configured_ones():
    import optuna

    from ml_tasks.training.tuning import make_pruner, make_sampler

    kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
             "grid": optuna.samplers.GridSampler}
    for name, kind in kinds.items():
        assert isinstance(make_sampler(TuneConfig(sampler=name)), kind)
    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "none": optuna.pruners.NopPruner}
    for name, kind in pruners.items():
        assert isinstance(make_pruner(TuneConfig(pruner=name)), kind)


def test_grid_search_runs_exactly_the_declared_grid(ratchet_home):
    from ml_tasks.training.tuning import tune

    ctx, run_id = prepare_synthetic(ratchet_home, rows=1200)
    config = TuneConfig(trials=50, epochs=1, sampler="grid", family="logistic_regression", pruner="none")
    result = tune(ctx, config, run_id)
    grid = grid_space("logistic_regression")
    expected = {tuple(point) for point in itertools.product(*grid.values())}
    seen = [tuple(t.params[name] for name in grid) for t in _finished(_study(ctx))]
    assert sorted(seen) == sorted(expected)  # every point once, nothing else
    assert result.trials_complete == len(expected) and result.best_params in [dict(zip(grid, p, strict=True)) for p in expected]
    assert len(_nested_runs(run_id)) == len(expected)


@pytest.mark.parametrize("pruner, family", [("median", "random_forest"), ("hyperband", "hist_gradient_boosting")])
def test_pruners_stop_bad_trials_from_their_step_reports(ratchet_home, pruner, family):
    from ml_tasks.training.tuning import tune_plan, tune_slot, tune_summary

    ctx, run_id = prepare_synthetic(ratchet_home, rows=800)
    config = TuneConfig(trials=10, epochs=4, sampler="random", family=family, pruner=pruner)
    tune_plan(ctx, config)
    # in its own process, as in production (OpenMP in HGB crawls in a process that has loaded TensorFlow)
    tune_slot(ctx, config, run_id, 0, 1)
    result = tune_summary(ctx, config, run_id)
    assert result.trials_pruned >= 1 and result.trials_complete + result.trials_pruned == 10
    pruned = [t for t in _finished(_study(ctx)) if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["steps"] < 4 for t in pruned)  # stopped before the last step
    assert result.steps_run < 10 * 4


def _make_champion(family_params: dict[str, str]) -> str:
    from ml_tasks import tracking
    from ml_tasks.datasets import SYNTHETIC

    experiment = tracking.configure()
    client = tracking.client()
    run = client.create_run(experiment, run_name="old-night")
    for key, value in family_params.items():
        client.log_param(run.info.run_id, f"train.{key}", value)
    name = SYNTHETIC.registered_model
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


def test_warm_start_enqueues_the_champions_params_when_the_family_matches(ratchet_home):
    from ml_tasks.training.tuning import tune_plan

    version = _make_champion({"family": "logistic_regression", "C": "0.5", "class_weight": "balanced"})
    ctx, _ = prepare_synthetic(ratchet_home, rows=600)
    plan = tune_plan(ctx, TuneConfig(family="logistic_regression", sampler="tpe"))
    assert plan.warm_start == f"champion v{version}"
    (waiting,) = _study(ctx).get_trials(deepcopy=False)
    assert waiting.state.name == "WAITING" and waiting.system_attrs["fixed_params"] == {"C": 0.5, "class_weight": "balanced"}
    # a second plan (a retried task) does not enqueue it again
    assert tune_plan(ctx, TuneConfig(family="logistic_regression")).warm_start == ""
    assert len(_study(ctx).get_trials(deepcopy=False)) == 1


def test_no_warm_start_from_a_champion_of_another_family(ratchet_home):
    from ml_tasks.training.tuning import tune_plan

    _make_champion({"n_layers": "2", "units": "64", "dropout": "0.1", "l2": "1e-05", "learning_rate": "0.001",
                    "batch_size": "512"})  # an MLP logged before families existed
    ctx, _ = prepare_synthetic(ratchet_home, rows=600)
    assert tune_plan(ctx, TuneConfig(family="random_forest")).warm_start == ""
    assert _study(ctx).get_trials(deepcopy=False) == []
    assert tune_plan(ctx, TuneConfig(family="keras_mlp", trials=3)).warm_start.startswith("champion v")


def test_two_slots_in_two_processes_share_one_study_without_losing_or_duplicating_trials(ratchet_home):
    from ml_tasks.training.tuning import tune_plan, tune_slot, tune_summary

    ctx, run_id = prepare_synthetic(ratchet_home, rows=1200)
    config = TuneConfig(trials=6, epochs=2, sampler="tpe", family="logistic_regression", workers=2)
    plan = tune_plan(ctx, config)
    assert plan.slots == [0, 1]
    results: dict[int, object] = {}
    # each slot in an interpreter of its own, as two mapped tune_slot tasks run (the threads only wait on them)
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, tune_slot(ctx, config, run_id, k, 2,
                                                                                 fresh_process=True)))
               for k in plan.slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1]
    trials = _study(ctx).get_trials(deepcopy=False)
    assert len(trials) == 6 and len({t.number for t in trials}) == 6
    assert sorted(t.user_attrs["slot"] for t in trials) == [0, 0, 0, 1, 1, 1]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len(_nested_runs(run_id)) == 6
    # a rerun of either slot finds its share done and runs nothing
    assert tune_slot(ctx, config, run_id, 1, 2).trials_run == 0
    assert tune_summary(ctx, config, run_id).trials_complete + tune_summary(ctx, config, run_id).trials_pruned == 6


def test_a_killed_slots_running_trial_is_failed_and_run_again(ratchet_home):
    import optuna

    from ml_tasks.training.tuning import load_study, tune_plan, tune_slot_in_process

    ctx, run_id = prepare_synthetic(ratchet_home, rows=800)
    config = TuneConfig(trials=3, epochs=1, sampler="random", family="logistic_regression", pruner="none")
    tune_plan(ctx, config)
    study = load_study(ctx.tracking_key, config)
    orphan = study.ask({"C": optuna.distributions.FloatDistribution(1e-3, 1e2, log=True)})
    orphan.set_user_attr("slot", 0)  # slot 0's process died in this trial
    orphan_c = orphan.params["C"]
    result = tune_slot_in_process(ctx.to_dict(), asdict(config), run_id, 0, 1)
    assert result["requeued"] == 1
    trials = _study(ctx).get_trials(deepcopy=False)
    assert [t.state.name for t in trials].count("FAIL") == 1 and len(_finished(_study(ctx))) == 3
    retried = [t for t in trials if t.user_attrs.get("retried_from") == orphan.number]
    assert len(retried) == 1 and retried[0].params["C"] == orphan_c and retried[0].state.name == "COMPLETE"


# ---------------------------------------------------------------- the DAG's Params


@pytest.fixture(scope="module")
def nightly_params():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    return DagBag(dag_folder=str(ROOT / "dags" / "nightly_retrain.py")).dags["nightly_retrain"].params


@pytest.mark.parametrize("name, value", [
    ("model_family", "xgboost"), ("model_family", ""), ("tuning_sampler", "annealing"), ("tuning_pruner", "sometimes"),
    ("tuning_workers", 0), ("tuning_workers", 9), ("tuning_workers", "two"),
])
def test_invalid_tuning_params_are_refused(nightly_params, name, value):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(nightly_params)
    with pytest.raises(ParamValidationError):
        params[name] = value
        params.validate()


def test_valid_tuning_params_are_accepted_and_offered(nightly_params):
    from airflow.sdk.definitions.param import ParamsDict

    from ml_tasks.training.families import MODEL_FAMILIES

    assert nightly_params.get_param("model_family").schema["enum"] == list(MODEL_FAMILIES)
    for family in MODEL_FAMILIES:
        params = ParamsDict(nightly_params)
        params.update({"model_family": family, "tuning_sampler": "grid", "tuning_pruner": "none", "tuning_workers": 8})
        params.validate()
