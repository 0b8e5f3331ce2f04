"""Column expressions shared by the Spark stages (preparation, drift), as the pandas engine reads values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# percentile_approx's accuracy: the rank of a returned quantile is within rows / accuracy of the exact one.
QUANTILE_ACCURACY = 10_000
RELATIVE_ERROR = 1.0 / QUANTILE_ACCURACY


def col(name: str) -> Column:
    """A column by its exact name (dots and spaces in data set columns are not struct access)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def numeric_value(name: str) -> Column:
    """A numeric column as double, NaN read as missing (as the pandas engine reads it)."""
    from pyspark.sql import functions as F

    return F.nanvl(col(name).cast("double"), F.lit(None).cast("double"))


def value_counts(frame: DataFrame, names: list[str], by: Column, groups: int) -> dict[str, tuple[dict[Any, list[int]], list[int]]]:
    """Per column: each raw value's row count in each group of `by` (0..groups-1), and the missing values per group.

    One job for every column (grouping sets), values in their own types, so `category_text` spells them as the
    pandas engine does."""
    from pyspark.sql import functions as F

    aliases = [f"_v{i}" for i in range(len(names))]
    out: dict[str, tuple[dict[Any, list[int]], list[int]]] = {n: ({}, [0] * groups) for n in names}
    if not names:
        return out
    selected = frame.select(by.alias("_by"), *[col(n).alias(a) for n, a in zip(names, aliases, strict=True)])
    grouped = selected.groupingSets([("_by", a) for a in aliases], "_by", *aliases).agg(
        F.count(F.lit(1)).alias("_n"), *[F.grouping(a).alias(f"_g{i}") for i, a in enumerate(aliases)])
    for row in grouped.collect():
        i = next(i for i in range(len(names)) if row[f"_g{i}"] == 0)
        counts, missing = out[names[i]]
        value, group, n = row[aliases[i]], int(row["_by"]), int(row["_n"])
        if value is None or (isinstance(value, float) and value != value):
            missing[group] += n
        else:
            counts.setdefault(value, [0] * groups)[group] += n
    return out
