"""Clean, split and transform a validated drop into train/val/test sets.

The split is stratified and seeded, so the same drop always gives the same
rows; the transform is fitted on the training split only. The test split is
also kept raw, so the candidate and the champion (each with its own
transform) are scored on exactly the same held-out rows.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ml_tasks.config import RunContext
from ml_tasks.constants import (
    PREPARATION_FILE,
    TAG_FINGERPRINT,
    TEST_FILE,
    TEST_RAW_FILE,
    TRAIN_FILE,
    TRANSFORM_FILE,
    VALIDATION_SPLIT_FILE,
)
from ml_tasks.datasets import DatasetSpec, get_dataset
from ml_tasks.errors import DataError
from ml_tasks.io import atomic_dir, read_drop, write_json
from ml_tasks.transform import FittedTransform

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_ROWS_PER_SPLIT = 20


@dataclass(frozen=True)
class PreparedData:
    prepared_uri: str
    fingerprint: str
    rows_in: int
    rows_out: int
    duplicates_dropped: int
    missing_target_dropped: int
    missing_values_imputed: int
    train_rows: int
    val_rows: int
    test_rows: int
    n_features: int
    positive_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the cleaned data: same rows, columns and types, same hash."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def clean(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, dict[str, int]]:
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(f"drop lacks declared columns {missing} of dataset {spec.name!r}")
    out = frame[list(spec.columns)]
    counts = {"duplicates_dropped": 0, "missing_target_dropped": 0, "missing_values_imputed": 0}
    if spec.drop_duplicates:
        before = len(out)
        out = out.drop_duplicates()
        counts["duplicates_dropped"] = before - len(out)
    before = len(out)
    out = out[out[spec.target].notna()]
    counts["missing_target_dropped"] = before - len(out)
    counts["missing_values_imputed"] = int(out[list(spec.features)].isna().sum().sum())
    out = out.reset_index(drop=True)
    out[spec.target] = out[spec.target].astype("int64")
    return out, counts


def split(frame: pd.DataFrame, target: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded train/val/test split (70/15/15)."""
    from sklearn.model_selection import train_test_split

    labels = frame[target]
    if labels.nunique() < 2:
        raise DataError(f"target {target!r} has a single class ({labels.iloc[0]!r}); nothing to learn")
    if labels.value_counts().min() < MIN_ROWS_PER_SPLIT:
        raise DataError(f"target {target!r}: the rarest class has fewer than {MIN_ROWS_PER_SPLIT} rows")
    train, rest = train_test_split(frame, test_size=1 - SPLIT_FRACTIONS[0], stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest[target], random_state=seed)
    return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


def _matrix_frame(transform: FittedTransform, part: pd.DataFrame, target: str) -> pd.DataFrame:
    import pandas as pd

    matrix = pd.DataFrame(transform.apply(part), columns=transform.feature_names)
    matrix[target] = part[target].to_numpy()
    return matrix


def prepare(ctx: RunContext, staging_uri: str, seed: int = 0) -> PreparedData:
    """Read the staged drop, clean, split, fit the transform, write the prepared sets."""
    from ml_tasks.storage import local_path

    spec = get_dataset(ctx.dataset)
    raw = read_drop(local_path(staging_uri))
    cleaned, counts = clean(raw, spec)
    train, val, test = split(cleaned, spec.target, seed)
    transform = FittedTransform.fit(train, list(spec.numeric_features), list(spec.categorical_features))
    digest = fingerprint(cleaned)
    target_dir = ctx.prepared_dir
    with atomic_dir(target_dir) as tmp:
        _matrix_frame(transform, train, spec.target).to_parquet(tmp / TRAIN_FILE, index=False)
        _matrix_frame(transform, val, spec.target).to_parquet(tmp / VALIDATION_SPLIT_FILE, index=False)
        _matrix_frame(transform, test, spec.target).to_parquet(tmp / TEST_FILE, index=False)
        test.to_parquet(tmp / TEST_RAW_FILE, index=False)
        write_json(tmp / TRANSFORM_FILE, transform.to_dict())
        result = PreparedData(
            prepared_uri=target_dir.as_uri(),
            fingerprint=digest,
            rows_in=len(raw),
            rows_out=len(cleaned),
            train_rows=len(train),
            val_rows=len(val),
            test_rows=len(test),
            n_features=len(transform.feature_names),
            positive_rate=round(float(cleaned[spec.target].mean()), 6),
            **counts,
        )
        write_json(tmp / PREPARATION_FILE, result.to_dict())
    log.info("prepared %s: %s rows in, %s out (train %s, val %s, test %s), %s features, fingerprint %s",
             ctx.tracking_key, len(raw), len(cleaned), len(train), len(val), len(test),
             len(transform.feature_names), digest[:12])
    return result


def log_to_mlflow(run_id: str, ctx: RunContext, prepared: PreparedData) -> None:
    """Record what data made this run: `log_input` with the fingerprint, and the counts."""
    import mlflow
    import pandas as pd

    from ml_tasks.storage import local_path

    spec = get_dataset(ctx.dataset)
    folder = local_path(prepared.prepared_uri)
    with mlflow.start_run(run_id=run_id):
        train = pd.read_parquet(folder / TRAIN_FILE)
        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            train, source=prepared.prepared_uri, targets=spec.target, name=f"{ctx.dataset}-train", digest=prepared.fingerprint[:36]
        )
        mlflow.log_input(dataset, context="training", tags={"fingerprint": prepared.fingerprint})
        mlflow.set_tag(TAG_FINGERPRINT, prepared.fingerprint)
        mlflow.log_params({
            "data.rows_in": prepared.rows_in, "data.rows_out": prepared.rows_out,
            "data.train_rows": prepared.train_rows, "data.val_rows": prepared.val_rows,
            "data.test_rows": prepared.test_rows, "data.n_features": prepared.n_features,
        })
        mlflow.log_metrics({
            "data.duplicates_dropped": prepared.duplicates_dropped,
            "data.missing_values_imputed": prepared.missing_values_imputed,
            "data.positive_rate": prepared.positive_rate,
        })
