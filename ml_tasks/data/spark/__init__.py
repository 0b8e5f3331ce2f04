"""The data stages on Apache Spark: validation (GE's Spark engine, the same suites), the drift check and
preparation (Spark aggregations, the same `FittedTransform`). Chosen per data set by `ml_tasks.data.engine`."""
