"""Training input pipeline: epoch time streamed from prepared Parquet against in-memory arrays; 5M rows streamed.

Input pipeline: the project's MLP (`ml_tasks.training.keras_mlp.build_mlp`, default
parameters, batch 512 as training uses them) is fitted on the training split
that `ml_tasks.data.preparation.prepare` writes for a `generate_wide` drop
(MAIN_ROWS rows in, 70% to train, 58 float32 features after one-hot). Ours
streams it from disk every epoch (`ml_tasks.training.input_pipeline.fit_source(...,
stream=True)` with the pipeline the trainer picks: under TensorFlow, pyarrow
record batches, a numpy window shuffle, tf.data `from_generator` over blocks of
128 batches, `rebatch`, `prefetch(AUTOTUNE)`); the reference fits the same model on
the same rows already loaded as numpy arrays. Target: a streamed epoch takes
at most 1.1x the in-memory one (ratio = in-memory / streamed >= 0.91), i.e.
the input pipeline is never the bottleneck. The same figure for the portable
`keras.utils.PyDataset` path (what JAX/torch backends get).

Scale: SCALE_ROWS rows x 58 float32 written straight to Parquet the way
preparation writes them (1Mi-row row groups, uncompressed), fitted streamed
with the trainer's pipeline and, for reference, from arrays loaded whole: samples/s streamed
against from arrays (same 0.91 target), and peak RSS over the post-import
baseline, streamed against from arrays (target: at most half).

The three paths at MAIN_ROWS take turns epoch by epoch in one process, so
other load on the machine hits them alike; each scale case runs in its own
process (peak RSS by `ru_maxrss`). An epoch's figure is the fastest epoch
after the first (tracing, caches), as `_bench.best_of` does. Validation is
left out: only the training input path is measured.
`BENCH_TRAINING_MAIN_ROWS`, `BENCH_TRAINING_SCALE_ROWS`, `BENCH_TRAINING_EPOCHS` change the sizes.
Run alone: `uv run python bench/training.py` (about 10-12 minutes on 2 cores). Epoch times on this kind of
shared VM vary by 20-30% from one epoch to the next, so each path gets five measured epochs (two at 5M rows).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

MAIN_ROWS = int(os.environ.get("BENCH_TRAINING_MAIN_ROWS", "1000000"))
SCALE_ROWS = int(os.environ.get("BENCH_TRAINING_SCALE_ROWS", "5000000"))
EPOCHS = int(os.environ.get("BENCH_TRAINING_EPOCHS", "6"))  # rounds of one epoch per path; the first is warm-up
MODES = ("arrays", "streamed", "pydataset")  # streamed: the pipeline `fit_source` picks, as the trainer
SCALE_EPOCHS = int(os.environ.get("BENCH_TRAINING_SCALE_EPOCHS", "3"))  # one warm-up, two measured
BATCH_SIZE = 512
TARGET = 0.91  # in-memory / streamed epoch time: streamed at most 1.1x
MEMORY_TARGET = 2.0  # streaming needs at most half the memory fitting from arrays needs
MIB = 2**20
CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prepare_main(home: Path) -> None:
    """Child: a generate_wide drop through the real preparation; prints the training split's path."""
    os.environ["RATCHET_HOME"] = str(home)
    from ml_tasks.config import RunContext
    from ml_tasks.data.preparation import prepare
    from ml_tasks.datasets import synthetic

    drop = home / "drop"
    drop.mkdir(parents=True)
    synthetic.generate_wide(MAIN_ROWS, seed=1).to_parquet(drop / "part-000.parquet", index=False)
    prepared = prepare(RunContext("synthetic", "bench"), drop.as_uri(), spec=synthetic.wide_spec())
    (drop / "part-000.parquet").unlink()
    print(json.dumps({"folder": prepared.prepared_uri.removeprefix("file://"), "features": prepared.n_features}))


