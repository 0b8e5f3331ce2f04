"""Column expressions shared by the Spark stages (preparation, drift), as the pandas engine reads values."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

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
