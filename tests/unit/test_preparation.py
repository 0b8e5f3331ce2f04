"""Preparation: declared cleaning policies and their counts, transform parity with serving, augmentation, folds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.config import RunContext
from ml_tasks.constants import PREPARATION_FILE, TEST_FILE, TEST_RAW_FILE, TRAIN_FILE, TRANSFORM_FILE, VALIDATION_SPLIT_FILE
from ml_tasks.data.preparation import FOLDS_FILE, iter_folds, prepare
from ml_tasks.data.transform import MISSING_CATEGORY, FittedTransform
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.errors import ConfigError, DataError, UnreadableDataError
from ml_tasks.storage import local_path

ROWS = 3000


def _frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Synthetic rows with 20 duplicates, 10 missing targets, missing x1 and segment values, and x0 outliers."""
    frame = synthetic.generate(rows, seed=seed)
    rng = np.random.default_rng(seed)
    frame.loc[rng.random(rows) < 0.05, "x1"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "segment"] = None
    frame.loc[frame.index[:5], "x0"] = 1e6
    frame["label"] = frame["label"].astype("float64")
    frame.loc[frame.index[100:110], "label"] = np.nan
    return pd.concat([frame, frame.iloc[200:220]], ignore_index=True)


def _drop(tmp_path: Path, frame: pd.DataFrame, name: str = "drop", parts: int = 1) -> str:
    folder = tmp_path / name
    folder.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[chunk].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return folder.as_uri()


def _read(result, file_name: str) -> pd.DataFrame:
    return pd.read_parquet(local_path(result.prepared_uri) / file_name)


def _transform(result) -> FittedTransform:
    return FittedTransform.from_dict(json.loads((local_path(result.prepared_uri) / TRANSFORM_FILE).read_text()))


def test_defaults_count_every_cleaning_action_and_write_the_contract(ratchet_home, tmp_path):
    frame = _frame()
    result = prepare(RunContext("synthetic", "r1"), _drop(tmp_path, frame))
    assert result.rows_in == ROWS + 20
    assert result.duplicates_dropped == 20
    assert result.missing_target_dropped == 10
    assert result.rows_out == ROWS - 10 == result.train_rows + result.val_rows + result.test_rows
    cleaned = frame.iloc[:ROWS].dropna(subset=["label"])
    assert result.imputed_per_column == {"x1": int(cleaned["x1"].isna().sum()), "segment": int(cleaned["segment"].isna().sum())}
    assert result.missing_values_imputed == sum(result.imputed_per_column.values())
    assert result.clipped_per_column == {} and result.outlier_rows_dropped == 0 and result.augmented_rows == {}
    folder = local_path(result.prepared_uri)
    assert json.loads((folder / PREPARATION_FILE).read_text()) == result.to_dict()
    assert not (folder / FOLDS_FILE).exists()
    train, test_raw = _read(result, TRAIN_FILE), _read(result, TEST_RAW_FILE)
    assert train.shape == (result.train_rows, result.n_features + 1)
    assert list(test_raw.columns) == list(SYNTHETIC.columns) and test_raw["label"].dtype == "int64"
    assert len(test_raw) == result.test_rows
    assert result.policies == {"drop_duplicates": True, "numeric_missing": "median", "categorical_missing": "constant",
                               "outliers": "keep"}


def test_serving_applies_exactly_the_prepared_transform(ratchet_home, tmp_path):
    spec = dataclasses.replace(SYNTHETIC, numeric_missing="mean", categorical_missing="most_frequent", outliers="clip")
    result = prepare(RunContext("synthetic", "r1"), _drop(tmp_path, _frame()), spec=spec)
    transform = _transform(result)  # through JSON, as the pyfunc model loads it
    test_raw, test = _read(result, TEST_RAW_FILE), _read(result, TEST_FILE)
    assert test_raw[["x1", "segment"]].isna().any().all()  # the raw rows still hold what serving must impute
    assert np.array_equal(transform.apply(test_raw[list(SYNTHETIC.features)]), test.drop(columns="label").to_numpy("float32"))


def test_numeric_mean_and_categorical_most_frequent_are_fitted_on_train(ratchet_home, tmp_path):
    spec = dataclasses.replace(SYNTHETIC, numeric_missing="mean", categorical_missing="most_frequent")
    result = prepare(RunContext("synthetic", "r1"), _drop(tmp_path, _frame()), spec=spec)
    transform = _transform(result)
    assert transform.numeric_fill[1] != transform.medians[1]
    assert transform.categorical_fill[0] == "retail"  # the most frequent segment (p=0.5)
    assert MISSING_CATEGORY not in dict(transform.categorical)["segment"]
    raw = pd.DataFrame({**{c: [np.nan] for c in SYNTHETIC.numeric_features}, "segment": [None], "channel": ["web"]})
    out = transform.apply(raw)
    assert out[0, 1] == pytest.approx((transform.numeric_fill[1] - transform.means[1]) / transform.stds[1], rel=1e-6)
    assert out[0, transform.feature_names.index("segment=retail")] == 1.0
    assert result.imputed_per_column["segment"] > 0


