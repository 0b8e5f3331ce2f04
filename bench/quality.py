"""Model quality: the champion Ratchet picks (family searched, `model_family: auto`) against an untuned
scikit-learn HistGradientBoosting trained on the same prepared train split and scored on the same held-out rows.

The reference is what a user would do without choosing a family: `HistGradientBoosting{Classifier,Regressor}()`
with its defaults, fitted on the rows of `train.parquet` that preparation wrote (the same transform, the same
split), scored on `test.parquet` with the same metric functions evaluation uses. Ours is the candidate that
`nightly_retrain`'s calls (sync, validate, prepare, tune_plan, tune_slot, tune, train, evaluate; in one plain
process) produce with the data set's declaration as `ratchet datasets add` writes it and a tuning budget of
TRIALS trials. The goals (issue 16) are budgets against the reference measured in the same run:
- classification: accuracy within 1 point and the primary metric within 0.5 points of the reference's;
- regression: RMSE within 5 % of the reference's.
Each line's ratio is ours / reference (reference / ours for RMSE), and its target the ratio at the allowed gap.

Data: the demo's synthetic drop (binary) and one real table of each kind (`ml_tasks.datasets.public_tables`).
Run alone: `uv run python bench/quality.py [--trials N] [--quick]` (about 10 minutes on 2 cores; --quick samples
the tables and runs 4 trials).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import bench_line

ROOT = Path(__file__).resolve().parent.parent
RUN_DATE = "2026-03-01"
TRIALS = 12
# (data set name, public table or "synthetic", rows in --quick)
CASES = [("demo_synthetic", "synthetic", 4000), ("churn", "wa_churn", 4000), ("diamond_cut", "diamonds", 8000),
         ("tx_median_price", "txhousing", 4000)]


def _land(home: Path, table: str, rows: int | None) -> tuple[str, str]:
    from ml_tasks.datasets import public_tables, synthetic

    if table == "synthetic":
        frame = synthetic.generate(rows or 20_000, seed=1)
        target = "label"
    else:
        frame = public_tables.load(table, rows=rows)
        target = public_tables.TABLES[table].target
    return public_tables.write_drop(frame, home / "drops" / table / RUN_DATE, fmt="parquet"), target


def _reference(prepared_uri: str, spec: Any) -> dict[str, float]:
    """Untuned HistGradientBoosting on the prepared train split, scored on the prepared test split."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from ml_tasks.constants import TEST_FILE, TRAIN_FILE
    from ml_tasks.release.metrics import task_metrics
    from ml_tasks.storage import local_path

    folder = local_path(prepared_uri)

    def arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
        table = pq.read_table(folder / name)
        y = table.column(spec.target).to_numpy()
        x = np.column_stack([table.column(c).to_numpy() for c in table.column_names if c != spec.target])
        return x.astype("float32"), y

    x_train, y_train = arrays(TRAIN_FILE)
    x_test, y_test = arrays(TEST_FILE)
    if spec.is_classification:
        model = HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train.astype("int64"))
        scores = model.predict_proba(x_test)
        scores = scores[:, 1] if spec.task == "binary" else scores
        return task_metrics(spec.task, y_test.astype("int64"), scores, spec.classes)
    model = HistGradientBoostingRegressor(random_state=0).fit(x_train, y_train)
    return task_metrics(spec.task, y_test, model.predict(x_test), spec.classes)


def one_case(name: str, table: str, rows: int | None, trials: int, home: Path) -> dict[str, Any]:
    """In a process of its own (RATCHET_HOME set before any import): declare, run the pipeline, score both."""
    from ml_tasks import pipeline
    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.datasets import get_dataset

    drop, target = _land(home, table, rows)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ml_tasks.ops.cli", "datasets", "add", name, "--from", drop,
                    "--target", target, "--force"], check=True, capture_output=True, text=True)
    add_seconds = time.perf_counter() - start
    spec = get_dataset(name)
    conf = {"dataset": name, "source_uri": drop, "tuning_trials": trials, "tuning_epochs": 5, "max_epochs": 30,
            "model_family": "auto"}
    ctx = RunContext(dataset=name, run_key="quality", dag_id="quality", run_id="quality")
    config = RunConfig.from_params(conf)
    start = time.perf_counter()
    synced = pipeline.sync(ctx, config, RUN_DATE, None)
    pipeline.validate(ctx, config, synced)
    prepared = pipeline.prepare(ctx, config, synced)
    for slot in pipeline.tune_plan(ctx, config):
        pipeline.tune_slot(ctx, config, prepared, slot)
    tuned = pipeline.tune(ctx, config, prepared)
    trained = pipeline.train(ctx, config, prepared, tuned)
    evaluated = pipeline.evaluate(ctx, config, prepared, trained)
    run_seconds = time.perf_counter() - start
    ours = evaluated["candidate"]
    return {"name": name, "task": spec.task, "primary": spec.primary_metric, "ours": ours,
            "reference": _reference(prepared["prepared_uri"], spec), "family": tuned.get("family"),
            "rows": prepared.get("rows_out"), "add_s": add_seconds, "run_s": run_seconds}


def _lines(result: dict[str, Any]) -> list[str]:
    ours, ref, name = result["ours"], result["reference"], result["name"]
    print(f"INFO quality.{name}: {result['task']}, {result['rows']} rows, champion family {result['family']}, "
          f"datasets add {result['add_s']:.1f}s, pipeline {result['run_s']:.1f}s; ours {ours} vs untuned HGB {ref}")
    lines = []
    if result["task"] == "regression":
        lines.append(bench_line(f"quality_{name}_rmse_vs_untuned_hgb_budget", ours["rmse"], ref["rmse"],
                                target=1 / 1.05, unit=""))
        return lines
    for metric, gap in (("accuracy", 0.01), (result["primary"], 0.005)):
        target = (ref[metric] - gap) / ref[metric] if metric not in ("log_loss",) else 1 / (1 + gap / ref[metric])
        lines.append(bench_line(f"quality_{name}_{metric}_vs_untuned_hgb_budget", ours[metric], ref[metric],
                                target=round(target, 4), unit="", higher_is_better=True))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # NAME TABLE ROWS, in the child process
    args = parser.parse_args()
    if args.case:
        name, table, rows = args.case
        result = one_case(name, table, int(rows) or None, args.trials, Path(os.environ["RATCHET_HOME"]))
        print("RESULT " + json.dumps(result))
        return
    for name, table, quick_rows in CASES:
        with tempfile.TemporaryDirectory(prefix=f"quality-{name}-") as tmp:
            env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
            env.update(RATCHET_HOME=tmp, RATCHET_DATASETS_DIR=str(Path(tmp) / "datasets"),
                       RATCHET_EXPECTATIONS_DIR=str(Path(tmp) / "expectations"))
            shutil.copytree(ROOT / "expectations", Path(tmp) / "expectations")
            (Path(tmp) / "datasets").mkdir()
            rows = quick_rows if args.quick or table == "synthetic" else 0
            trials = 4 if args.quick else args.trials
            done = subprocess.run([sys.executable, __file__, "--trials", str(trials), "--case", name, table, str(rows)],
                                  env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:])
                raise SystemExit(f"quality case {name} failed")
            result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
            _lines(result)


if __name__ == "__main__":
    main()
