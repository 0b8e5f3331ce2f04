"""Monitoring: reading a window of the inference log, and what a whole `monitor()` call costs.

The log is written here in `ratchet serve`'s format (one JSON line per served row, synthetic rows).

* `monitoring_log_read`: our streaming reader (`read_log_window`: parse, window filter, keep the features)
  against pandas `read_json(lines=True)` plus `json_normalize` of the inputs on the same files. Target 1.0:
  no slower than the obvious reader, which holds the whole window in memory.
* `monitoring_log_memory`: peak RSS of reading a window of 5x `ROWS` rows with `max_rows=ROWS` against a
  window of `ROWS` rows, each in a fresh process. Target 0.8: five times the rows costs at most 1.25x the
  memory (the reservoir sample bounds it).
* `#` line: one `monitor()` call on `ROWS` rows with a registered champion (drift, live metrics from labels,
  MLflow points, record, plot).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import bench_line, best_of

ROWS = int(os.environ.get("BENCH_MONITORING_ROWS", "200000"))
START = datetime(2026, 3, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
MODEL = "synthetic_classifier"

# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS at fork time on Linux.
MEMORY_PROBE = """
import sys
from datetime import datetime
from ml_tasks.datasets import SYNTHETIC
from ml_tasks.serving.inference_log import read_log_window
window = read_log_window("synthetic_classifier", SYNTHETIC, datetime.fromisoformat(sys.argv[1]),
                         datetime.fromisoformat(sys.argv[2]), int(sys.argv[3]))
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(window.frame), int(peak.split()[1]) * 1024)
"""


def write_log(home: Path, rows: int, seed: int) -> None:
    """`rows` served rows over the hour, in 4 part files as 4 serving processes would write them."""
    import numpy as np

    from ml_tasks.datasets import SYNTHETIC, synthetic

    frame = synthetic.generate(rows, seed=seed)
    probability = np.random.default_rng(seed).random(rows)
    folder = home / "inference" / MODEL / f"date={START.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    step = 3600 / rows
    columns = {name: frame[name].tolist() for name in SYNTHETIC.features}
    handles = [(folder / f"part-{k}.jsonl").open("w") for k in range(4)]
    for i in range(rows):
        ts = (START + timedelta(seconds=i * step)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        handles[i % 4].write(json.dumps({
            "ts": ts, "request_id": f"r{i}", "model": MODEL, "version": "1",
            "inputs": {name: values[i] for name, values in columns.items()},
            "probability": float(probability[i]), "prediction": int(probability[i] >= 0.5),
        }, separators=(",", ":")) + "\n")
    for handle in handles:
        handle.close()
    labels = frame[["label"]].assign(request_id=[f"r{i}" for i in range(rows)])
    (home / "feedback" / MODEL).mkdir(parents=True, exist_ok=True)
    labels.iloc[: rows // 10].to_csv(home / "feedback" / MODEL / "labels.csv", index=False)


def pandas_reader(home: Path) -> Any:
    import pandas as pd

    frames = [pd.read_json(path, lines=True) for path in sorted((home / "inference").rglob("*.jsonl"))]
    frame = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame = frame[(ts >= pd.Timestamp(START)) & (ts < pd.Timestamp(END))]
    return pd.json_normalize(frame["inputs"].tolist())


def peak_rss(home: Path, max_rows: int) -> tuple[int, int]:
    env = {**os.environ, "RATCHET_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, START.isoformat(), END.isoformat(), str(max_rows)],
                         env=env, capture_output=True, text=True, check=True)
    kept, rss = out.stdout.split()[-2:]
    return int(kept), int(rss)


def register_champion(home: Path) -> None:
    """A champion as monitoring sees one: the drift reference and evaluated metric on its run."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    from ml_tasks import tracking
    from ml_tasks.data import drift
    from ml_tasks.datasets import SYNTHETIC, synthetic
    from ml_tasks.release import registry

    class Constant(PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    tracking.configure()
    reference = home / "drift_reference.json"
    reference.write_text(json.dumps(drift.compute_reference(synthetic.generate(20_000, seed=1), SYNTHETIC)))
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
        mlflow.log_artifact(str(reference), artifact_path="data")
        mlflow.log_metric("test.roc_auc", 0.9)
    version = registry.register_candidate(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id, {})
    registry.compare_and_set_champion(MODEL, version, None, "bench")


def main() -> None:
    with tempfile.TemporaryDirectory() as small_dir, tempfile.TemporaryDirectory() as large_dir:
        small, large = Path(small_dir), Path(large_dir)
        os.environ["RATCHET_HOME"] = str(small)
        from ml_tasks.datasets import SYNTHETIC
        from ml_tasks.monitoring import monitor
        from ml_tasks.serving.inference_log import read_log_window
        from ml_tasks.settings import get_settings

        get_settings.cache_clear()
        write_log(small, ROWS, seed=3)
        ours = best_of(lambda: read_log_window(MODEL, SYNTHETIC, START, END, ROWS), repeat=2)
        reference = best_of(lambda: pandas_reader(small), repeat=2)
        bench_line(f"monitoring_log_read_{ROWS}_rows", ours, reference, 1.0)

        write_log(large, 5 * ROWS, seed=4)
        kept_small, rss_small = peak_rss(small, ROWS)
        kept_large, rss_large = peak_rss(large, ROWS)
        assert kept_small == kept_large == ROWS, (kept_small, kept_large)
        bench_line(f"monitoring_log_memory_{5 * ROWS}_vs_{ROWS}_rows", rss_large / 2**20, rss_small / 2**20, 0.8,
                   unit="MiB")

        register_champion(small)
        start = time.perf_counter()
        result = monitor(MODEL, START, END)
        took = time.perf_counter() - start
        print(f"# monitor() on {ROWS:,} rows ({ROWS // 10:,} with labels): {took:.2f}s; "
              f"{result['points_logged']} MLflow points; drift {result['drift_detected']}, decay {result['decay_detected']}")


if __name__ == "__main__":
    main()