def test_drop_row_drops_before_the_split_and_fail_refuses(ratchet_home, tmp_path):
    frame = _frame()
    drop = _drop(tmp_path, frame)
    spec = dataclasses.replace(SYNTHETIC, numeric_missing="drop_row", categorical_missing="drop_row")
    result = prepare(RunContext("synthetic", "r1"), drop, spec=spec)
    cleaned = frame.iloc[:ROWS].dropna(subset=["label"])
    assert result.missing_rows_dropped == int(cleaned[["x1", "segment"]].isna().any(axis=1).sum())
    assert result.rows_out == len(cleaned) - result.missing_rows_dropped
    assert result.missing_values_imputed == 0 and result.imputed_per_column == {}
    assert not _read(result, TEST_RAW_FILE)[["x1", "segment"]].isna().any().any()
    with pytest.raises(DataError, match="missing values a failure.*'x1'"):
        prepare(RunContext("synthetic", "r2"), drop, spec=dataclasses.replace(SYNTHETIC, numeric_missing="fail"))
    with pytest.raises(ConfigError, match="numeric_missing"):
        dataclasses.replace(SYNTHETIC, numeric_missing="zero")


def test_clip_bounds_come_from_train_and_are_saved_in_the_transform(ratchet_home, tmp_path):
    spec = dataclasses.replace(SYNTHETIC, outliers="clip", outlier_quantiles=(0.01, 0.99))
    result = prepare(RunContext("synthetic", "r1"), _drop(tmp_path, _frame()), spec=spec)
    transform = _transform(result)
    low, high = transform.clip_low[0], transform.clip_high[0]
    assert 1.5 < high < 4 and -4 < low < -1.5  # x0 is standard normal; the 1e6 outliers do not move the 99% quantile
    # about 1% beyond each bound in train, and beyond the train bounds in val and test
    assert 0.02 * result.rows_out * 0.8 < result.clipped_per_column["x0"] < 0.02 * result.rows_out * 1.3
    assert result.outliers_per_column["x0"] > 0
    served = transform.apply(pd.DataFrame({**{c: [1e6, -1e6] for c in SYNTHETIC.numeric_features},
                                           "segment": ["retail"] * 2, "channel": ["web"] * 2}))
    assert served[0, 0] == np.float32((high - transform.means[0]) / transform.stds[0])
    assert served[1, 0] == np.float32((low - transform.means[0]) / transform.stds[0])
    assert _read(result, TRAIN_FILE)["x0"].max() <= served[0, 0]


def test_outlier_drop_touches_train_only(ratchet_home, tmp_path):
    drop = _drop(tmp_path, _frame())
    kept = prepare(RunContext("synthetic", "keep"), drop)
    spec = dataclasses.replace(SYNTHETIC, outliers="drop_row", outlier_method="iqr", outlier_iqr_factor=3.0)
    dropped = prepare(RunContext("synthetic", "drop"), drop, spec=spec)
    assert dropped.outlier_rows_dropped > 0
    assert dropped.train_rows == kept.train_rows - dropped.outlier_rows_dropped
    assert (dropped.val_rows, dropped.test_rows) == (kept.val_rows, kept.test_rows)
    assert _read(dropped, TEST_RAW_FILE).equals(_read(kept, TEST_RAW_FILE))
    assert _transform(dropped).clip_low == []  # nothing to clip at serving
    iqr_max = _read(dropped, TRAIN_FILE)["x0"].max() * _transform(dropped).stds[0] + _transform(dropped).means[0]
    assert iqr_max < 10


