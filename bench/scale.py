"""Scale: validation plus preparation on the Spark engine (`local[2]`) at a drop pandas cannot hold, beside pandas.

The spark engine exists for drops larger than a worker's memory, so this measures what it promises: the large
drop completes with a small driver, it is not much slower than pandas where pandas fits, and its time grows no
worse than linearly with rows.

Data: `synthetic.generate_wide` (its numeric and categorical features and label, with missing values),
written once in chunks as several Parquet files under RATCHET_HOME/bench/scale (or `--data-dir`), never held
whole in memory, and reused while its parameters are the same.

Work, the same on both engines, each run in a fresh process: `validate_drop` with the suite
`ratchet expectations bootstrap` writes for these columns (every kind of expectation a committed suite has, its
row-count band set for the drop's size; no Data Docs, whose rendering does not grow with rows), then `prepare`
with `synthetic.wide_spec()`. Before the clock starts each process imports everything, Spark's JVM is started,
and both stages run once untimed on the same small drop.

Memory: a thread polls the RSS of the Python process and of its Java child, Spark's driver JVM (in local mode the
executors run inside it), with `spark.driver.memory` set; pandas runs only at the small size (and `--pandas-rows`),
since it holds the whole drop several times over.

Lines: pandas' time over Spark's at the small size (throughput, side by side), the exponent of Spark's time
against rows from the small to the large size held to linear, and the large run's peak RSS of the JVM and of the
Python driver process each held to the driver budget. `--` lines give each run's times and peaks.

`uv run python bench/scale.py` (full sizes); `--quick` or `--rows-small/--rows-large` check it at small sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import PeakRss, bench_line

MASTER = "local[2]"
DRIVER_BUDGET_MIB = 2048
SPEED_TARGET = 1 / 3  # Spark at most 3x pandas' time where pandas fits
EXPONENT_BUDGET = 1.0  # time grows no worse than linearly with rows
WARM_ROWS = 20_000
MISSING_RATE = 0.001
SEED = 1
DATA_VERSION = 1  # bump when the generated data changes, so old drops are not reused
MIB = 2**20


def drop_for(data_dir: Path, rows: int, chunk_rows: int) -> Path:
    """The drop of `rows` rows in files of `chunk_rows`, generated one chunk at a time unless already there."""
    from ml_tasks.datasets import synthetic

    params = {"rows": rows, "chunk_rows": chunk_rows, "missing_rate": MISSING_RATE, "seed": SEED,
              "version": DATA_VERSION}
    folder = data_dir / f"wide-{rows}-by-{chunk_rows}"
    marker = folder.with_suffix(".json")
    if folder.is_dir() and marker.is_file() and json.loads(marker.read_text()) == params:
        return folder
    marker.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for index, start in enumerate(range(0, rows, chunk_rows)):
        chunk = synthetic.generate_wide(min(chunk_rows, rows - start), seed=SEED + index, missing_rate=MISSING_RATE)
        chunk.to_parquet(folder / f"part-{index:05d}.parquet", index=False)
        del chunk
    marker.write_text(json.dumps(params))
    print(f"-- generated {rows:,} rows in {math.ceil(rows / chunk_rows)} files under {folder} "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def write_suites(drops: dict[int, Path], sample_file: Path, expectations_dir: Path) -> dict[int, str]:
    """One bootstrapped suite per drop, from the same sample, its row-count band scaled to the drop's rows."""
    from ml_tasks.data.validation import bootstrap_suite, write_suite
    from ml_tasks.datasets import synthetic
    from ml_tasks.io import read_table

    sample = read_table(sample_file)
    names = {}
    for rows in drops:
        name = f"bench_scale_{rows}"
        spec = dataclasses.replace(synthetic.wide_spec(), suite=name)
        band = (0.5 * rows / len(sample), 2.0 * rows / len(sample))
        write_suite(bootstrap_suite(spec, sample, row_band=band), expectations_dir)
        names[rows] = name
    return names


