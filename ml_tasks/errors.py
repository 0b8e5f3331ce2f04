"""Errors that stop a nightly run on purpose, each naming what is wrong.

Errors in `PERMANENT_ERRORS` are not worth retrying: the same input gives the
same answer, and the Airflow glue turns them into non-retried failures. Others
(`StorageError`, `SparkClusterError`, a training process that was killed) are
retried: a rerun resumes from the journal or the last checkpoint.
"""

from __future__ import annotations


class RatchetError(Exception):
    """Base of every error raised on purpose by ml_tasks."""


class DataError(RatchetError):
    """The input data cannot be used: unreadable, empty, or invalid."""


class UnreadableDataError(DataError):
    """A file of the drop cannot be read as CSV or Parquet."""


class DataValidationError(DataError):
    """The drop failed its Great Expectations suite."""

    def __init__(self, message: str, failures: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class DataDriftError(DataError):
    """The drop drifted from the champion's training data beyond thresholds, and the run says stop."""


class UnsafePathError(RatchetError):
    """A path or object key from outside would land outside its root."""


class ConfigError(RatchetError):
    """A parameter or declared configuration is invalid."""


class PromotionConflictError(RatchetError):
    """The champion alias moved between the gate and the promotion."""


class InfraValidationError(RatchetError):
    """A registered version does not load or score as serving would: it is never promoted."""


class StorageError(RatchetError):
    """A sync could not finish; what was copied is journaled and a rerun resumes."""


class SparkClusterError(RatchetError):
    """A stage's Spark job had no executor for too long (the cluster lost its workers): retried, not permanent."""


PERMANENT_ERRORS: tuple[type[RatchetError], ...] = (
    DataError, ConfigError, UnsafePathError, PromotionConflictError, InfraValidationError,
)
