"""Tuning benchmarks: the compute TPE with pruning and grid search each need to reach a fixed quality; parallel slots.

(a) tuning_tpe_vs_grid: the Keras MLP on seeded synthetic data (`synthetic.generate`, 5% label noise). The quality
    level is fixed before any search, from the validation rows alone: the generator's rule is known, so the
    oracle ROC AUC is that of the rule's own logit on the validation rows (the best ranking any model can give
    them), and the level is the oracle minus K_SE standard errors of that AUC (Hanley & McNeil 1982, from the
    validation labels' class counts). K_SE = 1 is the one-standard-error rule (Breiman et al. 1984): a model
    within one standard error of the best is as good as the validation rows can tell; a lower level lets weak
    configurations through by chance, a higher one asks for noise. Grid search (the family's declared grid, in
    the order its sampler's seed gives) and TPE with the median pruner then both run to the same budget, the
    grid's full size (16 points x EPOCHS epochs), each with SEEDS seeds. Compute is epochs trained (a pruned
    trial counts only the epochs it ran); a search reaches the level at the first epoch whose validation AUC is
    at or above it and whose trial the pruner kept. A search that never reaches it within the budget is
    censored at the budget and printed as not reached (`>96epochs`), never as a success; the median over seeds
    is censored when more than half are. ratio = grid's median epochs / TPE's, target 3 (TPE needs at most a
    third of the compute, as issue 5 asks).
(b) tuning_parallel_slots: two `tune_slot` worker processes (each its own interpreter, as each mapped task is
    in the DAG) sharing one stored study (SQLite) against one,
    trials per minute of the study (first trial start to last trial end: process start-up, ~5-10 s of
    imports per slot, is left out). Trials are identical (the same enqueued HGB configuration), CPU-bound and
    single-threaded (OMP/BLAS threads = 1 per process), so on 2 cores the ideal is 2x; target 1.6.

Runs alone: `uv run python bench/tuning.py [grid] [parallel]` (about 6-9 minutes on 2 cores, both parts; the grid part alone 4-6).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

EPOCHS = 6
K_SE = 1.0  # the level: oracle AUC minus K_SE standard errors (the one-standard-error rule)
SEEDS = (0, 1, 2)  # sampler seeds, for grid (its order) and for TPE alike
TRAIN_ROWS, VAL_ROWS = 6000, 2000
PARALLEL_TRIALS = 20  # ~3.5 s each: the slots' start-up skew (up to ~5 s) stays a small part of the span
# Heavy enough (~3 s single-threaded) that a trial's bookkeeping (MLflow run, study writes) is small beside it.
PARALLEL_PARAMS = {"learning_rate": 0.05, "max_iter": 400, "max_leaf_nodes": 63, "min_samples_leaf": 20,
                   "l2_regularization": 1e-6}


def _keras_data() -> tuple[tuple[Any, Any, Any, Any], Any]:
    """(x_train, y_train, x_val, y_val) as the trials take them, and the raw validation rows."""
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.datasets import SYNTHETIC, synthetic

    train = synthetic.generate(TRAIN_ROWS, seed=11, label_noise=0.05)
    val = synthetic.generate(VAL_ROWS, seed=12, label_noise=0.05)
    transform = FittedTransform.fit(train, list(SYNTHETIC.numeric_features), list(SYNTHETIC.categorical_features))
    return (transform.apply(train), train[SYNTHETIC.target].to_numpy("float32"),
            transform.apply(val), val[SYNTHETIC.target].to_numpy("float32")), val


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """The standard error of a ROC AUC on `positives` + `negatives` rows (Hanley & McNeil 1982, eq. 2)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(variance / (positives * negatives))


def quality_level(val: Any) -> tuple[float, float, float]:
    """(oracle AUC, its standard error, the level), from the validation rows and the generator's rule only."""
    from sklearn.metrics import roc_auc_score

    from ml_tasks.datasets import SYNTHETIC, synthetic

    labels = val[SYNTHETIC.target].to_numpy()
    oracle = float(roc_auc_score(labels, synthetic.rule_logit(val)))
    positives = int(labels.sum())
    se = hanley_mcneil_se(oracle, positives, len(labels) - positives)
    return oracle, se, oracle - K_SE * se