def write_scale(path: Path, rows: int, n_features: int) -> None:
    """Child: `rows` x `n_features` float32 plus an int64 label, one 1Mi-row group at a time (constant memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    weights = rng.standard_normal(n_features).astype("float32") / np.sqrt(n_features)
    names = [f"f{j}" for j in range(n_features)]
    schema = pa.schema([*(pa.field(n, pa.float32()) for n in names), pa.field("label", pa.int64())])
    group = 2**20
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            x = rng.standard_normal((n, n_features), dtype=np.float32)
            y = (rng.random(n) < 1 / (1 + np.exp(-(x @ weights) * 2))).astype("int64")
            writer.write_table(pa.Table.from_arrays([*(pa.array(x[:, j]) for j in range(n_features)), pa.array(y)],
                                                    schema=schema), row_group_size=group)


def _epoch_timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.cpu: list[float] = []  # process CPU seconds: what the path costs, whatever else the machine runs
            self._start = self._cpu = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.times.append(time.perf_counter() - self._start)
            self.cpu.append(time.process_time() - self._cpu)

    return EpochTimer()


def compare_case(train_path: str, rounds: int) -> None:
    """Child: one model per path, one epoch each in turn for `rounds` rounds; prints epoch times as JSON.

    Taking turns epoch by epoch exposes every path to the same disturbances (other processes
    on the machine); the fastest epoch after the first round is each path's figure.
    """
    from ml_tasks.training.input_pipeline import fit_source
    from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp

    params = {**DEFAULT_MLP_PARAMS, "batch_size": BATCH_SIZE}
    runs = {}
    for mode in MODES:
        source = fit_source(train_path, None, BATCH_SIZE, seed=0, stream=mode != "arrays",
                            pipeline="pydataset" if mode == "pydataset" else None)
        runs[mode] = (source, build_mlp(source.n_features, params, seed=0), _epoch_timer())
    for epoch in range(rounds):
        for source, model, timer in runs.values():
            model.fit(**source.fit_kwargs(), epochs=epoch + 1, initial_epoch=epoch, callbacks=[timer], verbose=0)
    rows = runs["arrays"][0].train_rows
    print(json.dumps({mode: {"times": timer.times, "cpu": timer.cpu, "rows": rows, "features": source.n_features,
                             "auc": float(model.get_metrics_result()["auc"]), "pipeline": source.pipeline}
                      for mode, (source, model, timer) in runs.items()}), flush=True)


def scale_case(mode: str, train_path: str, epochs: int) -> None:
    """Child: fit `epochs` epochs from arrays or streamed as the trainer streams; prints epoch times and memory as JSON."""
    import keras  # noqa: F401  (imports, TensorFlow's included, belong to the baseline)
    import tensorflow  # noqa: F401

    from ml_tasks.training.input_pipeline import fit_source
    from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp

    baseline = _rss_mib()
    source = fit_source(train_path, None, BATCH_SIZE, seed=0, stream=mode != "arrays")
    model = build_mlp(source.n_features, {**DEFAULT_MLP_PARAMS, "batch_size": BATCH_SIZE}, seed=0)
    timer = _epoch_timer()
    history = model.fit(**source.fit_kwargs(), epochs=epochs, callbacks=[timer], verbose=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": timer.times, "rows": source.train_rows, "features": source.n_features,
                      "pipeline": source.pipeline, "baseline_mib": baseline, "peak_mib": peak,
                      "auc": history.history["auc"][-1]}), flush=True)


def stream_alone(train_path: str) -> None:
    """Child: the input pipeline without a model (rows/s it can feed); prints JSON."""
    from ml_tasks.training.input_pipeline import ParquetBatches

    batches = ParquetBatches(train_path, BATCH_SIZE)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        rows = sum(len(x) for x, _ in batches)
        times.append(time.perf_counter() - start)
    print(json.dumps({"rows_per_s": rows / min(times)}), flush=True)


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], env=CHILD_ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _epoch(figures: dict) -> float:
    return min(figures["times"][1:])


def _describe(name: str, figures: dict) -> None:
    steady = _epoch(figures)
    memory = (f"; peak RSS {figures['peak_mib']:.0f} MiB ({figures['baseline_mib']:.0f} after imports)"
              if "peak_mib" in figures else "")
    print(f"-- {name}: {figures['rows']} rows x {figures['features']}: epochs {', '.join(f'{t:.2f}' for t in figures['times'])} s; "
          f"steady {steady:.2f} s = {figures['rows'] / steady:,.0f} samples/s{memory}; final train AUC {figures['auc']:.3f}",
          flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare":
        prepare_main(Path(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--write-scale":
        write_scale(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--compare":
        compare_case(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--scale":
        scale_case(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--stream-alone":
        stream_alone(sys.argv[2])
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _child("--prepare", str(Path(tmp) / "home"))
        train_path = str(Path(prepared["folder"]) / "train.parquet")
        print(f"-- prepared {MAIN_ROWS} rows in {time.perf_counter() - started:.0f} s", flush=True)
        compared = _child("--compare", train_path, str(EPOCHS))
        in_memory, streamed, portable = compared["arrays"], compared["streamed"], compared["pydataset"]
        _describe("in-memory arrays", in_memory)
        _describe(f"streamed as the trainer streams ({streamed['pipeline']})", streamed)
        _describe("streamed, keras PyDataset", portable)
        cpu = {name: min(f["cpu"][1:]) for name, f in compared.items()}
        print(f"-- CPU per epoch (least after the first): arrays {cpu['arrays']:.2f} s, streamed {cpu['streamed']:.2f} s "
              f"({cpu['streamed'] / cpu['arrays'] - 1:+.0%}), PyDataset {cpu['pydataset']:.2f} s "
              f"({cpu['pydataset'] / cpu['arrays'] - 1:+.0%})", flush=True)
        feed = _child("--stream-alone", train_path)["rows_per_s"]
        print(f"-- the input pipeline alone (no model) reads, shuffles and batches {feed:,.0f} rows/s", flush=True)
        rows = in_memory["rows"]
        medians = {name: sorted(f["times"][1:])[len(f["times"][1:]) // 2] for name, f in compared.items()}
        print(f"-- median epochs instead of fastest: streamed/in-memory {streamed['pipeline']} "
              f"{medians['streamed'] / medians['arrays']:.2f}x, "
              f"PyDataset {medians['pydataset'] / medians['arrays']:.2f}x (this machine is shared: both are reported)", flush=True)
        bench_line(f"training.input_pipeline_epoch_{rows}_rows", _epoch(streamed), _epoch(in_memory), target=TARGET)
        bench_line(f"training.input_pipeline_pydataset_epoch_{rows}_rows", _epoch(portable), _epoch(in_memory), target=TARGET)

        scale_path = Path(tmp) / "scale.parquet"
        _child_plain("--write-scale", str(scale_path), str(SCALE_ROWS), str(prepared["features"]))
        scale = _child("--scale", "streamed", str(scale_path), str(SCALE_EPOCHS))
        _describe(f"{SCALE_ROWS} rows streamed ({scale['pipeline']})", scale)
        scale_arrays = _child("--scale", "arrays", str(scale_path), str(SCALE_EPOCHS))
        _describe(f"{SCALE_ROWS} rows in memory", scale_arrays)
        array_mib = SCALE_ROWS * prepared["features"] * 4 / MIB
        used = scale["peak_mib"] - scale["baseline_mib"]
        used_arrays = scale_arrays["peak_mib"] - scale_arrays["baseline_mib"]
        print(f"-- {SCALE_ROWS} rows: the features alone take {array_mib:.0f} MiB as float32; over the post-import baseline "
              f"fitting from arrays used {used_arrays:.0f} MiB, streaming {used:.0f} MiB", flush=True)
        bench_line(f"training.stream_samples_per_s_{SCALE_ROWS}_rows", SCALE_ROWS / _epoch(scale),
                   SCALE_ROWS / _epoch(scale_arrays), target=TARGET, unit="samples/s", higher_is_better=True)
        bench_line(f"training.stream_peak_memory_{SCALE_ROWS}_rows", used, used_arrays, target=MEMORY_TARGET, unit="MiB")
    print(f"-- training benchmark took {time.perf_counter() - started:.0f} s", flush=True)


def _child_plain(*args: str) -> None:
    subprocess.run([sys.executable, __file__, *args], env=CHILD_ENV, check=True)


if __name__ == "__main__":
    main()
