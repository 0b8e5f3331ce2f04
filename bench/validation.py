"""Validation: a 20-expectation Great Expectations suite against the same checks in pandas.

5,000,000 rows x 20 columns (14 numeric, 5 categorical, a label). The suite is
written by our bootstrap from the frame itself and cut to 20 expectations of
every kind the committed suites use. Both sides evaluate the same 20 checks on
the same in-memory frame, one process each; GE's import (~5 s) is excluded, a
validation task pays it once. With a failure, both also count the unexpected
values and pick 5 examples of each failed check.

Besides the BENCH lines it prints where GE's time goes (`#` lines): its
default path, then each change our validation makes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line, best_of

ROWS = int(os.environ.get("BENCH_VALIDATION_ROWS", "5000000"))
SCALE_COLUMNS = 30
# Peak RSS as VmHWM, the process's own: its ru_maxrss would start at this (bigger) process's peak at the spawn.
SCALE_PROBE = """
import os, sys, time
from ml_tasks.data.validation import validate_drop
start = time.perf_counter()
outcome = validate_drop(sys.argv[1], None, "scale", suite="bench_scale")
assert outcome.success, outcome.failures
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(time.perf_counter() - start, int(peak.split()[1]) * 1024)
"""
TARGET = 1 / 3  # GE at most 3x the hand-written checks


def wide_frame(rows: int, numeric: int = 14, categorical: int = 5) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    columns: dict[str, Any] = {f"n{i:02d}": rng.normal(loc=i, scale=1.0 + i / 10, size=rows) for i in range(numeric)}
    for i in range(categorical):
        levels = np.asarray([f"level_{i}_{k}" for k in range(4 + i)], dtype=object)
        columns[f"c{i}"] = pd.array(levels[rng.integers(0, len(levels), rows)], dtype="str")
    columns["label"] = rng.integers(0, 2, rows)
    return pd.DataFrame(columns)


def full_suite(frame: Any, name: str) -> dict[str, Any]:
    """What `ratchet expectations bootstrap` writes for this frame."""
    from ml_tasks.data.validation import bootstrap_suite
    from ml_tasks.datasets import DatasetSpec

    spec = DatasetSpec(
        name=name, description="bench", target="label",
        numeric_features=tuple(c for c in frame.columns if c.startswith("n")),
        categorical_features=tuple(c for c in frame.columns if c.startswith("c")),
        suite=name, registered_model=name,
    )
    return bootstrap_suite(spec, frame)


def twenty_expectations(frame: Any) -> dict[str, Any]:
    full = full_suite(frame, "bench_wide")["expectations"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in full:
        by_kind.setdefault(e["type"], []).append(e)
    wanted = {
        "expect_table_columns_to_match_ordered_list": 1, "expect_table_row_count_to_be_between": 1,
        "expect_column_values_to_be_between": 6, "expect_column_values_to_not_be_null": 4,
        "expect_column_values_to_be_in_set": 4, "expect_column_mean_to_be_between": 2,
        "expect_column_values_to_be_in_type_list": 1, "expect_column_values_to_be_of_type": 1,
    }
    chosen = [e for kind, count in wanted.items() for e in by_kind[kind][:count]]
    assert len(chosen) == 20, len(chosen)
    return {"name": "bench_wide", "expectations": chosen, "meta": {}}


def hand_written(frame: Any, suite: dict[str, Any]) -> list[dict[str, Any]]:
    failures = []
    for e in suite["expectations"]:
        kind, kw = e["type"], e["kwargs"]
        col = frame[kw["column"]] if "column" in kw else None
        bad = None
        if kind == "expect_table_columns_to_match_ordered_list":
            ok = list(frame.columns) == kw["column_list"]
        elif kind == "expect_table_row_count_to_be_between":
            ok = kw["min_value"] <= len(frame) <= kw["max_value"]
        elif kind == "expect_column_values_to_not_be_null":
            bad = col.isna()
        elif kind == "expect_column_values_to_be_in_type_list":
            ok = str(col.dtype) in kw["type_list"]
        elif kind == "expect_column_values_to_be_of_type":
            ok = str(col.dtype) == kw["type_"]
        elif kind == "expect_column_values_to_be_between":
            bad = col.notna() & ~col.between(kw["min_value"], kw["max_value"])
        elif kind == "expect_column_mean_to_be_between":
            ok = kw["min_value"] <= col.mean() <= kw["max_value"]
        elif kind == "expect_column_values_to_be_in_set":
            bad = col.notna() & ~col.isin(kw["value_set"])
        else:
            raise AssertionError(f"no pandas twin for {kind}")
        if bad is not None:
            count = int(bad.sum())
            ok = 1 - count / len(frame) >= kw.get("mostly", 1.0)
            if not ok:
                failures.append({"kind": kind, "unexpected": count, "examples": col[bad].head(5).tolist()})
        elif not ok:
            failures.append({"kind": kind})
    return failures


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RATCHET_HOME"] = str(Path(tmp) / "home")
        os.environ["RATCHET_EXPECTATIONS_DIR"] = str(Path(tmp) / "expectations")
        import great_expectations as gx
        from great_expectations.core import ExpectationSuite
        from great_expectations.data_context.types.base import ProgressBarsConfig

        from ml_tasks.data.validation import speed_up_pandas_engine, validate_frame, write_suite

        frame = wide_frame(ROWS)
        suite = twenty_expectations(frame)
        write_suite(suite)
        broken = frame.copy()
        broken.loc[broken.index[::50], "n00"] = 1e6  # 2% out of range: its range and mean fail

        def ge_default(data: Any) -> bool:
            """GE's documented path: one checkpoint with SUMMARY results (no Data Docs, which only cost it more)."""
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            batch = context.data_sources.add_pandas("d").add_dataframe_asset(name="a").add_batch_definition_whole_dataframe("w")
            gx_suite = context.suites.add(ExpectationSuite(name="s", expectations=suite["expectations"]))
            definition = context.validation_definitions.add(gx.ValidationDefinition(name="v", data=batch, suite=gx_suite))
            checkpoint = context.checkpoints.add(gx.Checkpoint(name="c", validation_definitions=[definition],
                                                               result_format={"result_format": "SUMMARY"}))
            return bool(checkpoint.run(batch_parameters={"dataframe": data}).success)

        def ours(data: Any, docs: str = "always") -> bool:
            return validate_frame(data, "bench_wide", Path(tmp) / "docs", "bench", data_docs=docs).success

        assert not hand_written(frame, suite) and hand_written(broken, suite)
        hand_s = best_of(lambda: hand_written(frame, suite))
        hand_broken_s = best_of(lambda: hand_written(broken, suite))
        assert ge_default(frame)
        default_s = best_of(lambda: ge_default(frame), repeat=2)
        speed_up_pandas_engine()
        fixed_s = best_of(lambda: ge_default(frame), repeat=2)
        assert ours(frame, "never")
        verdicts_s = best_of(lambda: ours(frame, "never"))
        ours_s = best_of(lambda: ours(frame))
        assert not ours(broken)
        ours_broken_s = best_of(lambda: ours(broken))
        print(f"# where the time goes, {ROWS} rows x 20 columns, 20 expectations (hand-written pandas: {hand_s:.3f}s)")
        print(f"# GE default (SUMMARY, one pass): {default_s:.3f}s = {default_s / hand_s:.1f}x hand-written")
        print(f"#  - decimal scan of float columns and whole-frame batch hash removed: {fixed_s:.3f}s")
        print(f"#  - BASIC results, not SUMMARY (counts and 20 examples, no per-value counts), no Data Docs: {verdicts_s:.3f}s")
        print(f"#  - plus Data Docs (ours, default checkpoint): {ours_s:.3f}s")
        print(f"#  with failures (range, mean), ours with Data Docs: {ours_broken_s:.3f}s")
        print(json.dumps({"rows": ROWS, "hand": hand_s, "ge_default": default_s, "ge_fixed": fixed_s,
                          "basic_no_docs": verdicts_s, "ours": ours_s, "ours_with_failure": ours_broken_s}))
        bench_line(f"validation.ge_suite_{ROWS}x20_20_expectations", ours_s, hand_s, target=TARGET)
        bench_line(f"validation.ge_suite_{ROWS}x20_with_failures", ours_broken_s, hand_broken_s, target=TARGET)
        frame = broken = None  # free 1.5 GB before the scale run
        scale(Path(tmp))