def test_augmentation_adds_seeded_rows_to_train_only(ratchet_home, tmp_path):
    frame = _frame()
    frame["label"] = np.where(frame.index % 4 == 0, frame["label"], 0.0)  # make class 1 the minority
    drop = _drop(tmp_path, frame)
    plain = prepare(RunContext("synthetic", "plain"), drop)
    augment = {"smote": {"ratio": 0.8, "k": 3}, "noise": {"copies": 1, "fraction": 0.5, "scale": 0.1}}
    first = prepare(RunContext("synthetic", "a1"), drop, augment=augment)
    again = prepare(RunContext("synthetic", "a2"), drop, augment=augment)
    other_seed = prepare(RunContext("synthetic", "a3"), drop, seed=1, augment=augment)
    real = plain.train_rows
    assert first.augmented_rows["noise"] == -(-real // 2)
    assert first.train_rows == real + first.augmented_rows["noise"] + first.augmented_rows["smote"]
    train = _read(first, TRAIN_FILE)
    before = _read(plain, TRAIN_FILE)
    assert train.iloc[:real].equals(before)  # the real rows, untouched
    counts = train.iloc[: real + first.augmented_rows["smote"]]["label"].value_counts()
    assert counts.min() / counts.max() == pytest.approx(0.8, abs=0.001)
    smote = train.iloc[real: real + first.augmented_rows["smote"]]
    assert (smote["label"] == 1).all()
    numeric = list(SYNTHETIC.numeric_features)
    assert not smote[numeric].isin(before[numeric]).all(axis=1).any()  # interpolated, not copied
    for column in SYNTHETIC.categorical_features:  # categoricals copied from one row: still one-hot
        one_hot = smote[[c for c in train.columns if c.startswith(f"{column}=")]]
        assert one_hot.isin([0.0, 1.0]).all().all() and (one_hot.sum(axis=1) == 1).all()
    for name in (VALIDATION_SPLIT_FILE, TEST_FILE, TEST_RAW_FILE):
        assert _read(first, name).equals(_read(plain, name))
    assert first.split_fingerprints == again.split_fingerprints
    assert first.split_fingerprints["val"] == plain.split_fingerprints["val"]
    assert first.split_fingerprints["train"] != plain.split_fingerprints["train"]
    assert other_seed.split_fingerprints["train"] != first.split_fingerprints["train"]
    with pytest.raises(ConfigError, match="unknown augmentation"):
        prepare(RunContext("synthetic", "bad"), drop, augment={"mixup": {}})


def test_folds_are_stratified_deterministic_and_keep_augmented_rows_out_of_validation(ratchet_home, tmp_path):
    drop = _drop(tmp_path, _frame())
    result = prepare(RunContext("synthetic", "f1"), drop, cv_folds=5, augment={"noise": {"fraction": 0.2}})
    again = prepare(RunContext("synthetic", "f2"), drop, cv_folds=5, augment={"noise": {"fraction": 0.2}})
    labels = _read(result, TRAIN_FILE)["label"].to_numpy()
    real = result.train_rows - result.augmented_rows["noise"]
    folds = list(iter_folds(result.prepared_uri))
    assert len(folds) == result.cv_folds == 5
    held_out = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(held_out), np.arange(real))  # every real row validates exactly once
    overall = labels[:real].mean()
    for train_idx, val_idx in folds:
        assert np.intersect1d(train_idx, val_idx).size == 0
        assert abs(labels[val_idx].mean() - overall) < 0.01
        assert (train_idx >= real).any()  # augmented rows train
    for (t1, v1), (t2, v2) in zip(folds, iter_folds(again.prepared_uri), strict=True):
        assert np.array_equal(t1, t2) and np.array_equal(v1, v2)
    plain = prepare(RunContext("synthetic", "f3"), drop)
    with pytest.raises(DataError, match="without cross-validation folds"):
        next(iter_folds(plain.prepared_uri))


def test_fingerprint_depends_on_the_data_not_on_the_files(ratchet_home, tmp_path):
    frame = _frame()
    one = prepare(RunContext("synthetic", "a"), _drop(tmp_path, frame, "one"))
    three = prepare(RunContext("synthetic", "b"), _drop(tmp_path, frame, "three", parts=3))
    changed = frame.copy()
    changed.loc[0, "x2"] += 1.0
    other = prepare(RunContext("synthetic", "c"), _drop(tmp_path, changed, "changed"))
    assert one.fingerprint == three.fingerprint
    assert one.split_fingerprints == three.split_fingerprints
    assert other.fingerprint != one.fingerprint


