"""A first Great Expectations suite from a drop's column profiles (`ratchet datasets add`).

`ml_tasks.data.validation.bootstrap_suite` writes one from a pandas frame; this
one writes the same committed JSON format from the column-wise statistics of
`ml_tasks.datasets.inference`, so a 5M-row drop never has to be one frame:

- the table's columns, as a set (excluded columns included: they are validated, never learned),
  and a row-count band (half to twice this drop);
- per column: not-null (strict where the drop had no nulls, else `mostly` below its null share);
  the type pandas reads (numeric, text, boolean); timestamps get no type check (CSV reads them as text);
- numeric features and a regression target: the drop's range widened by 10% on each side;
- categorical features with at most `VALUE_SET_LIMIT` values: that value set;
- a classification target: its declared classes.

The suite validates the drop it came from; a person reviews it before committing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_tasks.datasets import DatasetSpec
    from ml_tasks.datasets.inference import ColumnProfile

ROW_BAND = (0.5, 2.0)
RANGE_MARGIN = 0.1
FEW_NULLS = 0.005  # up to this share missing: mostly 0.99
# Up to this many distinct values, a categorical's values are listed (expect_column_values_to_be_in_set).
VALUE_SET_LIMIT = 50
NUMERIC, CATEGORICAL = "numeric", "categorical"  # the feature kinds of ml_tasks.datasets.inference
BOOLEAN_TYPES = ["bool", "boolean", "object"]  # pandas reads a boolean column with missing values as object


def _expectation(kind: str, why: str = "", **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"why": why} if why else {}}


def _not_null(p: ColumnProfile) -> dict[str, Any] | None:
    if p.nulls == 0:
        return _expectation("expect_column_values_to_not_be_null", column=p.name)
    share = p.null_fraction
    if share <= FEW_NULLS:
        mostly = 0.99
    else:
        mostly = math.floor(max(0.0, 1.0 - 2 * share) * 1000) / 1000
        if mostly <= 0:
            return None
    return _expectation("expect_column_values_to_not_be_null", why=f"{share:.2%} missing in the first drop",
                        column=p.name, mostly=mostly)


def _type(p: ColumnProfile) -> dict[str, Any] | None:
    from ml_tasks.data.validation import NUMERIC_TYPES, STRING_TYPE

    if p.physical in ("integer", "numeric"):
        return _expectation("expect_column_values_to_be_in_type_list", column=p.name, type_list=NUMERIC_TYPES)
    if p.physical == "string":
        return _expectation("expect_column_values_to_be_of_type", column=p.name, type_=STRING_TYPE)
    if p.physical == "boolean":
        return _expectation("expect_column_values_to_be_in_type_list", column=p.name, type_list=BOOLEAN_TYPES)
    return None  # timestamps (text in CSV), pandas categories: their values are checked, not their dtype


def _range(p: ColumnProfile) -> dict[str, Any] | None:
    if p.minimum is None or p.maximum is None:
        return None
    low, high = p.minimum, p.maximum
    margin = RANGE_MARGIN * (high - low) or RANGE_MARGIN * max(1.0, abs(high))
    wide_low, wide_high = low - margin, high + margin
    if low >= 0 > wide_low:  # a column that is never negative stays so (counts, prices, sizes)
        wide_low = 0.0
    if p.integral:
        wide_low, wide_high = math.floor(wide_low), math.ceil(wide_high)
    else:  # six decimals, never inside the drop's own range
        wide_low, wide_high = min(round(wide_low, 6), low), max(round(wide_high, 6), high)
    low, high = wide_low, wide_high
    return _expectation("expect_column_values_to_be_between", why="the first drop's range widened by 10% each side",
                        column=p.name, min_value=low, max_value=high, mostly=0.999)


def bootstrap_from_profiles(spec: DatasetSpec, profiles: list[ColumnProfile], rows: int, source: str) -> dict[str, Any]:
    """The suite payload (the format of expectations/suites/*.json) for `spec` from the drop's profiles."""
    out = [
        _expectation("expect_table_columns_to_match_set", column_set=[p.name for p in profiles], exact_match=True),
        _expectation("expect_table_row_count_to_be_between", why="half to twice the first drop",
                     min_value=max(1, int(rows * ROW_BAND[0])), max_value=int(rows * ROW_BAND[1])),
    ]
    for p in profiles:
        for e in (_not_null(p), _type(p)):
            if e is not None:
                out.append(e)
        if p.name == spec.target:
            if spec.is_classification:
                values = [p_value for p_value in p.counts]  # the drop's own values (1.0 stays 1.0 in a float column)
                out.append(_expectation("expect_column_values_to_be_in_set", why="the declared classes",
                                        column=p.name, value_set=values))
            else:
                e = _range(p)
                if e is not None:
                    out.append(e)
        elif p.kind == NUMERIC:
            e = _range(p)
            if e is not None:
                out.append(e)
        elif p.kind == CATEGORICAL and p.counts and p.distinct <= VALUE_SET_LIMIT:
            out.append(_expectation("expect_column_values_to_be_in_set", column=p.name, value_set=list(p.counts),
                                    mostly=0.999))
    return {
        "name": spec.suite,
        "expectations": out,
        "meta": {"dataset": spec.name, "bootstrapped_from_rows": rows, "bootstrapped_from": source,
                 "note": "Bootstrapped by `ratchet datasets add`; reviewed and committed by a human."},
        "notes": None,
    }


def bootstrap_checkpoint(name: str) -> dict[str, Any]:
    """The checkpoint beside the suite, the shape of expectations/checkpoints/*.json."""
    return {
        "name": name,
        "suite": name,
        "data_docs": "on_failure",
        "result_format": {"result_format": "BASIC"},
        "notes": "Read by ml_tasks.data.validation. BASIC results carry counts and up to 20 unexpected values. "
                 "data_docs: always | on_failure | never.",
    }