def measure(job: dict[str, Any]) -> None:
    """Child process: warm up on the small drop, then validate and prepare the drop; print times and peaks as JSON."""
    os.environ["RATCHET_HOME"] = job["home"]
    os.environ["RATCHET_EXPECTATIONS_DIR"] = job["expectations"]
    os.environ["RATCHET_SPARK_DRIVER_MEMORY"] = job["driver_memory"]
    from contextlib import ExitStack

    from ml_tasks.config import RunContext
    from ml_tasks.data import preparation
    from ml_tasks.data.spark import preparation as spark_preparation
    from ml_tasks.data.spark.session import SparkOptions, spark_session
    from ml_tasks.data.validation import validate_drop
    from ml_tasks.datasets import synthetic

    engine, spec = job["engine"], synthetic.wide_spec()
    options = SparkOptions(master=MASTER, conf={"spark.driver.memory": job["driver_memory"]})

    def validate_and_prepare(drop: str, suite: str, key: str, spark: Any) -> tuple[float, float]:
        uri = Path(drop).as_uri()
        start = time.perf_counter()
        validate_drop(uri, None, key, suite=suite, data_docs="never", engine=engine, spark=options)
        validated = time.perf_counter()
        ctx = RunContext("synthetic", key)
        if spark is None:
            preparation.prepare(ctx, uri, spec=spec)
        else:
            spark_preparation.prepare(ctx, uri, spark, spec=spec)
        seconds = (validated - start, time.perf_counter() - validated)
        shutil.rmtree(ctx.prepared_dir)
        return seconds

    with ExitStack() as stack:
        spark = stack.enter_context(spark_session(options, "ratchet-bench-scale")) if engine == "spark" else None
        validate_and_prepare(job["warm_drop"], job["warm_suite"], "warm", spark)
        with PeakRss() as peak:
            validate_s, prepare_s = validate_and_prepare(job["drop"], job["suite"], "measured", spark)
    print(json.dumps({"validate_s": validate_s, "prepare_s": prepare_s, "python_peak_mib": peak.own / MIB,
                      "jvm_peak_mib": peak.children / MIB}), flush=True)


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        # Spark's log is long and the first error is the cause: all of it is kept beside the data
        saved = Path(job["home"]).parent.parent / f"failed-{job['engine']}-{job['rows']}.log"
        saved.write_text(done.stderr)
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"the {job['engine']} run of {job['rows']:,} rows failed; its whole log: {saved}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    total = figures["validate_s"] + figures["prepare_s"]
    jvm = f"{figures['jvm_peak_mib']:.0f} MiB" if job["engine"] == "spark" else "none"
    print(f"-- {job['engine']:<6} {job['rows']:>11,} rows: validate {figures['validate_s']:.1f} s + prepare "
          f"{figures['prepare_s']:.1f} s = {total:.1f} s ({job['rows'] / total:,.0f} rows/s); peak RSS Python "
          f"{figures['python_peak_mib']:.0f} MiB, JVM {jvm}", flush=True)
    return {**figures, "seconds": total}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-small", type=int, default=5_000_000, help="both engines (the speed line)")
    parser.add_argument("--rows-large", type=int, default=50_000_000, help="Spark only (the memory lines)")
    parser.add_argument("--pandas-rows", type=int, nargs="*", default=[], help="further sizes for pandas alone")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per generated Parquet file")
    parser.add_argument("--driver-memory", default="1g", help="spark.driver.memory (the JVM's heap)")
    parser.add_argument("--data-dir", type=Path, help="where drops are generated and kept (RATCHET_HOME/bench/scale)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmark itself")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows_small, args.rows_large, args.chunk_rows = 200_000, 1_000_000, 100_000
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.measure:
        measure(json.loads(args.measure))
        return
    from ml_tasks.settings import get_settings

    started = time.perf_counter()
    small, large = args.rows_small, args.rows_large
    data_dir = args.data_dir or get_settings().home / "bench" / "scale"
    sizes = sorted({WARM_ROWS, small, large, *args.pandas_rows})
    drops = {rows: drop_for(data_dir, rows, min(args.chunk_rows, rows)) for rows in sizes}
    with tempfile.TemporaryDirectory(dir=data_dir, prefix="run-") as scratch:
        expectations = Path(scratch) / "expectations"
        suites = write_suites(drops, min(drops[small].glob("*.parquet")), expectations)

        def run(engine: str, rows: int) -> dict[str, Any]:
            home = Path(scratch) / f"home-{engine}-{rows}"
            job = {"engine": engine, "rows": rows, "drop": str(drops[rows]), "suite": suites[rows],
                   "warm_drop": str(drops[WARM_ROWS]), "warm_suite": suites[WARM_ROWS], "home": str(home),
                   "expectations": str(expectations), "driver_memory": args.driver_memory}
            figures = run_child(job)
            shutil.rmtree(home, ignore_errors=True)
            return figures

        pandas_small = run("pandas", small)
        spark_small = run("spark", small)
        # printed now: a large run that fails must not take the side-by-side figure with it
        bench_line(f"scale.spark_local2_vs_pandas_{small}x30_validate_prepare_throughput",
                   small / spark_small["seconds"], small / pandas_small["seconds"], target=SPEED_TARGET,
                   unit="rows/s", higher_is_better=True)
        for rows in sorted(set(args.pandas_rows)):
            run("pandas", rows)
        spark_large = run("spark", large) if large != small else spark_small
    if large != small:
        exponent = math.log(spark_large["seconds"] / spark_small["seconds"]) / math.log(large / small)
        print(f"-- Spark time grows as rows^{exponent:.2f} from {small:,} to {large:,} rows", flush=True)
        bench_line(f"scale.spark_time_exponent_{small}_to_{large}_rows_vs_linear_budget", exponent, EXPONENT_BUDGET,
                   target=1.0, unit="")
    for side, key in (("jvm", "jvm_peak_mib"), ("python_driver", "python_peak_mib")):
        bench_line(f"scale.spark_{large}x30_{side}_peak_rss_vs_2GiB_budget", spark_large[key], DRIVER_BUDGET_MIB,
                   target=1.0, unit="MiB")
    print(f"-- scale benchmark took {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