def scale(tmp: Path) -> None:
    """Scale: a 5M x 30 Parquet drop through `validate_drop` with its whole bootstrapped suite, in a fresh process."""
    import subprocess

    from ml_tasks.data.validation import write_suite

    frame = wide_frame(ROWS, numeric=SCALE_COLUMNS - 8, categorical=7)
    data_bytes = int(frame.memory_usage(deep=True).sum())
    suite = full_suite(frame, "bench_scale")
    write_suite(suite)
    drop = tmp / "scale_drop"
    drop.mkdir()
    frame.to_parquet(drop / "part-000.parquet", index=False)
    del frame
    out = subprocess.run([sys.executable, "-c", SCALE_PROBE, drop.as_uri()], capture_output=True, text=True, check=True)
    seconds, peak = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
    print(f"# scale: {ROWS} rows x {SCALE_COLUMNS} columns ({data_bytes / 2**30:.2f} GiB in memory), "
          f"{len(suite['expectations'])} expectations, read + validate in {seconds:.1f}s, peak RSS {peak / 2**30:.2f} GiB")
    # A budget (three times the data's in-memory size), not a reference: ours is the peak, the budget beside it.
    bench_line(f"validation.memory_{ROWS}x{SCALE_COLUMNS}_peak_rss_vs_3x_data_budget", peak / 2**20, 3 * data_bytes / 2**20,
               target=1.0, unit="MiB")


if __name__ == "__main__":
    main()
