"""`/explain` without a server: a served version's explanations per task kind, the answer's shape, top_k, the limit.

Each case is a real fitted scikit-learn model inside our real pyfunc class (`RatchetClassifier`, its attributes set
as `load_context` sets them), served by a `LoadedModel` on the fast path like `load_version` builds it. The server
itself (auth, formats, the swap, TFLite's 501, fuzzing) is tested in tests/integration/test_serving.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.transform import FittedTransform
from ml_tasks.explain import ModelExplainer
from ml_tasks.release.pyfunc import RatchetClassifier
from ml_tasks.serving.loading import LoadedModel
from ml_tasks.serving.payloads import CATEGORY, NUMBER, Column, PayloadError, explanations_json, parse_json, top_k_param
from ml_tasks.training.sklearn_models import build_sklearn

CLASSES = {"binary": ["no", "yes"], "multiclass": ["low", "mid", "high"], "regression": []}
FAMILY = {"binary": "logistic_regression", "multiclass": "logistic_regression", "regression": "ridge"}
COLUMNS = (Column("x1", NUMBER), Column("x2", NUMBER), Column("noise", NUMBER), Column("colour", CATEGORY))


def _served(task: str) -> LoadedModel:
    rng = np.random.default_rng(3)
    rows = 400
    frame = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "noise": rng.normal(size=rows),
                          "colour": rng.choice(["red", "green", "blue"], size=rows)})
    signal = 2.0 * frame["x1"] - frame["x2"] + (frame["colour"] == "red")
    labels = {"binary": (signal > 0).astype("int64"), "multiclass": np.digitize(signal, [-0.7, 0.7]),
              "regression": 3.0 * signal}[task]
    transform = FittedTransform.fit(frame, ["x1", "x2", "noise"], ["colour"])
    inner = RatchetClassifier()
    inner.transform, inner.network, inner.explanation_path = transform, None, None
    inner.target = {"task": task, "target": "y", "classes": CLASSES[task]}
    inner.estimator = build_sklearn(FAMILY[task], {}, 0, task).fit(transform.apply(frame), labels)
    return LoadedModel(name="m", version="4", alias="champion", run_id="r", loaded_at="t", columns=COLUMNS,
                       pyfunc=None, transform=transform, score=inner.raw_scores, target=inner.target,
                       explainer=ModelExplainer(inner))


ROWS = [{"x1": 1.5, "x2": -0.5, "noise": 0.1, "colour": "red"}, {"x1": -2.0, "x2": 1.0, "noise": None, "colour": "teal"},
        {"x1": 0.1, "x2": 0.2, "noise": -0.3, "colour": None}]


@pytest.mark.parametrize("task", list(CLASSES))
def test_each_row_gets_its_prediction_and_attributions_that_add_up(task: str) -> None:
    model = _served(task)
    columns, n_rows = parse_json(model, json.dumps({"dataframe_records": ROWS}).encode(), max_rows=10)
    answer = json.loads(explanations_json(model, model.explain(columns, n_rows), top_k=None))
    assert answer["model"] == "m" and answer["version"] == "4"
    assert answer["explainer"] == model.explainer.describe() and answer["explainer"]["method"] == "linear_shap"
    predicted = model.predict(columns, n_rows).prediction
    rows = answer["explanations"]
    assert [row["prediction"] for row in rows] == predicted  # what /invocations answers for the same rows
    tolerance = answer["explainer"]["tolerance"]
    assert answer["max_additivity_error"] <= tolerance
    for row in rows:
        attributions = [a["attribution"] for a in row["attributions"]]
        assert sorted(a["feature"] for a in row["attributions"]) == ["colour", "noise", "x1", "x2"]  # raw columns
        assert [abs(a) for a in attributions] == sorted((abs(a) for a in attributions), reverse=True)
        assert sum(attributions) + row["base_value"] == pytest.approx(row["output"], abs=tolerance)
        assert row["output_space"] == answer["explainer"]["output_space"]
    if task == "regression":
        assert all("explained_class" not in row for row in rows)
        assert [row["output"] for row in rows] == pytest.approx(predicted, rel=1e-5)  # float32 features
    elif task == "binary":
        assert {row["explained_class"] for row in rows} == {"yes"}  # the positive class's log-odds
        assert [row["output"] > 0 for row in rows] == [p == "yes" for p in predicted]
    else:
        assert [row["explained_class"] for row in rows] == predicted  # each row's predicted class
    top = json.loads(explanations_json(model, model.explain(columns, n_rows), top_k=2))["explanations"]
    assert [row["attributions"] for row in top] == [row["attributions"][:2] for row in rows]


def test_top_k_and_refusals() -> None:
    assert top_k_param(None) is None
    assert top_k_param("3") == 3 and top_k_param(" 12 ") == 12 and top_k_param("1000") == 1000
    for text in ("0", "-1", "2.5", "three", "", "9" * 5000, "\u00b2"):
        with pytest.raises(PayloadError) as caught:
            top_k_param(text)
        assert caught.value.status == 422 and "top_k must be a whole number" in caught.value.message
    model = _served("binary")
    with pytest.raises(PayloadError) as caught:
        parse_json(model, json.dumps({"dataframe_records": ROWS * 4}).encode(), max_rows=10)
    assert caught.value.status == 413 and "at most 10" in caught.value.message
    huge = {"dataframe_records": [{**ROWS[0], "x1": 1e300}]}
    columns, n_rows = parse_json(model, json.dumps(huge).encode(), max_rows=10)
    with pytest.raises(PayloadError, match="too large for the model"):  # refused as /invocations refuses it
        model.explain(columns, n_rows)
    model.explainer, model.explain_error = None, "this version cannot be explained: it is a compressed runtime"
    with pytest.raises(PayloadError) as caught:
        model.explain(columns, n_rows)
    assert caught.value.status == 501 and caught.value.error_code == "NOT_IMPLEMENTED"
    assert "m v4: this version cannot be explained: it is a compressed runtime" in caught.value.message
