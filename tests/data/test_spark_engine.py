"""The Spark engine agrees with the pandas engine: the same suite's verdicts, the same transform within the stated
error, the same split sizes, models of the same quality, the same refusals of bad input.

Real Spark (`local[2]`, a JVM started by pyspark), real Great Expectations (its Spark engine), real Parquet. The
standalone cluster and the nightly DAG on it are in tests/integration/test_spark_cluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.config import RunContext
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.datasets.corruption import corrupt
from ml_tasks.errors import DataError, DataValidationError

pytestmark = [pytest.mark.integration]

ROWS = 12_000
LOCAL = "local[2]"


@pytest.fixture(scope="module")
def spark(module_home):
    from ml_tasks.data.spark.session import SparkOptions, spark_session

    # Tests' drops are thousands of rows: a few shuffle partitions, not the default's 16 tasks per shuffle.
    options = SparkOptions(master=LOCAL, conf={"spark.sql.shuffle.partitions": "4"})
    with spark_session(options, app_name="ratchet-tests") as session:
        yield session


def _drop(home: Path, name: str, frame: pd.DataFrame, parts: int = 2) -> Path:
    folder = home / "staging" / "synthetic" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[chunk].to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder


def _validate(folder: Path, engine: str, key: str):
    """`validate`, what the data_validation DAG and `ratchet validate --engine` call."""
    from ml_tasks.data.spark.session import SparkOptions
    from ml_tasks.data.validation import validate

    try:  # the module's session is reused (same master), not stopped
        return validate(folder.as_uri(), SYNTHETIC.suite, key, engine=engine, spark=SparkOptions(master=LOCAL),
                        data_docs="never")
    except DataValidationError as exc:
        return exc


def _verdict(outcome) -> set[tuple[str, str | None, int | None]]:
    failures = outcome.failures if isinstance(outcome, DataValidationError) else []
    return {(f["expectation"], f.get("column"), f.get("unexpected_count")) for f in failures}


def _damaged(frame: pd.DataFrame) -> pd.DataFrame:
    """Four faults in one drop (one Spark validation, not four): text in x0, 30% nulls in x1, unseen channels,
    no segment column."""
    from dataclasses import replace

    frame = corrupt(frame, SYNTHETIC, "wrong_type", seed=1)
    frame = corrupt(frame, replace(SYNTHETIC, numeric_features=("x1",)), "nulls", seed=2)
    frame = corrupt(frame, replace(SYNTHETIC, categorical_features=("channel",)), "unseen_category", seed=3)
    return corrupt(frame, SYNTHETIC, "missing_column")


@pytest.mark.parametrize("damage", ["none", "four faults", "replayed rows"])
def test_one_suite_gives_the_same_verdicts_on_both_engines(module_home, spark, damage):
    frame = synthetic.generate(3000, seed=5)
    if damage == "four faults":
        frame = _damaged(frame)
    elif damage == "replayed rows":  # every replayed row has a twin: the compound uniqueness check counts them
        frame = corrupt(frame, SYNTHETIC, "duplicate_flood", seed=6)
    damaged = damage != "none"
    key = damage.replace(" ", "-")
    folder = _drop(module_home, f"validate-{key}", frame)
    on_pandas = _validate(folder, "pandas", f"pandas-{key}")
    on_spark = _validate(folder, "spark", f"spark-{key}")
    assert isinstance(on_spark, DataValidationError) is damaged
    assert isinstance(on_pandas, DataValidationError) is damaged
    assert _verdict(on_spark) == _verdict(on_pandas)
    if not damaged:
        assert on_spark.engine == "spark" and on_spark.evaluated == on_pandas.evaluated and on_spark.rows == 3000
        return
    if damage == "replayed rows":
        assert ("expect_compound_columns_to_be_unique", None, 3000) in _verdict(on_spark), _verdict(on_spark)
    else:
        assert {column for _, column, _ in _verdict(on_spark)} == {None, "x0", "x1", "channel", "segment"}

    def lines(outcome):
        # The message names the expectation, the column and the counts as on pandas; types are in GE's engine's
        # terms, and a missing value's example reads 'nan' in pandas and 'None' in Spark.
        return [line.split(", observed")[0].split(", e.g.")[0] for line in str(outcome).splitlines()[:-1]]

    assert lines(on_spark) == lines(on_pandas)


@pytest.fixture(scope="module")
def prepared_both(module_home, spark):
    """One drop with missing values, prepared by each engine."""
    from ml_tasks.data import preparation
    from ml_tasks.data.spark import preparation as spark_preparation

    frame = synthetic.generate(ROWS, seed=3)
    frame.loc[::97, "x1"] = np.nan
    frame.loc[::89, "segment"] = None
    folder = _drop(module_home, "prepare", frame, parts=3)
    on_pandas = preparation.prepare(RunContext("synthetic", "pandas"), folder.as_uri())
    on_spark = spark_preparation.prepare(RunContext("synthetic", "spark"), folder.as_uri(), spark)
    return folder, on_pandas, on_spark


def _folder(prepared) -> Path:
    from ml_tasks.storage import local_path

    return local_path(prepared.prepared_uri)


def _transform(prepared):
    from ml_tasks.data.transform import FittedTransform

    return FittedTransform.from_dict(json.loads((_folder(prepared) / "transform.json").read_text()))


def test_both_engines_count_split_and_write_the_same_sets(prepared_both):
    _, on_pandas, on_spark = prepared_both
    assert on_spark.engine == "spark" and on_pandas.engine == "pandas"
    for field in ("rows_in", "rows_out", "duplicates_dropped", "missing_target_dropped", "n_features", "class_counts",
                  "imputed_per_column", "missing_values_imputed", "positive_rate", "policies"):
        assert getattr(on_spark, field) == getattr(on_pandas, field), field
    # Split sizes: each class cut at its approximate hash quantiles, within the stated rank error (plus a row).
    for field in ("train_rows", "val_rows", "test_rows"):
        assert abs(getattr(on_spark, field) - getattr(on_pandas, field)) <= 2 + ROWS * on_spark.approximations[
            "quantile_relative_error"], field
    for name in ("train.parquet", "val.parquet", "test.parquet", "test_raw.parquet"):
        ours, theirs = (pd.read_parquet(_folder(p) / name) for p in (on_spark, on_pandas))
        assert list(ours.columns) == list(theirs.columns) and dict(ours.dtypes) == dict(theirs.dtypes), name
    assert _transform(on_spark).feature_names == _transform(on_pandas).feature_names
    assert _transform(on_spark).categorical == _transform(on_pandas).categorical


def test_the_split_is_stratified_and_a_rerun_writes_the_same_sets(module_home, prepared_both, spark):
    from ml_tasks.data.spark import preparation as spark_preparation

    folder, _, on_spark = prepared_both
    train = pd.read_parquet(_folder(on_spark) / "train.parquet")
    for label, count in on_spark.class_counts.items():
        share = int((train["label"] == int(label)).sum()) / count
        assert abs(share - 0.70) < 0.002, (label, share)
    again = spark_preparation.prepare(RunContext("synthetic", "spark"), folder.as_uri(), spark)
    assert again.split_fingerprints == on_spark.split_fingerprints and again.fingerprint == on_spark.fingerprint
    assert not list(_folder(on_spark).parent.glob(".spark.*")), "a temporary folder was left behind"


def test_the_transform_is_exact_on_its_training_rows_and_its_medians_within_the_stated_error(prepared_both):
    """Mean and std are exact sums; a median is a value whose rank is within relative_error x rows of the middle."""
    _, _, on_spark = prepared_both
    transform = _transform(on_spark)
    train = pd.read_parquet(_folder(on_spark) / "train.parquet")
    error = on_spark.approximations["quantile_relative_error"]
    for j, name in enumerate(transform.numeric):
        standardised = train[name].to_numpy("float64")
        assert abs(standardised.mean()) < 1e-5 and abs(standardised.std() - 1.0) < 1e-5, name
        values = standardised * transform.stds[j] + transform.means[j]  # the imputed training values
        present = np.sort(values[~np.isclose(values, transform.numeric_fill[j], atol=1e-5)])
        rank = np.searchsorted(present, transform.medians[j]) / len(present)
        assert abs(rank - 0.5) <= error + 2 / len(present), (name, rank)


def test_both_engines_fit_the_same_transform_within_the_sampling_of_their_splits(prepared_both):
    _, on_pandas, on_spark = prepared_both
    ours, theirs = _transform(on_spark), _transform(on_pandas)
    # Different rows train on each engine (a hash split, a seeded shuffle): statistics of two 70% samples of the
    # same rows differ by a few standard errors of a mean (std 1, 8,400 rows: about 0.01).
    np.testing.assert_allclose(ours.means, theirs.means, atol=0.05)
    np.testing.assert_allclose(ours.stds, theirs.stds, atol=0.05)
    np.testing.assert_allclose(ours.medians, theirs.medians, atol=0.06)


def test_models_trained_on_either_engines_sets_score_alike(prepared_both):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    scores = {}
    for prepared in prepared_both[1:]:
        train, test = (pd.read_parquet(_folder(prepared) / f) for f in ("train.parquet", "test.parquet"))
        model = LogisticRegression(max_iter=500).fit(train.drop(columns="label"), train["label"])
        scores[prepared.engine] = roc_auc_score(test["label"], model.predict_proba(test.drop(columns="label"))[:, 1])
    assert scores["spark"] > 0.8 and abs(scores["spark"] - scores["pandas"]) < 0.02, scores


def test_the_drift_reference_has_the_same_shape_and_close_distributions(prepared_both):
    _, on_pandas, on_spark = prepared_both
    ours, theirs = (json.loads((_folder(p) / "drift_reference.json").read_text()) for p in (on_spark, on_pandas))
    assert set(ours) >= set(theirs) and ours["engine"] == "spark"
    for name in SYNTHETIC.numeric_features:
        assert len(ours["numeric"][name]["quantiles"]) == len(theirs["numeric"][name]["quantiles"])
        np.testing.assert_allclose(ours["numeric"][name]["bin_fractions"], theirs["numeric"][name]["bin_fractions"],
                                   atol=0.02)
        assert abs(ours["numeric"][name]["null_fraction"] - theirs["numeric"][name]["null_fraction"]) < 0.005
    assert set(ours["categorical"]["segment"]["frequencies"]) == set(theirs["categorical"]["segment"]["frequencies"])
    assert set(ours["label"]["frequencies"]) == {"0", "1"}


def test_the_drift_reference_on_spark_is_the_pandas_engines_on_the_same_rows(module_home, spark, monkeypatch):
    """Up to SKETCH_ROWS values a column's edges and sketch come from all its values, sorted, as on pandas; above,
    from a seeded uniform sample, while moments and bin fractions stay exact over every row."""
    from ml_tasks.data import drift
    from ml_tasks.data.spark import drift as spark_drift
    from ml_tasks.data.spark.frames import read_drop

    frame = synthetic.generate(5000, seed=6)
    frame.loc[::13, "x2"] = np.nan
    frame.loc[::7, "x3"] = np.inf
    training = read_drop(spark, _drop(module_home, "reference", frame))
    theirs = drift.compute_reference(frame, SYNTHETIC)
    ours = spark_drift.compute_reference(training, SYNTHETIC)
    for name in SYNTHETIC.numeric_features:
        mine, pandas_side = ours["numeric"][name], theirs["numeric"][name]
        assert mine["sketch_exact"] and mine["count"] == pandas_side["count"], name
        assert mine["edges"] == pandas_side["edges"] and mine["quantiles"] == pandas_side["quantiles"], name
        assert mine["bin_fractions"] == pytest.approx(pandas_side["bin_fractions"], abs=1e-12), name
        for key in ("mean", "std", "min", "max", "null_fraction"):
            assert mine[key] == pytest.approx(pandas_side[key], rel=1e-9), (name, key)
    assert ours["categorical"] == theirs["categorical"] and ours["label"] == theirs["label"]

    sketch_rows = 1000
    monkeypatch.setattr(drift, "SKETCH_ROWS", sketch_rows)
    sampled = spark_drift.compute_reference(training, SYNTHETIC)
    # The Dvoretzky-Kiefer-Wolfowitz band of a 1,000-value sample at 99.9 %: sqrt(ln(2/0.001) / 2000).
    band = float(np.sqrt(np.log(2 / 0.001) / (2 * sketch_rows)))
    for name in SYNTHETIC.numeric_features:
        mine = sampled["numeric"][name]
        values = np.sort(drift._numeric_values(frame, name))
        assert not mine["sketch_exact"] and mine["min"] == values[0] and mine["quantiles"][-1] == values[-1], name
        assert mine["bin_fractions"] == pytest.approx(drift.bin_fractions(values, mine["edges"]), abs=1e-12), name
        levels = np.arange(1, len(mine["quantiles"])) / (len(mine["quantiles"]) - 1)
        exact_cdf = np.searchsorted(values, mine["quantiles"][1:], side="right") / len(values)
        assert np.max(np.abs(exact_cdf - levels)) <= band + 1 / sketch_rows, name
    assert spark_drift.compute_reference(training, SYNTHETIC)["numeric"] == sampled["numeric"]  # seeded


def test_the_drift_check_on_spark_measures_a_drop_as_pandas_does(module_home, prepared_both, spark):
    from ml_tasks.data import drift
    from ml_tasks.data.spark.drift import compare_drop

    _, _, on_spark = prepared_both
    reference = json.loads((_folder(on_spark) / "drift_reference.json").read_text())
    frame = synthetic.generate(4000, seed=9, drift=0.5)
    folder = _drop(module_home, "drifted", frame)
    ours = compare_drop(spark, folder, reference, SYNTHETIC)
    theirs = drift.compare(reference, frame, SYNTHETIC)
    assert ours.drifted_features == theirs.drifted_features and "x0" in ours.drifted_features
    for name, stats in theirs.features.items():
        assert ours.features[name]["psi"] == pytest.approx(stats["psi"], abs=1e-9), name


@pytest.mark.parametrize(("change", "expected"), [
    (lambda f: f.assign(x2=f["x2"].map(lambda v: f"{v:.1f} units")), "numeric column 'x2' holds non-numeric values"),
    (lambda f: f.assign(label=f["label"].where(f.index % 50 != 0, 7)), "target 'label' has values the declaration does not list"),
])
def test_bad_input_is_refused_naming_the_column_as_on_pandas(module_home, spark, change, expected):
    from ml_tasks.data import preparation
    from ml_tasks.data.spark import preparation as spark_preparation

    folder = _drop(module_home, f"bad-{expected[:10]}", change(synthetic.generate(2000, seed=4)))
    with pytest.raises(DataError, match=expected):
        spark_preparation.prepare(RunContext("synthetic", "bad"), folder.as_uri(), spark)
    with pytest.raises(DataError, match=expected):
        preparation.prepare(RunContext("synthetic", "bad"), folder.as_uri())
    assert not (module_home / "prepared" / "synthetic" / "bad").exists()


@pytest.mark.parametrize("policies", [
    {"numeric_missing": "drop_row", "categorical_missing": "most_frequent", "outliers": "clip"},
    {"numeric_missing": "mean", "outliers": "drop_row", "outlier_method": "iqr"},
])
def test_cleaning_policies_count_what_pandas_counts(module_home, spark, policies):
    from dataclasses import replace

    from ml_tasks.data import preparation
    from ml_tasks.data.spark import preparation as spark_preparation

    spec = replace(SYNTHETIC, **policies)
    frame = synthetic.generate(6000, seed=8)
    frame.loc[::61, "x0"] = np.nan
    frame.loc[::71, "channel"] = None
    frame = pd.concat([frame, frame.iloc[:40]], ignore_index=True)  # 40 exact duplicates
    folder = _drop(module_home, f"policies-{len(policies)}-{policies['numeric_missing']}", frame)
    on_pandas = preparation.prepare(RunContext("synthetic", "p-pandas"), folder.as_uri(), spec=spec)
    on_spark = spark_preparation.prepare(RunContext("synthetic", "p-spark"), folder.as_uri(), spark, spec=spec)
    for field in ("duplicates_dropped", "missing_target_dropped", "missing_rows_dropped", "policies"):
        assert getattr(on_spark, field) == getattr(on_pandas, field), field
    assert on_spark.rows_out + on_spark.outlier_rows_dropped == on_pandas.rows_out + on_pandas.outlier_rows_dropped
    # Outlier counts depend on the training rows and on approximate quantiles: the same order of magnitude.
    for name, count in on_pandas.outliers_per_column.items():
        assert abs(on_spark.outliers_per_column[name] - count) <= max(5, 0.5 * count), (name, on_spark.outliers_per_column)
    assert _transform(on_spark).categorical_fill == _transform(on_pandas).categorical_fill
    assert bool(_transform(on_spark).clip_low) == bool(_transform(on_pandas).clip_low)


def test_a_declared_size_threshold_chooses_the_engine(tmp_path):
    from dataclasses import replace

    from ml_tasks.data.engine import choose_engine

    folder = tmp_path / "drop"
    folder.mkdir()
    synthetic.generate(20_000).to_parquet(folder / "a.parquet")
    assert choose_engine(replace(SYNTHETIC, engine="auto", spark_above_mb=1), folder).engine == "spark"
    assert choose_engine(replace(SYNTHETIC, engine="auto", spark_above_mb=1024), folder).engine == "pandas"
    assert choose_engine(replace(SYNTHETIC, engine="spark"), folder).engine == "spark"
    assert choose_engine(SYNTHETIC, folder).engine == "pandas"


def test_the_session_leaves_the_heap_room_for_the_parquet_readers_buffers(spark):
    """Spark's accounted memory is capped at SPARK_MEMORY_FRACTION of the heap, so the Parquet reader's row-group
    buffers (unaccounted) fit beside it, and the reader does not use Hadoop's vectored reads: with Spark's defaults,
    deduplicating and validating 50M rows of 1M-row row groups with a 1g heap died with "Java heap space"
    (bench/scale.py; too large for the suite). The caller's settings still win."""
    from ml_tasks.data.spark.session import SPARK_MEMORY_FRACTION

    conf = spark.sparkContext.getConf()
    assert conf.get("spark.memory.fraction") == SPARK_MEMORY_FRACTION == "0.3"
    assert conf.get("spark.hadoop.parquet.hadoop.vectored.io.enabled") == "false"  # the reader's own buffers, too
    assert conf.get("spark.sql.shuffle.partitions") == "4"  # the fixture's own setting, over the default 16
