"""Validation: the committed Great Expectations suite against the same checks in pandas.

Both evaluate the synthetic suite's expectations (columns and order, row
count, nulls, types, ranges, means, allowed categories) on the same frame.
GE's import (~5 s) is excluded: a validation task pays it once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line, best_of

ROWS = int(os.environ.get("BENCH_VALIDATION_ROWS", "1000000"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RATCHET_HOME"] = str(Path(tmp) / "home")
        import great_expectations  # noqa: F401  (import cost excluded)

        from ml_tasks.datasets import synthetic
        from ml_tasks.validation import suite_path, validate_frame

        frame = synthetic.generate(ROWS, seed=1)
        suite = json.loads(suite_path("synthetic").read_text())

        def ours() -> None:
            ok, _, _ = validate_frame(frame, "synthetic", Path(tmp) / "docs", "bench")
            assert ok

        def hand_written() -> None:
            failures = []
            for e in suite["expectations"]:
                kind, kw = e["type"], e["kwargs"]
                col = frame[kw["column"]] if "column" in kw else None
                if kind == "expect_table_columns_to_match_ordered_list":
                    ok = list(frame.columns) == kw["column_list"]
                elif kind == "expect_table_row_count_to_be_between":
                    ok = kw["min_value"] <= len(frame) <= kw["max_value"]
                elif kind == "expect_column_values_to_not_be_null":
                    ok = col.notna().mean() >= kw.get("mostly", 1.0)
                elif kind == "expect_column_values_to_be_in_type_list":
                    ok = str(col.dtype) in kw["type_list"]
                elif kind == "expect_column_values_to_be_of_type":
                    ok = str(col.dtype) == kw["type_"]
                elif kind == "expect_column_values_to_be_between":
                    ok = col.between(kw["min_value"], kw["max_value"]).mean() >= kw.get("mostly", 1.0)
                elif kind == "expect_column_mean_to_be_between":
                    ok = kw["min_value"] <= col.mean() <= kw["max_value"]
                elif kind == "expect_column_values_to_be_in_set":
                    ok = col.isin(kw["value_set"]).mean() >= kw.get("mostly", 1.0)
                else:
                    raise AssertionError(f"no pandas twin for {kind}")
                if not ok:
                    failures.append(kind)
            assert not failures, failures

        ours()
        hand_written()
        bench_line(f"validation.ge_suite_{ROWS}_rows", best_of(ours), best_of(hand_written), target=0.2)


if __name__ == "__main__":
    main()
