import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.transform import FittedTransform


def test_transform_fits_on_train_and_encodes_unseen_as_zeros():
    train = pd.DataFrame({"n": [1.0, 2.0, 3.0, None], "c": ["a", "b", "a", "b"]})
    t = FittedTransform.fit(train, ["n"], ["c"])
    assert t.feature_names == ["n", "c=a", "c=b"]
    out = t.apply(pd.DataFrame({"n": [2.0, None], "c": ["a", "zzz"]}))
    assert out.dtype == np.float32
    assert out[1, 1:].tolist() == [0.0, 0.0]  # unseen category
    assert out[0, 0] == out[1, 0]  # missing numeric imputed with the train median (2.0)
    again = FittedTransform.from_dict(t.to_dict())
    assert np.array_equal(again.apply(train), t.apply(train))


def test_integer_and_float_codes_are_the_same_category():
    t = FittedTransform.fit(pd.DataFrame({"c": [1, 2, 2]}), [], ["c"])
    as_float = t.apply(pd.DataFrame({"c": [1.0, 2.0]}))
    as_text = t.apply(pd.DataFrame({"c": ["1", "2"]}))
    assert np.array_equal(as_float, as_text)
    assert as_float.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_column_order_survives_a_json_round_trip_with_sorted_keys():
    import json

    frame = pd.DataFrame({"n": [1.0, 2.0], "zeta": ["a", "b"], "alpha": ["x", "y"]})
    t = FittedTransform.fit(frame, ["n"], ["zeta", "alpha"])
    again = FittedTransform.from_dict(json.loads(json.dumps(t.to_dict(), sort_keys=True)))
    assert again.feature_names == t.feature_names == ["n", "zeta=a", "zeta=b", "alpha=x", "alpha=y"]
    assert np.array_equal(again.apply(frame), t.apply(frame))


def test_transforms_saved_before_policies_load_and_impute_the_median():
    payload = {"numeric": ["n"], "medians": [2.0], "means": [2.0], "stds": [1.0], "categorical": [["c", ["__missing__", "a"]]]}
    t = FittedTransform.from_dict(payload)
    out = t.apply(pd.DataFrame({"n": [None, 5.0], "c": [None, "a"]}))
    assert out.tolist() == [[0.0, 1.0, 0.0], [3.0, 0.0, 1.0]]


def test_policies_fit_on_the_given_rows_and_survive_json():
    import json

    train = pd.DataFrame({"n": [1.0, 2.0, 9.0, None], "c": ["a", "b", "b", None]})
    t = FittedTransform.fit(train, ["n"], ["c"], numeric_missing="mean", categorical_missing="most_frequent",
                            clip={"n": (1.5, 5.0)})
    assert t.numeric_fill == [pytest.approx((1.5 + 2.0 + 5.0) / 3)]  # the mean of the clipped values
    assert t.categorical_fill == ["b"] and t.categorical == [("c", ["a", "b"])]
    again = FittedTransform.from_dict(json.loads(json.dumps(t.to_dict())))
    raw = pd.DataFrame({"n": [None, 100.0, -100.0], "c": [None, "a", "zzz"]})
    assert np.array_equal(again.apply(raw), t.apply(raw))
    expected = (np.array([t.numeric_fill[0], 5.0, 1.5]) - t.means[0]) / t.stds[0]
    assert np.allclose(again.apply(raw)[:, 0], expected)
    assert again.apply(raw)[:, 1:].tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]


def test_outlier_bounds_by_quantile_and_iqr():
    from ml_tasks.data.transform import outlier_bounds

    values = np.array([*range(100), np.nan], dtype="float64")
    assert outlier_bounds(values, "quantile", (0.0, 1.0)) == (0.0, 99.0)
    low, high = outlier_bounds(values, "iqr", iqr_factor=1.5)
    assert (low, high) == (24.75 - 1.5 * 49.5, 74.25 + 1.5 * 49.5)
