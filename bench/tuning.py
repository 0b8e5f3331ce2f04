"""Tuning benchmarks: how much compute TPE with pruning needs to match grid search, and parallel trial slots.

(a) tuning_tpe_vs_grid: the Keras MLP on seeded synthetic data. Grid search runs the family's whole declared
    grid (16 points x EPOCHS epochs) and reaches a best validation AUC; TPE with the median pruner runs
    trials until its best is within TOLERANCE of that. Compute is counted in epochs trained (pruned trials
    count only the epochs they ran). ratio = grid epochs / TPE epochs (median over SEEDS TPE seeds), target 3
    (TPE needs at most a third of the compute).
(b) tuning_parallel_slots: two `tune_slot` worker processes (each its own interpreter, as each mapped task is
    in the DAG) sharing one stored study (SQLite) against one,
    trials per minute of the study (first trial start to last trial end: process start-up, ~5-10 s of
    imports per slot, is left out). Trials are identical (the same enqueued HGB configuration), CPU-bound and
    single-threaded (OMP/BLAS threads = 1 per process), so on 2 cores the ideal is 2x; target 1.6.

Runs alone: `uv run python bench/tuning.py` (about 4-6 minutes on 2 cores).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

EPOCHS = 6
TOLERANCE = 0.002  # validation AUC
SEEDS = (0, 1, 2)
TRAIN_ROWS, VAL_ROWS = 6000, 2000
PARALLEL_TRIALS = 20  # ~3.5 s each: the slots' start-up skew (up to ~5 s) stays a small part of the span
# Heavy enough (~3 s single-threaded) that a trial's bookkeeping (MLflow run, study writes) is small beside it.
PARALLEL_PARAMS = {"learning_rate": 0.05, "max_iter": 400, "max_leaf_nodes": 63, "min_samples_leaf": 20,
                   "l2_regularization": 1e-6}


def _keras_data() -> tuple[Any, Any, Any, Any]:
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.datasets import SYNTHETIC, synthetic

    train = synthetic.generate(TRAIN_ROWS, seed=11, label_noise=0.05)
    val = synthetic.generate(VAL_ROWS, seed=12, label_noise=0.05)
    transform = FittedTransform.fit(train, list(SYNTHETIC.numeric_features), list(SYNTHETIC.categorical_features))
    return (transform.apply(train), train[SYNTHETIC.target].to_numpy("float32"),
            transform.apply(val), val[SYNTHETIC.target].to_numpy("float32"))


def _search(sampler: Any, pruner: Any, data: tuple[Any, Any, Any, Any], n_trials: int,
            stop_at: float | None = None, budget_epochs: int | None = None) -> tuple[float, int, list[tuple[int, float]]]:
    """Run a study in memory; returns (best value, epochs trained, [(epochs so far, best so far)])."""
    import optuna

    from ml_tasks.training import families
    from ml_tasks.training.trials import run_trial

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    epochs = 0
    trace: list[tuple[int, float]] = []

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs
        params = families.suggest(trial, families.KERAS_MLP)

        def report(step: int, value: float, last: bool) -> None:
            nonlocal epochs
            epochs += 1
            trial.report(value, step)
            if not last and trial.should_prune():
                raise optuna.TrialPruned()

        return run_trial(families.KERAS_MLP, params, data, EPOCHS, trial.number, report)

    for _ in range(n_trials):
        study.optimize(objective, n_trials=1)
        best = study.best_value
        trace.append((epochs, best))
        if stop_at is not None and best >= stop_at:
            break
        if budget_epochs is not None and epochs >= budget_epochs:
            break
    return study.best_value, epochs, trace


def tpe_vs_grid() -> None:
    import optuna

    from ml_tasks.training.families import KERAS_MLP, grid_size, grid_space
    from ml_tasks.training.keras_mlp import configure_accelerators

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configure_accelerators()
    data = _keras_data()
    start = time.perf_counter()
    grid_best, grid_epochs, _ = _search(optuna.samplers.GridSampler(grid_space(KERAS_MLP), seed=0),
                                        optuna.pruners.NopPruner(), data, grid_size(KERAS_MLP))
    print(f"grid: {grid_size(KERAS_MLP)} points, best val AUC {grid_best:.4f}, {grid_epochs} epochs, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    target = grid_best - TOLERANCE
    spent = []
    for seed in SEEDS:
        start = time.perf_counter()
        best, epochs, trace = _search(
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            data, n_trials=4 * grid_size(KERAS_MLP), stop_at=target, budget_epochs=2 * grid_epochs,
        )
        reached = best >= target
        spent.append(epochs if reached else 2 * grid_epochs)
        print(f"tpe seed {seed}: best {best:.4f} ({'reached' if reached else 'did not reach'} {target:.4f}) after "
              f"{len(trace)} trials, {epochs} epochs, {time.perf_counter() - start:.0f} s", flush=True)
    tpe_epochs = statistics.median(spent)
    bench_line(f"tuning_tpe_vs_grid_epochs_to_grid_best_within_{TOLERANCE}", tpe_epochs, grid_epochs, 3, unit="epochs")


def _parallel_run(home: Path, n_slots: int) -> float:
    """Trials per minute of one study run by `n_slots` concurrent slot processes."""
    import optuna

    from ml_tasks import tracking
    from ml_tasks.config import RunContext, TuneConfig
    from ml_tasks.training import families
    from ml_tasks.training.tuning import load_study, study_storage, tune_plan, tune_slot

    ctx = RunContext("synthetic", f"parallel{n_slots}")
    _prepare(home, ctx)
    run_id = tracking.ensure_parent_run(ctx)
    config = TuneConfig(trials=PARALLEL_TRIALS, epochs=1, sampler="random", pruner="none",
                        family=families.HIST_GRADIENT_BOOSTING, workers=n_slots, max_train_rows=40_000)
    plan = tune_plan(ctx, config)
    study = load_study(ctx.tracking_key, config)
    for _ in range(PARALLEL_TRIALS):  # identical trials: the same work in both runs
        study.enqueue_trial(PARALLEL_PARAMS, skip_if_exists=False)
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        # Its own interpreter, as each mapped `tune_slot` task is its own process in the DAG (`tune_slot` runs
        # a scikit-learn family in the calling process: two threads here would share one GIL).
        try:
            tune_slot(ctx, config, run_id, slot, len(plan.slots), fresh_process=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(slot,)) for slot in plan.slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    trials = optuna.load_study(study_name=ctx.tracking_key, storage=study_storage()).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == PARALLEL_TRIALS, len(trials)
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    rate = 60 * len(trials) / span
    print(f"{n_slots} slot(s): {len(trials)} trials in {span:.1f} s of study time ({wall:.1f} s with process start-up): "
          f"{rate:.1f} trials/min", flush=True)
    return rate


def _prepare(home: Path, ctx: Any) -> None:
    from ml_tasks.data.preparation import prepare
    from ml_tasks.datasets import synthetic

    drop = home / "drops" / ctx.run_key
    drop.mkdir(parents=True)
    synthetic.generate(40_000, seed=3, label_noise=0.05).to_parquet(drop / "part-000.parquet", index=False)
    prepare(ctx, drop.as_uri())


def parallel_slots() -> None:
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-tuning-") as tmp:
        os.environ["RATCHET_HOME"] = tmp
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RATCHET_OPTUNA_STORAGE", "RATCHET_MLFLOW_ARTIFACT_ROOT"):
            os.environ.pop(name, None)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"  # inherited by the slot processes: one core each
        from ml_tasks.settings import get_settings

        get_settings.cache_clear()
        one = _parallel_run(Path(tmp), 1)
        two = _parallel_run(Path(tmp), 2)
        bench_line("tuning_parallel_2_slots_vs_1_trials_per_min", two, one, 1.6, unit="/min", higher_is_better=True)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    which = sys.argv[1:] or ["grid", "parallel"]
    if "grid" in which:
        tpe_vs_grid()
    if "parallel" in which:
        parallel_slots()


if __name__ == "__main__":
    main()