def test_unreadable_and_incomplete_drops_name_the_problem(ratchet_home, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "part-000.parquet").write_bytes(b"")
    with pytest.raises(UnreadableDataError, match="part-000.parquet: the file is empty"):
        prepare(RunContext("synthetic", "r1"), folder.as_uri())
    (folder / "part-000.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UnreadableDataError, match="part-000.parquet: not readable as Parquet"):
        prepare(RunContext("synthetic", "r1"), folder.as_uri())
    with pytest.raises(DataError, match=r"lacks declared columns \['channel'\]"):
        prepare(RunContext("synthetic", "r1"), _drop(tmp_path, _frame().drop(columns="channel"), "partial"))


def test_csv_drops_and_integer_categoricals_match_parquet(ratchet_home, tmp_path):
    frame = _frame().dropna(subset=["label"]).reset_index(drop=True)
    frame["label"] = frame["label"].astype("int64")
    frame["channel"] = pd.factorize(frame["channel"])[0] + 1
    csv = tmp_path / "csv"
    csv.mkdir()
    frame.to_csv(csv / "part-000.csv", index=False)
    from_csv = prepare(RunContext("synthetic", "csv"), csv.as_uri())
    from_parquet = prepare(RunContext("synthetic", "pq"), _drop(tmp_path, frame))
    assert from_csv.split_fingerprints == from_parquet.split_fingerprints
    assert _transform(from_csv).categorical[1] == ("channel", ["1", "2", "3", "4"])
    assert _read(from_csv, TEST_RAW_FILE)["channel"].dtype == "int64"


def _kind_spec(task: str) -> object:
    if task == "multiclass":
        return dataclasses.replace(SYNTHETIC, name="tiers", task="multiclass", target="tier", classes=synthetic.TIERS,
                                   primary_metric="f1_macro", easy_cases=(), absolute_thresholds={}, change_thresholds={})
    return dataclasses.replace(SYNTHETIC, name="amounts", task="regression", target="amount", classes=(),
                               primary_metric="rmse", easy_cases=(), absolute_thresholds={}, change_thresholds={})


def test_a_multiclass_target_is_coded_in_declared_order_and_split_stratified(ratchet_home, tmp_path):
    spec = _kind_spec("multiclass")
    frame = synthetic.generate_multiclass(ROWS, seed=3)
    frame.loc[frame.index[:7], "tier"] = None
    result = prepare(RunContext("synthetic", "mc"), _drop(tmp_path, frame), spec=spec, cv_folds=3)
    assert result.missing_target_dropped == 7 and result.positive_rate is None and result.task == "multiclass"
    assert sum(result.class_counts.values()) == result.rows_out and set(result.class_counts) == set(synthetic.TIERS)
    shares = {}
    for name in (TRAIN_FILE, VALIDATION_SPLIT_FILE, TEST_FILE):
        labels = _read(result, name)["tier"].to_numpy()
        assert labels.dtype == np.int64 and set(labels) <= {0, 1, 2, 3}
        shares[name] = np.bincount(labels, minlength=4) / len(labels)
    assert np.abs(shares[TRAIN_FILE] - shares[TEST_FILE]).max() < 0.02  # stratified
    raw = _read(result, TEST_RAW_FILE)
    assert set(raw["tier"]) <= set(synthetic.TIERS)  # the held-out raw rows keep the target's own values
    codes = _read(result, TEST_FILE)["tier"].to_numpy()
    assert [synthetic.TIERS[c] for c in codes] == raw["tier"].tolist()


def test_an_undeclared_class_is_refused_naming_its_rows(ratchet_home, tmp_path):
    frame = synthetic.generate_multiclass(ROWS, seed=3)
    frame.loc[frame.index[:4], "tier"] = "diamond"
    with pytest.raises(DataError, match=r"values the declaration does not list \(rows per value: \{'diamond': 4\}\)"):
        prepare(RunContext("synthetic", "mc"), _drop(tmp_path, frame), spec=_kind_spec("multiclass"))


def test_a_regression_target_keeps_its_values_and_drops_missing_ones(ratchet_home, tmp_path):
    spec = _kind_spec("regression")
    frame = synthetic.generate_regression(ROWS, seed=4, missing_target=0.02)
    missing = int(frame["amount"].isna().sum())
    result = prepare(RunContext("synthetic", "reg"), _drop(tmp_path, frame), spec=spec, cv_folds=3)
    assert missing > 0 and result.missing_target_dropped == missing and result.class_counts == {}
    assert abs(result.target_summary["mean"] - frame["amount"].mean()) < 10
    train = _read(result, TRAIN_FILE)["amount"].to_numpy()
    assert train.dtype == np.float64 and len(np.unique(train)) > 100  # values, not classes
    assert _read(result, TEST_RAW_FILE)["amount"].tolist() == _read(result, TEST_FILE)["amount"].tolist()
    folds = pd.read_parquet(local_path(result.prepared_uri) / FOLDS_FILE)
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    with pytest.raises(ConfigError, match="regression: SMOTE"):
        prepare(RunContext("synthetic", "reg2"), _drop(tmp_path, frame, "again"), spec=spec,
                augment={"smote": {"ratio": 1.0}})
