"""Data stages: validation (Great Expectations), drift, preparation, the fitted transform, landing drops."""