@dataclass(frozen=True)
class Search:
    epochs: int  # trained, pruned trials' epochs included
    reached_at: int | None  # epochs trained when the level was first reached (None: not within the budget)
    best: float  # the best validation AUC within the budget
    trials: int
    pruned: int
    seconds: float

    def describe(self, budget: int) -> str:
        reached = f"reached it after {self.reached_at} epochs" if self.reached_at else f"did not reach it in {budget} epochs"
        return (f"{reached}; best {self.best:.4f}, {self.trials} trials ({self.pruned} pruned), {self.epochs} epochs, "
                f"{self.seconds:.0f} s")


def _search(sampler: Any, pruner: Any, data: tuple[Any, Any, Any, Any], budget: int, level: float) -> Search:
    """Run a study in memory until `budget` epochs are spent (a trial is cut where the budget ends)."""
    import optuna

    from ml_tasks.training import families
    from ml_tasks.training.trials import run_trial

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    epochs = 0
    reached_at: int | None = None
    best = -math.inf
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        params = families.suggest(trial, families.KERAS_MLP)

        def report(step: int, value: float, last: bool) -> None:
            nonlocal epochs, reached_at, best
            epochs += 1
            trial.report(value, step)
            if not last and trial.should_prune():
                raise optuna.TrialPruned()
            best = max(best, value)  # an epoch the search kept: its model is one the search has
            if reached_at is None and value >= level:
                reached_at = epochs
            if not last and epochs >= budget:
                raise optuna.TrialPruned()  # the budget is spent

        return run_trial(families.KERAS_MLP, params, data, EPOCHS, trial.number, report)

    while epochs < budget:
        study.optimize(objective, n_trials=1)
    trials = study.get_trials(deepcopy=False)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    return Search(epochs, reached_at, best, len(trials), pruned, time.perf_counter() - started)


def _median_epochs(runs: list[Search], budget: int) -> tuple[float, bool]:
    """The median epochs-to-level over seeds, a run that never reached it counting as beyond the budget; and
    whether that median is censored (more than half never reached it)."""
    values = sorted(run.reached_at if run.reached_at is not None else math.inf for run in runs)
    middle = statistics.median(values)
    return (float(budget), True) if math.isinf(middle) else (float(middle), False)


def tpe_vs_grid() -> None:
    import optuna

    from ml_tasks.training.families import KERAS_MLP, grid_size, grid_space
    from ml_tasks.training.keras_mlp import configure_accelerators

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configure_accelerators()
    data, val = _keras_data()
    oracle, se, level = quality_level(val)
    budget = grid_size(KERAS_MLP) * EPOCHS
    print(f"level: oracle ROC AUC {oracle:.4f} on the {VAL_ROWS} validation rows (the rule's own logit), standard "
          f"error {se:.4f} (Hanley-McNeil) -> level {level:.4f} (oracle - {K_SE:g} SE); budget {budget} epochs "
          f"({grid_size(KERAS_MLP)} grid points x {EPOCHS})", flush=True)
    grid, tpe = [], []
    for seed in SEEDS:  # interleaved, so that the machine's load hits both alike
        grid.append(_search(optuna.samplers.GridSampler(grid_space(KERAS_MLP), seed=seed), optuna.pruners.NopPruner(),
                            data, budget, level))
        print(f"grid seed {seed}: {grid[-1].describe(budget)}", flush=True)
        tpe.append(_search(optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
                           optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1), data, budget, level))
        print(f"tpe seed {seed}: {tpe[-1].describe(budget)}", flush=True)
    grid_epochs, grid_censored = _median_epochs(grid, budget)
    tpe_epochs, tpe_censored = _median_epochs(tpe, budget)
    print(f"epochs to the level per seed: grid {[r.reached_at for r in grid]}, tpe {[r.reached_at for r in tpe]} "
          f"(None: not reached within {budget}); best within the budget: grid {[round(r.best, 4) for r in grid]}, "
          f"tpe {[round(r.best, 4) for r in tpe]}", flush=True)
    bench_line(f"tuning_tpe_vs_grid_epochs_to_oracle_auc_minus_{K_SE:g}se", tpe_epochs, grid_epochs, 3, unit="epochs",
               ours_censored=tpe_censored, reference_censored=grid_censored)


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
