import numpy as np
import pandas as pd

from ml_tasks.transform import FittedTransform


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
